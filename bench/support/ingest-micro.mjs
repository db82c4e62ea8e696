// Micro-benchmark of the api's batch ingest CPU without services: a tar of N files named by sha256,
// parsed the way libs/oci readTarEntries does (tar-stream + a Readable.from wrapper per entry) and
// hashed as storeBatch does, against a lean loop over tar-stream's own entry streams.
// Usage: node bench/support/ingest-micro.mjs [files=50000] [mib=256]
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';

const files = Number(process.argv[2] ?? 50000);
const mib = Number(process.argv[3] ?? 256);
const size = Math.floor((mib * 1024 * 1024) / files);
const packer = tarStream.pack();
const collected = [];
packer.on('data', (c) => collected.push(c));
const done = new Promise((resolve) => packer.on('end', resolve));
for (let i = 0; i < files; i++) {
  const body = Buffer.alloc(size, i & 0xff);
  body.writeUInt32LE(i, 0);
  const name = createHash('sha256').update(body).digest('hex');
  packer.entry({ name, size, mode: 0o644, mtime: new Date(0) }, body);
}
packer.finalize();
await done;
const tar = Buffer.concat(collected);
const source = () => Readable.from((function* () { for (let o = 0; o < tar.length; o += 64 * 1024) yield tar.subarray(o, o + 64 * 1024); })(), { objectMode: false });

async function current() {
  const ex = tarStream.extract();
  const flowing = pipeline(source(), ex);
  let n = 0;
  for await (const raw of ex) {
    const body = Readable.from((async function* () { yield* raw; })(), { objectMode: false });
    const hash = createHash('sha256');
    for await (const c of body) hash.update(c);
    if (hash.digest('hex') !== raw.header.name) throw new Error('mismatch');
    n++;
  }
  await flowing;
  return n;
}
async function lean() {
  const ex = tarStream.extract();
  const flowing = pipeline(source(), ex);
  let n = 0;
  for await (const raw of ex) {
    const hash = createHash('sha256');
    for await (const c of raw) hash.update(c);
    if (hash.digest('hex') !== raw.header.name) throw new Error('mismatch');
    n++;
  }
  await flowing;
  return n;
}
// What libs/oci readTarEntries now gives storeBatch: a plain iterable of chunks around the entry.
async function chunksWrapper() {
  const ex = tarStream.extract();
  const flowing = pipeline(source(), ex);
  let n = 0;
  for await (const raw of ex) {
    const chunks = { async *[Symbol.asyncIterator]() { try { for await (const c of raw) yield c; } catch (e) { throw e; } } };
    const hash = createHash('sha256');
    for await (const c of chunks) hash.update(c);
    if (hash.digest('hex') !== raw.header.name) throw new Error('mismatch');
    n++;
  }
  await flowing;
  return n;
}
async function hashOnly() {
  const hash = createHash('sha256');
  for (let o = 0; o < tar.length; o += 64 * 1024) hash.update(tar.subarray(o, o + 64 * 1024));
  hash.digest();
  return files;
}
for (let round = 0; round < 3; round++) {
  for (const [name, fn] of [['current', current], ['lean', lean], ['chunks', chunksWrapper], ['sha256-only', hashOnly]]) {
    const t0 = process.cpuUsage();
    const w0 = performance.now();
    const n = await fn();
    const cpu = process.cpuUsage(t0);
    const ms = (cpu.user + cpu.system) / 1000;
    console.log(`${name.padEnd(12)} files=${n} bytes=${tar.length} wall=${(performance.now() - w0).toFixed(0)}ms cpu=${ms.toFixed(0)}ms ns/byte=${((ms * 1e6) / tar.length).toFixed(2)} us/file=${((ms * 1000) / n).toFixed(1)}`);
  }
}

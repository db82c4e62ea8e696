// ADD of a local archive: BuildKit unpacks a source file into the destination when its content is
// a tar, plain or compressed with gzip, bzip2 or xz (whatever its name), and copies it otherwise.

import { spawn } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { type FileContent, readTarEntries, type TarEntryHeader } from '@strata/oci';

const GZIP = [0x1f, 0x8b];
const BZIP2 = [0x42, 0x5a, 0x68];
const XZ = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

function startsWith(head: Buffer, magic: number[]): boolean {
  return head.length >= magic.length && magic.every((b, i) => head[i] === b);
}

/** A file's content as a stream, whatever form the writer was given it in. */
export async function contentStream(c: FileContent): Promise<Readable> {
  if (Buffer.isBuffer(c) || c instanceof Uint8Array) return Readable.from([Buffer.from(c)]);
  if ('path' in c) return createReadStream(c.path);
  if ('read' in c) return Readable.from([await c.read()]);
  return typeof c.stream === 'function' ? await c.stream() : c.stream;
}

/** The first `n` bytes of a stream, and a stream that replays them followed by the rest. */
async function peek(input: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const chunks: Buffer[] = [];
  let have = 0;
  while (have < n) {
    const next = await it.next();
    if (next.done) break;
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
    chunks.push(chunk);
    have += chunk.length;
  }
  const head = Buffer.concat(chunks);
  const stream = Readable.from(
    (async function* () {
      if (head.length > 0) yield head;
      for (;;) {
        const next = await it.next();
        if (next.done) return;
        yield next.value;
      }
    })(),
    { objectMode: false },
  );
  return { head: head.subarray(0, n), stream };
}

/**
 * Decompresses with the tool Docker itself uses where Node has none (docker's archive package
 * runs `xz -d`; bzip2 is Debian's bzip2). Its failure fails the stream.
 */
function throughTool(input: Readable, tool: 'xz' | 'bzip2'): Readable {
  const child = spawn(tool, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (c: Buffer) => stderr.push(c));
  input.on('error', (e) => child.stdout.destroy(e));
  child.stdin.on('error', () => undefined); // the tool stopped reading: its exit status says why
  input.pipe(child.stdin);
  child.on('error', (e) => child.stdout.destroy(new Error(`${tool} could not run on this worker: ${e.message}`)));
  child.on('close', (code) => {
    if (code !== 0) child.stdout.destroy(new Error(`${tool} -d failed (${code}): ${Buffer.concat(stderr).toString('utf8').trim()}`));
  });
  return child.stdout;
}

/** Whether a 512-byte block is a tar header: its checksum field matches its bytes (as Go's tar reader checks). */
export function isTarHeader(block: Buffer): boolean {
  if (block.length < 512) return false;
  const field = block.subarray(148, 156).toString('latin1').replace(/\0.*$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < 512; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  const sum = parseInt(field, 8);
  return sum === unsigned || sum === signed;
}

/**
 * The uncompressed tar stream of a file when it is an archive BuildKit would unpack, else null.
 * Detected by content: gzip, bzip2 and xz are decompressed and the first block must be a tar
 * header (an empty tar is a file, as in Docker). zstd is not unpacked by dockerd 20.10 either.
 */
export async function openArchive(content: FileContent): Promise<Readable | null> {
  const raw = await peek(await contentStream(content), 6);
  let plain: Readable;
  if (startsWith(raw.head, GZIP)) {
    const gunzip = createGunzip();
    raw.stream.on('error', (e) => gunzip.destroy(e));
    plain = raw.stream.pipe(gunzip);
  } else if (startsWith(raw.head, BZIP2)) plain = throughTool(raw.stream, 'bzip2');
  else if (startsWith(raw.head, XZ)) plain = throughTool(raw.stream, 'xz');
  else plain = raw.stream;
  let first: { head: Buffer; stream: Readable };
  try {
    first = await peek(plain, 512);
  } catch {
    // Not really compressed after all (gzip magic on a text file, say): a plain file.
    plain.destroy();
    return null;
  }
  if (!isTarHeader(first.head)) {
    first.stream.destroy();
    return null;
  }
  return first.stream;
}

/**
 * Reads an archive's entries, spooling each regular file's body to `spoolPath` (one file, bodies
 * back to back) so the layer writer can read them in its own order; the spool must outlive the layer.
 */
export async function* spoolArchive(tar: Readable, spoolPath: string): AsyncGenerator<{ header: TarEntryHeader; content?: FileContent }> {
  const out = createWriteStream(spoolPath, { flags: 'wx', mode: 0o600 });
  let failure: Error | undefined;
  out.on('error', (e) => (failure = e));
  let offset = 0;
  try {
    for await (const { header, chunks: content } of readTarEntries(tar)) {
      if (header.type !== 'file') {
        yield { header };
        continue;
      }
      const start = offset;
      for await (const chunk of content) {
        if (failure) throw failure;
        offset += chunk.length;
        // once() rejects if the spool errors while waiting, and leaves no listener behind either way.
        if (!out.write(chunk)) await once(out, 'drain');
      }
      const size = offset - start;
      yield { header, content: size === 0 ? Buffer.alloc(0) : { size, stream: () => createReadStream(spoolPath, { start, end: start + size - 1 }) } };
    }
  } finally {
    out.end();
    await once(out, 'close').catch(() => undefined);
  }
  if (failure) throw failure;
}

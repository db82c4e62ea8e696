// The floor the S3 server sets under Strata's S3 registry cases (issue 17): the same bytes as the
// registry benchmark's cases, sent and fetched with the SDK alone, no api in between.
//   big:   one PutObject of 100 MiB streamed from a file (known length), one GetObject drained,
//          one CopyObject (what a finished upload cost before it was written under its digest);
//   small: 50 PutObjects and 50 GetObjects of 3 KiB, one after the other (as skopeo sends layers).
// Usage: S3_ENDPOINT=http://127.0.0.1:<port> node bench/registry/s3-floor.mjs [runs]
// Prints medians in ms and the load average. Talks only to S3_ENDPOINT (127.0.0.1).
import { randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { CopyObjectCommand, CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';

const runs = Number(process.argv[2] ?? 5);
const endpoint = process.env.S3_ENDPOINT ?? 'http://127.0.0.1:45690';
const bucket = process.env.BENCH_S3_FLOOR_BUCKET ?? 'strata-bench-s3-floor';
const client = new S3Client({
  endpoint, region: 'us-east-1', forcePathStyle: true,
  credentials: { accessKeyId: process.env.S3_ACCESS_KEY_ID ?? 'S3RVER', secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? 'S3RVER' },
  requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
});
await client.send(new CreateBucketCommand({ Bucket: bucket })).catch(() => undefined);
const work = mkdtempSync(path.join(tmpdir(), 's3floor-'));
const bigMiB = Number(process.env.BENCH_BIG_MB ?? 100);
const bigFile = path.join(work, 'big');
writeFileSync(bigFile, randomBytes(bigMiB * 1024 * 1024));
const size = bigMiB * 1024 * 1024;
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const time = async (fn) => { const t = performance.now(); await fn(); return performance.now() - t; };
const drain = async (body) => { for await (const _ of body) { /* drop */ } };
const out = { put: [], get: [], copy: [], smallPut: [], smallGet: [] };
const load = [loadavg()[0]];
for (let i = 0; i < runs; i++) {
  const key = `floor/${i}-${randomBytes(4).toString('hex')}`;
  out.put.push(await time(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: createReadStream(bigFile, { highWaterMark: 1024 * 1024 }), ContentLength: size }))));
  out.get.push(await time(async () => drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body)));
  out.copy.push(await time(() => client.send(new CopyObjectCommand({ Bucket: bucket, Key: `${key}-copy`, CopySource: `${bucket}/${key}` }))));
  for (const k of [key, `${key}-copy`]) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: k }));
  const smalls = Array.from({ length: 50 }, (_, j) => ({ key: `${key}-s${j}`, body: randomBytes(3 * 1024) }));
  out.smallPut.push(await time(async () => { for (const s of smalls) await client.send(new PutObjectCommand({ Bucket: bucket, Key: s.key, Body: s.body, ContentLength: s.body.length })); }));
  out.smallGet.push(await time(async () => { for (const s of smalls) await drain((await client.send(new GetObjectCommand({ Bucket: bucket, Key: s.key }))).Body); }));
  for (const s of smalls) await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: s.key }));
}
load.push(loadavg()[0]);
rmSync(work, { recursive: true, force: true });
const fmt = (a) => `${median(a).toFixed(0)} ms (${a.map((x) => x.toFixed(0)).join(', ')})`;
console.log(`S3 floor at ${endpoint}, ${runs} runs, load ${load.map((l) => l.toFixed(1)).join(' -> ')}`);
console.log(`  PutObject ${bigMiB} MiB (stream, known length): ${fmt(out.put)}`);
console.log(`  GetObject ${bigMiB} MiB drained:                ${fmt(out.get)}`);
console.log(`  CopyObject ${bigMiB} MiB:                       ${fmt(out.copy)}`);
console.log(`  50 x PutObject 3 KiB:                       ${fmt(out.smallPut)}`);
console.log(`  50 x GetObject 3 KiB:                       ${fmt(out.smallGet)}`);

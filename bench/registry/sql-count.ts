// Counts the SQL statements and times each step of one blob's push and pull through the registry
// logic (libs/registry's Registry on the filesystem driver), as skopeo drives /v2: HEAD (absent),
// POST, PATCH, PUT, HEAD, GET. Prints one JSON line. No HTTP, no auth: what is left is Postgres,
// storage and hashing. Statements count Prisma's and the registry's raw ones (Sql). Run with DATABASE_URL set:
//   node --import ./bench/support/register-ts.mjs bench/registry/sql-count.ts [blobs] [bytes]
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { BlobStore, FilesystemDriver } from '@strata/blobstore';
import { PrismaClient, createTenantWithToken, poolSql, type Sql } from '@strata/db';
import type { Digest } from '@strata/oci';
import { ImageStore, Registry } from '@strata/registry';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';

const url = process.env.DATABASE_URL;
if (!url) throw new Error('DATABASE_URL is not set');
const blobs = Number(process.argv[2] ?? 50);
const bytes = Number(process.argv[3] ?? 4096);
// One pool for Prisma and the registry's raw statements, as the api's PrismaService has it.
const pool = new pg.Pool({ connectionString: url, max: 10 });
const prisma = new PrismaClient({ adapter: new PrismaPg(pool, { disposeExternalPool: true }), log: [{ emit: 'event', level: 'query' }] });
let statements = 0;
prisma.$on('query', () => statements++);
const raw = poolSql(pool);
const sql: Sql = { query: (text, values) => (statements++, raw.query(text, values)) };
const dir = mkdtempSync(path.join(tmpdir(), 'sql-count-'));
const store = new BlobStore(new FilesystemDriver(dir));
const registry = new Registry(prisma, store, new ImageStore(prisma, store), sql);
const tenant = `sqlcount-${process.pid}`;
await createTenantWithToken(prisma, tenant);
const name = `${tenant}/app`;
const steps = ['headMissing', 'post', 'patch', 'put', 'head', 'get'] as const;
const count = Object.fromEntries(steps.map((s) => [s, 0])) as Record<(typeof steps)[number], number>;
const ms = Object.fromEntries(steps.map((s) => [s, 0])) as Record<(typeof steps)[number], number>;
async function step(s: (typeof steps)[number], fn: () => Promise<unknown>) {
  const before = statements;
  const t0 = performance.now();
  await fn();
  ms[s] += performance.now() - t0;
  count[s] += statements - before;
}
await registry.startUpload(name); // the repository exists from here on, as after a first push
for (let i = 0; i < blobs; i++) {
  const data = randomBytes(bytes);
  const digest = `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
  await step('headMissing', () => registry.statBlob(name, digest).catch(() => undefined));
  let uuid = '';
  await step('post', async () => ({ uuid } = await registry.startUpload(name)));
  await step('patch', () => registry.appendChunk(name, uuid, data));
  await step('put', () => registry.finishUpload(name, uuid, digest));
  await step('head', () => registry.statBlob(name, digest));
  await step('get', async () => {
    const blob = await registry.readBlob(name, digest);
    await blob.sendTo(new Writable({ write: (_chunk, _encoding, callback) => callback() }));
  });
}
const per = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round((v / blobs) * 100) / 100]));
process.stdout.write(`${JSON.stringify({ blobs, bytes, statementsPerBlob: per(count), msPerBlob: per(ms) })}\n`);
await prisma.$disconnect();
rmSync(dir, { recursive: true, force: true });

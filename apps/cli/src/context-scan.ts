import { createHash } from 'node:crypto';
import { type BigIntStats, closeSync, fstatSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, readSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { DockerIgnore } from './dockerignore.js';
import type { FileStamp, StatCache } from './stat-cache.js';

/** One path of a context manifest, as POST /v1/contexts/manifest takes it (docs/adr/0025). */
export type ManifestEntry =
  | { path: string; type: 'dir'; mode: number; mtime: number }
  | { path: string; type: 'symlink'; mtime: number; target: string }
  | { path: string; type: 'file'; mode: number; mtime: number; size: number; digest: string };

export interface ContextScan {
  manifest: { version: 1; entries: ManifestEntry[] };
  /** For each content digest, a file that holds it (what is uploaded when the store lacks it). */
  sources: Map<string, { file: string; size: number }>;
  files: number;
  bytes: number;
  /** Files whose content was read and hashed (the others' digests came from the stat cache). */
  hashed: number;
}

/**
 * How a cold scan reads and hashes (docs/adr/0037, amendment "the cold scan"): files go in batches to
 * HASH_THREADS worker threads, each reading with a buffer of its own (READ_BUFFER; a big file is
 * never whole in memory) and hashing off the main thread. Several threads keep several reads in
 * flight when the contents are not in the page cache (one synchronous read at a time waits on every
 * file's latency), and spread the reading and hashing over the cores. A few files are hashed in the
 * main thread: starting threads costs more than they save.
 */
const HASH_THREADS = 4;
const READ_BUFFER = 1024 * 1024;
const BATCH_FILES = 128;
const BATCH_BYTES = 8 * 1024 * 1024;
/** Below both, the files are hashed in the main thread. */
const INLINE_FILES = 256;
const INLINE_BYTES = 32 * 1024 * 1024;

/** A file to hash, with the stamp its walk saw. */
interface HashJob {
  abs: string;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
}

/**
 * The same function runs in the main thread and (as its source) in the hash threads: sha256 of a
 * file read through `buf`, and whether the file is still what the walk saw once read (same size,
 * mtime and ctime, as many bytes read as its size). A file that changed is hashed as it was read
 * but not remembered in the stat cache.
 */
function hashFileSync(job: HashJob, buf: Buffer, fs: { openSync: typeof openSync; readSync: typeof readSync; fstatSync: typeof fstatSync; closeSync: typeof closeSync }, hash: typeof createHash): [string, boolean] {
  const fd = fs.openSync(job.abs, 'r');
  try {
    const h = hash('sha256');
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      total += n;
    }
    const st = fs.fstatSync(fd, { bigint: true });
    const same = total === job.size && st.size === BigInt(job.size) && String(st.mtimeNs) === job.mtimeNs && String(st.ctimeNs) === job.ctimeNs;
    return [h.digest('hex'), same];
  } finally {
    fs.closeSync(fd);
  }
}

/** A hash thread's program: batches of jobs in, [hex, same] per job (or the first error) out. */
const HASH_THREAD_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const hashFileSync = ${hashFileSync.toString()};
const buf = Buffer.allocUnsafe(${READ_BUFFER});
parentPort.on('message', ({ id, jobs }) => {
  const out = [];
  try {
    for (const job of jobs) out.push(hashFileSync(job, buf, fs, createHash));
    parentPort.postMessage({ id, out });
  } catch (e) {
    parentPort.postMessage({ id, error: { message: String(e && e.message), code: e && e.code } });
  }
});
`;

/**
 * Hashes `jobs` (results in the same order): in the main thread when they are few, else in hash
 * threads. `threads` 0 forces the main thread (tests).
 */
export async function hashFiles(jobs: HashJob[], threads: number = HASH_THREADS): Promise<Array<[string, boolean]>> {
  const total = jobs.reduce((n, j) => n + j.size, 0);
  if (threads <= 0 || (jobs.length < INLINE_FILES && total < INLINE_BYTES)) {
    const buf = Buffer.allocUnsafe(READ_BUFFER);
    return jobs.map((j) => hashFileSync(j, buf, { openSync, readSync, fstatSync, closeSync }, createHash));
  }
  const batches: Array<{ start: number; jobs: HashJob[] }> = [];
  for (let i = 0; i < jobs.length; ) {
    const start = i;
    let bytes = 0;
    while (i < jobs.length && i - start < BATCH_FILES && (i === start || bytes + jobs[i].size <= BATCH_BYTES)) bytes += jobs[i++].size;
    batches.push({ start, jobs: jobs.slice(start, i) });
  }
  const results: Array<[string, boolean]> = new Array(jobs.length);
  const workers = Array.from({ length: Math.min(threads, batches.length) }, () => new Worker(HASH_THREAD_SOURCE, { eval: true }));
  let next = 0;
  try {
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            // Two batches in flight per thread: a thread never waits for the main thread between batches.
            const inFlight = new Map<number, number>();
            const give = () => {
              if (next >= batches.length) {
                if (inFlight.size === 0) resolve();
                return;
              }
              const id = next++;
              inFlight.set(id, batches[id].start);
              w.postMessage({ id, jobs: batches[id].jobs });
            };
            w.on('message', (m: { id: number; out?: Array<[string, boolean]>; error?: { message: string; code?: string } }) => {
              if (m.error) {
                next = batches.length;
                reject(Object.assign(new Error(m.error.message), { code: m.error.code }));
                return;
              }
              const start = inFlight.get(m.id) as number;
              inFlight.delete(m.id);
              (m.out as Array<[string, boolean]>).forEach((r, k) => (results[start + k] = r));
              give();
            });
            w.on('error', reject);
            w.on('exit', (code) => code !== 0 && reject(new Error(`a hash thread exited with code ${code}`)));
            give();
            give();
          }),
      ),
    );
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return results;
}

/** What one walk of a context directory saw: its directories and symlinks as manifest entries, its files with their lstat. */
export interface ContextWalk {
  root: string;
  /** The directories (`.` first) and symlinks, as the manifest lists them. */
  entries: ManifestEntry[];
  files: Array<{ rel: string; abs: string; st: BigIntStats }>;
  /**
   * sha256 of everything the walk saw that the manifest is made of: the .dockerignore's text, the
   * Dockerfile's path, and every entry's path, type, mode, size, mtime, device, inode, ctime and
   * symlink target, in walk order. Equal keys mean an equal manifest, except for contents changed
   * without a change of stamp, which `newestFileMtimeNs` guards against (docs/adr/0037).
   */
  key: string;
  /** The latest mtime of any file (0 when none): a key is remembered only when this is before the scan's start. */
  newestFileMtimeNs: bigint;
}

/** Bumped when what a walk's key covers changes: an old key then matches nothing. */
const WALK_KEY_VERSION = 'strata-context-walk-1';

/**
 * Walks a context directory: every path .dockerignore lets through (the Dockerfile and .dockerignore
 * always, as BuildKit sends them), with one lstat per path and no file read. Sockets, fifos and
 * devices are left out (GNU tar skips sockets; a build refuses the others).
 * Metadata is read synchronously: 50,000 lstat calls cost milliseconds in a loop, seconds as promises.
 */
export function walkContext(dir: string, opts: { dockerfile: string }): ContextWalk {
  const root = path.resolve(dir);
  let ignoreText: string | null = null;
  try {
    ignoreText = readFileSync(path.join(root, '.dockerignore'), 'utf8');
  } catch {
    // No .dockerignore: nothing is ignored.
  }
  const ignore = DockerIgnore.parse(ignoreText);
  const always = new Set([opts.dockerfile, '.dockerignore']);
  // Directories on the way to those are walked even when ignored.
  const onTheWay = new Set([...always].flatMap((p) => p.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
  const entries: ManifestEntry[] = [];
  const files: ContextWalk['files'] = [];
  const key = createHash('sha256');
  key.update(`${WALK_KEY_VERSION}\0${opts.dockerfile}\0${ignoreText === null ? '-' : `+${ignoreText}`}\0`);
  let newestFileMtimeNs = 0n;
  const stamp = (rel: string, type: string, st: BigIntStats, target = '') =>
    `${rel}\0${type}\0${st.mode}\0${st.size}\0${st.mtimeNs}\0${st.dev}\0${st.ino}\0${st.ctimeNs}\0${target}\n`;
  const rootStat = lstatSync(root, { bigint: true });
  entries.push({ path: '.', type: 'dir', mode: Number(rootStat.mode) & 0o7777, mtime: seconds(rootStat.mtimeNs) });
  key.update(stamp('.', 'd', rootStat));
  const walk = (relDir: string): void => {
    // One key update per directory: a string per entry, joined.
    const stamps: string[] = [];
    const below: string[] = [];
    // The directory entry's type says which paths are plain files; every path is lstat'ed once.
    for (const dirent of readdirSync(relDir === '' ? root : path.join(root, relDir), { withFileTypes: true })) {
      const rel = relDir === '' ? dirent.name : `${relDir}/${dirent.name}`;
      const ignored = !always.has(rel) && ignore.ignores(rel);
      // An ignored directory is walked only when an exception could let something below it back in;
      // an ignored file is not even lstat'ed (a type the directory entry does not give is lstat'ed).
      const known = dirent.isDirectory() || dirent.isFile() || dirent.isSymbolicLink();
      if (ignored && known && (!dirent.isDirectory() || (!ignore.hasExceptions && !onTheWay.has(rel)))) continue;
      const abs = `${root}/${rel}`;
      const st = lstatSync(abs, { bigint: true });
      if (st.isDirectory()) {
        if (ignored && !ignore.hasExceptions && !onTheWay.has(rel)) continue;
        entries.push({ path: rel, type: 'dir', mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs) });
        stamps.push(stamp(rel, 'd', st));
        below.push(rel);
      } else if (ignored) {
        continue;
      } else if (st.isSymbolicLink()) {
        const target = readlinkSync(abs);
        entries.push({ path: rel, type: 'symlink', mtime: seconds(st.mtimeNs), target });
        stamps.push(stamp(rel, 'l', st, target));
      } else if (st.isFile()) {
        files.push({ rel, abs, st });
        stamps.push(stamp(rel, 'f', st));
        if (st.mtimeNs > newestFileMtimeNs) newestFileMtimeNs = st.mtimeNs;
      }
    }
    key.update(stamps.join(''));
    for (const rel of below) walk(rel);
  };
  walk('');
  return { root, entries, files, key: key.digest('hex'), newestFileMtimeNs };
}

/**
 * The manifest of a context directory (from `walked`, else a new walk): the walk's paths with modes,
 * mtimes (whole seconds, as a tar holds them), symlink targets and file digests; digests of unchanged
 * files come from the stat cache.
 */
export async function scanContext(dir: string, cache: StatCache, opts: { dockerfile: string; threads?: number }, walked: ContextWalk = walkContext(dir, opts)): Promise<ContextScan> {
  await cache.loadFiles();
  const entries: ManifestEntry[] = [...walked.entries];
  const sources = new Map<string, { file: string; size: number }>();
  let bytes = 0;
  const add = (f: { rel: string; abs: string }, mode: number, mtime: number, size: number, hex: string) => {
    const digest = `sha256:${hex}`;
    if (!sources.has(digest)) sources.set(digest, { file: f.abs, size });
    bytes += size;
    entries.push({ path: f.rel, type: 'file', mode, mtime, size, digest });
  };
  const toHash: Array<{ f: { rel: string; abs: string }; mode: number; mtime: number; stamp: FileStamp }> = [];
  for (const f of walked.files) {
    const st = f.st;
    const stamp = { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, ctimeNs: st.ctimeNs };
    const hex = cache.lookup(f.rel, stamp);
    if (hex !== null) add(f, Number(st.mode) & 0o7777, seconds(st.mtimeNs), stamp.size, hex);
    else toHash.push({ f, mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs), stamp });
  }
  // Contents are read and hashed in hash threads (a cold scan is bound by reading and hashing).
  const hashed = await hashFiles(
    toHash.map((h) => ({ abs: h.f.abs, size: h.stamp.size, mtimeNs: String(h.stamp.mtimeNs), ctimeNs: String(h.stamp.ctimeNs) })),
    opts.threads,
  );
  toHash.forEach((h, i) => {
    const [hex, same] = hashed[i];
    // A file that changed since its walk is not remembered: the next scan hashes it again.
    if (same) cache.remember(h.f.rel, h.stamp, hex);
    add(h.f, h.mode, h.mtime, h.stamp.size, hex);
  });
  // The api sorts too; sorted here, equal contexts give equal request bodies.
  entries.sort((a, b) => (a.path === '.' ? -1 : b.path === '.' ? 1 : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { manifest: { version: 1, entries }, sources, files: walked.files.length, bytes, hashed: toHash.length };
}

/** Whole seconds, as GNU tar stores an mtime (never negative). */
function seconds(ns: bigint): number {
  return ns < 0n ? 0 : Number(ns / 1_000_000_000n);
}

import { createHash } from 'node:crypto';
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
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

/** Large files hashed at once (small ones are read whole, synchronously). */
const CONCURRENCY = 4;
const READ_WHOLE = 1024 * 1024;

/** A large file's sha256, streamed. */
async function sha256Of(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * The manifest of a context directory: every path .dockerignore lets through (the Dockerfile and
 * .dockerignore always, as BuildKit sends them), with modes, mtimes (whole seconds, as a tar holds
 * them), symlink targets and file digests; digests of unchanged files come from the stat cache.
 * Sockets, fifos and devices are left out (GNU tar skips sockets; a build refuses the others).
 */
export async function scanContext(dir: string, cache: StatCache, opts: { dockerfile: string }): Promise<ContextScan> {
  // Metadata is read synchronously: 50,000 lstat calls cost milliseconds in a loop, seconds as promises.
  const root = path.resolve(dir);
  const ignore = DockerIgnore.parse(await readFile(path.join(root, '.dockerignore'), 'utf8').catch(() => null));
  const always = new Set([opts.dockerfile, '.dockerignore']);
  // Directories on the way to those are walked even when ignored.
  const onTheWay = new Set([...always].flatMap((p) => p.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
  const entries: ManifestEntry[] = [];
  const rootStat = lstatSync(root, { bigint: true });
  entries.push({ path: '.', type: 'dir', mode: Number(rootStat.mode) & 0o7777, mtime: seconds(rootStat.mtimeNs) });
  const files: Array<{ rel: string; abs: string }> = [];
  const walk = (relDir: string): void => {
    // The directory entry's type saves an lstat per file here; files are stat'ed once, below.
    for (const dirent of readdirSync(relDir === '' ? root : path.join(root, relDir), { withFileTypes: true })) {
      const rel = relDir === '' ? dirent.name : `${relDir}/${dirent.name}`;
      const abs = path.join(root, rel);
      const ignored = !always.has(rel) && ignore.ignores(rel);
      const known = dirent.isDirectory() || dirent.isFile() || dirent.isSymbolicLink();
      const st = known && dirent.isFile() ? null : lstatSync(abs, { bigint: true });
      if (st?.isDirectory()) {
        // An ignored directory is walked only when an exception could let something below it back in.
        if (ignored && !ignore.hasExceptions && !onTheWay.has(rel)) continue;
        entries.push({ path: rel, type: 'dir', mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs) });
        walk(rel);
      } else if (ignored) {
        continue;
      } else if (st?.isSymbolicLink()) {
        entries.push({ path: rel, type: 'symlink', mtime: seconds(st.mtimeNs), target: readlinkSync(abs) });
      } else if (st === null || st.isFile()) {
        files.push({ rel, abs });
      }
    }
  };
  walk('');
  const sources = new Map<string, { file: string; size: number }>();
  let bytes = 0;
  const add = (f: { rel: string; abs: string }, mode: number, mtime: number, size: number, hex: string) => {
    const digest = `sha256:${hex}`;
    if (!sources.has(digest)) sources.set(digest, { file: f.abs, size });
    bytes += size;
    entries.push({ path: f.rel, type: 'file', mode, mtime, size, digest });
  };
  const toHash: Array<{ f: { rel: string; abs: string }; mode: number; mtime: number; stamp: FileStamp }> = [];
  for (const f of files) {
    const st = lstatSync(f.abs, { bigint: true });
    const stamp = { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, ctimeNs: st.ctimeNs };
    const hex = cache.lookup(f.rel, stamp);
    if (hex !== null) add(f, Number(st.mode) & 0o7777, seconds(st.mtimeNs), stamp.size, hex);
    else toHash.push({ f, mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs), stamp });
  }
  // Contents are read in parallel: a cold scan is bound by reading and hashing.
  let next = 0;
  const worker = async () => {
    while (next < toHash.length) {
      const h = toHash[next++];
      const hex = h.stamp.size <= READ_WHOLE ? createHash('sha256').update(readFileSync(h.f.abs)).digest('hex') : await sha256Of(h.f.abs);
      cache.remember(h.f.rel, h.stamp, hex);
      add(h.f, h.mode, h.mtime, h.stamp.size, hex);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  // The api sorts too; sorted here, equal contexts give equal request bodies.
  entries.sort((a, b) => (a.path === '.' ? -1 : b.path === '.' ? 1 : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { manifest: { version: 1, entries }, sources, files: files.length, bytes, hashed: toHash.length };
}

/** Whole seconds, as GNU tar stores an mtime (never negative). */
function seconds(ns: bigint): number {
  return ns < 0n ? 0 : Number(ns / 1_000_000_000n);
}

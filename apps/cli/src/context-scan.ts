import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { DockerIgnore } from './dockerignore.js';
import type { StatCache } from './stat-cache.js';

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

/** Files hashed at once. */
const CONCURRENCY = 16;
const READ_WHOLE = 1024 * 1024;

async function sha256Of(file: string, size: number): Promise<string> {
  const h = createHash('sha256');
  if (size <= READ_WHOLE) return h.update(await readFile(file)).digest('hex');
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
  const root = path.resolve(dir);
  const ignore = DockerIgnore.parse(await readFile(path.join(root, '.dockerignore'), 'utf8').catch(() => null));
  const always = new Set([opts.dockerfile, '.dockerignore']);
  // Directories on the way to those are walked even when ignored.
  const onTheWay = new Set([...always].flatMap((p) => p.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
  const entries: ManifestEntry[] = [];
  const rootStat = await lstat(root, { bigint: true });
  entries.push({ path: '.', type: 'dir', mode: Number(rootStat.mode) & 0o7777, mtime: seconds(rootStat.mtimeNs) });
  const files: Array<{ rel: string; abs: string }> = [];
  // Directories first (readdir is cheap), then every file stat'ed and hashed in parallel.
  const walk = async (relDir: string): Promise<void> => {
    // The directory entry's type saves an lstat per file here; files are stat'ed once, below.
    for (const dirent of await readdir(relDir === '' ? root : path.join(root, relDir), { withFileTypes: true })) {
      const rel = relDir === '' ? dirent.name : `${relDir}/${dirent.name}`;
      const abs = path.join(root, rel);
      const ignored = !always.has(rel) && ignore.ignores(rel);
      const known = dirent.isDirectory() || dirent.isFile() || dirent.isSymbolicLink();
      const st = known && dirent.isFile() ? null : await lstat(abs, { bigint: true });
      if (st?.isDirectory()) {
        // An ignored directory is walked only when an exception could let something below it back in.
        if (ignored && !ignore.hasExceptions && !onTheWay.has(rel)) continue;
        entries.push({ path: rel, type: 'dir', mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs) });
        await walk(rel);
      } else if (ignored) {
        continue;
      } else if (st?.isSymbolicLink()) {
        entries.push({ path: rel, type: 'symlink', mtime: seconds(st.mtimeNs), target: await readlink(abs) });
      } else if (st === null || st.isFile()) {
        files.push({ rel, abs });
      }
    }
  };
  await walk('');
  const sources = new Map<string, { file: string; size: number }>();
  let hashed = 0;
  let bytes = 0;
  let next = 0;
  const worker = async () => {
    while (next < files.length) {
      const f = files[next++];
      const st = await lstat(f.abs, { bigint: true });
      const stamp = { size: Number(st.size), mtimeNs: st.mtimeNs, ino: st.ino, ctimeNs: st.ctimeNs };
      let hex = cache.lookup(f.rel, stamp);
      if (hex === null) {
        hex = await sha256Of(f.abs, stamp.size);
        hashed += 1;
        cache.remember(f.rel, stamp, hex);
      }
      const digest = `sha256:${hex}`;
      if (!sources.has(digest)) sources.set(digest, { file: f.abs, size: stamp.size });
      bytes += stamp.size;
      entries.push({ path: f.rel, type: 'file', mode: Number(st.mode) & 0o7777, mtime: seconds(st.mtimeNs), size: stamp.size, digest });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  // The api sorts too; sorted here, equal contexts give equal request bodies.
  entries.sort((a, b) => (a.path === '.' ? -1 : b.path === '.' ? 1 : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return { manifest: { version: 1, entries }, sources, files: files.length, bytes, hashed };
}

/** Whole seconds, as GNU tar stores an mtime (never negative). */
function seconds(ns: bigint): number {
  return ns < 0n ? 0 : Number(ns / 1_000_000_000n);
}

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { encodeTarHeader, tarEndOfArchive, tarPadding } from './tar-format.js';
import { lexicallyEscapes } from './tar-reader.js';

/**
 * A build context sent as a manifest (docs/adr/0025): every path with its type, mode, mtime and,
 * for a regular file, its size and sha256. The contents travel separately, into the tenant's
 * content store, and only those the store lacks.
 */
export const CONTEXT_MANIFEST_MEDIA_TYPE = 'application/vnd.strata.context-manifest+json';

export type ManifestEntry =
  | { path: string; type: 'dir'; mode: number; mtime: number }
  | { path: string; type: 'symlink'; mtime: number; target: string }
  | { path: string; type: 'file'; mode: number; mtime: number; size: number; digest: string };

export interface ContextManifest {
  /** Sorted by path (a parent before its children); the root, when given, is path ".". */
  entries: ManifestEntry[];
  files: number;
  /** Bytes of file content (each path counted, hard links included). */
  bytes: number;
  /** The distinct contents, as "sha256:<hex>", with a path that uses each (for messages). */
  contents: Map<string, { path: string; size: number }>;
  /** sha256 of the canonical form: equal manifests have equal digests. */
  digest: string;
  canonical: Buffer;
}

export class ContextManifestError extends Error {
  override readonly name = 'ContextManifestError';
}

export interface ManifestLimits {
  maxEntries: number;
  maxBytes: number;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const MAX_PATH_BYTES = 4096;
/** Most seconds an mtime may hold (year 2242): what a 33-bit tar field holds, and a JSON number exactly. */
const MAX_MTIME = 2 ** 33 - 1;

function entryName(i: number, path: unknown): string {
  return typeof path === 'string' ? `entry ${i} (${JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}…` : path)})` : `entry ${i}`;
}

function cleanPath(p: unknown, where: () => string): string {
  if (typeof p !== 'string') throw new ContextManifestError(`${where()}: "path" must be a string`);
  if (p === '.' || p === '') return '.';
  if (p.includes('\0')) throw new ContextManifestError(`${where()}: the path holds a NUL byte`);
  if (p.length * 3 > MAX_PATH_BYTES && Buffer.byteLength(p) > MAX_PATH_BYTES) throw new ContextManifestError(`${where()}: the path is longer than ${MAX_PATH_BYTES} bytes`);
  if (p.startsWith('/')) throw new ContextManifestError(`${where()}: the path is absolute; give it relative to the context root`);
  const parts = p.split('/');
  for (const part of parts) {
    if (part === '..') throw new ContextManifestError(`${where()}: the path escapes the context (it holds "..")`);
    if (part === '' || part === '.') throw new ContextManifestError(`${where()}: the path is not clean (empty or "." component); write it like "dir/file"`);
  }
  return p;
}

function integer(v: unknown, field: string, where: () => string, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw new ContextManifestError(`${where()}: "${field}" must be an integer from 0 to ${max}`);
  return v;
}

/**
 * A manifest as the api stores it (as it was sent: JSON, or gzip of it), read back and checked
 * again. Throws ContextManifestError or SyntaxError when it is not a valid manifest.
 */
export function decodeStoredManifest(stored: Buffer, limits: ManifestLimits): ContextManifest {
  const json = stored.length >= 2 && stored[0] === 0x1f && stored[1] === 0x8b ? gunzipSync(stored, { maxOutputLength: 512 * 1024 * 1024 }) : stored;
  return parseContextManifest(JSON.parse(json.toString('utf8')), limits);
}

/**
 * Checks an untrusted manifest (parsed JSON) and returns it sorted and canonical. Refusals name the
 * entry: paths that are absolute, unclean or escape, duplicate paths, a parent that is not a
 * directory, symlinks that are absolute or lead outside the context, bad digests, and the limits.
 * (A symlink chain that escapes only through other links is refused by the worker's indexer.)
 */
export function parseContextManifest(json: unknown, limits: ManifestLimits): ContextManifest {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ContextManifestError('the manifest must be a JSON object {"version": 1, "entries": [...]}');
  const { version, entries: raw } = json as { version?: unknown; entries?: unknown };
  if (version !== 1) throw new ContextManifestError(`unsupported manifest version ${JSON.stringify(version)}: use 1`);
  if (!Array.isArray(raw)) throw new ContextManifestError('"entries" must be an array');
  if (raw.length > limits.maxEntries) throw new ContextManifestError(`the manifest has ${raw.length} entries, more than the limit of ${limits.maxEntries}`);
  const entries: ManifestEntry[] = [];
  const seen = new Set<string>();
  const contents = new Map<string, { path: string; size: number }>();
  let bytes = 0;
  let files = 0;
  raw.forEach((e: unknown, i: number) => {
    if (typeof e !== 'object' || e === null) throw new ContextManifestError(`entry ${i}: must be an object`);
    const r = e as Record<string, unknown>;
    // Named only when refused: building the name for 50,000 good entries costs more than checking them.
    const where = () => entryName(i, r.path);
    const path = cleanPath(r.path, where);
    if (seen.has(path)) throw new ContextManifestError(`${where()}: the path appears more than once`);
    seen.add(path);
    const mtime = integer(r.mtime ?? 0, 'mtime', where, MAX_MTIME);
    if (r.type === 'dir') {
      entries.push({ path, type: 'dir', mode: integer(r.mode ?? 0o755, 'mode', where, 0o7777), mtime });
    } else if (path === '.') {
      throw new ContextManifestError(`${where()}: the context root must be a directory`);
    } else if (r.type === 'file') {
      const size = integer(r.size, 'size', where, Number.MAX_SAFE_INTEGER);
      if (typeof r.digest !== 'string' || !DIGEST.test(r.digest)) throw new ContextManifestError(`${where()}: "digest" must be "sha256:" and 64 lowercase hex digits`);
      const known = contents.get(r.digest);
      if (known && known.size !== size) throw new ContextManifestError(`${where()}: digest ${r.digest} is given with size ${size} here and ${known.size} at ${JSON.stringify(known.path)}`);
      if (!known) contents.set(r.digest, { path, size });
      bytes += size;
      files += 1;
      if (bytes > limits.maxBytes) throw new ContextManifestError(`the files add up to more than the context limit of ${limits.maxBytes} bytes`);
      entries.push({ path, type: 'file', mode: integer(r.mode ?? 0o644, 'mode', where, 0o7777), mtime, size, digest: r.digest });
    } else if (r.type === 'symlink') {
      const target = r.target;
      if (typeof target !== 'string' || target === '' || target.includes('\0')) throw new ContextManifestError(`${where()}: "target" must be a non-empty string`);
      if (target.startsWith('/')) throw new ContextManifestError(`${where()}: symlink target ${JSON.stringify(target)} is absolute`);
      if (lexicallyEscapes(path.split('/').slice(0, -1), target)) throw new ContextManifestError(`${where()}: symlink target ${JSON.stringify(target)} points outside the context`);
      entries.push({ path, type: 'symlink', mtime, target });
    } else {
      throw new ContextManifestError(`${where()}: "type" must be "file", "dir" or "symlink"`);
    }
  });
  const types = new Map(entries.map((e) => [e.path, e.type]));
  for (const e of entries) {
    for (let at = e.path.indexOf('/'); at > 0; at = e.path.indexOf('/', at + 1)) {
      const parent = e.path.slice(0, at);
      const t = types.get(parent);
      if (t !== undefined && t !== 'dir') throw new ContextManifestError(`entry ${JSON.stringify(e.path)}: its parent ${JSON.stringify(parent)} is a ${t}, not a directory`);
    }
  }
  // Code-unit order puts every parent before its children ("a" < "a/b").
  entries.sort((a, b) => (a.path === '.' ? -1 : b.path === '.' ? 1 : a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const canonical = Buffer.from(JSON.stringify({ version: 1, entries: entries.map(canonicalEntry) }));
  return { entries, files, bytes, contents, digest: `sha256:${createHash('sha256').update(canonical).digest('hex')}`, canonical };
}

function canonicalEntry(e: ManifestEntry): ManifestEntry {
  // Fixed key order, so equal manifests are equal bytes.
  if (e.type === 'dir') return { path: e.path, type: e.type, mode: e.mode, mtime: e.mtime };
  if (e.type === 'symlink') return { path: e.path, type: e.type, mtime: e.mtime, target: e.target };
  return { path: e.path, type: e.type, mode: e.mode, mtime: e.mtime, size: e.size, digest: e.digest };
}

/** Reads a file's content for manifestTar: the bytes of `digest`, exactly `size` of them. */
export type ContentReader = (digest: string, size: number) => Promise<Buffer | Readable>;

/**
 * The context a manifest describes, as a tar stream (what a tar upload would have sent), with the
 * contents from `read`: the worker indexes it exactly as it indexes an uploaded tar, under the
 * same safety rules. A content of the wrong length fails the stream.
 */
export function manifestTar(manifest: Pick<ContextManifest, 'entries'>, read: ContentReader): Readable {
  return Readable.from(
    (async function* () {
      for (const e of manifest.entries) {
        if (e.type === 'dir') {
          yield encodeTarHeader({ name: e.path === '.' ? './' : `${e.path}/`, type: 'directory', mode: e.mode, uid: 0, gid: 0, size: 0, mtime: e.mtime });
        } else if (e.type === 'symlink') {
          yield encodeTarHeader({ name: e.path, type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: e.mtime, linkname: e.target });
        } else {
          yield encodeTarHeader({ name: e.path, type: 'file', mode: e.mode, uid: 0, gid: 0, size: e.size, mtime: e.mtime });
          if (e.size === 0) continue;
          const content = await read(e.digest, e.size);
          let n = 0;
          if (Buffer.isBuffer(content)) {
            n = content.length;
            yield content;
          } else {
            for await (const chunk of content) {
              n += (chunk as Buffer).length;
              yield chunk as Buffer;
            }
          }
          if (n !== e.size) throw new Error(`the stored content ${e.digest} of ${e.path} is ${n} bytes, not ${e.size}`);
          yield tarPadding(e.size);
        }
      }
      yield tarEndOfArchive();
    })(),
    { objectMode: false },
  );
}

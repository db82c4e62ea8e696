import { constants as fsConstants } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readlink, realpath, symlink, unlink, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract as createTarExtractor, type Header as RawTarHeader } from 'tar-stream';
import type { TarEntryType } from './tar-format.js';

export interface TarEntryHeader {
  /** Path as stored in the archive (PAX/GNU long names applied), without a trailing '/'. */
  name: string;
  type: TarEntryType | 'unsupported';
  /** Permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  /** Seconds since the epoch; fractional when a PAX mtime carried sub-second precision. */
  mtime: number;
  /** Symlink target, or the archive path a hard link refers to. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** PAX `SCHILY.xattr.*` records, keyed by attribute name. */
  xattrs: Record<string, string>;
}

export interface TarEntry {
  header: TarEntryHeader;
  /** The entry's content. Read it or leave it: it is drained before the next entry. */
  body: Readable;
}

export interface TarReadOptions {
  /** Fails the read once the (decompressed) tar stream exceeds this many bytes: the gzip-bomb guard. */
  maxUncompressedBytes?: number;
}

/** An archive was refused; `entry` names the offending entry when there is one. */
export class TarExtractionError extends Error {
  override readonly name = 'TarExtractionError';
  constructor(readonly entry: string | undefined, reason: string) {
    super(entry === undefined ? `refusing archive: ${reason}` : `refusing tar entry ${JSON.stringify(entry)}: ${reason}`);
  }
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

function startsWith(head: Buffer, magic: number[]): boolean {
  return head.length >= magic.length && magic.every((byte, i) => head[i] === byte);
}

/** Peeks at the first bytes and returns the plain tar stream, gunzipping if the input is gzip. */
async function openTarStream(input: Readable): Promise<Readable> {
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const pending: Buffer[] = [];
  let buffered = 0;
  while (buffered < 4) {
    const next = await iterator.next();
    if (next.done) break;
    pending.push(next.value);
    buffered += next.value.length;
  }
  const head = Buffer.concat(pending);
  if (startsWith(head, ZSTD_MAGIC)) throw new TarExtractionError(undefined, 'zstd-compressed archives are not supported; send tar or tar+gzip');
  const replay = Readable.from(
    (async function* () {
      try {
        if (head.length > 0) yield head;
        for (;;) {
          const next = await iterator.next();
          if (next.done) return;
          yield next.value;
        }
      } finally {
        await iterator.return?.();
      }
    })(),
    { objectMode: false },
  );
  if (!startsWith(head, GZIP_MAGIC)) return replay;
  const gunzip = createGunzip();
  replay.on('error', (err) => gunzip.destroy(err));
  return replay.pipe(gunzip);
}

class ByteLimit extends Transform {
  private seen = 0;
  constructor(private readonly limit: number) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) {
      callback(new TarExtractionError(undefined, `archive expands to more than ${this.limit} bytes`));
      return;
    }
    callback(null, chunk);
  }
}

const ENTRY_TYPES: Record<string, TarEntryType> = {
  file: 'file',
  'contiguous-file': 'file',
  link: 'hardlink',
  symlink: 'symlink',
  directory: 'directory',
  'character-device': 'char-device',
  'block-device': 'block-device',
  fifo: 'fifo',
};

function normalizeHeader(raw: RawTarHeader): TarEntryHeader {
  const pax = (raw.pax ?? {}) as Record<string, string>;
  const xattrs: Record<string, string> = {};
  for (const [key, value] of Object.entries(pax)) {
    if (key.startsWith('SCHILY.xattr.')) xattrs[key.slice('SCHILY.xattr.'.length)] = value;
  }
  const paxNumber = (key: string): number | undefined => {
    const value = pax[key];
    if (value === undefined) return undefined;
    const parsed = Number(value);
    return Number.isFinite(parsed) ? parsed : undefined;
  };
  return {
    name: raw.name.replace(/\/+$/, ''),
    type: ENTRY_TYPES[raw.type ?? ''] ?? 'unsupported',
    mode: (raw.mode ?? 0) & 0o7777,
    uid: paxNumber('uid') ?? raw.uid ?? 0,
    gid: paxNumber('gid') ?? raw.gid ?? 0,
    uname: pax['uname'] ?? raw.uname ?? '',
    gname: pax['gname'] ?? raw.gname ?? '',
    size: raw.size ?? 0,
    mtime: paxNumber('mtime') ?? (raw.mtime ? raw.mtime.getTime() / 1000 : 0),
    linkname: raw.linkname ?? '',
    devmajor: raw.devmajor ?? 0,
    devminor: raw.devminor ?? 0,
    xattrs,
  };
}

/**
 * Iterates the entries of a tar or tar+gzip stream (detected from its magic bytes).
 * Each body must be consumed or ignored before asking for the next entry; ignored bodies are drained.
 */
export async function* readTarEntries(input: Readable, options: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const tar = await openTarStream(input);
  const extractor = createTarExtractor();
  const stages: NodeJS.ReadWriteStream[] = options.maxUncompressedBytes === undefined ? [] : [new ByteLimit(options.maxUncompressedBytes)];
  let failure: unknown;
  const flowing = pipeline([tar, ...stages, extractor as unknown as NodeJS.WritableStream]).catch((err: unknown) => {
    failure = err;
    extractor.destroy(err as Error);
  });
  let completed = false;
  try {
    for await (const raw of extractor) {
      const body = Readable.from(raw, { objectMode: false });
      yield { header: normalizeHeader(raw.header), body };
      if (!body.readableEnded && !body.destroyed) {
        body.resume();
        await finished(body);
      }
    }
    await flowing;
    if (failure !== undefined) throw failure;
    completed = true;
  } catch (err) {
    throw failure ?? err;
  } finally {
    if (!completed) {
      input.destroy();
      tar.destroy();
      extractor.destroy();
    }
  }
}

export interface ExtractLimits {
  /** Most entries the archive may hold. */
  maxEntries?: number;
  /** Most bytes of file content the archive may unpack to. */
  maxBytes?: number;
}

export interface ExtractOptions extends ExtractLimits {
  /** Apply the archive's uid/gid (only takes effect when running as root). */
  preserveOwnership?: boolean;
}

export interface ExtractSummary {
  entries: number;
  bytes: number;
}

/** Files up to this size are buffered and written in one call: far fewer round trips than a stream. */
const SMALL_FILE = 256 * 1024;

export const DEFAULT_EXTRACT_LIMITS: Required<ExtractLimits> = {
  maxEntries: 200_000,
  maxBytes: 10 * 1024 ** 3,
};

interface PendingDirectory {
  parts: string[];
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
}

const MAX_SYMLINK_HOPS = 40;

/**
 * readTarEntries of an untrusted archive, refusing (naming the entry) one with more than
 * `maxEntries` entries or more than `maxBytes` of content, and a stream that inflates past what
 * those allow.
 */
export async function* readLimitedTarEntries(input: Readable, maxEntries: number, maxBytes: number): AsyncGenerator<TarEntry> {
  // Headers and padding add at most a few blocks per entry on top of the content.
  const maxUncompressedBytes = maxBytes + (maxEntries + 1) * 4 * 512 + 1024 * 1024;
  let entries = 0;
  let bytes = 0;
  for await (const entry of readTarEntries(input, { maxUncompressedBytes })) {
    entries += 1;
    if (entries > maxEntries) throw new TarExtractionError(entry.header.name, `archive has more than ${maxEntries} entries`);
    bytes += entry.header.size;
    if (bytes > maxBytes) throw new TarExtractionError(entry.header.name, `archive content exceeds ${maxBytes} bytes`);
    yield entry;
  }
}

/**
 * Follows a symlink the way the kernel would, but within a root: false if any step leaves it.
 * `linkAt` reads the target of the symlink at a path (components), or null when it is not one.
 */
export async function linkResolvesInside(linkParts: string[], target: string, linkAt: (parts: string[]) => string | null | Promise<string | null>): Promise<boolean> {
  const stack = linkParts.slice(0, -1);
  let pending = target.split('/');
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) return false;
      stack.pop();
      continue;
    }
    stack.push(part);
    const next = await linkAt(stack);
    if (next !== null) {
      if (++hops > MAX_SYMLINK_HOPS) return false;
      if (next.startsWith('/')) return false;
      stack.pop();
      pending = [...next.split('/'), ...pending];
    }
  }
  return true;
}

/**
 * Unpacks an untrusted tar or tar+gzip stream into destDir. Refuses, naming the entry, anything
 * that would reach outside destDir (absolute or escaping paths, links whose targets leave it,
 * writes through symlinks), device and fifo entries, and archives over the limits.
 * On error destDir may hold a partial tree, but never anything outside it.
 */
export async function extractTar(input: Readable, destDir: string, options: ExtractOptions = {}): Promise<ExtractSummary> {
  const maxEntries = options.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries;
  const maxBytes = options.maxBytes ?? DEFAULT_EXTRACT_LIMITS.maxBytes;
  const chown = options.preserveOwnership === true && process.getuid?.() === 0;
  await mkdir(destDir, { recursive: true });
  const root = await realpath(destDir);
  const directories: PendingDirectory[] = [];
  const symlinks: { name: string; parts: string[]; target: string }[] = [];
  // Directories this extraction created or checked. Sound to trust: an entry may never replace a
  // directory (removeNonDirectory refuses), so a path in this set stays a real directory.
  const knownDirs = new Set<string>([root]);
  // Directories created empty by this extraction, and every path it wrote: a path under a fresh
  // directory that was never written cannot exist, so it needs no lstat.
  const freshDirs = new Set<string>();
  const written = new Set<string>();
  // Small files are written concurrently (one at a time costs a thread-pool round trip per call);
  // an entry that touches a path still being written waits for it first.
  const inFlight = new Map<string, Promise<void>>();
  let writeError: unknown;
  const settle = async (path: string) => {
    const p = inFlight.get(path);
    if (p) await p;
  };
  const settleAll = async () => {
    await Promise.all(inFlight.values());
    if (writeError !== undefined) throw writeError;
  };
  let entries = 0;
  let bytes = 0;

  for await (const { header, body } of readLimitedTarEntries(input, maxEntries, maxBytes)) {
    const name = header.name;
    entries += 1;
    bytes += header.size;

    const parts = safeArchivePath(name);
    if (parts.length === 0) continue; // "./" itself: destDir already exists
    const target = join(root, ...parts);
    if (writeError !== undefined) throw writeError;
    await settle(target);
    if (header.type === 'hardlink') await settleAll();
    await ensureParentDirectories(root, parts, name, knownDirs, freshDirs);
    const existing = freshDirs.has(dirname(target)) && !written.has(target) ? null : await lstatOrNull(target);
    written.add(target);

    switch (header.type) {
      case 'directory': {
        if (existing !== null && !existing.isDirectory()) await unlink(target);
        if (existing === null || !existing.isDirectory()) {
          await mkdir(target, { mode: 0o700 });
          freshDirs.add(target);
        }
        knownDirs.add(target);
        directories.push({ parts, mode: header.mode, mtime: header.mtime, uid: header.uid, gid: header.gid });
        break;
      }
      case 'file': {
        await removeNonDirectory(existing, target, name);
        // O_EXCL|O_NOFOLLOW: creating the file can never follow a link planted at this path.
        if (header.size <= SMALL_FILE) {
          const chunks: Buffer[] = [];
          for await (const chunk of body) chunks.push(chunk as Buffer);
          const content = Buffer.concat(chunks);
          const write = writeSmallFile(target, content, header, chown)
            .catch((err: unknown) => {
              writeError ??= err;
            })
            .finally(() => inFlight.delete(target));
          inFlight.set(target, write);
          if (inFlight.size >= 32) await Promise.race(inFlight.values());
          break;
        }
        const handle = await open(target, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
        try {
          for await (const chunk of body) await handle.write(chunk as Buffer);
          if (chown) await handle.chown(header.uid, header.gid);
          await handle.chmod(header.mode);
          await handle.utimes(header.mtime, header.mtime);
        } finally {
          await handle.close();
        }
        break;
      }
      case 'symlink': {
        if (header.linkname === '') throw new TarExtractionError(name, 'symlink has an empty target');
        if (header.linkname.startsWith('/')) throw new TarExtractionError(name, `symlink target ${JSON.stringify(header.linkname)} is absolute`);
        if (lexicallyEscapes(parts.slice(0, -1), header.linkname)) {
          throw new TarExtractionError(name, `symlink target ${JSON.stringify(header.linkname)} points outside the destination`);
        }
        await removeNonDirectory(existing, target, name);
        await symlink(header.linkname, target);
        if (chown) await lchown(target, header.uid, header.gid);
        await lutimes(target, header.mtime, header.mtime);
        symlinks.push({ name, parts, target: header.linkname });
        break;
      }
      case 'hardlink': {
        const linkParts = safeArchivePath(header.linkname, name);
        if (linkParts.length === 0) throw new TarExtractionError(name, 'hard link points at the archive root');
        await ensureNoSymlinkComponents(root, linkParts.slice(0, -1), name);
        const source = join(root, ...linkParts);
        const sourceStat = await lstatOrNull(source);
        if (sourceStat === null || !sourceStat.isFile()) {
          throw new TarExtractionError(name, `hard link target ${JSON.stringify(header.linkname)} is not a regular file extracted earlier`);
        }
        if (source === target) break;
        await removeNonDirectory(existing, target, name);
        await link(source, target);
        break;
      }
      case 'char-device':
      case 'block-device':
      case 'fifo':
        throw new TarExtractionError(name, `${header.type} entries are not allowed`);
      default:
        throw new TarExtractionError(name, 'unsupported entry type');
    }
  }

  await settleAll();
  // A later entry can turn an earlier, harmless-looking target into an escape (a/.. once a is a link).
  for (const entry of symlinks) {
    if (!(await resolvesInside(root, entry.parts, entry.target))) {
      throw new TarExtractionError(entry.name, `symlink target ${JSON.stringify(entry.target)} resolves outside the destination`);
    }
  }
  // Deepest first, so restrictive modes and mtimes are not disturbed by writing children.
  directories.sort((a, b) => b.parts.length - a.parts.length);
  for (const dir of directories) {
    const path = join(root, ...dir.parts);
    if (chown) await lchown(path, dir.uid, dir.gid);
    await chmod(path, dir.mode);
    await utimes(path, dir.mtime, dir.mtime);
  }
  return { entries, bytes };
}

async function writeSmallFile(target: string, content: Buffer, header: TarEntryHeader, chown: boolean): Promise<void> {
  // O_EXCL|O_NOFOLLOW: creating the file can never follow a link planted at this path.
  const handle = await open(target, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  try {
    await handle.writeFile(content);
    if (chown) await handle.chown(header.uid, header.gid);
    await handle.chmod(header.mode);
    await handle.utimes(header.mtime, header.mtime);
  } finally {
    await handle.close();
  }
}

/** Splits an archive path into components, refusing absolute paths and `..` that climbs above the root. */
export function safeArchivePath(name: string, entryForErrors: string = name): string[] {
  if (name.includes('\0')) throw new TarExtractionError(entryForErrors, 'path contains a NUL byte');
  if (name.startsWith('/')) throw new TarExtractionError(entryForErrors, `path ${JSON.stringify(name)} is absolute`);
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) throw new TarExtractionError(entryForErrors, `path ${JSON.stringify(name)} escapes the destination with ".."`);
      parts.pop();
      continue;
    }
    parts.push(part);
  }
  return parts;
}

/** Whether a relative link target, read from the directory `baseParts`, climbs above the root. */
export function lexicallyEscapes(baseParts: string[], target: string): boolean {
  const stack = [...baseParts];
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) return true;
      stack.pop();
    } else stack.push(part);
  }
  return false;
}

async function lstatOrNull(path: string) {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function ensureParentDirectories(root: string, parts: string[], name: string, knownDirs: Set<string>, freshDirs: Set<string>): Promise<void> {
  let current = root;
  for (const part of parts.slice(0, -1)) {
    current = join(current, part);
    if (knownDirs.has(current)) continue;
    const stats = await lstatOrNull(current);
    if (stats === null) {
      await mkdir(current, { mode: 0o755 });
      freshDirs.add(current);
    }
    else if (stats.isSymbolicLink()) throw new TarExtractionError(name, `parent ${JSON.stringify(part)} is a symlink; refusing to write through it`);
    else if (!stats.isDirectory()) throw new TarExtractionError(name, `parent ${JSON.stringify(part)} is not a directory`);
    knownDirs.add(current);
  }
}

async function ensureNoSymlinkComponents(root: string, parts: string[], name: string): Promise<void> {
  let current = root;
  for (const part of parts) {
    current = join(current, part);
    const stats = await lstatOrNull(current);
    if (stats?.isSymbolicLink()) throw new TarExtractionError(name, `hard link target passes through symlink ${JSON.stringify(part)}`);
  }
}

async function removeNonDirectory(existing: Awaited<ReturnType<typeof lstatOrNull>>, path: string, name: string): Promise<void> {
  if (existing === null) return;
  if (existing.isDirectory()) throw new TarExtractionError(name, 'would replace a directory extracted earlier');
  await unlink(path);
}

/** Resolves a symlink the way the kernel would, but within root: false if any step leaves it. */
function resolvesInside(root: string, linkParts: string[], target: string): Promise<boolean> {
  return linkResolvesInside(linkParts, target, async (parts) => {
    const path = join(root, ...parts);
    return (await lstatOrNull(path))?.isSymbolicLink() ? readlink(path) : null;
  });
}

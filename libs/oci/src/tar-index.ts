import { createHash } from 'node:crypto';
import { constants as fsConstants, createWriteStream } from 'node:fs';
import { chmod, type FileHandle, lutimes, mkdir, open, symlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { once } from 'node:events';
import type { ContextManifest } from './context-manifest.js';
import type { ContentSpan, SpanSource } from './layer-writer.js';
import { DEFAULT_EXTRACT_LIMITS, type ExtractLimits, lexicallyEscapes, linkResolvesInside, readLimitedTarEntries, safeArchivePath, TarExtractionError } from './tar-reader.js';

/** One path of an indexed archive, as the tree it describes would hold it. */
export type TarIndexEntry =
  | { type: 'directory'; mode: number; mtime: number }
  | { type: 'symlink'; mode: number; mtime: number; target: string }
  /**
   * `offset` is where the content starts in the pack file; `sha256` is its hash in hex. `inode`
   * numbers the file: hard-linked names share it (and the entry object), so COPY keeps them linked.
   * Absent in indexes written before hard links were kept. `pack` is which of the PackReader's
   * files holds the content (0 when absent): an index made from a manifest points into the
   * tenant's content packs as they are, instead of a copy.
   */
  | { type: 'file'; mode: number; mtime: number; size: number; offset: number; sha256: string; inode?: number; pack?: number };

/** Slash path ("" is the root) → entry; every parent directory of an entry is present. */
export type TarIndex = Map<string, TarIndexEntry>;

export interface TarIndexSummary {
  index: TarIndex;
  entries: number;
  bytes: number;
}

const MAX_SYMLINK_HOPS = 40;

/**
 * Reads an untrusted tar or tar+gzip stream into an index of the tree it describes plus one pack
 * file holding every regular file's content back to back: no file is created per entry, so a
 * context of thousands of small files costs one sequential write. The same rules as extractTar
 * (libs/runtime's tree form) apply, and refusals name the entry: no absolute or escaping paths, no
 * writing through a symlink, no relative symlink that resolves outside the tree, hard links only to
 * regular files seen earlier, no devices or fifos, and the entry and size limits. Unlike the tree
 * form, a symlink to an absolute path is kept (BuildKit takes such contexts): it means a path from
 * the context root, and is only ever resolved that way (ADR 0018).
 */
export async function indexTar(input: Readable, packPath: string, limits: ExtractLimits = {}): Promise<TarIndexSummary> {
  const maxEntries = limits.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries;
  const maxBytes = limits.maxBytes ?? DEFAULT_EXTRACT_LIMITS.maxBytes;
  const index: TarIndex = new Map([['', { type: 'directory', mode: 0o755, mtime: 0 }]]);
  const symlinks: Array<{ name: string; parts: string[]; target: string }> = [];
  const pack = createWriteStream(packPath, { flags: 'wx', mode: 0o600 });
  let packError: Error | undefined;
  pack.on('error', (e) => {
    packError = e;
  });
  let offset = 0;
  let inodes = 0;
  let entries = 0;
  let bytes = 0;
  const write = async (chunk: Buffer) => {
    if (packError) throw packError;
    // once() rejects if the stream errors while waiting, and leaves no listener behind either way.
    if (!pack.write(chunk)) await once(pack, 'drain');
    offset += chunk.length;
  };
  try {
    for await (const { header, chunks: content } of readLimitedTarEntries(input, maxEntries, maxBytes)) {
      const name = header.name;
      entries += 1;
      bytes += header.size;
      const parts = safeArchivePath(name);
      if (parts.length === 0) {
        // "./" itself: the root takes its mode and mtime.
        if (header.type === 'directory') index.set('', { type: 'directory', mode: header.mode, mtime: Math.floor(header.mtime) });
        continue;
      }
      const rel = parts.join('/');
      ensureParents(index, parts, name);
      const existing = index.get(rel);
      const mtime = Math.floor(header.mtime);
      switch (header.type) {
        case 'directory':
          index.set(rel, { type: 'directory', mode: header.mode, mtime });
          break;
        case 'file': {
          if (existing?.type === 'directory') throw new TarExtractionError(name, 'would replace a directory extracted earlier');
          const start = offset;
          const hash = createHash('sha256');
          let size = 0;
          for await (const chunk of content) {
            hash.update(chunk);
            size += chunk.length;
            await write(chunk);
          }
          index.set(rel, { type: 'file', mode: header.mode, mtime, size, offset: start, sha256: hash.digest('hex'), inode: ++inodes });
          break;
        }
        case 'symlink': {
          const target = header.linkname;
          if (target === '') throw new TarExtractionError(name, 'symlink has an empty target');
          // An absolute target is kept as written (a checkout may hold one, and BuildKit takes it): every
          // reader resolves it from the context root, never from the worker's (resolveInIndex,
          // resolveInRoot), and nothing writes through it. A relative one may not climb out.
          if (!target.startsWith('/') && lexicallyEscapes(parts.slice(0, -1), target)) {
            throw new TarExtractionError(name, `symlink target ${JSON.stringify(target)} points outside the destination`);
          }
          if (existing?.type === 'directory') throw new TarExtractionError(name, 'would replace a directory extracted earlier');
          index.set(rel, { type: 'symlink', mode: 0o777, mtime, target });
          symlinks.push({ name, parts, target });
          break;
        }
        case 'hardlink': {
          const linkParts = safeArchivePath(header.linkname, name);
          if (linkParts.length === 0) throw new TarExtractionError(name, 'hard link points at the archive root');
          for (let i = 1; i < linkParts.length; i++) {
            if (index.get(linkParts.slice(0, i).join('/'))?.type === 'symlink') {
              throw new TarExtractionError(name, `hard link target passes through symlink ${JSON.stringify(linkParts[i - 1])}`);
            }
          }
          const source = index.get(linkParts.join('/'));
          if (source?.type !== 'file') {
            throw new TarExtractionError(name, `hard link target ${JSON.stringify(header.linkname)} is not a regular file extracted earlier`);
          }
          if (existing?.type === 'directory') throw new TarExtractionError(name, 'would replace a directory extracted earlier');
          // One inode: the same content, mode and mtime under both names.
          index.set(rel, source);
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
    await checkSymlinkChains(index, symlinks);
    if (packError) throw packError;
    pack.end();
    await once(pack, 'finish');
  } catch (e) {
    pack.destroy();
    throw e;
  }
  return { index, entries, bytes };
}

/** A later entry can turn an earlier, harmless-looking target into an escape (a/.. once a is a link): every relative link is resolved once the tree is whole. */
async function checkSymlinkChains(index: TarIndex, symlinks: Array<{ name: string; parts: string[]; target: string }>): Promise<void> {
  for (const link of symlinks) {
    if (index.get(link.parts.join('/'))?.type !== 'symlink') continue;
    if (link.target.startsWith('/')) continue;
    const inside = await linkResolvesInside(
      link.parts,
      link.target,
      (parts) => {
        const e = index.get(parts.join('/'));
        return e?.type === 'symlink' ? e.target : null;
      },
      { absoluteFromRoot: true },
    );
    if (!inside) {
      throw new TarExtractionError(link.name, `symlink target ${JSON.stringify(link.target)} resolves outside the destination`);
    }
  }
}

/** Where a content of a manifest is: which pack (a PackReader file number) and at what offset. */
export type ContentLocation = (digest: string) => { pack: number; offset: number };

/**
 * The index indexTar would make of manifestTar(manifest), without writing or reading a byte of
 * content: file entries point at `locate(digest)` in the tenant's packs, with the manifest's hash.
 * The manifest must have been through parseContextManifest (clean, non-escaping paths, parents that
 * are directories, relative symlinks that do not climb out lexically, the limits); what that check
 * leaves to the indexer, a symlink chain that escapes through other links, is refused here with the
 * same message. Same tree, same modes, mtimes and file numbers as the tar path: the same cache keys
 * and layers. Contents are trusted as the api checked them (each hashed while uploaded).
 */
export async function indexManifest(manifest: Pick<ContextManifest, 'entries'>, locate: ContentLocation): Promise<TarIndex> {
  const index: TarIndex = new Map([['', { type: 'directory', mode: 0o755, mtime: 0 }]]);
  const symlinks: Array<{ name: string; parts: string[]; target: string }> = [];
  let inodes = 0;
  for (const e of manifest.entries) {
    if (e.path === '.') {
      if (e.type === 'dir') index.set('', { type: 'directory', mode: e.mode, mtime: e.mtime });
      continue;
    }
    const parts = e.path.split('/');
    ensureParents(index, parts, e.path);
    if (e.type === 'dir') {
      index.set(e.path, { type: 'directory', mode: e.mode, mtime: e.mtime });
    } else if (e.type === 'symlink') {
      index.set(e.path, { type: 'symlink', mode: 0o777, mtime: e.mtime, target: e.target });
      symlinks.push({ name: e.path, parts, target: e.target });
    } else {
      const at = e.size === 0 ? { pack: 0, offset: 0 } : locate(e.digest);
      const entry: TarIndexEntry = { type: 'file', mode: e.mode, mtime: e.mtime, size: e.size, offset: at.offset, sha256: e.digest.slice('sha256:'.length), inode: ++inodes };
      if (at.pack !== 0) entry.pack = at.pack;
      index.set(e.path, entry);
    }
  }
  await checkSymlinkChains(index, symlinks);
  return index;
}

function ensureParents(index: TarIndex, parts: string[], name: string): void {
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    const e = index.get(dir);
    if (e === undefined) index.set(dir, { type: 'directory', mode: 0o755, mtime: 0 });
    else if (e.type === 'symlink') throw new TarExtractionError(name, `parent ${JSON.stringify(parts[i - 1])} is a symlink; refusing to write through it`);
    else if (e.type !== 'directory') throw new TarExtractionError(name, `parent ${JSON.stringify(parts[i - 1])} is not a directory`);
  }
}

/**
 * Where `rel` leads inside a tree, following symlinks in its parent components (and in the last one
 * when `followLast`) as a chroot would: `..` never climbs above the root, absolute targets start at
 * the root. `linkAt` gives the target of the symlink at a path, or null when it is not one. Null
 * when a link loop is found.
 */
export function resolveThroughLinks(rel: string, followLast: boolean, linkAt: (path: string) => string | null): string | null {
  const out: string[] = [];
  let pending = rel.split('/').filter((p) => p !== '' && p !== '.');
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      out.pop();
      continue;
    }
    out.push(part);
    const target = pending.length > 0 || followLast ? linkAt(out.join('/')) : null;
    if (target !== null) {
      if (++hops > MAX_SYMLINK_HOPS) return null;
      out.pop();
      if (target.startsWith('/')) out.length = 0;
      pending = [...target.split('/').filter((p) => p !== '' && p !== '.'), ...pending];
    }
  }
  return out.join('/');
}

/** resolveThroughLinks over an index made by indexTar. */
export function resolveInIndex(index: TarIndex, rel: string, followLast: boolean): string | null {
  return resolveThroughLinks(rel, followLast, (p) => {
    const e = index.get(p);
    return e?.type === 'symlink' ? e.target : null;
  });
}

/**
 * Reads file contents out of pack files: the one indexTar made, or the content packs an index made
 * by indexManifest points into (an entry's `pack` picks the file). One open handle per file serves
 * every read; the handles are the reader's to close.
 */
export class PackReader {
  /** One span source per pack, so the layer writer reads neighbouring contents of a pack together. */
  private readonly sources: SpanSource[];

  private constructor(private readonly handles: FileHandle[]) {
    this.sources = handles.map((h) => ({ readSpan: (offset: number, length: number) => readAt(h, offset, length) }));
  }

  static async open(packPath: string): Promise<PackReader> {
    return new PackReader([await open(packPath, 'r')]);
  }

  /** A reader over handles already open, in pack-number order; close() closes them. */
  static of(handles: FileHandle[]): PackReader {
    return new PackReader(handles);
  }

  private handle(entry: { pack?: number }): FileHandle {
    const h = this.handles[entry.pack ?? 0];
    if (!h) throw new Error(`the context index names pack ${entry.pack}, which the reader does not hold`);
    return h;
  }

  async read(entry: { offset: number; size: number; pack?: number }): Promise<Buffer> {
    if (entry.size === 0) return Buffer.alloc(0);
    return readAt(this.handle(entry), entry.offset, entry.size);
  }

  /** Where an entry's content lies, for a reader of many (LayerWriter reads neighbours together). */
  span(entry: { offset: number; pack?: number }): ContentSpan {
    this.handle(entry);
    return { source: this.sources[entry.pack ?? 0]!, offset: entry.offset };
  }

  stream(entry: { offset: number; size: number; pack?: number }): Readable {
    return this.handle(entry).createReadStream({ start: entry.offset, end: entry.offset + entry.size - 1, autoClose: false, highWaterMark: 256 * 1024 });
  }

  async close(): Promise<void> {
    await Promise.all(this.handles.map((h) => h.close()));
  }
}

/**
 * Writes the tree an index describes into `dir` (which must not exist): for what needs real files,
 * such as a bind mount of the build context. Hard-linked names become separate files.
 */
export async function materializeIndex(index: TarIndex, pack: string | PackReader, dir: string): Promise<void> {
  const reader = typeof pack === 'string' ? await PackReader.open(pack) : pack;
  try {
    await mkdir(dir, { mode: 0o700 });
    const paths = [...index.keys()].filter((p) => p !== '').sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
    const dirs: string[] = [''];
    const pending = new Set<Promise<void>>();
    for (const rel of paths) {
      const e = index.get(rel)!;
      const abs = join(dir, rel);
      if (e.type === 'directory') {
        await mkdir(abs, { mode: 0o700 });
        dirs.push(rel);
      } else if (e.type === 'symlink') {
        await symlink(e.target, abs);
        await lutimes(abs, e.mtime, e.mtime);
      } else {
        const p = (async () => {
          const h = await open(abs, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
          try {
            if (e.size > 0) await h.writeFile(await reader.read(e));
            await h.chmod(e.mode);
            await h.utimes(e.mtime, e.mtime);
          } finally {
            await h.close();
          }
        })();
        pending.add(p);
        void p.finally(() => pending.delete(p)).catch(() => undefined);
        if (pending.size >= 32) await Promise.race(pending);
      }
    }
    await Promise.all(pending);
    // Deepest first, so restrictive modes and mtimes are not disturbed by writing children.
    for (const rel of dirs.reverse()) {
      const e = index.get(rel)!;
      const abs = rel === '' ? dir : join(dir, rel);
      await chmod(abs, e.mode);
      await utimes(abs, e.mtime, e.mtime);
    }
  } finally {
    if (typeof pack === 'string') await reader.close();
  }
}

/** Exactly `length` bytes of `handle` from `offset`. */
async function readAt(handle: FileHandle, offset: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, done, length - done, offset + done);
    if (bytesRead === 0) throw new Error(`the context pack ends before byte ${offset + length}`);
    done += bytesRead;
  }
  return buf;
}

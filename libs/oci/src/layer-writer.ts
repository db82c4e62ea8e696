import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readFile } from 'node:fs/promises';
import { PassThrough, Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { constants as zlibConstants } from 'node:zlib';
import { ADAPTIVE_GZIP_BLOCK, AdaptiveGzip } from './adaptive-gzip.js';
import { DigestingStream, type Digest } from './digest.js';
import { MediaType } from './media-types.js';
import { encodeTarHeader, tarEndOfArchive, tarPadding, type TarEntryType } from './tar-format.js';
import type { Descriptor } from './types.js';
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from './whiteout.js';

/** Where a regular file's bytes come from. Only opened when the writer reaches the entry. */
export type FileContent =
  | Buffer
  | Uint8Array
  /** A file on disk; a Buffer path holds a name that is not valid UTF-8. */
  | { readonly path: string | Buffer }
  /**
   * Read whole when the writer reaches the entry (small contents kept elsewhere, a pack file say).
   * `sha256` (hex), when the content's hash is already known and trusted (a context pack's, hashed
   * when it was stored): the writer takes it instead of hashing the bytes again.
   */
  | { readonly size: number; readonly read: () => Promise<Buffer>; readonly sha256?: string; readonly span?: ContentSpan }
  | { readonly size: number; readonly stream: Readable | (() => Readable | Promise<Readable>); readonly sha256?: string };

/**
 * Where a content lies in a larger file that holds many (a context pack): the writer reads the
 * contents of consecutive entries that lie near each other in one source (in any order) with one
 * request, instead of one request (a thread-pool round trip and a buffer) per file.
 */
export interface ContentSpan {
  readonly source: SpanSource;
  readonly offset: number;
}

export interface SpanSource {
  /** Exactly `length` bytes from `offset` (throws when the source is shorter). */
  readSpan(offset: number, length: number): Promise<Buffer>;
}

export interface LayerEntryMetadata {
  /** Path inside the layer, relative ("usr/bin/x"; a leading "/" or "./" is dropped). */
  path: string;
  /**
   * The path's bytes when they are not valid UTF-8 (a RUN step may leave such names): written to
   * the layer as they are, while `path` holds a readable form for messages.
   */
  pathBytes?: Buffer;
  /** Permission bits (0o7777). Defaults: files 0o644, directories 0o755, symlinks 0o777, others 0o644. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch, or a Date; sub-second precision is dropped. Default 0. */
  mtime?: number | Date;
  xattrs?: Readonly<Record<string, Buffer | string>>;
}

export type LayerEntry =
  | (LayerEntryMetadata & { type: 'file'; content: FileContent })
  | (LayerEntryMetadata & { type: 'directory' })
  /** `targetBytes`: the target's bytes when they are not valid UTF-8. */
  | (LayerEntryMetadata & { type: 'symlink'; target: string; targetBytes?: Buffer })
  /** `target` is another path in the same layer (another entry's `pathBytes` in `targetBytes`). */
  | (LayerEntryMetadata & { type: 'hardlink'; target: string; targetBytes?: Buffer })
  /** Removes `path` from lower layers: written as `<dir>/.wh.<name>`. */
  | (LayerEntryMetadata & { type: 'whiteout' })
  /** Hides the lower-layer children of directory `path`: written as `<path>/.wh..wh..opq`. */
  | (LayerEntryMetadata & { type: 'opaque' })
  | (LayerEntryMetadata & { type: 'char-device' | 'block-device'; devmajor: number; devminor: number })
  | (LayerEntryMetadata & { type: 'fifo' });

export type LayerCompression = 'gzip' | 'none';

export interface LayerWriterOptions {
  /** SOURCE_DATE_EPOCH: no entry's mtime is later than this (seconds since the epoch). */
  clampMtime?: number;
  compression?: LayerCompression;
  /** zlib level; the default level keeps digests equal to other Strata builds. */
  gzipLevel?: number;
}

export interface LayerResult {
  /** sha256 of the uncompressed tar (rootfs.diff_ids). */
  diffId: Digest;
  /** sha256 of the blob as stored (compressed when compression is gzip). */
  digest: Digest;
  /** Size of the blob as stored. */
  size: number;
  uncompressedSize: number;
  mediaType: string;
  descriptor: Descriptor;
  /** Every entry's header as written, in archive order (what an index of the layer needs). */
  entries: WrittenEntry[];
}

/** An entry's header metadata as written (whiteouts under their `.wh.` names). */
export interface WrittenEntry {
  /** The archive name (a name that is not valid UTF-8 shows its bad bytes as U+FFFD here). */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Content size (regular files; 0 otherwise). */
  size: number;
  /** Symlink target, or for a hard link the archive name of the file it links to. */
  linkname?: string;
  /** sha256 (hex) of a regular file's content, taken while writing it. */
  sha256?: string;
}

export interface PackedLayer {
  /** The layer blob; read it to the end, then `result` resolves. */
  stream: Readable;
  result: Promise<LayerResult>;
  /**
   * With `pack(entries, { tar: true })` and gzip: the same layer's uncompressed tar, written once
   * and read by both (the blob waits for a slow reader of this one; destroying it lets the blob go on alone).
   */
  tar?: Readable;
}

export class LayerEntryError extends Error {
  override readonly name = 'LayerEntryError';
  constructor(readonly path: string, reason: string) {
    super(`layer entry ${JSON.stringify(path)}: ${reason}`);
  }
}

interface PreparedEntry {
  /** The archive name as written; directories end with '/'. */
  tarName: Buffer;
  /** tarName without a trailing '/', as a map key (latin1 keeps every byte). */
  key: string;
  sortKey: Buffer[];
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname?: Buffer;
  devmajor?: number;
  devminor?: number;
  xattrs?: Readonly<Record<string, Buffer | string>>;
  content?: FileContent;
  /** Original entry path, for error messages. */
  source: string;
}

/**
 * Writes reproducible layer tarballs: entries sorted by path (parents before children),
 * metadata exactly as given, empty uname/gname, gzip with a fixed header. Contents are
 * streamed, so a layer's size is bounded by disk, not memory.
 */
export class LayerWriter {
  private readonly options: Required<Omit<LayerWriterOptions, 'clampMtime'>> & { clampMtime?: number };

  constructor(options: LayerWriterOptions = {}) {
    this.options = {
      compression: options.compression ?? 'gzip',
      gzipLevel: options.gzipLevel ?? zlibConstants.Z_DEFAULT_COMPRESSION,
      ...(options.clampMtime === undefined ? {} : { clampMtime: options.clampMtime }),
    };
  }

  pack(entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>, options: { tar?: boolean } = {}): PackedLayer {
    const tarHash = new DigestingStream();
    const blobHash = new DigestingStream();
    const written: WrittenEntry[] = [];
    const source = Readable.from(this.tarChunks(entries, written), { objectMode: false });
    const compression = this.options.compression;
    const tee = options.tar === true && compression === 'gzip' ? new TarTee() : null;
    const stages = compression === 'gzip' ? [tarHash, ...(tee ? [tee] : []), new AdaptiveGzip(this.options.gzipLevel), blobHash] : [tarHash, blobHash];
    const mediaType = compression === 'gzip' ? MediaType.ociLayerGzip : MediaType.ociLayer;

    const result = new Promise<LayerResult>((resolve, reject) => {
      blobHash.once('end', () => {
        const digest = blobHash.digest;
        resolve({
          diffId: tarHash.digest,
          digest,
          size: blobHash.size,
          uncompressedSize: tarHash.size,
          mediaType,
          descriptor: { mediaType, digest, size: blobHash.size },
          entries: written,
        });
      });
      blobHash.once('error', reject);
    });
    // Callers may only await `result` after piping `stream`; avoid an unhandled rejection meanwhile.
    result.catch(() => undefined);
    // stream.pipeline forwards an error from any stage to the last one, which the caller reads.
    void pipelineQuiet(source, stages);
    return { stream: blobHash, result, ...(tee ? { tar: tee.copy } : {}) };
  }

  async writeTo(entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>, out: Writable): Promise<LayerResult> {
    const packed = this.pack(entries);
    await pipeline(packed.stream, out);
    return packed.result;
  }

  private async *tarChunks(entries: Iterable<LayerEntry> | AsyncIterable<LayerEntry>, headers: WrittenEntry[]): AsyncGenerator<Buffer> {
    const prepared: PreparedEntry[] = [];
    for await (const entry of entries) prepared.push(this.prepare(entry));
    prepared.sort((a, b) => compareLayerKeys(a.sortKey, b.sortKey));
    for (let i = 1; i < prepared.length; i++) {
      if (prepared[i - 1]!.key === prepared[i]!.key) {
        throw new LayerEntryError(prepared[i]!.source, 'path appears more than once');
      }
    }
    orderHardlinks(prepared);
    const writtenOf = new Map<PreparedEntry, WrittenEntry>();
    for (const e of prepared) {
      const w: WrittenEntry = { name: e.tarName.toString('utf8'), type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, size: 0 };
      if (e.linkname !== undefined) w.linkname = e.linkname.toString('utf8');
      headers.push(w);
      writtenOf.set(e, w);
    }

    // Small files on disk are read a window ahead, concurrently: one at a time costs a thread-pool
    // round trip per call, which dominates layers of many small files.
    // Contents that lie together in one source (a context pack) are read together, up to SPAN_BYTES.
    // Span reads held at once are bounded (runs passing over entries can overlap): past SPAN_BYTES
    // held, files are read one by one until a run is written.
    const ahead = new Map<number, Promise<OpenedContent>>();
    const runOf = new Map<number, { length: number; left: number }>();
    let spanBytesHeld = 0;
    const startRead = (i: number) => {
      const e = prepared[i];
      if (!e || e.type !== 'file' || ahead.has(i)) return;
      const run = spanBytesHeld < SPAN_BYTES ? spanRun(prepared, i, (j) => ahead.has(j)) : null;
      if (run !== null) {
        const read = run.source.readSpan(run.offset, run.length);
        read.catch(() => undefined);
        spanBytesHeld += run.length;
        const held = { length: run.length, left: run.members.length };
        for (const m of run.members) {
          runOf.set(m.index, held);
          const p = read.then((bytes) => ({ size: m.size, open: null, bytes: bytes.subarray(m.offset - run.offset, m.offset - run.offset + m.size), ...(m.sha256 === undefined ? {} : { sha256: m.sha256 }) }));
          p.catch(() => undefined);
          ahead.set(m.index, p);
        }
        return;
      }
      const p = openContent(e);
      p.catch(() => undefined);
      ahead.set(i, p);
    };
    // The tar goes out in blocks of ADAPTIVE_GZIP_BLOCK bytes: what gzip judges, with no concatenation there.
    const out = new Blocks();
    for (const [i, entry] of prepared.entries()) {
      if (entry.type !== 'file') {
        yield* out.put(encodeTarHeader({ ...entry, name: entry.tarName, size: 0 }));
        continue;
      }
      for (let j = i; j < i + READ_AHEAD; j++) startRead(j);
      const opened = await ahead.get(i)!;
      ahead.delete(i);
      const held = runOf.get(i);
      if (held !== undefined) {
        runOf.delete(i);
        if (--held.left === 0) spanBytesHeld -= held.length;
      }
      const { size, open } = opened;
      yield* out.put(encodeTarHeader({ ...entry, name: entry.tarName, size }));
      const known = opened.sha256;
      const hash = known === undefined ? createHash('sha256') : null;
      let written = 0;
      if (opened.bytes !== undefined) {
        written = opened.bytes.length;
        hash?.update(opened.bytes);
        if (written > 0) yield* out.put(opened.bytes);
      } else if (size > 0 || open !== null) {
        const stream = open === null ? null : await open();
        if (stream !== null) {
          for await (const chunk of stream) {
            const buffer = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
            written += buffer.length;
            if (written > size) {
              stream.destroy();
              throw new LayerEntryError(entry.source, `content is longer than the declared ${size} bytes (file changed while being added?)`);
            }
            hash?.update(buffer);
            yield* out.put(buffer);
          }
        } else {
          const bytes = entry.content as Uint8Array;
          written = bytes.length;
          hash?.update(bytes);
          if (bytes.length > 0) yield* out.put(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
        }
      }
      if (written !== size) {
        throw new LayerEntryError(entry.source, `content is ${written} bytes, declared ${size} (file changed while being added?)`);
      }
      const w = writtenOf.get(entry)!;
      w.size = size;
      w.sha256 = hash === null ? known : hash.digest('hex');
      yield* out.put(tarPadding(size));
    }
    yield* out.put(tarEndOfArchive());
    yield* out.end();
  }

  private prepare(entry: LayerEntry): PreparedEntry {
    const parts = layerPathParts(entry.pathBytes ?? entry.path, entry.type === 'opaque', entry.path);
    let tarParts: Buffer[];
    let type: TarEntryType;
    switch (entry.type) {
      case 'whiteout': {
        if (parts.length === 0) throw new LayerEntryError(entry.path, 'cannot white out the layer root');
        tarParts = [...parts.slice(0, -1), Buffer.concat([WHITEOUT_BYTES, parts[parts.length - 1]!])];
        type = 'file';
        break;
      }
      case 'opaque':
        tarParts = [...parts, OPAQUE_BYTES];
        type = 'file';
        break;
      default:
        tarParts = parts;
        type = entry.type;
    }
    const tarPath = joinParts(tarParts);
    const isWhiteout = entry.type === 'whiteout' || entry.type === 'opaque';
    const defaultMode = isWhiteout ? 0 : entry.type === 'directory' ? 0o755 : entry.type === 'symlink' ? 0o777 : 0o644;
    const mode = entry.mode ?? defaultMode;
    if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) throw new LayerEntryError(entry.path, `mode ${mode} is not permission bits (0-0o7777)`);
    const uid = checkId(entry.path, 'uid', entry.uid ?? 0);
    const gid = checkId(entry.path, 'gid', entry.gid ?? 0);
    let mtime = entry.mtime === undefined ? 0 : entry.mtime instanceof Date ? Math.floor(entry.mtime.getTime() / 1000) : Math.floor(entry.mtime);
    if (!Number.isFinite(mtime)) throw new LayerEntryError(entry.path, 'mtime is not a finite number');
    if (this.options.clampMtime !== undefined && mtime > this.options.clampMtime) mtime = this.options.clampMtime;

    const prepared: PreparedEntry = {
      tarName: type === 'directory' ? Buffer.concat([tarPath, SLASH]) : tarPath,
      key: tarPath.toString('latin1'),
      sortKey: tarParts,
      type,
      mode,
      uid,
      gid,
      mtime,
      source: entry.path,
    };
    if (entry.xattrs !== undefined) prepared.xattrs = entry.xattrs;
    if (entry.type === 'symlink') {
      const target = entry.targetBytes ?? Buffer.from(entry.target, 'utf8');
      if (target.length === 0 || target.includes(0)) throw new LayerEntryError(entry.path, 'symlink target is empty or contains NUL');
      prepared.linkname = target;
    }
    if (entry.type === 'hardlink') prepared.linkname = joinParts(layerPathParts(entry.targetBytes ?? entry.target, false, entry.path));
    if (entry.type === 'char-device' || entry.type === 'block-device') {
      prepared.devmajor = entry.devmajor;
      prepared.devminor = entry.devminor;
    }
    if (entry.type === 'file') prepared.content = entry.content;
    if (isWhiteout) prepared.content = Buffer.alloc(0);
    return prepared;
  }
}

/**
 * Joins the many small pieces of a layer (a 512-byte header, a few KiB of content, the padding)
 * into buffers of exactly ADAPTIVE_GZIP_BLOCK bytes (the last one shorter), copied once: every
 * chunk costs a trip through the hash, gzip and spool streams, and gzip judges exactly such
 * blocks, so it need not join them again. A piece of a whole block, at a block's start, is passed
 * on as it is.
 */
class Blocks {
  private block: Buffer | null = null;
  private filled = 0;

  *put(piece: Buffer): Generator<Buffer> {
    let at = 0;
    while (at < piece.length) {
      if (this.filled === 0 && piece.length - at >= ADAPTIVE_GZIP_BLOCK) {
        yield piece.subarray(at, at + ADAPTIVE_GZIP_BLOCK);
        at += ADAPTIVE_GZIP_BLOCK;
        continue;
      }
      this.block ??= Buffer.allocUnsafeSlow(ADAPTIVE_GZIP_BLOCK);
      const n = piece.copy(this.block, this.filled, at, Math.min(piece.length, at + ADAPTIVE_GZIP_BLOCK - this.filled));
      this.filled += n;
      at += n;
      if (this.filled === ADAPTIVE_GZIP_BLOCK) {
        yield this.block;
        this.block = null;
        this.filled = 0;
      }
    }
  }

  *end(): Generator<Buffer> {
    if (this.filled > 0) yield this.block!.subarray(0, this.filled);
    this.block = null;
    this.filled = 0;
  }
}

/**
 * Passes the uncompressed tar on to gzip and writes the same chunks to `copy`, at the pace of the
 * slower reader. Once `copy` is destroyed or closed (its reader failed or gave up), the tar only
 * goes on to gzip; an error of the tar itself destroys `copy` with it.
 */
class TarTee extends Transform {
  readonly copy = new PassThrough({ highWaterMark: 256 * 1024 });

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const copy = this.copy;
    if (copy.destroyed || copy.writableEnded || copy.write(chunk)) {
      done(null, chunk);
      return;
    }
    const go = (): void => {
      copy.off('drain', go);
      copy.off('close', go);
      done(null, chunk);
    };
    copy.on('drain', go);
    copy.on('close', go);
  }

  override _flush(done: TransformCallback): void {
    if (!this.copy.destroyed) this.copy.end();
    done();
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    // Cut short (not ended by _flush): the copy's reader must not wait for an end that never comes.
    if (!this.copy.destroyed && !this.copy.writableEnded) this.copy.destroy(error ?? new Error('the layer tar was cut short'));
    done(error);
  }
}

async function pipelineQuiet(source: Readable, stages: (NodeJS.ReadWriteStream & Writable)[]): Promise<void> {
  try {
    await pipeline([source, ...stages]);
  } catch {
    // Reported through the last stage's 'error' event.
  }
}

function checkId(path: string, field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new LayerEntryError(path, `${field} ${value} is not a non-negative integer`);
  return value;
}

/** Normalises a layer path to "a/b/c" and refuses anything that could point outside the layer root. */
export function normalizeLayerPath(input: string, allowRoot: boolean): string {
  return joinParts(layerPathParts(input, allowRoot, input)).toString('utf8');
}

const SLASH = Buffer.from('/');
const OPAQUE_BYTES = Buffer.from(OPAQUE_WHITEOUT);
const WHITEOUT_BYTES = Buffer.from(WHITEOUT_PREFIX);

/** A layer path's components as bytes, refusing NUL, ".." and (unless allowed) the root itself. */
function layerPathParts(input: string | Buffer, allowRoot: boolean, shown: string): Buffer[] {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  if (bytes.includes(0)) throw new LayerEntryError(shown, 'path contains a NUL byte');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (i < bytes.length && bytes[i] !== 0x2f) continue;
    const part = bytes.subarray(start, i);
    start = i + 1;
    if (part.length === 0 || (part.length === 1 && part[0] === 0x2e)) continue;
    if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) throw new LayerEntryError(shown, 'path contains ".."');
    parts.push(part);
  }
  if (parts.length === 0 && !allowRoot) throw new LayerEntryError(shown, 'path is empty');
  return parts;
}

function joinParts(parts: Buffer[]): Buffer {
  const joined: Buffer[] = [];
  parts.forEach((part, i) => joined.push(...(i === 0 ? [part] : [SLASH, part])));
  return Buffer.concat(joined);
}

/** The order layers are written in: by path component bytes, an opaque marker first in its directory. */
export function compareLayerKeys(a: Buffer[], b: Buffer[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const cmp = Buffer.compare(a[i]!, b[i]!);
    if (cmp === 0) continue;
    // The opaque marker leads its directory so streaming unpackers clear lower children first.
    if (a[i]!.equals(OPAQUE_BYTES)) return -1;
    if (b[i]!.equals(OPAQUE_BYTES)) return 1;
    return cmp;
  }
  return a.length - b.length;
}

/**
 * A hard link must follow the file it names in the archive. After sorting that may not hold,
 * so within each group of linked names the first in archive order carries the content.
 */
function orderHardlinks(sorted: PreparedEntry[]): void {
  const byName = new Map<string, PreparedEntry>();
  for (const entry of sorted) byName.set(entry.key, entry);
  const groups = new Map<PreparedEntry, PreparedEntry[]>();
  for (const entry of sorted) {
    if (entry.type !== 'hardlink') continue;
    let root: PreparedEntry | undefined = entry;
    const seen = new Set<PreparedEntry>();
    while (root !== undefined && root.type === 'hardlink') {
      if (seen.has(root)) throw new LayerEntryError(entry.source, 'hard links form a cycle');
      seen.add(root);
      root = byName.get(root.linkname!.toString('latin1'));
    }
    if (root === undefined) throw new LayerEntryError(entry.source, `hard link target ${JSON.stringify(entry.linkname!.toString('utf8'))} is not in this layer`);
    // Any inode but a directory can carry several names (files, and the symlinks, fifos and devices a RUN links).
    if (root.type === 'directory') throw new LayerEntryError(entry.source, `hard link target ${JSON.stringify(root.tarName.toString('utf8'))} is a directory`);
    const members = groups.get(root) ?? [root];
    members.push(entry);
    groups.set(root, members);
  }
  const index = new Map<PreparedEntry, number>();
  sorted.forEach((entry, i) => index.set(entry, i));
  for (const [file, members] of groups) {
    members.sort((a, b) => index.get(a)! - index.get(b)!);
    const first = members[0]!;
    if (first !== file) {
      // Move content and inode metadata to the first name; the original file becomes a link.
      const names = new Map(members.map((m) => [m, { tarName: m.tarName, key: m.key, sortKey: m.sortKey, source: m.source }]));
      const fileFields = { ...file };
      for (const member of members) Object.assign(member, fileFields, names.get(member));
      // A symlink's target moves with it; a file has none, and the first name's old link target goes.
      if (file.linkname === undefined) delete first.linkname;
    }
    for (const member of members.slice(1)) {
      member.type = 'hardlink';
      member.linkname = first.tarName;
      delete member.content;
      delete member.devmajor;
      delete member.devminor;
    }
  }
}

interface OpenedContent {
  size: number;
  open: (() => Promise<Readable>) | null;
  /** A small file's whole content, already read. */
  bytes?: Buffer;
  /** The content's hash as the source gave it. */
  sha256?: string;
}

const READ_AHEAD = 16;
/** The most a span read takes at once; past this many bytes held by span reads, no new one starts. */
const SPAN_BYTES = 4 * 1024 * 1024;
/**
 * The most bytes a span read may take that none of its members needs: the gaps between contents
 * that lie near each other in the source but not in layer order (a tar sent in directory order,
 * which the layer's sorted order shuffles within each directory).
 */
const SPAN_GAP_BYTES = 256 * 1024;

interface SpanRun {
  source: SpanSource;
  offset: number;
  length: number;
  members: Array<{ index: number; offset: number; size: number; sha256?: string }>;
}

/** How many entries in a row a run passes over (contents elsewhere in the source) before it ends. */
const SPAN_MISSES = 32;

/**
 * The entry at `start` and file entries after it (not yet `taken` by another run) whose contents lie
 * in the same source within one range of at most SPAN_BYTES, of which at most SPAN_GAP_BYTES no
 * member needs. Entries whose contents lie elsewhere are passed over, up to SPAN_MISSES in a row, and
 * start runs of their own. Null when the entry has no span or the run would be just itself.
 */
function spanRun(prepared: PreparedEntry[], start: number, taken: (index: number) => boolean): SpanRun | null {
  const first = spanOf(prepared[start]!);
  if (first === null || first.size > SPAN_BYTES) return null;
  const source = first.span.source;
  const members: SpanRun['members'] = [{ index: start, offset: first.span.offset, size: first.size, ...(first.sha256 === undefined ? {} : { sha256: first.sha256 }) }];
  let low = first.span.offset;
  let high = low + first.size;
  let needed = first.size;
  let misses = 0;
  for (let j = start + 1; j < prepared.length && misses < SPAN_MISSES; j++) {
    const e = prepared[j]!;
    if (e.type !== 'file' || taken(j)) continue;
    const next = spanOf(e);
    const from = next === null ? 0 : Math.min(low, next.span.offset);
    const to = next === null ? 0 : Math.max(high, next.span.offset + next.size);
    if (next === null || next.span.source !== source || to - from > SPAN_BYTES || to - from - (needed + next.size) > SPAN_GAP_BYTES) {
      misses += 1;
      continue;
    }
    misses = 0;
    members.push({ index: j, offset: next.span.offset, size: next.size, ...(next.sha256 === undefined ? {} : { sha256: next.sha256 }) });
    low = from;
    high = to;
    needed += next.size;
  }
  return members.length > 1 ? { source, offset: low, length: high - low, members } : null;
}

function spanOf(entry: PreparedEntry): { span: ContentSpan; size: number; sha256?: string } | null {
  const c = entry.content;
  if (c === undefined || c instanceof Uint8Array || !('read' in c) || c.span === undefined) return null;
  if (!Number.isInteger(c.size) || c.size < 0) return null;
  return { span: c.span, size: c.size, ...(c.sha256 === undefined ? {} : { sha256: c.sha256 }) };
}
const SMALL_FILE = 256 * 1024;

async function openContent(entry: PreparedEntry): Promise<OpenedContent> {
  const content = entry.content!;
  if (content instanceof Uint8Array) return { size: content.byteLength, open: null };
  if ('path' in content) {
    const stats = await lstat(content.path);
    if (!stats.isFile()) throw new LayerEntryError(entry.source, `content source ${content.path} is not a regular file`);
    if (stats.size <= SMALL_FILE) {
      const bytes = await readFile(content.path);
      if (bytes.length !== stats.size) throw new LayerEntryError(entry.source, `content is ${bytes.length} bytes, declared ${stats.size} (file changed while being added?)`);
      return { size: stats.size, open: null, bytes };
    }
    return { size: stats.size, open: async () => createReadStream(content.path, { highWaterMark: 256 * 1024 }) };
  }
  if (!Number.isInteger(content.size) || content.size < 0) throw new LayerEntryError(entry.source, `declared size ${content.size} is invalid`);
  if ('read' in content) {
    const bytes = await content.read();
    if (bytes.length !== content.size) throw new LayerEntryError(entry.source, `content is ${bytes.length} bytes, declared ${content.size}`);
    return { size: content.size, open: null, bytes, ...(content.sha256 === undefined ? {} : { sha256: content.sha256 }) };
  }
  const stream = content.stream;
  return { size: content.size, open: async () => (typeof stream === 'function' ? await stream() : stream), ...(content.sha256 === undefined ? {} : { sha256: content.sha256 }) };
}

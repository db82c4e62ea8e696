import { Readable, Transform, type TransformCallback } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { types } from 'node:util';
import { createGunzip } from 'node:zlib';
import { extract as createTarExtractor, type Header as RawTarHeader } from 'tar-stream';
import { archiveMagic, type TarEntryType } from './tar-format.js';

export interface TarEntryHeader {
  /**
   * Path as stored in the archive (PAX/GNU long names applied), without a trailing '/'. A name that
   * is not valid UTF-8 shows its bad bytes as U+FFFD here and has its exact bytes in `nameBytes`.
   */
  name: string;
  /** The name's bytes (no trailing '/'), only when they are not valid UTF-8. */
  nameBytes?: Buffer;
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
  /** Symlink target, or the archive path a hard link refers to (U+FFFD for bytes that are not UTF-8). */
  linkname: string;
  /** The link target's bytes, only when they are not valid UTF-8. */
  linknameBytes?: Buffer;
  devmajor: number;
  devminor: number;
  /** PAX `SCHILY.xattr.*` records, keyed by attribute name, values decoded as UTF-8 (lossy for binary values). */
  xattrs: Record<string, string>;
  /** The same records with their values' exact bytes (a security.capability set, say). */
  xattrBytes: Record<string, Buffer>;
}

export interface TarEntry {
  header: TarEntryHeader;
  /**
   * The entry's content as a Readable, made when first touched: destructuring `{ header, body }`
   * makes it too. Read it or leave it: it is drained before the next entry.
   */
  body: Readable;
  /**
   * The same content as a plain iterable of chunks, without a Readable around each entry: what the
   * worker's and the api's readers use (a Readable per entry made indexing a 1,000-file context
   * take twice as long, most of the difference garbage). Use one of `body` or `chunks`.
   */
  chunks: AsyncIterable<Buffer>;
}

export interface TarReadOptions {
  /** Fails the read once the (decompressed) tar stream exceeds this many bytes: the gzip-bomb guard. */
  maxUncompressedBytes?: number;
  /** Sees every chunk of the uncompressed tar, in order (to hash it into a diff ID, say). */
  onTarChunk?: (chunk: Buffer) => void;
}

/** A hostile name is quoted by its start and end, so a message stays one readable sentence. */
function shortened(name: string): string {
  return name.length <= 200 ? name : `${name.slice(0, 100)}…${name.slice(-60)}`;
}

/** An archive was refused; `entry` names the offending entry when there is one. */
export class TarExtractionError extends Error {
  override readonly name = 'TarExtractionError';
  constructor(readonly entry: string | undefined, reason: string) {
    super(entry === undefined ? `refusing archive: ${reason}` : `refusing tar entry ${JSON.stringify(shortened(entry))}: ${reason}`);
  }
}

/**
 * The bytes are not a tar (or tar+gzip) archive at all: bad gzip data, a broken header, an archive
 * that ends early. Errors of the stream being read are passed on as they are, not as this.
 */
export class TarFormatError extends Error {
  override readonly name = 'TarFormatError';
  constructor(reason: string) {
    super(reason);
  }
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
  const magic = archiveMagic(head);
  if (magic !== null && magic !== 'gzip') throw new TarExtractionError(undefined, `${magic} archives are not supported; send tar or tar+gzip`);
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
  if (magic !== 'gzip') return replay;
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

/**
 * The reader decodes every name and PAX record as latin1 (one char per byte), so nothing is lost;
 * this gives the UTF-8 text and, when the bytes are not valid UTF-8, the bytes themselves.
 */
function fromBinary(binary: string): { text: string; bytes?: Buffer } {
  const bytes = Buffer.from(binary, 'latin1');
  const text = bytes.toString('utf8');
  return Buffer.byteLength(text) === bytes.length && Buffer.from(text, 'utf8').equals(bytes) ? { text } : { text, bytes };
}

/** A PAX record set (`<len> <key>=<value>\n`...) with keys and values as latin1 strings: byte-exact. */
function decodePaxBinary(buf: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let rest = buf;
  while (rest.length > 0) {
    const space = rest.indexOf(0x20);
    if (space < 0) break;
    const len = Number.parseInt(rest.subarray(0, space).toString('latin1'), 10);
    if (!Number.isSafeInteger(len) || len <= space + 1 || len > rest.length) break;
    const record = rest.subarray(space + 1, len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) break;
    out[record.subarray(0, eq).toString('latin1')] = record.subarray(eq + 1).toString('latin1');
    rest = rest.subarray(len);
  }
  return out;
}

type PaxExtractor = {
  _header: { type?: string } | null;
  _pax: Record<string, string> | null;
  _paxGlobal: Record<string, string> | null;
  _decodeLongHeader: (buf: Buffer) => void;
};

/**
 * tar-stream (pinned, 3.2.2) decodes PAX records as UTF-8, which turns a name or an xattr value
 * that is not UTF-8 into U+FFFD. This extractor decodes them as latin1 instead (its names too,
 * through filenameEncoding), so every byte survives; normalizeHeader turns them back.
 */
function byteExactExtractor(): ReturnType<typeof createTarExtractor> {
  const extractor = createTarExtractor({ filenameEncoding: 'latin1' } as Parameters<typeof createTarExtractor>[0]);
  const inner = extractor as unknown as PaxExtractor;
  const original = inner._decodeLongHeader;
  if (typeof original !== 'function') throw new Error('tar-stream changed: _decodeLongHeader is gone (see byteExactExtractor)');
  inner._decodeLongHeader = function (this: PaxExtractor, buf: Buffer) {
    const type = this._header?.type;
    if (type === 'pax-header') this._pax = { ...(this._paxGlobal ?? {}), ...decodePaxBinary(buf) };
    else if (type === 'pax-global-header') this._paxGlobal = decodePaxBinary(buf);
    else original.call(this, buf);
  };
  return extractor;
}

function normalizeHeader(raw: RawTarHeader): TarEntryHeader {
  const pax = (raw.pax ?? {}) as Record<string, string>;
  const xattrs: Record<string, string> = {};
  const xattrBytes: Record<string, Buffer> = {};
  for (const [key, value] of Object.entries(pax)) {
    if (!key.startsWith('SCHILY.xattr.')) continue;
    const attr = fromBinary(key.slice('SCHILY.xattr.'.length)).text;
    xattrBytes[attr] = Buffer.from(value, 'latin1');
    xattrs[attr] = xattrBytes[attr].toString('utf8');
  }
  const name = fromBinary(raw.name.replace(/\/+$/, ''));
  const linkname = fromBinary(raw.linkname ?? '');
  const text = (v: string | undefined | null) => (v === undefined || v === null ? undefined : fromBinary(v).text);
  const paxNumber = (key: string): number | undefined => {
    const value = pax[key];
    if (value === undefined) return undefined;
    const parsed = Number(value);
    return Number.isFinite(parsed) ? parsed : undefined;
  };
  return {
    name: name.text,
    ...(name.bytes ? { nameBytes: name.bytes } : {}),
    type: ENTRY_TYPES[raw.type ?? ''] ?? 'unsupported',
    mode: (raw.mode ?? 0) & 0o7777,
    uid: paxNumber('uid') ?? raw.uid ?? 0,
    gid: paxNumber('gid') ?? raw.gid ?? 0,
    uname: text(pax['uname']) ?? raw.uname ?? '',
    gname: text(pax['gname']) ?? raw.gname ?? '',
    size: raw.size ?? 0,
    mtime: paxNumber('mtime') ?? (raw.mtime ? raw.mtime.getTime() / 1000 : 0),
    linkname: linkname.text,
    ...(linkname.bytes ? { linknameBytes: linkname.bytes } : {}),
    devmajor: raw.devmajor ?? 0,
    devminor: raw.devminor ?? 0,
    xattrs,
    xattrBytes,
  };
}

/**
 * Iterates the entries of a tar or tar+gzip stream (detected from its magic bytes).
 * Each body must be consumed or ignored before asking for the next entry; ignored bodies are drained.
 */
export async function* readTarEntries(input: Readable, options: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  // What the input itself failed with (a download cut off) is not the archive's fault.
  let inputError: unknown;
  input.once('error', (e) => (inputError ??= e));
  const tar = await openTarStream(input);
  const extractor = byteExactExtractor();
  const stages: NodeJS.ReadWriteStream[] = options.maxUncompressedBytes === undefined ? [] : [new ByteLimit(options.maxUncompressedBytes)];
  const onTarChunk = options.onTarChunk;
  if (onTarChunk) {
    stages.push(
      new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          onTarChunk(chunk);
          callback(null, chunk);
        },
      }),
    );
  }
  let failure: unknown;
  const flowing = pipeline([tar, ...stages, extractor as unknown as NodeJS.WritableStream]).catch((err: unknown) => {
    failure = err;
    extractor.destroy(err as Error);
  });
  let completed = false;
  try {
    for await (const raw of extractor) {
      // An entry cut short fails its body, not the loop: that error is the archive's fault too.
      let body: Readable | undefined;
      let iterated = false;
      let ended = false;
      // The entry stream's own iterator, its errors mapped: no generator in between (a step per chunk less).
      const chunks: AsyncIterable<Buffer> = {
        [Symbol.asyncIterator]() {
          iterated = true;
          const inner = (raw as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
          return {
            next: () =>
              inner.next().then(
                (result) => {
                  if (result.done) ended = true;
                  return result;
                },
                (err: unknown) => {
                  throw asFormatError(err, inputError);
                },
              ),
            return: async (value?: unknown) => (inner.return ? await inner.return(value) : { done: true as const, value: undefined }),
          };
        },
      };
      const entry: TarEntry = {
        header: normalizeHeader(raw.header),
        get body(): Readable {
          // Built on first use only: most readers of contents want `chunks`.
          body ??= Readable.from(chunks, { objectMode: false });
          return body;
        },
        chunks,
      };
      yield entry;
      if (body !== undefined) {
        if (!body.readableEnded && !body.destroyed) {
          body.resume();
          await finished(body);
        }
      } else if (!ended) {
        if (iterated) {
          // Left part-way: drain what is left of the entry the way the wrapper would have.
          for await (const _ of raw as AsyncIterable<Buffer>) void _;
        } else {
          for await (const _ of chunks) void _;
        }
      }
    }
    await flowing;
    if (failure !== undefined) throw failure;
    completed = true;
  } catch (err) {
    throw asFormatError(failure ?? err, inputError);
  } finally {
    if (!completed) {
      input.destroy();
      tar.destroy();
      extractor.destroy();
    }
  }
}

/** What the archive readers' own errors mean for the sender. */
const FORMAT_ERRORS: Array<[RegExp, string]> = [
  [/^Unexpected end of data/, 'it ends in the middle of an entry (was it cut short?)'],
  [/^Invalid tar header\. Maybe/, 'an entry header is corrupt (its checksum does not match)'],
  [/^Invalid tar header: unknown format|^Invalid header/, 'an entry header is not a tar header'],
  [/^Header exceeds max size/, 'an extended (PAX or long-name) header is too large'],
];

/** gzip's and tar-stream's own errors say the bytes are not an archive; anything else passes unchanged. */
function asFormatError(err: unknown, inputError: unknown): unknown {
  // isNativeError, not instanceof: zlib's errors come from Node's own realm, which is another realm under jest's vm.
  if (!types.isNativeError(err) || err === inputError || err instanceof TarExtractionError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (code === 'Z_BUF_ERROR') return new TarFormatError('the gzip stream ends early (was it cut short?)');
  if (code.startsWith('Z_')) return new TarFormatError(`the gzip data is corrupt (${err.message})`);
  for (const [pattern, reason] of FORMAT_ERRORS) if (pattern.test(err.message)) return new TarFormatError(reason);
  return err;
}

export interface ExtractLimits {
  /** Most entries the archive may hold. */
  maxEntries?: number;
  /** Most bytes of file content the archive may unpack to. */
  maxBytes?: number;
}

export const DEFAULT_EXTRACT_LIMITS: Required<ExtractLimits> = {
  maxEntries: 200_000,
  maxBytes: 10 * 1024 ** 3,
};

const MAX_SYMLINK_HOPS = 40;

/**
 * readTarEntries of an untrusted archive, refusing (naming the entry) one with more than
 * `maxEntries` entries or more than `maxBytes` of content, and a stream that inflates past what
 * those allow.
 */
export async function* readLimitedTarEntries(input: Readable, maxEntries: number, maxBytes: number, options: Pick<TarReadOptions, 'onTarChunk'> = {}): AsyncGenerator<TarEntry> {
  // Headers and padding add at most a few blocks per entry on top of the content.
  const maxUncompressedBytes = maxBytes + (maxEntries + 1) * 4 * 512 + 1024 * 1024;
  let entries = 0;
  let bytes = 0;
  for await (const entry of readTarEntries(input, { maxUncompressedBytes, ...options })) {
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
 * An absolute link met on the way leaves the root, unless `absoluteFromRoot` (a tree whose readers
 * resolve absolute links from its root, as a build context's are): then it restarts at the root.
 */
export async function linkResolvesInside(
  linkParts: string[],
  target: string,
  linkAt: (parts: string[]) => string | null | Promise<string | null>,
  options: { absoluteFromRoot?: boolean } = {},
): Promise<boolean> {
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
      stack.pop();
      if (next.startsWith('/')) {
        if (!options.absoluteFromRoot) return false;
        stack.length = 0;
      }
      pending = [...next.split('/'), ...pending];
    }
  }
  return true;
}

/** Splits an archive path into components, refusing absolute paths and `..` that climbs above the root. */
const PATH_MAX = 4096;
const NAME_MAX = 255;

export function safeArchivePath(name: string, entryForErrors: string = name): string[] {
  if (name.includes('\0')) throw new TarExtractionError(entryForErrors, 'path contains a NUL byte');
  // Linux's own limits; a longer path could never be written, and a deep one costs an index entry per level.
  if (Buffer.byteLength(name) > PATH_MAX) throw new TarExtractionError(entryForErrors, `path is longer than ${PATH_MAX} bytes`);
  if (name.startsWith('/')) throw new TarExtractionError(entryForErrors, `path ${JSON.stringify(name)} is absolute`);
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) throw new TarExtractionError(entryForErrors, `path ${JSON.stringify(name)} escapes the destination with ".."`);
      parts.pop();
      continue;
    }
    if (Buffer.byteLength(part) > NAME_MAX) throw new TarExtractionError(entryForErrors, `path component is longer than ${NAME_MAX} bytes`);
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

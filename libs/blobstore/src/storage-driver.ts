import { type Readable, Transform, type Writable } from 'node:stream';

/** A byte range: `length` bytes starting at `offset` (to the end when length is omitted). */
export interface ByteRange {
  offset: number;
  length?: number;
}

export interface ObjectStat {
  size: number;
  modified: Date;
}

export class NotFoundError extends Error {
  override readonly name = 'NotFoundError';
  constructor(readonly key: string) {
    super(`storage object ${JSON.stringify(key)} not found`);
  }
}

/**
 * The storage service failed a request even after the driver's retries (5xx, resets, timeouts, a
 * body cut short): the operation, the key and the last cause, in one sentence.
 */
export class StorageUnavailableError extends Error {
  override readonly name = 'StorageUnavailableError';
  constructor(readonly operation: string, readonly key: string, readonly attempts: number, cause: unknown) {
    super(`${operation} ${JSON.stringify(key)} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${causeMessage(cause)}`, { cause });
  }
}

function causeMessage(cause: unknown): string {
  const e = cause as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  const text = e?.message || e?.name || String(cause);
  return status ? `HTTP ${status} ${text}` : text;
}

export class InvalidKeyError extends Error {
  override readonly name = 'InvalidKeyError';
  constructor(readonly key: string, reason: string) {
    super(`invalid storage key ${JSON.stringify(key)}: ${reason}`);
  }
}

export class InvalidRangeError extends Error {
  override readonly name = 'InvalidRangeError';
  constructor(readonly key: string, range: ByteRange, size: number) {
    super(`range offset=${range.offset} length=${range.length ?? 'rest'} is outside ${JSON.stringify(key)} (${size} bytes)`);
  }
}

export interface PutOptions {
  /** The body's exact length in bytes. */
  size?: number;
}

/** A body given with `size` was longer or shorter than that. */
export class SizeMismatchError extends Error {
  override readonly name = 'SizeMismatchError';
  constructor(readonly key: string, readonly expected: number, readonly actual: number) {
    super(`${JSON.stringify(key)}: the body has ${actual > expected ? `more than ${expected}` : `${actual} of the ${expected}`} bytes announced`);
  }
}

/** Passes a stream through, failing it when it is longer or shorter than `expected` bytes. */
export function exactLength(key: string, expected: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (seen > expected) callback(new SizeMismatchError(key, expected, seen));
      else callback(null, chunk);
    },
    flush(callback) {
      callback(seen === expected ? null : new SizeMismatchError(key, expected, seen));
    },
  });
}

/** An object opened for sending: its size is known, none of its bytes read yet. */
export interface OpenedObject {
  size: number;
  /**
   * Writes bytes [start, end) into `sink` (not ending it), reading into a few buffers that are
   * reused once the sink has taken each: no allocation per chunk, so no garbage to collect. Closes
   * the object, whether it succeeds or not. Rejects if the sink closes first or the object is short.
   */
  sendTo(sink: Writable, start: number, end: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * The narrow key/value contract every backend implements (after distribution's storagedriver).
 * Keys are '/'-separated relative paths; objects are immutable once `put` resolves, and an
 * object is either fully visible or absent, never partial.
 */
export interface StorageDriver {
  /** For logs and test names. */
  readonly name: string;
  /**
   * Writes or replaces `key`; a Readable is streamed, never buffered whole. Resolves with bytes written.
   * `size`, when the caller knows it, lets S3 take the stream in one PutObject instead of a multipart
   * upload (no parts held in memory, no server-side assembly); a stream of another length is refused
   * (SizeMismatchError) and nothing is left at `key`.
   */
  put(key: string, body: Buffer | Readable, options?: PutOptions): Promise<{ size: number }>;
  /** Throws NotFoundError if absent, InvalidRangeError if the range starts past the end. */
  get(key: string, range?: ByteRange): Promise<Readable>;
  stat(key: string): Promise<ObjectStat | null>;
  /** Removing an absent key is not an error. */
  delete(key: string): Promise<void>;
  /** Every key starting with `prefix` (a string prefix, not only a folder), in no particular order. */
  list(prefix: string): AsyncIterable<string>;
  /** Renames `src` to `dst`, replacing `dst`. Throws NotFoundError if `src` is absent. */
  move(src: string, dst: string): Promise<void>;
  /**
   * Writes `dst` as the concatenation of `parts`, in order, server-side where the backend can
   * (registry chunked uploads commit this way without re-sending bytes). Parts are left in place.
   */
  concat(parts: readonly string[], dst: string): Promise<{ size: number }>;
  /**
   * Optional: opens `key` to send it (NotFoundError if absent). `range`, when given, is the only
   * range `sendTo` will be asked for (S3 requests just it); the filesystem driver may send any.
   */
  open?(key: string, range?: ByteRange): Promise<OpenedObject>;
}

/** Refuses keys that could escape a filesystem root or be ambiguous on S3. */
export function validateKey(key: string): string {
  if (key.length === 0) throw new InvalidKeyError(key, 'empty');
  if (key.length > 1024) throw new InvalidKeyError(key, 'longer than 1024 characters');
  if (key.includes('\0')) throw new InvalidKeyError(key, 'contains a NUL byte');
  if (key.startsWith('/') || key.endsWith('/')) throw new InvalidKeyError(key, 'starts or ends with "/"');
  for (const part of key.split('/')) {
    if (part === '' || part === '.' || part === '..') throw new InvalidKeyError(key, 'has an empty, "." or ".." component');
  }
  return key;
}

export function checkRange(key: string, range: ByteRange | undefined, size: number): { start: number; end: number } {
  const start = range?.offset ?? 0;
  const length = range?.length ?? size - start;
  if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > size) {
    throw new InvalidRangeError(key, range ?? { offset: 0 }, size);
  }
  // `end` is exclusive.
  return { start, end: start + length };
}

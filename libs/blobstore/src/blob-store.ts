import { createHash, type Hash, randomUUID } from 'node:crypto';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { digestFromHex, digestHex, DigestingStream, isDigest, sha256Digest, type Digest } from '@strata/oci';
import { checkRange, NotFoundError, type ByteRange, type StorageDriver } from './storage-driver.js';

export interface BlobInfo {
  digest: Digest;
  size: number;
}

export class DigestMismatchError extends Error {
  override readonly name = 'DigestMismatchError';
  constructor(readonly expected: Digest, readonly actual: Digest, readonly size: number) {
    super(`content hashes to ${actual} (${size} bytes), expected ${expected}`);
  }
}

export class BlobNotFoundError extends Error {
  override readonly name = 'BlobNotFoundError';
  constructor(readonly digest: Digest) {
    super(`blob ${digest} not found`);
  }
}

/** A stored blob read back with a different size than recorded: storage corruption or truncation. */
export class BlobSizeMismatchError extends Error {
  override readonly name = 'BlobSizeMismatchError';
  constructor(readonly digest: Digest, expected: number, actual: number) {
    super(`blob ${digest}: read ${actual} bytes, expected ${expected}`);
  }
}

export interface BlobStoreOptions {
  /** Where blobs are staged before verification. */
  stagingPrefix?: string;
}

const BLOB_PREFIX = 'blobs/sha256/';

export function blobKey(digest: Digest): string {
  return `${BLOB_PREFIX}${digestHex(digest)}`;
}

/**
 * Content-addressed blobs on a StorageDriver. A blob becomes visible under `blobs/sha256/<hex>`
 * only after its bytes were hashed and matched, so readers never see unverified content.
 */
export class BlobStore {
  private readonly stagingPrefix: string;

  constructor(readonly driver: StorageDriver, options: BlobStoreOptions = {}) {
    this.stagingPrefix = options.stagingPrefix ?? 'staging/blobs';
  }

  /**
   * Stores a blob, hashing it while it streams to a staging key. If `expectedDigest` is given and
   * the blob already exists, the bytes are only hashed (not stored again) to verify the claim.
   * `size`, the body's exact length when the caller knows it, lets the driver write it in one
   * request (S3: a PutObject, not a multipart upload).
   */
  async put(body: Buffer | Readable, expectedDigest?: Digest, options: { size?: number } = {}): Promise<BlobInfo> {
    // Small blobs (configs, manifests, most layers) are hashed in memory and written straight to
    // their final key: verified before anyone can see them, in two requests instead of five.
    const small = Buffer.isBuffer(body) ? { bytes: body, rest: null } : await readUpTo(body, SMALL_BLOB_BYTES);
    if (small.rest === null) return this.putSmall(small.bytes, expectedDigest);
    const source = small.rest;
    const hasher = new DigestingStream();
    if (expectedDigest !== undefined && (await this.stat(expectedDigest)) !== null) {
      await pipeline(source, hasher, drain());
      this.check(hasher, expectedDigest);
      return { digest: expectedDigest, size: hasher.size };
    }
    const staging = `${this.stagingPrefix}/${randomUUID()}`;
    source.once('error', (err) => hasher.destroy(err));
    try {
      await this.driver.put(staging, source.pipe(hasher), options.size === undefined ? {} : { size: options.size });
      if (source.errored) throw source.errored;
      if (expectedDigest !== undefined) this.check(hasher, expectedDigest);
      return await this.publish(staging, { digest: hasher.digest, size: hasher.size });
    } catch (err) {
      await this.driver.delete(staging).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Stores a blob whose bytes the caller hashed itself as it wrote them (a worker's layer spool,
   * hashed by the layer writer on its way to the file, which only that process writes): not hashed
   * again here, only counted (the driver refuses a body of another `size`). Staged and moved as
   * put() does, so an aborted PUT is never visible at the blob key. A blob already stored with this
   * size is not written again (the body is then not read).
   */
  async putHashed(body: Readable, digest: Digest, size: number): Promise<BlobInfo> {
    const existing = await this.stat(digest);
    if (existing !== null && existing.size === size) {
      body.destroy();
      return existing;
    }
    const staging = `${this.stagingPrefix}/${randomUUID()}`;
    try {
      await this.driver.put(staging, body, { size });
      return await this.publish(staging, { digest, size });
    } catch (err) {
      body.destroy();
      await this.driver.delete(staging).catch(() => undefined);
      throw err;
    }
  }

  private async putSmall(bytes: Buffer, expectedDigest?: Digest): Promise<BlobInfo> {
    const digest = sha256Digest(bytes);
    if (expectedDigest !== undefined && digest !== expectedDigest) throw new DigestMismatchError(expectedDigest, digest, bytes.length);
    const existing = await this.driver.stat(blobKey(digest));
    if (existing === null || existing.size !== bytes.length) await this.driver.put(blobKey(digest), bytes);
    return { digest, size: bytes.length };
  }

  /**
   * Verifies an object already in storage (a committed registry upload) and moves it to its blob
   * key. Costs one read of the object, not a re-send from the client. The object is consumed either way.
   */
  async commitStaged(key: string, expectedDigest: Digest): Promise<BlobInfo> {
    try {
      const hasher = new DigestingStream();
      await pipeline(await this.driver.get(key), hasher, drain());
      this.check(hasher, expectedDigest);
      return await this.publish(key, { digest: expectedDigest, size: hasher.size });
    } catch (err) {
      await this.driver.delete(key).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Moves an object already in storage to its blob key when the caller hashed its bytes as they
   * were stored (a registry upload whose chunks went through one hash): no second read. The size
   * is checked against storage; the digest check is the caller's (it compared its hash first).
   * The object is consumed either way.
   */
  async commitHashed(key: string, digest: Digest, size: number): Promise<BlobInfo> {
    try {
      const stored = await this.driver.stat(key);
      if (stored === null) throw new NotFoundError(key);
      if (stored.size !== size) throw new BlobSizeMismatchError(digest, size, stored.size);
      return await this.publish(key, { digest, size });
    } catch (err) {
      await this.driver.delete(key).catch(() => undefined);
      throw err;
    }
  }

  async stat(digest: Digest): Promise<BlobInfo | null> {
    const stats = await this.driver.stat(blobKey(digest));
    return stats === null ? null : { digest, size: stats.size };
  }

  async exists(digest: Digest): Promise<boolean> {
    return (await this.stat(digest)) !== null;
  }

  /**
   * Streams a blob (or a range of it); the stream errors if storage returns a different length.
   * `size` (the size Postgres recorded) spares the stat request. A whole blob is also hashed as it
   * streams unless `verify` is false: for a reader that checks the digest itself (a registry
   * client must), that would be the same work done twice.
   */
  async get(digest: Digest, range?: ByteRange, opts: { size?: number; verify?: boolean } = {}): Promise<Readable> {
    const size = opts.size ?? (await this.stat(digest))?.size;
    if (size === undefined) throw new BlobNotFoundError(digest);
    const key = blobKey(digest);
    const { start, end } = checkRange(key, range, size);
    let stream: Readable;
    try {
      stream = await this.driver.get(key, range);
    } catch (err) {
      if (err instanceof NotFoundError) throw new BlobNotFoundError(digest);
      throw err;
    }
    // A whole blob is also hashed as it streams: corrupt bytes in storage fail the read at its end.
    const checked = new LengthCheck(digest, end - start, opts.verify !== false && start === 0 && end === size);
    stream.once('error', (err) => checked.destroy(err));
    return stream.pipe(checked);
  }

  /**
   * A blob (or a range of it) ready to be written into a sink, for serving it: with a driver that
   * can (the filesystem), the file is opened now and sent through reused buffers; otherwise the
   * stream from `get` (unverified, see there) is piped. The stored size is checked against `size`
   * (Postgres's) before anything is sent. Either way a missing blob throws here, before any byte.
   */
  async open(digest: Digest, opts: { size: number; range?: ByteRange }): Promise<{ sendTo(sink: Writable): Promise<void> }> {
    const key = blobKey(digest);
    const { start, end } = checkRange(key, opts.range, opts.size);
    if (this.driver.open === undefined || end === start) {
      const stream = await this.get(digest, opts.range, { size: opts.size, verify: false });
      return {
        sendTo: (sink) =>
          new Promise<void>((resolve, reject) => {
            stream.once('error', reject);
            sink.once('close', () => reject(new Error('the receiver closed the connection')));
            stream.once('end', resolve);
            stream.pipe(sink, { end: false });
          }),
      };
    }
    let opened;
    try {
      opened = await this.driver.open(key, { offset: start, length: end - start });
    } catch (err) {
      if (err instanceof NotFoundError) throw new BlobNotFoundError(digest);
      throw err;
    }
    if (opened.size !== opts.size) {
      await opened.close();
      throw new BlobSizeMismatchError(digest, opts.size, opened.size);
    }
    return { sendTo: (sink) => opened.sendTo(sink, start, end) };
  }

  async delete(digest: Digest): Promise<void> {
    await this.driver.delete(blobKey(digest));
  }

  async *list(): AsyncIterable<Digest> {
    for await (const key of this.driver.list(BLOB_PREFIX)) {
      const hex = key.slice(BLOB_PREFIX.length);
      if (isDigest(`sha256:${hex}`)) yield digestFromHex(hex);
    }
  }

  private check(hasher: DigestingStream, expected: Digest): void {
    if (hasher.digest !== expected) throw new DigestMismatchError(expected, hasher.digest, hasher.size);
  }

  private async publish(staging: string, info: BlobInfo): Promise<BlobInfo> {
    const existing = await this.driver.stat(blobKey(info.digest));
    if (existing !== null && existing.size === info.size) {
      await this.driver.delete(staging);
      return info;
    }
    await this.driver.move(staging, blobKey(info.digest));
    return info;
  }
}

class LengthCheck extends Transform {
  private seen = 0;
  private readonly hash: Hash | null;
  constructor(private readonly digest: Digest, private readonly expected: number, whole: boolean) {
    super();
    this.hash = whole ? createHash('sha256') : null;
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    this.hash?.update(chunk);
    if (this.seen > this.expected) callback(new BlobSizeMismatchError(this.digest, this.expected, this.seen));
    else callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    if (this.seen !== this.expected) return callback(new BlobSizeMismatchError(this.digest, this.expected, this.seen));
    const actual = this.hash ? digestFromHex(this.hash.digest('hex')) : this.digest;
    callback(actual === this.digest ? null : new DigestMismatchError(this.digest, actual, this.seen));
  }
}

/** A sink that discards what it is given: the hash is all that is wanted. */
function drain(): Writable {
  return new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}

/** Blobs up to this size are kept in memory while hashed, then written once. */
const SMALL_BLOB_BYTES = 8 * 1024 * 1024;

/**
 * Reads a stream until it ends or passes `limit` bytes. Returns the whole content when it ended
 * (`rest` null), else a stream that replays what was read followed by the remainder.
 */
export async function readUpTo(stream: Readable, limit: number): Promise<{ bytes: Buffer; rest: Readable | null }> {
  const chunks: Buffer[] = [];
  let size = 0;
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  for (;;) {
    const { value, done } = await iterator.next();
    if (done) return { bytes: Buffer.concat(chunks), rest: null };
    chunks.push(value);
    size += value.length;
    if (size > limit) break;
  }
  async function* replay(): AsyncGenerator<Buffer> {
    // Shifted, not iterated: the head is let go as it is sent, not held for the whole upload.
    for (let chunk = chunks.shift(); chunk !== undefined; chunk = chunks.shift()) yield chunk;
    for (;;) {
      const { value, done } = await iterator.next();
      if (done) return;
      yield value;
    }
  }
  return { bytes: Buffer.alloc(0), rest: Readable.from(replay(), { objectMode: false }) };
}

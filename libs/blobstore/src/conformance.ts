import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { sha256Digest, type Digest } from '@strata/oci';
import { BlobNotFoundError, BlobStore, blobKey, DigestMismatchError } from './blob-store.js';
import { InvalidKeyError, InvalidRangeError, NotFoundError, SizeMismatchError, type StorageDriver } from './storage-driver.js';

/** A fresh, empty driver for one test, and how to dispose of it. */
export interface DriverUnderTest {
  driver: StorageDriver;
  cleanup?: () => Promise<void>;
}

export type DriverFactory = () => Promise<DriverUnderTest>;

const MiB = 1024 * 1024;

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks);
}

async function collect(keys: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const key of keys) out.push(key);
  return out.sort();
}

/** A full garbage collection (node's `gc`, exposed on first use). */
let fullGc: (() => void) | undefined;

/**
 * Bytes held in live ArrayBuffers (Buffers) right now: a full garbage collection first, so buffers
 * that are already unreachable do not count, however far behind the collector happens to be.
 */
function liveBufferBytes(): number {
  fullGc ??= (() => {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as () => void;
  })();
  fullGc();
  return process.memoryUsage().arrayBuffers;
}

/** Deterministic pseudo-random bytes, generated lazily in 1 MiB chunks (each chunk distinct). */
function* patternChunks(totalBytes: number, seed: string): Generator<Buffer> {
  const base = Buffer.alloc(MiB);
  for (let offset = 0, block = createHash('sha256').update(seed).digest(); offset < MiB; offset += 32) {
    block.copy(base, offset);
    block = createHash('sha256').update(block).digest();
  }
  for (let produced = 0, index = 0; produced < totalBytes; index++) {
    const size = Math.min(MiB, totalBytes - produced);
    const chunk = Buffer.from(base.subarray(0, size));
    if (size >= 8) chunk.writeBigUInt64BE(BigInt(index), 0);
    produced += size;
    yield chunk;
  }
}

function patternBuffer(totalBytes: number, seed: string): Buffer {
  return Buffer.concat([...patternChunks(totalBytes, seed)]);
}

/**
 * The contract every StorageDriver must meet, as one jest suite. A driver is done when this passes.
 * Call it at the top level of a spec file.
 */
export function runStorageDriverConformance(name: string, makeDriver: DriverFactory): void {
  describe(`StorageDriver conformance: ${name}`, () => {
    let current: DriverUnderTest;
    let driver: StorageDriver;
    beforeEach(async () => {
      current = await makeDriver();
      driver = current.driver;
    });
    afterEach(async () => {
      await current.cleanup?.();
    });

    it('round-trips an empty object from a Buffer and from a stream', async () => {
      await driver.put('empty/buffer', Buffer.alloc(0));
      await driver.put('empty/stream', Readable.from([]));
      for (const key of ['empty/buffer', 'empty/stream']) {
        expect((await readAll(await driver.get(key))).length).toBe(0);
        expect((await driver.stat(key))?.size).toBe(0);
      }
    });

    it('round-trips small objects and reports their size and modification time', async () => {
      const before = Date.now();
      expect(await driver.put('small/a', Buffer.from('hello'))).toEqual({ size: 5 });
      expect(await driver.put('small/b', Readable.from([Buffer.from('wor'), Buffer.from('ld')]))).toEqual({ size: 5 });
      expect((await readAll(await driver.get('small/a'))).toString()).toBe('hello');
      expect((await readAll(await driver.get('small/b'))).toString()).toBe('world');
      const stats = await driver.stat('small/a');
      expect(stats?.size).toBe(5);
      expect(stats!.modified.getTime()).toBeGreaterThan(before - 5 * 60_000);
    });

    it('round-trips a 12 MiB stream, past one 5 MiB multipart part', async () => {
      const size = 12 * MiB + 123;
      expect(await driver.put('large/12m', Readable.from(patternChunks(size, 'large')))).toEqual({ size });
      const back = await readAll(await driver.get('large/12m'));
      expect(back.length).toBe(size);
      expect(sha256Digest(back)).toBe(sha256Digest(patternBuffer(size, 'large')));
    });

    it('takes a stream of announced size in one write, and refuses a longer or shorter one leaving nothing', async () => {
      const size = 12 * MiB + 5;
      expect(await driver.put('sized/ok', Readable.from(patternChunks(size, 'sized')), { size })).toEqual({ size });
      expect(sha256Digest(await readAll(await driver.get('sized/ok')))).toBe(sha256Digest(patternBuffer(size, 'sized')));
      await expect(driver.put('sized/short', Readable.from(patternChunks(size - 1, 'sized')), { size })).rejects.toThrow(SizeMismatchError);
      await expect(driver.put('sized/long', Readable.from(patternChunks(size + 1, 'sized')), { size })).rejects.toThrow(SizeMismatchError);
      await expect(driver.put('sized/buffer', Buffer.from('four'), { size: 5 })).rejects.toThrow(SizeMismatchError);
      for (const key of ['sized/short', 'sized/long', 'sized/buffer']) expect(await driver.stat(key)).toBeNull();
    });

    it('replaces an existing object with the new content', async () => {
      await driver.put('replace/me', Buffer.from('old content'));
      await driver.put('replace/me', Readable.from([Buffer.from('new')]));
      expect((await readAll(await driver.get('replace/me'))).toString()).toBe('new');
    });

    it('serves byte ranges and refuses ranges past the end', async () => {
      await driver.put('range/obj', Buffer.from('0123456789'));
      expect((await readAll(await driver.get('range/obj', { offset: 2, length: 3 }))).toString()).toBe('234');
      expect((await readAll(await driver.get('range/obj', { offset: 7 }))).toString()).toBe('789');
      expect((await readAll(await driver.get('range/obj', { offset: 10 }))).length).toBe(0);
      expect((await readAll(await driver.get('range/obj', { offset: 4, length: 0 }))).length).toBe(0);
      await expect(driver.get('range/obj', { offset: 8, length: 5 })).rejects.toThrow(InvalidRangeError);
      await expect(driver.get('range/obj', { offset: 11 })).rejects.toThrow(InvalidRangeError);
    });

    it('reports missing objects: stat null, get and move NotFoundError, delete a no-op', async () => {
      expect(await driver.stat('missing/key')).toBeNull();
      await expect(driver.get('missing/key')).rejects.toThrow(NotFoundError);
      await expect(driver.get('missing/key', { offset: 0, length: 1 })).rejects.toThrow(NotFoundError);
      await expect(driver.move('missing/key', 'elsewhere')).rejects.toThrow(NotFoundError);
      await expect(driver.delete('missing/key')).resolves.toBeUndefined();
    });

    it('lists keys by string prefix, across folders', async () => {
      for (const key of ['a/b/1', 'a/b/2', 'a/c', 'ab/x', 'b']) await driver.put(key, Buffer.from(key));
      expect(await collect(driver.list('a/'))).toEqual(['a/b/1', 'a/b/2', 'a/c']);
      expect(await collect(driver.list('a/b/'))).toEqual(['a/b/1', 'a/b/2']);
      expect(await collect(driver.list('a'))).toEqual(['a/b/1', 'a/b/2', 'a/c', 'ab/x']);
      expect(await collect(driver.list('a/b/1'))).toEqual(['a/b/1']);
      expect(await collect(driver.list(''))).toEqual(['a/b/1', 'a/b/2', 'a/c', 'ab/x', 'b']);
      expect(await collect(driver.list('zzz/'))).toEqual([]);
    });

    it('deletes objects so they are gone from get, stat and list', async () => {
      await driver.put('del/one', Buffer.from('1'));
      await driver.put('del/two', Buffer.from('2'));
      await driver.delete('del/one');
      expect(await driver.stat('del/one')).toBeNull();
      await expect(driver.get('del/one')).rejects.toThrow(NotFoundError);
      expect(await collect(driver.list('del/'))).toEqual(['del/two']);
    });

    it('moves an object, replacing the destination and removing the source', async () => {
      await driver.put('move/src', Buffer.from('payload'));
      await driver.put('move/dst/existing', Buffer.from('old'));
      await driver.move('move/src', 'move/dst/existing');
      expect(await driver.stat('move/src')).toBeNull();
      expect((await readAll(await driver.get('move/dst/existing'))).toString()).toBe('payload');
    });

    it('concatenates parts into a new object and leaves the parts', async () => {
      const big = patternBuffer(5 * MiB + 7, 'part');
      await driver.put('uploads/u1/parts/1', big);
      await driver.put('uploads/u1/parts/2', Buffer.alloc(0));
      await driver.put('uploads/u1/parts/3', Buffer.from('tail'));
      expect(await driver.concat(['uploads/u1/parts/1', 'uploads/u1/parts/2', 'uploads/u1/parts/3'], 'uploads/u1/data')).toEqual({ size: big.length + 4 });
      const joined = await readAll(await driver.get('uploads/u1/data'));
      expect(joined.equals(Buffer.concat([big, Buffer.from('tail')]))).toBe(true);
      expect(await collect(driver.list('uploads/u1/parts/'))).toHaveLength(3);
      await driver.concat(['uploads/u1/parts/3'], 'uploads/u1/single');
      expect((await readAll(await driver.get('uploads/u1/single'))).toString()).toBe('tail');
      await expect(driver.concat(['uploads/u1/parts/9'], 'uploads/u1/x')).rejects.toThrow(NotFoundError);
    });

    it('refuses keys that are empty, absolute or contain "." or ".." components', async () => {
      for (const key of ['', '/abs', '../escape', 'a/../b', 'a//b', 'a/./b', 'trailing/']) {
        await expect(driver.put(key, Buffer.from('x'))).rejects.toThrow(InvalidKeyError);
      }
    });

    it('consumes a large stream lazily instead of buffering it whole', async () => {
      const total = 192 * MiB;
      let produced = 0;
      let peakAhead = 0;
      // Bytes generated but not yet accepted downstream stay alive in memory: measure the live
      // bytes (after a full collection, so the collector's timing does not count) every 32 MiB.
      // Each sample is a full collection of the test process: 24 of them (every 8 MiB) took this
      // test past two minutes on a loaded CI machine. Buffering the stream whole would show as
      // ~190 MiB ahead at the later samples, far above the bound.
      const baseline = liveBufferBytes();
      const source = Readable.from(
        (function* () {
          for (const chunk of patternChunks(total, 'lazy')) {
            if (produced % (32 * MiB) === 0) peakAhead = Math.max(peakAhead, liveBufferBytes() - baseline);
            produced += chunk.length;
            yield chunk;
          }
        })(),
      );
      const pending = driver.put('lazy/big', source);
      await new Promise((resolve) => setImmediate(resolve));
      expect(produced).toBeLessThan(total);
      expect(await pending).toEqual({ size: total });
      expect(peakAhead).toBeLessThan(total * 0.6);
      expect((await driver.stat('lazy/big'))?.size).toBe(total);
    }, 300_000);
  });
}

/** BlobStore semantics on top of a driver: the same suite for every driver. */
export function runBlobStoreConformance(name: string, makeDriver: DriverFactory): void {
  describe(`BlobStore conformance: ${name}`, () => {
    let current: DriverUnderTest;
    let driver: StorageDriver;
    let store: BlobStore;
    beforeEach(async () => {
      current = await makeDriver();
      driver = current.driver;
      store = new BlobStore(driver);
    });
    afterEach(async () => {
      await current.cleanup?.();
    });

    it('stores a blob under blobs/sha256/<hex> with the digest of its bytes', async () => {
      const bytes = Buffer.from('layer bytes');
      const info = await store.put(Readable.from([bytes]));
      expect(info).toEqual({ digest: sha256Digest(bytes), size: bytes.length });
      expect(await collect(driver.list(''))).toEqual([blobKey(info.digest)]);
      expect((await readAll(await store.get(info.digest))).equals(bytes)).toBe(true);
      expect((await readAll(await store.get(info.digest, { offset: 6, length: 5 }))).toString()).toBe('bytes');
      expect(await store.exists(info.digest)).toBe(true);
      expect(await store.stat(info.digest)).toEqual(info);
    });

    it('leaves nothing behind when the digest does not match', async () => {
      const claimed = sha256Digest('something else');
      await expect(store.put(Buffer.from('actual bytes'), claimed)).rejects.toThrow(DigestMismatchError);
      expect(await collect(driver.list(''))).toEqual([]);
      expect(await store.exists(claimed)).toBe(false);
    });

    it('treats writing an existing blob as a verified no-op, and still refuses wrong bytes', async () => {
      const bytes = Buffer.from('same content');
      const digest = sha256Digest(bytes);
      await store.put(bytes, digest);
      await expect(store.put(Readable.from([bytes]), digest)).resolves.toEqual({ digest, size: bytes.length });
      await expect(store.put(Buffer.from('not the same'), digest)).rejects.toThrow(DigestMismatchError);
      expect((await readAll(await store.get(digest))).equals(bytes)).toBe(true);
      expect(await collect(driver.list(''))).toEqual([blobKey(digest)]);
    });

    it('keeps one blob when the same content is put concurrently', async () => {
      const bytes = patternBuffer(MiB + 5, 'concurrent');
      const results = await Promise.all(Array.from({ length: 6 }, () => store.put(Readable.from([bytes]))));
      expect(new Set(results.map((r) => r.digest))).toEqual(new Set([sha256Digest(bytes)]));
      expect(await collect(driver.list(''))).toEqual([blobKey(sha256Digest(bytes))]);
      expect(sha256Digest(await readAll(await store.get(sha256Digest(bytes))))).toBe(sha256Digest(bytes));
    });

    it('never shows a blob before its bytes are fully hashed and verified', async () => {
      const first = Buffer.from('first half,');
      const second = Buffer.from('second half');
      const digest = sha256Digest(Buffer.concat([first, second]));
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      const pending = store.put(
        Readable.from(
          (async function* () {
            yield first;
            await gate;
            yield second;
          })(),
        ),
        digest,
      );
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await store.exists(digest)).toBe(false);
      expect(await collect(store.list())).toEqual([]);
      release();
      await pending;
      expect(await collect(store.list())).toEqual([digest]);
    });

    it('commits a staged upload assembled from parts after verifying it', async () => {
      const parts = [patternBuffer(5 * MiB, 'p1'), Buffer.from('p2')];
      const digest = sha256Digest(Buffer.concat(parts));
      const upload = `uploads/${randomUUID()}`;
      await driver.put(`${upload}/parts/1`, parts[0]!);
      await driver.put(`${upload}/parts/2`, parts[1]!);
      await driver.concat([`${upload}/parts/1`, `${upload}/parts/2`], `${upload}/data`);
      await expect(store.commitStaged(`${upload}/data`, digest)).resolves.toEqual({ digest, size: 5 * MiB + 2 });
      expect(await driver.stat(`${upload}/data`)).toBeNull();
      expect(await store.exists(digest)).toBe(true);

      await driver.concat([`${upload}/parts/2`], `${upload}/data`);
      const wrong: Digest = sha256Digest('wrong');
      await expect(store.commitStaged(`${upload}/data`, wrong)).rejects.toThrow(DigestMismatchError);
      expect(await store.exists(wrong)).toBe(false);
      expect(await driver.stat(`${upload}/data`)).toBeNull();
    });

    it('deletes blobs and reports missing ones as BlobNotFoundError', async () => {
      const a = await store.put(Buffer.from('a'));
      const b = await store.put(Buffer.from('b'));
      await store.delete(a.digest);
      expect(await collect(store.list())).toEqual([b.digest]);
      await expect(store.get(a.digest)).rejects.toThrow(BlobNotFoundError);
      expect(await store.stat(a.digest)).toBeNull();
    });
  });
}

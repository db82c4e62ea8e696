import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { sha256Digest } from '@strata/oci';
import { BlobSizeMismatchError, blobKey, BlobStore, DigestMismatchError } from './blob-store.js';
import { FilesystemDriver } from './filesystem-driver.js';
import type { ByteRange } from './storage-driver.js';

/** Storage that loses the last byte of every read, as a truncated download would. */
class TruncatingDriver extends FilesystemDriver {
  override async get(key: string, range?: ByteRange): Promise<Readable> {
    const chunks: Buffer[] = [];
    for await (const chunk of await super.get(key, range)) chunks.push(chunk as Buffer);
    return Readable.from([Buffer.concat(chunks).subarray(0, -1)]);
  }
}

describe('BlobStore reads', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'strata-blobstore-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('fails the stream when storage returns fewer bytes than the blob holds', async () => {
    const bytes = Buffer.from('complete content');
    await new BlobStore(new FilesystemDriver(root)).put(bytes);
    const reader = await new BlobStore(new TruncatingDriver(root)).get(sha256Digest(bytes));
    const drain = async () => {
      for await (const _chunk of reader) {
        // consume
      }
    };
    await expect(drain()).rejects.toThrow(BlobSizeMismatchError);
  });

  it('fails the stream when the bytes in storage no longer hash to the blob digest (same length, corrupt)', async () => {
    const bytes = Buffer.from('complete content');
    const driver = new FilesystemDriver(root);
    const store = new BlobStore(driver);
    const { digest } = await store.put(bytes);
    await driver.delete(blobKey(digest));
    await driver.put(blobKey(digest), Buffer.from('c0mplete content'));
    const drain = async () => {
      for await (const _chunk of await store.get(digest)) {
        // consume
      }
    };
    await expect(drain()).rejects.toThrow(DigestMismatchError);
  });
});

describe('BlobStore.putHashed (bytes the caller hashed as it wrote them)', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'strata-blobstore-'));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const keys = async (driver: FilesystemDriver) => {
    const out: string[] = [];
    for await (const k of driver.list('')) out.push(k);
    return out.sort();
  };

  it('stores the body at its blob key, leaving no staging object', async () => {
    const driver = new FilesystemDriver(root);
    const store = new BlobStore(driver);
    const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
    const digest = sha256Digest(bytes);
    expect(await store.putHashed(Readable.from([bytes]), digest, bytes.length)).toEqual({ digest, size: bytes.length });
    expect(await keys(driver)).toEqual([blobKey(digest)]);
    const read: Buffer[] = [];
    for await (const c of await store.get(digest)) read.push(c as Buffer);
    expect(Buffer.concat(read).equals(bytes)).toBe(true);
  });

  it('refuses a body of another size and leaves nothing, at the blob key or staged', async () => {
    const driver = new FilesystemDriver(root);
    const store = new BlobStore(driver);
    const bytes = Buffer.alloc(1000, 1);
    const digest = sha256Digest(bytes);
    await expect(store.putHashed(Readable.from([bytes.subarray(0, 999)]), digest, 1000)).rejects.toThrow(/bytes announced/);
    expect(await keys(driver)).toEqual([]);
  });

  it('does not write a blob already stored with that size again (nor read the body)', async () => {
    const driver = new FilesystemDriver(root);
    const store = new BlobStore(driver);
    const bytes = Buffer.from('stored once');
    const { digest } = await store.put(bytes);
    let read = false;
    const body = new Readable({ read() { read = true; this.push(null); } });
    expect(await store.putHashed(body, digest, bytes.length)).toEqual({ digest, size: bytes.length });
    expect(read).toBe(false);
    expect(await keys(driver)).toEqual([blobKey(digest)]);
  });
});

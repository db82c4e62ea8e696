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

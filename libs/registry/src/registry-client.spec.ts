import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Digest } from '@strata/oci';
import { RegistryClient, RegistryPullError, type PullBlobStore } from './registry-client.js';

const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

/** A blob store in memory that checks digests as the real one does. */
function memoryBlobs(): PullBlobStore & { stored: Map<string, Buffer> } {
  const stored = new Map<string, Buffer>();
  return {
    stored,
    async put(body: Buffer | Readable, expected?: Digest) {
      const chunks: Buffer[] = [];
      if (Buffer.isBuffer(body)) chunks.push(body);
      else for await (const c of body) chunks.push(c as Buffer);
      const bytes = Buffer.concat(chunks);
      const digest = digestOf(bytes);
      if (expected && expected !== digest) throw new Error(`digest mismatch: ${digest}`);
      stored.set(digest, bytes);
      return { digest, size: bytes.length };
    },
    async exists(d: Digest) {
      return stored.has(d);
    },
    async get() {
      throw new Error('not used');
    },
  };
}

/** A body that sends `bytes`, then, when `stall` is set, nothing more (the stream stays open). */
function body(bytes: Buffer, stall: boolean): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sent) {
        sent = true;
        controller.enqueue(new Uint8Array(bytes));
        if (!stall) controller.close();
        return;
      }
      return new Promise<void>(() => undefined);
    },
  });
}

describe('RegistryClient blob pulls that stall', () => {
  const blob = randomBytes(64 * 1024);
  const descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(blob), size: blob.length };

  it('resumes a stalled body with a Range request and stores the exact bytes', async () => {
    const requests: Array<string | null> = [];
    const fetchFake = (async (_url: string, init: RequestInit) => {
      const range = (init.headers as Record<string, string>).range ?? null;
      requests.push(range);
      if (range === null) return new Response(body(blob.subarray(0, 1000), true), { status: 200 });
      const from = Number(/bytes=(\d+)-/.exec(range)![1]);
      return new Response(body(blob.subarray(from), false), { status: 206, headers: { 'content-range': `bytes ${from}-${blob.length - 1}/${blob.length}` } });
    }) as unknown as typeof fetch;
    const client = new RegistryClient({ insecureRegistries: ['reg.test'], fetch: fetchFake, responseTimeoutMs: 50 });
    const blobs = memoryBlobs();
    expect(await client.pullBlob('reg.test', 'lib/app', descriptor, blobs)).toBe(blob.length);
    expect(requests).toEqual([null, 'bytes=1000-']);
    expect(blobs.stored.get(descriptor.digest)).toEqual(blob);
  });

  it('skips what it has when the registry answers a Range request with the whole blob', async () => {
    let n = 0;
    const fetchFake = (async () => new Response(body(n++ === 0 ? blob.subarray(0, 5000) : blob, n === 1), { status: 200 })) as unknown as typeof fetch;
    const client = new RegistryClient({ insecureRegistries: ['reg.test'], fetch: fetchFake, responseTimeoutMs: 50 });
    const blobs = memoryBlobs();
    await client.pullBlob('reg.test', 'lib/app', descriptor, blobs);
    expect(blobs.stored.get(descriptor.digest)).toEqual(blob);
  });

  it('gives up after 4 requests, saying where the body stopped', async () => {
    let n = 0;
    const fetchFake = (async () => {
      n++;
      return new Response(body(blob.subarray(0, 1000), true), { status: 200 });
    }) as unknown as typeof fetch;
    const client = new RegistryClient({ insecureRegistries: ['reg.test'], fetch: fetchFake, responseTimeoutMs: 50 });
    const error = await client.pullBlob('reg.test', 'lib/app', descriptor, memoryBlobs()).catch((e: Error) => e);
    expect(error).toBeInstanceOf(RegistryPullError);
    expect((error as Error).message).toBe(`reg.test stopped sending blob ${descriptor.digest} after 1000 of ${blob.length} bytes (nothing for 0.05 s); gave up after 4 attempts`);
    expect(n).toBe(4);
  });

  it('stops at once when the build is cancelled', async () => {
    const fetchFake = (async () => new Response(body(blob.subarray(0, 1000), true), { status: 200 })) as unknown as typeof fetch;
    const client = new RegistryClient({ insecureRegistries: ['reg.test'], fetch: fetchFake, responseTimeoutMs: 60_000 });
    const cancel = new AbortController();
    setTimeout(() => cancel.abort(), 50);
    const error = await client.pullBlob('reg.test', 'lib/app', descriptor, memoryBlobs(), cancel.signal).catch((e: Error) => e);
    expect((error as Error).message).toBe('the pull was cancelled');
  });

  it('does not retry a 404', async () => {
    let n = 0;
    const fetchFake = (async () => {
      n++;
      return new Response('{"errors":[]}', { status: 404 });
    }) as unknown as typeof fetch;
    const client = new RegistryClient({ insecureRegistries: ['reg.test'], fetch: fetchFake, responseTimeoutMs: 50 });
    await expect(client.pullBlob('reg.test', 'lib/app', descriptor, memoryBlobs())).rejects.toThrow(`reg.test/lib/app: blob ${descriptor.digest} answered HTTP 404`);
    expect(n).toBe(1);
  });
});

import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { storageFromConfig, type Storage } from '@strata/blobstore';
import type { Digest } from '@strata/oci';
import { GarbageCollector } from '@strata/registry';
import { build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

describe('garbage collection', () => {
  let stack: Stack;
  let storage: Storage;
  beforeAll(async () => {
    // Its own bucket: collecting with a grace period of zero must not touch other suites' blobs.
    stack = await startStack({ env: { S3_BUCKET: `strata-test-gc-${process.pid}` } });
    storage = await storageFromConfig(stack.config.s3);
  });
  afterAll(async () => {
    await stack.close();
  });

  const later = () => new Date(Date.now() + 60_000);

  it('deletes only blobs nothing references, after the grace period, and a dry run deletes nothing', async () => {
    const t = await stack.tenant('gc');
    const image = await build(stack, t.token, 'repository=kept&tag=1', tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: `kept ${Date.now()}` })));
    expect(image.status).toBe('succeeded');
    const layer = image.steps[0].layerDigest;
    const orphan = await storage.blobs.put(Readable.from([Buffer.from(`orphan ${Date.now()} ${Math.random()}`)]));
    const gc = new GarbageCollector(stack.prisma, storage.blobs);
    const opts = { graceMs: 30_000, cacheBudgetBytes: 1024 ** 3, cacheMaxIdleMs: 3600_000, tenantIds: [t.tenantId] };

    const tooYoung = await gc.run({ ...opts, dryRun: true });
    expect(tooYoung.deletedBlobs.map((b) => b.digest)).not.toContain(orphan.digest);

    const dry = await gc.run({ ...opts, dryRun: true, now: later() });
    expect(dry.deletedBlobs.map((b) => b.digest)).toContain(orphan.digest);
    expect(dry.deletedBlobs.map((b) => b.digest)).not.toContain(layer);
    expect(await storage.blobs.exists(orphan.digest)).toBe(true);

    const real = await gc.run({ ...opts, now: later() });
    expect(real.deletedBlobs.map((b) => b.digest)).toContain(orphan.digest);
    expect(await storage.blobs.exists(orphan.digest)).toBe(false);
    expect(await storage.blobs.exists(layer)).toBe(true);
    expect(await storage.blobs.exists(image.imageDigest)).toBe(true);
  });

  it("keeps the first chunk of an upload in progress, stored under its blob key, until the upload finishes with it", async () => {
    const t = await stack.tenant('gc-upload');
    const name = `${t.name}/inflight`;
    const data = Buffer.from(`uploading ${Date.now()} ${Math.random()}\n`.repeat(100));
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const auth = { authorization: `Basic ${Buffer.from(`x:${t.token}`).toString('base64')}` };
    const location = (await fetch(`${stack.url}/v2/${name}/blobs/uploads/`, { method: 'POST', headers: auth })).headers.get('location')!;
    expect((await fetch(`${stack.url}${location}`, { method: 'PATCH', headers: auth, body: data })).status).toBe(202);
    // The chunk is already where the blob will be, and no manifest or link names it yet.
    expect(await storage.blobs.exists(digest as Digest)).toBe(true);
    const gc = new GarbageCollector(stack.prisma, storage.blobs);
    const report = await gc.run({ graceMs: 0, cacheBudgetBytes: 1024 ** 3, cacheMaxIdleMs: 3600_000, now: later(), tenantIds: [t.tenantId] });
    expect(report.deletedBlobs.map((b) => b.digest)).not.toContain(digest);
    expect(await storage.blobs.exists(digest as Digest)).toBe(true);
    expect((await fetch(`${stack.url}${location}?digest=${digest}`, { method: 'PUT', headers: auth })).status).toBe(201);
    const pulled = await fetch(`${stack.url}/v2/${name}/blobs/${digest}`, { headers: auth });
    expect(Buffer.from(await pulled.arrayBuffer()).equals(data)).toBe(true);
  });

  it('evicts cache entries past the budget but never a blob a manifest still references', async () => {
    const t = await stack.tenant('gc-cache');
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: `cached ${Date.now()}` }));
    const first = await build(stack, t.token, 'repository=evict&tag=1', ctx);
    const gc = new GarbageCollector(stack.prisma, storage.blobs);
    const report = await gc.run({ graceMs: 0, cacheBudgetBytes: 0, cacheMaxIdleMs: 3600_000, now: later(), tenantIds: [t.tenantId] });
    expect(report.evictedCacheEntries).toBeGreaterThan(0);
    expect(await stack.prisma.cacheEntry.count({ where: { tenantId: t.tenantId } })).toBe(0);
    // The layer is still referenced by the tagged image, so it stays and the image still pulls.
    expect(await storage.blobs.exists(first.steps[0].layerDigest)).toBe(true);
    const second = await build(stack, t.token, 'repository=evict&tag=2', ctx);
    expect(second.steps[0].cached).toBe(false);
    expect(second.steps[0].layerDigest).toBe(first.steps[0].layerDigest);
  });

  it('treats a cache hit whose layer blob is gone as a miss and builds the layer again', async () => {
    const t = await stack.tenant('gc-gone');
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: `gone ${Date.now()} ${Math.random()}` }));
    const first = await build(stack, t.token, 'repository=gone&tag=1', ctx);
    const layer = first.steps[0].layerDigest;
    // As garbage collection removes a blob: its rows, then the object.
    await stack.prisma.manifestBlob.deleteMany({ where: { digest: layer } });
    await stack.prisma.repositoryBlob.deleteMany({ where: { digest: layer } });
    await stack.prisma.blob.deleteMany({ where: { digest: layer } });
    await storage.blobs.delete(layer);
    const second = await build(stack, t.token, 'repository=gone&tag=2', ctx);
    expect(second.status).toBe('succeeded');
    expect(second.steps[0].cached).toBe(false);
    expect(second.steps[0].layerDigest).toBe(layer);
    expect(await storage.blobs.exists(layer)).toBe(true);
  });

  it('runs on a schedule in the worker', async () => {
    const scheduled = await startStack({ env: { S3_BUCKET: `strata-test-gc-${process.pid}`, STRATA_GC_INTERVAL_MS: '300' } });
    try {
      const { Queue } = await import('bullmq');
      const { GC_QUEUE, redisConnection } = await import('@strata/queue');
      const queue = new Queue(GC_QUEUE, { connection: redisConnection(scheduled.config.redisUrl), prefix: scheduled.config.queuePrefix });
      let done: Array<{ returnvalue: { deletedBlobs: unknown[]; keptBlobs: number } }> = [];
      for (let i = 0; i < 100 && done.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        done = (await queue.getJobs(['completed'])) as typeof done;
      }
      await queue.close();
      expect(done.length).toBeGreaterThan(0);
      expect(done[0].returnvalue).toEqual(expect.objectContaining({ deletedBlobs: expect.any(Array), keptBlobs: expect.any(Number) }));
    } finally {
      await scheduled.close();
    }
  });
});

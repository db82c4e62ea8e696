// Collection of the tenants' context stores (docs/adr/0032): contents no build has named for the
// retention are deleted and stop counting against the tenant's stored bytes, mostly dead packs are
// rewritten, unreferenced packs are deleted after the grace period, and a content about to be taken is
// reported missing (so the client uploads it again) rather than vouched for.
import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { storageFromConfig, type Storage } from '@strata/blobstore';
import { ContextStoreCollector } from '../apps/worker/src/context-store-collector.js';
import { api, build, makeDir, type Stack, startStack } from './support/stack.js';

jest.setTimeout(180_000);

const MANIFEST = 'application/vnd.strata.context-manifest+json';
const DAY = 24 * 3600 * 1000;
const RETENTION = 14 * DAY;
const GRACE = 3600 * 1000;
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

/** A batch tar of contents, each named by its sha256, as `strata build` uploads them. */
function batch(contents: string[]): Buffer {
  return execFileSync('tar', ['-cf', '-', '-C', makeDir(Object.fromEntries(contents.map((c) => [sha256(c), c]))), '.']);
}

function manifestOf(files: Record<string, string>): string {
  return JSON.stringify({
    version: 1,
    entries: Object.entries(files).map(([path, c]) => ({ path, type: 'file', mode: 0o644, mtime: 0, size: Buffer.byteLength(c), digest: `sha256:${sha256(c)}` })),
  });
}

describe('context store collection', () => {
  let stack: Stack;
  let storage: Storage;
  let collector: ContextStoreCollector;
  const limits = { maxEntries: 100_000, maxBytes: 1024 ** 3 };
  beforeAll(async () => {
    stack = await startStack();
    storage = await storageFromConfig(stack.config.s3);
    collector = new ContextStoreCollector(stack.prisma, storage);
  });
  afterAll(async () => {
    await stack.close();
  });

  const rowOf = (tenantId: string, content: string) => stack.prisma.contextBlob.findUnique({ where: { tenantId_digest: { tenantId, digest: sha256(content) } } });
  const age = (tenantId: string, content: string, ms: number) =>
    stack.prisma.$executeRaw`UPDATE "ContextBlob" SET "lastUsedAt" = now() - ${ms / 1000} * interval '1 second', "createdAt" = now() - ${ms / 1000} * interval '1 second' WHERE "tenantId" = ${tenantId}::uuid AND digest = ${sha256(content)}`;
  const stored = async (token: string) => (await api(stack, token, 'GET', '/v1/usage')).json.quotas.maxStoredBytes.used as number;

  it('deletes a refused manifest kept for a build by digest that never came, after twice its hour', async () => {
    const t = await stack.tenant('ctxgc-pending');
    const manifest = manifestOf({ Dockerfile: `FROM scratch\nCOPY x /x\n# ${Date.now()}\n`, x: `pending ${Math.random()}` });
    const refused = await api(stack, t.token, 'POST', '/v1/builds?repository=pending', manifest, MANIFEST);
    expect(refused.status).toBe(400);
    expect(refused.json.pending).toBe(true);
    const keys = async () => {
      const out: string[] = [];
      for await (const k of storage.objects.list(`context-pending/${t.tenantId}/`)) out.push(k);
      return out;
    };
    expect(await keys()).toHaveLength(2);
    const soon = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], now: new Date(Date.now() + 3600 * 1000) });
    expect(soon.deletedPendingManifests).toBe(0);
    expect(await keys()).toHaveLength(2);
    const later = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], now: new Date(Date.now() + 3 * 3600 * 1000) });
    expect(later.deletedPendingManifests).toBe(1);
    expect(await keys()).toEqual([]);
  });

  it('deletes what no build named for the retention, compacts its pack, frees the bytes, and rebuilds from the rewritten pack', async () => {
    const t = await stack.tenant('ctxgc-a');
    const salt = `${Date.now()} ${Math.random()}`;
    const dockerfile = 'FROM scratch\nCOPY . /app/\n';
    const kept = `kept ${salt}\n`;
    const old = `old ${salt}\n`.repeat(20_000);
    const files = { Dockerfile: dockerfile, kept, empty: '' };
    expect((await api(stack, t.token, 'POST', '/v1/contexts/blobs', batch([dockerfile, kept, old, '']), 'application/x-tar')).status).toBe(201);
    const first = await build(stack, t.token, 'repository=ctxgc&tag=1', Buffer.from(manifestOf(files)), MANIFEST);
    expect(first.status).toBe('succeeded');
    const pack = (await rowOf(t.tenantId, kept))!.packKey;
    expect((await rowOf(t.tenantId, old))!.packKey).toBe(pack);
    await age(t.tenantId, old, 20 * DAY);
    const before = await stored(t.token);

    const dry = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], dryRun: true });
    expect(dry.deletedContents).toBe(1);
    expect(await rowOf(t.tenantId, old)).not.toBeNull();

    // Two hours on: past the grace period for the pack uploaded now.
    const report = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], now: new Date(Date.now() + 2 * GRACE) });
    expect(report).toMatchObject({ deletedContents: 1, deletedBytes: Buffer.byteLength(old), compactedPacks: 1 });
    expect(report.manifestsRead).toBeGreaterThanOrEqual(1);
    expect(await rowOf(t.tenantId, old)).toBeNull();
    expect(await stored(t.token)).toBe(before - Buffer.byteLength(old));
    for (const c of [dockerfile, kept, '']) expect((await rowOf(t.tenantId, c))!.packKey).not.toBe(pack);
    const asked = await api(stack, t.token, 'POST', '/v1/contexts/manifest', manifestOf({ ...files, old }), 'application/json');
    expect(asked.json.missing).toEqual([`sha256:${sha256(old)}`]);

    // The rebuild reads every content from the new pack (no cache: the COPY runs again) and gives the same image.
    const again = await build(stack, t.token, 'repository=ctxgc&tag=2&noCache=true', Buffer.from(manifestOf(files)), MANIFEST);
    expect(again.status).toBe('succeeded');
    expect(again.steps.map((s: { layerDigest: string }) => s.layerDigest)).toEqual(first.steps.map((s: { layerDigest: string }) => s.layerDigest));

    // The old pack was retired when the rows left it, and goes once the grace period has passed.
    expect(await storage.objects.stat(pack)).not.toBeNull();
    const later = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], now: new Date(Date.now() + 4 * GRACE) });
    expect(later.deletedPacks).toBe(1);
    expect(await storage.objects.stat(pack)).toBeNull();
    expect(await storage.objects.stat((await rowOf(t.tenantId, kept))!.packKey)).not.toBeNull();
  });

  it('reports a content near the end of its retention missing, and its upload makes it used again', async () => {
    const t = await stack.tenant('ctxgc-b');
    const salt = `${Date.now()} ${Math.random()}`;
    const dockerfile = `FROM scratch\nCOPY s /s\n# ${salt}\n`;
    const s = `stale ${salt}`;
    const manifest = manifestOf({ Dockerfile: dockerfile, s });
    expect((await api(stack, t.token, 'POST', '/v1/contexts/blobs', batch([dockerfile, s]), 'application/x-tar')).status).toBe(201);
    const built = await build(stack, t.token, 'repository=stale', Buffer.from(manifest), MANIFEST);
    expect(built.status).toBe('succeeded');
    const digest = (await api(stack, t.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json')).json.digest as string;
    // Eleven days on (past three quarters of 14): nothing is vouched for, not even the manifest by digest.
    await age(t.tenantId, s, 11 * DAY);
    await age(t.tenantId, dockerfile, 11 * DAY);
    await stack.prisma.build.update({ where: { id: built.id }, data: { createdAt: new Date(Date.now() - 11 * DAY) } });
    const asked = await api(stack, t.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json');
    expect(asked.json.missing).toEqual(expect.arrayContaining([`sha256:${sha256(s)}`, `sha256:${sha256(dockerfile)}`]));
    const byDigest = await fetch(`${stack.url}/v1/builds?repository=stale`, { method: 'POST', headers: { authorization: `Bearer ${t.token}`, 'content-type': MANIFEST, 'strata-context-digest': digest }, body: '' });
    expect(byDigest.status).toBe(409);
    expect(((await byDigest.json()) as { unknownManifest: boolean }).unknownManifest).toBe(true);

    const oldPack = (await rowOf(t.tenantId, s))!.packKey;
    const again = await api(stack, t.token, 'POST', '/v1/contexts/blobs', batch([dockerfile, s]), 'application/x-tar');
    expect(again.json).toMatchObject({ stored: 2, skipped: 0 });
    const revived = (await rowOf(t.tenantId, s))!;
    expect(revived.packKey).not.toBe(oldPack);
    expect(Date.now() - revived.lastUsedAt.getTime()).toBeLessThan(DAY);
    expect((await api(stack, t.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json')).json.missing).toEqual([]);
    const report = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [t.tenantId], now: new Date(Date.now() + 4 * DAY) });
    expect(report.deletedContents).toBe(0);
    expect(await rowOf(t.tenantId, s)).not.toBeNull();
    // The pack the contents left holds nothing now: retired on this run.
    expect(report.retiredPacks).toBe(1);
    expect(await stack.prisma.contextPackRetired.findUnique({ where: { key: oldPack } })).not.toBeNull();
  });

  it("takes one tenant's unused copy of a content and leaves another tenant's, which still builds", async () => {
    const a = await stack.tenant('ctxgc-c1');
    const b = await stack.tenant('ctxgc-c2');
    const salt = `${Date.now()} ${Math.random()}`;
    const dockerfile = 'FROM scratch\nCOPY shared /shared\n';
    const shared = `shared ${salt}`;
    for (const t of [a, b]) expect((await api(stack, t.token, 'POST', '/v1/contexts/blobs', batch([dockerfile, shared]), 'application/x-tar')).status).toBe(201);
    await age(a.tenantId, shared, 20 * DAY);
    const report = await collector.run({ retentionMs: RETENTION, graceMs: GRACE, limits, tenantIds: [a.tenantId, b.tenantId] });
    expect(report.deletedContents).toBe(1);
    expect(await rowOf(a.tenantId, shared)).toBeNull();
    expect(await rowOf(b.tenantId, shared)).not.toBeNull();
    const fromB = await build(stack, b.token, 'repository=shared', Buffer.from(manifestOf({ Dockerfile: dockerfile, shared })), MANIFEST);
    expect(fromB.status).toBe('succeeded');
    const fromA = await api(stack, a.token, 'POST', '/v1/builds?repository=shared', manifestOf({ Dockerfile: dockerfile, shared }), MANIFEST);
    expect(fromA.status).toBe(400);
    expect(fromA.json.missing).toEqual([`sha256:${sha256(shared)}`]);
  });
});

import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storageFromConfig } from '@strata/blobstore';
import { loadConfig } from '@strata/config';
import type { Digest } from '@strata/oci';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { importBusybox } from '../support/images.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';

jest.setTimeout(240_000);

/** Every blob of an image-layout tar hashes to its name, and every descriptor the index reaches is there. */
function checkOciArchive(archive: Buffer): { blobs: number } {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-oci-check-'));
  writeFileSync(path.join(dir, 'image.tar'), archive);
  execFileSync('tar', ['-xf', 'image.tar'], { cwd: dir });
  const blobsDir = path.join(dir, 'blobs/sha256');
  const names = readdirSync(blobsDir);
  for (const hex of names) expect(createHash('sha256').update(readFileSync(path.join(blobsDir, hex))).digest('hex')).toBe(hex);
  const read = (d: string) => JSON.parse(readFileSync(path.join(blobsDir, d.replace('sha256:', '')), 'utf8'));
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
  for (const m of index.manifests) {
    const manifest = read(m.digest);
    for (const d of [manifest.config, ...manifest.layers]) expect(names).toContain(d.digest.replace('sha256:', ''));
  }
  return { blobs: names.length };
}

describe('S3 faults: a build succeeds with a correct image or fails saying why; nothing points at a missing blob', () => {
  let proxy: FaultProxy;
  let stack: Stack;
  beforeAll(async () => {
    const direct = loadConfig();
    proxy = await startFaultProxy(direct.s3.endpoint!);
    stack = await startStack({ env: { S3_ENDPOINT: proxy.url } });
  });
  afterAll(async () => {
    await stack.close();
    await proxy.close();
  });

  const buildWithFaults = async (token: string, repository: string) => {
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nCOPY big.bin /big.bin\nRUN sha256sum /big.bin > /sum\n', 'big.bin': randomBytes(3 * 1024 * 1024).toString('base64') }));
    const res = await api(stack, token, 'POST', `/v1/builds?repository=${repository}&tag=1`, ctx, 'application/x-tar');
    expect(res.status).toBe(202);
    return waitForBuild(stack, token, res.json.id, 120_000);
  };

  it('retries 503s, resets and bodies cut in half: the build succeeds and every blob of its image matches its digest', async () => {
    const { token } = await stack.tenant('flaky-s3');
    await importBusybox(stack, token);
    proxy.setRules([
      { kind: '503', every: 4 },
      { kind: 'reset', method: 'PUT', every: 5 },
      { kind: 'truncate', method: 'GET', every: 3 },
    ]);
    try {
      const done = await buildWithFaults(token, 'flaky');
      expect(done.error).toBeNull();
      expect(done.status).toBe('succeeded');
      const archive = await fetch(`${stack.url}/v1/repositories/flaky/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
      expect(archive.status).toBe(200);
      expect(checkOciArchive(Buffer.from(await archive.arrayBuffer())).blobs).toBeGreaterThanOrEqual(4);
    } finally {
      proxy.setRules([]);
    }
    expect(proxy.injected['503']).toBeGreaterThan(0);
    expect(proxy.injected.reset).toBeGreaterThan(0);
    expect(proxy.injected.truncate).toBeGreaterThan(0);
  });

  it('stores a large layer again when its single PutObject is reset (the SDK cannot replay a stream)', async () => {
    const { token } = await stack.tenant('flaky-big-layer');
    // Every second PUT of a staged blob is reset: the layer (16 MiB of base64, about 12 MiB gzipped) goes
    // in one streamed PutObject, above the 8 MiB a blob is buffered to.
    proxy.setRules([{ kind: 'reset', method: 'PUT', path: /staging\/blobs\//, every: 2 }]);
    try {
      for (const n of [1, 2]) {
        const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\n', 'big.bin': randomBytes(12 * 1024 * 1024).toString('base64') }));
        const res = await api(stack, token, 'POST', `/v1/builds?repository=biglayer&tag=${n}`, ctx, 'application/x-tar');
        expect(res.status).toBe(202);
        const done = await waitForBuild(stack, token, res.json.id, 120_000);
        expect(done.error).toBeNull();
        expect(done.status).toBe('succeeded');
        const archive = await fetch(`${stack.url}/v1/repositories/biglayer/tags/${n}/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
        expect(archive.status).toBe(200);
        expect(checkOciArchive(Buffer.from(await archive.arrayBuffer())).blobs).toBeGreaterThanOrEqual(3);
      }
    } finally {
      proxy.setRules([]);
    }
    expect(proxy.injected.reset).toBeGreaterThan(0);
  });

  it('fails a build whose layers S3 keeps refusing, saying so; no tag moves and no cache entry names a blob that is not stored', async () => {
    const { token, tenantId } = await stack.tenant('down-s3');
    await importBusybox(stack, token);
    proxy.setRules([{ kind: '503', method: 'PUT', path: /blobs\/sha256|staging/ }]);
    let done;
    try {
      done = await buildWithFaults(token, 'down');
    } finally {
      proxy.setRules([]);
    }
    expect(done.status).toBe('failed');
    expect(done.error.message).toMatch(/^storage \(S3\) failed: /);
    expect(done.error.message).not.toMatch(/internal error/);
    expect((await api(stack, token, 'GET', '/v1/repositories/down/tags')).json.tags).toEqual([]);
    const storage = await storageFromConfig(loadConfig().s3);
    const entries = await stack.prisma.cacheEntry.findMany({ where: { tenantId } });
    for (const e of entries) {
      for (const digest of JSON.stringify(e.result).match(/sha256:[0-9a-f]{64}/g) ?? []) {
        expect({ digest, stored: (await storage.blobs.stat(digest as Digest)) !== null }).toEqual({ digest, stored: true });
      }
    }
  });
});

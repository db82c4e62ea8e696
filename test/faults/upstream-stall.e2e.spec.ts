import { jest } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { gunzipSync, gzipSync } from 'node:zlib';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';

jest.setTimeout(180_000);

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * An upstream registry with one image whose layer body can stall halfway: headers and half the
 * bytes, then silence on an open connection (a registry behind a proxy that lost its back end).
 * `stalls` says how many layer requests stall before it answers properly; a later request may ask
 * for the rest with a Range header.
 */
async function startStallingRegistry(stalls: number) {
  const layer = gzipSync(tarOf(makeDir({ 'data.txt': randomBytes(256 * 1024).toString('base64') })));
  const diffId = sha256(gunzipSync(layer));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [diffId] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
    }),
  );
  const state = { layerRequests: 0, ranges: [] as string[], stalls };
  const sockets = new Set<Socket>();
  const stalled: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '';
    if (url === '/v2/' || url === '/v2') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    if (url.endsWith('/manifests/1')) return void res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'docker-content-digest': sha256(manifest), 'content-length': manifest.length }).end(manifest);
    if (url.endsWith(`/blobs/${sha256(config)}`)) return void res.writeHead(200, { 'content-length': config.length }).end(config);
    if (url.endsWith(`/blobs/${sha256(layer)}`)) {
      state.layerRequests++;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
      if (req.headers.range) state.ranges.push(req.headers.range);
      if (state.stalls > 0) {
        state.stalls--;
        res.writeHead(200, { 'content-length': layer.length });
        res.write(layer.subarray(0, Math.floor(layer.length / 2)));
        stalled.push(res);
        return;
      }
      if (range) {
        const from = Number(range[1]);
        return void res.writeHead(206, { 'content-length': layer.length - from, 'content-range': `bytes ${from}-${layer.length - 1}/${layer.length}` }).end(layer.subarray(from));
      }
      return void res.writeHead(200, { 'content-length': layer.length }).end(layer);
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NOT_FOUND","message":"not here"}]}');
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    state,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('upstream registries that stall in the middle of a blob', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_PULL_TIMEOUT_MS: '1500' } });
  });
  afterAll(async () => {
    await stack.close();
  });

  const buildFrom = async (host: string, repository: string) => {
    const { token } = await stack.tenant('stall');
    const ctx = tarOf(makeDir({ Dockerfile: `# base\nFROM ${host}/library/${repository}:1\nCOPY a /a\n`, a: 'a' }));
    const res = await api(stack, token, 'POST', `/v1/builds?repository=${repository}`, ctx, 'application/x-tar');
    expect(res.status).toBe(202);
    return waitForBuild(stack, token, res.json.id, 90_000);
  };

  it('fails the build in bounded time, naming the base image, when the registry never sends the rest', async () => {
    const registry = await startStallingRegistry(Number.MAX_SAFE_INTEGER);
    try {
      const done = await buildFrom(registry.host, 'stuck');
      expect(done.status).toBe('failed');
      expect(done.error.line).toBe(2);
      expect(done.error.message).toContain(`pulling ${registry.host}/library/stuck:1 failed`);
      expect(done.error.message).toMatch(/stopped sending .* after \d+ of \d+ bytes \(nothing for 1\.5 s\)/);
      // It retried, asking only for the bytes it did not have.
      expect(registry.state.layerRequests).toBeGreaterThan(1);
      expect(registry.state.ranges[0]).toMatch(/^bytes=\d+-$/);
    } finally {
      await registry.close();
    }
  });

  it('resumes the blob and finishes the build when the registry recovers', async () => {
    const registry = await startStallingRegistry(1);
    try {
      const done = await buildFrom(registry.host, 'recovers');
      expect(done.error).toBeNull();
      expect(done.status).toBe('succeeded');
      expect(registry.state.layerRequests).toBe(2);
      expect(registry.state.ranges).toHaveLength(1);
    } finally {
      await registry.close();
    }
  });
});

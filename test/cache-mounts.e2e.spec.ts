import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startWorker } from '../apps/worker/src/main.js';
import { importBusybox } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

describe('RUN cache mounts shared through S3', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    ({ token } = await stack.tenant('cachemount'));
    await importBusybox(stack, token);
  }, 60_000);
  afterAll(async () => {
    await stack.close();
  });

  /** A worker with a data directory of its own: it shares nothing local with the others. */
  async function onNewWorker<T>(fn: () => Promise<T>): Promise<T> {
    const worker = await startWorker({ ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-cm-worker-')) });
    try {
      return await fn();
    } finally {
      await worker.close();
    }
  }

  it('gives a second worker what the first wrote into the cache, and keeps tenants apart', async () => {
    const marker = `m-${Date.now()}`;
    const write = await onNewWorker(() =>
      build(stack, token, 'repository=cm-write', tarOf(makeDir({ Dockerfile: `FROM busybox:1\nRUN --mount=type=cache,target=/cache,id=deps echo ${marker} > /cache/marker\n` }))),
    );
    expect(write.status).toBe('succeeded');
    const readDf = 'FROM busybox:1\nRUN --mount=type=cache,target=/cache,id=deps cat /cache/marker || echo no-cache-here\n';
    const read = await onNewWorker(async () => {
      const b = await build(stack, token, 'repository=cm-read&tag=1', tarOf(makeDir({ Dockerfile: readDf, nonce: marker })));
      const logs = await api(stack, token, 'GET', `/v1/builds/${b.id}/logs`);
      return { b, logs };
    });
    expect(read.b.status).toBe('succeeded');
    // The step printed what the first worker left in the cache.
    expect(read.logs.text).toContain(`${marker}\n`);

    const other = await stack.tenant('cachemount-other');
    await importBusybox(stack, other.token);
    const theirs = await onNewWorker(async () => {
      const b = await build(stack, other.token, 'repository=cm-read&tag=1', tarOf(makeDir({ Dockerfile: readDf, nonce: `other-${marker}` })));
      return api(stack, other.token, 'GET', `/v1/builds/${b.id}/logs`);
    });
    expect(theirs.text).toContain('no-cache-here');
    expect(theirs.text).not.toContain(marker);
  }, 120_000);
});

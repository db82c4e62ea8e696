import { jest } from '@jest/globals';
import { Queue } from 'bullmq';
import pg from 'pg';
import { BUILDS_QUEUE, redisConnection } from '@strata/queue';
import { startPrivateRedis } from '../support/redis-server.js';
import { api, makeDir, startStack, tarOf, waitForBuild } from '../support/stack.js';
import { startWorker } from '../../apps/worker/src/main.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FAST_RECONCILE, until } from './reconcile-helpers.js';

jest.setTimeout(180_000);

describe('the reconciler runs in the api too, one pass at a time across processes', () => {
  it('gives a queued build its job back after Redis lost it with no worker running, but not while another process holds the reconcile lock', async () => {
    const redis = await startPrivateRedis({ appendonly: false });
    const stack = await startStack({ worker: false, env: { ...FAST_RECONCILE, REDIS_URL: redis.url } });
    const queue = new Queue(BUILDS_QUEUE, { connection: redisConnection(redis.url), prefix: stack.config.queuePrefix });
    // Another process's pass, as far as the api can tell: the same Postgres advisory lock, held.
    const other = new pg.Client({ connectionString: stack.config.databaseUrl });
    await other.connect();
    try {
      await other.query('SELECT pg_advisory_lock(hashtext($1))', [`strata-reconcile:${stack.config.queuePrefix}`]);
      const { token } = await stack.tenant('api-reconciles');
      const res = await api(stack, token, 'POST', '/v1/builds?repository=lost&tag=1', tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a\n' })), 'application/x-tar');
      expect(res.status).toBe(202);
      const id = res.json.id as string;
      // Fair scheduling queues a build with a start tag as its BullMQ priority: "prioritized" is waiting.
      expect(['waiting', 'prioritized']).toContain(await queue.getJobState(id));
      await redis.restart();
      expect(await queue.getJobState(id)).toBe('unknown');
      // Past the 5 s a new build is left to get its job, several passes go by: the lock holder is the only one who may act.
      await new Promise((r) => setTimeout(r, 7_000));
      expect(await queue.getJobState(id)).toBe('unknown');
      await other.query('SELECT pg_advisory_unlock(hashtext($1))', [`strata-reconcile:${stack.config.queuePrefix}`]);
      // Now the api's own reconciler (there is no worker) queues it again.
      await until('the api re-queues the build', async () => ['waiting', 'prioritized'].includes(await queue.getJobState(id)), 20_000);
      const worker = await startWorker({ ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-worker-')) });
      try {
        expect((await waitForBuild(stack, token, id, 60_000)).status).toBe('succeeded');
      } finally {
        await worker.close();
      }
    } finally {
      await other.end();
      await queue.close();
      await stack.close();
      await redis.stop();
    }
  });
});

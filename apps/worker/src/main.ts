import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { hostname } from 'node:os';
import { storageFromConfig } from '@strata/blobstore';
import { buildCancelChannel, loadConfig } from '@strata/config';
import { createPrismaClient } from '@strata/db';
import { BUILDS_QUEUE, type BuildJob, redisConnection, WORKER_LOCK } from '@strata/queue';
import { BuildRunner } from './build-runner.js';
import { BuildLogs } from './logs/build-log.js';
import { WorkerRuntime } from './runtime-adapter.js';

/** Starts a worker consuming the builds queue; returns a function that stops it. */
export async function startWorker(config = loadConfig()): Promise<{ close(): Promise<void> }> {
  const prisma = createPrismaClient(config.databaseUrl);
  const storage = await storageFromConfig(config.s3);
  const logRedis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  const logs = new BuildLogs({ redis: logRedis, storage, config });
  // RUN steps: runc on overlayfs snapshots under <dataDir>/runtime; the same store serves COPY --from.
  const runtime = new WorkerRuntime({ dataDir: config.dataDir, storage, run: config.run });
  await runtime.init();
  const runner = new BuildRunner({ prisma, storage, config, logs, executor: runtime, rootfs: runtime, workerId: `${hostname()}:${process.pid}` });
  // BullMQ aborts the signal on worker.cancelJob()/cancelAllJobs(): the engine passes it to the RUN container, which runc kills.
  const worker = new Worker<BuildJob>(BUILDS_QUEUE, async (job, _token, signal) => runner.run(job.data.buildId, signal), {
    connection: redisConnection(config.redisUrl),
    prefix: config.queuePrefix,
    concurrency: config.workerConcurrency,
    ...WORKER_LOCK,
  });
  worker.on('failed', (job, err) => process.stderr.write(`build ${job?.data.buildId} failed inside the worker: ${err.message}\n`));
  await worker.waitUntilReady();
  // POST /v1/builds/{id}/cancel publishes the build id to every worker; the one running it (job id = build id) aborts it.
  const cancels = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  cancels.on('message', (_channel, buildId: string) => worker.cancelJob(buildId, 'cancelled by the user'));
  await cancels.subscribe(buildCancelChannel(config.queuePrefix));
  return {
    async close() {
      await cancels.quit();
      await worker.close();
      await logRedis.quit();
      await prisma.$disconnect();
    },
  };
}

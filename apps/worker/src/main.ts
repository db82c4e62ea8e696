import { DelayedError, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { hostname } from 'node:os';
import { type Storage, storageFromConfig } from '@strata/blobstore';
import { buildCancelChannel, loadConfig, type StrataConfig } from '@strata/config';
import { createPrismaClient, type PrismaClient } from '@strata/db';
import { BUILDS_QUEUE, type BuildJob, GC_QUEUE, redisConnection, WORKER_LOCK } from '@strata/queue';
import { GarbageCollector } from '@strata/registry';
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
  const worker = new Worker<BuildJob>(BUILDS_QUEUE, async (job, token, signal) => {
    // A tenant at its maxConcurrentBuilds quota waits: its job goes back for a second while others' builds run.
    if (token && (await atConcurrencyQuota(prisma, job.data.buildId))) {
      await job.moveToDelayed(Date.now() + 1000, token);
      throw new DelayedError();
    }
    return runner.run(job.data.buildId, signal);
  }, {
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
  const gc = await startGarbageCollection(config, prisma, storage, runtime);
  return {
    async close() {
      await gc.close();
      await cancels.quit();
      await worker.close();
      // Cache mounts saved after the last steps reach S3 before the worker goes.
      await runtime.flush();
      await logRedis.quit();
      await prisma.$disconnect();
    },
  };
}

/**
 * Every worker registers the same schedule (an idempotent upsert) and consumes the gc queue, so one
 * collection runs per interval across the fleet; each worker also trims its own unpacked layers.
 */
async function startGarbageCollection(
  config: StrataConfig,
  prisma: PrismaClient,
  storage: Storage,
  runtime: WorkerRuntime,
): Promise<{ close(): Promise<void> }> {
  if (config.gc.intervalMs === 0) return { close: async () => undefined };
  const connection = redisConnection(config.redisUrl);
  const queue = new Queue(GC_QUEUE, { connection, prefix: config.queuePrefix });
  await queue.upsertJobScheduler('gc', { every: config.gc.intervalMs }, { name: 'gc', opts: { removeOnComplete: 20, removeOnFail: 20 } });
  const collector = new GarbageCollector(prisma, storage.blobs);
  const worker = new Worker(
    GC_QUEUE,
    async () => {
      const report = await collector.run({ graceMs: config.gc.graceMs, cacheBudgetBytes: config.gc.cacheBudgetBytes, cacheMaxIdleMs: config.gc.cacheMaxIdleMs });
      const local = await runtime.trimLayers(config.gc.workerLayersMaxBytes);
      process.stdout.write(
        `gc: evicted ${report.evictedCacheEntries} cache entries, deleted ${report.deletedBlobs.length} blobs, kept ${report.keptBlobs}; ` +
          `freed ${local.freedBytes} bytes of unpacked layers\n`,
      );
      return { ...report, local };
    },
    { connection, prefix: config.queuePrefix, concurrency: 1 },
  );
  return {
    async close() {
      await worker.close();
      await queue.close();
    },
  };
}

/** Whether the build's tenant already runs as many builds as its maxConcurrentBuilds quota allows. */
async function atConcurrencyQuota(prisma: PrismaClient, buildId: string): Promise<boolean> {
  const build = await prisma.build.findUnique({ where: { id: buildId }, select: { status: true, tenant: { select: { id: true, maxConcurrentBuilds: true } } } });
  if (!build || build.status !== 'queued' || build.tenant.maxConcurrentBuilds === null) return false;
  const running = await prisma.build.count({ where: { tenantId: build.tenant.id, status: 'running' } });
  return running >= build.tenant.maxConcurrentBuilds;
}

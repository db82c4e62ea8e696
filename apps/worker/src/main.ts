import { DelayedError, Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { hostname } from 'node:os';
import { type Storage, storageFromConfig } from '@strata/blobstore';
import { buildCancelChannel, loadConfig, type StrataConfig } from '@strata/config';
import { createPrismaClient, type PrismaClient } from '@strata/db';
import { addToFleetCounter, BUILDS_QUEUE, type BuildJob, BuildLogs, BuildScheduler, type FleetCounter, GC_QUEUE, logEvent, Reconciler, redisConnection, startHeartbeat, startReconciler, WORKER_LOCK } from '@strata/queue';
import { GarbageCollector } from '@strata/registry';
import { BuildRunner } from './build-runner.js';
import { claimConcurrencySlot } from './concurrency-slot.js';
import { ContextStoreCollector } from './context-store-collector.js';
import { clearLeftovers } from './leftovers.js';
import { WorkerRuntime } from './runtime-adapter.js';

/** Starts a worker consuming the builds queue; returns a function that stops it. */
export async function startWorker(config = loadConfig()): Promise<{ close(): Promise<void> }> {
  const prisma = createPrismaClient(config.databaseUrl);
  const logRedis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  const count = (name: FleetCounter, labels: Record<string, string>, by = 1) => addToFleetCounter(logRedis, config.queuePrefix, name, labels, by);
  const storage = await storageFromConfig({ ...config.s3, onRequestError: (operation, reason) => count('strata_s3_request_errors_total', { process: 'worker', operation, reason }) }, config.storageDir);
  const logs = new BuildLogs({ redis: logRedis, storage, config });
  // What a worker killed on this data directory left running goes first: its snapshots can only be unmounted then.
  const leftovers = await clearLeftovers(config.dataDir);
  if (leftovers.containers.length + leftovers.workDirs > 0) {
    logEvent('warn', 'cleared what a killed worker left', { dataDir: config.dataDir, ...leftovers });
  }
  // RUN steps: runc or crun on overlayfs snapshots under <dataDir>/runtime; the same store serves COPY --from.
  const runtime = new WorkerRuntime({ dataDir: config.dataDir, storage, run: config.run, allowPrivateSources: config.allowPrivateSources });
  await runtime.init();
  // STRATA_RUN_RUNTIME=auto: crun where it can run here, else runc and why (docs/adr/0038).
  logEvent(runtime.runtimeFallback === undefined ? 'info' : 'warn', `RUN steps run with ${runtime.runRuntime}`, {
    setting: config.run.runtime,
    ...(runtime.runtimeFallback !== undefined ? { crunUnusable: runtime.runtimeFallback } : {}),
  });
  if (runtime.clearedNetworkLeftovers > 0) {
    logEvent('warn', 'cleared the RUN networks a killed worker left', { dataDir: config.dataDir, steps: runtime.clearedNetworkLeftovers });
  }
  if (runtime.runDnsUpstreams?.length === 0) {
    logEvent('warn', 'RUN steps will not resolve names: the worker has no nameserver in /etc/resolv.conf and STRATA_RUN_DNS is not set', {});
  }
  const workerId = `${hostname()}:${process.pid}`;
  const runner = new BuildRunner({ prisma, storage, config, logs, executor: runtime, rootfs: runtime, workerId });
  // Beating before taking jobs: a build this worker claims is never mistaken for an orphan.
  const heartbeat = await startHeartbeat(prisma, workerId, config);
  // Builds go back on the queue (handed back, or re-added by the reconciler) through the scheduler, with a fair start tag.
  const buildsQueue = new Queue<BuildJob>(BUILDS_QUEUE, { connection: redisConnection(config.redisUrl), prefix: config.queuePrefix });
  const scheduler = BuildScheduler.open(buildsQueue, logRedis, config.scheduling);
  // BullMQ aborts the signal on worker.cancelJob()/cancelAllJobs(): the engine passes it to the RUN container, which runc kills.
  const worker = new Worker<BuildJob>(BUILDS_QUEUE, async (job, token, signal) => {
    const { buildId, tenantId } = job.data;
    // A tenant at its maxConcurrentBuilds quota waits: its job goes back for a second while others' builds run.
    // The slot is taken atomically (concurrency-slot.ts): two workers cannot both pass the last one.
    if (token && !(await claimConcurrencySlot(prisma, buildId, workerId))) {
      await job.moveToDelayed(Date.now() + 1000, token);
      throw new DelayedError();
    }
    // Only a build that really starts moves the schedule's clock (a held one keeps its turn).
    await scheduler.started(job);
    const started = Date.now();
    logEvent('info', 'build taken', { buildId, tenantId, workerId });
    try {
      await runner.run(buildId, signal);
    } finally {
      const ended = await prisma.build.findUnique({ where: { id: buildId }, select: { status: true, errorMessage: true } }).catch(() => null);
      logEvent(ended?.status === 'failed' ? 'warn' : 'info', 'build left the worker', { buildId, tenantId, workerId, status: ended?.status, error: ended?.errorMessage ?? undefined, durationMs: Date.now() - started });
    }
  }, {
    connection: redisConnection(config.redisUrl),
    prefix: config.queuePrefix,
    concurrency: config.workerConcurrency,
    ...WORKER_LOCK,
  });
  worker.on('failed', (job, err) => logEvent('error', 'the build job failed inside the worker', { buildId: job?.data.buildId, tenantId: job?.data.tenantId, workerId, error: err.message, stack: err.stack }));
  await worker.waitUntilReady();
  // POST /v1/builds/{id}/cancel publishes the build id to every worker; the one running it (job id = build id) aborts it.
  const cancels = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  cancels.on('message', (_channel, buildId: string) => worker.cancelJob(buildId, 'cancelled by the user'));
  await cancels.subscribe(buildCancelChannel(config.queuePrefix));
  const gc = await startGarbageCollection(config, prisma, storage, runtime);
  const reconciler = new Reconciler({ prisma, scheduler, logs, objects: storage.objects, config });
  const reconciling = startReconciler(reconciler, config.reconcile.intervalMs, (r) => {
    logEvent('info', 'reconciled the builds queue', { workerId, ...r });
    for (const [action, ids] of Object.entries(r)) if (ids.length > 0) count('strata_reconciler_actions_total', { action }, ids.length);
  });
  return {
    async close() {
      await reconciling.close();
      await gc.close();
      await cancels.quit();
      // Running builds get drainMs to finish; then they go back to the queue for another worker.
      const closing = worker.close();
      const grace = setTimeout(() => runner.handBackAll(), config.reconcile.drainMs);
      await closing;
      clearTimeout(grace);
      for (const build of runner.handedBack) await reconciler.ensureJob(build, 'front').catch(() => undefined);
      heartbeat.stop();
      await buildsQueue.close();
      // Cache mounts saved after the last steps reach S3 before the worker goes.
      await runtime.flush();
      await runtime.close();
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
  const contexts = new ContextStoreCollector(prisma, storage);
  const worker = new Worker(
    GC_QUEUE,
    async () => {
      const report = await collector.run({ graceMs: config.gc.graceMs, cacheBudgetBytes: config.gc.cacheBudgetBytes, cacheMaxIdleMs: config.gc.cacheMaxIdleMs });
      const contextStore = await contexts.run({
        retentionMs: config.gc.contextRetentionMs,
        graceMs: config.gc.graceMs,
        limits: { maxEntries: config.maxContextEntries, maxBytes: config.maxContextBytes },
      });
      const local = await runtime.trimLayers(config.gc.workerLayersMaxBytes);
      logEvent('info', 'garbage collected', {
        evictedCacheEntries: report.evictedCacheEntries,
        deletedBlobs: report.deletedBlobs.length,
        keptBlobs: report.keptBlobs,
        freedLocalLayerBytes: local.freedBytes,
        deletedContextContents: contextStore.deletedContents,
        deletedContextBytes: contextStore.deletedBytes,
        compactedContextPacks: contextStore.compactedPacks,
        deletedContextPacks: contextStore.deletedPacks,
        deletedPendingContextManifests: contextStore.deletedPendingManifests,
      });
      return { ...report, contextStore, local };
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

import type { StrataConfig } from '@strata/config';
import type { PrismaClient } from '@strata/db';
import type { BuildLogs } from './build-log-writer.js';
import type { BuildScheduler } from './build-scheduler.js';
import type { Placement } from './start-tags.js';
import { logEvent } from './structured-log.js';

/** What one pass changed, build ids by action. */
export interface ReconcileReport {
  /** Queued builds whose job was missing (Redis lost it) or finished without them: queued again. */
  requeued: string[];
  /** Running builds whose worker is gone: back to queued. */
  handedBack: string[];
  /** Running builds whose worker is gone once too often: failed, log ended. */
  failed: string[];
  /** Build contexts whose upload was abandoned (the api streaming them went quiet, killed mid-upload): removed from S3. */
  abandonedUploads: string[];
}

/** What the reconciler needs of the bucket: deleting an abandoned context, and aborting its multipart upload where S3 can list them. */
export interface ReconcilerObjects {
  delete(key: string): Promise<void>;
  abortUploads?(key: string): Promise<number>;
}

/** A build just submitted may not have its job yet: the api records it, then queues it. */
const SUBMIT_GRACE_MS = 5_000;
/** Queued builds checked per pass; a backlog is worked through over several passes. */
const BATCH = 500;
/** Heartbeats of workers gone this long are deleted. */
const HEARTBEAT_RETENTION_MS = 24 * 3600 * 1000;
/** Job states in which the job will still run the build. */
const LIVE_JOB_STATES = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children']);

/**
 * Makes the queue agree with the build table, which is the truth (docs/adr/0011): a queued build
 * gets a job if it has none, a running build whose worker stopped beating is handed back (or
 * failed, with its log ended, after `maxAttempts` claims), and a build context whose api died
 * mid-upload is removed (docs/adr/0020). One pass at a time per queue across
 * every process, under a Postgres advisory lock, so the lock survives Redis losing its data.
 */
export class Reconciler {
  constructor(
    private readonly deps: {
      prisma: PrismaClient;
      /** The builds queue, and the fair start tags new jobs get (docs/adr/0023). */
      scheduler: BuildScheduler;
      logs?: BuildLogs;
      /** Where build contexts are stored; without it abandoned uploads are not swept. */
      objects?: ReconcilerObjects;
      config: Pick<StrataConfig, 'queuePrefix' | 'reconcile'>;
      now?: () => Date;
    },
  ) {}

  /** One pass; null when another process holds this queue's lock. */
  async runOnce(): Promise<ReconcileReport | null> {
    const { prisma, config } = this.deps;
    // A transaction-scoped lock: released however the pass ends, even if this process dies.
    return prisma.$transaction(
      async (tx) => {
        const [{ locked }] = await tx.$queryRaw<Array<{ locked: boolean }>>`SELECT pg_try_advisory_xact_lock(hashtext(${`strata-reconcile:${config.queuePrefix}`})) AS locked`;
        if (!locked) return null;
        return this.pass();
      },
      { maxWait: 10_000, timeout: 5 * 60_000 },
    );
  }

  private async pass(): Promise<ReconcileReport> {
    const { prisma, config } = this.deps;
    const queue = config.queuePrefix;
    const now = this.deps.now?.() ?? new Date();
    const report: ReconcileReport = { requeued: [], handedBack: [], failed: [], abandonedUploads: [] };

    const alive = new Set(
      (await prisma.workerHeartbeat.findMany({ where: { queue, seenAt: { gte: new Date(now.getTime() - config.reconcile.workerStaleMs) } }, select: { id: true } })).map((w) => w.id),
    );
    const orphans = await prisma.build.findMany({
      where: { queue, status: 'running', OR: [{ workerId: null }, { workerId: { notIn: [...alive] } }] },
      select: { id: true, tenantId: true, workerId: true, attempts: true },
      take: BATCH,
    });
    for (const b of orphans) {
      const gone = `worker ${b.workerId ?? '(unknown)'} stopped responding (no heartbeat for ${Math.round(config.reconcile.workerStaleMs / 1000)} s)`;
      if (b.attempts >= config.reconcile.maxAttempts) {
        const message = `the build was stopped ${b.attempts} times because its worker went away (last: ${gone}); it is not retried again`;
        const ended = await prisma.build.updateMany({
          where: { id: b.id, status: 'running', workerId: b.workerId },
          data: { status: 'failed', finishedAt: now, errorMessage: message, errorLine: null, secretsSealed: null, registryAuthSealed: null },
        });
        if (ended.count === 0) continue; // another worker took it meanwhile
        await this.deps.logs?.open(b.id).finish('failed', message);
        report.failed.push(b.id);
        continue;
      }
      const back = await prisma.build.updateMany({
        where: { id: b.id, status: 'running', workerId: b.workerId },
        data: { status: 'queued', workerId: null, startedAt: null },
      });
      if (back.count === 0) continue;
      const log = this.deps.logs?.open(b.id);
      log?.line(null, 'system', `${gone}; the build goes back to the queue`);
      await log?.flush();
      // It had its turn already: back at the front of its tenant's line.
      await this.ensureJob(b, 'front');
      report.handedBack.push(b.id);
    }

    const queued = await prisma.build.findMany({
      where: { queue, status: 'queued', createdAt: { lt: new Date(now.getTime() - SUBMIT_GRACE_MS) } },
      select: { id: true, tenantId: true },
      orderBy: { createdAt: 'asc' },
      take: BATCH,
    });
    for (const b of queued) {
      if (report.handedBack.includes(b.id)) continue;
      if (await this.ensureJob(b)) report.requeued.push(b.id);
    }

    if (this.deps.objects) report.abandonedUploads = await this.sweepUploads(this.deps.objects, new Date(now.getTime() - config.reconcile.workerStaleMs));

    await prisma.workerHeartbeat.deleteMany({ where: { queue, seenAt: { lt: new Date(now.getTime() - HEARTBEAT_RETENTION_MS) } } });
    return report;
  }

  /**
   * Context uploads whose api stopped refreshing them (killed mid-upload): each row is claimed the way
   * the api claims it when it makes the Build (a delete, in one statement), so exactly one of them
   * wins; then what reached S3 is deleted. A failed delete puts the row back for the next pass.
   */
  private async sweepUploads(objects: ReconcilerObjects, staleBefore: Date): Promise<string[]> {
    const { prisma, config } = this.deps;
    const stale = await prisma.contextUpload.findMany({ where: { queue: config.queuePrefix, updatedAt: { lt: staleBefore } }, take: BATCH });
    const swept: string[] = [];
    for (const u of stale) {
      const claimed = await prisma.contextUpload.deleteMany({ where: { id: u.id, updatedAt: { lt: staleBefore } } });
      if (claimed.count === 0) continue;
      try {
        await objects.abortUploads?.(u.key);
        await objects.delete(u.key);
        swept.push(u.id);
      } catch (e) {
        logEvent('warn', 'could not remove an abandoned build context; retrying on the next pass', { buildId: u.id, tenantId: u.tenantId, key: u.key, error: (e as Error).message });
        await prisma.contextUpload.create({ data: u }).catch(() => undefined);
      }
    }
    return swept;
  }

  /**
   * Gives a queued build a job that will run it, unless it has one; true when one was added. A job
   * left completed or failed (its run ended without finishing the build) is replaced: BullMQ
   * ignores an add whose job id already exists.
   */
  async ensureJob(build: { id: string; tenantId: string }, placement: Placement = 'back'): Promise<boolean> {
    const { scheduler } = this.deps;
    const state = await scheduler.queue.getJobState(build.id);
    if (LIVE_JOB_STATES.has(state)) return false;
    if (state !== 'unknown') await scheduler.queue.remove(build.id);
    await scheduler.enqueue({ buildId: build.id, tenantId: build.tenantId }, placement);
    return true;
  }
}

/** Beats for this worker every third of the stale time, so one late beat never makes it look gone. */
export async function startHeartbeat(prisma: PrismaClient, workerId: string, config: Pick<StrataConfig, 'queuePrefix' | 'reconcile'>): Promise<{ stop(): void }> {
  const key = { id_queue: { id: workerId, queue: config.queuePrefix } };
  const beat = () => prisma.workerHeartbeat.upsert({ where: key, create: { id: workerId, queue: config.queuePrefix }, update: { seenAt: new Date() } });
  await beat();
  const timer = setInterval(() => {
    beat().catch((e: Error) => logEvent('warn', 'worker heartbeat failed', { workerId, error: e.message }));
  }, Math.max(100, Math.floor(config.reconcile.workerStaleMs / 3)));
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/** Runs a pass every `intervalMs` (a no-op while another process holds the lock). */
export function startReconciler(reconciler: Reconciler, intervalMs: number, onReport: (r: ReconcileReport) => void): { close(): Promise<void> } {
  if (intervalMs === 0) return { close: async () => undefined };
  let running: Promise<void> | null = null;
  const tick = () => {
    running ??= reconciler
      .runOnce()
      .then((r) => {
        if (r && Object.values(r).some((ids) => ids.length > 0)) onReport(r);
      })
      .catch((e: Error) => {
        logEvent('error', 'reconcile pass failed', { error: e.message });
      })
      .finally(() => {
        running = null;
      });
  };
  // The first pass after one interval: a worker starting costs no extra transaction.
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}

import { Inject, Injectable, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { hostname } from 'node:os';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { addToFleetCounter, BUILDS_QUEUE, type BuildJob, BuildLogs, BuildScheduler, logEvent, Reconciler, redisConnection, startReconciler } from '@strata/queue';
import { FLEET_REDIS } from '../metrics/fleet-redis.provider.js';
import { STORAGE, type Storage } from '../storage/storage.provider.js';

/**
 * The api runs the same reconciler as the workers (docs/adr/0011): with no worker running, or every
 * worker gone, queued builds still get their jobs back after Redis loses its data, and builds of dead
 * workers are still handed back or failed with their logs ended. One pass at a time across every api
 * and worker process, under the reconciler's Postgres advisory lock.
 */
@Injectable()
export class ReconcilerService implements OnApplicationBootstrap, OnModuleDestroy {
  /** Its own Redis connections: the shared ones close while a last pass may still be running. */
  private queue: Queue<BuildJob> | null = null;
  private logRedis: Redis | null = null;
  private loop: { close(): Promise<void> } | null = null;

  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
    @Inject(STORAGE) private readonly storage: Storage,
    @Inject(FLEET_REDIS) private readonly fleet: Redis,
  ) {}

  onApplicationBootstrap(): void {
    const { config } = this;
    if (config.reconcile.intervalMs === 0) return;
    this.queue = new Queue<BuildJob>(BUILDS_QUEUE, { connection: redisConnection(config.redisUrl), prefix: config.queuePrefix });
    this.logRedis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
    const logs = new BuildLogs({ redis: this.logRedis, storage: this.storage, config });
    // Re-added builds get fair start tags as the api's own submissions do (docs/adr/0023).
    const scheduler = BuildScheduler.open(this.queue, this.logRedis, config.scheduling);
    const reconciler = new Reconciler({ prisma: this.prisma, scheduler, logs, objects: this.storage.objects, config });
    const apiId = `api ${hostname()}:${process.pid}`;
    this.loop = startReconciler(reconciler, config.reconcile.intervalMs, (r) => {
      logEvent('info', 'reconciled the builds queue', { by: apiId, ...r });
      for (const [action, ids] of Object.entries(r)) {
        if (ids.length > 0) addToFleetCounter(this.fleet, config.queuePrefix, 'strata_reconciler_actions_total', { action }, ids.length);
      }
    });
  }

  async onModuleDestroy(): Promise<void> {
    await this.loop?.close();
    await this.queue?.close();
    await this.logRedis?.quit().catch(() => undefined);
  }
}

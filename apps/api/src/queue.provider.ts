import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { Inject, Injectable, type OnModuleDestroy, type Provider } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { BUILDS_QUEUE, type BuildJob, BuildScheduler, logEvent, redisConnection } from '@strata/queue';

export type BuildsQueue = Queue<BuildJob>;
export const BUILDS_QUEUE_TOKEN = Symbol('BUILDS_QUEUE');
export const BUILD_SCHEDULER_TOKEN = Symbol('BUILD_SCHEDULER');
/** The connection the scheduler's start tags are read and written on (docs/adr/0023). */
const SCHEDULE_REDIS_TOKEN = Symbol('SCHEDULE_REDIS');

export const buildsQueueProvider: Provider = {
  provide: BUILDS_QUEUE_TOKEN,
  inject: [STRATA_CONFIG],
  useFactory: (config: StrataConfig): BuildsQueue =>
    new Queue<BuildJob>(BUILDS_QUEUE, {
      connection: redisConnection(config.redisUrl),
      prefix: config.queuePrefix,
      defaultJobOptions: { attempts: 1, removeOnComplete: 1000, removeOnFail: 5000 },
    }),
};

export const scheduleRedisProvider: Provider = {
  provide: SCHEDULE_REDIS_TOKEN,
  inject: [STRATA_CONFIG],
  useFactory: (config: StrataConfig): Redis => {
    const redis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
    // ioredis reconnects by itself; a dropped connection is a warning, not an unhandled error event.
    redis.on('error', (e: Error) => logEvent('warn', 'the scheduler lost its Redis connection; reconnecting', { error: e.message }));
    return redis;
  },
};

/** Builds reach the queue through this: fair across tenants, or FIFO (STRATA_SCHEDULING). */
export const buildSchedulerProvider: Provider = {
  provide: BUILD_SCHEDULER_TOKEN,
  inject: [STRATA_CONFIG, BUILDS_QUEUE_TOKEN, SCHEDULE_REDIS_TOKEN],
  useFactory: (config: StrataConfig, queue: BuildsQueue, redis: Redis): BuildScheduler => BuildScheduler.open(queue, redis, config.scheduling),
};

/** Closes the queue's Redis connections when the app shuts down. */
@Injectable()
export class BuildsQueueCloser implements OnModuleDestroy {
  constructor(
    @Inject(BUILDS_QUEUE_TOKEN) private readonly queue: BuildsQueue,
    @Inject(SCHEDULE_REDIS_TOKEN) private readonly redis: Redis,
  ) {}

  async onModuleDestroy(): Promise<void> {
    await this.queue.close();
    await this.redis.quit().catch(() => undefined);
  }
}

/** Everything a module that queues builds provides. */
export const buildQueueProviders: Provider[] = [buildsQueueProvider, scheduleRedisProvider, buildSchedulerProvider, BuildsQueueCloser];

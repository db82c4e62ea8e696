import { Queue } from 'bullmq';
import { Inject, Injectable, type OnModuleDestroy, type Provider } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { BUILDS_QUEUE, type BuildJob, redisConnection } from '@strata/queue';

export type BuildsQueue = Queue<BuildJob>;
export const BUILDS_QUEUE_TOKEN = Symbol('BUILDS_QUEUE');

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

/** Closes the queue's Redis connection when the app shuts down. */
@Injectable()
export class BuildsQueueCloser implements OnModuleDestroy {
  constructor(@Inject(BUILDS_QUEUE_TOKEN) private readonly queue: BuildsQueue) {}

  async onModuleDestroy(): Promise<void> {
    await this.queue.close();
  }
}

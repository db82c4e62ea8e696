import type { Queue } from 'bullmq';
import type { BuildJob } from './queues.js';
import { type Placement, RedisStartTags, type ScriptRunner, type StartTagStore } from './start-tags.js';

/** `fair`: start-time fair queuing across tenants (docs/adr/0023); `fifo`: one line in arrival order, as before. */
export type SchedulingMode = 'fair' | 'fifo';

/**
 * The one way a build gets its job on the builds queue (api submissions, rebuilds, pushes, the
 * reconciler, a worker handing builds back): job id = build id, so an add of a build that has a job
 * is ignored, and in `fair` mode a priority that is the build's start tag.
 */
export class BuildScheduler {
  constructor(
    readonly queue: Queue<BuildJob>,
    /** null: FIFO (no priority). */
    private readonly tags: StartTagStore | null,
  ) {}

  /** The scheduler of `queue` with its start tags in `redis` beside the queue's keys. */
  static open(queue: Queue<BuildJob>, redis: ScriptRunner, mode: SchedulingMode): BuildScheduler {
    if (mode === 'fifo') return new BuildScheduler(queue, null);
    const k = queue.keys;
    const tags = new RedisStartTags(redis, {
      clock: queue.toKey('fair:clock'),
      last: queue.toKey('fair:last'),
      wait: k.wait!,
      paused: k.paused!,
      prioritized: k.prioritized!,
      delayed: k.delayed!,
    });
    return new BuildScheduler(queue, tags);
  }

  async enqueue(build: BuildJob, placement: Placement = 'back'): Promise<void> {
    const priority = this.tags ? await this.tags.assign(build.tenantId, placement) : 0;
    await this.queue.add('build', { buildId: build.buildId, tenantId: build.tenantId }, { jobId: build.buildId, ...(priority > 0 ? { priority } : {}) });
  }

  /** A worker starts the build of a job it took: the schedule's clock moves to the job's tag. */
  async started(job: { opts: { priority?: number } }): Promise<void> {
    const tag = job.opts.priority ?? 0;
    if (this.tags && tag > 0) await this.tags.started(tag);
  }
}

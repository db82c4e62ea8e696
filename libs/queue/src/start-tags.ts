/**
 * Fair scheduling across tenants on open-source BullMQ (docs/adr/0023): start-time fair queuing
 * (Goyal, Vin and Cheng, 1996) carried by BullMQ's job priority. Each build gets a start tag,
 * max(clock, the tenant's last tag) + 1, and is queued with that tag as its priority; workers take
 * the lowest tag first (ties in the order they were queued), and the clock moves up to the tag of
 * each build that starts. A tenant's k-th waiting build therefore runs in round k, whatever another
 * tenant's backlog: a quiet tenant's build gets clock + 1 and starts at the next free slot or the one
 * after (a backlogged tenant's build may hold the same tag and was queued first).
 */

/** BullMQ's highest priority value (2^21 - 1); tags beyond it are clamped, so ties there run in queued order. */
export const MAX_START_TAG = 2 ** 21 - 1;

/** Where a build goes in its tenant's line: `back` for a new build, `front` for one handed back after it had started. */
export type Placement = 'back' | 'front';

/**
 * The next start tag: a new build goes after the tenant's last one and never before the clock; a
 * handed-back build runs at the clock (it had its turn already) and leaves the tenant's last tag
 * alone. Tags start at 1: BullMQ runs priority 0 before every prioritized job.
 */
export function nextStartTag(clock: number, last: number | undefined, placement: Placement, limit = MAX_START_TAG): { tag: number; last: number | undefined } {
  if (placement === 'front') return { tag: Math.min(Math.max(clock, 1), limit), last };
  const tag = Math.min(Math.max(clock, last ?? 0) + 1, limit);
  return { tag, last: tag };
}

/** The shared state of the schedule: the clock and each tenant's last tag. */
export interface StartTagStore {
  /** The start tag for a build of `tenantId` about to be queued, recorded as the tenant's last when placed at the back. */
  assign(tenantId: string, placement: Placement): Promise<number>;
  /** A build with this tag started on a worker: the clock moves up to it (never down). */
  started(tag: number): Promise<void>;
}

/**
 * The store on one process's memory, for unit tests and simulations. `idle()` says whether no build
 * waits; then the schedule starts again from zero, as the Redis store does, so tags stay small.
 */
export class MemoryStartTags implements StartTagStore {
  clock = 0;
  readonly last = new Map<string, number>();

  constructor(private readonly idle: () => boolean = () => false, private readonly limit = MAX_START_TAG) {}

  async assign(tenantId: string, placement: Placement): Promise<number> {
    if (this.idle()) {
      this.clock = 0;
      this.last.clear();
    }
    const next = nextStartTag(this.clock, this.last.get(tenantId), placement, this.limit);
    if (next.last !== undefined) this.last.set(tenantId, next.last);
    return next.tag;
  }

  async started(tag: number): Promise<void> {
    this.clock = Math.max(this.clock, tag);
  }
}

/** The commands the Redis store runs (an ioredis client has them). */
export interface ScriptRunner {
  eval(script: string, numKeys: number, ...args: Array<string | number>): Promise<unknown>;
}

/** Where the schedule lives (clock, last), and the BullMQ keys whose emptiness means no build waits. */
export interface StartTagKeys {
  clock: string;
  last: string;
  wait: string;
  paused: string;
  prioritized: string;
  delayed: string;
}

// nextStartTag() in Lua, atomic with the read of the clock and the tenant's last tag, so api replicas
// and reconcilers assigning at once never hand out a tag computed from stale state. With no build
// waiting, the schedule restarts from zero (tags never creep towards BullMQ's limit in a deployment
// that drains now and then).
const ASSIGN = `
local waiting = redis.call('LLEN', KEYS[3]) + redis.call('LLEN', KEYS[4]) + redis.call('ZCARD', KEYS[5]) + redis.call('ZCARD', KEYS[6])
if waiting == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
local clock = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[3])
if ARGV[2] == 'front' then
  return math.min(math.max(clock, 1), limit)
end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local tag = math.min(math.max(clock, last) + 1, limit)
redis.call('HSET', KEYS[2], ARGV[1], tag)
return tag
`;

const STARTED = `
local clock = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > clock then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
`;

/**
 * The store every api and worker process shares, beside the queue in Redis. Losing it with the
 * rest of Redis is safe: the reconciler queues the builds again, and the schedule starts over.
 */
export class RedisStartTags implements StartTagStore {
  constructor(
    private readonly redis: ScriptRunner,
    private readonly keys: StartTagKeys,
  ) {}

  async assign(tenantId: string, placement: Placement): Promise<number> {
    const { clock, last, wait, paused, prioritized, delayed } = this.keys;
    return Number(await this.redis.eval(ASSIGN, 6, clock, last, wait, paused, prioritized, delayed, tenantId, placement, MAX_START_TAG));
  }

  async started(tag: number): Promise<void> {
    await this.redis.eval(STARTED, 1, this.keys.clock, tag);
  }
}

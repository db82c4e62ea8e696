export * from './queues.js';

/** Redis connection options for BullMQ from a redis:// URL (BullMQ needs maxRetriesPerRequest: null). */
export function redisConnection(redisUrl: string): { host: string; port: number; db: number; password?: string; username?: string; maxRetriesPerRequest: null } {
  const u = new URL(redisUrl);
  return {
    host: u.hostname,
    port: Number(u.port || 6379),
    db: Number(u.pathname.replace('/', '') || 0),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    maxRetriesPerRequest: null,
  };
}

/** Worker lock settings: a killed worker's job is picked up again in seconds, not half a minute. */
export const WORKER_LOCK = { lockDuration: 15_000, stalledInterval: 5_000 } as const;

export * from './build-log.js';
export * from './build-log-writer.js';
export * from './build-scheduler.js';
export * from './reconciler.js';
export * from './fleet-counters.js';
export * from './start-tags.js';
export * from './structured-log.js';

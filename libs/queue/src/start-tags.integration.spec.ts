import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { redisConnection } from './index.js';
import { runStartTagConformance } from './start-tags.conformance.js';
import { RedisStartTags } from './start-tags.js';

// The Redis `npm test` started (REDIS_URL); each test gets keys of its own.
runStartTagConformance('RedisStartTags', async () => {
  const redis = new Redis({ ...redisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'), protocol: 2 });
  const prefix = `strata-start-tags-${randomUUID()}`;
  const keys = {
    clock: `${prefix}:fair:clock`,
    last: `${prefix}:fair:last`,
    wait: `${prefix}:wait`,
    paused: `${prefix}:paused`,
    prioritized: `${prefix}:prioritized`,
    delayed: `${prefix}:delayed`,
  };
  return {
    store: new RedisStartTags(redis, keys),
    // A job in the prioritized set is a build waiting, as BullMQ keeps it.
    async setWaiting(waiting) {
      if (waiting) await redis.zadd(keys.prioritized, 1, 'a-build');
      else await redis.del(keys.prioritized);
    },
    async close() {
      await redis.del(...Object.values(keys));
      await redis.quit();
    },
  };
});

import { HttpException, HttpStatus, Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { redisConnection } from '@strata/queue';
import type { Response } from 'express';
import { Redis } from 'ioredis';

const WINDOW_SECONDS = 60;

interface Counter {
  policy: 'token' | 'tenant' | 'source';
  key: string;
  quota: number;
}

/**
 * Requests per minute per token and per tenant, as fixed one-minute windows counted in Redis, so every
 * api process shares them. Answers carry the IETF `RateLimit-Policy` and `RateLimit` headers; past a
 * limit the request gets 429 with `Retry-After` and a message naming the limit.
 */
@Injectable()
export class RateLimiter implements OnModuleDestroy {
  private readonly redis: Redis;

  constructor(@Inject(STRATA_CONFIG) private readonly config: StrataConfig) {
    this.redis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  }

  async onModuleDestroy(): Promise<void> {
    await this.redis.quit().catch(() => undefined);
  }

  async consume(res: Response, who: { tokenId: string; tenantId: string; tenantPerMinute: number | null }, now = Date.now()): Promise<void> {
    const window = Math.floor(now / 1000 / WINDOW_SECONDS);
    const prefix = `${this.config.queuePrefix}:ratelimit`;
    await this.count(res, now, [
      { policy: 'token', key: `${prefix}:token:${who.tokenId}:${window}`, quota: this.config.rateLimit.tokenPerMinute },
      { policy: 'tenant', key: `${prefix}:tenant:${who.tenantId}:${window}`, quota: who.tenantPerMinute ?? this.config.rateLimit.tenantPerMinute },
    ]);
  }

  /** A route that takes no bearer token (the OIDC exchange), counted per source address. */
  async consumeBySource(res: Response, sourceIp: string, perMinute: number, now = Date.now()): Promise<void> {
    const window = Math.floor(now / 1000 / WINDOW_SECONDS);
    await this.count(res, now, [{ policy: 'source', key: `${this.config.queuePrefix}:ratelimit:source:${sourceIp}:${window}`, quota: perMinute }]);
  }

  private async count(res: Response, now: number, counters: Counter[]): Promise<void> {
    const window = Math.floor(now / 1000 / WINDOW_SECONDS);
    const resetSeconds = (window + 1) * WINDOW_SECONDS - Math.floor(now / 1000);
    const multi = this.redis.multi();
    for (const c of counters) multi.incr(c.key).expire(c.key, WINDOW_SECONDS * 2);
    const replies = (await multi.exec()) ?? [];
    const used = counters.map((_, i) => Number(replies[i * 2]?.[1] ?? 0));
    res.setHeader('RateLimit-Policy', counters.map((c) => `"${c.policy}";q=${c.quota};w=${WINDOW_SECONDS}`).join(', '));
    res.setHeader('RateLimit', counters.map((c, i) => `"${c.policy}";r=${Math.max(0, c.quota - used[i]!)};t=${resetSeconds}`).join(', '));
    const over = counters.findIndex((c, i) => used[i]! > c.quota);
    if (over >= 0) {
      const c = counters[over]!;
      res.setHeader('Retry-After', String(resetSeconds));
      throw new HttpException(
        {
          statusCode: 429,
          error: 'Too Many Requests',
          message: `Rate limit of the ${c.policy === 'source' ? 'source address' : c.policy} exceeded: ${c.quota} requests per ${WINDOW_SECONDS} s; retry in ${resetSeconds} s.`,
        },
        HttpStatus.TOO_MANY_REQUESTS,
      );
    }
  }
}

import { HttpException, HttpStatus, Inject, Injectable, type OnModuleDestroy } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { logEvent, redisConnection } from '@strata/queue';
import type { Response } from 'express';
import { Redis } from 'ioredis';

const WINDOW_SECONDS = 60;
/** How long a count may take before the request goes on uncounted (Redis hung or unreachable). */
const COUNT_TIMEOUT_MS = 500;
/** At most one warning a minute while requests go uncounted. */
const WARN_EVERY_MS = 60_000;
/** ioredis states in which the connection is lost (connecting, at start or on a retry, is waited for up to COUNT_TIMEOUT_MS). */
const DOWN = new Set(['reconnecting', 'close', 'end']);

interface Counter {
  policy: 'token' | 'tenant' | 'source';
  key: string;
  quota: number;
}

/**
 * Requests per minute per token and per tenant, as fixed one-minute windows counted in Redis, so every
 * api process shares them. Answers carry the IETF `RateLimit-Policy` and `RateLimit` headers; past a
 * limit the request gets 429 with `Retry-After` and a message naming the limit.
 *
 * It fails open: while Redis is unreachable (or a count takes longer than COUNT_TIMEOUT_MS) requests
 * go on uncounted, without the headers, and a warning says so once a minute. Closed, it would take
 * every authenticated route down with Redis, reads of builds and tokens included.
 */
@Injectable()
export class RateLimiter implements OnModuleDestroy {
  private readonly redis: Redis;
  private lastWarned = 0;

  constructor(@Inject(STRATA_CONFIG) private readonly config: StrataConfig) {
    this.redis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
    // Reported by uncounted() when a request is let through; ioredis reconnects by itself.
    this.redis.on('error', () => undefined);
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
    // Between reconnection attempts nothing is sent (queued, the counts would pile up for the outage's length).
    if (DOWN.has(this.redis.status)) return this.uncounted(`Redis is ${this.redis.status}`);
    const multi = this.redis.multi();
    for (const c of counters) multi.incr(c.key).expire(c.key, WINDOW_SECONDS * 2);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), COUNT_TIMEOUT_MS)));
    let outcome: Awaited<ReturnType<typeof multi.exec>> | 'timeout';
    try {
      outcome = await Promise.race([multi.exec(), timedOut]);
    } catch (e) {
      return this.uncounted((e as Error).message);
    } finally {
      clearTimeout(timer);
    }
    if (outcome === 'timeout') return this.uncounted(`Redis did not answer within ${COUNT_TIMEOUT_MS} ms`);
    const replies = outcome ?? [];
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

  private uncounted(why: string): void {
    const now = Date.now();
    if (now - this.lastWarned < WARN_EVERY_MS) return;
    this.lastWarned = now;
    logEvent('warn', 'requests go on without rate limiting: the counters in Redis cannot be reached', { why });
  }
}

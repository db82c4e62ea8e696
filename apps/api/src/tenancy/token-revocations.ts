import { Inject, Injectable, type OnModuleDestroy, type OnModuleInit } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig, tokenRevokedChannel } from '@strata/config';
import { tokenRevocations } from '@strata/db';
import { logEvent, redisConnection } from '@strata/queue';
import { Redis } from 'ioredis';

/**
 * Carries API token revocations between api replicas (ADR 0034): the replica that revokes a token
 * publishes its id, and every replica (itself included) tells its registry at once, so bearer tokens
 * issued for it are refused everywhere on their next request. Redis pub/sub delivers to replicas
 * that are connected: one that missed the message (its connection was down) still asks the
 * database again within REVOCATION_CHECK_MS, as before.
 */
@Injectable()
export class TokenRevocationRelay implements OnModuleInit, OnModuleDestroy {
  private readonly channel: string;
  private subscriber: Redis | null = null;
  private publisher: Redis | null = null;

  constructor(@Inject(STRATA_CONFIG) private readonly config: StrataConfig) {
    this.channel = tokenRevokedChannel(config.queuePrefix);
  }

  /** Subscribes without waiting: an api whose Redis is down starts and serves all the same (ioredis subscribes again on every reconnect). */
  onModuleInit(): void {
    this.subscriber = new Redis({ ...redisConnection(this.config.redisUrl), protocol: 2 });
    this.subscriber.on('error', (e: Error) => logEvent('warn', 'the token revocation listener lost its Redis connection; reconnecting', { error: e.message }));
    this.subscriber.on('message', (_channel: string, tokenId: string) => tokenRevocations.notify(tokenId));
    this.subscriber.subscribe(this.channel).catch((e: Error) => logEvent('warn', 'could not listen for token revocations of other api replicas', { error: e.message }));
  }

  /**
   * Tells this replica's registry now, and the other replicas as soon as Redis carries it. Does not
   * wait for Redis (a revocation is answered while Redis is down; the others then refuse the token's
   * bearer tokens within the revocation check) and never throws.
   */
  revoked(tokenId: string): void {
    tokenRevocations.notify(tokenId);
    if (this.publisher === null) {
      this.publisher = new Redis({ ...redisConnection(this.config.redisUrl), protocol: 2 });
      // Its failures are the publishes' own (logged below); ioredis reconnects by itself.
      this.publisher.on('error', () => undefined);
    }
    this.publisher.publish(this.channel, tokenId).catch((e: Error) =>
      logEvent('warn', 'could not tell the other api replicas of a token revocation; they refuse its bearer tokens within the revocation check', { tokenId, error: e.message }),
    );
  }

  async onModuleDestroy(): Promise<void> {
    await Promise.all([this.subscriber?.quit().catch(() => undefined), this.publisher?.quit().catch(() => undefined)]);
  }
}

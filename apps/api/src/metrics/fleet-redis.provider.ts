import { Global, Inject, Injectable, Module, type OnModuleDestroy, type Provider } from '@nestjs/common';
import { Redis } from 'ioredis';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { redisConnection } from '@strata/queue';

/** The Redis connection fleet counters are added to and read from (libs/queue fleet-counters). */
export const FLEET_REDIS = Symbol('FLEET_REDIS');

export const fleetRedisProvider: Provider = {
  provide: FLEET_REDIS,
  inject: [STRATA_CONFIG],
  useFactory: (config: StrataConfig): Redis => new Redis({ ...redisConnection(config.redisUrl), protocol: 2, lazyConnect: true }),
};

@Injectable()
export class FleetRedisCloser implements OnModuleDestroy {
  constructor(@Inject(FLEET_REDIS) private readonly redis: Redis) {}

  async onModuleDestroy(): Promise<void> {
    await this.redis.quit().catch(() => undefined);
  }
}

/** Global: every module's storage provider adds its S3 errors to the fleet counters. */
@Global()
@Module({ providers: [fleetRedisProvider, FleetRedisCloser], exports: [FLEET_REDIS] })
export class FleetRedisModule {}

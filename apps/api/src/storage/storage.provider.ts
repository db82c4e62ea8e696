import type { Provider } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { type Storage, storageFromConfig } from '@strata/blobstore';
import { addToFleetCounter } from '@strata/queue';
import type { Redis } from 'ioredis';
import { FLEET_REDIS } from '../metrics/fleet-redis.provider.js';

export type { Storage };
export const STORAGE = Symbol('STORAGE');

export const storageProvider: Provider = {
  provide: STORAGE,
  inject: [STRATA_CONFIG, FLEET_REDIS],
  useFactory: (config: StrataConfig, fleet: Redis): Promise<Storage> =>
    storageFromConfig({
      ...config.s3,
      onRequestError: (operation, reason) => addToFleetCounter(fleet, config.queuePrefix, 'strata_s3_request_errors_total', { process: 'api', operation, reason }),
    }, config.storageDir),
};

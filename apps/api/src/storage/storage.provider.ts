import type { Provider } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { type Storage, storageFromConfig } from '@strata/blobstore';

export type { Storage };
export const STORAGE = Symbol('STORAGE');

export const storageProvider: Provider = {
  provide: STORAGE,
  inject: [STRATA_CONFIG],
  useFactory: (config: StrataConfig): Promise<Storage> => storageFromConfig(config.s3),
};

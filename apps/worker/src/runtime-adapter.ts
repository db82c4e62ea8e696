import { NotFoundError, type Storage } from '@strata/blobstore';
import type { RunSettings } from '@strata/config';
import { BuildRuntime, type CacheArchiveStore } from '@strata/runtime';

export interface WorkerRuntimeOptions {
  /** The worker's data directory: everything goes under `<dataDir>/runtime`. */
  dataDir: string;
  storage: Storage;
  run: RunSettings;
  /** STRATA_ALLOW_PRIVATE_SOURCES: also what bridge RUN steps may reach although private. */
  allowPrivateSources?: readonly string[];
  /** A tmpfs directory for secret files; default /dev/shm/strata-<hash of dataDir>. */
  secretsDir?: string;
}

/** The worker's BuildRuntime: layers from the blob store, cache mounts saved as S3 objects, RUN settings from config. */
export class WorkerRuntime extends BuildRuntime {
  constructor(options: WorkerRuntimeOptions) {
    super({
      dataDir: options.dataDir,
      step: { ...options.run, allowPrivate: options.allowPrivateSources ?? [] },
      layerBlob: (digest) => options.storage.blobs.get(digest),
      cacheArchives: cacheArchivesIn(options.storage),
      ...(options.secretsDir !== undefined ? { secretsDir: options.secretsDir } : {}),
    });
  }
}

function cacheArchivesIn(storage: Storage): CacheArchiveStore {
  return {
    get: async (key) => {
      try {
        return await storage.objects.get(key);
      } catch (e) {
        if (e instanceof NotFoundError) return null;
        throw e;
      }
    },
    put: async (key, body) => {
      await storage.objects.put(key, body);
    },
  };
}

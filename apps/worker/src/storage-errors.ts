import { StorageUnavailableError } from '@strata/blobstore';
import { BuildFailure } from '@strata/build-engine';

/** A build stopped by S3 failing past its retries says so (the build can be run again), instead of "internal error". */
export function storageFailure(e: unknown): BuildFailure | null {
  for (let cause = e, depth = 0; cause instanceof Error && depth < 5; cause = cause.cause, depth++) {
    if (cause instanceof StorageUnavailableError) return new BuildFailure(`storage (S3) failed: ${cause.message}; nothing was published, and the build can be run again`, null);
  }
  return null;
}

import { BuildFailure } from '@strata/build-engine';

/**
 * A build stopped by the worker's disk filling up says so, instead of "internal error". What it
 * wrote is removed as the build ends (its work and context directories), so the worker goes on.
 */
export function diskFailure(e: unknown): BuildFailure | null {
  // By code, not instanceof: fs errors may come from another realm (jest's vm).
  for (let cause = e as { code?: string; message?: string; cause?: unknown } | undefined, depth = 0; cause && depth < 5; cause = cause.cause as typeof cause, depth++) {
    if (cause.code === 'ENOSPC' || cause.code === 'EDQUOT') {
      return new BuildFailure(`the worker ran out of disk space (${cause.message ?? cause.code}); nothing was published, and the build can be run again`, null);
    }
  }
  return null;
}

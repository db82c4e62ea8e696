import { BuildFailure } from '@strata/build-engine';
import { TarExtractionError, TarFormatError } from '@strata/oci';

/**
 * What the sender did wrong, when reading the build context failed because of its bytes: an
 * archive that is not one (or was cut short), or an entry refused by the extraction rules. Null
 * for anything else (S3, the disk), which is Strata's problem, not the sender's.
 */
export function contextFailure(e: unknown): BuildFailure | null {
  if (e instanceof TarFormatError) return new BuildFailure(`the build context is not a valid tar archive: ${e.message}`, null);
  if (e instanceof TarExtractionError) return new BuildFailure(`the build context was refused: ${e.message}`, null);
  return null;
}

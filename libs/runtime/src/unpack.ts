import type { Readable } from 'node:stream';
import { TarExtractionError } from '@strata/oci';
import { extractTar } from './extract.js';

export class LayerUnpackError extends Error {
  override readonly name = 'LayerUnpackError';
}

export interface UnpackResult {
  /** sha256 of the uncompressed tar, "sha256:<hex>". */
  diffId: string;
  /** Approximate disk use: file sizes rounded to 4 KiB plus 4 KiB per other entry. */
  sizeBytes: number;
  entries: number;
}

/**
 * Unpacks one layer tar (gzip or plain) into `dest`, an empty directory, in the form overlayfs
 * expects of a lower dir (extractTar's `overlay-layer` form).
 */
export async function unpackLayer(input: Readable, dest: string): Promise<UnpackResult> {
  try {
    const { diffId, sizeBytes, entries } = await extractTar(input, dest, { form: 'overlay-layer' });
    return { diffId, sizeBytes, entries };
  } catch (e) {
    if (e instanceof TarExtractionError) throw new LayerUnpackError(e.message);
    throw e;
  }
}

import { Readable } from 'node:stream';
import { readTarEntries, safeArchivePath } from '@strata/oci';

/** Dockerfiles up to this size are taken from the context at upload; a larger one is read by the worker. */
export const CAPTURED_DOCKERFILE_MAX_BYTES = 256 * 1024;
/** A tar.gz that inflates beyond this is left to the worker: the api reads a few MiB at most. */
const CAPTURE_MAX_TAR_BYTES = 64 * 1024 * 1024;

/**
 * The Dockerfile at `wanted` in a tar or tar.gz context held whole in memory, as the worker's index
 * will see it: the last entry of that name wins, and it must be a regular file. Null when the
 * worker must read it itself: none there, a link, too large, a parent directory replaced by
 * something else, or an archive this read cannot finish within CAPTURE_MAX_TAR_BYTES (the
 * worker's full read says what is wrong). With it the worker starts the steps that do not read the
 * context while the context is still being fetched and indexed (docs/adr/0041).
 */
export async function captureDockerfile(context: Buffer, wanted: string): Promise<string | null> {
  let captured: Buffer | null = null;
  try {
    const target = safeArchivePath(wanted).join('/');
    for await (const entry of readTarEntries(Readable.from([context]), { maxUncompressedBytes: CAPTURE_MAX_TAR_BYTES })) {
      const name = safeArchivePath(entry.header.name).join('/');
      if (name === target) {
        captured = entry.header.type === 'file' && entry.header.size <= CAPTURED_DOCKERFILE_MAX_BYTES ? await readAll(entry.chunks) : null;
      } else if (target.startsWith(`${name}/`) && entry.header.type !== 'directory') {
        // A parent that is a link (or a file): where the path leads is the worker's to resolve.
        return null;
      }
    }
  } catch {
    return null;
  }
  // Postgres text holds no NUL: such a file is the worker's to read (and refuse).
  return captured === null || captured.includes(0) ? null : captured.toString('utf8');
}

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

import { PassThrough, Readable, Transform } from 'node:stream';
import { type ContextManifest, readTarEntries, safeArchivePath } from '@strata/oci';

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
export function captureDockerfile(context: Buffer, wanted: string): Promise<string | null> {
  return captureFrom(Readable.from([context]), wanted, CAPTURE_MAX_TAR_BYTES);
}

/**
 * The same for a plain tar too large to hold whole, read as it streams to storage: `tap` passes
 * every chunk on unchanged (put it between the request and the upload) while a tar reader looks at
 * the entries' headers beside it; `dockerfile` settles once the stream ended. A tar.gz is not read
 * here (inflating all of it would cost the api what the worker pays anyway): its Dockerfile is the
 * worker's to read. The reader never holds the upload back for long: it skips contents, and once it
 * has its answer (or fails) it stops taking chunks.
 */
export function streamingDockerfileCapture(wanted: string, maxBytes: number): { tap: Transform; dockerfile: Promise<string | null> } {
  const parser = new PassThrough({ highWaterMark: 1024 * 1024 });
  // The reader's failures are its answer (null), never the upload's.
  parser.on('error', () => undefined);
  let done = false;
  const dockerfile = captureFrom(parser, wanted, maxBytes).finally(() => {
    done = true;
    // Whatever it buffered or is still given goes nowhere; a write waiting for room goes on.
    parser.resume();
    parser.emit('drain');
  });
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (done || parser.destroyed || parser.write(chunk)) return callback(null, chunk);
      parser.once('drain', () => callback(null, chunk));
    },
    flush(callback) {
      if (!parser.destroyed) parser.end();
      callback();
    },
    destroy(error, callback) {
      parser.destroy();
      callback(error);
    },
  });
  return { tap, dockerfile };
}

async function captureFrom(input: Readable, wanted: string, maxBytes: number): Promise<string | null> {
  let captured: Buffer | null = null;
  try {
    const target = safeArchivePath(wanted).join('/');
    for await (const entry of readTarEntries(input, { maxUncompressedBytes: maxBytes })) {
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
  return captured === null ? null : dockerfileText(captured);
}

/**
 * The content of the Dockerfile at `wanted` in a context manifest, as the worker will read it: a
 * regular file of at most CAPTURED_DOCKERFILE_MAX_BYTES under no linked parent; null otherwise
 * (the worker resolves links itself). The caller reads it from the tenant's content store.
 */
export function manifestDockerfile(manifest: ContextManifest, wanted: string): { digest: string; size: number } | null {
  let target: string;
  try {
    target = safeArchivePath(wanted).join('/');
  } catch {
    return null;
  }
  for (const e of manifest.entries) {
    if (e.path === target) return e.type === 'file' && e.size <= CAPTURED_DOCKERFILE_MAX_BYTES ? { digest: e.digest, size: e.size } : null;
    if (e.type !== 'dir' && target.startsWith(`${e.path}/`)) return null;
  }
  return null;
}

/** The Dockerfile's bytes as Build.dockerfileText: null for one holding a NUL, which Postgres text cannot (the worker reads and refuses it). */
export function dockerfileText(bytes: Buffer): string | null {
  return bytes.includes(0) ? null : bytes.toString('utf8');
}

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import type { ContextScan } from './context-scan.js';

export const MANIFEST_TYPE = 'application/vnd.strata.context-manifest+json';
/** A batch of contents closes at this many bytes or files (each is one request). */
const BATCH_BYTES = 64 * 1024 * 1024;
const BATCH_FILES = 10_000;
/** Files up to this size are read synchronously into chunks of about CHUNK bytes (with their tar headers). */
const SMALL_FILE = 256 * 1024;
const CHUNK = 1024 * 1024;
/** Batches sent at once. */
const PARALLEL_BATCHES = 2;
/** Times a batch is sent when the server fails it (5xx) or the connection drops. */
const BATCH_ATTEMPTS = 3;

/** A file of the context changed between its hashing and its upload: sending the batch again cannot help. */
export class ContextChangedError extends Error {}

export interface UploadClient {
  /** POST `body` to `path`; resolves with the parsed JSON answer, throws on a non-2xx one. */
  post(path: string, body: RequestInit['body'], headers: Array<[string, string]>): Promise<Record<string, unknown>>;
}

/**
 * The manifest as a request body: JSON, gzip-compressed (50,000 entries are a few MB of JSON).
 * `json` is JSON.stringify(scan.manifest) when the caller has it already (it hashed it for the digest).
 */
export function manifestBody(scan: ContextScan, json: string = JSON.stringify(scan.manifest)): Buffer {
  return gzipSync(Buffer.from(json), { level: 6 });
}

/**
 * Uploads the contents the server said it lacks, in tar batches of files named by digest. A file
 * that changed since it was hashed is refused by the api (its digest no longer matches) or here
 * (its size), and the build is not started: run it again.
 */
export async function uploadContents(c: UploadClient, scan: ContextScan, missing: string[]): Promise<{ bytes: number; requests: number }> {
  const batches: Array<Array<{ digest: string; file: string; size: number }>> = [];
  let current: Array<{ digest: string; file: string; size: number }> = [];
  let currentBytes = 0;
  for (const digest of new Set(missing)) {
    const src = scan.sources.get(digest);
    if (!src) throw new Error(`the server asked for ${digest}, which this context does not hold`);
    if (current.length > 0 && (currentBytes + src.size > BATCH_BYTES || current.length >= BATCH_FILES)) {
      batches.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push({ digest, ...src });
    currentBytes += src.size;
  }
  if (current.length > 0) batches.push(current);
  let bytes = 0;
  let next = 0;
  const send = async () => {
    while (next < batches.length) {
      const batch = batches[next++];
      const size = batch.reduce((n, b) => n + b.size, 0);
      // The contents' total lets the api store the batch in one S3 PutObject (no multipart upload),
      // which S3 cannot retry part by part: a batch the server failed (5xx) or a dropped connection is sent again.
      for (let attempt = 1; ; attempt++) {
        // fetch reports a failed request body as "fetch failed" with the body's error re-wrapped as text:
        // the body itself records why it failed.
        const body = batchStream(batch);
        try {
          await c.post('/v1/contexts/blobs', body.stream as unknown as RequestInit['body'], [['content-type', 'application/x-tar'], ['strata-pack-bytes', String(size)]]);
          break;
        } catch (e) {
          // A file that changed while it was read fails the same way again: not retried, and named.
          if (body.failure instanceof ContextChangedError) throw body.failure;
          const status = (e as { status?: unknown }).status;
          // fetch's network failures are TypeErrors (by name: they may come from another realm).
          const retryable = typeof status === 'number' ? status >= 500 : (e as { name?: unknown }).name === 'TypeError';
          if (!retryable || attempt >= BATCH_ATTEMPTS) throw e;
          await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
        }
      }
      bytes += size;
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_BATCHES, batches.length) }, send));
  return { bytes, requests: batches.length };
}

/** A ustar header for a regular file named `name` (ASCII, at most 100 bytes) of `size` bytes. */
function tarHeader(name: string, size: number): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, 'ascii');
  b.write('0000644\0', 100, 8, 'ascii');
  b.write('0000000\0', 108, 8, 'ascii');
  b.write('0000000\0', 116, 8, 'ascii');
  if (size > 0o77777777777) throw new Error(`a file of ${size} bytes is too large to upload`);
  b.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 12, 'ascii');
  b.write('00000000000\0', 136, 12, 'ascii');
  b.fill(0x20, 148, 156);
  b.write('0', 156, 1, 'ascii');
  b.write('ustar\u000000', 257, 8, 'ascii');
  let sum = 0;
  for (const byte of b) sum += byte;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return b;
}

/**
 * The batch as a tar stream, reading each file as it goes (never the batch whole in memory), and
 * the error that ended the stream, if one did.
 */
function batchStream(batch: Array<{ digest: string; file: string; size: number }>): { stream: ReadableStream<Uint8Array>; failure?: unknown } {
  const it = (async function* () {
    // Small files are read synchronously and joined with their headers into chunks of about CHUNK
    // bytes: a stream chunk, an open and a read per file (three per file with the header and padding)
    // cost the CLI more CPU than the api took to store them (docs/adr/0037, amendment "the cold scan").
    let parts: Buffer[] = [];
    let pending = 0;
    const take = () => {
      const chunk = parts.length === 1 ? parts[0] : Buffer.concat(parts, pending);
      parts = [];
      pending = 0;
      return chunk;
    };
    const shorter = (file: string) => new ContextChangedError(`${file} changed while the context was being uploaded (it is shorter than when it was hashed): run the build again`);
    for (const b of batch) {
      parts.push(tarHeader(b.digest.slice('sha256:'.length), b.size));
      pending += 512;
      if (b.size <= SMALL_FILE) {
        const content = Buffer.allocUnsafe(b.size);
        const fd = openSync(b.file, 'r');
        try {
          let done = 0;
          while (done < b.size) {
            const n = readSync(fd, content, done, b.size - done, done);
            if (n === 0) throw shorter(b.file);
            done += n;
          }
        } finally {
          closeSync(fd);
        }
        parts.push(content);
        pending += b.size;
      } else {
        yield take();
        const h = await open(b.file, 'r');
        try {
          let done = 0;
          while (done < b.size) {
            const buf = Buffer.allocUnsafe(Math.min(1024 * 1024, b.size - done));
            const { bytesRead } = await h.read(buf, 0, buf.length, done);
            if (bytesRead === 0) throw shorter(b.file);
            done += bytesRead;
            yield buf.subarray(0, bytesRead);
          }
        } finally {
          await h.close();
        }
      }
      if (b.size % 512 !== 0) {
        parts.push(Buffer.alloc(512 - (b.size % 512)));
        pending += 512 - (b.size % 512);
      }
      if (pending >= CHUNK) yield take();
    }
    parts.push(Buffer.alloc(1024));
    pending += 1024;
    yield take();
  })();
  const out: { stream: ReadableStream<Uint8Array>; failure?: unknown } = {
    stream: new ReadableStream({
      async pull(controller) {
        try {
          const { value, done } = await it.next();
          if (done) controller.close();
          else controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
        } catch (e) {
          out.failure = e;
          controller.error(e);
        }
      },
      async cancel() {
        await it.return(undefined);
      },
    }),
  };
  return out;
}

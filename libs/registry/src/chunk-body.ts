import type { Hash } from 'node:crypto';
import { Readable } from 'node:stream';

/** As much as the storage drivers queue per write: a 64 KiB socket read does not pause the upload. */
const OUT_BUFFER = 1024 * 1024;
/** The body is paused when this much waits for storage (resumed below OUT_BUFFER). */
const PAUSE_AT = 4 * OUT_BUFFER;

/**
 * Reads an upload chunk's request body, adding every byte to `hash` (when given) as it is read,
 * with `read()` on the body itself: no Transform, async iterator or generator per socket read
 * (with `--cpu-prof` those layers and their garbage cost a 100 MiB push more CPU than its sha256).
 *
 * Up to `headLimit` bytes are collected first: a body that ends within them is answered whole
 * (`head`); a longer one as one Readable (`stream`) that replays the head, then passes the rest
 * on with the body's backpressure. `headLimit` < 0 (a body known to be longer) streams at once.
 * A body that fails or is cut short (the client went away) rejects, or errors the stream; the
 * stream never ends early without an error, so a short chunk cannot be stored as a whole one.
 */
export function readChunkBody(body: Readable, hash: Hash | null, headLimit: number): Promise<{ head: Buffer; stream: null } | { head: null; stream: Readable }> {
  return new Promise((resolve, reject) => {
    const head: Buffer[] = [];
    let headBytes = 0;
    let out: Readable | null = null;
    let ended = false;
    let failed = false;
    const fail = (err: Error): void => {
      if (failed) return;
      failed = true;
      body.off('readable', pump);
      if (out !== null) out.destroy(err);
      else reject(err);
    };
    const toStream = (): void => {
      const stream = new Readable({
        highWaterMark: OUT_BUFFER,
        read: () => pump(),
        // Storage gave up on the chunk (or the caller did): the rest of the body is read and dropped,
        // so that the client, still sending, gets the error answer instead of a reset connection.
        destroy: (err, callback) => {
          body.off('readable', pump);
          if (!ended) setImmediate(() => body.resume());
          callback(err);
        },
      });
      out = stream;
      for (const chunk of head) stream.push(chunk);
      head.length = 0;
      if (ended) stream.push(null);
      resolve({ head: null, stream });
    };
    const take = (chunk: Buffer): void => {
      hash?.update(chunk);
      if (out !== null) {
        out.push(chunk);
        return;
      }
      head.push(chunk);
      headBytes += chunk.length;
      if (headBytes > headLimit) toStream();
    };
    // read() hands over everything buffered as one Buffer: a chunked body (skopeo's) arrives in
    // many small pieces, and each piece costs a hash update and a push; read() joins them first.
    // Not read while more than PAUSE_AT waits for storage (the socket is then paused by the
    // body's own buffer); out's read() asks again once it is below OUT_BUFFER.
    function pump(): void {
      if (failed) return;
      for (;;) {
        if (out !== null && (out.destroyed || out.readableLength >= PAUSE_AT)) return;
        const chunk = body.read() as Buffer | null;
        if (chunk === null) return;
        take(chunk);
      }
    }
    body.once('end', () => {
      ended = true;
      if (failed) return;
      if (out !== null) out.push(null);
      else resolve({ head: head.length === 1 ? head[0]! : Buffer.concat(head, headBytes), stream: null });
    });
    body.once('error', fail);
    // An IncomingMessage closes without `end` when its client goes away mid-body.
    body.once('close', () => {
      if (!ended) fail(body.errored ?? new Error('the request body was cut short'));
    });
    if (body.errored) return fail(body.errored);
    if (body.readableEnded) {
      ended = true;
      return resolve({ head: Buffer.alloc(0), stream: null });
    }
    if (headLimit < 0) toStream();
    body.on('readable', pump);
  });
}

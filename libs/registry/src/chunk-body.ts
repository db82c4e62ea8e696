import type { Hash } from 'node:crypto';
import { Readable } from 'node:stream';

/** As much as the storage drivers queue per write: a 64 KiB socket read does not pause the upload. */
const OUT_BUFFER = 1024 * 1024;
/** The body is paused when this much waits for storage (resumed below OUT_BUFFER). */
const PAUSE_AT = 4 * OUT_BUFFER;

/**
 * Reads an upload chunk's request body, adding every byte to `hash` (when given) as it is read,
 * from the body's own `data` events: no Transform, async iterator or generator per socket read
 * (with `--cpu-prof` those layers and their garbage cost a 100 MiB push more CPU than its sha256),
 * and no copy: `read()` joined the pieces a chunked body (skopeo's, docker's) arrives in into a new
 * buffer, a second 100 MiB of ArrayBuffers per 100 MiB pushed. (The full GCs a big push cost the
 * api came from V8's heap growth factor, not from these copies: docs/adr/0043.)
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
      body.off('data', take);
      if (out !== null) out.destroy(err);
      else reject(err);
    };
    const toStream = (): void => {
      const stream = new Readable({
        highWaterMark: OUT_BUFFER,
        // Storage wants more: the body flows again (it is paused while PAUSE_AT waits).
        read: () => {
          if (!failed && !ended) body.resume();
        },
        // Storage gave up on the chunk (or the caller did): the rest of the body is read and dropped,
        // so that the client, still sending, gets the error answer instead of a reset connection.
        destroy: (err, callback) => {
          body.off('data', take);
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
    // Not taken while more than PAUSE_AT waits for storage: the body is paused (and with it, once
    // its own buffer is full, the socket); out's read() resumes it once it is below OUT_BUFFER.
    function take(chunk: Buffer): void {
      if (failed) return;
      hash?.update(chunk);
      if (out !== null) {
        if (!out.destroyed) out.push(chunk);
        if (out.readableLength >= PAUSE_AT) body.pause();
        return;
      }
      head.push(chunk);
      headBytes += chunk.length;
      if (headBytes > headLimit) toStream();
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
    body.on('data', take);
  });
}

import { HttpException, HttpStatus } from '@nestjs/common';
import type { Readable } from 'node:stream';

/**
 * Reads a small request body whole (the api parses no bodies by default: contexts are streamed).
 * Past `limit` bytes it stops reading and throws `tooLarge()`: by default the api's 413, saying
 * which `what` was too large; the registry passes its own spec error.
 */
export async function readSmallBody(req: Readable, limit: number, what: string, tooLarge?: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  // Not `for await`: leaving that loop early destroys the request, and the client's socket with it.
  return new Promise<Buffer>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.off('end', onEnd);
        req.resume();
        reject(
          tooLarge?.() ??
            new HttpException(
              { statusCode: 413, error: 'Payload Too Large', message: `The ${what} is larger than the limit of ${limit} bytes.` },
              HttpStatus.PAYLOAD_TOO_LARGE,
            ),
        );
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', reject);
  });
}

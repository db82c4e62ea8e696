import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

/** A validated `sha256:<64 lowercase hex>` content digest. */
export type Digest = string & { readonly __brand: 'Digest' };

const DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;

export class InvalidDigestError extends Error {
  override readonly name = 'InvalidDigestError';
  constructor(readonly input: string) {
    super(`invalid digest ${JSON.stringify(input.length > 100 ? `${input.slice(0, 100)}…` : input)}: expected "sha256:" followed by 64 lowercase hex characters`);
  }
}

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && DIGEST_PATTERN.test(value);
}

/** Validates untrusted input (request paths, manifest fields) as a digest; throws InvalidDigestError otherwise. */
export function parseDigest(value: string): Digest {
  if (!isDigest(value)) throw new InvalidDigestError(value);
  return value;
}

export function digestHex(digest: Digest): string {
  return digest.slice('sha256:'.length);
}

export function digestFromHex(hex: string): Digest {
  return parseDigest(`sha256:${hex}`);
}

export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/**
 * Pass-through stream that hashes what flows through it; `digest` and `size`
 * are readable once the stream has ended ('end' on the readable side).
 */
export class DigestingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private result: Digest | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.result = `sha256:${this.hash.digest('hex')}` as Digest;
    callback();
  }

  /** Bytes seen so far (final once the stream has ended). */
  get size(): number {
    return this.bytes;
  }

  get digest(): Digest {
    if (this.result === undefined) throw new Error('DigestingStream: digest read before the stream ended');
    return this.result;
  }
}

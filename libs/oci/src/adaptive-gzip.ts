import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, createGzip, type Gzip, type ZlibParams } from 'node:zlib';

/** Input is judged in blocks of this many bytes, at fixed offsets: the output depends on the bytes only, never on how they were chunked. */
export const ADAPTIVE_GZIP_BLOCK = 1024 * 1024;
/** Bytes of a block sampled for its entropy (16 runs of 4 KiB spread across it). */
const SAMPLE_RUNS = 16;
const SAMPLE_RUN = 4096;
/**
 * Bits per byte above which a block is stored rather than compressed. Random or already
 * compressed bytes measure about 8.0; a block of small random files whose tar headers and padding
 * are a tenth of it, about 7.65; source text, 4.5 to 5.5; executables, 5 to 6.5.
 */
const STORE_ABOVE_BITS = 7.5;

/** Order-0 entropy (bits per byte) of a sample of `block`. */
export function sampledEntropy(block: Buffer): number {
  const counts = new Uint32Array(256);
  let n = 0;
  if (block.length <= SAMPLE_RUNS * SAMPLE_RUN) {
    for (let i = 0; i < block.length; i++) counts[block[i]!]!++;
    n = block.length;
  } else {
    const stride = Math.floor((block.length - SAMPLE_RUN) / (SAMPLE_RUNS - 1));
    for (let r = 0; r < SAMPLE_RUNS; r++) {
      const start = r * stride;
      for (let i = start; i < start + SAMPLE_RUN; i++) counts[block[i]!]!++;
    }
    n = SAMPLE_RUNS * SAMPLE_RUN;
  }
  let bits = 0;
  for (const c of counts) {
    if (c === 0) continue;
    const p = c / n;
    bits -= p * Math.log2(p);
  }
  return bits;
}

/**
 * gzip that stores incompressible stretches instead of running deflate over them: deflate at the
 * default level spends about 60 ns a byte on random bytes to save nothing (15 MB/s on a loaded
 * core), and a build context's bulk is mostly such bytes (images, archives, binaries). Each block of
 * ADAPTIVE_GZIP_BLOCK input bytes whose sampled entropy is above STORE_ABOVE_BITS goes out as
 * deflate's stored blocks (level 0); the others at `level`. The switch is zlib's params() (a sync
 * flush, then the new level), at block offsets only, so equal input gives equal output. Input with
 * no such block gives exactly what createGzip({ level }) gives. A plain gzip stream either way.
 */
export class AdaptiveGzip extends Transform {
  private readonly gzip: Gzip;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private current: number;
  private failed: Error | null = null;

  constructor(private readonly level: number) {
    super();
    this.current = level;
    this.gzip = createGzip({ level });
    // The reader's pace holds deflate back: paused when the readable side is full, resumed in _read.
    this.gzip.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) this.gzip.pause();
    });
    this.gzip.on('error', (e: Error) => {
      this.failed = e;
      this.destroy(e);
    });
  }

  override _read(size: number): void {
    this.gzip.resume();
    super._read(size);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < ADAPTIVE_GZIP_BLOCK) {
      done();
      return;
    }
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const whole = all.length - (all.length % ADAPTIVE_GZIP_BLOCK);
    const rest = all.subarray(whole);
    this.pending = rest.length > 0 ? [Buffer.from(rest)] : [];
    this.pendingBytes = rest.length;
    this.blocks(all.subarray(0, whole)).then(() => done(), (e: Error) => done(e));
  }

  override _flush(done: TransformCallback): void {
    const last = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    (async () => {
      if (last.length > 0) await this.block(last);
      const ended = once(this.gzip, 'end');
      this.gzip.end();
      await ended;
    })().then(() => done(), (e: Error) => done(this.failed ?? e));
  }

  override _destroy(error: Error | null, done: (error: Error | null) => void): void {
    this.gzip.destroy();
    done(error);
  }

  private async blocks(data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += ADAPTIVE_GZIP_BLOCK) await this.block(data.subarray(at, at + ADAPTIVE_GZIP_BLOCK));
  }

  private async block(block: Buffer): Promise<void> {
    const want = sampledEntropy(block) > STORE_ABOVE_BITS ? zlibConstants.Z_NO_COMPRESSION : this.level;
    if (want !== this.current) {
      await new Promise<void>((resolve) => (this.gzip as unknown as ZlibParams).params(want, zlibConstants.Z_DEFAULT_STRATEGY, () => resolve()));
      this.current = want;
    }
    if (this.failed) throw this.failed;
    if (!this.gzip.write(block)) await Promise.race([once(this.gzip, 'drain'), once(this.gzip, 'error')]);
    if (this.failed) throw this.failed;
  }
}

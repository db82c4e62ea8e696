import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import { constants as zlibConstants, crc32, createDeflateRaw, type DeflateRaw } from 'node:zlib';

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
/**
 * Bits per byte above which a block is deflated with the run-length strategy (Z_RLE: matches at
 * distance 1 only, then Huffman codes): incompressible files a little too small to be stored, with
 * the zeros of their tar headers and padding between them. On such blocks (many files of a few KiB
 * of random bytes, 7.2 to 7.5 bits) it saves what the default strategy saves (12% here) in a third of
 * the time; the default strategy searches every byte for matches it never finds.
 */
const RLE_ABOVE_BITS = 6.5;

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

/** A deflate stored block holds at most this many bytes. */
const STORED_MAX = 65_535;
/** An empty final stored block: ends a deflate stream whose last block was stored. */
const FINAL_EMPTY_STORED = Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]);

/**
 * gzip that stores incompressible stretches instead of running deflate over them: deflate at the
 * default level spends about 60 ns a byte on random bytes to save nothing (15 MB/s on a loaded
 * core), and a build context's bulk is mostly such bytes (images, archives, binaries). Each block of
 * ADAPTIVE_GZIP_BLOCK input bytes whose sampled entropy is above STORE_ABOVE_BITS goes out as
 * deflate's stored blocks, the others through zlib's raw deflate at `level`.
 *
 * The stored blocks are framed here, not by zlib: zlib's level 0 still copies every byte through
 * its window (about 15 ns a byte, measured: 3 s for 256 MiB, more under load), where framing is a
 * 5-byte header per 64 KiB and the CRC-32 (zlib.crc32, about 0.7 ns a byte). The gzip header and
 * trailer are written here too (the header zlib writes: no name, no time, OS 3). Before stored blocks
 * the deflate stream is ended with a full flush (byte aligned, its history dropped: what follows
 * may not refer back across the stored bytes). Switches happen at block offsets only, so equal
 * input gives equal output whatever the chunking; input with no incompressible block gives exactly
 * what createGzip({ level }) gives. A plain gzip stream either way.
 */
export class AdaptiveGzip extends Transform {
  private readonly deflate: DeflateRaw;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Whether the last block went to deflate (true before any block: an empty input is deflate's). */
  private deflating = true;
  /** The strategy deflate is set to. */
  private strategy: number = zlibConstants.Z_DEFAULT_STRATEGY;
  private crc = 0;
  private total = 0;
  private started = false;
  private failed: Error | null = null;

  constructor(private readonly level: number) {
    super();
    // Output in 128 KiB chunks (zlib's default is 16 KiB): every chunk costs a trip through the hash and a write of the spool.
    this.deflate = createDeflateRaw({ level, chunkSize: 128 * 1024 });
    // Never paused, so its output is pushed here as it is made, in order with the stored blocks;
    // the writes wait for the reader instead (the Transform holds `done` while its buffer is full).
    this.deflate.on('data', (chunk: Buffer) => this.push(chunk));
    this.deflate.on('error', (e: Error) => {
      this.failed = e;
      this.destroy(e);
    });
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
      this.header();
      if (this.deflating) {
        // Its final block ends the stream.
        const ended = once(this.deflate, 'end');
        this.deflate.end();
        await ended;
      } else {
        this.push(FINAL_EMPTY_STORED);
        this.deflate.destroy();
      }
      if (this.failed) throw this.failed;
      const trailer = Buffer.allocUnsafe(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.total >>> 0, 4);
      this.push(trailer);
    })().then(() => done(), (e: Error) => done(this.failed ?? e));
  }

  override _destroy(error: Error | null, done: (error: Error | null) => void): void {
    this.deflate.destroy();
    done(error);
  }

  /** The gzip header zlib writes for this level (XFL 2 for level 9, 4 for levels below 2). */
  private header(): void {
    if (this.started) return;
    this.started = true;
    const level = this.level === zlibConstants.Z_DEFAULT_COMPRESSION ? 6 : this.level;
    const xfl = level === 9 ? 2 : level < 2 ? 4 : 0;
    this.push(Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, xfl, 0x03]));
  }

  private async blocks(data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += ADAPTIVE_GZIP_BLOCK) await this.block(data.subarray(at, at + ADAPTIVE_GZIP_BLOCK));
  }

  private async block(block: Buffer): Promise<void> {
    this.header();
    this.crc = crc32(block, this.crc);
    this.total = (this.total + block.length) % 0x1_0000_0000;
    const bits = sampledEntropy(block);
    if (bits > STORE_ABOVE_BITS) {
      if (this.deflating) {
        // Byte aligned and without history: the stored bytes follow, and later deflate output starts afresh.
        await new Promise<void>((resolve) => this.deflate.flush(zlibConstants.Z_FULL_FLUSH, () => resolve()));
        if (this.failed) throw this.failed;
        // Its output is pushed as it is made; anything still queued in it goes first.
        while (this.deflate.readableLength > 0) await once(this.deflate, 'data');
        this.deflating = false;
      }
      this.push(storedBlocks(block));
      return;
    }
    this.deflating = true;
    const strategy = bits > RLE_ABOVE_BITS ? zlibConstants.Z_RLE : zlibConstants.Z_DEFAULT_STRATEGY;
    if (strategy !== this.strategy) {
      // zlib ends the current deflate block first (a sync flush), so the switch is at this offset.
      await new Promise<void>((resolve) => this.deflate.params(this.level, strategy, () => resolve()));
      if (this.failed) throw this.failed;
      this.strategy = strategy;
    }
    // once() rejects on 'error' too.
    if (!this.deflate.write(block)) await once(this.deflate, 'drain');
    if (this.failed) throw this.failed;
  }
}

/** `data` as deflate stored blocks (not final), each up to 65,535 bytes behind its 5-byte header: one buffer. */
function storedBlocks(data: Buffer): Buffer {
  const count = Math.max(1, Math.ceil(data.length / STORED_MAX));
  const out = Buffer.allocUnsafe(data.length + 5 * count);
  let o = 0;
  for (let at = 0; at < data.length || (at === 0 && o === 0); at += STORED_MAX) {
    const n = Math.min(STORED_MAX, data.length - at);
    out[o] = 0x00;
    out.writeUInt16LE(n, o + 1);
    out.writeUInt16LE(~n & 0xffff, o + 3);
    data.copy(out, o + 5, at, at + n);
    o += 5 + n;
    if (data.length === 0) break;
  }
  return out;
}

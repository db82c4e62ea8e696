import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { gunzipSync, gzipSync } from 'node:zlib';
import { ADAPTIVE_GZIP_BLOCK, AdaptiveGzip, sampledEntropy } from './adaptive-gzip.js';

function gzipIn(chunks: Buffer[], level = -1): Promise<Buffer> {
  return buffer(Readable.from(chunks).pipe(new AdaptiveGzip(level)));
}

function split(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, at + size));
  return out;
}

describe('AdaptiveGzip', () => {
  const text = Buffer.from('COPY . /app/\nRUN make\n'.repeat(150_000)); // ~3.3 MB, very compressible
  const random = randomBytes(3 * ADAPTIVE_GZIP_BLOCK + 12_345);

  it('gives exactly what gzip gives when no block is incompressible', async () => {
    const out = await gzipIn(split(text, 65_536));
    expect(out.equals(gzipSync(text))).toBe(true);
  });

  it('gives what gzip gives for an empty input and at other levels', async () => {
    expect((await gzipIn([])).equals(gzipSync(Buffer.alloc(0)))).toBe(true);
    for (const level of [1, 9]) expect((await gzipIn(split(text, 100_000), level)).equals(gzipSync(text, { level }))).toBe(true);
  });

  it('frames stored blocks itself: a valid gzip whose CRC and size gunzip checks, random first, last or alone', async () => {
    for (const data of [random, Buffer.concat([random, text]), Buffer.concat([text, random]), Buffer.concat([random.subarray(0, ADAPTIVE_GZIP_BLOCK), text.subarray(0, 5), random])]) {
      const out = await gzipIn(split(data, 65_536));
      expect(gunzipSync(out).equals(data)).toBe(true);
      // gzip(1) agrees too (it checks the trailer as zlib does).
      expect(out.readUInt32LE(out.length - 4)).toBe(data.length);
    }
  });

  it('deflates blocks of small random files with their tar zeros (7.2 to 7.5 bits) by runs: valid, and smaller than stored', async () => {
    const parts: Buffer[] = [];
    for (let n = 0; n < 400; n++) parts.push(Buffer.alloc(512), randomBytes(3000 + ((n * 7919) % 4000)), Buffer.alloc(300));
    const files = Buffer.concat(parts);
    const bits = sampledEntropy(files.subarray(0, ADAPTIVE_GZIP_BLOCK));
    expect(bits).toBeGreaterThan(6.5);
    expect(bits).toBeLessThan(7.5);
    const mixed = Buffer.concat([text.subarray(0, ADAPTIVE_GZIP_BLOCK), files, random, files]);
    const out = await gzipIn(split(mixed, 65_536));
    expect(gunzipSync(out).equals(mixed)).toBe(true);
    expect(out.equals(await gzipIn([mixed]))).toBe(true);
    expect(out.length).toBeLessThan(mixed.length - Math.floor(files.length / 10));
  });

  it('stores random blocks: about the input size, and far faster than deflate', async () => {
    const out = await gzipIn([random]);
    expect(gunzipSync(out).equals(random)).toBe(true);
    expect(out.length).toBeGreaterThan(random.length);
    expect(out.length).toBeLessThan(random.length + 1024);
  });

  it('mixes stored and compressed blocks; the output depends on the bytes only, not on the chunking', async () => {
    const mixed = Buffer.concat([text, random, text.subarray(0, 777_777), random.subarray(0, 5000)]);
    const a = await gzipIn(split(mixed, 65_536));
    const b = await gzipIn(split(mixed, 1_000_003));
    const c = await gzipIn([mixed]);
    expect(a.equals(b)).toBe(true);
    expect(a.equals(c)).toBe(true);
    expect(gunzipSync(a).equals(mixed)).toBe(true);
    // The text still compresses.
    expect(a.length).toBeLessThan(random.length + 5000 + 200_000);
  });

  it('keeps working when the reader is slow (backpressure)', async () => {
    const data = Buffer.concat([random, text]);
    const gz = Readable.from(split(data, 100_000)).pipe(new AdaptiveGzip(-1));
    const parts: Buffer[] = [];
    for await (const c of gz) {
      parts.push(c as Buffer);
      await new Promise((r) => setImmediate(r));
    }
    expect(gunzipSync(Buffer.concat(parts)).equals(data)).toBe(true);
  });

  it('measures entropy: random bytes near 8 bits, text far below', () => {
    expect(sampledEntropy(randomBytes(ADAPTIVE_GZIP_BLOCK))).toBeGreaterThan(7.9);
    expect(sampledEntropy(text.subarray(0, ADAPTIVE_GZIP_BLOCK))).toBeLessThan(5);
    expect(sampledEntropy(Buffer.alloc(1000))).toBe(0);
  });
});

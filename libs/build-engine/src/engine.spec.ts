import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { type Digest, indexTar, LayerWriter, type PackedLayer, PackReader } from '@strata/oci';
import { IndexedContext } from './context.js';
import { BuildEngine } from './solver.js';
import type { CachedStep, LayerSink } from './interfaces.js';

/** A layer sink whose uploads finish (or fail) when the test says so. */
function sink(upload: () => Promise<void>): LayerSink & { stored: number } {
  const blobs = new Map<string, Buffer>();
  const s = {
    stored: 0,
    async store(layer: PackedLayer) {
      const chunks: Buffer[] = [];
      for await (const c of layer.stream) chunks.push(c as Buffer);
      const r = await layer.result;
      blobs.set(r.digest, Buffer.concat(chunks));
      const stored = upload().then(() => {
        s.stored++;
      });
      stored.catch(() => undefined);
      return { descriptor: r.descriptor, diffId: r.diffId, stored };
    },
    has: async (d: Digest) => blobs.has(d),
    open: async (d: Digest) => Readable.from([blobs.get(d)!]),
  };
  return s;
}

/** A build context holding a.txt, as the worker has it: an index and a pack. */
async function context() {
  const pack = path.join(mkdtempSync(path.join(tmpdir(), 'engine-ctx-')), 'pack');
  const { index } = await indexTar(new LayerWriter({ compression: 'none' }).pack([{ type: 'file', path: 'a.txt', content: Buffer.from('a\n') }]).stream, pack);
  return IndexedContext.open(index, await PackReader.open(pack), async () => {
    throw new Error('no directory needed');
  });
}

describe('BuildEngine with layers still uploading', () => {
  const dockerfile = 'FROM scratch\nCOPY a.txt /a.txt\nENV X=1\n';
  const images = { resolve: async () => Promise.reject(new Error('no images here')) };

  it('returns the image only once every layer is stored, and writes the cache entry after the upload', async () => {
    const cache = new Map<string, CachedStep>();
    let finish!: () => void;
    const layers = sink(() => new Promise<void>((r) => (finish = r)));
    let lastStepDone!: () => void;
    const stepsDone = new Promise<void>((r) => (lastStepDone = r));
    const engine = new BuildEngine({
      images,
      layers,
      cache: { get: async (k) => cache.get(k) ?? null, put: async (k, v) => void cache.set(k, v) },
      onEvent: (e) => {
        if (e.type === 'step-done' && e.instruction.startsWith('ENV')) lastStepDone();
      },
    });
    let done = false;
    const build = engine.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await context(), buildArgs: {} }).then((out) => {
      done = true;
      return out;
    });
    await stepsDone;
    await new Promise((r) => setTimeout(r, 20));
    // Every step ran (the ENV after the COPY too), but the layer is not durable: no image, no entry for the COPY.
    expect(done).toBe(false);
    expect([...cache.values()].some((v) => v.layer)).toBe(false);
    finish();
    const out = await build;
    expect(out.image.layers).toHaveLength(1);
    expect(layers.stored).toBe(1);
    expect([...cache.values()].filter((v) => v.layer)).toHaveLength(1);
  });

  it('fails the build when an upload fails, and caches nothing that names the missing layer', async () => {
    const cache = new Map<string, CachedStep>();
    const layers = sink(() => Promise.reject(new Error('S3 is down')));
    const engine = new BuildEngine({ images, layers, cache: { get: async (k) => cache.get(k) ?? null, put: async (k, v) => void cache.set(k, v) } });
    await expect(engine.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await context(), buildArgs: {} })).rejects.toThrow('S3 is down');
    expect([...cache.values()].some((v) => v.layer)).toBe(false);
  });
});

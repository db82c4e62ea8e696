// In-memory stand-ins for the engine's dependencies, shared by its spec files (named *.test.ts so
// it is left out of the library's build and not run as a suite): no root, runc or services.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { type Digest, type ImageConfig, indexTar, type LayerEntry, LayerWriter, type PackedLayer, PackReader, readTarEntries } from '@strata/oci';
import type { BuildInput, EngineDeps } from './build-input.js';
import { BuildFailure, type BuildEvent } from './interfaces.js';
import { BuildEngine } from './solver.js';
import { IndexedContext } from './context.js';
import type { BaseImage, CachedStep, CacheIndex, ImageResolver, LayerSink, RootfsProvider, RunExecutor, RunOutcome, RunRequest } from './interfaces.js';

/** A layer sink keeping blobs in memory; `upload` decides when (and whether) each upload finishes. */
export function memorySink(upload: () => Promise<void> = async () => undefined): LayerSink & { stored: number; blobs: Map<string, Buffer> } {
  const blobs = new Map<string, Buffer>();
  const s = {
    stored: 0,
    blobs,
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

/** A cache index in a Map. */
export function memoryCache(): CacheIndex & { entries: Map<string, CachedStep> } {
  const entries = new Map<string, CachedStep>();
  return { entries, get: async (k) => entries.get(k) ?? null, put: async (k, v) => void entries.set(k, v) };
}

/** A build context holding `files` (path → content), as the worker has it: an index and a pack. */
export async function memoryContext(files: Record<string, string> = { 'a.txt': 'a\n' }): Promise<IndexedContext> {
  const pack = path.join(mkdtempSync(path.join(tmpdir(), 'engine-ctx-')), 'pack');
  const entries: LayerEntry[] = Object.entries(files).map(([p, c]) => ({ type: 'file', path: p, content: Buffer.from(c) }));
  const { index } = await indexTar(new LayerWriter({ compression: 'none' }).pack(entries).stream, pack);
  return IndexedContext.open(index, await PackReader.open(pack), async () => {
    throw new Error('this fake context has no directory');
  });
}

/** Base images by reference, without layers. */
export function fakeImages(configs: Record<string, Partial<ImageConfig['config']>> = {}): ImageResolver {
  return {
    async resolve(ref: string): Promise<BaseImage> {
      const config = configs[ref];
      if (!config) throw new Error(`no image "${ref}" here`);
      const image: ImageConfig = { architecture: 'amd64', os: 'linux', config: { ...config }, rootfs: { type: 'layers', diff_ids: [] }, history: [] };
      return { ref, source: 'tenant', manifestDigest: `sha256:${Buffer.from(ref).toString('hex').padEnd(64, '0').slice(0, 64)}` as Digest, config: image, layers: [] };
    },
  };
}

/** An executor that runs nothing: it records each request and answers with `outcome(req)` (default: exit 0, no changes). */
export function recordingExecutor(outcome: (req: RunRequest) => Partial<RunOutcome> = () => ({})): RunExecutor & { runs: RunRequest[] } {
  const runs: RunRequest[] = [];
  return {
    runs,
    async run(req) {
      runs.push(req);
      return { exitCode: 0, entries: [], release: async () => undefined, ...outcome(req) };
    },
  };
}

/** Rootfs views are never needed when every file COPY --from reads was written by this build. */
export const noRootfs: RootfsProvider = {
  open: async () => {
    throw new Error('this test expected no rootfs view to be opened');
  },
};

/** Engine deps made of the fakes above; override any of them. */
export function fakeDeps(over: Partial<EngineDeps> = {}): EngineDeps & { layers: ReturnType<typeof memorySink>; cache: ReturnType<typeof memoryCache>; executor: ReturnType<typeof recordingExecutor> } {
  return {
    images: fakeImages(),
    layers: memorySink(),
    cache: memoryCache(),
    executor: recordingExecutor(),
    rootfs: noRootfs,
    now: () => new Date('2026-01-02T03:04:05Z'),
    ...over,
  } as EngineDeps & { layers: ReturnType<typeof memorySink>; cache: ReturnType<typeof memoryCache>; executor: ReturnType<typeof recordingExecutor> };
}

/** What a layer the sink stored holds: each entry's path, type, mode, owner and (for files) content. */
export async function layerFiles(sink: ReturnType<typeof memorySink>, digest: string): Promise<Array<{ path: string; type: string; mode: number; uid: number; gid: number; content?: string }>> {
  const out: Array<{ path: string; type: string; mode: number; uid: number; gid: number; content?: string }> = [];
  for await (const { header, chunks: content } of readTarEntries(Readable.from([sink.blobs.get(digest)!]))) {
    const chunks: Buffer[] = [];
    for await (const c of content) chunks.push(c);
    out.push({ path: header.name, type: header.type, mode: header.mode, uid: header.uid, gid: header.gid, ...(header.type === 'file' ? { content: Buffer.concat(chunks).toString() } : {}) });
  }
  return out;
}

/** Builds `dockerfile` on fakes; `ran(line)` is what the executor was asked to run for the RUN at that line. */
export async function buildWith(dockerfile: string, over: Partial<EngineDeps> = {}, input: Partial<BuildInput> = {}) {
  const deps = fakeDeps(over);
  const events: BuildEvent[] = [];
  deps.onEvent = (e) => events.push(e);
  const out = await new BuildEngine(deps).build({ dockerfile, dockerfilePath: 'Dockerfile', context: input.context ?? (await memoryContext()), buildArgs: {}, ...input });
  const ran = (line: number) => deps.executor.runs.find((r) => r.line === line);
  return { out, deps, events, ran };
}

/** The BuildFailure a build of `dockerfile` on fakes ends with. */
export async function buildFailure(dockerfile: string, over: Partial<EngineDeps> = {}, input: Partial<BuildInput> = {}): Promise<BuildFailure> {
  try {
    await buildWith(dockerfile, over, input);
  } catch (e) {
    if (e instanceof BuildFailure) return e;
    throw e;
  }
  throw new Error('the build was expected to fail');
}

import type { BuildEvent } from './interfaces.js';
import { BuildEngine } from './solver.js';
import { fakeDeps, memoryCache, memoryContext, memorySink } from './fakes.test.js';

type Done = Extract<BuildEvent, { type: 'step-done' }>;
const done = (events: BuildEvent[]): Done[] => events.flatMap((e) => (e.type === 'step-done' ? [e] : []));

describe('dispatch: one step from the cache or run', () => {
  const dockerfile = 'FROM scratch AS app\nCOPY a.txt /a.txt\nENV X=1\nRUN make\n';

  it('takes every step from the cache on a rebuild, keeping the time each ran, so the image is the same', async () => {
    const cache = memoryCache();
    const layers = memorySink();
    let clock = new Date('2026-01-01T00:00:00Z');
    const build = async () => {
      const events: BuildEvent[] = [];
      const deps = fakeDeps({ cache, layers, now: () => clock, onEvent: (e) => events.push(e) });
      const out = await new BuildEngine(deps).build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {} });
      return { out, events, runs: deps.executor.runs.length };
    };
    const first = await build();
    clock = new Date('2026-02-01T00:00:00Z');
    const second = await build();
    expect(done(first.events).map((e) => e.cached)).toEqual([false, false, false]);
    expect(done(second.events).map((e) => e.cached)).toEqual([true, true, true]);
    expect(second.runs).toBe(0);
    expect(second.out.image.config).toEqual(first.out.image.config);
    expect(first.out.image.config.history?.map((h) => h.created_by)).toEqual(['COPY a.txt /a.txt # buildkit', 'ENV X=1', 'RUN /bin/sh -c make # buildkit']);
  });

  it('says why a step missed: noCache, noCacheStages, or what changed since the previous build', async () => {
    const cache = memoryCache();
    const layers = memorySink();
    let previous: Done[] = [];
    const run = async (input: { noCache?: boolean; noCacheStages?: string[]; buildArgs?: Record<string, string> }, file = dockerfile) => {
      const events: BuildEvent[] = [];
      const deps = fakeDeps({ cache, layers, onEvent: (e) => events.push(e), previousStep: (stage, index) => previous.find((e) => e.stage === stage && e.index === index)?.fingerprint ?? null });
      await new BuildEngine(deps).build({ dockerfile: file, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {}, ...input });
      previous = done(events);
      return previous;
    };
    expect((await run({}))[0].missReason).toBe('no earlier build of this repository and target ran this step');
    expect((await run({ noCache: true })).map((e) => e.missReason)).toEqual(Array(3).fill('noCache was set for this build'));
    expect((await run({ noCacheStages: ['app'] }))[0].missReason).toBe('noCache was set for stage "app"');
    const changed = await run({}, dockerfile.replace('ENV X=1', 'ENV X=2'));
    expect(changed.map((e) => [e.cached, e.missReason])).toEqual([[true, null], [false, 'instruction changed'], [false, 'instruction changed']]);
    const withArg = 'FROM scratch AS app\nARG V\nCOPY a.txt /a.txt\nRUN make\n';
    await run({ buildArgs: { V: '1' } }, withArg);
    const argChanged = await run({ buildArgs: { V: '2' } }, withArg);
    // The COPY does not use V and chains from the filesystem, not the ARG: it stays cached.
    expect(argChanged.map((e) => e.missReason)).toEqual(['build arg V changed', null, 'build arg V changed']);
  });

  it('announces each step before it runs and reports it once done, in order', async () => {
    const events: BuildEvent[] = [];
    const deps = fakeDeps({ onEvent: (e) => events.push(e) });
    await new BuildEngine(deps).build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {} });
    expect(events.filter((e) => e.type !== 'log').map((e) => `${e.type}:${'line' in e ? e.line : ''}`)).toEqual([
      'step-start:2', 'step-done:2', 'step-start:3', 'step-done:3', 'step-start:4', 'step-done:4',
    ]);
    expect(done(events)[0]).toMatchObject({ stageName: 'app', instruction: 'COPY a.txt /a.txt', layerDigest: expect.stringMatching(/^sha256:/) });
  });
});

describe('dispatch with layers still uploading', () => {
  const dockerfile = 'FROM scratch\nCOPY a.txt /a.txt\nENV X=1\n';

  it('returns the image only once every layer is stored, and writes the cache entry after the upload', async () => {
    const cache = memoryCache();
    let finish!: () => void;
    const layers = memorySink(() => new Promise<void>((r) => (finish = r)));
    let lastStepDone!: () => void;
    const stepsDone = new Promise<void>((r) => (lastStepDone = r));
    const engine = new BuildEngine(fakeDeps({
      layers,
      cache,
      onEvent: (e) => {
        if (e.type === 'step-done' && e.instruction.startsWith('ENV')) lastStepDone();
      },
    }));
    let finished = false;
    const build = engine.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {} }).then((out) => {
      finished = true;
      return out;
    });
    await stepsDone;
    await new Promise((r) => setTimeout(r, 20));
    // Every step ran (the ENV after the COPY too), but the layer is not durable: no image, no entry for the COPY.
    expect(finished).toBe(false);
    expect([...cache.entries.values()].some((v) => v.layer)).toBe(false);
    finish();
    const out = await build;
    expect(out.image.layers).toHaveLength(1);
    expect(layers.stored).toBe(1);
    expect([...cache.entries.values()].filter((v) => v.layer)).toHaveLength(1);
  });

  it('fails the build when an upload fails, and caches nothing that names the missing layer', async () => {
    const cache = memoryCache();
    const engine = new BuildEngine(fakeDeps({ layers: memorySink(() => Promise.reject(new Error('S3 is down'))), cache }));
    await expect(engine.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {} })).rejects.toThrow('S3 is down');
    expect([...cache.entries.values()].some((v) => v.layer)).toBe(false);
  });

  it('gives the finished image to whileSettling while its upload is still going, and fails the build when either fails', async () => {
    let finish!: () => void;
    const layers = memorySink(() => new Promise<void>((r) => (finish = r)));
    const seen: Array<{ layers: number; stored: number }> = [];
    const whileSettling = async (image: { layers: unknown[] }) => {
      seen.push({ layers: image.layers.length, stored: layers.stored });
      finish();
    };
    const out = await new BuildEngine(fakeDeps({ layers })).build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {}, whileSettling });
    // Called once, with the image's one layer not stored yet; the build returned after the upload.
    expect(seen).toEqual([{ layers: 1, stored: 0 }]);
    expect(out.image.layers).toHaveLength(1);
    expect(layers.stored).toBe(1);

    const uploadFails = new BuildEngine(fakeDeps({ layers: memorySink(() => Promise.reject(new Error('S3 is down'))) }));
    await expect(uploadFails.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {}, whileSettling: async () => undefined })).rejects.toThrow('S3 is down');
    const storingFails = new BuildEngine(fakeDeps());
    await expect(storingFails.build({ dockerfile, dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {}, whileSettling: () => Promise.reject(new Error('the manifest could not be stored')) })).rejects.toThrow('the manifest could not be stored');
  });
});

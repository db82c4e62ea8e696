import { LayerWriter, type LayerEntry } from '@strata/oci';
import { memorySink } from './fakes.test.js';
import { LiveLayers } from './live-layers.js';
import { RootfsIndexer } from './rootfs-index.js';
import type { StageResult } from './build-input.js';

async function read(stream: NodeJS.ReadableStream): Promise<number> {
  let n = 0;
  for await (const c of stream) n += (c as Buffer).length;
  return n;
}

describe('LiveLayers', () => {
  const entries: LayerEntry[] = [{ type: 'file', path: 'etc/app.conf', mode: 0o644, content: Buffer.from('x=1\n') }];

  it('keeps the sources of a layer it stored: file contents for COPY --from, its tar for a RUN', async () => {
    const sink = memorySink();
    const live = new LiveLayers(sink, new RootfsIndexer((d) => sink.open(d)), undefined);
    const layer = await live.store(new LayerWriter().pack(entries), entries);
    expect(live.content(layer.descriptor.digest, 'etc/app.conf')).toBeDefined();
    const [ref] = live.refs([layer]);
    expect(ref.open).toBeDefined();
    expect(await read(await ref.open!())).toBeGreaterThan(512);
    // A layer it did not write comes from the store as usual.
    const other = { ...layer, descriptor: { ...layer.descriptor, digest: 'sha256:other' as typeof layer.descriptor.digest } };
    expect(live.refs([other])[0].open).toBeUndefined();
  });

  it('waits for uploads and the work queued behind them, and reports the first failure', async () => {
    let finish!: () => void;
    const sink = memorySink(() => new Promise<void>((r) => (finish = r)));
    const live = new LiveLayers(sink, new RootfsIndexer((d) => sink.open(d)), undefined);
    const layer = await live.store(new LayerWriter().pack(entries), entries);
    let entryWritten = false;
    live.wait(live.upload(layer.descriptor.digest)!.then(() => (entryWritten = true)));
    let settled = false;
    const settling = live.settle().then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 10));
    expect(settled).toBe(false);
    finish();
    await settling;
    expect(entryWritten).toBe(true);

    const failing = new LiveLayers(memorySink(() => Promise.reject(new Error('S3 is down'))), new RootfsIndexer((d) => sink.open(d)), undefined);
    await failing.store(new LayerWriter().pack(entries), entries);
    await expect(failing.settle()).rejects.toThrow('S3 is down');
  });

  it('opens one view per stage and releases them all', async () => {
    const sink = memorySink();
    let opened = 0;
    let released = 0;
    const rootfs = { open: async () => (opened++, { root: '/nowhere', release: async () => void released++ }) };
    const live = new LiveLayers(sink, new RootfsIndexer((d) => sink.open(d)), rootfs);
    const stage = { index: 0, name: 'a', config: {}, layers: [], fsKey: 'k' } as unknown as StageResult;
    await live.stageView(stage);
    await live.stageView(stage);
    expect(opened).toBe(1);
    await live.release();
    expect(released).toBe(1);
  });
});

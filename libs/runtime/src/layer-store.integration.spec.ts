import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LayerWriter, type LayerEntry } from '@strata/oci';
import { LayerStore } from './layer-store.js';
import { layerSource, tempDir, type TestLayer } from './fixtures.test.js';

async function ociLayer(entries: LayerEntry[], compression: 'gzip' | 'none' = 'none'): Promise<TestLayer> {
  const packed = new LayerWriter({ compression }).pack(entries);
  const chunks: Buffer[] = [];
  for await (const chunk of packed.stream) chunks.push(chunk as Buffer);
  const result = await packed.result;
  return { diffId: result.diffId, tar: Buffer.concat(chunks) };
}

const file = (path: string, content: string, extra: Partial<LayerEntry> = {}): LayerEntry =>
  ({ type: 'file', path, content: Buffer.from(content), mtime: 1_600_000_000, ...extra }) as LayerEntry;
const dir = (path: string, extra: Partial<LayerEntry> = {}): LayerEntry => ({ type: 'directory', path, mtime: 1_600_000_000, ...extra }) as LayerEntry;

describe('LayerStore', () => {
  let dataDir: string;
  let store: LayerStore;
  const snapshots: { release(): Promise<void> }[] = [];

  beforeEach(() => {
    dataDir = tempDir('layers');
    store = new LayerStore({ dataDir });
  });
  afterEach(async () => {
    for (const snapshot of snapshots.splice(0)) await snapshot.release();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('stacks layers as overlay lower dirs, applying whiteouts and opaque directories of upper layers', async () => {
    const base = await ociLayer(
      [dir('etc'), file('etc/keep', 'keep'), file('etc/gone', 'gone'), dir('var'), dir('var/cache'), file('var/cache/old', 'old'), file('owned', 'x', { uid: 1000, gid: 50, mode: 0o640 })],
      'gzip',
    );
    const top = await ociLayer([
      { type: 'whiteout', path: 'etc/gone' },
      { type: 'opaque', path: 'var/cache' },
      dir('var/cache'),
      file('var/cache/new', 'new'),
    ]);
    const { source } = layerSource([base, top]);
    const snapshot = await store.prepare([base.diffId, top.diffId], source);
    snapshots.push(snapshot);

    expect(readFileSync(join(snapshot.rootfs, 'etc/keep'), 'utf8')).toBe('keep');
    expect(existsSync(join(snapshot.rootfs, 'etc/gone'))).toBe(false);
    expect(existsSync(join(snapshot.rootfs, 'var/cache/old'))).toBe(false);
    expect(readFileSync(join(snapshot.rootfs, 'var/cache/new'), 'utf8')).toBe('new');
    const owned = lstatSync(join(snapshot.rootfs, 'owned'));
    expect([owned.uid, owned.gid, owned.mode & 0o7777, owned.mtimeMs]).toEqual([1000, 50, 0o640, 1_600_000_000_000]);
    // The unpacked top layer holds the overlay forms of the OCI markers.
    const whiteout = lstatSync(join(store.layerPath(top.diffId), 'etc/gone'));
    expect(whiteout.isCharacterDevice() && whiteout.rdev === 0).toBe(true);
    expect(execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'trusted.overlay.opaque', join(store.layerPath(top.diffId), 'var/cache')]).toString()).toBe('y');
  });

  it('unpacks a layer once and reuses it across snapshots and concurrent prepares', async () => {
    const base = await ociLayer([file('a', 'a')]);
    const { source, calls } = layerSource([base]);
    const [one, two] = await Promise.all([store.prepare([base.diffId], source), store.prepare([base.diffId], source)]);
    snapshots.push(one!, two!);
    const three = await new LayerStore({ dataDir }).prepare([base.diffId], source);
    snapshots.push(three);
    expect(calls.get(base.diffId)).toBe(1);
    expect(readFileSync(join(three.rootfs, 'a'), 'utf8')).toBe('a');
  });

  it("keeps a snapshot's upper directory as the next layer: what the step changed, deletions included, without unpacking it", async () => {
    const base = await ociLayer([dir('etc'), file('etc/keep', 'keep'), file('etc/gone', 'gone'), dir('app'), file('app/old', 'old')]);
    const { source, calls } = layerSource([base]);
    const step = await store.prepare([base.diffId], source);
    writeFileSync(join(step.rootfs, 'etc/new'), 'new');
    rmSync(join(step.rootfs, 'etc/gone'));
    rmSync(join(step.rootfs, 'app'), { recursive: true });
    mkdirSync(join(step.rootfs, 'app'));
    writeFileSync(join(step.rootfs, 'app/fresh'), 'fresh');
    const kept = 'sha256:' + 'ab'.repeat(32);
    await step.keepAsLayer(kept, 123);
    // The rest of the snapshot goes in the background; release() waits for it.
    await step.release();
    expect(existsSync(step.rootfs)).toBe(false);
    const next = await store.prepare([base.diffId, kept], async () => {
      throw new Error('a kept layer was fetched');
    });
    snapshots.push(next);
    expect(readFileSync(join(next.rootfs, 'etc/new'), 'utf8')).toBe('new');
    expect(readFileSync(join(next.rootfs, 'etc/keep'), 'utf8')).toBe('keep');
    expect(existsSync(join(next.rootfs, 'etc/gone'))).toBe(false);
    // The recreated directory is opaque: the base's app/old stays hidden.
    expect(existsSync(join(next.rootfs, 'app/old'))).toBe(false);
    expect(readFileSync(join(next.rootfs, 'app/fresh'), 'utf8')).toBe('fresh');
    expect(calls.get(base.diffId)).toBe(1);
    expect((await store.list()).find((l) => l.diffId === kept)?.sizeBytes).toBe(123);
  });

  it('mounts snapshots volatile and drops, at start-up, layers placed without a sync during another boot', async () => {
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const base = await ociLayer([file('a', 'a')]);
    const { source, calls } = layerSource([base]);
    const step = await store.prepare([base.diffId], source);
    snapshots.push(step);
    const mountLine = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((line) => line.split(' ')[4] === step.rootfs);
    // Linux 6.12+ shows it as fsync=volatile.
    expect(mountLine).toMatch(/[ ,](fsync=)?volatile(,|$)/);
    writeFileSync(join(step.rootfs, 'b'), 'b');
    const kept = 'sha256:' + 'cd'.repeat(32);
    await step.keepAsLayer(kept, 1);
    await step.release();
    const marker = (diffId: string) => join(dataDir, 'layers', diffId.slice(7), 'boot');
    expect(readFileSync(marker(base.diffId), 'utf8')).toBe(bootId);
    expect(readFileSync(marker(kept), 'utf8')).toBe(bootId);

    // The kept layer was placed during a boot that ended (a power loss could have emptied its files); the base during this one.
    writeFileSync(marker(kept), 'another-boot');
    const restarted = new LayerStore({ dataDir });
    await restarted.init();
    expect(await restarted.has(kept)).toBe(false);
    expect(await restarted.has(base.diffId)).toBe(true);

    // Once synced, a layer has no marker and outlives any boot.
    await restarted.persist();
    expect(existsSync(marker(base.diffId))).toBe(false);
    const later = new LayerStore({ dataDir });
    const next = await later.prepare([base.diffId], source);
    snapshots.push(next);
    expect(readFileSync(join(next.rootfs, 'a'), 'utf8')).toBe('a');
    expect(calls.get(base.diffId)).toBe(1);
  });

  it('refuses a layer whose bytes do not hash to its diff ID', async () => {
    const real = await ociLayer([file('a', 'a')]);
    const forged = { diffId: `sha256:${'0'.repeat(64)}`, tar: real.tar };
    await expect(store.prepare([forged.diffId], layerSource([forged]).source)).rejects.toThrow(/not its diff ID/);
    expect(await store.has(forged.diffId)).toBe(false);
  });

  it('refuses entries that climb out of the layer or write through a symlink', async () => {
    const dir1 = tempDir('evil');
    mkdirSync(join(dir1, 'x'));
    execFileSync('ln', ['-s', '/tmp', join(dir1, 'link')]);
    writeFileSync(join(dir1, 'file'), 'x');
    // GNU tar with --transform writes "link/escaped" as an entry beneath the symlink.
    const tar = execFileSync('tar', ['-C', dir1, '--transform', 's,^\\./file$,link/escaped-by-strata-test,', '-cf', '-', './link', './file']);
    const { createHash } = await import('node:crypto');
    const evil = { diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`, tar };
    await expect(store.prepare([evil.diffId], layerSource([evil]).source)).rejects.toThrow(/"link\/escaped-by-strata-test": parent "link" is a symlink; refusing to write through it/);
    expect(existsSync('/tmp/escaped-by-strata-test')).toBe(false);
  });

  it('mounts FROM scratch (no layers) on an empty lower dir', async () => {
    const snapshot = await store.prepare([], layerSource([]).source);
    snapshots.push(snapshot);
    writeFileSync(join(snapshot.rootfs, 'hello'), 'hi');
    expect(readFileSync(join(snapshot.upperDir, 'hello'), 'utf8')).toBe('hi');
  });

  it('mounts 60 layers without exceeding the mount option limit', async () => {
    const layers: TestLayer[] = [];
    for (let i = 0; i < 60; i++) layers.push(await ociLayer([file(`layer-${i}`, String(i)), file('top', String(i))]));
    const snapshot = await store.prepare(
      layers.map((layer) => layer.diffId),
      layerSource(layers).source,
    );
    snapshots.push(snapshot);
    expect(readFileSync(join(snapshot.rootfs, 'layer-0'), 'utf8')).toBe('0');
    expect(readFileSync(join(snapshot.rootfs, 'top'), 'utf8')).toBe('59');
    expect(snapshot.lowerDirs).toHaveLength(60);
  });

  it('evicts least recently used layers that no live snapshot uses', async () => {
    const big = (name: string): Promise<TestLayer> => ociLayer([file(name, 'x'.repeat(100_000))]);
    const [old, inUse, recent] = [await big('old'), await big('in-use'), await big('recent')];
    const { source } = layerSource([old, inUse, recent]);
    await (await store.prepare([old.diffId], source)).release();
    const live = await store.prepare([inUse.diffId], source);
    snapshots.push(live);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await (await store.prepare([recent.diffId], source)).release();

    const result = await store.gc(250_000);
    expect(result.evicted).toEqual([old.diffId]);
    expect(await store.has(inUse.diffId)).toBe(true);

    const all = await store.gc(0);
    expect(all.evicted).toEqual([recent.diffId]);
    expect(await store.has(inUse.diffId)).toBe(true);
    await live.release();
    expect((await store.gc(0)).evicted).toEqual([inUse.diffId]);
  });
});

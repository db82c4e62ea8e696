import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { cacheArchiveKey, CacheMounts, cacheName, type CacheArchiveStore, type StepCleanups } from './cache-mounts.js';

/** An archive store in memory, counting uploads. */
function memoryArchives(): CacheArchiveStore & { saved: Map<string, Buffer> } {
  const saved = new Map<string, Buffer>();
  return {
    saved,
    get: async (key) => (saved.has(key) ? Readable.from([saved.get(key)!]) : null),
    put: async (key, body) => {
      const chunks: Buffer[] = [];
      for await (const chunk of body) chunks.push(chunk as Buffer);
      saved.set(key, Buffer.concat(chunks));
    },
  };
}

const cache = (sharing: 'shared' | 'private' | 'locked', id = 'deps') => ({
  type: 'cache' as const,
  target: '/cache',
  id,
  sharing,
  readOnly: false,
  uid: process.getuid!(),
  gid: process.getgid!(),
  mode: 0o755,
});

const finish = async (cleanups: StepCleanups) => {
  for (const cleanup of cleanups.reverse()) await cleanup();
};

describe('CacheMounts', () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'strata-cache-mounts-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('gives concurrent shared steps one directory, and a private step a throwaway one while it is in use', async () => {
    const mounts = new CacheMounts(root, memoryArchives());
    const a: StepCleanups = [];
    const b: StepCleanups = [];
    const c: StepCleanups = [];
    const first = await mounts.mount('t1', cache('shared'), a);
    const second = await mounts.mount('t1', cache('shared'), b);
    const third = await mounts.mount('t1', cache('private'), c);
    expect(first.type === 'bind' && second.type === 'bind' && first.source === second.source).toBe(true);
    expect(third.type === 'bind' && first.type === 'bind' && third.source !== first.source).toBe(true);
    await Promise.all([finish(a), finish(b), finish(c)]);
    // Once nobody uses it, a private step gets the cache itself.
    const later: StepCleanups = [];
    const fourth = await mounts.mount('t1', cache('private'), later);
    expect(fourth.type === 'bind' && first.type === 'bind' && fourth.source === first.source).toBe(true);
    await finish(later);
    await mounts.flush();
  });

  it('keeps tenants apart: the same id is another directory for another tenant', async () => {
    const mounts = new CacheMounts(root, memoryArchives());
    const steps: StepCleanups = [];
    const mine = await mounts.mount('t1', cache('shared'), steps);
    const theirs = await mounts.mount('t2', cache('shared'), steps);
    expect(mine.type === 'bind' && theirs.type === 'bind' && mine.source !== theirs.source).toBe(true);
    await finish(steps);
    await mounts.flush();
  });

  it('keeps one cache per id and uid/gid/mode, as BuildKit: the same id with other options is another, empty cache', async () => {
    const mounts = new CacheMounts(root, memoryArchives());
    const steps: StepCleanups = [];
    const owned = await mounts.mount('t1', { ...cache('shared'), mode: 0o700 }, steps);
    writeFileSync(join(owned.type === 'bind' ? owned.source : '', 'one'), '1');
    const same = await mounts.mount('t1', { ...cache('shared'), mode: 0o700 }, steps);
    const other = await mounts.mount('t1', { ...cache('locked'), mode: 0o755 }, steps);
    const otherMode = await mounts.mount('t1', { ...cache('shared'), mode: 0o750 }, steps);
    const src = (m: typeof owned) => (m.type === 'bind' ? m.source : '');
    expect(readdirSync(src(same))).toEqual(['one']);
    expect([src(other) === src(owned), readdirSync(src(other))]).toEqual([false, []]);
    expect(src(otherMode) === src(owned) || src(otherMode) === src(other)).toBe(false);
    expect(statSync(src(owned)).mode & 0o7777).toBe(0o700);
    await finish(steps);
    await mounts.flush();
  });

  it('names a cache with default options by its id alone (caches made before options counted keep working)', () => {
    expect(cacheName({ id: 'deps', uid: 0, gid: 0, mode: 0o755 })).toBe('deps');
    expect(cacheName({ id: 'deps', uid: 1000, gid: 1000, mode: 0o700 })).not.toBe('deps');
    expect(cacheArchiveKey('t1', { id: 'deps', uid: 0, gid: 0, mode: 0o755 })).not.toBe(cacheArchiveKey('t1', { id: 'deps', uid: 0, gid: 0, mode: 0o700 }));
  });

  it('makes locked steps take turns', async () => {
    const mounts = new CacheMounts(root, memoryArchives());
    const first: StepCleanups = [];
    await mounts.mount('t1', cache('locked'), first);
    let secondMounted = false;
    const second: StepCleanups = [];
    const waiting = mounts.mount('t1', cache('locked'), second).then(() => (secondMounted = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(secondMounted).toBe(false);
    await finish(first);
    await waiting;
    expect(secondMounted).toBe(true);
    await finish(second);
    await mounts.flush();
  });

  it('saves a changed cache to the archive store once, and a worker without it starts from that copy', async () => {
    const archives = memoryArchives();
    const one = new CacheMounts(join(root, 'worker-1'), archives);
    const steps: StepCleanups = [];
    const mounted = await one.mount('t1', cache('shared'), steps);
    writeFileSync(join(mounted.type === 'bind' ? mounted.source : '', 'pkg'), 'v1');
    await finish(steps);
    await one.flush();
    expect([...archives.saved.keys()]).toEqual([cacheArchiveKey('t1', cache('shared'))]);

    // Nothing changed: no second upload.
    const putCalls: string[] = [];
    const put = archives.put;
    archives.put = async (key, body) => {
      putCalls.push(key);
      await put(key, body);
    };
    const again: StepCleanups = [];
    await one.mount('t1', cache('shared'), again);
    await finish(again);
    await one.flush();
    expect(putCalls).toEqual([]);

    const two = new CacheMounts(join(root, 'worker-2'), archives);
    const restored: StepCleanups = [];
    const there = await two.mount('t1', cache('shared'), restored);
    expect(readFileSync(join(there.type === 'bind' ? there.source : '', 'pkg'), 'utf8')).toBe('v1');
    await finish(restored);
    await two.flush();
  });
});

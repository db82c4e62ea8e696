import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { type Digest, type LayerEntry, LayerWriter } from '@strata/oci';
import { MAX_ACCOUNT_FILE_BYTES, resolveOwner, RootfsIndexer } from './rootfs-index.js';

async function layer(entries: LayerEntry[]): Promise<{ bytes: Buffer; digest: Digest; diffId: Digest; written: Awaited<ReturnType<LayerWriter['pack']>['result']>['entries'] }> {
  const packed = new LayerWriter().pack(entries);
  const chunks: Buffer[] = [];
  for await (const c of packed.stream) chunks.push(c as Buffer);
  const r = await packed.result;
  return { bytes: Buffer.concat(chunks), digest: r.digest, diffId: r.diffId, written: r.entries };
}

describe('RootfsIndexer', () => {
  const base: LayerEntry[] = [
    { type: 'directory', path: 'etc', mode: 0o755 },
    { type: 'file', path: 'etc/passwd', content: Buffer.from('root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n') },
    { type: 'file', path: 'etc/group', content: Buffer.from('root:x:0:\napp:x:1000:\n') },
    { type: 'directory', path: 'tmp', mode: 0o1777 },
    { type: 'directory', path: 'opt', mode: 0o755 },
    { type: 'file', path: 'opt/old.txt', content: Buffer.from('old') },
    { type: 'directory', path: 'var', mode: 0o755 },
    { type: 'directory', path: 'var/lib', mode: 0o700, uid: 5 },
  ];
  const upper: LayerEntry[] = [
    { type: 'whiteout', path: 'tmp' },
    { type: 'opaque', path: 'opt' },
    { type: 'directory', path: 'opt', mode: 0o750 },
    { type: 'file', path: 'opt/new.txt', content: Buffer.from('new') },
    { type: 'file', path: 'var/lib', content: Buffer.from('now a file') },
  ];

  it('stacks layers: whiteouts and opaque directories hide what is below, passwd comes from the image', async () => {
    const a = await layer(base);
    const b = await layer(upper);
    const blobs = new Map([[a.digest, a.bytes], [b.digest, b.bytes]]);
    let reads = 0;
    const indexer = new RootfsIndexer(async (d) => {
      reads++;
      return Readable.from([blobs.get(d)!]);
    });
    const one = await indexer.index([a]);
    expect(one.paths.get('tmp')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(one.paths.get('var/lib')).toMatchObject({ mode: 0o700, uid: 5 });
    expect(one.passwd).toContain('app:x:1000');
    const two = await indexer.index([a, b]);
    expect(two.paths.get('tmp')).toBeUndefined();
    expect(two.paths.get('opt')).toMatchObject({ mode: 0o750 });
    expect(two.paths.get('opt/old.txt')).toBeUndefined();
    expect(two.paths.get('opt/new.txt')).toMatchObject({ type: 'file' });
    expect(two.paths.get('var/lib')).toMatchObject({ type: 'file' });
    expect(two.passwd).toContain('app:x:1000');
    expect(two.group).toContain('app:x:1000');
    // Each layer is read once, however many images stack it.
    await indexer.index([a, b]);
    expect(reads).toBe(2);
  });

  it('does not hold an /etc/passwd larger than it reads: ids still resolve, a name fails saying why', async () => {
    const a = await layer(base);
    const huge = await layer([{ type: 'directory', path: 'etc', mode: 0o755 }, { type: 'file', path: 'etc/passwd', content: Buffer.alloc(MAX_ACCOUNT_FILE_BYTES + 1, 0x0a) }]);
    const blobs = new Map([[a.digest, a.bytes], [huge.digest, huge.bytes]]);
    const index = await new RootfsIndexer(async (d) => Readable.from([blobs.get(d)!])).index([a, huge]);
    expect(index.paths.get('etc/passwd')).toMatchObject({ type: 'file', size: MAX_ACCOUNT_FILE_BYTES + 1 });
    expect(resolveOwner('1000:1000', index)).toEqual({ uid: 1000, gid: 1000 });
    expect(resolveOwner('1000:app', index)).toEqual({ uid: 1000, gid: 1000 });
    expect(() => resolveOwner('app', index)).toThrow(`the image's /etc/passwd is ${MAX_ACCOUNT_FILE_BYTES + 1} bytes, more than the ${MAX_ACCOUNT_FILE_BYTES} bytes Strata reads to look up a name: use numeric ids`);
  });

  it('indexes a layer it was told about from the written headers, exactly as reading it back would', async () => {
    const a = await layer(base);
    const b = await layer(upper);
    const blobs = new Map([[a.digest, a.bytes], [b.digest, b.bytes]]);
    const open = async (d: Digest) => Readable.from([blobs.get(d)!]);
    const read = new RootfsIndexer(open);
    const seeded = new RootfsIndexer(async (d) => {
      if (d === b.digest) throw new Error('a seeded layer was read back');
      return open(d);
    });
    seeded.seed(b.digest, b.written);
    const x = await read.index([a, b]);
    const y = await seeded.index([a, b]);
    // A file's inode is an identity within one index (two indexers number files each their own way).
    const same = (e: ReturnType<typeof x.paths.get>) => (e === undefined ? e : { ...e, inode: 'inode' in e ? typeof e.inode : 'none' });
    for (const p of ['etc', 'tmp', 'opt', 'opt/old.txt', 'opt/new.txt', 'var', 'var/lib', 'nothing']) expect([p, same(y.paths.get(p))]).toEqual([p, same(x.paths.get(p))]);
    expect(y.passwd).toBe(x.passwd);
  });

  it('lists, resolves and hashes through the stack: what COPY --from walks without unpacking', async () => {
    const lower = await layer([
      { type: 'directory', path: 'out', mode: 0o755 },
      { type: 'file', path: 'out/keep', content: Buffer.from('keep') },
      { type: 'file', path: 'out/gone', content: Buffer.from('gone') },
      { type: 'file', path: 'deep/implied/file', content: Buffer.from('x') },
    ]);
    const top = await layer([
      { type: 'whiteout', path: 'out/gone' },
      { type: 'file', path: 'out/new', content: Buffer.from('new') },
      { type: 'hardlink', path: 'out/hard', target: 'out/new' },
      { type: 'symlink', path: 'out/up', target: '../deep' },
    ]);
    const blobs = new Map([[lower.digest, lower.bytes], [top.digest, top.bytes]]);
    const indexer = new RootfsIndexer(async (d) => Readable.from([blobs.get(d)!]));
    const ix = await indexer.index([lower, top]);
    expect(ix.list('out')).toEqual(['hard', 'keep', 'new', 'up']);
    expect(ix.list('')).toEqual(['deep', 'out']);
    expect(ix.lookup('deep/implied')).toMatchObject({ type: 'directory', layer: lower.digest });
    expect(ix.lookup('out/keep')).toMatchObject({ layer: lower.digest, size: 4, sha256: createHash('sha256').update('keep').digest('hex') });
    expect(ix.lookup('out/hard')).toMatchObject({ type: 'file', layer: top.digest, sha256: createHash('sha256').update('new').digest('hex') });
    expect(ix.resolve('out/up/implied/file', false)).toBe('deep/implied/file');
    expect(ix.resolve('out/up', false)).toBe('out/up');
    expect(ix.resolve('../../out/up', true)).toBe('deep');
  });
});

// The comparer the differential suite rests on: layers applied in order with whiteouts and opaque
// directories, hard-link groups, and a difference list that names both sides. Pure: no services.
import { encodeTarHeader, type TarHeaderFields, tarEndOfArchive, tarPadding } from '@strata/oci';
import { compareImages, describeTree, type ImageView, treeOfLayers } from './support/image-tree.js';

type Entry = Partial<TarHeaderFields> & { name: string; content?: string };

function layer(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const content = Buffer.from(e.content ?? '');
    const type = e.type ?? (e.name.endsWith('/') ? 'directory' : 'file');
    parts.push(encodeTarHeader({ mode: type === 'directory' ? 0o755 : 0o644, uid: 0, gid: 0, mtime: 1, ...e, type, size: type === 'file' ? content.length : 0 }));
    if (type === 'file') parts.push(content, tarPadding(content.length));
  }
  parts.push(tarEndOfArchive());
  return Buffer.concat(parts);
}

let ids = 0;
const tree = (...layers: Buffer[]) => treeOfLayers(layers.map((bytes) => ({ diffId: `sha256:test-${ids++}`, bytes: () => bytes })));

describe('differential comparer: an image as the tree its layers make', () => {
  it('applies whiteouts and opaque directories to lower layers only', async () => {
    const base = layer([{ name: 'etc/' }, { name: 'etc/a', content: 'a' }, { name: 'etc/b', content: 'b' }, { name: 'home/' }, { name: 'home/u/' }, { name: 'home/u/f', content: 'f' }]);
    const top = layer([
      { name: 'etc/.wh.a' },
      { name: 'home/', mode: 0o700 },
      { name: 'home/.wh..wh..opq' },
      { name: 'home/new', content: 'n' },
    ]);
    const described = describeTree(await tree(base, top));
    expect([...described.keys()].sort()).toEqual(['/etc', '/etc/b', '/home', '/home/new']);
    expect(described.get('/home')).toBe('directory 0700 0:0');
  });

  it('keeps hard-link groups, special modes, owners and link targets', async () => {
    const t = await tree(
      layer([
        { name: 'bin/' },
        { name: 'bin/tool', content: 'x', mode: 0o4755, uid: 1000, gid: 1000 },
        { name: 'bin/alias', type: 'hardlink', linkname: 'bin/tool' },
        { name: 'bin/link', type: 'symlink', linkname: 'tool', mode: 0o777 },
        { name: 'run/', mode: 0o1777 },
      ]),
    );
    const d = describeTree(t);
    expect(d.get('/bin/tool')).toMatch(/^file 4755 1000:1000 size=1 sha256=2d711642b726 hardlinked=\["\/bin\/alias"\]$/);
    expect(d.get('/bin/link')).toBe('symlink 0777 0:0 -> "tool"');
    expect(d.get('/run')).toBe('directory 1777 0:0');
  });

  it('lists each differing path and config field with both sides, ignoring timestamps and zero values', async () => {
    const strata: ImageView = {
      tree: await tree(layer([{ name: 'a', content: 'same', mtime: 5 }, { name: 'b', content: 'one' }])),
      config: { Env: ['A=1'], WorkingDir: '', Labels: {} },
    };
    const docker: ImageView = {
      tree: await tree(layer([{ name: 'a', content: 'same', mtime: 99 }, { name: 'b', content: 'one', uid: 7 }, { name: 'c/' }])),
      config: { Env: ['A=1', 'B=2'] },
    };
    expect(compareImages(strata, docker)).toEqual([
      '/b: strata file 0644 0:0 size=3 sha256=7692c3ad3540 | docker file 0644 7:0 size=3 sha256=7692c3ad3540',
      '/c: strata (absent) | docker directory 0755 0:0',
      'config.Env: strata ["A=1"] | docker ["A=1","B=2"]',
    ]);
    expect(compareImages(strata, strata)).toEqual([]);
  });
});

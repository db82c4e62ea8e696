import { createHash } from 'node:crypto';
import { ContextManifestError, manifestTar, parseContextManifest } from './context-manifest.js';
import { readTarEntries } from './tar-reader.js';
import { indexManifest, indexTar, PackReader, type TarIndex, type TarIndexEntry } from './tar-index.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const limits = { maxEntries: 100, maxBytes: 1000 };
const sha = (s: string) => `sha256:${createHash('sha256').update(s).digest('hex')}`;
const file = (path: string, content: string, extra: Record<string, unknown> = {}) => ({ path, type: 'file', mode: 0o644, mtime: 5, size: content.length, digest: sha(content), ...extra });

describe('parseContextManifest', () => {
  it('sorts entries parents first and gives equal manifests equal digests whatever the order', () => {
    const entries = [file('b/c.txt', 'c'), { path: 'b', type: 'dir', mode: 0o755, mtime: 1 }, { path: '.', type: 'dir', mode: 0o700, mtime: 2 }, file('a', 'a'), { path: 'b/l', type: 'symlink', mtime: 3, target: 'c.txt' }];
    const m1 = parseContextManifest({ version: 1, entries }, limits);
    const m2 = parseContextManifest({ version: 1, entries: [...entries].reverse() }, limits);
    expect(m1.entries.map((e) => e.path)).toEqual(['.', 'a', 'b', 'b/c.txt', 'b/l']);
    expect(m1.digest).toBe(m2.digest);
    expect(m1.files).toBe(2);
    expect(m1.bytes).toBe(2);
    expect([...m1.contents.keys()].sort()).toEqual([sha('a'), sha('c')].sort());
  });

  it('stores a content once however many paths hold it', () => {
    const m = parseContextManifest({ version: 1, entries: [file('x', 'same'), file('y', 'same')] }, limits);
    expect(m.contents.size).toBe(1);
    expect(m.bytes).toBe(8);
  });

  it.each([
    [{ version: 1, entries: [file('../x', 'x')] }, /entry 0 \("..\/x"\): the path escapes the context/],
    [{ version: 1, entries: [file('a/../../x', 'x')] }, /escapes the context/],
    [{ version: 1, entries: [file('/abs', 'x')] }, /the path is absolute/],
    [{ version: 1, entries: [file('a//b', 'x')] }, /not clean/],
    [{ version: 1, entries: [file('a\0b', 'x')] }, /NUL byte/],
    [{ version: 1, entries: [file('a', 'x', { digest: 'sha256:ABC' })] }, /"digest" must be/],
    [{ version: 1, entries: [file('a', 'x', { size: -1 })] }, /"size" must be an integer/],
    [{ version: 1, entries: [file('a', 'x', { mode: 0o10000 })] }, /"mode" must be an integer from 0 to 4095/],
    [{ version: 1, entries: [file('a', 'x'), file('a', 'y')] }, /appears more than once/],
    [{ version: 1, entries: [file('a', 'x'), file('a/b', 'y')] }, /its parent "a" is a file, not a directory/],
    [{ version: 1, entries: [{ path: 'l', type: 'symlink', target: 'd' }, file('l/b', 'y')] }, /its parent "l" is a symlink/],
    [{ version: 1, entries: [{ path: 'l', type: 'symlink', target: '/etc' }] }, /symlink target "\/etc" is absolute/],
    [{ version: 1, entries: [{ path: 'd/l', type: 'symlink', target: '../../etc' }] }, /points outside the context/],
    [{ version: 1, entries: [{ path: '.', type: 'file', size: 0, digest: sha('') }] }, /the context root must be a directory/],
    [{ version: 1, entries: [file('a', 'x', { size: 2 }), file('b', 'x')] }, /is given with size 1 here and 2 at "a"/],
    [{ version: 1, entries: Array.from({ length: 101 }, (_, i) => file(`f${i}`, `${i}`)) }, /101 entries, more than the limit of 100/],
    [{ version: 1, entries: [file('a', 'x', { size: 1001 })] }, /more than the context limit of 1000 bytes/],
    [{ version: 2, entries: [] }, /unsupported manifest version 2/],
    [[], /must be a JSON object/],
  ])('refuses %j', (json, message) => {
    expect(() => parseContextManifest(json, limits)).toThrow(ContextManifestError);
    expect(() => parseContextManifest(json, limits)).toThrow(message);
  });
});

describe('manifestTar', () => {
  it('writes the tree as a tar, with each content read by digest', async () => {
    const m = parseContextManifest(
      { version: 1, entries: [{ path: '.', type: 'dir', mode: 0o750, mtime: 9 }, { path: 'd', type: 'dir', mode: 0o700, mtime: 8 }, file('d/f', 'hello', { mode: 0o600, mtime: 7 }), file('e', ''), { path: 'l', type: 'symlink', mtime: 6, target: 'd/f' }] },
      limits,
    );
    const reads: string[] = [];
    const tar = manifestTar(m, async (digest) => {
      reads.push(digest);
      return Buffer.from('hello');
    });
    const seen: Array<[string, string, number, number, string]> = [];
    for await (const { header, body } of readTarEntries(tar)) {
      let text = '';
      for await (const c of body) text += String(c);
      seen.push([header.name, header.type, header.mode, header.mtime, header.type === 'symlink' ? header.linkname : text]);
    }
    expect(seen).toEqual([
      ['.', 'directory', 0o750, 9, ''],
      ['d', 'directory', 0o700, 8, ''],
      ['d/f', 'file', 0o600, 7, 'hello'],
      ['e', 'file', 0o644, 5, ''],
      ['l', 'symlink', 0o777, 6, 'd/f'],
    ]);
    expect(reads).toEqual([sha('hello')]);
  });

  it('fails when a stored content is not the size the manifest says', async () => {
    const m = parseContextManifest({ version: 1, entries: [file('f', 'hello')] }, limits);
    const tar = manifestTar(m, async () => Buffer.from('hell'));
    await expect(async () => {
      for await (const _ of tar) void _;
    }).rejects.toThrow(/is 4 bytes, not 5/);
  });
});

describe('indexManifest', () => {
  const body = (s: string) => ({ s, digest: `sha256:${createHash('sha256').update(s).digest('hex')}` });
  const a = body('alpha\n');
  const b = body('beta beta\n');
  const limits = { maxEntries: 100, maxBytes: 1 << 20 };
  const manifest = parseContextManifest(
    {
      version: 1,
      entries: [
        { path: '.', type: 'dir', mode: 0o750, mtime: 1_700_000_001 },
        { path: 'Dockerfile', type: 'file', mode: 0o644, mtime: 1_700_000_002, size: a.s.length, digest: a.digest },
        { path: 'src/deep/x.sh', type: 'file', mode: 0o755, mtime: 1_700_000_003, size: b.s.length, digest: b.digest },
        { path: 'src/copy', type: 'file', mode: 0o600, mtime: 1_700_000_004, size: a.s.length, digest: a.digest },
        { path: 'src/empty', type: 'file', mode: 0o644, mtime: 5, size: 0, digest: body('').digest },
        { path: 'src/link', type: 'symlink', mtime: 6, target: 'deep/x.sh' },
        { path: 'src/deep', type: 'dir', mode: 0o700, mtime: 7 },
      ],
    },
    limits,
  );

  it('gives the index indexTar gives of the same manifest as a tar, pointing into the packs instead of a copy', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'im-'));
    try {
      const contents = new Map([a, b].map((x) => [x.digest, Buffer.from(x.s)]));
      const { index: fromTar } = await indexTar(manifestTar(manifest, async (d) => contents.get(d)!), join(dir, 'pack'), limits);
      // Two packs: a in pack 0 at 3, b in pack 1 at 10.
      const fromManifest = await indexManifest(manifest, (d) => (d === a.digest ? { pack: 0, offset: 3 } : { pack: 1, offset: 10 }));
      const strip = (ix: TarIndex) => new Map([...ix].map(([k, e]) => [k, e.type === 'file' ? { ...e, offset: 0, pack: 0 } : e]));
      expect(strip(fromManifest)).toEqual(strip(fromTar));
      expect(fromManifest.get('')).toEqual({ type: 'directory', mode: 0o750, mtime: 1_700_000_001 });
      expect(fromManifest.get('src/deep/x.sh')).toMatchObject({ pack: 1, offset: 10, sha256: b.digest.slice(7) });
      expect(fromManifest.get('Dockerfile')).toMatchObject({ offset: 3 });
      expect(fromManifest.get('Dockerfile')).not.toHaveProperty('pack');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a symlink chain that escapes through another link, as the tar indexer does', async () => {
    const m = parseContextManifest(
      {
        version: 1,
        entries: [
          // Lexically "d/up/.." is d; through the link d/up (the root) it is above the root.
          { path: 'a', type: 'symlink', target: 'd/up/..' },
          { path: 'd/up', type: 'symlink', target: '..' },
        ],
      },
      limits,
    );
    await expect(indexManifest(m, () => ({ pack: 0, offset: 0 }))).rejects.toThrow(/"a".*resolves outside/);
  });

  it('reads contents through a PackReader over several packs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'im-'));
    try {
      writeFileSync(join(dir, 'p0'), `xxx${a.s}`);
      writeFileSync(join(dir, 'p1'), `0123456789${b.s}`);
      const index = await indexManifest(manifest, (d) => (d === a.digest ? { pack: 0, offset: 3 } : { pack: 1, offset: 10 }));
      const reader = PackReader.of([await open(join(dir, 'p0'), 'r'), await open(join(dir, 'p1'), 'r')]);
      const file = (p: string) => index.get(p) as Extract<TarIndexEntry, { type: 'file' }>;
      expect((await reader.read(file('src/copy'))).toString()).toBe(a.s);
      expect((await reader.read(file('src/deep/x.sh'))).toString()).toBe(b.s);
      expect((await reader.read(file('src/empty'))).length).toBe(0);
      await reader.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

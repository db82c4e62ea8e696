import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { LayerWriter, type LayerEntry } from '@strata/oci';
import { encodeTarHeader, tarEndOfArchive, tarPadding, type TarHeaderFields } from '@strata/oci';
import { indexTar, materializeIndex, TarExtractionError } from '@strata/oci';
import { readTarEntries } from '@strata/oci';
import { diffUpperDir } from './diff.js';
import { extractTar } from './extract.js';

/** Builds a tar by hand, so tests can express archives the LayerWriter would refuse to write. */
function rawTar(entries: (Partial<TarHeaderFields> & { name: string; body?: Buffer })[]): Buffer {
  const blocks: Buffer[] = [];
  for (const { body = Buffer.alloc(0), ...fields } of entries) {
    blocks.push(encodeTarHeader({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, ...fields, size: fields.type === undefined || fields.type === 'file' ? body.length : 0 }));
    if (body.length > 0) blocks.push(body, tarPadding(body.length));
  }
  blocks.push(tarEndOfArchive());
  return Buffer.concat(blocks);
}

async function layerBytes(entries: LayerEntry[]): Promise<Buffer> {
  const packed = new LayerWriter().pack(entries);
  const chunks: Buffer[] = [];
  for await (const chunk of packed.stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

let sandbox: string;
let dest: string;
beforeEach(() => {
  sandbox = mkdtempSync(join(tmpdir(), 'strata-extract-'));
  dest = join(sandbox, 'dest');
  mkdirSync(dest);
});
afterEach(() => {
  rmSync(sandbox, { recursive: true, force: true });
});

function expectNothingOutsideDest(): void {
  expect(readdirSync(sandbox)).toEqual(['dest']);
}

describe('extractTar, tree form (untrusted archives)', () => {
  it('round-trips a LayerWriter layer with modes, mtimes, symlinks and hard links', async () => {
    const gz = await layerBytes([
      { type: 'directory', path: 'bin', mode: 0o750, mtime: 1_600_000_000 },
      { type: 'file', path: 'bin/tool', mode: 0o755, mtime: 1_600_000_100, content: Buffer.from('tool') },
      { type: 'symlink', path: 'bin/alias', target: 'tool' },
      { type: 'hardlink', path: 'bin/tool2', target: 'bin/tool' },
      { type: 'file', path: 'readme', mode: 0o600, mtime: 1_500_000_000, content: Buffer.from('hi') },
    ]);
    const summary = await extractTar(Readable.from([gz]), dest);
    expect(summary).toMatchObject({ entries: 5, bytes: 6 });
    expect(readFileSync(join(dest, 'bin/tool'), 'utf8')).toBe('tool');
    expect(statSync(join(dest, 'bin/tool')).mode & 0o7777).toBe(0o755);
    expect(statSync(join(dest, 'bin/tool')).mtimeMs).toBe(1_600_000_100_000);
    expect(statSync(join(dest, 'bin')).mode & 0o7777).toBe(0o750);
    expect(statSync(join(dest, 'bin')).mtimeMs).toBe(1_600_000_000_000);
    expect(statSync(join(dest, 'readme')).mode & 0o7777).toBe(0o600);
    expect(readlinkSync(join(dest, 'bin/alias'))).toBe('tool');
    expect(statSync(join(dest, 'bin/tool2')).ino).toBe(statSync(join(dest, 'bin/tool')).ino);
  });

  it('writes small files (buffered) and large ones (streamed) alike', async () => {
    const big = Buffer.alloc(600 * 1024, 7);
    const gz = await layerBytes([
      { type: 'file', path: 'a/small.txt', content: Buffer.from('small'), mode: 0o640 },
      { type: 'file', path: 'a/big.bin', content: big, mode: 0o600 },
    ]);
    const summary = await extractTar(Readable.from([gz]), dest);
    expect(summary).toMatchObject({ entries: 2, bytes: big.length + 5 });
    expect(readFileSync(join(dest, 'a/small.txt'), 'utf8')).toBe('small');
    expect(readFileSync(join(dest, 'a/big.bin')).equals(big)).toBe(true);
    expect([statSync(join(dest, 'a/small.txt')).mode & 0o7777, statSync(join(dest, 'a/big.bin')).mode & 0o7777]).toEqual([0o640, 0o600]);
  });

  it('accepts an uncompressed tar (detected by the absence of gzip magic)', async () => {
    await extractTar(Readable.from([rawTar([{ name: 'a/b.txt', body: Buffer.from('plain') }])]), dest);
    expect(readFileSync(join(dest, 'a/b.txt'), 'utf8')).toBe('plain');
  });

  const refusals: [string, Buffer, RegExp][] = [
    ['an absolute path', rawTar([{ name: '/etc/evil', body: Buffer.from('x') }]), /"\/etc\/evil": path "\/etc\/evil" is absolute/],
    ['a ".." path escaping the destination', rawTar([{ name: 'a/../../evil', body: Buffer.from('x') }]), /"a\/..\/..\/evil": .*escapes the destination/],
    ['a symlink pointing outside', rawTar([{ name: 'up', type: 'symlink', linkname: '../../etc' }]), /"up": symlink target "..\/..\/etc" points outside/],
    ['an absolute symlink', rawTar([{ name: 'abs', type: 'symlink', linkname: '/etc/passwd' }]), /"abs": symlink target "\/etc\/passwd" is absolute/],
    [
      'a write through a symlink inside the archive',
      rawTar([
        { name: 'real', type: 'directory', mode: 0o755 },
        { name: 'alias', type: 'symlink', linkname: 'real' },
        { name: 'alias/file', body: Buffer.from('x') },
      ]),
      /"alias\/file": parent "alias" is a symlink/,
    ],
    ['a hard link to a file outside', rawTar([{ name: 'h', type: 'hardlink', linkname: '../../etc/passwd' }]), /"h": path "..\/..\/etc\/passwd" escapes/],
    [
      'a hard link to a symlink',
      rawTar([
        { name: 's', type: 'symlink', linkname: 'x' },
        { name: 'h', type: 'hardlink', linkname: 's' },
      ]),
      /"h": hard link target "s" is not a regular file/,
    ],
    ['a character device', rawTar([{ name: 'null', type: 'char-device', devmajor: 1, devminor: 3 }]), /"null": char-device entries are not allowed/],
    ['a block device', rawTar([{ name: 'sda', type: 'block-device', devmajor: 8, devminor: 0 }]), /"sda": block-device entries are not allowed/],
    ['a fifo', rawTar([{ name: 'pipe', type: 'fifo' }]), /"pipe": fifo entries are not allowed/],
    [
      'a symlink that escapes only once a later entry turns its path into a link',
      rawTar([
        { name: 'l', type: 'symlink', linkname: 'sub/..' },
        { name: 'sub', type: 'symlink', linkname: '.' },
      ]),
      /"l": symlink target "sub\/.." resolves outside/,
    ],
  ];

  it.each(refusals)('refuses %s and writes nothing outside the destination', async (_label, archive, message) => {
    const attempt = extractTar(Readable.from([gzipSync(archive)]), dest);
    await expect(attempt).rejects.toThrow(TarExtractionError);
    await expect(extractTar(Readable.from([archive]), mkdtempSync(join(dest, 'again-')))).rejects.toThrow(message);
    expectNothingOutsideDest();
  });

  it('refuses a gzip bomb whose entry declares more than the byte limit, naming the entry', async () => {
    const bomb = gzipSync(rawTar([{ name: 'zeros.bin', body: Buffer.alloc(8 * 1024 * 1024) }]));
    expect(bomb.length).toBeLessThan(64 * 1024);
    await expect(extractTar(Readable.from([bomb]), dest, { maxBytes: 1024 * 1024 })).rejects.toThrow(/"zeros.bin": archive content exceeds 1048576 bytes/);
    expect(existsSync(join(dest, 'zeros.bin'))).toBe(false);
  });

  it('refuses a gzip stream that inflates past the limit even without entries', async () => {
    const bomb = gzipSync(Buffer.alloc(16 * 1024 * 1024));
    await expect(extractTar(Readable.from([bomb]), dest, { maxBytes: 1024 * 1024, maxEntries: 10 })).rejects.toThrow(/archive expands to more than/);
  });

  it('refuses an archive with too many entries', async () => {
    const many = rawTar(Array.from({ length: 11 }, (_, i) => ({ name: `f${i}`, body: Buffer.from('x') })));
    await expect(extractTar(Readable.from([many]), dest, { maxEntries: 10 })).rejects.toThrow(/"f10": archive has more than 10 entries/);
  });

  it('refuses bytes that are neither tar nor gzip', async () => {
    await expect(extractTar(Readable.from([Buffer.from('definitely not a tarball'.repeat(40))]), dest)).rejects.toThrow();
  });
});

describe('extractTar and indexTar agree', () => {
  const archive = () =>
    rawTar([
      { name: './', type: 'directory', mode: 0o750, mtime: 1_600_000_000 },
      { name: 'src/a.txt', body: Buffer.from('alpha'), mode: 0o640, mtime: 1_600_000_001 },
      { name: 'src/big.bin', body: Buffer.alloc(300 * 1024, 7), mtime: 1_600_000_002 },
      { name: 'bin', type: 'directory', mode: 0o700, mtime: 1_600_000_003 },
      { name: 'bin/run', body: Buffer.from('#!/bin/sh\n'), mode: 0o755 },
      { name: 'link', type: 'symlink', linkname: 'src/a.txt' },
      { name: 'dirlink', type: 'symlink', linkname: 'src' },
      { name: 'hard', type: 'hardlink', linkname: 'src/a.txt' },
    ]);

  it('materializes the same tree extractTar writes', async () => {
    const pack = join(sandbox, 'pack');
    const { index } = await indexTar(Readable.from([archive()]), pack);
    const made = join(sandbox, 'made');
    await materializeIndex(index, pack, made);
    await extractTar(Readable.from([archive()]), dest);
    for (const rel of ['src', 'src/a.txt', 'src/big.bin', 'bin', 'bin/run', 'hard']) {
      const x = statSync(join(made, rel));
      const y = statSync(join(dest, rel));
      expect([rel, x.mode, x.size]).toEqual([rel, y.mode, y.size]);
      if (rel !== 'src') expect([rel, Math.floor(x.mtimeMs / 1000)]).toEqual([rel, Math.floor(y.mtimeMs / 1000)]);
    }
    expect(readlinkSync(join(made, 'link'))).toBe('src/a.txt');
    expect(readFileSync(join(made, 'bin/run'), 'utf8')).toBe('#!/bin/sh\n');
  });

});

describe('extractTar, overlay-layer form (image layers)', () => {
  it('keeps absolute and outward symlinks as written, links any non-directory, makes fifos, and gives the diff ID', async () => {
    const tar = rawTar([
      { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC' },
      { name: 'up', type: 'symlink', linkname: '../../..' },
      { name: 'alias', type: 'hardlink', linkname: 'up' },
      { name: 'run/pipe', type: 'fifo', mode: 0o640 },
      { name: '/abs/file', body: Buffer.from('x') },
    ]);
    const summary = await extractTar(Readable.from([gzipSync(tar)]), dest, { form: 'overlay-layer' });
    expect(summary.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    expect(readlinkSync(join(dest, 'etc/localtime'))).toBe('/usr/share/zoneinfo/UTC');
    expect(lstatSync(join(dest, 'alias')).ino).toBe(lstatSync(join(dest, 'up')).ino);
    expect(lstatSync(join(dest, 'run/pipe')).isFIFO()).toBe(true);
    expect(lstatSync(join(dest, 'run/pipe')).mode & 0o7777).toBe(0o640);
    expect(readFileSync(join(dest, 'abs/file'), 'utf8')).toBe('x');
    expectNothingOutsideDest();
  });

  it('lets a later entry replace an earlier one, a directory included, and still never writes through a symlink', async () => {
    const replaced = rawTar([
      { name: 'd', type: 'directory', mode: 0o755 },
      { name: 'd/child', body: Buffer.from('old') },
      { name: 'd', body: Buffer.from('now a file') },
    ]);
    await extractTar(Readable.from([replaced]), dest, { form: 'overlay-layer' });
    expect(readFileSync(join(dest, 'd'), 'utf8')).toBe('now a file');
    const through = rawTar([
      { name: 'alias', type: 'symlink', linkname: '/etc' },
      { name: 'alias/owned', body: Buffer.from('x') },
    ]);
    await expect(extractTar(Readable.from([through]), mkdtempSync(join(dest, 'again-')), { form: 'overlay-layer' })).rejects.toThrow(/"alias\/owned": parent "alias" is a symlink/);
    expectNothingOutsideDest();
  });
});

describe('a layer from the store unpacks byte for byte', () => {
  it('keeps a name, a link target and an xattr value that are not UTF-8 through store, unpack and a new diff', async () => {
    const bad = Buffer.from([0x66, 0xff, 0xfe, 0x80, 0x2e, 0x62, 0x69, 0x6e]); // "f\xff\xfe\x80.bin"
    const dir = Buffer.concat([Buffer.from('d-'), Buffer.from([0xe9])]); // latin1 "d-é", not UTF-8
    const value = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0xff, 0x00, 0x7f, 0xc3]);
    const written: LayerEntry[] = [
      { type: 'directory', path: 'd-?', pathBytes: dir, mode: 0o750, mtime: 1_600_000_000 },
      { type: 'file', path: 'd-?/f.bin', pathBytes: Buffer.concat([dir, Buffer.from('/'), bad]), content: Buffer.from('payload'), mode: 0o640, mtime: 1_600_000_001, xattrs: { 'user.bin': value } },
      { type: 'symlink', path: 'link', target: '?', targetBytes: Buffer.concat([dir, Buffer.from('/'), bad]), mtime: 1_600_000_002 },
      { type: 'file', path: 'ünïcødé.txt', content: Buffer.from('u'), mtime: 1_600_000_003, xattrs: { 'user.text': 'plain' } },
    ];
    const blob = await layerBytes(written);
    // The reader gives the exact bytes.
    const headers = [];
    for await (const { header } of readTarEntries(Readable.from([blob]))) headers.push(header);
    const file = headers.find((h) => h.type === 'file' && h.nameBytes)!;
    expect(file.nameBytes!.equals(Buffer.concat([dir, Buffer.from('/'), bad]))).toBe(true);
    expect(file.xattrBytes['user.bin']!.equals(value)).toBe(true);
    expect(headers.find((h) => h.type === 'symlink')!.linknameBytes!.equals(Buffer.concat([dir, Buffer.from('/'), bad]))).toBe(true);

    await extractTar(Readable.from([blob]), dest, { form: 'overlay-layer' });
    const names = readdirSync(dest, { encoding: 'buffer' }).map((n) => n.toString('hex')).sort();
    expect(names).toEqual([dir, Buffer.from('link'), Buffer.from('ünïcødé.txt')].map((n) => n.toString('hex')).sort());
    expect(readdirSync(Buffer.concat([Buffer.from(`${dest}/`), dir]), { encoding: 'buffer' }).map((n) => n.toString('hex'))).toEqual([bad.toString('hex')]);

    // Diffed again (as a RUN's upper dir is), the entries are the ones written, byte for byte.
    const again = await diffUpperDir(dest);
    const shape = (e: LayerEntry) => ({
      type: e.type,
      path: (e.pathBytes ?? Buffer.from(e.path)).toString('hex'),
      mode: e.mode ?? (e.type === 'symlink' ? 0o777 : 0o644),
      xattrs: Object.fromEntries(Object.entries(e.xattrs ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('hex')])),
      ...(e.type === 'symlink' ? { target: (e.targetBytes ?? Buffer.from(e.target)).toString('hex') } : {}),
      ...(e.type === 'file' && Buffer.isBuffer(e.content) ? { content: e.content.toString('hex') } : {}),
    });
    const read = again.map((e) => (e.type === 'file' ? { ...e, content: readFileSync(Buffer.concat([Buffer.from(`${dest}/`), e.pathBytes ?? Buffer.from(e.path)])) } : e));
    expect(read.map(shape)).toEqual(written.map(shape));
    expect(Math.floor(lstatSync(Buffer.concat([Buffer.from(`${dest}/`), dir])).mtimeMs / 1000)).toBe(1_600_000_000);
  });
});

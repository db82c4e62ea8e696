import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { LayerWriter, type LayerEntry } from './layer-writer.js';
import { encodeTarHeader, tarEndOfArchive, tarPadding, type TarHeaderFields } from './tar-format.js';
import { parseWhiteout } from './whiteout.js';
import { readTarEntries, TarExtractionError } from './tar-reader.js';
import { indexTar, PackReader, resolveInIndex } from './tar-index.js';

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
beforeEach(() => {
  sandbox = mkdtempSync(join(tmpdir(), 'strata-tar-index-'));
});
afterEach(() => {
  rmSync(sandbox, { recursive: true, force: true });
});


describe('indexTar refusals', () => {
  const refusals: [string, Buffer, RegExp][] = [
    ['an absolute path', rawTar([{ name: '/etc/evil', body: Buffer.from('x') }]), /"\/etc\/evil": path "\/etc\/evil" is absolute/],
    ['a ".." path escaping the destination', rawTar([{ name: 'a/../../evil', body: Buffer.from('x') }]), /"a\/..\/..\/evil": .*escapes the destination/],
    ['a symlink pointing outside', rawTar([{ name: 'up', type: 'symlink', linkname: '../../etc' }]), /"up": symlink target "..\/..\/etc" points outside/],
    [
      'a relative symlink climbing out through an absolute one',
      rawTar([
        { name: 'etc', type: 'symlink', linkname: '/etc' },
        { name: 'up', type: 'symlink', linkname: 'etc/../..' },
      ]),
      /"up": symlink target "etc\/..\/.." points outside/,
    ],
    [
      'a write through an absolute symlink',
      rawTar([
        { name: 'etc', type: 'symlink', linkname: '/etc' },
        { name: 'etc/owned', body: Buffer.from('x') },
      ]),
      /"etc\/owned": parent "etc" is a symlink/,
    ],
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

  it.each(refusals)('refuses %s, naming the entry as extractTar does', async (_label, archive, message) => {
    await expect(indexTar(Readable.from([archive]), join(sandbox, 'pack'))).rejects.toThrow(message);
    await expect(indexTar(Readable.from([gzipSync(archive)]), join(sandbox, 'pack2'))).rejects.toThrow(TarExtractionError);
  });

});

describe('indexTar', () => {
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

  it('indexes paths, modes, mtimes, links and hashes, with contents readable from the pack', async () => {
    const pack = join(sandbox, 'pack');
    const { index, entries } = await indexTar(Readable.from([gzipSync(archive())]), pack);
    expect(entries).toBe(8);
    expect(index.get('')).toEqual({ type: 'directory', mode: 0o750, mtime: 1_600_000_000 });
    // src was never listed: it exists as a plain 0755 directory.
    expect(index.get('src')).toEqual({ type: 'directory', mode: 0o755, mtime: 0 });
    const a = index.get('src/a.txt');
    expect(a).toMatchObject({ type: 'file', mode: 0o640, mtime: 1_600_000_001, size: 5, sha256: createHash('sha256').update('alpha').digest('hex') });
    expect(index.get('hard')).toEqual(a);
    expect(index.get('link')).toMatchObject({ type: 'symlink', target: 'src/a.txt' });
    const reader = await PackReader.open(pack);
    try {
      expect((await reader.read(a as { offset: number; size: number })).toString()).toBe('alpha');
      const big = index.get('src/big.bin') as { offset: number; size: number };
      const chunks: Buffer[] = [];
      for await (const c of reader.stream(big)) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(Buffer.alloc(300 * 1024, 7))).toBe(true);
    } finally {
      await reader.close();
    }
  });

  it('resolves paths through symlinks inside the tree, never above its root', async () => {
    const { index } = await indexTar(Readable.from([archive()]), join(sandbox, 'pack'));
    expect(resolveInIndex(index, 'dirlink/a.txt', true)).toBe('src/a.txt');
    expect(resolveInIndex(index, 'link', false)).toBe('link');
    expect(resolveInIndex(index, 'link', true)).toBe('src/a.txt');
    expect(resolveInIndex(index, '../../src/../bin/run', true)).toBe('bin/run');
  });

  it('keeps symlinks to absolute paths (BuildKit takes such contexts) and resolves them from the tree root, never the host\'s', async () => {
    const tar = rawTar([
      { name: 'f.txt', body: Buffer.from('f') },
      { name: 'abs', type: 'symlink', linkname: '/etc/passwd' },
      { name: 'etcl', type: 'symlink', linkname: '/etc' },
      { name: 'rootf', type: 'symlink', linkname: '/f.txt' },
      { name: 'via', type: 'symlink', linkname: 'etcl/passwd' },
      { name: 'back', type: 'symlink', linkname: 'etcl/../f.txt' },
    ]);
    const { index } = await indexTar(Readable.from([tar]), join(sandbox, 'pack'));
    expect(index.get('abs')).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    expect(resolveInIndex(index, 'abs', true)).toBe('etc/passwd');
    expect(index.get(resolveInIndex(index, 'abs', true)!)).toBeUndefined();
    expect(resolveInIndex(index, 'etcl/passwd', true)).toBe('etc/passwd');
    expect(resolveInIndex(index, 'via', true)).toBe('etc/passwd');
    expect(resolveInIndex(index, 'rootf', true)).toBe('f.txt');
    expect(resolveInIndex(index, 'back', true)).toBe('f.txt');
  });

  it('numbers files, hard-linked names sharing the number', async () => {
    const { index } = await indexTar(Readable.from([archive()]), join(sandbox, 'pack'));
    const inode = (p: string) => (index.get(p) as { inode?: number }).inode;
    expect(inode('hard')).toBe(inode('src/a.txt'));
    expect(inode('src/big.bin')).not.toBe(inode('src/a.txt'));
    expect(inode('bin/run')).toEqual(expect.any(Number));
  });

  it('writes a pack of many files without piling error listeners on it (the worker warned MaxListenersExceededWarning)', async () => {
    const files = Array.from({ length: 400 }, (_, i) => ({ name: `src/f${i}.txt`, body: Buffer.alloc(20 * 1024, i % 251) }));
    // The most 'error' listeners the pack file's stream held at once while the context was indexed.
    let most = 0;
    const original = EventEmitter.prototype.once;
    EventEmitter.prototype.once = function (this: EventEmitter, name: string | symbol, listener: (...args: unknown[]) => void) {
      const result = original.call(this, name, listener);
      if (name === 'error' && this instanceof WriteStream) most = Math.max(most, this.listenerCount('error'));
      return result;
    } as typeof original;
    try {
      const { index } = await indexTar(Readable.from([rawTar(files)]), join(sandbox, 'pack'));
      expect(index.size).toBe(402);
    } finally {
      EventEmitter.prototype.once = original;
    }
    expect(most).toBeGreaterThan(0);
    expect(most).toBeLessThanOrEqual(2);
  });
});

describe('readTarEntries', () => {
  it('yields PAX long names, link targets, xattrs and bodies, skipping unread bodies', async () => {
    const longName = `${'x'.repeat(120)}/${'y'.repeat(120)}`;
    const tar = rawTar([
      { name: longName, body: Buffer.from('first'), xattrs: { 'user.origin': 'test' } },
      { name: 'second', body: Buffer.from('second body') },
      { name: 'link', type: 'symlink', linkname: 'z'.repeat(300) },
    ]);
    const seen: { name: string; body?: string; linkname: string; xattrs: Record<string, string> }[] = [];
    for await (const { header, body } of readTarEntries(Readable.from([gzipSync(tar)]))) {
      if (header.name === 'second') {
        const chunks: Buffer[] = [];
        for await (const chunk of body) chunks.push(chunk as Buffer);
        seen.push({ name: header.name, body: Buffer.concat(chunks).toString(), linkname: header.linkname, xattrs: header.xattrs });
      } else {
        seen.push({ name: header.name, linkname: header.linkname, xattrs: header.xattrs });
      }
    }
    expect(seen).toEqual([
      { name: longName, linkname: '', xattrs: { 'user.origin': 'test' } },
      { name: 'second', body: 'second body', linkname: '', xattrs: {} },
      { name: 'link', linkname: 'z'.repeat(300), xattrs: {} },
    ]);
  });

  it('classifies whiteout entries written by the LayerWriter', async () => {
    const gz = await layerBytes([
      { type: 'whiteout', path: 'etc/gone' },
      { type: 'opaque', path: 'var' },
    ]);
    const names: string[] = [];
    for await (const { header } of readTarEntries(Readable.from([gz]))) names.push(header.name);
    expect(names).toEqual(['etc/.wh.gone', 'var/.wh..wh..opq']);
    expect(names.map(parseWhiteout)).toEqual([
      { kind: 'whiteout', removed: 'etc/gone' },
      { kind: 'opaque', directory: 'var' },
    ]);
  });
});

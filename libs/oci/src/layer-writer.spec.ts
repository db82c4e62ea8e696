import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { encodeTarHeader } from './tar-format.js';
import { LayerWriter, type LayerEntry } from './layer-writer.js';
import { readRawTar } from '../../../test/support/raw-tar.js';

async function packToBuffer(writer: LayerWriter, entries: LayerEntry[]): Promise<{ bytes: Buffer; result: Awaited<ReturnType<LayerWriter['writeTo']>> }> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  const result = await writer.writeTo(entries, sink);
  return { bytes: Buffer.concat(chunks), result };
}

function sampleEntries(): LayerEntry[] {
  return [
    { type: 'directory', path: 'app', mode: 0o755, uid: 1000, gid: 1000, mtime: 1_700_000_000 },
    { type: 'file', path: 'app/hello.txt', mode: 0o644, uid: 1000, gid: 1000, mtime: 1_700_000_100, content: Buffer.from('hello\n') },
    { type: 'file', path: 'app/run.sh', mode: 0o755, uid: 0, gid: 0, mtime: 1_700_000_200, content: Buffer.from('#!/bin/sh\necho hi\n') },
    { type: 'symlink', path: 'app/link', target: 'hello.txt', mtime: 1_700_000_000 },
    { type: 'hardlink', path: 'app/hard', target: 'app/hello.txt' },
    { type: 'directory', path: 'etc', mode: 0o700 },
    { type: 'whiteout', path: 'etc/removed.conf' },
    { type: 'opaque', path: 'var/cache' },
  ];
}

let workDir: string;
beforeAll(() => {
  workDir = mkdtempSync(join(tmpdir(), 'strata-layer-'));
});
afterAll(() => {
  rmSync(workDir, { recursive: true, force: true });
});

describe('LayerWriter determinism', () => {
  it('gives byte-identical output and equal digests for the same entries', async () => {
    const a = await packToBuffer(new LayerWriter(), sampleEntries());
    const b = await packToBuffer(new LayerWriter(), sampleEntries());
    expect(a.bytes.equals(b.bytes)).toBe(true);
    expect(a.result.digest).toBe(b.result.digest);
    expect(a.result.diffId).toBe(b.result.diffId);
  });

  it('gives the same layer\'s uncompressed tar alongside the blob, the blob unchanged, and goes on alone once that tar is destroyed', async () => {
    const alone = await packToBuffer(new LayerWriter(), sampleEntries());
    const many: LayerEntry[] = Array.from({ length: 600 }, (_, i) => ({ type: 'file', path: `f/${i}`, content: Buffer.alloc(700, i) }));
    const manyAlone = await packToBuffer(new LayerWriter(), many);
    const read = async (stream: Readable) => {
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    };
    for (const [entries, expected] of [[sampleEntries(), alone], [many, manyAlone]] as const) {
      const packed = new LayerWriter().pack(entries, { tar: true });
      // Read the tar first and the blob after: neither reader may be held back by the other for good.
      const tar = read(packed.tar!);
      const blob = await read(packed.stream);
      const result = await packed.result;
      expect(blob.equals(expected.bytes)).toBe(true);
      expect(result.digest).toBe(expected.result.digest);
      const tarBytes = await tar;
      expect(tarBytes.equals(gunzipSync(blob))).toBe(true);
      expect(`sha256:${createHash('sha256').update(tarBytes).digest('hex')}`).toBe(result.diffId);
    }
    // A tar reader that gives up (an unpack that failed) does not stop the blob.
    const packed = new LayerWriter().pack(many, { tar: true });
    packed.tar!.destroy();
    const blob = await read(packed.stream);
    expect(blob.equals(manyAlone.bytes)).toBe(true);
    // A layer that cannot be written fails both readers; neither waits for an end that never comes.
    const broken = new LayerWriter().pack([...many, { type: 'file', path: 'z', content: { size: 1, stream: () => Readable.from([Buffer.from('too long')]) } }], { tar: true });
    await expect(Promise.all([read(broken.tar!), read(broken.stream)])).rejects.toThrow(/longer than the declared 1 bytes/);
    await expect(read(broken.tar!)).rejects.toThrow();
  });

  it('ignores the order entries arrive in', async () => {
    const forward = await packToBuffer(new LayerWriter(), sampleEntries());
    const reversed = await packToBuffer(new LayerWriter(), sampleEntries().reverse());
    expect(reversed.result.digest).toBe(forward.result.digest);
  });

  it('clamps mtimes to SOURCE_DATE_EPOCH so builds at different times match', async () => {
    const at = (mtime: number): LayerEntry[] => [{ type: 'file', path: 'f', content: Buffer.from('x'), mtime }];
    const early = await packToBuffer(new LayerWriter({ clampMtime: 1000 }), at(5000));
    const late = await packToBuffer(new LayerWriter({ clampMtime: 1000 }), at(9000));
    const unclamped = await packToBuffer(new LayerWriter(), at(5000));
    expect(early.result.digest).toBe(late.result.digest);
    expect(unclamped.result.digest).not.toBe(early.result.digest);
  });

  it('reports diffID as the sha256 of the gunzipped blob and digest/size of the blob itself', async () => {
    const { bytes, result } = await packToBuffer(new LayerWriter(), sampleEntries());
    const tar = gunzipSync(bytes);
    expect(result.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    expect(result.digest).toBe(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    expect(result.size).toBe(bytes.length);
    expect(result.uncompressedSize).toBe(tar.length);
    expect(result.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    // Fixed gzip header: magic, deflate, no flags (no file name), mtime 0.
    expect([...bytes.subarray(0, 8)]).toEqual([0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
  });

  it('writes an uncompressed tar whose digest equals its diffID when compression is none', async () => {
    const { result } = await packToBuffer(new LayerWriter({ compression: 'none' }), sampleEntries());
    expect(result.digest).toBe(result.diffId);
    expect(result.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
  });
});

describe('LayerWriter output read by GNU tar', () => {
  function listWithGnuTar(bytes: Buffer): string[] {
    const file = join(workDir, `layer-${Math.random().toString(16).slice(2)}.tar.gz`);
    writeFileSync(file, bytes);
    return execFileSync('/bin/tar', ['--numeric-owner', '--utc', '-tvzf', file], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } })
      .trim()
      .split('\n');
  }

  it('lists entries sorted parents first, with modes, numeric owners and link targets', async () => {
    const { bytes } = await packToBuffer(new LayerWriter(), sampleEntries());
    const lines = listWithGnuTar(bytes).map((line) => line.replace(/\s+/g, ' '));
    expect(lines).toEqual([
      'drwxr-xr-x 1000/1000 0 2023-11-14 22:13 app/',
      // app/hard sorts first, so it carries the content and app/hello.txt becomes the link.
      '-rw-r--r-- 1000/1000 6 2023-11-14 22:15 app/hard',
      'hrw-r--r-- 1000/1000 0 2023-11-14 22:15 app/hello.txt link to app/hard',
      'lrwxrwxrwx 0/0 0 2023-11-14 22:13 app/link -> hello.txt',
      '-rwxr-xr-x 0/0 18 2023-11-14 22:16 app/run.sh',
      'drwx------ 0/0 0 1970-01-01 00:00 etc/',
      '---------- 0/0 0 1970-01-01 00:00 etc/.wh.removed.conf',
      '---------- 0/0 0 1970-01-01 00:00 var/cache/.wh..wh..opq',
    ]);
  });

  it('keeps long and non-ASCII names and long link targets through PAX headers', async () => {
    const longName = `${'deep/'.repeat(40)}${'n'.repeat(150)}.txt`;
    const unicode = 'données/ファイル.txt';
    const longTarget = `../${'t'.repeat(200)}`;
    const { bytes } = await packToBuffer(new LayerWriter(), [
      { type: 'file', path: longName, content: Buffer.from('long') },
      { type: 'file', path: unicode, content: Buffer.from('utf8') },
      { type: 'symlink', path: 'l', target: longTarget },
    ]);
    const file = join(workDir, 'long.tar.gz');
    writeFileSync(file, bytes);
    const names = execFileSync('/bin/tar', ['-tzf', file], { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C.UTF-8' } }).trim().split('\n');
    expect(names).toEqual([longName, unicode, 'l'].sort((a, b) => Buffer.compare(Buffer.from(a.split('/')[0]!), Buffer.from(b.split('/')[0]!))));
    const listing = execFileSync('/bin/tar', ['-tvzf', file], { encoding: 'utf8' });
    expect(listing).toContain(`l -> ${longTarget}`);
  });

  it('extracts file contents streamed from disk and from a Readable', async () => {
    const source = join(workDir, 'source.bin');
    const payload = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    writeFileSync(source, payload);
    const { bytes } = await packToBuffer(new LayerWriter(), [
      { type: 'file', path: 'from-disk.bin', content: { path: source } },
      { type: 'file', path: 'from-stream.txt', content: { size: 5, stream: () => Readable.from([Buffer.from('ab'), Buffer.from('cde')]) } },
    ]);
    const out = mkdtempSync(join(workDir, 'x-'));
    const file = join(workDir, 'content.tar.gz');
    writeFileSync(file, bytes);
    execFileSync('/bin/tar', ['-xzf', file, '-C', out]);
    const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
    expect(sha(join(out, 'from-disk.bin'))).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(readFileSync(join(out, 'from-stream.txt'), 'utf8')).toBe('abcde');
  });
});

describe('LayerWriter refusals', () => {
  const pack = (entries: LayerEntry[], writer = new LayerWriter()) => packToBuffer(writer, entries);

  it('refuses a stream whose length differs from the declared size', async () => {
    await expect(pack([{ type: 'file', path: 'f', content: { size: 10, stream: Readable.from([Buffer.from('short')]) } }])).rejects.toThrow(
      /layer entry "f": content is 5 bytes, declared 10/,
    );
  });

  it('refuses paths with ".." and duplicate paths', async () => {
    await expect(pack([{ type: 'file', path: '../etc/passwd', content: Buffer.alloc(0) }])).rejects.toThrow(/contains "\.\."/);
    await expect(
      pack([
        { type: 'file', path: 'a', content: Buffer.alloc(0) },
        { type: 'directory', path: '/a/' },
      ]),
    ).rejects.toThrow(/appears more than once/);
  });

  it('writes devices and fifos as a RUN step left them', async () => {
    const { bytes } = await pack([
      { type: 'char-device', path: 'dev/null', devmajor: 1, devminor: 3, mode: 0o666 },
      { type: 'block-device', path: 'dev/loop9', devmajor: 7, devminor: 9, mode: 0o660, gid: 6 },
      { type: 'fifo', path: 'run/pipe', mode: 0o600 },
    ]);
    const file = join(workDir, 'dev.tar.gz');
    writeFileSync(file, bytes);
    const listing = execFileSync('/bin/tar', ['-tvzf', file], { encoding: 'utf8' }).split('\n');
    expect(listing[0]).toMatch(/^brw-rw---- 0\/6\s+7,9 .* dev\/loop9$/);
    expect(listing[1]).toMatch(/^crw-rw-rw- 0\/0\s+1,3 .* dev\/null$/);
    expect(listing[2]).toMatch(/^prw------- 0\/0\s+0 .* run\/pipe$/);
  });

  it('writes a name that is not UTF-8 with its own bytes, and hard links to a symlink', async () => {
    const latin1 = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
    const { bytes } = await pack(
      [
        { type: 'file', path: 'caf\ufffd', pathBytes: latin1, content: Buffer.from('x') },
        { type: 'hardlink', path: 'z-link', target: 'caf\ufffd', targetBytes: latin1 },
        { type: 'symlink', path: 'b-alias', target: '/nonexistent' },
        { type: 'hardlink', path: 'a-alias', target: 'b-alias' },
      ],
      new LayerWriter({ compression: 'none' }),
    );
    const entries = readRawTar(bytes);
    expect(entries.map((e) => [e.name.toString('latin1'), e.typeflag, e.linkname.toString('latin1')])).toEqual([
      // The first name in layer order carries the symlink; the later one links to it.
      ['a-alias', '2', '/nonexistent'],
      ['b-alias', '1', 'a-alias'],
      [latin1.toString('latin1'), '0', ''],
      ['z-link', '1', latin1.toString('latin1')],
    ]);
  });

  it('refuses a hard link to a path outside the layer', async () => {
    await expect(pack([{ type: 'hardlink', path: 'h', target: 'missing' }])).rejects.toThrow(/hard link target "missing" is not in this layer/);
  });
});

describe('encodeTarHeader', () => {
  it('moves a size beyond ustar range into a PAX size record', () => {
    const header = encodeTarHeader({ name: 'huge', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 9 * 1024 ** 3, mtime: 0 });
    expect(header.length).toBe(3 * 512);
    expect(header.subarray(512, 1024).toString('utf8')).toContain(`size=${9 * 1024 ** 3}\n`);
  });
});

describe('LayerWriter with known content hashes', () => {
  it('takes a content source\'s sha256 instead of hashing its bytes, and hashes those that give none', async () => {
    const given = 'ab'.repeat(32);
    const { result } = await packToBuffer(new LayerWriter({ compression: 'none' }), [
      { type: 'file', path: 'known', content: { size: 5, read: async () => Buffer.from('hello'), sha256: given } },
      { type: 'file', path: 'streamed', content: { size: 5, stream: () => Readable.from([Buffer.from('world')]), sha256: given } },
      { type: 'file', path: 'plain', content: { size: 5, read: async () => Buffer.from('hello') } },
    ]);
    const byName = new Map(result.entries.map((e) => [e.name, e.sha256]));
    expect(byName.get('known')).toBe(given);
    expect(byName.get('streamed')).toBe(given);
    expect(byName.get('plain')).toBe(createHash('sha256').update('hello').digest('hex'));
  });
});

describe('LayerWriter span reads', () => {
  it('reads contents lying back to back in one source together, and writes the layer it writes from buffers', async () => {
    const pack = Buffer.concat(Array.from({ length: 300 }, (_, n) => Buffer.from(`content ${n} `.repeat(n % 7))));
    const reads: Array<[number, number]> = [];
    const source = {
      readSpan: async (offset: number, length: number) => {
        reads.push([offset, length]);
        if (offset + length > pack.length) throw new Error('short');
        return Buffer.from(pack.subarray(offset, offset + length));
      },
    };
    const spanned: LayerEntry[] = [{ type: 'directory', path: 'd' }];
    const plain: LayerEntry[] = [{ type: 'directory', path: 'd' }];
    let offset = 0;
    for (let n = 0; n < 300; n++) {
      const size = Buffer.byteLength(`content ${n} `) * (n % 7);
      const bytes = pack.subarray(offset, offset + size);
      // Names sort as the pack is laid out, but for a gap of order in the middle (199 and 200 swapped).
      const name = `d/f${String(n === 199 ? 200 : n === 200 ? 199 : n).padStart(4, '0')}`;
      spanned.push({ type: 'file', path: name, content: { size, read: async () => Buffer.from(bytes), span: { source, offset } } });
      plain.push({ type: 'file', path: name, content: Buffer.from(bytes) });
      offset += size;
    }
    const a = await packToBuffer(new LayerWriter(), spanned);
    const b = await packToBuffer(new LayerWriter(), plain);
    expect(a.bytes.equals(b.bytes)).toBe(true);
    expect(a.result.diffId).toBe(b.result.diffId);
    expect(a.result.entries.map((e) => e.sha256)).toEqual(b.result.entries.map((e) => e.sha256));
    // Far fewer requests than files: runs broken only where the order leaves the pack's.
    expect(reads.length).toBeLessThan(10);
  });

  it('reads contents that lie together in the source but in another order with one request per piece, and never the bytes between pieces', async () => {
    // A tar sent in directory order: the pack holds d/'s files shuffled, the layer writes them sorted.
    const names = Array.from({ length: 400 }, (_, n) => `d/f${String(n).padStart(4, '0')}`);
    const packOrder = [...names].sort((a, b) => (createHash('sha256').update(a).digest('hex') < createHash('sha256').update(b).digest('hex') ? -1 : 1));
    const contentOf = (name: string) => Buffer.from(`${name} `.repeat(1 + (name.length % 5)));
    const offsets = new Map<string, number>();
    const parts: Buffer[] = [];
    let at = 0;
    for (const name of packOrder) {
      offsets.set(name, at);
      parts.push(contentOf(name));
      at += contentOf(name).length;
      // Far from the next file: a 1 MiB file no entry of the layer needs.
      if (name === packOrder[199]) {
        parts.push(Buffer.alloc(1024 * 1024));
        at += 1024 * 1024;
      }
    }
    const pack = Buffer.concat(parts);
    const reads: Array<[number, number]> = [];
    const source = {
      readSpan: async (offset: number, length: number) => {
        reads.push([offset, length]);
        return Buffer.from(pack.subarray(offset, offset + length));
      },
    };
    const spanned: LayerEntry[] = names.map((name) => ({ type: 'file', path: name, content: { size: contentOf(name).length, read: async () => contentOf(name), span: { source, offset: offsets.get(name)! } } }));
    const plain: LayerEntry[] = names.map((name) => ({ type: 'file', path: name, content: contentOf(name) }));
    const a = await packToBuffer(new LayerWriter(), spanned);
    const b = await packToBuffer(new LayerWriter(), plain);
    expect(a.bytes.equals(b.bytes)).toBe(true);
    expect(a.result.entries.map((e) => e.sha256)).toEqual(b.result.entries.map((e) => e.sha256));
    // Each half lies in one piece of the pack: one request each, not one per file, and the 1 MiB between them is never read.
    expect(reads).toHaveLength(2);
    const needed = names.reduce((t, n) => t + contentOf(n).length, 0);
    expect(reads.reduce((t, [, length]) => t + length, 0)).toBe(needed);
  });

  it('fails the layer when the source is shorter than a span', async () => {
    const source = { readSpan: async () => { throw new Error('the context pack ends before byte 20'); } };
    const entries: LayerEntry[] = [
      { type: 'file', path: 'a', content: { size: 10, read: async () => Buffer.alloc(10), span: { source, offset: 0 } } },
      { type: 'file', path: 'b', content: { size: 10, read: async () => Buffer.alloc(10), span: { source, offset: 10 } } },
    ];
    await expect(packToBuffer(new LayerWriter(), entries)).rejects.toThrow(/ends before byte 20/);
  });
});

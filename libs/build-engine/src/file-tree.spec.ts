// COPY, ADD and WORKDIR give the file tree BuildKit gives (what dockerd 20.10 was seen to do is in
// each test's name), checked in memory: a fake blob store, a merged-/usr base made with the layer
// writer, and the resulting image's layers stacked back into one tree.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { type Digest, indexTar, type LayerEntry, LayerWriter, PackReader, readTarEntries } from '@strata/oci';
import { IndexedContext } from './context.js';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { BuildEvent, CachedStep, LayerSink, SourceFetcher } from './interfaces.js';
import { BuildEngine } from './solver.js';

async function bytesOf(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function memorySink(): LayerSink & { blobs: Map<string, Buffer> } {
  const blobs = new Map<string, Buffer>();
  return {
    blobs,
    async store(layer) {
      const bytes = await bytesOf(layer.stream);
      const r = await layer.result;
      blobs.set(r.digest, bytes);
      return { descriptor: r.descriptor, diffId: r.diffId };
    },
    has: async (d: Digest) => blobs.has(d),
    open: async (d: Digest) => Readable.from([blobs.get(d)!]),
  };
}

/** A tar made of entries, uncompressed (an archive for ADD, or a build context). */
async function tarOf(entries: LayerEntry[]): Promise<Buffer> {
  return bytesOf(new LayerWriter({ compression: 'none' }).pack(entries).stream);
}

/** A tar whose one entry climbs out with "..", which the layer writer would never write. */
async function escapingTar(): Promise<Buffer> {
  const p = pack();
  p.entry({ name: 'a/../../escape', size: 1 }, 'x');
  p.finalize();
  return bytesOf(p as unknown as Readable);
}

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:1001:1002::/:/bin/sh\n';

/** A Debian-like base: /bin -> usr/bin, a relative chain and an absolute link to directories, a loop, a dangling link. */
const BASE: LayerEntry[] = [
  { type: 'directory', path: 'usr', mode: 0o755 },
  { type: 'directory', path: 'usr/bin', mode: 0o755 },
  { type: 'file', path: 'usr/bin/sh', mode: 0o755, content: Buffer.from('#!sh') },
  { type: 'directory', path: 'usr/share', mode: 0o755 },
  { type: 'directory', path: 'usr/local', mode: 0o755 },
  { type: 'directory', path: 'usr/share/existing', mode: 0o750, uid: 7, gid: 8 },
  { type: 'symlink', path: 'bin', target: 'usr/bin' },
  { type: 'symlink', path: 'l1', target: 'l2' },
  { type: 'symlink', path: 'l2', target: 'usr/share' },
  { type: 'symlink', path: 'abs', target: '/usr/local' },
  { type: 'symlink', path: 'loop1', target: 'loop2' },
  { type: 'symlink', path: 'loop2', target: 'loop1' },
  { type: 'symlink', path: 'dangling', target: '/nonexistent/dir' },
  { type: 'directory', path: 'etc', mode: 0o755 },
  { type: 'file', path: 'etc/passwd', content: Buffer.from(passwd) },
  { type: 'file', path: 'etc/group', content: Buffer.from('root:x:0:\napp:x:1000:\nsvcg:x:1002:\n') },
  { type: 'directory', path: 'opt', mode: 0o700, uid: 5, gid: 6 },
  { type: 'directory', path: 'tmp', mode: 0o1777 },
];

const ARCHIVE: LayerEntry[] = [
  { type: 'file', path: 'top.txt', content: Buffer.from('top'), uid: 1234, gid: 4321, mtime: 1_000_000 },
  { type: 'directory', path: 'x', mode: 0o705, uid: 1234, gid: 4321 },
  { type: 'file', path: 'x/y/z.txt', content: Buffer.from('inner'), uid: 1234, gid: 4321 },
  { type: 'hardlink', path: 'x/hard', target: 'top.txt' },
  { type: 'symlink', path: 'x/abs', target: '/etc/passwd' },
  { type: 'symlink', path: 'x/up', target: '../top.txt' },
];

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  target?: string;
  content?: string;
}

describe('COPY, ADD and WORKDIR write the tree BuildKit writes', () => {
  let sink: ReturnType<typeof memorySink>;
  let base: { descriptor: { digest: Digest; size: number; mediaType: string }; diffId: Digest };
  let context: IndexedContext;

  beforeAll(async () => {
    sink = memorySink();
    const packed = new LayerWriter().pack(BASE);
    const stored = await sink.store(packed);
    base = stored as typeof base;
    const archive = await tarOf(ARCHIVE);
    const tool = (cmd: string) => execFileSync(cmd, ['-c'], { input: archive });
    const ctxTar = await tarOf([
      { type: 'file', path: 'f.txt', content: Buffer.from('hello\n') },
      { type: 'file', path: 'tool', mode: 0o755, content: Buffer.from('#!/bin/sh\n') },
      { type: 'directory', path: 'dir', mode: 0o750 },
      { type: 'file', path: 'dir/a.txt', content: Buffer.from('a') },
      { type: 'directory', path: 'dir/sub', mode: 0o700 },
      { type: 'file', path: 'dir/sub/b.txt', content: Buffer.from('b') },
      { type: 'symlink', path: 'dir/ln', target: 'a.txt' },
      { type: 'symlink', path: 'link', target: 'f.txt' },
      { type: 'symlink', path: 'chain1', target: 'chain2' },
      { type: 'symlink', path: 'chain2', target: 'f.txt' },
      { type: 'symlink', path: 'dlink', target: 'dir' },
      { type: 'file', path: 'arch.tar', content: archive },
      { type: 'file', path: 'arch.tar.gz', content: gzipSync(archive) },
      { type: 'file', path: 'arch.tar.bz2', content: tool('bzip2') },
      { type: 'file', path: 'arch.tar.xz', content: tool('xz') },
      { type: 'file', path: 'data.bin', content: gzipSync(archive) },
      { type: 'file', path: 'notar.tar', content: Buffer.from('not a tar\n') },
      { type: 'file', path: 'empty.tar', content: Buffer.alloc(1024) },
      { type: 'file', path: 'overlay/bin/y', content: Buffer.from('y') },
      { type: 'file', path: '.dockerignore', content: Buffer.from('secret.txt\n') },
      { type: 'file', path: 'secret.txt', content: Buffer.from('secret') },
      { type: 'symlink', path: 'pub', target: 'secret.txt' },
      { type: 'file', path: 'with-bin-dir.tar', content: await tarOf([{ type: 'directory', path: 'bin' }, { type: 'file', path: 'bin/y', content: Buffer.from('y') }]) },
      { type: 'file', path: 'bin-file-only.tar', content: await tarOf([{ type: 'file', path: 'bin/y', content: Buffer.from('y') }]) },
      { type: 'file', path: 'evil.tar', content: await escapingTar() },
      { type: 'file', path: 'truncated.tar.gz', content: gzipSync(archive.subarray(0, 700)) },
      // BuildKit's testExcludedFilesOnCopy tree, reduced.
      { type: 'file', path: 'ex/dir1/a.png', content: Buffer.from('2') },
      { type: 'file', path: 'ex/dir1/b.txt', content: Buffer.from('3') },
      { type: 'file', path: 'ex/dir2/c.pdf', content: Buffer.from('6') },
      { type: 'file', path: 'ex/dir2/d.png', content: Buffer.from('8') },
      { type: 'file', path: 'ex/dir3/e.mp3', content: Buffer.from('9') },
      { type: 'file', path: 'ex/dir3/e.mpeg', content: Buffer.from('10') },
      { type: 'directory', path: 'px', mode: 0o750 },
      { type: 'file', path: 'px/a.txt', content: Buffer.from('px') },
      { type: 'directory', path: 'px/sub', mode: 0o700 },
      { type: 'file', path: 'px/sub/deep.txt', content: Buffer.from('deep') },
      { type: 'file', path: 'py/a.txt', content: Buffer.from('py') },
      // Hard links, in one directory and across two; another file named like one of them.
      { type: 'file', path: 'hl/one/a', content: Buffer.from('shared\n') },
      { type: 'hardlink', path: 'hl/one/b', target: 'hl/one/a' },
      { type: 'hardlink', path: 'hl/two/c', target: 'hl/one/a' },
      { type: 'file', path: 'hl/one/alone', content: Buffer.from('alone\n') },
      { type: 'file', path: 'hlo/a', content: Buffer.from('other\n') },
      // Absolute symlinks, as a checkout may hold them: they mean paths from the context root.
      { type: 'symlink', path: 'sym/abs', target: '/etc/passwd' },
      { type: 'symlink', path: 'sym/etcl', target: '/etc' },
      { type: 'symlink', path: 'sym/root-f', target: '/f.txt' },
      { type: 'symlink', path: 'sym/via', target: 'etcl/passwd' },
    ]);
    const pack = path.join(mkdtempSync(path.join(tmpdir(), 'file-tree-ctx-')), 'pack');
    const { index } = await indexTar(Readable.from([ctxTar]), pack);
    context = await IndexedContext.open(index, await PackReader.open(pack), async () => {
      throw new Error('no directory needed');
    });
  });

  /** Builds `lines` FROM the base and returns the image's tree: path → node, plus each step's layer. */
  async function build(lines: string, buildArgs: Record<string, string> = {}, opts: { cache?: Map<string, CachedStep>; base?: typeof base; sources?: SourceFetcher } = {}) {
    const cache = opts.cache ?? new Map<string, CachedStep>();
    const from = opts.base ?? base;
    const events: BuildEvent[] = [];
    const engine = new BuildEngine({
      images: {
        resolve: async () => ({
          ref: 'base:1',
          source: 'registry',
          manifestDigest: from.descriptor.digest,
          config: { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [from.diffId] }, history: [{ created_by: 'base' }] },
          layers: [from.descriptor],
        }),
      },
      layers: sink,
      // COPY --from reads files this build wrote from where it wrote them; nothing is unpacked.
      rootfs: { open: async () => Promise.reject(new Error('no stage is unpacked in these tests')) },
      cache: { get: async (k) => cache.get(k) ?? null, put: async (k, v) => void cache.set(k, v) },
      onEvent: (e) => events.push(e),
      ...(opts.sources ? { sources: opts.sources } : {}),
    });
    const out = await engine.build({ dockerfile: lines.startsWith('FROM') ? `${lines}\n` : `FROM base:1\n${lines}\n`, dockerfilePath: 'Dockerfile', context, buildArgs });
    const tree = new Map<string, Node>();
    const layers: Array<Map<string, Node>> = [];
    for (const l of out.image.layers) {
      const layer = new Map<string, Node>();
      for await (const { header, body } of readTarEntries(Readable.from([sink.blobs.get(l.descriptor.digest)!]))) {
        const content = header.type === 'file' ? (await bytesOf(body)).toString('utf8') : undefined;
        if (content === undefined) body.resume();
        const node: Node = { type: header.type, mode: header.mode, uid: header.uid, gid: header.gid, mtime: header.mtime, ...(header.linkname ? { target: header.linkname } : {}), ...(content !== undefined ? { content } : {}) };
        layer.set(header.name.replace(/^\.?\//, ''), node);
        tree.set(header.name.replace(/^\.?\//, ''), node);
      }
      layers.push(layer);
    }
    const cached = events.flatMap((e) => (e.type === 'step-done' ? [e.cached] : []));
    return { tree, layers: layers.slice(1), digests: out.image.layers.slice(1).map((l) => l.descriptor.digest), config: out.image.config, history: out.image.config.history ?? [], cached };
  }

  it('WORKDIR creates the directory and its missing parents 0755 owned by USER; existing ones are untouched (dockerd: /opt stays 0700 5:6)', async () => {
    const { tree, layers, history, config } = await build('USER app\nWORKDIR /w1/w2\nWORKDIR /opt/sub\nUSER 1001\nWORKDIR /usr/share/existing/n1\nUSER svc:root\nWORKDIR /svcdir\nUSER nosuch\nWORKDIR /nouser');
    expect(tree.get('w1')).toMatchObject({ type: 'directory', mode: 0o755, uid: 1000, gid: 1000 });
    expect(tree.get('w1/w2')).toMatchObject({ type: 'directory', mode: 0o755, uid: 1000, gid: 1000 });
    expect(tree.get('opt')).toMatchObject({ mode: 0o700, uid: 5, gid: 6 });
    expect(tree.get('opt/sub')).toMatchObject({ uid: 1000, gid: 1000 });
    // A number is uid and gid both; names come from the image's passwd and group; an unknown user gives root.
    expect(tree.get('usr/share/existing')).toMatchObject({ mode: 0o750, uid: 7, gid: 8 });
    expect(tree.get('usr/share/existing/n1')).toMatchObject({ uid: 1001, gid: 1001 });
    expect(tree.get('svcdir')).toMatchObject({ uid: 1001, gid: 0 });
    expect(tree.get('nouser')).toMatchObject({ uid: 0, gid: 0 });
    expect(layers).toHaveLength(5);
    expect(history.filter((h) => h.created_by?.startsWith('WORKDIR')).every((h) => !h.empty_layer)).toBe(true);
    expect(config.config?.WorkingDir).toBe('/nouser');
  });

  it('WORKDIR of an existing directory makes an empty layer, WORKDIR / none; through symlinks it creates the real path (dockerd: /abs/x is usr/local/x)', async () => {
    const { tree, layers, history, config } = await build('WORKDIR /tmp\nWORKDIR /abs/x\nWORKDIR /l1/viachain\nWORKDIR /bin\nWORKDIR rel/inner\nWORKDIR /');
    expect(layers[0].size).toBe(0);
    expect(tree.get('usr/local/x')).toMatchObject({ type: 'directory', mode: 0o755 });
    expect(tree.get('usr/share/viachain')).toMatchObject({ type: 'directory' });
    expect(tree.get('usr/bin/rel/inner')).toMatchObject({ type: 'directory' });
    expect(tree.get('bin')).toMatchObject({ type: 'symlink', target: 'usr/bin' });
    expect(tree.has('abs/x')).toBe(false);
    expect(layers[3].size).toBe(0);
    expect(layers).toHaveLength(5);
    expect(history.at(-1)).toMatchObject({ created_by: 'WORKDIR /', empty_layer: true });
    expect(config.config?.WorkingDir).toBe('/');
  });

  it('WORKDIR through a link loop fails on its line', async () => {
    await expect(build('WORKDIR /loop1/w')).rejects.toThrow(/Dockerfile:2: .*too many levels of symbolic links/);
  });

  it('COPY --chown owns every directory it creates; existing destinations and parents keep theirs; without --chown the destination is 0755 root, not the source mode', async () => {
    const { tree } = await build('COPY --chown=1000:1000 f.txt /c1/c2/c3/\nCOPY --chown=app dir /c4/d/\nCOPY dir /c5/\nCOPY --chown=1000:1000 dir /opt/');
    for (const d of ['c1', 'c1/c2', 'c1/c2/c3', 'c4', 'c4/d']) expect([d, tree.get(d)]).toEqual([d, expect.objectContaining({ type: 'directory', mode: 0o755, uid: 1000, gid: 1000 })]);
    expect(tree.get('c1/c2/c3/f.txt')).toMatchObject({ uid: 1000, gid: 1000, content: 'hello\n' });
    expect(tree.get('c4/d/sub')).toMatchObject({ mode: 0o700, uid: 1000 });
    expect(tree.get('c5')).toMatchObject({ mode: 0o755, uid: 0, gid: 0 });
    expect(tree.get('opt')).toMatchObject({ mode: 0o700, uid: 5, gid: 6 });
    expect(tree.get('opt/a.txt')).toMatchObject({ uid: 1000, gid: 1000 });
  });

  it('a symlink named as a source is copied as what it points to (chains, directories, globs); links inside a copied directory stay links', async () => {
    const { tree } = await build('COPY link /s1/\nCOPY chain1 /s2/\nCOPY dlink /s3/\nCOPY l* /s5/\nCOPY link /s6/named\nCOPY dir/ln /s7/\nCOPY dir /s8/');
    expect(tree.get('s1/link')).toMatchObject({ type: 'file', mode: 0o644, content: 'hello\n' });
    expect(tree.get('s2/chain1')).toMatchObject({ type: 'file', content: 'hello\n' });
    expect(tree.get('s3/a.txt')).toMatchObject({ type: 'file', content: 'a' });
    expect(tree.get('s3/ln')).toMatchObject({ type: 'symlink', target: 'a.txt' });
    expect(tree.get('s5/link')).toMatchObject({ type: 'file', content: 'hello\n' });
    expect(tree.get('s6/named')).toMatchObject({ type: 'file', content: 'hello\n' });
    expect(tree.get('s7/ln')).toMatchObject({ type: 'file', content: 'a' });
    expect(tree.get('s8/ln')).toMatchObject({ type: 'symlink', target: 'a.txt' });
  });

  it('destinations follow the image symlinks: /bin/tool is usr/bin/tool and /bin stays a link (relative chains, absolute and dangling links too)', async () => {
    const { tree } = await build('COPY tool /bin/tool\nCOPY tool /l1/tool\nCOPY tool /abs/tool2\nCOPY f.txt /bin\nCOPY tool /dangling\nCOPY f.txt /tmp');
    expect(tree.get('bin')).toMatchObject({ type: 'symlink', target: 'usr/bin' });
    expect(tree.get('usr/bin/tool')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(tree.get('usr/bin/sh')).toMatchObject({ type: 'file' });
    expect(tree.get('usr/share/tool')).toMatchObject({ type: 'file' });
    expect(tree.get('usr/local/tool2')).toMatchObject({ type: 'file' });
    // An existing directory named without a slash receives the file under its own name.
    expect(tree.get('usr/bin/f.txt')).toMatchObject({ type: 'file', content: 'hello\n' });
    expect(tree.get('tmp')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(tree.get('tmp/f.txt')).toMatchObject({ type: 'file' });
    // BuildKit writes through a dangling link, creating its target's parents.
    expect(tree.get('dangling')).toMatchObject({ type: 'symlink', target: '/nonexistent/dir' });
    expect(tree.get('nonexistent/dir')).toMatchObject({ type: 'file', mode: 0o755 });
    for (const p of tree.keys()) expect(p.startsWith('bin/') || p.startsWith('abs/') || p.startsWith('l1/')).toBe(false);
  });

  it('refuses a destination through a link loop or through a file, naming the line', async () => {
    await expect(build('COPY f.txt /loop1/x')).rejects.toThrow(/Dockerfile:2: COPY: \/loop1\/x: too many levels of symbolic links/);
    await expect(build('COPY f.txt /etc/passwd/x')).rejects.toThrow(/Dockerfile:2: COPY: \/etc\/passwd is not a directory/);
    await expect(build('COPY f.txt /sf\nCOPY f.txt /sf/')).rejects.toThrow(/Dockerfile:3: COPY: \/sf is not a directory/);
  });

  it('ADD unpacks tar, gzip, bzip2 and xz archives by content, keeping their owners; other files are copied (dockerd: named.tar becomes a directory)', async () => {
    const { tree } = await build(
      'ADD arch.tar /a1/\nADD arch.tar.gz /a2/\nADD arch.tar.bz2 /a3/\nADD arch.tar.xz /a4/\nADD data.bin /a5/\nADD notar.tar /a6/\nADD arch.tar /a7/named.tar\nADD --chown=1000:1000 arch.tar /a8/\nCOPY arch.tar /a9/\nADD empty.tar /a10/\nADD arch.tar /bin/',
    );
    for (const d of ['a1', 'a2', 'a3', 'a4', 'a5', 'a7/named.tar', 'usr/bin']) {
      expect([d, tree.get(`${d}/top.txt`)]).toEqual([d, expect.objectContaining({ type: 'file', uid: 1234, gid: 4321, content: 'top' })]);
      expect([d, tree.get(`${d}/x`)]).toEqual([d, expect.objectContaining({ type: 'directory', mode: 0o705 })]);
      expect([d, tree.get(`${d}/x/y/z.txt`)]).toEqual([d, expect.objectContaining({ content: 'inner' })]);
      expect([d, tree.get(`${d}/x/hard`)]).toEqual([d, expect.objectContaining({ type: 'hardlink', target: `${d}/top.txt` })]);
      expect([d, tree.get(`${d}/x/abs`)]).toEqual([d, expect.objectContaining({ type: 'symlink', target: '/etc/passwd' })]);
    }
    expect(tree.get('a1')).toMatchObject({ mode: 0o755, uid: 0, gid: 0 });
    expect(tree.get('a6/notar.tar')).toMatchObject({ type: 'file', content: 'not a tar\n' });
    expect(tree.get('a8')).toMatchObject({ uid: 1000, gid: 1000 });
    expect(tree.get('a8/top.txt')).toMatchObject({ uid: 1234, gid: 4321 });
    expect(tree.get('a9/arch.tar')).toMatchObject({ type: 'file' });
    expect(tree.get('a10/empty.tar')).toMatchObject({ type: 'file' });
    expect(tree.get('bin')).toMatchObject({ type: 'symlink', target: 'usr/bin' });
  });

  it('ADD --unpack=false copies a local archive as a file; --unpack=true is the default for local ones', async () => {
    const { tree } = await build('ADD --unpack=false arch.tar.gz /u1/\nADD --unpack=true arch.tar /u2/');
    expect(tree.get('u1/arch.tar.gz')).toMatchObject({ type: 'file' });
    expect(tree.has('u1/top.txt')).toBe(false);
    expect(tree.get('u2/top.txt')).toMatchObject({ content: 'top' });
  });

  it('ADD refuses an archive entry that climbs out of the destination, and a truncated archive, naming the line', async () => {
    await expect(build('ADD evil.tar /e/')).rejects.toThrow(/Dockerfile:2: ADD: refusing tar entry "a\/..\/..\/escape"/);
    await expect(build('ADD truncated.tar.gz /t/')).rejects.toThrow(/Dockerfile:2: ADD: refusing archive: "truncated.tar.gz" could not be unpacked/);
  });

  it('COPY --chmod sets files and directories copied, not the destination directory nor links', async () => {
    const { tree } = await build('COPY --chmod=0640 f.txt /m1/\nCOPY --chmod=711 dir /m4/\nCOPY --chmod=600 --chown=app f.txt /m3/x/');
    expect(tree.get('m1/f.txt')).toMatchObject({ mode: 0o640 });
    expect(tree.get('m4')).toMatchObject({ mode: 0o755 });
    expect(tree.get('m4/sub')).toMatchObject({ mode: 0o711 });
    expect(tree.get('m4/a.txt')).toMatchObject({ mode: 0o711 });
    expect(tree.get('m4/ln')).toMatchObject({ type: 'symlink', mode: 0o777 });
    expect(tree.get('m3/x')).toMatchObject({ mode: 0o755, uid: 1000, gid: 1000 });
    expect(tree.get('m3/x/f.txt')).toMatchObject({ mode: 0o600, uid: 1000 });
  });

  it('stamps created directories with SOURCE_DATE_EPOCH (or 0), not the build time, so a layer made again has the same digest', async () => {
    const lines = 'COPY --chown=app f.txt /made/here/\nUSER app\nWORKDIR /work/dir\nADD arch.tar.gz /unpacked/';
    const one = await build(lines);
    await new Promise((r) => setTimeout(r, 1100));
    const two = await build(lines);
    expect(two.digests).toEqual(one.digests);
    expect(one.tree.get('made/here')).toMatchObject({ mtime: 0 });
    const pinned = await build(lines, { SOURCE_DATE_EPOCH: '1700000000' });
    expect(pinned.tree.get('made/here')).toMatchObject({ mtime: 1700000000 });
    expect(pinned.tree.get('work/dir')).toMatchObject({ mtime: 1700000000 });
  });

  it('COPY --from a stage keeps its files\' owners unless --chown; a link named as the source is followed inside that stage (dockerd: 1234:5678 kept, /fromd 0:0)', async () => {
    const { tree } = await build('FROM base:1 AS a\nADD arch.tar /d/\nFROM base:1\nCOPY --from=a /d /fromd/\nCOPY --from=a /d/x/up /pl/\nCOPY --from=a --chown=1000:1000 /d/x /owned/');
    expect(tree.get('fromd')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
    expect(tree.get('fromd/x')).toMatchObject({ mode: 0o705, uid: 1234, gid: 4321 });
    expect(tree.get('fromd/top.txt')).toMatchObject({ uid: 1234, gid: 4321, content: 'top' });
    expect(tree.get('fromd/x/up')).toMatchObject({ type: 'symlink', target: '../top.txt' });
    expect(tree.get('pl/up')).toMatchObject({ type: 'file', uid: 1234, content: 'top' });
    expect(tree.get('owned/y/z.txt')).toMatchObject({ uid: 1000, gid: 1000 });
  });

  it('COPY keeps hard links within one source, from the context and from a stage (dockerd: /h/one/a, /h/one/b, /h/two/c one inode; separate sources are separate files)', async () => {
    const { tree } = await build('COPY hl/ /h/\nCOPY hl/one/ /only-one/\nCOPY hl/one/b hl/two/c /sep/');
    expect(tree.get('h/one/a')).toMatchObject({ type: 'file', content: 'shared\n' });
    expect([tree.get('h/one/b'), tree.get('h/two/c')]).toEqual([expect.objectContaining({ type: 'hardlink', target: 'h/one/a' }), expect.objectContaining({ type: 'hardlink', target: 'h/one/a' })]);
    expect(tree.get('h/one/alone')).toMatchObject({ type: 'file', content: 'alone\n' });
    expect([tree.get('only-one/a')?.type, tree.get('only-one/b')]).toEqual(['file', expect.objectContaining({ type: 'hardlink', target: 'only-one/a' })]);
    expect([tree.get('sep/b')?.type, tree.get('sep/c')?.type]).toEqual(['file', 'file']);
    const staged = await build('FROM base:1 AS a\nCOPY hl/ /d/\nFROM base:1\nCOPY --from=a /d/one /x/\nCOPY --from=a --chown=1000:1000 /d /y/');
    expect([staged.tree.get('x/a')?.type, staged.tree.get('x/b')]).toEqual(['file', expect.objectContaining({ type: 'hardlink', target: 'x/a' })]);
    expect(staged.tree.get('y/one/a')).toMatchObject({ type: 'file', uid: 1000, content: 'shared\n' });
    expect([staged.tree.get('y/one/b'), staged.tree.get('y/two/c')]).toEqual([expect.objectContaining({ type: 'hardlink', target: 'y/one/a' }), expect.objectContaining({ type: 'hardlink', target: 'y/one/a' })]);
  });

  it('a later source written over the first name of a hard-linked file leaves the other names linked to the file (as BuildKit copies source after source)', async () => {
    const { tree } = await build('COPY hl/one/ hlo/ /r/');
    expect(tree.get('r/a')).toMatchObject({ type: 'file', content: 'other\n' });
    expect(tree.get('r/b')).toMatchObject({ type: 'file', content: 'shared\n' });
  });

  it('hard links are part of the cache key: the same files unlinked are another COPY', async () => {
    const linked = await context.checksum(await context.resolve('hl'));
    const plain = await context.checksum([...(await context.resolve('hl/one/a')), ...(await context.resolve('hl/one/b'))]);
    expect(linked.files.get('hl/one/b')).not.toBe(plain.files.get('hl/one/b'));
  });

  it('symlinks to absolute paths in the context are copied as links, and resolve from the context root, never the worker\'s (dockerd: "/sym/abs" not found)', async () => {
    const { tree } = await build('COPY sym/ /s/\nCOPY sym/root-f /followed\nCOPY sym/abs/.. /dotdot/');
    expect([tree.get('s/abs'), tree.get('s/etcl')]).toEqual([expect.objectContaining({ type: 'symlink', target: '/etc/passwd' }), expect.objectContaining({ type: 'symlink', target: '/etc' })]);
    // /f.txt is the context's f.txt; "sym/abs/.." is "sym", cleaned before anything is followed.
    expect(tree.get('followed')).toMatchObject({ type: 'file', content: 'hello\n' });
    expect(tree.get('dotdot/abs')).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    for (const source of ['sym/abs', 'sym/etcl/passwd', 'sym/etcl/', 'sym/via', 'sym/etcl/../etc/passwd']) {
      await expect(build(`COPY ${source} /stolen`)).rejects.toThrow(/COPY: ".*" not found/);
    }
    const passwdLike = [...tree.values()].filter((n) => n.content?.includes('root:x:0:0'));
    expect(passwdLike.length).toBe(1); // the base image's own /etc/passwd, nothing read from the worker
  });

  it('a pattern that matches nothing copies nothing (dockerd: an empty layer, no /x); a missing plain path is an error', async () => {
    const { tree, layers } = await build('COPY nonexist* /x/\nCOPY nonexist* f.txt /multi/');
    expect(layers[0].size).toBe(0);
    expect(tree.has('x')).toBe(false);
    expect(tree.get('multi/f.txt')).toMatchObject({ type: 'file' });
    await expect(build('COPY nonexist /x/')).rejects.toThrow(/Dockerfile:2: COPY: "nonexist" not found/);
  });

  it('a copied tree whose directory meets an image symlink is refused (dockerd 20.10: "cannot copy to non-directory"), never replacing /bin', async () => {
    await expect(build('COPY overlay/ /')).rejects.toThrow(/Dockerfile:2: COPY: cannot copy a directory onto \/bin, which is a symlink in the image/);
  });

  it('an archive\'s directory entry replaces an image symlink, its files alone go through it (as dockerd\'s untar)', async () => {
    const replaced = await build('ADD with-bin-dir.tar /');
    expect(replaced.tree.get('bin')).toMatchObject({ type: 'directory' });
    expect(replaced.tree.get('bin/y')).toMatchObject({ type: 'file', content: 'y' });
    const through = await build('ADD bin-file-only.tar /');
    expect(through.tree.get('bin')).toMatchObject({ type: 'symlink', target: 'usr/bin' });
    expect(through.tree.get('usr/bin/y')).toMatchObject({ type: 'file', content: 'y' });
  });

  it('a source link to a file .dockerignore excludes is not found (dockerd: "/secret.txt" not found)', async () => {
    await expect(build('COPY pub /x/')).rejects.toThrow(/Dockerfile:2: COPY: "pub" not found/);
    const { tree } = await build('COPY p* /x/');
    expect(tree.has('x/pub')).toBe(false);
  });

  it('COPY/ADD --exclude drops paths matched below each source directory, repeatable, with "!" exceptions (BuildKit testExcludedFilesOnCopy)', async () => {
    const { tree } = await build(
      'COPY --exclude=*/*.png ex /e1/\nADD --exclude=*.mp3 ex/dir3/ /e3/\nCOPY --exclude=*.png --exclude=*.mp3 --exclude=*.pdf ex/dir* /e4/\nADD --exclude=* ex/dir* /e6/\nCOPY --exclude=dir1 --exclude=!dir1/b.txt ex /e7/\nARG PAT=*.txt\nCOPY --exclude=$PAT ex/dir1 /e8/',
    );
    expect(tree.get('e1/dir1/b.txt')).toMatchObject({ content: '3' });
    expect(tree.get('e1/dir2/c.pdf')).toMatchObject({ content: '6' });
    expect(tree.has('e1/dir1/a.png')).toBe(false);
    expect(tree.has('e1/dir2/d.png')).toBe(false);
    expect(tree.has('e3/e.mp3')).toBe(false);
    expect(tree.get('e3/e.mpeg')).toMatchObject({ content: '10' });
    expect([...tree.keys()].filter((k) => k.startsWith('e4/')).sort()).toEqual(['e4/b.txt', 'e4/e.mpeg']);
    // Everything excluded: the destination is still made, empty.
    expect(tree.get('e6')).toMatchObject({ type: 'directory' });
    expect([...tree.keys()].filter((k) => k.startsWith('e6/'))).toEqual([]);
    expect(tree.get('e7/dir1/b.txt')).toMatchObject({ content: '3' });
    expect(tree.has('e7/dir1/a.png')).toBe(false);
    expect(tree.get('e7/dir3/e.mp3')).toMatchObject({ content: '9' });
    expect(tree.has('e8/b.txt')).toBe(false);
    expect(tree.get('e8/a.png')).toMatchObject({ content: '2' });
  });

  it('--exclude is part of the cache key: another pattern gives another layer; a bad pattern fails on its line', async () => {
    const cache = new Map<string, CachedStep>();
    const one = await build('COPY --exclude=*.png ex/dir1 /x/', {}, { cache });
    const two = await build('COPY --exclude=*.txt ex/dir1 /x/', {}, { cache });
    expect(two.cached).toEqual([false]);
    expect(two.digests).not.toEqual(one.digests);
    await expect(build('COPY --exclude=[a ex /x/')).rejects.toThrow(/Dockerfile:2: COPY: --exclude: pattern "\[a" has an unterminated character class/);
  });

  it('COPY --parents keeps each source\'s path (directories as the source has them), from the /./ pivot when there is one', async () => {
    const { tree } = await build('COPY --parents px/a.txt py/a.txt /p1/\nCOPY --parents ./px/./sub/deep.txt /p2/\nCOPY --parents p*/a.txt /p3/\nCOPY --parents px/sub /p4/\nCOPY --parents --exclude=px/*.txt --exclude=*.txt px/ /p5/');
    expect(tree.get('p1/px/a.txt')).toMatchObject({ content: 'px' });
    expect(tree.get('p1/py/a.txt')).toMatchObject({ content: 'py' });
    expect(tree.get('p1/px')).toMatchObject({ type: 'directory', mode: 0o750 });
    expect(tree.get('p2/sub/deep.txt')).toMatchObject({ content: 'deep' });
    expect(tree.get('p2/sub')).toMatchObject({ type: 'directory', mode: 0o700 });
    expect(tree.has('p2/px')).toBe(false);
    expect(tree.get('p3/px/a.txt')).toMatchObject({ content: 'px' });
    expect(tree.get('p3/py/a.txt')).toMatchObject({ content: 'py' });
    expect(tree.get('p4/px/sub/deep.txt')).toMatchObject({ content: 'deep' });
    expect(tree.get('p4/px/sub')).toMatchObject({ mode: 0o700 });
    // With --parents, --exclude matches from the pivot (BuildKit copies the pivot with the source as an include pattern).
    expect(tree.has('p5/px/a.txt')).toBe(false);
    expect(tree.get('p5/px/sub/deep.txt')).toMatchObject({ content: 'deep' });
  });

  it('--chmod takes symbolic modes, applied to each entry\'s own mode (X only to directories and executables); a bad one fails on its line', async () => {
    const { tree } = await build('COPY --chmod=u+x,go-r f.txt /c1/\nCOPY --chmod=a=r,u+w dir /c2/\nCOPY --chmod=go-w,+X tool f.txt dir /c3/\nADD --chmod=g=u f.txt /c4/');
    expect(tree.get('c1/f.txt')).toMatchObject({ mode: 0o700 });
    expect(tree.get('c2/a.txt')).toMatchObject({ mode: 0o644 });
    expect(tree.get('c2/sub')).toMatchObject({ mode: 0o644 });
    expect(tree.get('c3/tool')).toMatchObject({ mode: 0o755 });
    expect(tree.get('c3/f.txt')).toMatchObject({ mode: 0o644 });
    expect(tree.get('c3/sub')).toMatchObject({ mode: 0o711 });
    expect(tree.get('c4/f.txt')).toMatchObject({ mode: 0o664 });
    await expect(build('COPY --chmod=u+q f.txt /c/')).rejects.toThrow(/Dockerfile:2: COPY: --chmod="u\+q" is neither an octal mode/);
  });

  it('heredoc sources are files named by their delimiter, 0644 root-owned: expanded unless quoted, <<- strips tabs, several per instruction', async () => {
    const { tree } = await build(
      'ARG WHO=world\nCOPY <<EOF /h1\nhello $WHO\nEOF\nCOPY <<"EOF" /h2\nhello $WHO\nEOF\nCOPY <<-EOF /h3\n\t\tindented\n\tEOF\nCOPY <<A <<B /h4/\none\nA\ntwo\nB\nCOPY --chmod=755 --chown=app <<EOF f.txt /h5/\n#!/bin/sh\nEOF\nADD <<EOF /h6/\nadded\nEOF',
    );
    expect(tree.get('h1')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, content: 'hello world\n' });
    expect(tree.get('h2')).toMatchObject({ content: 'hello $WHO\n' });
    expect(tree.get('h3')).toMatchObject({ content: 'indented\n' });
    expect(tree.get('h4/A')).toMatchObject({ content: 'one\n' });
    expect(tree.get('h4/B')).toMatchObject({ content: 'two\n' });
    expect(tree.get('h5/EOF')).toMatchObject({ mode: 0o755, uid: 1000, gid: 1000, content: '#!/bin/sh\n' });
    expect(tree.get('h5/f.txt')).toMatchObject({ mode: 0o755, uid: 1000, content: 'hello\n' });
    expect(tree.get('h6/EOF')).toMatchObject({ content: 'added\n' });
  });

  it('ADD --checksum is refused for a local source (as BuildKit), and without a fetcher a URL fails on its line', async () => {
    await expect(build(`ADD --checksum=sha256:${'0'.repeat(64)} f.txt /x`)).rejects.toThrow('Dockerfile:2: ADD: --checksum can only be used with a URL source');
    await expect(build('ADD --checksum=md5:abc f.txt /x')).rejects.toThrow('Dockerfile:2: ADD: --checksum="md5:abc" is not a digest like sha256:<64 hex digits>');
    await expect(build('ADD https://example.test/x /x')).rejects.toThrow('Dockerfile:2: ADD: https://example.test/x: this worker cannot fetch URLs');
  });

  it('ADD <url>: a 304 to the conditional request keeps the key; a step that then misses fetches the file again, and fails on its line if it changed meanwhile', async () => {
    let body = 'remote v1\n';
    const asked: Array<string | null> = [];
    let answer304 = true;
    const sources: SourceFetcher = {
      async fetch(_url, file, validators) {
        asked.push(validators?.etag ?? null);
        if (validators && answer304) return { notModified: true };
        writeFileSync(file, body);
        return { notModified: false, sha256: createHash('sha256').update(body).digest('hex'), size: body.length, etag: '"e1"', lastModified: 'Wed, 01 Jul 2020 12:00:00 GMT' };
      },
    };
    const cache = new Map<string, CachedStep>();
    const one = await build('ADD https://files.test/dl/tool /t/', {}, { cache, sources });
    expect(one.tree.get('t/tool')).toMatchObject({ type: 'file', mode: 0o600, mtime: 1593604800, content: 'remote v1\n' });
    // The step's entry is gone (say, collected) but the URL's validators are remembered.
    for (const [k, v] of cache) if (!v.remote) cache.delete(k);
    asked.length = 0;
    const two = await build('ADD https://files.test/dl/tool /t/', {}, { cache, sources });
    expect(asked).toEqual(['"e1"', null]);
    expect(two.cached).toEqual([false]);
    expect(two.digests).toEqual(one.digests);
    for (const [k, v] of cache) if (!v.remote) cache.delete(k);
    body = 'remote v2\n';
    await expect(build('ADD https://files.test/dl/tool /t/', {}, { cache, sources })).rejects.toThrow('Dockerfile:2: ADD: https://files.test/dl/tool changed while this build was running; build again');
    answer304 = false;
    const three = await build('ADD https://files.test/dl/tool /t/', {}, { cache, sources });
    expect(three.tree.get('t/tool')).toMatchObject({ content: 'remote v2\n' });
  });

  it('a heredoc\'s content is part of the cache key', async () => {
    const cache = new Map<string, CachedStep>();
    await build('COPY <<EOF /h\none\nEOF', {}, { cache });
    const same = await build('COPY <<EOF /h\none\nEOF', {}, { cache });
    const other = await build('COPY <<EOF /h\ntwo\nEOF', {}, { cache });
    expect(same.cached).toEqual([true]);
    expect(other.cached).toEqual([false]);
    expect(other.tree.get('h')).toMatchObject({ content: 'two\n' });
  });

  it('COPY --link writes its layer without the image below: destination links are not followed, and its parents are created', async () => {
    const { tree, layers } = await build('COPY --link tool /bin/tool\nCOPY --link f.txt /usr/share/existing/f\nCOPY --link --chown=app f.txt /made/');
    // The layer holds bin/ as a directory: stacked on the base it replaces the /bin link, as BuildKit's merge does.
    expect(layers[0].get('bin')).toMatchObject({ type: 'directory', mode: 0o755 });
    expect(layers[0].get('bin/tool')).toMatchObject({ type: 'file', mode: 0o755 });
    expect(layers[0].has('usr/bin/tool')).toBe(false);
    expect(layers[1].get('usr/share/existing')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0, gid: 0 });
    expect(tree.get('made')).toMatchObject({ uid: 1000, gid: 1000 });
  });

  it('a --link layer is reused on a changed base (same layer digest, a cache hit); the steps after it still miss', async () => {
    const cache = new Map<string, CachedStep>();
    const lines = 'COPY --link f.txt /l/\nCOPY --link --exclude=*.png ex /l/\nCOPY tool /after/';
    const one = await build(lines, {}, { cache });
    const other = (await sink.store(new LayerWriter().pack([...BASE, { type: 'file', path: 'changed', content: Buffer.from('new base') }]))) as typeof base;
    const two = await build(lines, {}, { cache, base: other });
    expect(two.cached).toEqual([true, true, false]);
    expect(two.digests.slice(0, 2)).toEqual(one.digests.slice(0, 2));
    expect(two.tree.get('changed')).toMatchObject({ content: 'new base' });
    expect(two.tree.get('l/f.txt')).toMatchObject({ content: 'hello\n' });
    // Without --link, the same copy on the other base misses.
    const plain = await build('COPY f.txt /l/', {}, { cache, base: other });
    expect(plain.cached).toEqual([false]);
  });
});

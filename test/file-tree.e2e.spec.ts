// COPY, ADD and WORKDIR give the file tree BuildKit gives (issue 11): one Dockerfile covering WORKDIR
// ownership, --chown on created directories, symlink sources, destinations through the image's
// symlinks on a merged-/usr base, local archives and --chmod, built by Strata and by dockerd 20.10's
// BuildKit from the same imported base, and the two images compared as file trees.
import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { parseWhiteout, readTarEntries } from '@strata/oci';
import { DOCKER, type Dockerd, run, startDockerd } from './support/dockerd.js';
import { mergedUsrRootfs } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(300_000);

interface Node {
  type: string;
  mode: string;
  owner: string;
  target?: string;
  sha256?: string;
}

/** Stacks layer tars (gzip or not) into one tree, whiteouts applied; hard links are the file they name. */
async function treeOf(layers: Buffer[]): Promise<Map<string, Node>> {
  const tree = new Map<string, Node>();
  for (const layer of layers) {
    for await (const { header, body } of readTarEntries(Readable.from([layer]))) {
      const name = header.name.replace(/^(\.\/)+/, '').replace(/^\/+/, '');
      const wh = parseWhiteout(name);
      if (wh) {
        body.resume();
        const gone = wh.kind === 'opaque' ? `${wh.directory}/` : wh.removed;
        for (const p of [...tree.keys()]) if (p === gone || p.startsWith(gone.endsWith('/') ? gone : `${gone}/`)) tree.delete(p);
        continue;
      }
      if (name === '' || name === '.') {
        body.resume();
        continue;
      }
      if (header.type === 'hardlink') {
        body.resume();
        const linked = tree.get(header.linkname.replace(/^(\.\/)+/, '').replace(/^\/+/, ''));
        if (linked) tree.set(name, { ...linked });
        continue;
      }
      const node: Node = { type: header.type, mode: (header.mode & 0o7777).toString(8), owner: `${header.uid}:${header.gid}` };
      if (header.type === 'symlink') node.target = header.linkname;
      if (header.type === 'file') {
        const h = createHash('sha256');
        for await (const c of body) h.update(c as Buffer);
        node.sha256 = h.digest('hex').slice(0, 16);
      } else body.resume();
      // A non-directory replacing a directory hides what was below it.
      if (header.type !== 'directory') for (const p of [...tree.keys()]) if (p.startsWith(`${name}/`)) tree.delete(p);
      tree.set(name, node);
    }
  }
  return tree;
}

/** The layers of an image-layout or `docker save` directory, bottom first. */
function layersOfSave(dir: string): Buffer[] {
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8'))[0];
  return manifest.Layers.map((l: string) => readFileSync(path.join(dir, l)));
}

function layersOfOciLayout(dir: string): Buffer[] {
  const index = JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8'));
  const blob = (digest: string) => readFileSync(path.join(dir, 'blobs', ...digest.split(':')));
  const manifest = JSON.parse(blob(index.manifests[0].digest).toString('utf8'));
  return manifest.layers.map((l: { digest: string }) => blob(l.digest));
}

const DOCKERFILE = [
  'FROM usrmerge:1 AS unpacked',
  'ADD arch.tar /d/',
  'FROM usrmerge:1',
  'USER app',
  'WORKDIR /w1/w2',
  'WORKDIR /opt/sub',
  'WORKDIR /tmp',
  'USER root',
  'WORKDIR /abs/x',
  'WORKDIR /',
  'COPY --chown=1000:1000 f.txt /c1/c2/c3/',
  'COPY --chown=app dir /c4/d/',
  'COPY dir /c5/',
  'COPY --chown=1000:1000 dir /opt/',
  'COPY link /s1/',
  'COPY chain1 /s2/',
  'COPY dlink /s3/',
  'COPY tool /bin/tool',
  'COPY tool /l1/tool',
  'COPY f.txt /bin',
  'ADD arch.tar /a1/',
  'ADD arch.tar.gz /a2/',
  'ADD arch.tar.bz2 /a3/',
  'ADD arch.tar.xz /a4/',
  'ADD arch.tar.gz /a5/named.tar',
  'ADD --chown=1000:1000 arch.tar /a6/',
  'ADD notar.tar /a7/',
  'COPY arch.tar /a8/',
  'COPY --chmod=0640 f.txt /m1/',
  'COPY --chmod=711 dir /m2/',
  // A stage's files keep their owners; a link named as the source is followed inside that stage.
  'COPY --from=unpacked /d /fromd/',
  'COPY --from=unpacked /d/x/abs /fromlink/',
  // The merged-/usr symptom: a COPY into /bin must leave /bin/sh reachable.
  'RUN /bin/tool > /ran && ls -ld /bin | cut -c1 > /binkind',
  '',
].join('\n');

describe('COPY, ADD and WORKDIR: the same file tree as dockerd 20.10 BuildKit', () => {
  let stack: Stack;
  let token: string;
  let dockerd: Dockerd;
  let rootfs: string;
  let context: string;
  const work = mkdtempSync(path.join(tmpdir(), 'strata-file-tree-'));

  beforeAll(async () => {
    [stack, dockerd] = await Promise.all([startStack(), startDockerd('sft-')]);
    ({ token } = await stack.tenant('filetree'));
    rootfs = mergedUsrRootfs();
    const baseTar = path.join(work, 'base.tar');
    writeFileSync(baseTar, tarOf(rootfs));
    const imported = await api(stack, token, 'POST', '/v1/repositories/usrmerge/import?tag=1', readFileSync(baseTar), 'application/x-tar');
    expect(imported.status).toBe(201);
    await dockerd.docker('import', baseTar, 'usrmerge:1');

    context = makeDir({
      Dockerfile: DOCKERFILE,
      'f.txt': 'hello\n',
      tool: { content: '#!/bin/sh\necho tool ran\n', mode: 0o755 },
      'dir/a.txt': 'a',
      'dir/sub/b.txt': 'b',
      'dir/ln': { content: '', symlink: 'a.txt' },
      link: { content: '', symlink: 'f.txt' },
      chain1: { content: '', symlink: 'chain2' },
      chain2: { content: '', symlink: 'f.txt' },
      dlink: { content: '', symlink: 'dir' },
      'notar.tar': 'not a tar\n',
      'arc/top.txt': 'top',
      'arc/x/y/z.txt': 'inner',
    });
    execFileSync('chmod', ['750', path.join(context, 'dir')]);
    execFileSync('chmod', ['700', path.join(context, 'dir/sub')]);
    execFileSync('chmod', ['705', path.join(context, 'arc/x')]);
    execFileSync('ln', [path.join(context, 'arc/top.txt'), path.join(context, 'arc/x/hard')]);
    execFileSync('ln', ['-s', '/etc/passwd', path.join(context, 'arc/x/abs')]);
    for (const p of ['arc', 'arc/top.txt', 'arc/x', 'arc/x/y', 'arc/x/y/z.txt']) chownSync(path.join(context, p), 1234, 4321);
    execFileSync('tar', ['-C', path.join(context, 'arc'), '-cf', path.join(context, 'arch.tar'), '.']);
    rmSync(path.join(context, 'arc'), { recursive: true });
    for (const [tool, ext] of [['gzip', 'gz'], ['bzip2', 'bz2'], ['xz', 'xz']]) {
      writeFileSync(path.join(context, `arch.tar.${ext}`), execFileSync(tool, ['-c', path.join(context, 'arch.tar')], { maxBuffer: 64 * 1024 * 1024 }));
    }
  });

  afterAll(async () => {
    try {
      await dockerd?.stop();
    } finally {
      await stack?.close();
      for (const d of [work, rootfs, context]) if (d) rmSync(d, { recursive: true, force: true });
    }
  });

  it('builds the Dockerfile to the tree BuildKit builds', async () => {
    const built = await build(stack, token, 'repository=filetree&tag=1', tarOf(context));
    expect(built.error).toBeNull();
    expect(built.status).toBe('succeeded');
    const res = await fetch(`${stack.url}/v1/repositories/filetree/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const layout = path.join(work, 'strata');
    execFileSync('mkdir', ['-p', layout]);
    writeFileSync(path.join(work, 'strata.tar'), Buffer.from(await res.arrayBuffer()));
    execFileSync('tar', ['-xf', path.join(work, 'strata.tar'), '-C', layout]);
    const strata = await treeOf(layersOfOciLayout(layout));

    await run(DOCKER, ['build', '--network', 'none', '-q', '-t', 'filetree:1', context], { ...dockerd.env, DOCKER_BUILDKIT: '1' });
    const saved = path.join(work, 'docker');
    execFileSync('mkdir', ['-p', saved]);
    execFileSync('sh', ['-c', `"$0" save filetree:1 | tar -x -C "$1"`, '/usr/bin/docker', saved], { env: { ...process.env, ...dockerd.env } });
    const docker = await treeOf(layersOfSave(saved));

    // What the user sees, spot-checked by name before the whole comparison.
    expect(strata.get('bin')).toEqual({ type: 'symlink', mode: '777', owner: '0:0', target: 'usr/bin' });
    expect(strata.get('usr/bin/tool')).toMatchObject({ type: 'file', mode: '755' });
    expect(strata.get('ran')?.sha256).toBe(createHash('sha256').update('tool ran\n').digest('hex').slice(0, 16));
    expect(strata.get('binkind')?.sha256).toBe(createHash('sha256').update('l\n').digest('hex').slice(0, 16));
    expect(strata.get('w1/w2')).toMatchObject({ type: 'directory', owner: '1000:1000', mode: '755' });
    expect(strata.get('usr/local/x')).toMatchObject({ type: 'directory' });
    expect(strata.get('c1/c2')).toMatchObject({ owner: '1000:1000' });
    expect(strata.get('s1/link')).toMatchObject({ type: 'file' });
    expect(strata.get('a5/named.tar/x/y/z.txt')).toMatchObject({ owner: '1234:4321' });
    expect(strata.get('fromd/x/y/z.txt')).toMatchObject({ owner: '1234:4321' });
    expect(strata.get('fromlink/abs')).toMatchObject({ type: 'file', sha256: strata.get('etc/passwd')?.sha256 });

    // dev, proc and sys are the mount points BuildKit's RUN leaves in its layer; not what this test is about.
    const compared = (t: Map<string, Node>) =>
      [...t.entries()].filter(([p]) => !/^(dev|proc|sys)(\/|$)/.test(p)).map(([p, n]) => `${p} ${JSON.stringify(n)}`).sort();
    expect(compared(strata)).toEqual(compared(docker));
  });
});

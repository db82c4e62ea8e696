import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { storageFromConfig } from '@strata/blobstore';
import { ImageStore } from '@strata/registry';
import { WorkerRuntime } from '../apps/worker/src/runtime-adapter.js';
import { encodeTarHeader, tarEndOfArchive } from '@strata/oci';
import { fileEntry } from './bad-input/corpus.js';
import { importBusybox } from './support/images.js';
import { build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(120_000);

function unpack(archive: Buffer, tag: string): { rootfs: string; bundle: string } {
  const work = mkdtempSync(path.join(tmpdir(), 'strata-run-oci-'));
  writeFileSync(path.join(work, 'image.tar'), archive);
  mkdirSync(path.join(work, 'layout'));
  execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', path.join(work, 'layout')]);
  const bundle = path.join(work, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:${tag}`, bundle], { stdio: 'pipe' });
  return { rootfs: path.join(bundle, 'rootfs'), bundle };
}

describe('RUN steps in runc containers', () => {
  let stack: Stack;
  let token: string;
  let tenantId: string;

  const download = async (repo: string, tag: string): Promise<Buffer> => {
    const res = await fetch(`${stack.url}/v1/repositories/${repo}/tags/${tag}/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    return Buffer.from(await res.arrayBuffer());
  };
  const buildDir = (repo: string, files: Parameters<typeof makeDir>[0]) => build(stack, token, `repository=${repo}&tag=1`, tarOf(makeDir(files)));

  beforeAll(async () => {
    stack = await startStack();
    ({ token, tenantId } = await stack.tenant('run'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  const main = [
    'FROM busybox:1',
    'RUN echo hi > /greeting && echo "bob:x:1001:1001::/home/bob:/bin/sh" >> /etc/passwd && mkdir -p /home/bob',
    'USER app',
    'WORKDIR /work',
    'RUN touch mine && id -u > /work/uid',
    'RUN true',
    'CMD ["cat", "/greeting"]',
    '',
  ].join('\n');

  it('runs RUN on busybox, keeps USER/WORKDIR ownership, and the image runs under runc', async () => {
    const started = Date.now();
    const result = await buildDir('run/basic', { Dockerfile: main });
    const elapsed = Date.now() - started;
    expect(result.error).toBeNull();
    expect(result.status).toBe('succeeded');
    const runs = result.steps.filter((s: { instruction: string }) => s.instruction.startsWith('RUN'));
    // Per-RUN overhead seen end to end (container start, snapshot mount, diff, pack, upload).
    process.stdout.write(`RUN steps: ${runs.map((s: { durationMs: number }) => s.durationMs).join(', ')} ms; whole build ${elapsed} ms\n`);
    expect(runs[2].layerDigest).toBeNull();

    const { rootfs, bundle } = unpack(await download('run/basic', '1'), '1');
    expect(readFileSync(path.join(rootfs, 'greeting'), 'utf8')).toBe('hi\n');
    expect(readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8')).toContain('bob:x:1001');
    expect(statSync(path.join(rootfs, 'work/mine')).uid).toBe(1000);
    expect(readFileSync(path.join(rootfs, 'work/uid'), 'utf8')).toBe('1000\n');
    // runc's mount points (/proc, /dev, /etc/hosts ...) must not leak into layers.
    expect(existsSync(path.join(rootfs, 'etc/hosts'))).toBe(false);

    const layout = path.dirname(bundle);
    const archive = path.join(layout, 'image.tar');
    const config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${archive}:1`], { encoding: 'utf8' }));
    const history = config.history.filter((h: { comment?: string }) => h.comment === 'buildkit.dockerfile.v0');
    expect(history.map((h: { created_by: string; empty_layer?: boolean }) => [h.created_by.slice(0, 12), h.empty_layer ?? false])).toEqual([
      ['RUN /bin/sh ', false],
      ['USER app', true],
      // WORKDIR makes its directory in a layer, as BuildKit does.
      ['WORKDIR /wor', false],
      ['RUN /bin/sh ', false],
      ['RUN /bin/sh ', true],
      // BuildKit prints CMD with Go's %q: ["cat" "/work/mine"].
      ['CMD ["cat" "', true],
    ]);

    // umoci makes the bundle's rootfs 0700; the image runs as `app`, which must be able to enter it.
    chmodSync(rootfs, 0o755);
    const spec = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8'));
    spec.process.terminal = false;
    spec.process.args = ['/bin/cat', '/greeting', '/work/uid'];
    writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const out = execFileSync('runc', ['run', '--bundle', bundle, `strata-run-test-${process.pid}`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toBe('hi\n1000\n');
  });

  it('takes every step from the cache when nothing changed', async () => {
    await buildDir('run/again', { Dockerfile: main });
    const started = Date.now();
    const result = await buildDir('run/again', { Dockerfile: main });
    process.stdout.write(`no-op rebuild: ${Date.now() - started} ms\n`);
    expect(result.status).toBe('succeeded');
    expect(result.steps.every((s: { cached: boolean }) => s.cached)).toBe(true);
  });

  it('copies from another stage with COPY --from, symlinks resolved inside that stage', async () => {
    const result = await buildDir('run/multi', {
      Dockerfile: [
        'FROM busybox:1 AS builder',
        'RUN mkdir -p /out && echo built > /out/artifact && ln -s / /out/hostroot',
        'FROM busybox:1',
        'COPY --from=builder /out/artifact /app/artifact',
        'COPY --from=builder /out/hostroot/etc/passwd /app/passwd',
        'RUN --mount=type=bind,from=builder,source=/out,target=/mnt cat /mnt/artifact > /app/via-bind',
        '',
      ].join('\n'),
    });
    expect(result.error).toBeNull();
    const { rootfs } = unpack(await download('run/multi', '1'), '1');
    expect(readFileSync(path.join(rootfs, 'app/artifact'), 'utf8')).toBe('built\n');
    expect(readFileSync(path.join(rootfs, 'app/via-bind'), 'utf8')).toBe('built\n');
    // The stage's own /etc/passwd, not the worker's.
    expect(readFileSync(path.join(rootfs, 'app/passwd'), 'utf8')).toBe('root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n');
    expect(existsSync(path.join(rootfs, 'out'))).toBe(false);
  });

  it('copies a directory from a stage of several RUN layers (deletes, links, modes) the same whether its layers were just written or come from the store', async () => {
    const files = {
      Dockerfile: [
        'FROM busybox:1 AS builder',
        'RUN mkdir -p /out/sub && echo one > /out/a && echo two > /out/b && echo gone > /out/c && chmod 600 /out/b',
        'RUN rm /out/c && echo new > /out/a2 && ln /out/a2 /out/sub/hard && ln -s a2 /out/link && chmod 750 /out/sub',
        'FROM busybox:1 AS final',
        'COPY --from=builder /out/ /app/',
        'COPY --from=builder /etc/group /app/group',
        '',
      ].join('\n'),
    };
    const first = await buildDir('run/from-layers', files);
    expect(first.error).toBeNull();
    const { rootfs } = unpack(await download('run/from-layers', '1'), '1');
    expect(readdirSync(path.join(rootfs, 'app')).sort()).toEqual(['a', 'a2', 'b', 'group', 'link', 'sub']);
    expect(readFileSync(path.join(rootfs, 'app/sub/hard'), 'utf8')).toBe('new\n');
    expect(readlinkSync(path.join(rootfs, 'app/link'))).toBe('a2');
    expect(statSync(path.join(rootfs, 'app/b')).mode & 0o777).toBe(0o600);
    expect(statSync(path.join(rootfs, 'app/sub')).mode & 0o777).toBe(0o750);
    expect(readFileSync(path.join(rootfs, 'app/group'), 'utf8')).toContain('root:x:0:');
    // Again with the builder stage cached (its layers read from the store, not from this build's
    // steps) and the final stage forced to run: the same COPY layers.
    const again = await build(stack, token, 'repository=run/from-layers&tag=2&noCacheFilter=final', tarOf(makeDir(files)));
    expect(again.error).toBeNull();
    const copies = (b: typeof first) => b.steps.filter((s: { instruction: string }) => s.instruction.startsWith('COPY')).map((s: { layerDigest: string; cached: boolean }) => [s.layerDigest, s.cached]);
    expect(copies(again).map(([, cached]: [string, boolean]) => cached)).toEqual([false, false]);
    expect(copies(again).map(([d]: [string]) => d)).toEqual(copies(first).map(([d]: [string]) => d));
  });

  it('runs on top of a COPY of context files with their modes and owners, and a RUN that changes them changes neither the context nor the next build', async () => {
    const files = {
      Dockerfile: [
        'FROM busybox:1',
        'COPY src/ /app/src/',
        'RUN stat -c "%n %a %u:%g %Y" /app/src/run.sh /app/src/sub/data.txt > /app/stat && readlink /app/src/link >> /app/stat',
        'RUN echo changed >> /app/src/sub/data.txt && cat /app/src/sub/data.txt > /app/after',
        '',
      ].join('\n'),
      'src/run.sh': { content: '#!/bin/sh\n', mode: 0o750 },
      'src/sub/data.txt': 'original\n',
      'src/link': { content: '', symlink: 'run.sh' },
    };
    const ctx = tarOf(makeDir(files));
    const first = await build(stack, token, 'repository=run/linked&tag=1', ctx);
    expect(first.error).toBeNull();
    const one = unpack(await download('run/linked', '1'), '1');
    const stat = readFileSync(path.join(one.rootfs, 'app/stat'), 'utf8').trim().split('\n');
    expect(stat[0]).toMatch(/^\/app\/src\/run\.sh 750 0:0 \d+$/);
    expect(stat[1]).toMatch(/^\/app\/src\/sub\/data\.txt 644 0:0 \d+$/);
    expect(stat[2]).toBe('run.sh');
    expect(readFileSync(path.join(one.rootfs, 'app/after'), 'utf8')).toBe('original\nchanged\n');
    // The same context again, from scratch (no cache): the COPY sees the original file.
    const again = await build(stack, token, 'repository=run/linked&tag=2&noCache=true', ctx);
    expect(again.error).toBeNull();
    const two = unpack(await download('run/linked', '2'), '2');
    expect(readFileSync(path.join(two.rootfs, 'app/after'), 'utf8')).toBe('original\nchanged\n');
    // The COPY made the same layer again: the context's files are as they were.
    expect(again.steps[0].instruction).toBe('COPY src/ /app/src/');
    expect(again.steps[0].cached).toBe(false);
    expect(again.steps[0].layerDigest).toBe(first.steps[0].layerDigest);
  });

  it('keeps a cache mount across builds, and supports tmpfs and context bind mounts', async () => {
    const first = await buildDir('run/cache', {
      Dockerfile: 'FROM busybox:1\nRUN --mount=type=cache,target=/var/cache/app,id=c1 echo one > /var/cache/app/f && echo wrote\n',
    });
    expect(first.error).toBeNull();
    const second = await buildDir('run/cache', {
      Dockerfile: [
        'FROM busybox:1',
        'RUN --mount=type=cache,target=/var/cache/app,id=c1 cat /var/cache/app/f > /seen',
        'RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && test -f /scratch/x && echo tmpfs-ok > /tmpfs',
        'RUN --mount=type=bind,source=data.txt,target=/data.txt cat /data.txt > /bound',
        '',
      ].join('\n'),
      'data.txt': 'from context\n',
    });
    expect(second.error).toBeNull();
    const { rootfs } = unpack(await download('run/cache', '1'), '1');
    expect(readFileSync(path.join(rootfs, 'seen'), 'utf8')).toBe('one\n');
    expect(readFileSync(path.join(rootfs, 'tmpfs'), 'utf8')).toBe('tmpfs-ok\n');
    expect(readFileSync(path.join(rootfs, 'bound'), 'utf8')).toBe('from context\n');
    // Neither the cache contents nor the mount points end up in the image.
    expect(existsSync(path.join(rootfs, 'var/cache/app'))).toBe(false);
    expect(existsSync(path.join(rootfs, 'scratch'))).toBe(false);
    expect(existsSync(path.join(rootfs, 'data.txt'))).toBe(false);
  });

  it('fails the build when a RUN exits non-zero, with the exit code, the last output and the line', async () => {
    const result = await buildDir('run/fail', {
      Dockerfile: 'FROM busybox:1\nRUN echo fine\nRUN echo "about to fail" && echo "on stderr" >&2 && exit 3\nRUN echo never\n',
    });
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(3);
    expect(result.error.message).toContain('exited with code 3');
    // stdout and stderr are separate pipes: both lines are there, in either order.
    expect(result.error.message).toMatch(/last output:\n(about to fail\non stderr|on stderr\nabout to fail)$/);
    expect(result.error.message).toMatch(/^Dockerfile:3: RUN: /);
  });

  describe('a RUN before the first COPY, while the context is fetched (the Dockerfile read at upload)', () => {
    const dockerfile = 'FROM busybox:1\nRUN echo one > /one\nCOPY src/ /src/\nRUN ls /src | wc -l > /count\n';
    const files = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`src/f${i}.txt`, `file ${i}\n`]));

    it('builds the image the Dockerfile read from the context builds: the api keeps a plain Dockerfile, the worker reads a linked one', async () => {
      const earlyTar = tarOf(makeDir({ Dockerfile: dockerfile, ...files }));
      const early = await build(stack, token, 'repository=run/early&tag=1', earlyTar);
      const late = await buildDir('run/late', { 'docker/Dockerfile': dockerfile, Dockerfile: { content: '', symlink: 'docker/Dockerfile' }, ...files });
      for (const [result, repo] of [[early, 'run/early'], [late, 'run/late']] as const) {
        expect(result.error).toBeNull();
        const { rootfs } = unpack(await download(repo, '1'), '1');
        expect(readFileSync(path.join(rootfs, 'one'), 'utf8')).toBe('one\n');
        expect(readFileSync(path.join(rootfs, 'count'), 'utf8')).toBe('40\n');
        expect(readFileSync(path.join(rootfs, 'src/f7.txt'), 'utf8')).toBe('file 7\n');
      }
      const row = (id: string) => stack.prisma.build.findUniqueOrThrow({ where: { id }, select: { dockerfileText: true } });
      expect((await row(early.id)).dockerfileText).toBe(dockerfile);
      expect((await row(late.id)).dockerfileText).toBeNull();
      // The same bytes again: the stored context and the Dockerfile its first build read are taken, and every step hits.
      const again = await build(stack, token, 'repository=run/early&tag=2', earlyTar);
      expect(again.status).toBe('succeeded');
      expect(again.steps.every((s: { cached: boolean }) => s.cached)).toBe(true);
      expect((await row(again.id)).dockerfileText).toBe(dockerfile);
    });

    it('fails with the context\'s own error when the worker refuses the context, whatever ran meanwhile, and tags nothing', async () => {
      const escaping = encodeTarHeader({ name: 'passwd', type: 'hardlink', linkname: '../../../etc/passwd', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 });
      const body = Buffer.concat([fileEntry('Dockerfile', 'FROM busybox:1\nRUN echo ran > /ran\nCOPY . /ctx/\n'), escaping, tarEndOfArchive()]);
      const result = await build(stack, token, 'repository=run/refused&tag=1', body);
      expect(result.status).toBe('failed');
      expect(result.error).toEqual({ line: null, message: expect.stringMatching(/^the build context was refused: refusing tar entry "passwd"/) });
      expect((await stack.prisma.build.findUniqueOrThrow({ where: { id: result.id }, select: { dockerfileText: true } })).dockerfileText).not.toBeNull();
      expect(await stack.prisma.tag.count({ where: { tenantId, repository: { name: 'run/refused' } } })).toBe(0);
    });
  });

  it('keeps RUN away from the worker: its files, its data directory and its services on 127.0.0.1', async () => {
    const dataDir = path.resolve(stack.config.dataDir);
    const pgPort = new URL(stack.config.databaseUrl).port || '5432';
    const apiPort = new URL(stack.url).port;
    const attempts = [
      `ls ${dataDir}/runtime`,
      `cat ${path.resolve('package.json')}`,
      `nc -w 2 127.0.0.1 ${pgPort} </dev/null`,
      `wget -T 2 -q -O- http://127.0.0.1:${apiPort}/`,
    ];
    for (const attempt of attempts) {
      const result = await buildDir('run/escape', { Dockerfile: `FROM busybox:1\nRUN ${attempt}\n` });
      expect([attempt, result.status]).toEqual([attempt, 'failed']);
      expect(result.error.line).toBe(2);
    }
    // Writing "the data directory" inside the container writes the container's own filesystem.
    const marker = `pwned-${process.pid}`;
    const wrote = await buildDir('run/escape', { Dockerfile: `FROM busybox:1\nRUN mkdir -p ${dataDir} && touch ${dataDir}/${marker}\n` });
    expect(wrote.status).toBe('succeeded');
    expect(existsSync(path.join(dataDir, marker))).toBe(false);
  });

  describe('the runtime adapter', () => {
    let runtime: WorkerRuntime;
    let layers: Array<{ descriptor: any; diffId: any }>;
    const request = (args: string[], signal: AbortSignal, output: string[] = []) => ({
      layers,
      args,
      env: ['PATH=/bin'],
      user: 'root',
      cwd: '/',
      network: 'default' as const,
      line: 2,
      onOutput: (_s: string, line: string) => output.push(line),
      signal,
    });

    // Two runtimes: one with a short step time limit, and one whose limit (a minute) never races the out-of-memory kill on a loaded machine.
    let roomyRuntime: WorkerRuntime;
    beforeAll(async () => {
      const storage = await storageFromConfig(stack.config.s3);
      const image = await new ImageStore(stack.prisma, storage.blobs).resolve(tenantId, 'busybox', '1');
      layers = image.manifest.layers.map((descriptor, i) => ({ descriptor, diffId: image.config.rootfs.diff_ids[i] }));
      const run: ConstructorParameters<typeof WorkerRuntime>[0]['run'] = { network: 'none', subnet: '10.213.0.0/16', memoryBytes: 64 * 1024 ** 2, pids: 64, cpus: 0, stepTimeoutMs: 2000, buildTimeoutMs: 60_000, allowInsecure: false, runtime: 'runc', runscPlatform: 'ptrace', dns: [] };
      runtime = new WorkerRuntime({ dataDir: path.join(stack.config.dataDir, 'adapter-test'), storage, run });
      await runtime.init();
      roomyRuntime = new WorkerRuntime({ dataDir: path.join(stack.config.dataDir, 'adapter-test-roomy'), storage, run: { ...run, stepTimeoutMs: 60_000 } });
      await roomyRuntime.init();
    });
    afterAll(async () => {
      await Promise.all([runtime.close(), roomyRuntime.close()]);
    });

    it('kills the container within a second when the build is cancelled', async () => {
      const controller = new AbortController();
      const started = Date.now();
      setTimeout(() => controller.abort(new Error('cancelled')), 300);
      const outcome = await runtime.forTenant(tenantId).run(request(['sleep', '30'], controller.signal));
      await outcome.release();
      expect(outcome.cancelled).toBe(true);
      expect(Date.now() - started).toBeLessThan(1500);
    });

    it('reports a step past its time limit, and one that runs out of memory', async () => {
      const slow = await runtime.forTenant(tenantId).run(request(['sleep', '30'], new AbortController().signal));
      await slow.release();
      expect(slow.timedOut).toBe(true);
      const hog = await roomyRuntime.forTenant(tenantId).run(request(['sh', '-c', 'head -c 500m /dev/zero | tail'], new AbortController().signal));
      await hog.release();
      expect(hog.oomKilled).toBe(true);
      expect(hog.timedOut).toBeFalsy();
    });

    it('streams output lines while the step runs and diffs what it changed', async () => {
      const output: string[] = [];
      const outcome = await runtime.forTenant(tenantId).run(request(['sh', '-c', 'echo a; echo b >&2; echo x > /new; rm /etc/group'], new AbortController().signal, output));
      expect(outcome.exitCode).toBe(0);
      expect(output.sort()).toEqual(['a', 'b']);
      expect(outcome.entries.map((e) => [e.type, e.path])).toEqual(expect.arrayContaining([
        ['whiteout', 'etc/group'],
        ['file', 'new'],
      ]));
      await outcome.release();
    });
  });
});

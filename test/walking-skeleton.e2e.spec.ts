import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

describe('walking skeleton: a tar context in, an OCI image out', () => {
  let stack: Stack;
  let token: string;

  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('skeleton'));
  });
  afterAll(async () => {
    await stack.close();
  });

  const dockerfile = [
    'FROM scratch',
    'COPY app/ /app/',
    'COPY --chmod=755 run.sh /usr/local/bin/run',
    'ENV GREETING="hello world" MODE=prod',
    'WORKDIR /app',
    'CMD ["/usr/local/bin/run", "--serve"]',
    '',
  ].join('\n');
  const files = {
    Dockerfile: dockerfile,
    'app/hello.txt': 'hello from strata\n',
    'app/config/settings.json': '{"a":1}\n',
    'run.sh': { content: '#!/bin/sh\necho run\n', mode: 0o644 },
    'notes.md': 'not copied\n',
  };

  it('builds FROM scratch with COPY, ENV and CMD; skopeo and umoci read the downloaded oci-archive', async () => {
    const ctx = makeDir(files);
    const result = await build(stack, token, 'repository=demo/app&tag=v1&tag=latest', tarOf(ctx));
    expect(result).toMatchObject({ status: 'succeeded', repository: 'demo/app', tags: ['v1', 'latest'], error: null });
    expect(result.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(result.steps.map((s: { instruction: string }) => s.instruction)).toEqual([
      'COPY app/ /app/',
      'COPY --chmod=755 run.sh /usr/local/bin/run',
      'ENV GREETING="hello world" MODE=prod',
      'WORKDIR /app',
      'CMD ["/usr/local/bin/run", "--serve"]',
    ]);
    expect(result.steps[0]).toMatchObject({ stage: 0, index: 0, cached: false, layerDigest: expect.stringMatching(/^sha256:/) });
    expect(result.steps[2].layerDigest).toBeNull();

    const res = await fetch(`${stack.url}/v1/repositories/demo/app/tags/v1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('application/x-tar');
    const work = mkdtempSync(path.join(tmpdir(), 'strata-oci-'));
    const archive = path.join(work, 'image.tar');
    writeFileSync(archive, Buffer.from(await res.arrayBuffer()));

    const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci-archive:${archive}:v1`], { encoding: 'utf8' }));
    expect(inspect.Digest).toBe(result.imageDigest);
    expect(inspect.Env).toEqual(expect.arrayContaining(['GREETING=hello world', 'MODE=prod']));
    // Two COPY layers and WORKDIR's: /app exists already, so it is empty, as BuildKit makes it.
    expect(inspect.Layers).toHaveLength(3);

    const layout = path.join(work, 'layout');
    execFileSync('mkdir', ['-p', layout]);
    execFileSync('tar', ['-xf', archive, '-C', layout]);
    const bundle = path.join(work, 'bundle');
    execFileSync('umoci', ['unpack', '--image', `${layout}:v1`, bundle], { stdio: 'pipe' });
    const rootfs = path.join(bundle, 'rootfs');
    expect(readFileSync(path.join(rootfs, 'app/hello.txt'), 'utf8')).toBe('hello from strata\n');
    expect(readFileSync(path.join(rootfs, 'app/config/settings.json'), 'utf8')).toBe('{"a":1}\n');
    expect(statSync(path.join(rootfs, 'usr/local/bin/run')).mode & 0o777).toBe(0o755);
    expect(statSync(path.join(rootfs, 'app/hello.txt')).mode & 0o777).toBe(0o644);
    expect(() => statSync(path.join(rootfs, 'notes.md'))).toThrow();
    const runtime = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8'));
    expect(runtime.process.args).toEqual(['/usr/local/bin/run', '--serve']);
    expect(runtime.process.env).toEqual(expect.arrayContaining(['GREETING=hello world', 'MODE=prod']));
    expect(runtime.process.cwd).toBe('/app');
  });

  it('gives the same layer digests when the same context is built twice, every step from the cache', async () => {
    const ctx = tarOf(makeDir(files));
    const first = await build(stack, token, 'repository=repro&tag=a', ctx);
    const second = await build(stack, token, 'repository=repro&tag=b', ctx);
    expect(second.status).toBe('succeeded');
    const layers = (b: { steps: Array<{ layerDigest: string | null }> }) => b.steps.map((s) => s.layerDigest);
    expect(layers(second)).toEqual(layers(first));
    expect(second.steps.every((s: { cached: boolean }) => s.cached)).toBe(true);
  });

  it('honours .dockerignore, gzip contexts, globs and --chown', async () => {
    const ctx = makeDir({
      Dockerfile: 'FROM scratch\nCOPY --chown=1000:1000 *.txt /data/\nCOPY . /all/\n',
      '.dockerignore': 'secret.txt\n*.log\n',
      'a.txt': 'a',
      'b.txt': 'b',
      'secret.txt': 'nope',
      'debug.log': 'nope',
    });
    const result = await build(stack, token, 'repository=ignore&tag=1', tarOf(ctx, true), 'application/gzip');
    expect(result.status).toBe('succeeded');
    const res = await fetch(`${stack.url}/v1/repositories/ignore/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    const work = mkdtempSync(path.join(tmpdir(), 'strata-oci-'));
    writeFileSync(path.join(work, 'i.tar'), Buffer.from(await res.arrayBuffer()));
    execFileSync('mkdir', ['-p', `${work}/l`]);
    execFileSync('tar', ['-xf', `${work}/i.tar`, '-C', `${work}/l`]);
    execFileSync('umoci', ['unpack', '--image', `${work}/l:1`, `${work}/b`], { stdio: 'pipe' });
    const root = `${work}/b/rootfs`;
    expect(readFileSync(`${root}/data/a.txt`, 'utf8')).toBe('a');
    expect(statSync(`${root}/data/b.txt`).uid).toBe(1000);
    expect(() => statSync(`${root}/data/secret.txt`)).toThrow();
    expect(() => statSync(`${root}/all/debug.log`)).toThrow();
    expect(readFileSync(`${root}/all/Dockerfile`, 'utf8')).toContain('FROM scratch');
  });

  it('builds FROM an imported base image of the same tenant', async () => {
    const rootfs = makeDir({ 'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n', 'etc/group': 'root:x:0:\napp:x:1000:\n', 'bin/tool': 'x' });
    const imported = await api(stack, token, 'POST', '/v1/repositories/base/import?tag=1', tarOf(rootfs), 'application/x-tar');
    expect(imported.status).toBe(201);
    expect(imported.json.digest).toMatch(/^sha256:/);
    const ctx = makeDir({ Dockerfile: 'FROM base:1\nCOPY --chown=app:app f /home/app/f\nUSER app\n', f: 'x' });
    const result = await build(stack, token, 'repository=derived&tag=1', tarOf(ctx));
    expect(result.status).toBe('succeeded');
    const tags = await api(stack, token, 'GET', '/v1/repositories/derived/tags');
    expect(tags.json.tags).toEqual([expect.objectContaining({ name: '1', digest: result.imageDigest })]);
  });
});

// Peer checks of the /v2 registry with the real clients people use (issue 6): dockerd 20.10 pulls an
// image Strata built and runs it, `docker push` and `buildah push` land in a tenant's namespace, and
// what docker pushed comes back through skopeo and unpacks with umoci. Every client authenticates
// with the Docker token flow, using a Strata API token as the password.
// dockerd is started by this file (test/support/dockerd.ts) and always stopped in afterAll. If it
// cannot start here, the suite fails: no skips.
import { jest } from '@jest/globals';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type Dockerd, run, startDockerd } from './support/dockerd.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';
import { busyboxRootfs } from './support/images.js';

jest.setTimeout(240_000);

describe('registry peers: docker 20.10, buildah, skopeo and umoci against /v2 with token auth', () => {
  let stack: Stack;
  let host: string;
  let tenant: { tenantId: string; token: string; name: string };
  let dockerd: Dockerd;
  const work = mkdtempSync(path.join(tmpdir(), 'srp-'));
  let rootfs: string;
  let rootfsTar: string;
  const docker = (...args: string[]) => dockerd.docker(...args);
  const skopeo = (...args: string[]) => run('skopeo', args, { ...process.env, HOME: work });
  const buildahRoot = path.join(work, 'buildah');
  const buildah = (...args: string[]) =>
    run('buildah', ['--root', path.join(buildahRoot, 'root'), '--runroot', path.join(buildahRoot, 'run'), '--storage-driver', 'vfs', ...args], { ...process.env, HOME: work });

  beforeAll(async () => {
    stack = await startStack();
    host = new URL(stack.url).host;
    tenant = await stack.tenant('peers');
    rootfs = busyboxRootfs();
    rootfsTar = path.join(work, 'busybox.tar');
    writeFileSync(rootfsTar, tarOf(rootfs));
    dockerd = await startDockerd('srd-');
    // Token flow: docker login reads the Bearer challenge and trades x:<API token> at the realm.
    await docker('login', host, '-u', 'x', '-p', tenant.token);
  });

  afterAll(async () => {
    try {
      await dockerd?.stop();
    } finally {
      await stack?.close();
      rmSync(work, { recursive: true, force: true });
      if (rootfs) rmSync(rootfs, { recursive: true, force: true });
    }
  });

  it('docker pulls an image Strata built FROM an imported busybox, and it runs', async () => {
    const imported = await api(stack, tenant.token, 'POST', '/v1/repositories/busybox/import?tag=1', readFileSync(rootfsTar), 'application/x-tar');
    expect(imported.status).toBe(201);
    const ctx = makeDir({
      Dockerfile: 'FROM busybox:1\nCOPY note.txt /srv/note.txt\nRUN echo "and RUN wrote this" > /srv/run.txt\nCMD ["cat", "/srv/note.txt", "/srv/run.txt"]\n',
      'note.txt': 'built by strata, run by docker\n',
    });
    const built = await build(stack, tenant.token, 'repository=peers/app&tag=v1', tarOf(ctx));
    expect(built.status).toBe('succeeded');
    const ref = `${host}/${tenant.name}/peers/app:v1`;
    await docker('pull', ref);
    const out = await docker('run', '--rm', '--network', 'none', ref);
    expect(out).toBe('built by strata, run by docker\nand RUN wrote this\n');
  });

  it('takes a docker push into the tenant namespace, which skopeo pulls back and umoci unpacks', async () => {
    const ref = `${host}/${tenant.name}/docker/busybox:1`;
    await docker('import', '--change', 'CMD ["cat", "/etc/passwd"]', rootfsTar, ref);
    await docker('push', ref);
    // Docker pushes Docker schema 2.
    const head = await fetch(`${stack.url}/v2/${tenant.name}/docker/busybox/manifests/1`, {
      method: 'HEAD',
      headers: { authorization: `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}`, accept: 'application/vnd.docker.distribution.manifest.v2+json' },
    });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.v2+json');

    const inspected = JSON.parse(await skopeo('inspect', '--tls-verify=false', '--creds', `x:${tenant.token}`, `docker://${ref}`));
    expect(inspected.Digest).toBe(head.headers.get('docker-content-digest'));
    const layout = path.join(work, 'from-docker');
    await skopeo('copy', '--src-tls-verify=false', '--src-creds', `x:${tenant.token}`, `docker://${ref}`, `oci:${layout}:t`);
    const bundle = path.join(work, 'from-docker-bundle');
    await run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
    expect(readFileSync(path.join(bundle, 'rootfs/etc/passwd'), 'utf8')).toBe(readFileSync(path.join(rootfs, 'etc/passwd'), 'utf8'));
    expect(readFileSync(path.join(bundle, 'rootfs/bin/busybox')).equals(readFileSync('/bin/busybox'))).toBe(true);
    const config = JSON.parse(readFileSync(path.join(bundle, 'config.json'), 'utf8'));
    expect(config.process.args).toEqual(['cat', '/etc/passwd']);

    // And docker pulls it back by digest after removing its own copy.
    await docker('rmi', ref);
    await docker('pull', `${host}/${tenant.name}/docker/busybox@${inspected.Digest}`);
  });

  it('takes a buildah push of an image buildah made from the busybox rootfs', async () => {
    const ctr = (await buildah('from', 'scratch')).trim();
    await buildah('copy', ctr, rootfs, '/');
    writeFileSync(path.join(work, 'buildah.txt'), 'pushed by buildah\n');
    await buildah('copy', ctr, path.join(work, 'buildah.txt'), '/srv/buildah.txt');
    await buildah('config', '--cmd', 'cat /srv/buildah.txt', ctr);
    await buildah('commit', ctr, 'localhost/peers-buildah:1');
    await buildah('rm', ctr);
    const ref = `${host}/${tenant.name}/buildah/busybox:1`;
    await buildah('push', '--tls-verify=false', '--creds', `x:${tenant.token}`, 'localhost/peers-buildah:1', `docker://${ref}`);

    const tags = await fetch(`${stack.url}/v2/${tenant.name}/buildah/busybox/tags/list`, {
      headers: { authorization: `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}` },
    });
    expect(((await tags.json()) as { tags: string[] }).tags).toEqual(['1']);
    // docker runs what buildah pushed.
    const out = await docker('run', '--rm', '--network', 'none', ref);
    expect(out).toBe('pushed by buildah\n');
  });

  it('refuses docker pulls and pushes across tenants', async () => {
    const other = await stack.tenant('peers-other');
    await docker('logout', host);
    await docker('login', host, '-u', 'x', '-p', other.token);
    try {
      await expect(docker('pull', `${host}/${tenant.name}/peers/app:v1`)).rejects.toThrow(/denied|unauthorized|not found|403/i);
      await docker('tag', `${host}/${tenant.name}/peers/app:v1`, `${host}/${tenant.name}/stolen/app:1`);
      await expect(docker('push', `${host}/${tenant.name}/stolen/app:1`)).rejects.toThrow(/denied|unauthorized|403/i);
    } finally {
      await docker('logout', host);
      await docker('login', host, '-u', 'x', '-p', tenant.token);
    }
  });
  it('lets a pull-only token pull with docker and skopeo and shows both refusing its push', async () => {
    const created = await api(stack, tenant.token, 'POST', '/v1/tokens', JSON.stringify({ name: 'pull only', scopes: ['registry:pull'] }), 'application/json');
    expect(created.status).toBe(201);
    const pullOnly = created.json.token as string;
    const source = `${host}/${tenant.name}/peers/app:v1`;
    const target = `${host}/${tenant.name}/peers/pushed-by-reader:1`;
    await docker('logout', host);
    await docker('login', host, '-u', 'x', '-p', pullOnly);
    try {
      await docker('pull', source);
      await docker('tag', source, target);
      await expect(docker('push', target)).rejects.toThrow(/denied|unauthorized|insufficient_scope/i);
      const layout = path.join(work, 'pull-only');
      await skopeo('copy', '--src-tls-verify=false', '--src-creds', `x:${pullOnly}`, `docker://${source}`, `oci:${layout}:t`);
      await expect(
        skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `x:${pullOnly}`, `oci:${layout}:t`, `docker://${target}`),
      ).rejects.toThrow(/denied|unauthorized|requested access to the resource is denied/i);
      // Nothing was stored under the name either tool tried to push.
      const tags = await api(stack, tenant.token, 'GET', '/v1/repositories/peers/pushed-by-reader/tags');
      expect(tags.status).toBe(404);
    } finally {
      await docker('logout', host);
      await docker('login', host, '-u', 'x', '-p', tenant.token);
    }
  });
});

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { REVOCATION_CHECK_MS, RegistryAccess } from '@strata/registry';
import { freePort, startApiProcess } from './support/api-process.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const run = promisify(execFile);
const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

// The whole suite runs on each storage driver: S3 (the default) and the filesystem driver
// (STRATA_STORAGE_DIR), which the registry benchmark pairs with docker-registry's.
const storages: [string, () => Record<string, string>][] = [
  ['S3', () => ({})],
  ['the filesystem driver', () => ({ STRATA_STORAGE_DIR: mkdtempSync(path.join(tmpdir(), 'strata-registry-store-')) })],
];

describe.each(storages)('OCI Distribution registry at /v2, blobs in %s', (_storage, storageEnv) => {
  let stack: Stack;
  let host: string;
  let acme: { tenantId: string; token: string; name: string };
  let other: { tenantId: string; token: string; name: string };
  let work: string;
  let archive: string;

  const basic = (token: string) => `Basic ${Buffer.from(`x:${token}`).toString('base64')}`;
  async function reg(method: string, p: string, opts: { token?: string | null; body?: Buffer | string; headers?: Record<string, string> } = {}) {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token !== null) headers.authorization = basic(opts.token ?? acme.token);
    const res = await fetch(`${stack.url}${p}`, { method, headers, body: opts.body, redirect: 'manual' });
    const body = Buffer.from(await res.arrayBuffer());
    let json: any = null;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      json = null;
    }
    return { status: res.status, headers: res.headers, body, json };
  }
  const skopeo = (...args: string[]) => run('skopeo', args, { maxBuffer: 64 * 1024 * 1024, env: { ...process.env, HOME: work } });

  beforeAll(async () => {
    stack = await startStack({ env: storageEnv() });
    // The server listens on a port chosen at start; token challenges must name it.
    stack.config.publicUrl = stack.url;
    host = new URL(stack.url).host;
    acme = await stack.tenant('acme');
    other = await stack.tenant('other');
    work = mkdtempSync(path.join(tmpdir(), 'strata-registry-'));
    const ctx = makeDir({ Dockerfile: 'FROM scratch\nCOPY hello.txt /srv/hello.txt\nCMD ["/srv/hello"]\n', 'hello.txt': 'hello from the registry\n' });
    const built = await build(stack, acme.token, 'repository=web/app&tag=v1', tarOf(ctx));
    expect(built.status).toBe('succeeded');
    const res = await fetch(`${stack.url}/v1/repositories/web/app/tags/v1/oci-archive`, { headers: { authorization: `Bearer ${acme.token}` } });
    archive = path.join(work, 'image.tar');
    writeFileSync(archive, Buffer.from(await res.arrayBuffer()));
  });
  afterAll(async () => {
    await stack.close();
  });

  async function pullAndUnpack(ref: string, token: string): Promise<string> {
    const dir = mkdtempSync(path.join(work, 'pull-'));
    await skopeo('copy', '--src-tls-verify=false', '--src-creds', `x:${token}`, `docker://${host}/${ref}`, `oci:${dir}/layout:t`);
    await run('umoci', ['unpack', '--image', `${dir}/layout:t`, `${dir}/bundle`]);
    return path.join(dir, 'bundle');
  }

  it('answers anonymous requests with a Bearer challenge and issues scoped tokens for an API token', async () => {
    const ping = await reg('GET', '/v2/', { token: null });
    expect(ping.status).toBe(401);
    expect(ping.headers.get('www-authenticate')).toBe(`Bearer realm="${stack.url}/v2/token",service="strata"`);
    const denied = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { token: null });
    expect(denied.status).toBe(401);
    expect(denied.json.errors[0].code).toBe('UNAUTHORIZED');
    expect(denied.headers.get('www-authenticate')).toContain(`scope="repository:${acme.name}/web/app:pull"`);

    const scope = `repository:${acme.name}/web/app:pull,push`;
    const issued = await reg('GET', `/v2/token?service=strata&scope=${encodeURIComponent(scope)}&scope=${encodeURIComponent(`repository:${other.name}/x:pull,push`)}`);
    expect(issued.status).toBe(200);
    expect(issued.json).toMatchObject({ expires_in: 300, token: expect.any(String), access_token: issued.json.token });
    const claims = JSON.parse(Buffer.from(issued.json.token.split('.')[1], 'base64url').toString());
    expect(claims.access).toEqual([{ type: 'repository', name: `${acme.name}/web/app`, actions: ['pull', 'push'] }]);
    const withToken = await fetch(`${stack.url}/v2/${acme.name}/web/app/manifests/v1`, { headers: { authorization: `Bearer ${issued.json.token}` } });
    expect(withToken.status).toBe(200);
    const wrongPassword = await reg('GET', '/v2/token', { token: 'strata_not-a-token' });
    expect(wrongPassword.status).toBe(401);
  });

  it("refuses the bearer tokens of a revoked API token at once on the replica that revoked it", async () => {
    const minted = (await api(stack, acme.token, 'POST', '/v1/tokens', JSON.stringify({ name: 'revoked soon', scopes: ['registry:pull'] }), 'application/json')).json;
    const issued = await reg('GET', `/v2/token?service=strata&scope=${encodeURIComponent(`repository:${acme.name}/web/app:pull`)}`, { token: minted.token });
    const bearer = { authorization: `Bearer ${issued.json.token}` };
    // Used once first, so its API token's state is cached as live.
    expect((await fetch(`${stack.url}/v2/${acme.name}/web/app/manifests/v1`, { headers: bearer })).status).toBe(200);
    expect((await api(stack, acme.token, 'DELETE', `/v1/tokens/${minted.id}`)).status).toBe(200);
    const refused = await fetch(`${stack.url}/v2/${acme.name}/web/app/manifests/v1`, { headers: bearer });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toContain('error="invalid_token"');
    expect(((await refused.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('UNAUTHORIZED');
    expect((await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { token: minted.token })).status).toBe(401);
  });

  it('refuses them on another api replica as soon as the revocation reaches it, long before its check would ask again', async () => {
    const replica = startApiProcess(stack.config, await freePort());
    try {
      await replica.ready();
      const minted = (await api(stack, acme.token, 'POST', '/v1/tokens', JSON.stringify({ name: 'revoked on the other replica', scopes: ['registry:pull'] }), 'application/json')).json;
      const issued = await reg('GET', `/v2/token?service=strata&scope=${encodeURIComponent(`repository:${acme.name}/web/app:pull`)}`, { token: minted.token });
      const onReplica = () => fetch(`${replica.url}/v2/${acme.name}/web/app/manifests/v1`, { headers: { authorization: `Bearer ${issued.json.token}` } });
      // Taken once there: the replica holds the API token as live for REVOCATION_CHECK_MS from now.
      expect((await onReplica()).status).toBe(200);
      const checked = Date.now();
      expect((await api(stack, acme.token, 'DELETE', `/v1/tokens/${minted.id}`)).status).toBe(200);
      let status = 200;
      while (status === 200 && Date.now() - checked < REVOCATION_CHECK_MS - 1000) {
        status = (await onReplica()).status;
        if (status === 200) await new Promise((r) => setTimeout(r, 50));
      }
      // Refused before the replica's own check could have asked the database again: the revocation reached it.
      expect(status).toBe(401);
    } finally {
      await replica.stop();
    }
  });

  it(`refuses them on other replicas once ${REVOCATION_CHECK_MS} ms passed since their API token was last checked`, async () => {
    // Another replica: its own RegistryAccess, which hears of no revocation; its clock is set by hand.
    const replica = new RegistryAccess(stack.prisma, stack.config.registrySecret, stack.url);
    try {
      const minted = (await api(stack, acme.token, 'POST', '/v1/tokens', JSON.stringify({ name: 'revoked elsewhere', scopes: ['registry:pull'] }), 'application/json')).json;
      const bearer = `Bearer ${(await reg('GET', `/v2/token?service=strata&scope=${encodeURIComponent(`repository:${acme.name}/web/app:pull`)}`, { token: minted.token })).json.token}`;
      const t0 = Date.now();
      expect((await replica.identify(bearer, t0)).kind).toBe('bearer');
      await stack.prisma.apiToken.update({ where: { id: minted.id }, data: { revokedAt: new Date() } });
      // Within the bound the replica still takes it; at the bound it asks the database again and refuses it.
      expect((await replica.identify(bearer, t0 + REVOCATION_CHECK_MS - 1)).kind).toBe('bearer');
      await expect(replica.identify(bearer, t0 + REVOCATION_CHECK_MS)).rejects.toThrow(/revoked or expired/);
    } finally {
      replica.onModuleDestroy();
    }
  });

  it('grants from /v2/token only what the API token may do: its scopes and its repository patterns', async () => {
    const mint = async (body: object) => (await api(stack, acme.token, 'POST', '/v1/tokens', JSON.stringify(body), 'application/json')).json.token as string;
    const pullOnly = await mint({ name: 'reader', scopes: ['registry:pull'] });
    const webOnly = await mint({ name: 'web pusher', scopes: ['registry:pull', 'registry:push'], repositories: ['web/*'] });
    const accessOf = async (token: string, scope: string) => {
      const issued = await reg('GET', `/v2/token?service=strata&scope=${encodeURIComponent(scope)}`, { token });
      expect(issued.status).toBe(200);
      return JSON.parse(Buffer.from(issued.json.token.split('.')[1], 'base64url').toString()).access;
    };
    expect(await accessOf(pullOnly, `repository:${acme.name}/web/app:pull,push`)).toEqual([{ type: 'repository', name: `${acme.name}/web/app`, actions: ['pull'] }]);
    expect(await accessOf(webOnly, `repository:${acme.name}/web/app:pull,push`)).toEqual([{ type: 'repository', name: `${acme.name}/web/app`, actions: ['pull', 'push'] }]);
    expect(await accessOf(webOnly, `repository:${acme.name}/api/app:pull,push`)).toEqual([]);
    // Basic auth with the pull-only token: the push is refused with the spec's DENIED, naming the scope.
    const push = await reg('POST', `/v2/${acme.name}/web/app/blobs/uploads/`, { token: pullOnly });
    expect(push.status).toBe(403);
    expect(push.json.errors[0]).toMatchObject({ code: 'DENIED', message: 'the API token lacks the "registry:push" scope' });
    const outside = await reg('GET', `/v2/${acme.name}/pushed/oci/tags/list`, { token: webOnly });
    expect(outside.status).toBe(403);
    expect(outside.json.errors[0].message).toBe('the API token is limited to repositories web/*');
  });

  it('serves a built image, pullable by skopeo as <tenant>/<repo>:<tag> and unpacked by umoci', async () => {
    const head = await reg('HEAD', `/v2/${acme.name}/web/app/manifests/v1`);
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(head.headers.get('docker-content-digest')).toMatch(/^sha256:/);
    const bundle = await pullAndUnpack(`${acme.name}/web/app:v1`, acme.token);
    expect(readFileSync(path.join(bundle, 'rootfs/srv/hello.txt'), 'utf8')).toBe('hello from the registry\n');
  });

  it('takes skopeo pushes in OCI and Docker schema 2 formats with token auth, and gives them back', async () => {
    await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `x:${acme.token}`, `oci-archive:${archive}:v1`, `docker://${host}/${acme.name}/pushed/oci:1`);
    await skopeo('copy', '--format', 'v2s2', '--dest-tls-verify=false', '--dest-creds', `x:${acme.token}`, `oci-archive:${archive}:v1`, `docker://${host}/${acme.name}/pushed/docker:1`);
    const oci = await reg('GET', `/v2/${acme.name}/pushed/oci/manifests/1`);
    expect(oci.headers.get('content-type')).toBe('application/vnd.oci.image.manifest.v1+json');
    const docker = await reg('GET', `/v2/${acme.name}/pushed/docker/manifests/1`);
    expect(docker.status).toBe(200);
    expect(docker.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(docker.headers.get('docker-content-digest')).toBe(sha256(docker.body));
    expect(Number(docker.headers.get('content-length'))).toBe(docker.body.length);
    expect(docker.json.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    for (const repo of ['pushed/oci', 'pushed/docker']) {
      const bundle = await pullAndUnpack(`${acme.name}/${repo}:1`, acme.token);
      expect(readFileSync(path.join(bundle, 'rootfs/srv/hello.txt'), 'utf8')).toBe('hello from the registry\n');
    }
    // Pulled by digest as well.
    const byDigest = await reg('GET', `/v2/${acme.name}/pushed/docker/manifests/${docker.headers.get('docker-content-digest')}`);
    expect(byDigest.body.equals(docker.body)).toBe(true);
    const catalog = await reg('GET', '/v2/_catalog');
    expect(catalog.json.repositories).toEqual(expect.arrayContaining([`${acme.name}/pushed/docker`, `${acme.name}/pushed/oci`, `${acme.name}/web/app`]));
    expect(catalog.json.repositories.every((r: string) => r.startsWith(`${acme.name}/`))).toBe(true);
  });

  it("never shows one tenant another tenant's images", async () => {
    const asOther = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { token: other.token });
    expect(asOther.status).toBe(403);
    expect(asOther.json.errors[0].code).toBe('DENIED');
    const tags = await reg('GET', `/v2/${acme.name}/web/app/tags/list`, { token: other.token });
    expect(tags.status).toBe(403);
    const push = await reg('POST', `/v2/${acme.name}/evil/blobs/uploads/?digest=${sha256('x')}`, { token: other.token, body: 'x' });
    expect(push.status).toBe(403);
    const catalog = await reg('GET', '/v2/_catalog', { token: other.token });
    expect(catalog.json.repositories).toEqual([]);
    await expect(skopeo('inspect', '--tls-verify=false', '--creds', `x:${other.token}`, `docker://${host}/${acme.name}/web/app:v1`)).rejects.toThrow();
    // A blob another tenant has is not reachable through one's own repository either.
    const manifest = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`);
    const layer = manifest.json.layers[0].digest;
    await reg('POST', `/v2/${other.name}/mine/blobs/uploads/?digest=${sha256('mine')}`, { token: other.token, body: 'mine' });
    const stolen = await reg('GET', `/v2/${other.name}/mine/blobs/${layer}`, { token: other.token });
    expect(stolen.status).toBe(404);
    expect(stolen.json.errors[0].code).toBe('BLOB_UNKNOWN');
    const mount = await reg('POST', `/v2/${other.name}/mine/blobs/uploads/?mount=${layer}&from=${acme.name}/web/app`, { token: other.token });
    expect(mount.status).toBe(202); // no mount across tenants: an ordinary upload starts instead
  });

  it('answers a client that already holds a manifest or blob (If-None-Match on its digest) with 304 and no body', async () => {
    const byTag = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`);
    const digest = byTag.headers.get('docker-content-digest')!;
    expect(byTag.headers.get('etag')).toBe(`"${digest}"`);
    expect(byTag.headers.get('cache-control')).toBeNull(); // a tag can move
    expect(byTag.headers.get('x-powered-by')).toBeNull();
    const again = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { headers: { 'if-none-match': `"${digest}"` } });
    expect(again.status).toBe(304);
    expect(again.body.length).toBe(0);
    expect(again.headers.get('docker-content-digest')).toBe(digest);
    const byDigest = await reg('GET', `/v2/${acme.name}/web/app/manifests/${digest}`);
    expect(byDigest.headers.get('cache-control')).toBe('max-age=31536000');
    // An ETag that is not the current one gets the whole manifest.
    const moved = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { headers: { 'if-none-match': `"${sha256('older')}"` } });
    expect(moved.status).toBe(200);
    expect(moved.body.equals(byTag.body)).toBe(true);

    const layer = byTag.json.layers[0].digest;
    const blob = await reg('GET', `/v2/${acme.name}/web/app/blobs/${layer}`);
    expect(blob.status).toBe(200);
    expect(blob.headers.get('etag')).toBe(`"${layer}"`);
    expect(blob.headers.get('cache-control')).toBe('max-age=31536000');
    for (const method of ['GET', 'HEAD']) {
      const held = await reg(method, `/v2/${acme.name}/web/app/blobs/${layer}`, { headers: { 'if-none-match': `W/"${sha256('x')}", "${layer}"` } });
      expect(held.status).toBe(304);
      expect(held.body.length).toBe(0);
    }
    // Not a way to learn that a digest exists somewhere: another tenant asking gets no 304.
    // (other/mine exists: the test above pushed a blob of its own there.)
    const probe = await reg('GET', `/v2/${other.name}/mine/blobs/${layer}`, { token: other.token, headers: { 'if-none-match': `"${layer}"` } });
    expect(probe.status).toBe(404);
    expect(probe.json.errors[0].code).toBe('BLOB_UNKNOWN');
  });

  it('refuses a blob whose content does not match its digest and stores nothing', async () => {
    const body = Buffer.from('these bytes are not what the digest says');
    const wrong = sha256('something else');
    const res = await reg('POST', `/v2/${acme.name}/bad/blobs/uploads/?digest=${wrong}`, { body });
    expect(res.status).toBe(400);
    expect(res.json.errors[0].code).toBe('DIGEST_INVALID');
    for (const d of [wrong, sha256(body)]) expect((await reg('HEAD', `/v2/${acme.name}/bad/blobs/${d}`)).status).toBe(404);
    expect(await stack.prisma.blob.findUnique({ where: { digest: sha256(body) } })).toBeNull();
  });

  it('refuses a manifest that names a missing blob', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    expect((await reg('POST', `/v2/${acme.name}/partial/blobs/uploads/?digest=${sha256(config)}`, { body: config })).status).toBe(201);
    const missing = sha256('never uploaded');
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: missing, size: 10 }],
    });
    const res = await reg('PUT', `/v2/${acme.name}/partial/manifests/1`, { body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
    expect(res.status).toBe(400);
    expect(res.json.errors[0]).toMatchObject({ code: 'MANIFEST_BLOB_UNKNOWN', detail: { digest: missing } });
    expect((await reg('GET', `/v2/${acme.name}/partial/manifests/1`)).status).toBe(404);
  });

  it('assembles a chunked upload sent with Content-Range, refusing chunks out of order, and serves byte ranges', async () => {
    const data = Buffer.from('0123456789abcdefghij');
    const start = await reg('POST', `/v2/${acme.name}/chunked/blobs/uploads/`);
    expect(start.status).toBe(202);
    const location = start.headers.get('location')!;
    expect(location).toMatch(new RegExp(`^/v2/${acme.name}/chunked/blobs/uploads/[0-9a-f-]{36}$`));
    const patch = (from: number, to: number) =>
      reg('PATCH', location, { body: data.subarray(from, to + 1), headers: { 'content-range': `${from}-${to}`, 'content-type': 'application/octet-stream' } });
    const first = await patch(0, 7);
    expect(first.status).toBe(202);
    expect(first.headers.get('range')).toBe('0-7');
    const skipped = await patch(12, 19);
    expect(skipped.status).toBe(416);
    expect(skipped.json.errors[0].code).toBe('BLOB_UPLOAD_INVALID');
    const status = await reg('GET', location);
    expect(status.status).toBe(204);
    expect(status.headers.get('range')).toBe('0-7');
    expect((await patch(8, 15)).headers.get('range')).toBe('0-15');
    const done = await reg('PUT', `${location}?digest=${sha256(data)}`, { body: data.subarray(16), headers: { 'content-type': 'application/octet-stream' } });
    expect(done.status).toBe(201);
    expect(done.headers.get('docker-content-digest')).toBe(sha256(data));
    const whole = await reg('GET', `/v2/${acme.name}/chunked/blobs/${sha256(data)}`);
    expect(whole.body.equals(data)).toBe(true);
    const part = await reg('GET', `/v2/${acme.name}/chunked/blobs/${sha256(data)}`, { headers: { range: 'bytes=2-5' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 2-5/${data.length}`);
    expect(part.body.toString()).toBe('2345');
    expect((await reg('GET', location)).status).toBe(404);

    const cancelled = (await reg('POST', `/v2/${acme.name}/chunked/blobs/uploads/`)).headers.get('location')!;
    expect((await reg('DELETE', cancelled)).status).toBe(204);
    expect((await reg('GET', cancelled)).json.errors[0].code).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('leaves a stored blob alone when another upload of the same bytes is cancelled or given the wrong digest', async () => {
    // A small first chunk is stored under the blob key of its bytes: the key of a blob already pushed.
    const data = Buffer.from(`shared bytes ${Date.now()} `.repeat(200));
    const start = async () => (await reg('POST', `/v2/${acme.name}/shared/blobs/uploads/`)).headers.get('location')!;
    const first = await start();
    expect((await reg('PATCH', first, { body: data })).status).toBe(202);
    expect((await reg('PUT', `${first}?digest=${sha256(data)}`)).status).toBe(201);
    const cancelled = await start();
    expect((await reg('PATCH', cancelled, { body: data })).status).toBe(202);
    expect((await reg('DELETE', cancelled)).status).toBe(204);
    const mismatched = await start();
    expect((await reg('PATCH', mismatched, { body: data })).status).toBe(202);
    expect((await reg('PUT', `${mismatched}?digest=${sha256('other bytes')}`)).json.errors[0].code).toBe('DIGEST_INVALID');
    const pulled = await reg('GET', `/v2/${acme.name}/shared/blobs/${sha256(data)}`);
    expect(pulled.status).toBe(200);
    expect(pulled.body.equals(data)).toBe(true);
  });

  it('counts nothing of a chunk whose client went away mid-body, and never stores what it sent under a digest', async () => {
    // A PATCH that announces `total` bytes (or none: chunked) and sends only `body`, then closes its socket.
    const cutShort = (location: string, total: number | null, body: Buffer) =>
      new Promise<void>((resolve) => {
        const url = new URL(location, stack.url);
        const length: Record<string, string> = total === null ? {} : { 'content-length': String(total) };
        const req = httpRequest(url, { method: 'PATCH', headers: { authorization: basic(acme.token), 'content-type': 'application/octet-stream', ...length } });
        req.on('error', () => resolve());
        req.on('close', () => resolve());
        req.write(body, () => setImmediate(() => req.destroy()));
      });
    // A whole PATCH without Content-Length, in 64 KiB writes.
    const patchChunked = (location: string, data: Buffer) =>
      new Promise<{ status: number; headers: { get(name: string): string | null } }>((resolve, reject) => {
        const req = httpRequest(new URL(location, stack.url), { method: 'PATCH', headers: { authorization: basic(acme.token), 'content-type': 'application/octet-stream' } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: { get: (name) => (res.headers[name] as string | undefined) ?? null } }));
        });
        req.on('error', reject);
        for (let at = 0; at < data.length; at += 64 * 1024) req.write(data.subarray(at, at + 64 * 1024));
        req.end();
      });
    // Below the first-chunk size kept in memory, and above it (streamed to storage as it arrives).
    // Chunked (no Content-Length, as skopeo sends a layer): on S3 such a chunk is spooled to a local file first.
    for (const [size, chunked] of [[1000, false], [6 * 1024 * 1024, false], [6 * 1024 * 1024, true]] as const) {
      const data = Buffer.alloc(size, `cut ${size} ${chunked} ${Date.now()} `);
      const sent = data.subarray(0, Math.floor(size / 2));
      const location = (await reg('POST', `/v2/${acme.name}/cut/blobs/uploads/`)).headers.get('location')!;
      await cutShort(location, chunked ? null : size, sent);
      // What arrived is no blob: neither under its own digest nor under the announced one.
      const early = await reg('PUT', `${location}?digest=${sha256(sent)}`);
      expect(early.status).toBe(400);
      expect(early.json.errors[0].code).toBe('DIGEST_INVALID');
      expect((await reg('HEAD', `/v2/${acme.name}/cut/blobs/${sha256(sent)}`)).status).toBe(404);
      // A new upload of the whole blob goes through.
      const again = (await reg('POST', `/v2/${acme.name}/cut/blobs/uploads/`)).headers.get('location')!;
      const patched = chunked ? await patchChunked(again, data) : await reg('PATCH', again, { body: data, headers: { 'content-type': 'application/octet-stream' } });
      expect(patched.headers.get('range')).toBe(`0-${size - 1}`);
      expect((await reg('PUT', `${again}?digest=${sha256(data)}`)).status).toBe(201);
      const pulled = await reg('GET', `/v2/${acme.name}/cut/blobs/${sha256(data)}`);
      expect(pulled.body.equals(data)).toBe(true);
    }
  });

  it('finishes on another api replica an upload whose chunks it never saw, reading the bytes back to check the digest', async () => {
    // The replica that received the chunks kept their hash and finishes without a second read; one
    // that did not must read the joined chunks and refuse a digest they do not have.
    const replica = startApiProcess(stack.config, await freePort());
    try {
      await replica.ready();
      const data = Buffer.from(`two replicas ${Date.now()} `.repeat(1000));
      const at = async (base: string, method: string, p: string, body?: Buffer, headers: Record<string, string> = {}) =>
        fetch(`${base}${p}`, { method, body, headers: { authorization: basic(acme.token), 'content-type': 'application/octet-stream', ...headers } });
      const open = async () => {
        const location = (await at(stack.url, 'POST', `/v2/${acme.name}/replicas/blobs/uploads/`)).headers.get('location')!;
        expect((await at(stack.url, 'PATCH', location, data.subarray(0, 5000), { 'content-range': `0-4999` })).status).toBe(202);
        expect((await at(stack.url, 'PATCH', location, data.subarray(5000), { 'content-range': `5000-${data.length - 1}` })).status).toBe(202);
        return location;
      };
      const wrong = await at(replica.url, 'PUT', `${await open()}?digest=${sha256('something else')}`);
      expect(wrong.status).toBe(400);
      expect(((await wrong.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('DIGEST_INVALID');
      expect((await reg('HEAD', `/v2/${acme.name}/replicas/blobs/${sha256('something else')}`)).status).toBe(404);
      const done = await at(replica.url, 'PUT', `${await open()}?digest=${sha256(data)}`);
      expect(done.status).toBe(201);
      const head = await reg('HEAD', `/v2/${acme.name}/replicas/blobs/${sha256(data)}`);
      expect(head.status).toBe(200);
      expect(head.headers.get('content-length')).toBe(String(data.length));
      expect((await reg('GET', `/v2/${acme.name}/replicas/blobs/${sha256(data)}`)).body.equals(data)).toBe(true);
    } finally {
      await replica.stop();
    }
  });

  it('pages tag lists with n and last and a Link header; deletes tags and manifests', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    await reg('POST', `/v2/${acme.name}/tagged/blobs/uploads/?digest=${sha256(config)}`, { body: config });
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [],
    });
    for (const tag of ['c', 'a', 'b']) {
      const put = await reg('PUT', `/v2/${acme.name}/tagged/manifests/${tag}`, { body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
      expect(put.status).toBe(201);
      expect(put.headers.get('docker-content-digest')).toBe(sha256(manifest));
    }
    const page1 = await reg('GET', `/v2/${acme.name}/tagged/tags/list?n=2`);
    expect(page1.json).toEqual({ name: `${acme.name}/tagged`, tags: ['a', 'b'] });
    const link = page1.headers.get('link')!;
    expect(link).toBe(`</v2/${acme.name}/tagged/tags/list?n=2&last=b>; rel="next"`);
    const page2 = await reg('GET', /<([^>]+)>/.exec(link)![1]!);
    expect(page2.json.tags).toEqual(['c']);
    expect(page2.headers.get('link')).toBeNull();

    expect((await reg('DELETE', `/v2/${acme.name}/tagged/manifests/a`)).status).toBe(202);
    expect((await reg('GET', `/v2/${acme.name}/tagged/tags/list`)).json.tags).toEqual(['b', 'c']);
    expect((await reg('DELETE', `/v2/${acme.name}/tagged/manifests/${sha256(manifest)}`)).status).toBe(202);
    expect((await reg('GET', `/v2/${acme.name}/tagged/tags/list`)).json.tags).toEqual([]);
    expect((await reg('GET', `/v2/${acme.name}/tagged/manifests/b`)).json.errors[0].code).toBe('MANIFEST_UNKNOWN');
  });

  it('lists referrers of a manifest by subject, filtered by artifactType', async () => {
    const subject = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`);
    const empty = Buffer.from('{}');
    await reg('POST', `/v2/${acme.name}/web/app/blobs/uploads/?digest=${sha256(empty)}`, { body: empty });
    const sig = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.example.sig',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 },
      layers: [],
      subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(subject.body), size: subject.body.length },
      annotations: { who: 'ci' },
    });
    const put = await reg('PUT', `/v2/${acme.name}/web/app/manifests/${sha256(sig)}`, { body: sig, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
    expect(put.status).toBe(201);
    expect(put.headers.get('oci-subject')).toBe(sha256(subject.body));
    const all = await reg('GET', `/v2/${acme.name}/web/app/referrers/${sha256(subject.body)}`);
    expect(all.headers.get('content-type')).toContain('application/vnd.oci.image.index.v1+json');
    expect(all.json.manifests).toEqual([
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(sig), size: sig.length, artifactType: 'application/vnd.example.sig', annotations: { who: 'ci' } },
    ]);
    const filtered = await reg('GET', `/v2/${acme.name}/web/app/referrers/${sha256(subject.body)}?artifactType=application/vnd.other`);
    expect(filtered.json.manifests).toEqual([]);
    expect(filtered.headers.get('oci-filters-applied')).toBe('artifactType');
  });

  it('negotiates Accept: an index tag answers with its linux/amd64 manifest to a client that accepts no index', async () => {
    const manifest = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`);
    const index = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: manifest.headers.get('content-type'), digest: sha256(manifest.body), size: manifest.body.length, platform: { os: 'linux', architecture: 'amd64' } }],
    });
    const put = await reg('PUT', `/v2/${acme.name}/web/app/manifests/multi`, { body: index, headers: { 'content-type': 'application/vnd.oci.image.index.v1+json' } });
    expect(put.status).toBe(201);
    const modern = await reg('GET', `/v2/${acme.name}/web/app/manifests/multi`, {
      headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' },
    });
    expect(modern.headers.get('docker-content-digest')).toBe(sha256(index));
    const old = await reg('GET', `/v2/${acme.name}/web/app/manifests/multi`, { headers: { accept: manifest.headers.get('content-type')! } });
    expect(old.status).toBe(200);
    expect(old.headers.get('docker-content-digest')).toBe(sha256(manifest.body));
    expect(old.headers.get('content-type')).toBe(manifest.headers.get('content-type'));
    // By digest the client gets exactly what it named.
    const byDigest = await reg('GET', `/v2/${acme.name}/web/app/manifests/${sha256(index)}`, { headers: { accept: manifest.headers.get('content-type')! } });
    expect(byDigest.headers.get('docker-content-digest')).toBe(sha256(index));
  });

  it('lets anyone pull a public repository, and nothing else', async () => {
    await stack.prisma.repository.update({ where: { tenantId_name: { tenantId: acme.tenantId, name: 'web/app' } }, data: { public: true } });
    const anon = await reg('GET', `/v2/${acme.name}/web/app/manifests/v1`, { token: null });
    expect(anon.status).toBe(200);
    const bundle = mkdtempSync(path.join(work, 'anon-'));
    await skopeo('copy', '--src-tls-verify=false', `docker://${host}/${acme.name}/web/app:v1`, `oci:${bundle}/layout:t`);
    const push = await reg('PUT', `/v2/${acme.name}/web/app/manifests/x`, { token: other.token, body: anon.body, headers: { 'content-type': anon.headers.get('content-type')! } });
    expect(push.status).toBe(403);
    expect((await reg('GET', `/v2/${acme.name}/pushed/oci/tags/list`, { token: null })).status).toBe(401);
  });
});

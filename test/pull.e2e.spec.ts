import { jest } from '@jest/globals';
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';
import { busyboxRootfs } from './support/images.js';

jest.setTimeout(180_000);

/**
 * An OCI layout (tag `1`) of a busybox rootfs with a marker file unique to this run, so none of its
 * blobs is in Strata's blob store before the first pull.
 */
function busyboxLayout(): string {
  const rootfs = busyboxRootfs();
  writeFileSync(path.join(rootfs, 'etc/pull-test-marker'), `${process.pid}-${Date.now()}-${Math.random()}\n`);
  const tar = execFileSync('tar', ['--sort=name', '-cf', '-', '-C', rootfs, '.'], { maxBuffer: 256 * 1024 ** 2 });
  const layer = execFileSync('gzip', ['-n'], { input: tar, maxBuffer: 256 * 1024 ** 2 });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
      history: [{ created_by: 'busybox-static made by pull.e2e.spec.ts' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
    }),
  );
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-pull-layout-'));
  mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
  for (const b of [config, manifest, layer]) writeFileSync(path.join(dir, 'blobs/sha256', sha256(b).slice(7)), b);
  writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': '1' } }],
    }),
  );
  return dir;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

interface Registry {
  host: string;
  proc: ChildProcess;
  stop(): Promise<void>;
}

/** CNCF Distribution (apt docker-registry) on a free 127.0.0.1 port, storage in a temp dir. */
async function startRegistry(htpasswd?: string): Promise<Registry> {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-docker-registry-'));
  const port = await freePort();
  const auth = htpasswd ? `auth:\n  htpasswd:\n    realm: strata-test\n    path: ${path.join(dir, 'htpasswd')}\n` : '';
  if (htpasswd) writeFileSync(path.join(dir, 'htpasswd'), htpasswd);
  writeFileSync(
    path.join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${path.join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n  secret: strata-test-secret\n${auth}`,
  );
  const proc = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const until = Date.now() + 15_000;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.status === 200 || res.status === 401) break;
    } catch {
      /* not up yet */
    }
    if (Date.now() > until || proc.exitCode !== null) throw new Error(`docker-registry did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: `127.0.0.1:${port}`,
    proc,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}

/**
 * A tiny HTTP front for a registry: records every request (to count blob fetches), can play "down",
 * and can require the Bearer token flow (401 challenge → GET /token with basic credentials → token).
 */
interface Front {
  host: string;
  target: string;
  requests: string[];
  down: boolean;
  tokenAuth: { username: string; password: string; token: string } | null;
  close(): Promise<void>;
}

async function startFront(): Promise<Front> {
  const front: Front = { host: '', target: '', requests: [], down: false, tokenAuth: null, close: async () => undefined };
  const server = http.createServer((req, res) => {
    front.requests.push(`${req.method} ${req.url}`);
    if (front.down) {
      res.writeHead(503).end();
      return;
    }
    const t = front.tokenAuth;
    if (t) {
      if (req.url!.startsWith('/token')) {
        const ok = req.headers.authorization === `Basic ${Buffer.from(`${t.username}:${t.password}`).toString('base64')}`;
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(ok ? JSON.stringify({ token: t.token, expires_in: 300 }) : '{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
        return;
      }
      if (req.headers.authorization !== `Bearer ${t.token}`) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${front.host}/token",service="front",scope="repository:library/busybox:pull"`,
          'content-type': 'application/json',
        });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        return;
      }
    }
    const headers = { ...req.headers, host: front.target };
    delete headers.authorization;
    const up = http.request(`http://${front.target}${req.url}`, { method: req.method, headers }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  front.host = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  front.close = () => new Promise<void>((r) => server.close(() => r()));
  return front;
}

const blobGets = (front: Front) => front.requests.filter((r) => /^GET \/v2\/.+\/blobs\/sha256:/.test(r)).length;
const manifestGets = (front: Front) => front.requests.filter((r) => /^GET \/v2\/.+\/manifests\//.test(r)).length;

function sha256(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

describe('FROM images of other registries', () => {
  let stack: Stack;
  let token: string;
  let tenantName: string;
  let registry: Registry;
  let authRegistry: Registry;
  let front: Front;
  let tokenFront: Front;
  let amd64Digest: string;
  let layoutDir: string;

  const submit = async (tok: string, repo: string, dockerfile: string, headers: Record<string, string> = {}) => {
    // The api runs in this process: after a long execFileSync (skopeo, crypt) its keep-alive timer
    // and the client's are both overdue; let them fire so the POST does not go out on a socket the
    // server closes at once (ECONNRESET).
    await new Promise((r) => setTimeout(r, 20));
    const res = await fetch(`${stack.url}/v1/builds?repository=${repo}&tag=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/x-tar', ...headers },
      body: tarOf(makeDir({ Dockerfile: dockerfile })),
    });
    const text = await res.text();
    if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${text}`);
    return waitForBuild(stack, tok, JSON.parse(text).id, 120_000);
  };

  beforeAll(async () => {
    front = await startFront();
    tokenFront = await startFront();
    // The deployment's upstream registry for short names is the front (never Docker Hub in tests).
    stack = await startStack({ env: { STRATA_UPSTREAM_REGISTRY: front.host } });
    ({ token, name: tenantName } = await stack.tenant('pull'));
    const imported = await api(stack, token, 'POST', '/v1/repositories/seed/busybox/import?tag=1', tarOf(busyboxRootfs()), 'application/x-tar');
    expect(imported.status).toBe(201);
    // The image in the registry is made apart from Strata (see busyboxLayout), so the first build must fetch its blobs.
    layoutDir = busyboxLayout();

    registry = await startRegistry();
    front.target = registry.host;
    tokenFront.target = registry.host;
    execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layoutDir}:1`, `docker://${registry.host}/library/busybox:1`], { stdio: 'pipe' });

    // A multi-arch index: an arm64 entry first (the same content, annotated so its digest differs), then amd64.
    const m = await fetch(`http://${registry.host}/v2/library/busybox/manifests/1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const bytes = Buffer.from(await m.arrayBuffer());
    amd64Digest = sha256(bytes);
    const manifest = JSON.parse(bytes.toString('utf8'));
    const arm = Buffer.from(JSON.stringify({ ...manifest, annotations: { 'test.arch': 'arm64' } }));
    const armDigest = sha256(arm);
    const put = async (ref: string, body: Buffer, type: string) => {
      const r = await fetch(`http://${registry.host}/v2/library/busybox/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': type }, body });
      expect(r.status).toBe(201);
    };
    await put(armDigest, arm, 'application/vnd.oci.image.manifest.v1+json');
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: armDigest, size: arm.length, platform: { os: 'linux', architecture: 'arm64' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: amd64Digest, size: bytes.length, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    };
    await put('multi', Buffer.from(JSON.stringify(index)), 'application/vnd.oci.image.index.v1+json');
  });

  afterAll(async () => {
    await stack?.close();
    await front?.close();
    await tokenFront?.close();
    await registry?.stop();
    await authRegistry?.stop();
  });

  it('pulls a tagged image, runs RUN on it, records the base, and pulls no blob the second time', async () => {
    const df = `FROM ${front.host}/library/busybox:1\nRUN echo pulled > /pulled && cat /pulled\n`;
    const before = front.requests.length;
    const first = await submit(token, 'pull/first', df);
    expect(first.error).toBeNull();
    expect(first.status).toBe('succeeded');
    expect(first.baseImage).toEqual({ ref: `${front.host}/library/busybox:1`, digest: amd64Digest, source: 'registry' });
    const firstRequests = front.requests.slice(before);
    expect(blobGets({ ...front, requests: firstRequests })).toBe(2); // config + layer

    const mark = front.requests.length;
    const second = await submit(token, 'pull/second', df);
    expect(second.status).toBe('succeeded');
    expect(second.baseImage.digest).toBe(amd64Digest);
    const secondFront: Front = { ...front, requests: front.requests.slice(mark) };
    // The tag is re-resolved (as BuildKit does): one manifest GET, and not a single blob.
    expect(blobGets(secondFront)).toBe(0);
    expect(manifestGets(secondFront)).toBe(1);
  });

  it('picks linux/amd64 from a multi-arch index', async () => {
    const result = await submit(token, 'pull/multi', `FROM ${front.host}/library/busybox:multi\nRUN true\n`);
    expect(result.error).toBeNull();
    expect(result.baseImage.digest).toBe(amd64Digest);
    expect(result.baseImage.ref).toBe(`${front.host}/library/busybox:multi`);
  });

  it('fails an unknown image with a clear message naming the FROM line', async () => {
    const result = await submit(token, 'pull/unknown', `FROM ${front.host}/library/nope:1\nRUN true\n`);
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(1);
    expect(result.error.message).toContain(`FROM ${front.host}/library/nope:1`);
    expect(result.error.message).toMatch(/not found/);
    expect(result.baseImage).toBeNull();
  });

  it('resolves a short name to the tenant repository when one exists, else to the upstream registry', async () => {
    // This tenant has no "busybox" repository: the upstream registry (library/ added) is used.
    const upstream = await submit(token, 'pull/short', 'FROM busybox:1\nRUN true\n');
    expect(upstream.error).toBeNull();
    expect(upstream.baseImage).toEqual({ ref: `${front.host}/library/busybox:1`, digest: amd64Digest, source: 'registry' });

    // Another tenant with its own "busybox" repository gets it, not the upstream image.
    const other = await stack.tenant('pull-own');
    const mine = await api(stack, other.token, 'POST', '/v1/repositories/busybox/import?tag=1', tarOf(makeDir({ 'marker': 'mine\n' })), 'application/x-tar');
    expect(mine.status).toBe(201);
    const mark = front.requests.length;
    const own = await submit(other.token, 'pull/short', 'FROM busybox:1\nCOPY Dockerfile /\n');
    expect(own.error).toBeNull();
    expect(own.baseImage.source).toBe('tenant');
    expect(own.baseImage.ref).toBe('busybox:1');
    expect(own.baseImage.digest).not.toBe(amd64Digest);
    expect(front.requests.length).toBe(mark);
  });

  it("resolves Strata's own host internally", async () => {
    const host = new URL(stack.url).host;
    const result = await submit(token, 'pull/own-host', `FROM ${host}/${tenantName}/seed/busybox:1\nRUN true\n`);
    expect(result.error).toBeNull();
    expect(result.baseImage.source).toBe('tenant');
    expect(result.baseImage.ref).toBe(`${host}/${tenantName}/seed/busybox:1`);
  });

  it('follows the Bearer token flow with credentials sent with the build, and keeps them out of the build', async () => {
    tokenFront.tokenAuth = { username: 'puller', password: 's3cret-pw', token: 'tok-123' };
    const df = `FROM ${tokenFront.host}/library/busybox:1\nRUN true\n`;
    const anonymous = await submit(token, 'pull/token', df);
    expect(anonymous.status).toBe('failed');
    expect(anonymous.error.message).toContain(`FROM ${tokenFront.host}/library/busybox:1`);
    expect(anonymous.error.message).toMatch(/anonymous access|credentials/);

    const auth = Buffer.from(JSON.stringify({ [tokenFront.host]: { username: 'puller', password: 's3cret-pw' } })).toString('base64');
    const withCreds = await submit(token, 'pull/token', df, { 'strata-registry-auth': auth });
    expect(withCreds.error).toBeNull();
    expect(withCreds.baseImage.digest).toBe(amd64Digest);
    expect(tokenFront.requests.some((r) => r.startsWith('GET /token?'))).toBe(true);
    expect(JSON.stringify(withCreds)).not.toContain('s3cret');
    const row = await stack.prisma.build.findUniqueOrThrow({ where: { id: withCreds.id } });
    expect(row.registryAuthSealed).toBeNull();

    const res = await fetch(`${stack.url}/v1/builds?repository=pull/bad`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar', 'strata-registry-auth': 'not-json' },
      body: tarOf(makeDir({ Dockerfile: 'FROM scratch\n' })),
    });
    expect(res.status).toBe(400);
  });

  it('pulls a Docker schema 2 image from a registry with basic auth (htpasswd)', async () => {
    // Asynchronously: the api shares this event loop, and seconds of a blocked loop let its keep-alive
    // sockets expire under the client, whose next request then meets a reset connection.
    const execFileP = promisify(execFile);
    const hash = (await execFileP('python3', ['-c', "import crypt; print(crypt.crypt('pw-basic', crypt.mksalt(crypt.METHOD_BLOWFISH)))"], { encoding: 'utf8' })).stdout.trim();
    authRegistry = await startRegistry(`basicuser:${hash}\n`);
    await execFileP('skopeo', ['copy', '--quiet', '--format', 'v2s2', '--dest-tls-verify=false', '--dest-creds', 'basicuser:pw-basic', `oci:${layoutDir}:1`, `docker://${authRegistry.host}/tools/busybox:1`]);
    const df = `FROM ${authRegistry.host}/tools/busybox:1\nRUN echo ok\n`;
    const denied = await submit(token, 'pull/basic', df);
    expect(denied.status).toBe('failed');
    expect(denied.error.message).toMatch(/credentials/);
    const auth = Buffer.from(JSON.stringify({ [authRegistry.host]: { username: 'basicuser', password: 'pw-basic' } })).toString('base64');
    const ok = await submit(token, 'pull/basic', df, { 'strata-registry-auth': auth });
    expect(ok.error).toBeNull();
    expect(ok.baseImage.source).toBe('registry');
  });

  it('builds FROM a digest with the registry down: the manifest and blobs come from the blob store', async () => {
    front.down = true;
    try {
      const result = await submit(token, 'pull/pinned', `FROM ${front.host}/library/busybox@${amd64Digest}\nRUN echo offline\n`);
      expect(result.error).toBeNull();
      expect(result.baseImage).toEqual({ ref: `${front.host}/library/busybox@${amd64Digest}`, digest: amd64Digest, source: 'registry' });
    } finally {
      front.down = false;
    }
  });
});

// Incremental context upload (docs/adr/0025): the CLI sends a manifest, the api answers what the
// tenant's content store lacks, only that is uploaded, and the worker assembles the context. Bytes
// and requests are counted by a proxy between the CLI and the api, as the network would see them.
import { jest } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(240_000);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'apps/cli/dist/bin.js');
const MANIFEST = 'application/vnd.strata.context-manifest+json';
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');

interface Counted {
  path: string;
  bytes: number;
}

/** An HTTP proxy to the api that records every request's path and body size. */
async function countingProxy(target: string): Promise<{ url: string; seen: Counted[]; close(): Promise<void> }> {
  const seen: Counted[] = [];
  const to = new URL(target);
  const server: Server = createServer((req, res) => {
    const record: Counted = { path: (req.url ?? '').split('?')[0], bytes: 0 };
    seen.push(record);
    const up = request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.on('data', (c: Buffer) => (record.bytes += c.length));
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function strata(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd: tmpdir(), env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** A context of `n` files with distinct contents, aged so the stat cache may trust them. */
function contextOf(n: number): string {
  const files: Record<string, string> = {
    Dockerfile: 'FROM scratch\nCOPY . /app/\n',
    '.dockerignore': 'ignored/\n*.log\n',
    'ignored/big.bin': 'x'.repeat(100_000),
    'debug.log': 'noise',
  };
  for (let i = 0; i < n; i++) files[`src/d${i % 7}/f${i}.txt`] = `file ${i}\n`.repeat(1 + (i % 13));
  files['src/same-a.txt'] = 'same content';
  files['src/same-b.txt'] = 'same content';
  files['src/link'] = 'unused';
  const dir = makeDir(files);
  execFileSync('rm', [path.join(dir, 'src/link')]);
  execFileSync('ln', ['-s', 'same-a.txt', path.join(dir, 'src/link')]);
  // Files written in the same second as the scan would be hashed again (racily clean): age them.
  execFileSync('find', [dir, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
  return dir;
}

/** Image timestamps from the build, not the clock: builds in two tenants can be compared by digest. */
const EPOCH = ['--build-arg', 'SOURCE_DATE_EPOCH=1700000000'];
const blobRequests = (seen: Counted[]) => seen.filter((s) => s.path === '/v1/contexts/blobs');
const bytesOf = (seen: Counted[]) => seen.reduce((n, s) => n + s.bytes, 0);

describe('incremental build contexts', () => {
  let stack: Stack;
  let a: { token: string };
  let b: { token: string };
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let cacheDir: string;

  beforeAll(async () => {
    execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-b', 'apps/cli/tsconfig.json'], { cwd: root, stdio: 'inherit' });
    stack = await startStack();
    a = await stack.tenant('ctx-a');
    b = await stack.tenant('ctx-b');
    proxy = await countingProxy(stack.url);
    cacheDir = mkdtempSync(path.join(tmpdir(), 'strata-cli-cache-'));
  });
  afterAll(async () => {
    await proxy?.close();
    await stack?.close();
  });

  it('uploads everything once, then only the manifest, then one changed file; the image equals the tar upload\'s', async () => {
    const dir = contextOf(300);
    const env = { STRATA_URL: proxy.url, STRATA_TOKEN: a.token, STRATA_CACHE_DIR: cacheDir };

    proxy.seen.length = 0;
    const cold = await strata(['build', dir, '-t', 'inc/app:cold', ...EPOCH], env);
    expect(cold.stderr).toMatch(/built inc\/app:cold sha256:[0-9a-f]{64}/);
    expect(cold.code).toBe(0);
    // 300 files + 2 equal ones stored once + Dockerfile + .dockerignore; the ignored files are never sent.
    expect(cold.stderr).toMatch(/context: 304 files, \d+ bytes, 304 hashed; uploaded 303 contents/);
    expect(blobRequests(proxy.seen)).toHaveLength(1);
    // Each content fits one tar block after its header, then the end of the archive: the ignored 100 kB never travel.
    expect(bytesOf(blobRequests(proxy.seen))).toBe(303 * 1024 + 1024);
    // The manifest crosses the wire once: after the upload the build names it by its digest.
    const manifestSends = () => proxy.seen.filter((s) => s.path === '/v1/builds' && s.bytes > 0);
    expect(manifestSends()).toHaveLength(1);
    expect(proxy.seen.filter((s) => s.path === '/v1/builds')).toHaveLength(3);
    const coldDigest = /sha256:[0-9a-f]{64}/.exec(cold.stderr)![0];

    proxy.seen.length = 0;
    const noop = await strata(['build', dir, '-t', 'inc/app:noop', ...EPOCH], env);
    expect(noop.code).toBe(0);
    expect(noop.stderr).toMatch(/304 files, \d+ bytes, 0 hashed; uploaded 0 contents \(0 bytes\)/);
    expect(blobRequests(proxy.seen)).toHaveLength(0);
    // The build names the manifest it built from before by digest: no request carries a body.
    expect(proxy.seen.filter((s) => s.bytes > 0)).toEqual([]);
    expect(proxy.seen.filter((s) => s.path === '/v1/builds')).toHaveLength(1);
    expect(noop.stderr).toMatch(/in 1 request \(the server had it/);
    // The walk saw what the cold build's did: its manifest digest was remembered, no manifest was made (docs/adr/0037).
    expect(noop.stderr).toContain('the walk was unchanged, no manifest made');
    expect(noop.stderr).toContain(coldDigest);
    // The build, its log followed to the end, and nothing after it: the end event named the image.
    expect(proxy.seen.map((s) => s.path.replace(/^\/v1\/builds\/[^/]+/, '/v1/builds/ID'))).toEqual(['/v1/builds', '/v1/builds/ID/logs']);

    proxy.seen.length = 0;
    writeFileSync(path.join(dir, 'src/d1/f1.txt'), 'changed\n');
    utimesSync(path.join(dir, 'src/d1/f1.txt'), 1700000100, 1700000100);
    const one = await strata(['build', dir, '-t', 'inc/app:one', ...EPOCH], env);
    expect(one.code).toBe(0);
    expect(one.stderr).toMatch(/304 files, \d+ bytes, 1 hashed; uploaded 1 content \(8 bytes\)/);
    expect(blobRequests(proxy.seen)).toHaveLength(1);
    expect(blobRequests(proxy.seen)[0].bytes).toBe(512 + 512 + 1024);
    // Digest (unknown), manifest (one content missing), digest again: the manifest sent once.
    expect(manifestSends()).toHaveLength(1);
    expect(proxy.seen.filter((s) => s.path === '/v1/builds')).toHaveLength(3);
    expect(one.stderr).toMatch(/in 4 requests/);
    const oneDigest = /built inc\/app:one (sha256:[0-9a-f]{64})/.exec(one.stderr)![1];
    expect(oneDigest).not.toBe(coldDigest);

    // The same directory sent as a tar, built cold in another tenant (no shared cache), gives the same image, byte for byte.
    const viaTar = await build(stack, b.token, 'repository=inc/tar&tag=v1&buildArg=SOURCE_DATE_EPOCH=1700000000', tarOf(dir));
    expect(viaTar.status).toBe('succeeded');
    expect(viaTar.imageDigest).toBe(oneDigest);
    // STRATA_CONTEXT_UPLOAD=tar still sends a tar.
    proxy.seen.length = 0;
    const viaCliTar = await strata(['build', dir, '-t', 'inc/clitar:v1', ...EPOCH], { ...env, STRATA_CONTEXT_UPLOAD: 'tar' });
    expect(viaCliTar.code).toBe(0);
    expect(viaCliTar.stderr).toContain(oneDigest);
    expect(proxy.seen.map((s) => s.path)).not.toContain('/v1/contexts/manifest');

    // Tenant B with the same stat cache: the remembered walk names a manifest B never built, so B hears
    // 409 (as for any unknown digest), sends the manifest and uploads every content itself (docs/adr/0037).
    proxy.seen.length = 0;
    const other = await strata(['build', dir, '-t', 'inc/other:v1', ...EPOCH], { ...env, STRATA_TOKEN: b.token });
    expect(other.code).toBe(0);
    expect(other.stderr).toMatch(/304 files, \d+ bytes, 0 hashed; uploaded 303 contents/);
    expect(other.stderr).toContain(oneDigest);
    expect(manifestSends()).toHaveLength(1);
  });

  it("never tells one tenant whether another holds a content, and never builds from another's store", async () => {
    const secret = `only tenant A has this ${Date.now()}`;
    const digest = `sha256:${sha256(secret)}`;
    const tar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [digest.slice(7)]: secret }), '.']);
    const stored = await api(stack, a.token, 'POST', '/v1/contexts/blobs', tar, 'application/x-tar');
    expect(stored.status).toBe(201);
    expect(stored.json).toEqual({ stored: 1, bytes: secret.length, skipped: 0 });
    const dockerfile = 'FROM scratch\nCOPY s /s\n';
    const manifest = JSON.stringify({
      version: 1,
      entries: [
        { path: 'Dockerfile', type: 'file', mode: 0o644, mtime: 0, size: dockerfile.length, digest: `sha256:${sha256(dockerfile)}` },
        { path: 's', type: 'file', mode: 0o644, mtime: 0, size: secret.length, digest },
      ],
    });
    const askA = await api(stack, a.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json');
    expect(askA.status).toBe(200);
    expect(askA.json.missing).toEqual([`sha256:${sha256(dockerfile)}`]);
    const askB = await api(stack, b.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json');
    expect(askB.status).toBe(200);
    expect(askB.json.missing).toContain(digest);
    // A build naming A's content from B is refused as missing, exactly as for a content nobody has.
    const buildB = await api(stack, b.token, 'POST', '/v1/builds?repository=steal', manifest, MANIFEST);
    expect(buildB.status).toBe(400);
    expect(buildB.json.message).toContain(`${digest} ("s")`);
    expect(buildB.json.message).toMatch(/not in your content store/);
    expect(buildB.json.missing).toEqual(expect.arrayContaining([digest]));
    // Once A has built from the manifest, B naming it by digest hears only that it has no such manifest.
    const dfTar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [sha256(dockerfile)]: dockerfile }), '.']);
    expect((await api(stack, a.token, 'POST', '/v1/contexts/blobs', dfTar, 'application/x-tar')).status).toBe(201);
    const builtA = await build(stack, a.token, 'repository=own', Buffer.from(manifest), MANIFEST);
    expect(builtA.status).toBe('succeeded');
    const manifestDigest = (await api(stack, a.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json')).json.digest as string;
    const byDigest = async (token: string) => {
      const res = await fetch(`${stack.url}/v1/builds?repository=bydigest`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': MANIFEST, 'strata-context-digest': manifestDigest }, body: '' });
      return { status: res.status, json: (await res.json()) as { unknownManifest?: boolean; id?: string } };
    };
    // B sent this manifest itself and was refused: the api kept B's copy, and naming it hears, from B's
    // own store, that A's content is still missing there; never a build.
    const fromB = (await byDigest(b.token)) as { status: number; json: { missing?: string[] } };
    expect(fromB.status).toBe(400);
    expect(fromB.json.missing).toEqual(expect.arrayContaining([digest]));
    const fromA = await byDigest(a.token);
    expect(fromA.status).toBe(202);
    expect((await waitForBuild(stack, a.token, fromA.json.id!)).imageDigest).toBe(builtA.imageDigest);
  });

  it('keeps a refused manifest for its own tenant only, until the contents it lacked arrive', async () => {
    const content = `pending ${Date.now()}`;
    const dockerfile = `FROM scratch\nCOPY p /p\n# ${Date.now()}\n`;
    const manifest = JSON.stringify({
      version: 1,
      entries: [
        { path: 'Dockerfile', type: 'file', mode: 0o644, mtime: 0, size: dockerfile.length, digest: `sha256:${sha256(dockerfile)}` },
        { path: 'p', type: 'file', mode: 0o644, mtime: 0, size: content.length, digest: `sha256:${sha256(content)}` },
      ],
    });
    const byDigest = async (token: string, digest: string) => {
      const res = await fetch(`${stack.url}/v1/builds?repository=pending`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': MANIFEST, 'strata-context-digest': digest }, body: '' });
      return { status: res.status, json: (await res.json()) as { unknownManifest?: boolean; id?: string; missing?: string[]; message?: string } };
    };
    const refused = await api(stack, a.token, 'POST', '/v1/builds?repository=pending', manifest, MANIFEST);
    expect(refused.status).toBe(400);
    expect(refused.json.pending).toBe(true);
    expect(refused.json.missing).toHaveLength(2);
    expect(refused.json.message).toMatch(/by its Strata-Context-Digest alone/);
    const digest = (await api(stack, a.token, 'POST', '/v1/contexts/manifest', manifest, 'application/json')).json.digest as string;
    // Another tenant naming it hears only that it has no such manifest.
    const fromB = await byDigest(b.token, digest);
    expect(fromB.status).toBe(409);
    expect(fromB.json.unknownManifest).toBe(true);
    // Before its contents arrive, the owner is told which are still missing, and the manifest stays kept.
    const dfTar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [sha256(dockerfile)]: dockerfile }), '.']);
    expect((await api(stack, a.token, 'POST', '/v1/contexts/blobs', dfTar, 'application/x-tar')).status).toBe(201);
    const early = await byDigest(a.token, digest);
    expect(early.status).toBe(400);
    expect(early.json.missing).toEqual([`sha256:${sha256(content)}`]);
    expect(early.json.message).toContain('("p")');
    // B uploading the same bytes into its own store does not complete A's manifest.
    const pTar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [sha256(content)]: content }), '.']);
    expect((await api(stack, b.token, 'POST', '/v1/contexts/blobs', pTar, 'application/x-tar')).status).toBe(201);
    expect((await byDigest(a.token, digest)).status).toBe(400);
    expect((await byDigest(b.token, digest)).status).toBe(409);
    // Once A uploaded it, the digest alone starts the build, from the manifest as sent.
    expect((await api(stack, a.token, 'POST', '/v1/contexts/blobs', pTar, 'application/x-tar')).status).toBe(201);
    const started = await byDigest(a.token, digest);
    expect(started.status).toBe(202);
    const built = await waitForBuild(stack, a.token, started.json.id!);
    expect(built.status).toBe('succeeded');
    const df = await api(stack, a.token, 'GET', `/v1/builds/${started.json.id}/dockerfile`);
    expect(df.json.text).toBe(dockerfile);
  });

  it('stores a batch of announced size in one write, and refuses one whose contents add up to another', async () => {
    const content = `sized ${Date.now()}`;
    const hex = sha256(content);
    const tar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [hex]: content }), '.']);
    const post = async (packBytes: string) => {
      const res = await fetch(`${stack.url}/v1/contexts/blobs`, { method: 'POST', headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/x-tar', 'strata-pack-bytes': packBytes }, body: tar });
      return { status: res.status, json: (await res.json()) as { message?: string; stored?: number } };
    };
    const ask = async () => (await api(stack, a.token, 'POST', '/v1/contexts/manifest', JSON.stringify({ version: 1, entries: [{ path: 'x', type: 'file', size: content.length, digest: `sha256:${hex}` }] }), 'application/json')).json.missing;
    for (const [header, message] of [
      [String(content.length + 1), /add up to \d+ bytes, not the \d+ its Strata-Pack-Bytes header announced/],
      [String(content.length - 1), /add up to more than \d+ bytes/],
      ['-1', /Strata-Pack-Bytes "-1" is not a byte count/],
      ['1e3', /is not a byte count/],
    ] as const) {
      const res = await post(header);
      expect({ header, status: res.status }).toEqual({ header, status: 400 });
      expect(res.json.message).toMatch(message);
      expect(await ask()).toEqual([`sha256:${hex}`]);
    }
    const ok = await post(String(content.length));
    expect(ok.status).toBe(201);
    expect(ok.json.stored).toBe(1);
    expect(await ask()).toEqual([]);
  });

  it('refuses bad manifests and bad batches with 400 saying what is wrong', async () => {
    const d = `sha256:${'a'.repeat(64)}`;
    const cases: Array<[unknown, RegExp]> = [
      [{ version: 1, entries: [{ path: '../etc/passwd', type: 'file', size: 1, digest: d }] }, /entry 0 \("..\/etc\/passwd"\): the path escapes the context/],
      [{ version: 1, entries: [{ path: '/etc/passwd', type: 'file', size: 1, digest: d }] }, /the path is absolute/],
      [{ version: 1, entries: [{ path: 'a', type: 'file', size: 1, digest: 'sha256:xyz' }] }, /"digest" must be "sha256:" and 64 lowercase hex digits/],
      [{ version: 1, entries: [{ path: 'l', type: 'symlink', target: '/etc/shadow' }] }, /symlink target "\/etc\/shadow" is absolute/],
      [{ version: 1, entries: [{ path: 'd/l', type: 'symlink', target: '../../x' }] }, /points outside the context/],
      [{ version: 1, entries: [{ path: 'a', type: 'file', size: 1, digest: d }, { path: 'a', type: 'dir' }] }, /appears more than once/],
      [{ version: 1, entries: [{ path: 'a', type: 'file', size: 1, digest: d }, { path: 'a/b', type: 'dir' }] }, /its parent "a" is a file/],
      [{ version: 2, entries: [] }, /unsupported manifest version 2/],
      [{ version: 1, entries: [{ path: 'a', type: 'fifo' }] }, /"type" must be "file", "dir" or "symlink"/],
    ];
    for (const [body, message] of cases) {
      const res = await api(stack, a.token, 'POST', '/v1/contexts/manifest', JSON.stringify(body), 'application/json');
      expect({ body, status: res.status }).toEqual({ body, status: 400 });
      expect(res.json.message).toMatch(message);
      const asBuild = await api(stack, a.token, 'POST', '/v1/builds?repository=bad', JSON.stringify(body), MANIFEST);
      expect({ body, status: asBuild.status }).toEqual({ body, status: 400 });
    }
    const notJson = await api(stack, a.token, 'POST', '/v1/contexts/manifest', '{"version":1,', 'application/json');
    expect(notJson.status).toBe(400);
    expect(notJson.json.message).toMatch(/not valid JSON/);
    // A gzip manifest is read as such.
    const gz = await fetch(`${stack.url}/v1/contexts/manifest`, {
      method: 'POST',
      headers: { authorization: `Bearer ${a.token}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body: gzipSync(JSON.stringify({ version: 1, entries: [{ path: 'x', type: 'file', size: 3, digest: d }] })),
    });
    expect(gz.status).toBe(200);
    expect(((await gz.json()) as { missing: string[] }).missing).toEqual([d]);
    // An unknown content at build time names the path that uses it.
    const unknown = await api(stack, a.token, 'POST', '/v1/builds?repository=bad', JSON.stringify({ version: 1, entries: [{ path: 'Dockerfile', type: 'file', size: 1, digest: d }] }), MANIFEST);
    expect(unknown.status).toBe(400);
    expect(unknown.json.message).toContain(`${d} ("Dockerfile")`);
    // A batch entry whose content does not match its name stores nothing.
    const lie = execFileSync('tar', ['-cf', '-', '-C', makeDir({ ['b'.repeat(64)]: 'not that' }), '.']);
    const refused = await api(stack, a.token, 'POST', '/v1/contexts/blobs', lie, 'application/x-tar');
    expect(refused.status).toBe(400);
    expect(refused.json.message).toContain(`its content's sha256 is ${sha256('not that')}`);
    const after = await api(stack, a.token, 'POST', '/v1/contexts/manifest', JSON.stringify({ version: 1, entries: [{ path: 'x', type: 'file', size: 8, digest: `sha256:${'b'.repeat(64)}` }] }), 'application/json');
    expect(after.json.missing).toEqual([`sha256:${'b'.repeat(64)}`]);
    const badName = execFileSync('tar', ['-cf', '-', '-C', makeDir({ 'notadigest.txt': 'x' }), '.']);
    const named = await api(stack, a.token, 'POST', '/v1/contexts/blobs', badName, 'application/x-tar');
    expect(named.status).toBe(400);
    expect(named.json.message).toMatch(/"\.\/notadigest.txt" of the batch is not a regular file named by the sha256/);
  });

  it('shows a manifest build\'s Dockerfile and rebuilds it from the store', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY hi /hi\n', hi: 'hi' });
    const r = await strata(['build', dir, '-t', 'inc/df:v1'], { STRATA_URL: stack.url, STRATA_TOKEN: a.token, STRATA_CACHE_DIR: cacheDir });
    expect(r.code).toBe(0);
    const id = /build ([0-9a-f-]{36}) queued/.exec(r.stderr)![1];
    const df = await api(stack, a.token, 'GET', `/v1/builds/${id}/dockerfile`);
    expect(df.json).toEqual({ path: 'Dockerfile', text: 'FROM scratch\nCOPY hi /hi\n' });
    const again = await api(stack, a.token, 'POST', `/v1/builds/${id}/rebuild`);
    expect(again.status).toBe(202);
    const first = await api(stack, a.token, 'GET', `/v1/builds/${id}`);
    const rebuilt = await waitForBuild(stack, a.token, again.json.id);
    expect(rebuilt.status).toBe('succeeded');
    expect(rebuilt.imageDigest).toBe(first.json.imageDigest);
    // Read from the tenant's store at submission, and carried by the rebuild: the worker starts the steps that need no context meanwhile (ADR 0041).
    const rows = await stack.prisma.build.findMany({ where: { id: { in: [id, again.json.id] } }, select: { dockerfileText: true } });
    expect(rows.map((b) => b.dockerfileText)).toEqual(['FROM scratch\nCOPY hi /hi\n', 'FROM scratch\nCOPY hi /hi\n']);
  });

  it('counts the content store against the stored-bytes quota', async () => {
    const before = await api(stack, a.token, 'GET', '/v1/usage');
    const content = `quota ${Date.now()} `.repeat(1000);
    const tar = execFileSync('tar', ['-cf', '-', '-C', makeDir({ [sha256(content)]: content }), '.']);
    expect((await api(stack, a.token, 'POST', '/v1/contexts/blobs', tar, 'application/x-tar')).status).toBe(201);
    const after = await api(stack, a.token, 'GET', '/v1/usage');
    expect(after.json.quotas.maxStoredBytes.used - before.json.quotas.maxStoredBytes.used).toBe(content.length);
  });
});

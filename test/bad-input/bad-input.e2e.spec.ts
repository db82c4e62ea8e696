import { jest } from '@jest/globals';
import { connect } from 'node:net';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { readTarEntries } from '@strata/oci';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';
import { contextCases, dockerfileCases, type Expected, goodTar } from './corpus.js';

jest.setTimeout(60_000);

const LIMIT = 8 * 1024 * 1024;
const MAX_ENTRIES = 500;

/** Neither a 500 nor an internal error: the two ways bad input must never surface. */
function expectNoInternalError(res: { status: number; text: string }): void {
  expect(res.status).toBeLessThan(500);
  expect(res.text).not.toMatch(/internal error|Internal Server Error/i);
}

describe('the bad-input corpus (test/bad-input): every case is a 4xx or a failed build with a message', () => {
  let stack: Stack;
  let tenant: { token: string; name: string; tenantId: string };

  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_MAX_CONTEXT_BYTES: String(LIMIT), STRATA_MAX_CONTEXT_ENTRIES: String(MAX_ENTRIES) } });
    tenant = await stack.tenant('bad-input');
  });
  afterAll(async () => {
    await stack.close();
  });

  /** Sends the case and checks what the sender sees; a refused upload must leave no build behind. */
  async function check(query: string, body: Buffer | string, contentType: string | undefined, expected: Expected, headers: Record<string, string> = {}) {
    const res = await fetch(`${stack.url}/v1/builds?${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, ...(contentType ? { 'content-type': contentType } : {}), ...headers },
      body,
    });
    const text = await res.text();
    expectNoInternalError({ status: res.status, text });
    const json = JSON.parse(text);
    if ('status' in expected) {
      expect({ status: res.status, message: json.message }).toEqual({ status: expected.status, message: expect.stringMatching(expected.message) });
      expect(json).toMatchObject({ statusCode: expected.status, error: expect.any(String) });
      return;
    }
    expect(res.status).toBe(202);
    const done = await waitForBuild(stack, tenant.token, json.id, 60_000);
    expect({ status: done.status, message: done.error?.message }).toEqual({ status: 'failed', message: expect.stringMatching(expected.message) });
    expect(done.error.message).not.toMatch(/internal error/);
    return done;
  }

  describe('build contexts', () => {
    it.each(contextCases(LIMIT, MAX_ENTRIES).map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      const before = await stack.prisma.build.count({ where: { tenantId: tenant.tenantId } });
      await check(c.query ?? 'repository=ctx', c.body, c.contentType ?? 'application/x-tar', c.expect);
      // A refusal at the edge records nothing; an accepted one records exactly one build.
      const after = await stack.prisma.build.count({ where: { tenantId: tenant.tenantId } });
      expect(after - before).toBe('status' in c.expect ? 0 : 1);
    });

    it('takes a plain tar sent as application/gzip and a content type with parameters (the bytes decide)', async () => {
      for (const type of ['application/gzip', 'application/x-tar; charset=binary']) {
        const res = await api(stack, tenant.token, 'POST', '/v1/builds?repository=ok', goodTar(), type);
        expect(res.status).toBe(202);
        expect((await waitForBuild(stack, tenant.token, res.json.id)).status).toBe('succeeded');
      }
    });
  });

  describe('content types', () => {
    it.each([
      ['application/json', '{"context": "x"}'],
      ['text/plain', 'FROM scratch'],
      ['multipart/form-data; boundary=x', '--x\r\n\r\n--x--'],
      [undefined, 'no type at all'],
      ['application/x-tarball', 'a near miss'],
    ])('refuses %s with 415', async (type, body) => {
      await check('repository=types', body, type, { status: 415, message: /^The build context must be sent as application\/x-tar or application\/gzip, not / });
    });
  });

  describe('query values', () => {
    it.each([
      ['repository=' + 'a'.repeat(300), /^Invalid repository: /],
      ['repository=a&repository=b', /"repository" was given more than once/],
      ['repository=ok&tag=' + 't'.repeat(200), /^Invalid tag: /],
      ['repository=ok&tag=ok&tag=%00', /^Invalid tag: /],
      ['repository=ok&dockerfile=%2Fetc%2Fpasswd', /^Invalid dockerfile "\/etc\/passwd"/],
      ['repository=ok&dockerfile=a%00b', /^Invalid dockerfile /],
      ['repository=ok&dockerfile=', /^Invalid dockerfile ""/],
      ['repository=ok&buildArg=1X=2', /^Invalid buildArg "1X=2"/],
      ['repository=ok&buildArg==x', /^Invalid buildArg "=x"/],
      ['repository=ok&noCache=yes', /"noCache" must be true or false/],
      ['repository=ok&target=a&target=b', /"target" was given more than once/],
      ['repository=%E0%A4%A', /^Invalid repository: /],
      ['repository=ok%2F..%2Fother', /^Invalid repository: /],
      ['repository[a]=b', /"repository" is required|Invalid repository/],
    ])('POST /v1/builds?%s → 400', async (query, message) => {
      await check(query, goodTar(), 'application/x-tar', { status: 400, message });
    });

    it.each([
      ['/v1/builds?limit=0', 400, /^Invalid limit "0"/],
      ['/v1/builds?limit=-1', 400, /^Invalid limit "-1"/],
      ['/v1/builds?limit=1e3', 400, /^Invalid limit "1e3"/],
      ['/v1/builds?limit=99999999999999999999', 400, /^Invalid limit /],
      ['/v1/builds?status=exploded', 400, /^Invalid status "exploded"/],
      ['/v1/builds?cursor=%00%01', 400, /cursor/i],
      ['/v1/builds?cursor=' + 'A'.repeat(4000), 400, /cursor/i],
      ['/v1/builds/not-a-uuid', 404, /does not exist/],
      ['/v1/builds/00000000-0000-0000-0000-000000000000', 404, /does not exist/],
      // Encoded, so the client does not resolve the dots away (a plain ../ reaches the console's pages, not the api).
      ['/v1/builds/..%2F..%2Fetc%2Fpasswd', 404, /does not exist/],
      ['/v1/repositories/' + 'x'.repeat(300) + '/tags', 400, /^Invalid repository name: .* 300 characters long/],
    ])('GET %s → %d', async (path, status, message) => {
      const res = await api(stack, tenant.token, 'GET', path);
      expectNoInternalError(res);
      expect({ status: res.status, message: res.json?.message }).toEqual({ status, message: expect.stringMatching(message) });
    });

    it('answers 404 to cancelling a build id that is not a uuid', async () => {
      const res = await api(stack, tenant.token, 'POST', '/v1/builds/%27%3B%20DROP%20TABLE/cancel');
      expectNoInternalError(res);
      expect(res.status).toBe(404);
    });
  });

  describe('headers', () => {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    it.each([
      [{ 'strata-build-secret': 'garbage' }, /^Strata-Build-Secret: unknown field "garbage"/],
      [{ 'strata-build-secret': 'id=,src=' }, /^Strata-Build-Secret: invalid id ""/],
      [{ 'strata-build-secret': 'id=a b,src=aGk=' }, /^Strata-Build-Secret: invalid id "a b"/],
      [{ 'strata-build-secret': 'id=a,src=!!!' }, /the value of "a" is not valid base64/],
      [{ 'strata-build-secret': 'id=a' }, /needs both fields/],
      [{ 'strata-registry-auth': 'not base64 json' }, /^Strata-Registry-Auth must be base64 of a JSON object/],
      [{ 'strata-registry-auth': b64('[]') }, /keyed by registry host/],
      [{ 'strata-registry-auth': b64('{"h": 1}') }, /needs a string username and password/],
      [{ 'strata-registry-auth': b64('{"http://evil/": {"username":"u","password":"p"}}') }, /is not a registry host/],
    ])('refuses %j with 400', async (headers, message) => {
      await check('repository=headers', goodTar(), 'application/x-tar', { status: 400, message }, headers);
    });

    it.each([['Basic abc'], ['Bearer'], ['Bearer ' + 'x'.repeat(8000)], ['Token abc']])('answers 401 to Authorization: %s', async (authorization) => {
      const res = await fetch(`${stack.url}/v1/builds`, { headers: { authorization } });
      const text = await res.text();
      expectNoInternalError({ status: res.status, text });
      expect(res.status).toBe(401);
      expect(JSON.parse(text).message).toMatch(/./);
    });

    it('records no build when the client promises a longer body than it sends and hangs up', async () => {
      const repository = `cut-${Date.now()}`;
      const tar = goodTar();
      await new Promise<void>((resolve, reject) => {
        const url = new URL(stack.url);
        const socket = connect(Number(url.port), url.hostname, () => {
          socket.write(
            `POST /v1/builds?repository=${repository} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${tenant.token}\r\n` +
              `Content-Type: application/x-tar\r\nContent-Length: ${tar.length * 100}\r\n\r\n`,
          );
          socket.write(tar);
          setTimeout(() => socket.destroy(), 300);
        });
        socket.on('close', () => resolve());
        socket.on('error', reject);
      });
      // The api notices the hang-up; give it a moment, then nothing may exist for that repository.
      await new Promise((r) => setTimeout(r, 1000));
      expect(await stack.prisma.build.count({ where: { tenantId: tenant.tenantId, repository: { name: repository } } })).toBe(0);
      const retry = await api(stack, tenant.token, 'POST', `/v1/builds?repository=${repository}`, tar, 'application/x-tar');
      expect(retry.status).toBe(202);
      expect((await waitForBuild(stack, tenant.token, retry.json.id)).status).toBe('succeeded');
    });
  });

  describe('a context with symlinks to absolute paths (BuildKit takes it) never reads the worker\'s files', () => {
    // Links a checkout may hold, and ones an attacker would try: each means a path in the context.
    const links = { abs: { content: '', symlink: '/etc/passwd' }, etcl: { content: '', symlink: '/etc' }, rootf: { content: '', symlink: '/f.txt' }, via: { content: '', symlink: 'etcl/shadow' } };
    const context = (dockerfile: string) => tarOf(makeDir({ Dockerfile: dockerfile, 'f.txt': 'the context file\n', ...links }), true);

    it.each([
      ['COPY abs /stolen', /^Dockerfile:2: COPY: "abs" not found/],
      ['COPY etcl/passwd /stolen', /^Dockerfile:2: COPY: "etcl\/passwd" not found/],
      ['COPY etcl/ /stolen/', /^Dockerfile:2: COPY: "etcl\/" not found/],
      ['COPY via /stolen', /^Dockerfile:2: COPY: "via" not found/],
      ['COPY etcl/../etc/hostname /stolen', /^Dockerfile:2: COPY: ".*" not found/],
      ['ADD etcl/passwd /stolen', /^Dockerfile:2: ADD: "etcl\/passwd" not found/],
      ['RUN --mount=type=bind,source=etcl,target=/m ["/m/sh"]', /^Dockerfile:2: .*"etcl" not found/],
      ['RUN --mount=type=bind,source=abs,target=/m,rw ["/m"]', /^Dockerfile:2: .*"abs" not found/],
    ])('%s fails as not found', async (line, message) => {
      await check('repository=abs-links', context(`FROM scratch\n${line}\n`), 'application/gzip', { build: 'failed', message });
    });

    it('COPY keeps them as links, follows them inside the context, and nothing in the image is the worker\'s', async () => {
      const res = await api(stack, tenant.token, 'POST', '/v1/builds?repository=abs-links-ok', context('FROM scratch\nCOPY . /all/\nCOPY rootf /followed\nCOPY abs/.. /dotdot/\n'), 'application/gzip');
      expect(res.status).toBe(202);
      const done = await waitForBuild(stack, tenant.token, res.json.id, 60_000);
      expect({ status: done.status, error: done.error }).toEqual({ status: 'succeeded', error: null });
      const archive = await fetch(`${stack.url}/v1/repositories/abs-links-ok/tags/latest/oci-archive`, { headers: { authorization: `Bearer ${tenant.token}` } });
      expect(archive.status).toBe(200);
      const dir = mkdtempSync(path.join(tmpdir(), 'strata-abs-links-'));
      writeFileSync(path.join(dir, 'image.tar'), Buffer.from(await archive.arrayBuffer()));
      execFileSync('tar', ['-xf', 'image.tar'], { cwd: dir });
      const blob = (d: string) => readFileSync(path.join(dir, 'blobs', ...d.split(':')));
      const manifest = JSON.parse(blob(JSON.parse(readFileSync(path.join(dir, 'index.json'), 'utf8')).manifests[0].digest).toString('utf8'));
      const files = new Map<string, { type: string; linkname: string; content: string }>();
      for (const l of manifest.layers as Array<{ digest: string }>) {
        for await (const { header, body } of readTarEntries(Readable.from([blob(l.digest)]))) {
          const chunks: Buffer[] = [];
          for await (const c of body) chunks.push(c as Buffer);
          files.set(header.name.replace(/^\.?\//, ''), { type: header.type, linkname: header.linkname, content: Buffer.concat(chunks).toString('utf8') });
        }
      }
      expect(files.get('all/abs')).toMatchObject({ type: 'symlink', linkname: '/etc/passwd' });
      expect(files.get('all/etcl')).toMatchObject({ type: 'symlink', linkname: '/etc' });
      expect(files.get('dotdot/abs')).toMatchObject({ type: 'symlink', linkname: '/etc/passwd' });
      expect(files.get('followed')).toMatchObject({ type: 'file', content: 'the context file\n' });
      const worker = readFileSync('/etc/passwd', 'utf8');
      expect([...files.values()].filter((f) => f.content === worker || f.content.includes('root:x:0:0'))).toEqual([]);
    });
  });

  describe('hostile Dockerfiles', () => {
    it.each(dockerfileCases().map((c) => [c.name, c] as const))('%s fails with a message', async (_name, c) => {
      const ctx = tarOf(makeDir(Object.fromEntries(Object.entries(c.files).map(([k, v]) => [k, typeof v === 'string' ? v : { content: v as unknown as string }]))), true);
      const done = await check('repository=dockerfiles', ctx, 'application/gzip', { build: 'failed', message: c.message });
      if (c.line !== undefined) expect(done.error.line).toBe(c.line);
    });
  });

  describe('absurd registry requests', () => {
    const basic = () => `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}`;
    const fakeDigest = `sha256:${createHash('sha256').update('nothing').digest('hex')}`;
    async function registry(method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}) {
      const res = await fetch(`${stack.url}${path.replace('{name}', `${tenant.name}/app`)}`, { method, headers: { authorization: basic(), ...headers }, body });
      const text = await res.text();
      return { status: res.status, text, json: text ? JSON.parse(text) : null, headers: res.headers };
    }
    it.each([
      ['GET', '/v2/{name}/manifests/' + 't'.repeat(2000), undefined, {}],
      ['GET', '/v2/{name}/manifests/sha256:zz', undefined, {}],
      ['GET', '/v2/{name}/blobs/sha256:zz', undefined, {}],
      ['GET', '/v2/{name}/blobs/md5:abc', undefined, {}],
      ['GET', `/v2/{name}/blobs/${fakeDigest}`, undefined, {}],
      ['GET', '/v2/{name}%00/manifests/x', undefined, {}],
      ['GET', '/v2/_catalog?n=-1', undefined, {}],
      ['GET', '/v2/_catalog?n=abc', undefined, {}],
      ['GET', '/v2/{name}/tags/list?n=99999999999999999999', undefined, {}],
      ['PUT', '/v2/{name}/manifests/v1', 'not json', { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
      ['PUT', '/v2/{name}/manifests/v1', '{"schemaVersion": 2}', { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
      ['PUT', '/v2/{name}/manifests/v1', JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: fakeDigest, size: 2 }, layers: [] }), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
      ['PUT', '/v2/{name}/manifests/v1', 'x'.repeat(5 * 1024 * 1024), { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
      ['POST', `/v2/{name}/blobs/uploads/?digest=${fakeDigest}`, 'these bytes do not hash to that digest', { 'content-type': 'application/octet-stream' }],
      ['POST', '/v2/{name}/blobs/uploads/?digest=sha256:short', 'x', { 'content-type': 'application/octet-stream' }],
      ['PATCH', '/v2/{name}/blobs/uploads/00000000-0000-0000-0000-000000000000', 'x', { 'content-range': '0-0' }],
      ['PUT', `/v2/{name}/blobs/uploads/not-an-upload?digest=${fakeDigest}`, '', {}],
      ['DELETE', '/v2/{name}/manifests/latest', undefined, {}],
      ['POST', '/v2/{name}/manifests/latest', undefined, {}],
    ])('%s %s answers a 4xx with an OCI error', async (method, path, body, headers) => {
      const res = await registry(method, path, body, headers as Record<string, string>);
      expectNoInternalError(res);
      expect(res.status).toBeGreaterThanOrEqual(400);
      if (method !== 'HEAD') expect(res.json?.errors?.[0]?.message).toMatch(/./);
    });

    it('answers a PATCH with a nonsense or out-of-order Content-Range with 416, and the upload still works', async () => {
      const started = await registry('POST', '/v2/{name}/blobs/uploads/', undefined);
      expect(started.status).toBe(202);
      const location = started.headers.get('location')!;
      for (const range of ['bananas', '100-200', '5-1']) {
        const res = await fetch(new URL(location, stack.url), { method: 'PATCH', headers: { authorization: basic(), 'content-range': range, 'content-type': 'application/octet-stream' }, body: 'abc' });
        const text = await res.text();
        expectNoInternalError({ status: res.status, text });
        expect(res.status).toBe(416);
      }
      const data = Buffer.from('the upload survived bad ranges');
      const patched = await fetch(new URL(location, stack.url), { method: 'PATCH', headers: { authorization: basic(), 'content-range': `0-${data.length - 1}`, 'content-type': 'application/octet-stream' }, body: data });
      expect(patched.status).toBe(202);
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      const sep = patched.headers.get('location')!.includes('?') ? '&' : '?';
      const done = await fetch(new URL(`${patched.headers.get('location')}${sep}digest=${digest}`, stack.url), { method: 'PUT', headers: { authorization: basic() } });
      expect(done.status).toBe(201);
    });
  });
});

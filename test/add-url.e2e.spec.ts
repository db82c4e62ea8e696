// ADD <url> (issue 12): a remote file served by the test on 127.0.0.1, fetched through the egress
// guard: not unpacked, 0600 unless --chmod, mtime from Last-Modified, --checksum verified, and an
// unchanged file (ETag answered 304 to a conditional request) a cache hit; size limits, redirects
// and addresses the operator did not allow refused with the line.
import { jest } from '@jest/globals';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gzipSync } from 'node:zlib';
import { imageFiles } from './support/image-files.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(180_000);

const LAST_MODIFIED = 'Wed, 01 Jul 2020 12:00:00 GMT';

interface Served {
  body: Buffer;
  etag: string;
}

/** An HTTP server on 127.0.0.1 whose files the test changes; it records each request's path and validators. */
async function fileServer(files: Map<string, Served>) {
  const requests: Array<{ path: string; ifNoneMatch: string | null; status: number }> = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const record = (status: number) => requests.push({ path: url, ifNoneMatch: (req.headers['if-none-match'] as string) ?? null, status });
    if (url === '/to-v6') {
      record(302);
      res.writeHead(302, { location: `http://[::1]:${(server.address() as AddressInfo).port}/files/tool.sh` }).end();
      return;
    }
    const f = files.get(url);
    if (!f) {
      record(404);
      res.writeHead(404).end('no such file');
      return;
    }
    if (req.headers['if-none-match'] === f.etag) {
      record(304);
      res.writeHead(304, { etag: f.etag }).end();
      return;
    }
    record(200);
    res.writeHead(200, { etag: f.etag, 'last-modified': LAST_MODIFIED, 'content-length': f.body.length }).end(f.body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { requests, port: (server.address() as AddressInfo).port, close: () => new Promise((r) => server.close(r)) };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('ADD <url> with private sources allowed for 127.0.0.0/8', () => {
  let stack: Stack;
  let token: string;
  let server: Awaited<ReturnType<typeof fileServer>>;
  const files = new Map<string, Served>();
  const tool = Buffer.from('#!/bin/sh\necho tool v1\n');
  const archive = gzipSync(tarOf(makeDir({ 'inside.txt': 'inside' })));

  beforeAll(async () => {
    files.set('/files/tool.sh', { body: tool, etag: '"v1"' });
    files.set('/files/app.tar.gz', { body: archive, etag: '"tgz"' });
    files.set('/files/big.bin', { body: Buffer.alloc(5000, 7), etag: '"big"' });
    server = await fileServer(files);
    stack = await startStack({ env: { STRATA_ALLOW_PRIVATE_SOURCES: '127.0.0.0/8', STRATA_ADD_URL_MAX_BYTES: '4096' } });
    ({ token } = await stack.tenant('addurl'));
  });
  afterAll(async () => {
    await stack?.close();
    await server?.close();
  });

  const base = () => `http://127.0.0.1:${server.port}/files`;
  const context = (dockerfile: string) => tarOf(makeDir({ Dockerfile: dockerfile }));

  it('adds the file under its URL name or the destination, 0600 root-owned with Last-Modified as mtime, archives not unpacked; --chown/--chmod apply', async () => {
    const dockerfile = `FROM scratch\nADD ${base()}/tool.sh /bin/\nADD --chmod=755 --chown=10:20 ${base()}/tool.sh /named\nADD ${base()}/app.tar.gz /opt/\nADD --unpack=true ${base()}/app.tar.gz /unpacked/\n`;
    const result = await build(stack, token, 'repository=addurl&tag=latest', context(dockerfile));
    expect([result.status, result.error]).toEqual(['succeeded', null]);
    const image = await imageFiles(stack, token, 'addurl');
    expect(image.get('bin/tool.sh')).toMatchObject({ type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: Date.parse(LAST_MODIFIED) / 1000 });
    expect(image.get('bin/tool.sh')?.content?.toString()).toBe(tool.toString());
    expect(image.get('named')).toMatchObject({ type: 'file', mode: 0o755, uid: 10, gid: 20 });
    expect(image.get('opt/app.tar.gz')).toMatchObject({ type: 'file' });
    expect(sha(image.get('opt/app.tar.gz')!.content!)).toBe(sha(archive));
    expect(image.has('opt/inside.txt')).toBe(false);
    // ADD --unpack unpacks a remote archive as a local one.
    expect(image.get('unpacked/inside.txt')?.content?.toString()).toBe('inside');
    expect(image.has('unpacked/app.tar.gz')).toBe(false);
  });

  it('builds again from the cache after a conditional request finds the file unchanged (304), and misses once it changed', async () => {
    const dockerfile = `FROM scratch\nADD ${base()}/tool.sh /bin/\n`;
    const first = await build(stack, token, 'repository=addurl-cache&tag=latest', context(dockerfile));
    expect(first.status).toBe('succeeded');
    const before = server.requests.length;
    const again = await build(stack, token, 'repository=addurl-cache&tag=latest', context(dockerfile));
    expect(again.status).toBe('succeeded');
    expect(again.steps.map((s: { cached: boolean }) => s.cached)).toEqual([true]);
    expect(again.imageDigest).toBe(first.imageDigest);
    expect(server.requests.slice(before)).toEqual([{ path: '/files/tool.sh', ifNoneMatch: '"v1"', status: 304 }]);

    files.set('/files/tool.sh', { body: Buffer.from('#!/bin/sh\necho tool v2\n'), etag: '"v2"' });
    try {
      const changed = await build(stack, token, 'repository=addurl-cache&tag=latest', context(dockerfile));
      expect(changed.status).toBe('succeeded');
      expect(changed.steps.map((s: { cached: boolean }) => s.cached)).toEqual([false]);
      expect((await imageFiles(stack, token, 'addurl-cache')).get('bin/tool.sh')?.content?.toString()).toBe('#!/bin/sh\necho tool v2\n');
    } finally {
      files.set('/files/tool.sh', { body: tool, etag: '"v1"' });
    }
  });

  it('verifies --checksum: the right digest builds, another fails naming the line and both digests', async () => {
    const ok = await build(stack, token, 'repository=addurl-sum&tag=latest', context(`FROM scratch\nADD --checksum=sha256:${sha(tool)} ${base()}/tool.sh /t\n`));
    expect(ok.status).toBe('succeeded');
    const wrong = '0'.repeat(64);
    const bad = await build(stack, token, 'repository=addurl-sum&tag=latest', context(`FROM scratch\n\nADD --checksum=sha256:${wrong} ${base()}/tool.sh /t\n`));
    expect(bad.status).toBe('failed');
    expect(bad.error).toEqual({ line: 3, message: `Dockerfile:3: ADD: --checksum: ${base()}/tool.sh has digest sha256:${sha(tool)}, not the sha256:${wrong} given` });
  });

  it('fails on the line for a file over STRATA_ADD_URL_MAX_BYTES, a 404, and a redirect to an address not allowed', async () => {
    const big = await build(stack, token, 'repository=addurl-fail&tag=latest', context(`FROM scratch\nADD ${base()}/big.bin /\n`));
    expect(big.error).toEqual({ line: 2, message: `Dockerfile:2: ADD: ${base()}/big.bin: 127.0.0.1:${server.port} answered with 5000 bytes, more than the 4096 allowed` });
    const missing = await build(stack, token, 'repository=addurl-fail&tag=latest', context(`FROM scratch\nADD ${base()}/nope /\n`));
    expect(missing.error).toEqual({ line: 2, message: `Dockerfile:2: ADD: ${base()}/nope: the server answered 404` });
    const url = `http://127.0.0.1:${server.port}/to-v6`;
    const redirected = await build(stack, token, 'repository=addurl-fail&tag=latest', context(`FROM scratch\nADD ${url} /\n`));
    expect(redirected.status).toBe('failed');
    expect(redirected.error.message).toBe(`Dockerfile:2: ADD: ${url}: [::1] resolves to ::1, a loopback address, which tenant-given URLs may not reach (an operator can allow it with STRATA_ALLOW_PRIVATE_SOURCES)`);
  });

  it('is accepted by the check', async () => {
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check', `FROM scratch\nADD --checksum=sha256:${sha(tool)} ${base()}/tool.sh /t\n`, 'text/plain');
    expect([res.status, res.json.errors]).toEqual([200, []]);
  });
});

describe('ADD <url> without the operator allowing private sources', () => {
  it('refuses a host that resolves to loopback (checked after DNS), naming the line, and connects to nothing', async () => {
    const served = new Map<string, Served>([['/files/tool.sh', { body: Buffer.from('x'), etag: '"x"' }]]);
    const server = await fileServer(served);
    // npm test allows 127.0.0.0/8 for every stack; this one allows nothing.
    const stack = await startStack({ env: { STRATA_ALLOW_PRIVATE_SOURCES: '' } });
    try {
      const { token } = await stack.tenant('addurl-deny');
      const url = `http://localhost:${server.port}/files/tool.sh`;
      const result = await build(stack, token, 'repository=deny&tag=latest', tarOf(makeDir({ Dockerfile: `FROM scratch\nADD ${url} /\n` })));
      expect(result.status).toBe('failed');
      expect(result.error.line).toBe(2);
      expect(result.error.message).toMatch(new RegExp(`^Dockerfile:2: ADD: ${url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: localhost resolves to (127\\.0\\.0\\.1|::1), a loopback address, which tenant-given URLs may not reach`));
      expect(server.requests).toEqual([]);
    } finally {
      await stack.close();
      await server.close();
    }
  });
});

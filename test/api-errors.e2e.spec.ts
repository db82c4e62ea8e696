import { existsSync } from 'node:fs';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';
import { evilTar } from './support/evil-tar.js';

describe('bad input gets a clear error and loses nothing', () => {
  let stack: Stack;
  let alice: { token: string };
  let bob: { token: string };
  const simple = () => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));

  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_MAX_CONTEXT_BYTES: String(256 * 1024) } });
    alice = await stack.tenant('alice');
    bob = await stack.tenant('bob');
  });
  afterAll(async () => {
    await stack.close();
  });

  it('answers 401 with a JSON message without a token or with a bad one', async () => {
    const none = await api(stack, null, 'GET', '/v1/builds');
    expect(none.status).toBe(401);
    expect(none.json.message).toMatch(/Authorization header/);
    const bad = await api(stack, 'strata_not-a-real-token', 'GET', '/v1/builds');
    expect(bad.status).toBe(401);
    expect(bad.json.message).toBe('The API token is not valid.');
  });

  it("answers 404 for another tenant's build and repository, as if they did not exist", async () => {
    const result = await build(stack, alice.token, 'repository=private&tag=1', simple());
    expect(result.status).toBe('succeeded');
    const build404 = await api(stack, bob.token, 'GET', `/v1/builds/${result.id}`);
    expect(build404.status).toBe(404);
    expect(build404.json.message).toBe(`Build "${result.id}" does not exist.`);
    expect((await api(stack, bob.token, 'GET', '/v1/repositories/private/tags')).status).toBe(404);
    expect((await api(stack, bob.token, 'GET', '/v1/repositories/private/tags/1/oci-archive')).status).toBe(404);
    const bobsList = await api(stack, bob.token, 'GET', '/v1/builds');
    expect(bobsList.json.builds.map((b: { id: string }) => b.id)).not.toContain(result.id);
    const bobsRepos = await api(stack, bob.token, 'GET', '/v1/repositories');
    expect(bobsRepos.json.repositories).toEqual([]);
  });

  it.each([
    ['repository=Bad_Name', 400, /Invalid repository: "Bad_Name" is not a valid repository name/],
    ['repository=ok&tag=-bad', 400, /Invalid tag: "-bad" is not a valid tag/],
    ['repository=ok&dockerfile=../Dockerfile', 400, /Invalid dockerfile "..\/Dockerfile"/],
    ['repository=ok&buildArg=novalue', 400, /Invalid buildArg "novalue": expected NAME=VALUE/],
    ['repository=ok&noCache=maybe', 400, /"noCache" must be true or false/],
    ['tag=x', 400, /"repository" is required/],
  ])('refuses POST /v1/builds?%s with %d', async (query, status, message) => {
    const res = await api(stack, alice.token, 'POST', `/v1/builds?${query}`, simple(), 'application/x-tar');
    expect(res.status).toBe(status);
    expect(res.json.message).toMatch(message);
  });

  it('keeps a connection usable after refusing a request before reading its body', async () => {
    // 1 MiB: more than the socket buffers hold, so the answer leaves while the body is still coming.
    const refused = await fetch(`${stack.url}/v1/builds?repository=Bad_Name`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/x-tar' },
      body: Buffer.alloc(1024 * 1024),
    });
    expect([refused.status, ((await refused.json()) as { message: string }).message]).toEqual([400, expect.stringMatching(/Invalid repository/)]);
    // The same keep-alive pool: a connection left with an unread body would fail these.
    for (let n = 0; n < 5; n++) expect((await api(stack, alice.token, 'GET', '/v1/builds?limit=1')).status).toBe(200);
  });

  it('refuses a context that is not a tar or gzip, an empty one, and one over the size limit', async () => {
    const json = await api(stack, alice.token, 'POST', '/v1/builds?repository=ok', '{}', 'application/json');
    expect(json.status).toBe(415);
    expect(json.json.message).toMatch(/application\/x-tar or application\/gzip/);
    const empty = await api(stack, alice.token, 'POST', '/v1/builds?repository=ok', Buffer.alloc(0), 'application/x-tar');
    expect(empty.status).toBe(400);
    expect(empty.json.message).toMatch(/empty/);
    const big = await api(stack, alice.token, 'POST', '/v1/builds?repository=toobig', tarOf(makeDir({ big: 'x'.repeat(300 * 1024) })), 'application/x-tar');
    expect(big.status).toBe(413);
    expect(big.json.message).toBe('The build context is larger than the limit of 262144 bytes.');
    // Nothing was recorded for the refused uploads.
    const repos = await api(stack, alice.token, 'GET', '/v1/repositories');
    expect(repos.json.repositories.map((r: { name: string }) => r.name)).not.toContain('toobig');
  });

  it('fails a build without a Dockerfile, saying where it looked', async () => {
    const result = await build(stack, alice.token, 'repository=nodf&dockerfile=build/Dockerfile', tarOf(makeDir({ a: 'a' })));
    expect(result.status).toBe('failed');
    expect(result.error).toEqual({ message: 'no Dockerfile at "build/Dockerfile" in the build context', line: null });
  });

  it('fails a build FROM an unknown repository naming the line, and moves no tag', async () => {
    const ctx = tarOf(makeDir({ Dockerfile: '# base\nFROM nowhere:1\nCOPY a /a\n', a: 'a' }));
    const result = await build(stack, alice.token, 'repository=unknownbase&tag=v1', ctx);
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(2);
    expect(result.error.message).toMatch(/^Dockerfile:2: FROM nowhere:1: repository "nowhere" does not exist/);
    expect(result.imageDigest).toBeNull();
    const tags = await api(stack, alice.token, 'GET', '/v1/repositories/unknownbase/tags');
    expect(tags.json.tags).toEqual([]);
  });

  it('fails a build whose Dockerfile does not parse, with line and a sentence', async () => {
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\nRUNN echo\n', a: 'a' }));
    const result = await build(stack, alice.token, 'repository=badsyntax', ctx);
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(3);
    expect(result.error.message).toMatch(/^Dockerfile:3: unknown instruction "RUNN"/);
  });

  it('fails a COPY of a missing file naming the line', async () => {
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\nCOPY missing.txt /m\n', a: 'a' }));
    const result = await build(stack, alice.token, 'repository=missingsrc&tag=1', ctx);
    expect(result).toMatchObject({ status: 'failed', error: { line: 3 } });
    expect(result.error.message).toMatch(/"missing.txt" not found/);
    expect((await api(stack, alice.token, 'GET', '/v1/repositories/missingsrc/tags')).json.tags).toEqual([]);
  });

  it.each([
    ['parent-path', /\.\.\/escape\.txt/],
    ['absolute-path', /strata-escape\.txt/],
    ['symlink-out', /link/],
    ['device', /dev-null/],
  ] as const)('refuses a context with a %s entry and writes nothing outside the build', async (kind, entry) => {
    const result = await build(stack, alice.token, `repository=evil-${kind}`, evilTar(kind));
    expect(result.status).toBe('failed');
    expect(result.error.message).toMatch(/^the build context was refused: /);
    expect(result.error.message).toMatch(entry);
    expect(existsSync('/tmp/strata-escape.txt')).toBe(false);
  });

  it('lists builds newest first with cursor paging and filters', async () => {
    const t = await stack.tenant('pager');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await build(stack, t.token, 'repository=paged', simple())).id);
    const page1 = await api(stack, t.token, 'GET', '/v1/builds?limit=2');
    expect(page1.json.builds.map((b: { id: string }) => b.id)).toEqual([ids[2], ids[1]]);
    const page2 = await api(stack, t.token, 'GET', `/v1/builds?limit=2&cursor=${page1.json.nextCursor}`);
    expect(page2.json.builds.map((b: { id: string }) => b.id)).toEqual([ids[0]]);
    expect(page2.json.nextCursor).toBeNull();
    expect((await api(stack, t.token, 'GET', '/v1/builds?status=failed')).json.builds).toEqual([]);
    expect((await api(stack, t.token, 'GET', '/v1/builds?status=weird')).status).toBe(400);
    expect((await api(stack, t.token, 'GET', '/v1/builds?cursor=garbage')).status).toBe(400);
  });

  it('survives races: the same base imported by several tenants at once, one repository created by parallel builds', async () => {
    const rootfs = tarOf(makeDir({ 'etc/hostname': `race ${Date.now()}` }));
    const tenants = await Promise.all([1, 2, 3].map(() => stack.tenant('race')));
    const imports = await Promise.all(tenants.map((t) => api(stack, t.token, 'POST', '/v1/repositories/base/import?tag=1', rootfs, 'application/x-tar')));
    expect(imports.map((r) => r.status)).toEqual([201, 201, 201]);
    expect(new Set(imports.map((r) => r.json.layers[0].digest)).size).toBe(1);
    const t = tenants[0];
    const builds = await Promise.all([1, 2, 3].map(() => build(stack, t.token, 'repository=racing&tag=1', simple())));
    expect(builds.map((b) => b.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
  });

  it('answers readiness and liveness', async () => {
    expect((await api(stack, null, 'GET', '/healthz')).json).toEqual({ status: 'ok' });
    expect((await api(stack, null, 'GET', '/readyz')).json).toEqual({ status: 'ok', checks: { postgres: 'ok', redis: 'ok', s3: 'ok' } });
    const docs = await api(stack, null, 'GET', '/docs-json');
    expect(Object.keys(docs.json.paths)).toEqual(expect.arrayContaining(['/v1/builds', '/v1/builds/{id}']));
  });
});

import { importBusybox } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';


// The /v1 endpoints the console added: each one tenant-scoped (another tenant's build or tag is 404).
describe('console endpoints in /v1', () => {
  let stack: Stack;
  let token: string;
  let tenant: string;
  let other: { token: string };

  beforeAll(async () => {
    stack = await startStack();
    ({ token, name: tenant } = await stack.tenant('capi'));
    other = await stack.tenant('capi-other');
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  it('GET /v1/whoami names the tenant of the token', async () => {
    const res = await api(stack, token, 'GET', '/v1/whoami');
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ tenant, scopes: ['admin'] });
    expect((await api(stack, 'nope', 'GET', '/v1/whoami')).status).toBe(401);
  });

  it("GET /v1/builds/{id}/dockerfile returns the Dockerfile at the build's path, from a tar.gz context too", async () => {
    const ctx = makeDir({ 'docker/app.Dockerfile': 'FROM busybox:1\nRUN echo from-the-file\n' });
    const done = await build(stack, token, 'repository=dfile&dockerfile=./docker/app.Dockerfile', tarOf(ctx, true), 'application/gzip');
    expect(done.status).toBe('succeeded');
    const res = await api(stack, token, 'GET', `/v1/builds/${done.id}/dockerfile`);
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ path: 'docker/app.Dockerfile', text: 'FROM busybox:1\nRUN echo from-the-file\n' });
    // Read at upload from a small context, it is still shown once the context itself is gone (garbage collected).
    await stack.prisma.build.update({ where: { id: done.id }, data: { contextKey: `contexts/collected-${done.id}` } });
    expect((await api(stack, token, 'GET', `/v1/builds/${done.id}/dockerfile`)).json).toEqual(res.json);
    const cross = await api(stack, other.token, 'GET', `/v1/builds/${done.id}/dockerfile`);
    expect(cross.status).toBe(404);
    expect(cross.json.message).toBe(`Build "${done.id}" does not exist.`);
  });

  it('a build whose context has no Dockerfile answers 404 saying what is missing', async () => {
    const done = await build(stack, token, 'repository=nodf', tarOf(makeDir({ 'a.txt': 'a' })));
    expect(done.status).toBe('failed');
    const res = await api(stack, token, 'GET', `/v1/builds/${done.id}/dockerfile`);
    expect(res.status).toBe(404);
    expect(res.json.message).toContain('has no regular file at "Dockerfile"');
  });

  it('POST /v1/builds/{id}/rebuild builds the same context again, with the same tags, from the cache', async () => {
    const first = await build(stack, token, 'repository=again&tag=one&tag=two&buildArg=X=1', tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nARG X\nRUN echo x=$X > /x\n' })));
    expect(first.status).toBe('succeeded');
    expect((await api(stack, other.token, 'POST', `/v1/builds/${first.id}/rebuild`)).status).toBe(404);
    const res = await api(stack, token, 'POST', `/v1/builds/${first.id}/rebuild`);
    expect(res.status).toBe(202);
    expect(res.json.id).not.toBe(first.id);
    expect(res.json).toMatchObject({ repository: 'again', tags: ['one', 'two'], buildArgs: { X: '1' }, status: 'queued' });
    const second = await waitForBuild(stack, token, res.json.id);
    expect(second.status).toBe('succeeded');
    expect(second.steps.filter((s: { cached: boolean }) => !s.cached)).toEqual([]);
    expect(second.imageDigest).toBe(first.imageDigest);
  });

  it('DELETE /v1/repositories/{name}/tags/{tag} removes one tag; tags list sizes', async () => {
    const done = await build(stack, token, 'repository=team/app&tag=a&tag=b', tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nCOPY f /f\n', f: 'x'.repeat(5000) })));
    expect(done.status).toBe('succeeded');
    const tags = await api(stack, token, 'GET', '/v1/repositories/team/app/tags');
    expect(tags.json.tags.map((t: { name: string }) => t.name)).toEqual(['a', 'b']);
    // The busybox layer alone is hundreds of KiB; the size counts what a pull downloads.
    expect(tags.json.tags[0].size).toBeGreaterThan(100_000);
    expect(tags.json.tags[0].digest).toBe(done.imageDigest);
    expect((await api(stack, other.token, 'DELETE', '/v1/repositories/team/app/tags/a')).status).toBe(404);
    const del = await api(stack, token, 'DELETE', '/v1/repositories/team/app/tags/a');
    expect(del.status).toBe(204);
    const again = await api(stack, token, 'DELETE', '/v1/repositories/team/app/tags/a');
    expect(again.status).toBe(404);
    expect(again.json.message).toBe('Tag "team/app:a" does not exist.');
    const after = await api(stack, token, 'GET', '/v1/repositories/team/app/tags');
    expect(after.json.tags.map((t: { name: string }) => t.name)).toEqual(['b']);
    // The image is still there under its other tag.
    expect((await api(stack, token, 'GET', '/v1/repositories/team/app/tags/b/oci-archive')).status).toBe(200);
  });
});

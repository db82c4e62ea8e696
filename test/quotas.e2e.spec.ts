import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);

describe('quotas: over one, a 429 (rate-like) or 403 (hard) naming the quota and the usage; GET /v1/usage', () => {
  let stack: Stack;
  const ctx = () => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack.close();
  });

  async function tenantWith(quotas: Record<string, number>) {
    const name = `quota-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;
    const created = await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    const patched = await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json(quotas), 'application/json');
    expect(patched.status).toBe(200);
    return { name, id: created.json.id as string, token: created.json.token as string };
  }

  it('refuses a build past the queued-builds quota with 429', async () => {
    const t = await tenantWith({ maxQueuedBuilds: 1, maxConcurrentBuilds: 0 });
    // maxConcurrentBuilds 0 keeps the first build queued: workers hold it back.
    expect((await api(stack, t.token, 'POST', '/v1/builds?repository=app&tag=1', ctx(), 'application/x-tar')).status).toBe(202);
    const over = await api(stack, t.token, 'POST', '/v1/builds?repository=app&tag=2', ctx(), 'application/x-tar');
    expect(over.status).toBe(429);
    expect(over.json.message).toBe('Quota maxQueuedBuilds reached: 1 builds queued of 1 allowed. Retry once some have run.');
    const usage = await api(stack, t.token, 'GET', '/v1/usage');
    expect(usage.json.quotas.maxQueuedBuilds).toEqual({ limit: 1, used: 1 });
    expect(usage.json.quotas.maxConcurrentBuilds).toEqual({ limit: 0, used: 0 });
  });

  it('refuses a build past the build-minutes quota with 403', async () => {
    const t = await tenantWith({ maxBuildMinutesPerMonth: 2 });
    const first = await api(stack, t.token, 'POST', '/v1/builds?repository=app&tag=1', ctx(), 'application/x-tar');
    await waitForBuild(stack, t.token, first.json.id);
    // Three minutes on a worker this month: the row says so, as a long build would have left it.
    // Within this month even in its first minutes (the quota counts from the 1st, 00:00 UTC).
    const now = new Date();
    const finishedAt = new Date(Math.max(now.getTime(), Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1, 0, 4)));
    await stack.prisma.build.update({ where: { id: first.json.id }, data: { startedAt: new Date(finishedAt.getTime() - 3 * 60_000), finishedAt } });
    const over = await api(stack, t.token, 'POST', '/v1/builds?repository=app&tag=2', ctx(), 'application/x-tar');
    expect(over.status).toBe(403);
    expect(over.json.message).toBe('Quota maxBuildMinutesPerMonth reached: 3 build minutes this month of 2 allowed.');
    expect((await api(stack, t.token, 'GET', '/v1/usage')).json.quotas.maxBuildMinutesPerMonth).toEqual({ limit: 2, used: 3 });
  });

  it('refuses imports, registry pushes and builds past the stored-bytes quota with 403', async () => {
    const t = await tenantWith({ maxStoredBytes: 1000 });
    await importBusybox(stack, t.token);
    const usage = (await api(stack, t.token, 'GET', '/v1/usage')).json.quotas.maxStoredBytes;
    expect(usage.limit).toBe(1000);
    expect(usage.used).toBeGreaterThan(100_000);
    const again = await api(stack, t.token, 'POST', '/v1/repositories/busybox/import?tag=2', tarOf(makeDir({ a: 'a' })), 'application/x-tar');
    expect(again.status).toBe(403);
    expect(again.json.message).toBe(`Quota maxStoredBytes reached: ${usage.used} bytes stored of 1000 allowed.`);
    const push = await fetch(`${stack.url}/v2/${t.name}/app/blobs/uploads/`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from(`x:${t.token}`).toString('base64')}` } });
    expect(push.status).toBe(403);
    expect(((await push.json()) as { errors: { code: string; message: string }[] }).errors[0]).toEqual(
      expect.objectContaining({ code: 'DENIED', message: `Quota maxStoredBytes reached: ${usage.used} bytes stored of 1000 allowed.` }),
    );
    expect((await api(stack, t.token, 'POST', '/v1/builds?repository=app&tag=1', ctx(), 'application/x-tar')).status).toBe(403);
  });

  it('runs a tenant at its concurrent-builds quota one build at a time', async () => {
    const t = await tenantWith({ maxConcurrentBuilds: 1 });
    await importBusybox(stack, t.token);
    const slow = () => tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 2\n' }));
    const ids: string[] = [];
    for (const tag of ['1', '2']) ids.push((await api(stack, t.token, 'POST', `/v1/builds?repository=slow&tag=${tag}&noCache=true`, slow(), 'application/x-tar')).json.id);
    const [a, b] = [await waitForBuild(stack, t.token, ids[0]!), await waitForBuild(stack, t.token, ids[1]!)];
    expect([a.status, b.status]).toEqual(['succeeded', 'succeeded']);
    const rows = await stack.prisma.build.findMany({ where: { id: { in: ids } }, orderBy: { startedAt: 'asc' } });
    // The second started only once the first had finished.
    expect(rows[1]!.startedAt!.getTime()).toBeGreaterThanOrEqual(rows[0]!.finishedAt!.getTime());
  });
});

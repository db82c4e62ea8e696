// Tenancy where it used to leak: builds from webhooks are audited and quota-checked like API builds;
// a token limited to repositories sees only those repositories' builds; two simultaneous requests
// cannot both take a tenant's last queued-builds slot, nor two workers its last concurrent-build slot.
import { randomUUID } from 'node:crypto';
import { claimConcurrencySlot } from '../apps/worker/src/concurrency-slot.js';
import { githubPush, hmacHex } from './support/github-hooks.js';
import { api, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);
const ctx = () => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));

describe('tenancy gaps: webhooks, repository-limited tokens, the concurrent-builds slot', () => {
  let stack: Stack;

  beforeAll(async () => {
    // No worker: builds stay queued, so quotas and listings are what the test made them.
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await stack.close();
  });

  it('audits a build a webhook starts, and refuses it past the queued-builds quota as an API build is', async () => {
    const name = `hooks-quota-${process.pid}-${Date.now().toString(36)}`;
    const tenant = (await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json')).json as { token: string };
    const secret = 'gaps-secret';
    // The clone URL is a closed loopback port: no worker runs here, and nothing leaves the machine.
    const trigger = (await api(stack, tenant.token, 'POST', '/v1/triggers', json({ repository: 'app/web', provider: 'github', cloneUrl: 'http://127.0.0.1:9/acme/app.git', apiUrl: 'http://127.0.0.1:9', secret, rules: [{ ref: 'refs/heads/main', tags: ['main'] }] }), 'application/json')).json;
    const push = (sha: string) => {
      const body = json(githubPush({ ref: 'refs/heads/main', before: 'b'.repeat(40), after: sha }));
      return fetch(`${stack.url}${trigger.hookUrl}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${hmacHex(secret, body)}` }, body });
    };
    const first = await push('1'.repeat(40));
    expect(first.status).toBe(200);
    const started = (await first.json()) as { outcome: string; buildId: string };
    expect(started.outcome).toBe('build');
    const events = (await api(stack, tenant.token, 'GET', '/v1/audit?action=build.start')).json.events;
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor: `trigger:${trigger.id}`, target: started.buildId, data: { repository: 'app/web', tags: ['main'], triggerId: trigger.id, sha: '1'.repeat(40) } });
    expect(events[0].sourceIp).toMatch(/^(::ffff:)?127\.0\.0\.1$/);

    await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxQueuedBuilds: 1 }), 'application/json');
    const refused = await push('2'.repeat(40));
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { message: string }).message).toBe('Quota maxQueuedBuilds reached: 1 builds queued of 1 allowed. Retry once some have run.');
    // Nothing was recorded: the forge's redelivery builds once there is room.
    expect((await api(stack, tenant.token, 'GET', `/v1/triggers/${trigger.id}/deliveries`)).json.deliveries).toHaveLength(1);
    expect((await api(stack, tenant.token, 'GET', '/v1/builds')).json.builds).toHaveLength(1);
    // A redelivery asked through the API is held to the same quota.
    const deliveryId = (await api(stack, tenant.token, 'GET', `/v1/triggers/${trigger.id}/deliveries`)).json.deliveries[0].id;
    expect((await api(stack, tenant.token, 'POST', `/v1/triggers/${trigger.id}/deliveries/${deliveryId}/redeliver`)).status).toBe(429);
  });

  it('shows a token limited to repository patterns only the builds of those repositories', async () => {
    const owner = await stack.tenant('gaps-repos');
    const submit = async (repository: string) => (await api(stack, owner.token, 'POST', `/v1/builds?repository=${repository}`, ctx(), 'application/x-tar')).json.id as string;
    const web = await submit('app/web');
    const api2 = await submit('app/api');
    const lint = await submit('tools/lint');
    const exact = await submit('tools/fmt');
    const limited = (await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: 'app only', scopes: ['builds:read', 'builds:write'], repositories: ['app/*', 'tools/fmt'] }), 'application/json')).json.token as string;

    const listed = await api(stack, limited, 'GET', '/v1/builds');
    expect(listed.json.builds.map((b: { id: string }) => b.id).sort()).toEqual([web, api2, exact].sort());
    expect((await api(stack, limited, 'GET', '/v1/builds?repository=tools/lint')).json.builds).toEqual([]);
    expect((await api(stack, limited, 'GET', '/v1/builds?limit=1')).json.nextCursor).not.toBeNull();
    // Every route naming another repository's build answers as if it did not exist.
    for (const [method, path] of [
      ['GET', `/v1/builds/${lint}`],
      ['GET', `/v1/builds/${lint}/logs`],
      ['GET', `/v1/builds/${lint}/dockerfile`],
      ['POST', `/v1/builds/${lint}/cancel`],
      ['POST', `/v1/builds/${lint}/rebuild`],
    ] as const) {
      const res = await api(stack, limited, method, path);
      expect({ path, status: res.status, message: res.json?.message }).toEqual({ path, status: 404, message: `Build "${lint}" does not exist.` });
    }
    expect((await api(stack, limited, 'GET', `/v1/builds/${web}`)).json.repository).toBe('app/web');
    expect((await api(stack, limited, 'GET', `/v1/builds/${web}/dockerfile`)).json.text).toBe('FROM scratch\nCOPY a /a\n');
    // The tenant's unlimited token still sees all four.
    expect((await api(stack, owner.token, 'GET', '/v1/builds')).json.builds).toHaveLength(4);
    // A rebuild is a new build: audited like one.
    const rebuilt = await api(stack, limited, 'POST', `/v1/builds/${web}/rebuild`);
    expect(rebuilt.status).toBe(202);
    const audit = (await api(stack, owner.token, 'GET', `/v1/audit?action=build.start&target=${rebuilt.json.id}`)).json.events;
    expect(audit).toHaveLength(1);
    expect(audit[0].data).toMatchObject({ repository: 'app/web', rebuildOf: web });
  });

  it('lets only one of two simultaneous build requests take the last queued-builds slot', async () => {
    const name = `gaps-queued-${process.pid}-${Date.now().toString(36)}`;
    const tenant = (await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json')).json as { token: string };
    for (let round = 1; round <= 3; round++) {
      // Room for exactly one more queued build; two requests race for it.
      await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxQueuedBuilds: round }), 'application/json');
      const answers = await Promise.all([0, 1].map(() => api(stack, tenant.token, 'POST', '/v1/builds?repository=app/race', ctx(), 'application/x-tar')));
      expect(answers.map((a) => a.status).sort()).toEqual([202, 429]);
      expect(answers.find((a) => a.status === 429)!.json.message).toBe(`Quota maxQueuedBuilds reached: ${round} builds queued of ${round} allowed. Retry once some have run.`);
      expect((await api(stack, tenant.token, 'GET', '/v1/builds?status=queued')).json.builds).toHaveLength(round);
    }
  });

  it('lets only one of two workers claiming at once take a tenant\'s last concurrent-build slot', async () => {
    const owner = await stack.tenant('gaps-slots');
    await stack.prisma.tenant.update({ where: { id: owner.tenantId }, data: { maxConcurrentBuilds: 2 } });
    const repository = await stack.prisma.repository.create({ data: { tenantId: owner.tenantId, name: 'app/slots' } });
    const queued = () => stack.prisma.build.create({ data: { tenantId: owner.tenantId, repositoryId: repository.id, tags: ['x'] } });
    // One slot already taken; every round, two workers race for the last one with a build each.
    const running = await queued();
    expect(await claimConcurrencySlot(stack.prisma, running.id, 'worker-0')).toBe(true);
    for (let round = 0; round < 5; round++) {
      const [a, b] = [await queued(), await queued()];
      const claims = await Promise.all([claimConcurrencySlot(stack.prisma, a.id, 'worker-a'), claimConcurrencySlot(stack.prisma, b.id, 'worker-b')]);
      expect(claims.filter(Boolean)).toHaveLength(1);
      expect(await stack.prisma.build.count({ where: { tenantId: owner.tenantId, status: 'running' } })).toBe(2);
      // The winner finishes; the loser stays queued and is cancelled, so the next round races for one slot again.
      const winner = claims[0] ? a : b;
      const loser = claims[0] ? b : a;
      expect((await stack.prisma.build.findUniqueOrThrow({ where: { id: winner.id } })).workerId).toBe(claims[0] ? 'worker-a' : 'worker-b');
      expect((await stack.prisma.build.findUniqueOrThrow({ where: { id: loser.id } })).status).toBe('queued');
      await stack.prisma.build.updateMany({ where: { id: { in: [winner.id, loser.id] } }, data: { status: 'cancelled' } });
    }
    // A tenant without the quota is never held back.
    await stack.prisma.tenant.update({ where: { id: owner.tenantId }, data: { maxConcurrentBuilds: null } });
    const free = await queued();
    expect(await claimConcurrencySlot(stack.prisma, free.id, 'worker-a')).toBe(true);
  });
});

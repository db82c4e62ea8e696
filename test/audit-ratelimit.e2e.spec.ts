import { createHash } from 'node:crypto';
import { hashToken, newTokenSecret } from '@strata/db';
import { api, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);

describe('audit log: every change with actor, tenant, source IP, time and target; append-only', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await stack.close();
  });

  it('records tenant, quota, token, build and tag changes, pages and filters them, and shows a tenant only its own', async () => {
    const name = `audit-${process.pid}-${Date.now().toString(36)}`;
    const started = new Date(Date.now() - 1000).toISOString();
    const tenant = (await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json')).json as { id: string; token: string };
    await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxQueuedBuilds: 10 }), 'application/json');
    const minted = await api(stack, tenant.token, 'POST', '/v1/tokens', json({ name: 'ci', scopes: ['builds:write'] }), 'application/json');
    const ci = minted.json as { id: string; token: string };
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));
    const build = await api(stack, ci.token, 'POST', '/v1/builds?repository=web&tag=1', ctx, 'application/x-tar');
    expect(build.status).toBe(202);
    expect((await api(stack, ci.token, 'POST', `/v1/builds/${build.json.id}/cancel`)).status).toBe(202);
    await api(stack, tenant.token, 'DELETE', `/v1/tokens/${ci.id}`);

    const all = await api(stack, tenant.token, 'GET', `/v1/audit?since=${encodeURIComponent(started)}`);
    expect(all.status).toBe(200);
    const events = (all.json.events as { action: string; actor: string; target: string; sourceIp: string; time: string }[]).reverse();
    const adminTokenId = (await stack.prisma.apiToken.findFirstOrThrow({ where: { tenantId: tenant.id, name: 'admin' } })).id;
    expect(events.map((e) => [e.action, e.actor, e.target])).toEqual([
      ['tenant.create', 'operator', name],
      ['tenant.quotas', 'operator', name],
      ['token.create', `token:${adminTokenId}`, ci.id],
      ['build.start', `token:${ci.id}`, build.json.id],
      ['build.cancel', `token:${ci.id}`, build.json.id],
      ['token.revoke', `token:${adminTokenId}`, ci.id],
    ]);
    for (const e of events) {
      expect(e.sourceIp).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
      expect(Date.parse(e.time)).toBeGreaterThan(Date.parse(started));
    }

    const filtered = await api(stack, tenant.token, 'GET', `/v1/audit?actor=token:${ci.id}`);
    expect(filtered.json.events.map((e: { action: string }) => e.action)).toEqual(['build.cancel', 'build.start']);
    const page1 = await api(stack, tenant.token, 'GET', '/v1/audit?limit=4');
    const page2 = await api(stack, tenant.token, 'GET', `/v1/audit?limit=4&cursor=${page1.json.nextCursor}`);
    expect([...page1.json.events, ...page2.json.events].map((e: { id: string }) => e.id)).toEqual((await api(stack, tenant.token, 'GET', '/v1/audit')).json.events.map((e: { id: string }) => e.id));
    expect(page2.json.nextCursor).toBeNull();

    const other = await stack.tenant('audit-other');
    const theirs = await api(stack, other.token, 'GET', '/v1/audit');
    expect(theirs.json.events).toEqual([]);
    const bad = await api(stack, tenant.token, 'GET', '/v1/audit?since=yesterday');
    expect(bad.status).toBe(400);
    expect(bad.json.message).toBe('Query parameter "since" must be an ISO 8601 date-time, got "yesterday".');
  });

  it('records tags pushed and deleted through /v2 with the token that did it', async () => {
    const owner = await stack.tenant('audit-v2');
    const basic = `Basic ${Buffer.from(`x:${owner.token}`).toString('base64')}`;
    const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const digest = `sha256:${createHash('sha256').update(config).digest('hex')}`;
    const upload = await fetch(`${stack.url}/v2/${owner.name}/app/blobs/uploads/?digest=${digest}`, { method: 'POST', headers: { authorization: basic, 'content-type': 'application/octet-stream' }, body: config });
    expect(upload.status).toBe(201);
    const manifest = json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: config.length }, layers: [] });
    const put = await fetch(`${stack.url}/v2/${owner.name}/app/manifests/v1`, { method: 'PUT', headers: { authorization: basic, 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest });
    expect(put.status).toBe(201);
    const del = await fetch(`${stack.url}/v2/${owner.name}/app/manifests/v1`, { method: 'DELETE', headers: { authorization: basic } });
    expect(del.status).toBe(202);
    const events = (await api(stack, owner.token, 'GET', '/v1/audit')).json.events;
    expect(events.map((e: { action: string; actor: string; target: string }) => [e.action, e.actor, e.target])).toEqual([
      ['tag.delete', `token:${owner.tokenId}`, `${owner.name}/app:v1`],
      ['tag.push', `token:${owner.tokenId}`, `${owner.name}/app:v1`],
    ]);
  });

  it('refuses to change or delete an audit event, whoever asks the database', async () => {
    const owner = await stack.tenant('audit-immutable');
    await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: 'x', scopes: ['builds:read'] }), 'application/json');
    await expect(stack.prisma.auditEvent.updateMany({ where: { tenantId: owner.tenantId }, data: { actor: 'someone-else' } })).rejects.toThrow(/append-only: UPDATE/);
    await expect(stack.prisma.auditEvent.deleteMany({ where: { tenantId: owner.tenantId } })).rejects.toThrow(/append-only: DELETE/);
    expect(await stack.prisma.auditEvent.count({ where: { tenantId: owner.tenantId, actor: `token:${owner.tokenId}` } })).toBe(1);
  });

  it('needs the admin scope to read the log', async () => {
    const owner = await stack.tenant('audit-scope');
    const reader = (await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: 'r', scopes: ['builds:read', 'tokens:admin'] }), 'application/json')).json.token;
    const res = await api(stack, reader, 'GET', '/v1/audit');
    expect(res.status).toBe(403);
    expect(res.json.message).toBe('The API token lacks the "admin" scope.');
  });
});

describe('rate limits per token and per tenant, shared through Redis by every api process', () => {
  let one: Stack;
  let two: Stack;

  beforeAll(async () => {
    // Two api processes of one deployment: the same Redis keys (queue prefix), separate HTTP servers.
    const env = { STRATA_QUEUE_PREFIX: `ratelimit-${process.pid}-${Date.now()}`, STRATA_RATE_LIMIT_TOKEN_PER_MINUTE: '4', STRATA_RATE_LIMIT_TENANT_PER_MINUTE: '6' };
    one = await startStack({ worker: false, env });
    two = await startStack({ worker: false, env });
  });
  afterAll(async () => {
    await one.close();
    await two.close();
  });

  it('counts a token across api processes, answers RateLimit headers, and 429 with Retry-After past the limit', async () => {
    // Windows are whole minutes: start early in one, so the five requests share it.
    const intoWindow = Date.now() % 60_000;
    if (intoWindow > 50_000) await new Promise((r) => setTimeout(r, 60_000 - intoWindow + 100));
    const owner = await one.tenant('limited');
    const seen: { status: number; remaining: string | null }[] = [];
    for (const s of [one, two, one, two]) {
      const res = await api(s, owner.token, 'GET', '/v1/builds');
      seen.push({ status: res.status, remaining: res.headers.get('ratelimit') });
      expect(res.headers.get('ratelimit-policy')).toBe('"token";q=4;w=60, "tenant";q=6;w=60');
    }
    expect(seen.map((s) => s.status)).toEqual([200, 200, 200, 200]);
    expect(seen.map((s) => /"token";r=(\d+)/.exec(s.remaining ?? '')?.[1])).toEqual(['3', '2', '1', '0']);
    const over = await api(two, owner.token, 'GET', '/v1/builds');
    expect(over.status).toBe(429);
    const retryAfter = Number(over.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(over.json).toEqual({ statusCode: 429, error: 'Too Many Requests', message: `Rate limit of the token exceeded: 4 requests per 60 s; retry in ${retryAfter} s.` });

    // Another token of the tenant has its own count, until the tenant's (6; 5 spent above, the refused one too) is spent.
    const { token: other } = await mintDirect(one, owner.tenantId);
    expect((await api(one, other, 'GET', '/v1/builds')).status).toBe(200);
    const tenantOver = await api(one, other, 'GET', '/v1/builds');
    expect(tenantOver.status).toBe(429);
    expect(tenantOver.json.message).toMatch(/^Rate limit of the tenant exceeded: 6 requests per 60 s/);

    // Another tenant is untouched.
    const quiet = await one.tenant('quiet');
    expect((await api(one, quiet.token, 'GET', '/v1/builds')).status).toBe(200);
  });
});

/** A second token for a tenant, made straight in the database so minting it spends no request. */
async function mintDirect(stack: Stack, tenantId: string) {
  const token = newTokenSecret();
  await stack.prisma.apiToken.create({ data: { tenantId, name: 'second', tokenHash: hashToken(token), scopes: ['admin'] } });
  return { token };
}

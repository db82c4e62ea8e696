import { Controller, Get, type ExecutionContext } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { isWellFormedToken } from '@strata/db';
import { AuthGuard } from '../apps/api/src/auth/auth.guard.js';
import { RateLimiter } from '../apps/api/src/auth/rate-limiter.js';
import { declaredRoutes } from '../apps/api/src/auth/routes.js';
import { api, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);

describe('tenancy: the operator, tenants and scoped tokens', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await stack.close();
  });

  const newTenantName = () => `ops-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6)}`;

  async function createToken(token: string, body: unknown) {
    const res = await api(stack, token, 'POST', '/v1/tokens', json(body), 'application/json');
    if (res.status !== 201) throw new Error(`POST /v1/tokens answered ${res.status}: ${res.text}`);
    return res.json as { id: string; token: string };
  }

  it('lets only the operator token create tenants, which get a first admin token in the checksummed format', async () => {
    const name = newTenantName();
    const none = await api(stack, null, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    expect(none.status).toBe(401);
    const tenant = await stack.tenant('not-operator');
    const asTenant = await api(stack, tenant.token, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    expect(asTenant.status).toBe(403);
    expect(asTenant.json.message).toBe('Only the operator token reaches /v1/admin.');

    const created = await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    expect(created.status).toBe(201);
    expect(created.json).toEqual({ id: expect.any(String), name, token: expect.stringMatching(/^strata_pat_[0-9A-Za-z]{36}$/) });
    expect(isWellFormedToken(created.json.token)).toBe(true);
    // One changed character breaks the checksum, which is what a secret scanner checks.
    const tampered = created.json.token.slice(0, -7) + (created.json.token.at(-7) === 'a' ? 'b' : 'a') + created.json.token.slice(-6);
    expect(isWellFormedToken(tampered)).toBe(false);
    // The new tenant's token works, with every scope.
    expect((await api(stack, created.json.token, 'GET', '/v1/builds')).status).toBe(200);
    const stored = await stack.prisma.apiToken.findFirstOrThrow({ where: { tenantId: created.json.id } });
    expect(stored.scopes).toEqual(['admin']);
    expect(stored.tokenHash).not.toContain(created.json.token);

    const again = await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    expect(again.status).toBe(409);
    expect(again.json.message).toBe(`A tenant named "${name}" already exists.`);
    const bad = await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name: 'Team A' }), 'application/json');
    expect(bad.status).toBe(400);
    expect(bad.json.message).toMatch(/^Field "name" must be/);
  });

  it('stores quotas the operator sets and lists them', async () => {
    const name = newTenantName();
    await api(stack, stack.operatorToken, 'POST', '/v1/admin/tenants', json({ name }), 'application/json');
    const patched = await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxConcurrentBuilds: 2, maxStoredBytes: 5 * 1024 ** 3 }), 'application/json');
    expect(patched.status).toBe(200);
    expect(patched.json.quotas).toEqual({ maxConcurrentBuilds: 2, maxQueuedBuilds: null, maxBuildMinutesPerMonth: null, maxStoredBytes: 5 * 1024 ** 3, requestsPerMinute: null });
    const list = await api(stack, stack.operatorToken, 'GET', '/v1/admin/tenants');
    expect(list.json.tenants.find((t: { name: string }) => t.name === name).quotas.maxConcurrentBuilds).toBe(2);

    const unknownField = await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxCpus: 2 }), 'application/json');
    expect(unknownField.status).toBe(400);
    expect(unknownField.json.message).toMatch(/^Unknown field "maxCpus"/);
    const negative = await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${name}`, json({ maxQueuedBuilds: -1 }), 'application/json');
    expect(negative.status).toBe(400);
    const missing = await api(stack, stack.operatorToken, 'PATCH', '/v1/admin/tenants/no-such-tenant-here', json({ maxQueuedBuilds: 1 }), 'application/json');
    expect(missing.status).toBe(404);
  });

  it('issues scoped tokens shown once, lists them without secrets and with last use, and revokes at once', async () => {
    const owner = await stack.tenant('scoped');
    const pull = await createToken(owner.token, { name: 'ci pull', scopes: ['registry:pull'] });
    expect(isWellFormedToken(pull.token)).toBe(true);

    const refused = await api(stack, pull.token, 'GET', '/v1/builds');
    expect(refused.status).toBe(403);
    expect(refused.json.message).toBe('The API token lacks the "builds:read" scope.');
    expect((await api(stack, pull.token, 'GET', '/v1/repositories')).status).toBe(200);
    expect((await api(stack, pull.token, 'GET', '/v1/tokens')).status).toBe(403);

    const listed = await api(stack, owner.token, 'GET', '/v1/tokens');
    expect(listed.status).toBe(200);
    const row = listed.json.tokens.find((t: { id: string }) => t.id === pull.id);
    expect(row).toMatchObject({ name: 'ci pull', scopes: ['registry:pull'], repositories: [], revokedAt: null });
    expect(row.lastUsedAt).not.toBeNull();
    expect(listed.text).not.toContain(pull.token);
    expect(listed.text).not.toContain('tokenHash');

    const revoked = await api(stack, owner.token, 'DELETE', `/v1/tokens/${pull.id}`);
    expect(revoked.status).toBe(200);
    expect(revoked.json.revokedAt).not.toBeNull();
    const after = await api(stack, pull.token, 'GET', '/v1/repositories');
    expect(after.status).toBe(401);

    const other = await stack.tenant('scoped-other');
    expect((await api(stack, other.token, 'DELETE', `/v1/tokens/${owner.tokenId}`)).status).toBe(404);
  });

  it('refuses a token that asks for more than its creator holds, an unknown scope, a bad pattern or a past expiry', async () => {
    const owner = await stack.tenant('escalate');
    const tokensAdmin = await createToken(owner.token, { name: 'token maker', scopes: ['tokens:admin', 'builds:read'], repositories: ['team-a/*'] });
    const cases: [unknown, RegExp][] = [
      [{ name: 'x', scopes: ['admin'] }, /^Scope "admin" is more than the calling token holds\.$/],
      [{ name: 'x', scopes: ['builds:read'] }, /^Repositories \(every repository\) are more than the calling token may touch \(team-a\/\*\)\.$/],
      [{ name: 'x', scopes: ['builds:read'], repositories: ['team-b/*'] }, /^Repositories team-b\/\* are more/],
      [{ name: 'x', scopes: ['builds:everything'] }, /^Unknown scope "builds:everything"/],
      [{ name: 'x', scopes: ['builds:read'], repositories: ['team-a/**/x'] }, /^Invalid repository pattern "team-a\/\*\*\/x"/],
      [{ name: 'x', scopes: ['builds:read'], repositories: ['team-a/*'], expiresAt: '2001-01-01T00:00:00Z' }, /^Field "expiresAt" is in the past/],
      [{ scopes: ['builds:read'] }, /^Field "name" must be/],
    ];
    for (const [body, message] of cases) {
      const res = await api(stack, tokensAdmin.token, 'POST', '/v1/tokens', json(body), 'application/json');
      expect({ body, status: res.status, message: res.json.message }).toEqual({ body, status: 400, message: expect.stringMatching(message) });
    }
    const narrower = await createToken(tokensAdmin.token, { name: 'narrower', scopes: ['builds:read'], repositories: ['team-a/web'] });
    expect(isWellFormedToken(narrower.token)).toBe(true);
    const notJson = await api(stack, owner.token, 'POST', '/v1/tokens', 'scopes=admin', 'application/json');
    expect(notJson.status).toBe(400);
    expect(notJson.json.message).toBe('The token must be a JSON object; it is not valid JSON.');
  });

  it('refuses an expired token with the time it expired', async () => {
    const owner = await stack.tenant('expiry');
    const soon = new Date(Date.now() + 1500).toISOString();
    const t = await createToken(owner.token, { name: 'short', scopes: ['builds:read'], expiresAt: soon });
    expect((await api(stack, t.token, 'GET', '/v1/builds')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1600));
    const late = await api(stack, t.token, 'GET', '/v1/builds');
    expect(late.status).toBe(401);
    expect(late.json.message).toBe(`The API token expired at ${new Date(soon).toISOString()}.`);
  });

  it('keeps a token limited by repository patterns to those repositories', async () => {
    const owner = await stack.tenant('patterns');
    const teamA = await createToken(owner.token, { name: 'team a', scopes: ['builds:write', 'registry:pull', 'registry:push'], repositories: ['team-a/*'] });
    const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));
    const inside = await api(stack, teamA.token, 'POST', '/v1/builds?repository=team-a/web&tag=1', ctx, 'application/x-tar');
    expect(inside.status).toBe(202);
    const outside = await api(stack, teamA.token, 'POST', '/v1/builds?repository=team-b/web&tag=1', ctx, 'application/x-tar');
    expect(outside.status).toBe(403);
    expect(outside.json.message).toBe('The API token is limited to repositories team-a/*; "team-b/web" is not one of them.');
    await api(stack, owner.token, 'POST', '/v1/builds?repository=team-b/api&tag=1', ctx, 'application/x-tar');
    const repos = await api(stack, teamA.token, 'GET', '/v1/repositories');
    expect(repos.json.repositories.map((r: { name: string }) => r.name)).toEqual(['team-a/web']);
    expect((await api(stack, teamA.token, 'GET', '/v1/repositories/team-b/api/tags')).status).toBe(403);
  });

  it('declares an access on every route (a scope, public or operator), and names the scopes that exist', () => {
    const routes = declaredRoutes(stack.app);
    expect(routes.length).toBeGreaterThan(10);
    const undeclared = routes.filter((r) => r.access === undefined).map((r) => `${r.method} ${r.path} (${r.controller}.${r.handler})`);
    expect(undeclared).toEqual([]);
    const byPath = Object.fromEntries(routes.map((r) => [`${r.method} ${r.path}`, r.access]));
    expect(byPath['POST /v1/builds']).toEqual({ kind: 'scope', scope: 'builds:write' });
    expect(byPath['POST /v1/admin/tenants']).toEqual({ kind: 'operator' });
    expect(byPath['GET /healthz']).toMatchObject({ kind: 'public' });
    // Every /v1 route that is not public says which scope it needs; public are the signed hooks and the OIDC exchange.
    expect(routes.filter((r) => r.path.startsWith('/v1/') && r.access?.kind === 'public').map((r) => r.path).sort()).toEqual(
      [...routes.filter((r) => r.path.startsWith('/v1/hooks')).map((r) => r.path), '/v1/auth/oidc'].sort(),
    );
  });

  it('refuses a route that declares no access, whatever the token', async () => {
    @Controller('v1/forgotten')
    class ForgottenController {
      @Get()
      list() {
        return [];
      }
    }
    const guard = new AuthGuard(stack.prisma as never, new Reflector(), stack.app.get(RateLimiter), stack.config);
    const owner = await stack.tenant('forgotten');
    const request = { headers: { authorization: `Bearer ${owner.token}` } };
    const ctx = {
      getHandler: () => ForgottenController.prototype.list,
      getClass: () => ForgottenController,
      switchToHttp: () => ({ getRequest: () => request, getResponse: () => ({ setHeader: () => undefined }) }),
    } as unknown as ExecutionContext;
    await expect(guard.canActivate(ctx)).rejects.toThrow('This route declares no access scope, so it is refused.');
  });
});

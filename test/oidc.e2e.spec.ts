// OIDC from CI: a tenant trusts a CI's tokens (trust policies), and POST /v1/auth/oidc exchanges one
// for a short-lived scoped Strata token. The test runs its own issuers on 127.0.0.1 (discovery and
// JWKS, keys made with jose), with the claim shapes of GitHub Actions and GitLab CI.
import http from 'node:http';
import { run } from '../apps/cli/src/cli.js';
import { githubClaims, gitlabClaims, TestIssuer } from './support/oidc-issuer.js';
import { api, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);
const ctx = () => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' }));

describe('OIDC from CI: trust policies and the token exchange', () => {
  let stack: Stack;
  let github: TestIssuer;
  let gitlab: TestIssuer;
  let owner: { name: string; token: string; tenantId: string };
  let bystander: { name: string; token: string };
  let githubPolicyId: string;

  const exchange = (token: string, extra: Record<string, unknown> = {}) => api(stack, null, 'POST', '/v1/auth/oidc', json({ token, ...extra }), 'application/json');
  const ghPolicy = (over: Record<string, unknown> = {}) => ({
    issuer: github.url,
    audience: 'strata-test',
    claims: { repository_owner_id: '1234', repository: 'acme/app', ref: 'refs/heads/*', job_workflow_ref: 'acme/app/.github/workflows/build.yml@refs/heads/main' },
    scopes: ['builds:write', 'builds:read'],
    repositories: ['app/*'],
    ttlSeconds: 600,
    ...over,
  });

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    github = await new TestIssuer().start();
    await github.addKey('gh-1');
    gitlab = await new TestIssuer().start('/gitlab');
    await gitlab.addKey('gl-1');
    owner = await stack.tenant('oidc-owner');
    bystander = await stack.tenant('oidc-bystander');
    const created = await api(stack, owner.token, 'POST', '/v1/oidc/trust-policies', json(ghPolicy()), 'application/json');
    expect(created.status).toBe(201);
    githubPolicyId = created.json.id;
    const gl = await api(stack, owner.token, 'POST', '/v1/oidc/trust-policies', json({ issuer: `${gitlab.url}/`, audience: 'strata-test', claims: { project_id: '99', ref_type: 'branch', ref: 'main' }, scopes: ['registry:pull'] }), 'application/json');
    expect(gl.status).toBe(201);
    // Another tenant trusts another repository of the same issuer: it must never show in the owner's answers.
    const other = await api(stack, bystander.token, 'POST', '/v1/oidc/trust-policies', json(ghPolicy({ claims: { repository_owner_id: '5678' } })), 'application/json');
    expect(other.status).toBe(201);
  });
  afterAll(async () => {
    await stack.close();
    await github.close();
    await gitlab.close();
  });

  it('stores, lists and deletes trust policies per tenant, and refuses bad ones with a 400 naming the field', async () => {
    const listed = await api(stack, owner.token, 'GET', '/v1/oidc/trust-policies');
    expect(listed.status).toBe(200);
    expect(listed.json.policies.map((p: { issuer: string; ttlSeconds: number }) => [p.issuer, p.ttlSeconds]).sort()).toEqual([[github.url, 600], [gitlab.url, 3600]].sort());
    expect((await api(stack, bystander.token, 'GET', '/v1/oidc/trust-policies')).json.policies).toHaveLength(1);
    // Another tenant's policy does not exist for the caller.
    expect((await api(stack, bystander.token, 'DELETE', `/v1/oidc/trust-policies/${githubPolicyId}`)).status).toBe(404);

    const bad = async (body: unknown) => (await api(stack, owner.token, 'POST', '/v1/oidc/trust-policies', json(body), 'application/json')).json.message;
    expect(await bad(ghPolicy({ issuer: 'http://issuer.example.com' }))).toBe('Field "issuer" must be an https URL (plain http is accepted only for a loopback address the operator allows, for tests).');
    expect(await bad(ghPolicy({ claims: { ref: 'refs/heads/*' } }))).toMatch(/^Field "claims" must hold at least one exact value/);
    expect(await bad(ghPolicy({ claims: { ref: 'refs/*/main' } }))).toBe('Claim "ref": "*" may only end a value (a prefix, like "refs/heads/*").');
    expect(await bad(ghPolicy({ scopes: ['builds:fly'] }))).toMatch(/^Unknown scope "builds:fly"/);
    expect(await bad(ghPolicy({ ttlSeconds: 86_400 }))).toBe('Field "ttlSeconds" must be a whole number from 60 to 43200.');
    // A token cannot make a policy that hands out more than it holds.
    const narrow = (await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: 'policy maker', scopes: ['tokens:admin', 'builds:read'] }), 'application/json')).json.token;
    const wider = await api(stack, narrow, 'POST', '/v1/oidc/trust-policies', json(ghPolicy()), 'application/json');
    expect(wider.status).toBe(400);
    expect(wider.json.message).toBe('Scope "builds:write" is more than the calling token holds.');

    const temp = await api(stack, owner.token, 'POST', '/v1/oidc/trust-policies', json(ghPolicy({ claims: { repository_owner_id: '1234', repository: 'acme/temp' } })), 'application/json');
    const deleted = await api(stack, owner.token, 'DELETE', `/v1/oidc/trust-policies/${temp.json.id}`);
    expect(deleted.status).toBe(200);
    const jwt = await github.sign(githubClaims({ repository: 'acme/temp', job_workflow_ref: 'x' }), { kid: 'gh-1' });
    expect((await exchange(jwt)).json.reason).toBe('no-policy-matched');
    const audit = (await api(stack, owner.token, 'GET', '/v1/audit?action=oidc.policy.delete')).json.events;
    expect(audit.map((e: { target: string; actor: string }) => e.target)).toEqual([temp.json.id]);
  });

  it('exchanges a GitHub Actions token for a short-lived token with the policy\'s scopes and repositories, audited as the OIDC subject', async () => {
    const claims = githubClaims();
    const before = Date.now();
    const res = await exchange(await github.sign(claims, { kid: 'gh-1' }));
    expect(res.status).toBe(201);
    expect(res.json.token).toMatch(/^strata_oidc_[0-9A-Za-z]{36}$/);
    expect(res.json).toMatchObject({ tenant: owner.name, scopes: ['builds:write', 'builds:read'], repositories: ['app/*'] });
    const ttl = Date.parse(res.json.expiresAt) - before;
    expect(ttl).toBeGreaterThan(590_000);
    expect(ttl).toBeLessThanOrEqual(601_000);
    const short = res.json.token as string;

    // Only its scopes, only its repositories.
    const built = await api(stack, short, 'POST', '/v1/builds?repository=app/web', ctx(), 'application/x-tar');
    expect(built.status).toBe(202);
    const outside = await api(stack, short, 'POST', '/v1/builds?repository=tools/lint', ctx(), 'application/x-tar');
    expect(outside.status).toBe(403);
    expect(outside.json.message).toBe('The API token is limited to repositories app/*; "tools/lint" is not one of them.');
    expect((await api(stack, short, 'GET', '/v1/tokens')).status).toBe(403);
    expect((await api(stack, short, 'GET', '/v1/oidc/trust-policies')).json.message).toBe('The API token lacks the "tokens:admin" scope.');
    const pull = await fetch(`${stack.url}/v2/_catalog`, { headers: { authorization: `Basic ${Buffer.from(`x:${short}`).toString('base64')}` } });
    expect(pull.status).toBe(403);

    const events = (await api(stack, owner.token, 'GET', `/v1/audit?actor=${encodeURIComponent(`oidc:${claims.sub}`)}`)).json.events;
    expect(events.map((e: { action: string; target: string }) => [e.action, e.target])).toEqual([
      ['build.start', built.json.id],
      ['oidc.exchange', res.json.id],
    ]);
    expect(events[1].data).toMatchObject({ issuer: github.url, policyId: githubPolicyId, scopes: ['builds:write', 'builds:read'], claims: { repository: 'acme/app', ref: 'refs/heads/main' } });
    expect(events[1].sourceIp).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    // The exchanged token is listed among the tenant's tokens (so it can be revoked), named for its subject.
    const tokens = (await api(stack, owner.token, 'GET', '/v1/tokens')).json.tokens;
    expect(tokens.find((t: { id: string }) => t.id === res.json.id)).toMatchObject({ name: `oidc ${claims.sub}`, expiresAt: res.json.expiresAt });
  });

  it('exchanges a GitLab CI token (an issuer below the root, its own claim names)', async () => {
    const res = await exchange(await gitlab.sign(gitlabClaims(), { kid: 'gl-1', audience: ['strata-test', 'other'] }));
    expect(res.status).toBe(201);
    expect(res.json.scopes).toEqual(['registry:pull']);
    const catalog = await fetch(`${stack.url}/v2/_catalog`, { headers: { authorization: `Basic ${Buffer.from(`x:${res.json.token}`).toString('base64')}` } });
    expect(catalog.status).toBe(200);
    expect((await api(stack, res.json.token, 'GET', '/v1/builds')).status).toBe(403);
    // A tag pipeline is not what the policy trusts.
    const tag = await exchange(await gitlab.sign(gitlabClaims({ ref: 'v1.0', ref_type: 'tag' }), { kid: 'gl-1' }));
    expect(tag.status).toBe(403);
  });

  it('caches the JWKS, and fetches it again when a token names a key it lacks (key rotation)', async () => {
    const fetches = github.jwksFetches;
    for (let i = 0; i < 2; i++) expect((await exchange(await github.sign(githubClaims(), { kid: 'gh-1' }))).status).toBe(201);
    expect(github.jwksFetches).toBe(fetches);
    await github.addKey('gh-2');
    const rotated = await exchange(await github.sign(githubClaims(), { kid: 'gh-2' }));
    expect(rotated.status).toBe(201);
    expect(github.jwksFetches).toBe(fetches + 1);
    expect(github.discoveryFetches).toBeGreaterThanOrEqual(1);
  });

  it('refuses a token signed by a key the issuer does not publish, or whose signature does not verify', async () => {
    // The api refetches a JWKS for an unknown key at most once a second; the rotation before just did.
    await new Promise((r) => setTimeout(r, 1100));
    await github.addKey('rogue', false);
    const unknown = await exchange(await github.sign(githubClaims(), { kid: 'rogue' }));
    expect(unknown.status).toBe(401);
    expect(unknown.json).toEqual({ statusCode: 401, error: 'Unauthorized', reason: 'unknown-key', message: 'The token is signed with a key the issuer does not publish in its JWKS.' });
    const forged = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', signWith: 'rogue' }));
    expect(forged.status).toBe(401);
    expect(forged.json.reason).toBe('bad-signature');
    expect(forged.json.message).toBe("The token's signature does not verify with the issuer's key.");
  });

  it('refuses an expired token, a token for another audience, one not valid yet, one from an unknown issuer and a malformed one, saying which', async () => {
    const now = Math.floor(Date.now() / 1000);
    const expired = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', issuedAt: now - 900, notBefore: now - 900, expiresAt: now - 600 }));
    expect(expired.status).toBe(401);
    expect(expired.json.reason).toBe('expired');
    expect(expired.json.message).toBe(`The token expired at ${new Date((now - 600) * 1000).toISOString()}.`);
    // Within the allowed clock skew (30 s) a just-expired token still passes.
    expect((await exchange(await github.sign(githubClaims(), { kid: 'gh-1', issuedAt: now - 300, expiresAt: now - 10 }))).status).toBe(201);

    const audience = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', audience: 'https://github.com/acme' }));
    expect(audience.status).toBe(401);
    expect(audience.json).toMatchObject({ reason: 'wrong-audience', message: 'The token\'s audience "https://github.com/acme" is not one a trust policy for this issuer accepts.' });

    const early = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', notBefore: now + 600 }));
    expect(early.json.reason).toBe('not-yet-valid');
    const future = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', issuedAt: now + 600 }));
    expect(future.status).toBe(401);
    expect(future.json.reason).toBe('issued-in-future');

    const stranger = await exchange(await github.sign(githubClaims(), { kid: 'gh-1', issuer: 'https://ci.example.com' }));
    expect(stranger.status).toBe(401);
    expect(stranger.json).toMatchObject({ reason: 'unknown-issuer', message: 'No trust policy names the issuer "https://ci.example.com": tokens it issues are not exchanged here.' });

    const garbage = await exchange('not.a.jwt');
    expect(garbage.status).toBe(401);
    expect(garbage.json.reason).toBe('malformed');
    expect((await api(stack, null, 'POST', '/v1/auth/oidc', json({}), 'application/json')).status).toBe(400);
  });

  it('exchanges a token once: the same jti again is refused as replayed', async () => {
    const jwt = await github.sign(githubClaims(), { kid: 'gh-1' });
    expect((await exchange(jwt)).status).toBe(201);
    const again = await exchange(jwt);
    expect(again.status).toBe(401);
    expect(again.json.reason).toBe('replayed');
    expect(again.json.message).toMatch(/^This token \(jti "[0-9a-f-]{36}"\) was exchanged before; a CI's token is good for one exchange\.$/);
  });

  it('refuses a token whose claims match no policy with 403, without naming any tenant or policy', async () => {
    const cases = [
      githubClaims({ repository: 'acme/other', job_workflow_ref: 'acme/other/.github/workflows/build.yml@refs/heads/main' }),
      githubClaims({ ref: 'refs/tags/v1', job_workflow_ref: 'acme/app/.github/workflows/build.yml@refs/heads/main' }),
      githubClaims({ job_workflow_ref: 'acme/app/.github/workflows/evil.yml@refs/heads/main' }),
      githubClaims({ repository_owner_id: '9999' }),
    ];
    for (const claims of cases) {
      const res = await exchange(await github.sign(claims, { kid: 'gh-1' }));
      expect(res.status).toBe(403);
      expect(res.json).toEqual({ statusCode: 403, error: 'Forbidden', reason: 'no-policy-matched', message: `No trust policy matches this token's claims (sub "${claims.sub}").` });
      for (const secret of [owner.name, bystander.name, githubPolicyId]) expect(res.text).not.toContain(secret);
    }
    // Naming a tenant whose policies do not match is the same refusal.
    const named = await exchange(await github.sign(githubClaims(), { kid: 'gh-1' }), { tenant: bystander.name });
    expect(named.status).toBe(403);
    expect(named.json.reason).toBe('no-policy-matched');
  });

  it('strata build --oidc asks GitHub Actions for an ID token, exchanges it and builds with it; --oidc-token-env reads GitLab\'s', async () => {
    const asked: { auth?: string; audience: string | null }[] = [];
    const actions = http.createServer(async (req, res) => {
      const url = new URL(req.url!, 'http://x');
      asked.push({ auth: req.headers.authorization, audience: url.searchParams.get('audience') });
      if (req.headers.authorization !== 'bearer request-secret' || url.searchParams.get('api-version') !== '2.0') {
        res.writeHead(401).end('{"message":"bad request token"}');
        return;
      }
      const value = await github.sign(githubClaims(), { kid: 'gh-1', audience: url.searchParams.get('audience') ?? 'none' });
      res.writeHead(200, { 'content-type': 'application/json' }).end(json({ count: 1, value }));
    });
    await new Promise<void>((resolve) => actions.listen(0, '127.0.0.1', resolve));
    try {
      const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' });
      const io = (env: Record<string, string>) => {
        const out: string[] = [];
        const err: string[] = [];
        return { out, err, io: { out: (t: string) => void out.push(t), err: (t: string) => void err.push(t), env: { STRATA_URL: stack.url, ...env } } };
      };
      const gh = io({ ACTIONS_ID_TOKEN_REQUEST_URL: `http://127.0.0.1:${(actions.address() as { port: number }).port}/token?api-version=2.0`, ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-secret' });
      const code = await run(['build', dir, '-t', 'app/cli:v1', '--oidc', '--oidc-audience', 'strata-test', '--no-follow'], gh.io);
      expect({ code, err: gh.err.join('') }).toEqual({ code: 0, err: expect.stringMatching(new RegExp(`^signed in to tenant ${owner.name} with the CI's OIDC token \\(builds:write, builds:read; until .+\\)\\n(context: .+\\n)?build [0-9a-f-]{36} queued\\n$`)) });
      expect(asked).toEqual([{ auth: 'bearer request-secret', audience: 'strata-test' }]);
      const buildId = gh.out.join('').trim();
      const b = await api(stack, owner.token, 'GET', `/v1/builds/${buildId}`);
      expect(b.json.repository).toBe('app/cli');
      const started = (await api(stack, owner.token, 'GET', `/v1/audit?action=build.start&target=${buildId}`)).json.events;
      expect(started.map((e: { actor: string }) => e.actor)).toEqual([`oidc:${githubClaims().sub}`]);
      // Without --oidc-audience the audience is the server's URL, which no policy here accepts.
      const defaulted = io(gh.io.env as Record<string, string>);
      expect(await run(['build', dir, '-t', 'app/cli:v1', '--oidc', '--no-follow'], defaulted.io)).toBe(1);
      expect(asked[1]!.audience).toBe(stack.url);
      expect(defaulted.err.join('')).toContain('the OIDC exchange was refused (401 wrong-audience)');

      const gl = io({ GITLAB_CI: 'true', STRATA_ID_TOKEN: await gitlab.sign(gitlabClaims(), { kid: 'gl-1' }) });
      // The GitLab policy grants registry:pull only: the exchange works, the build is refused for its scope.
      expect(await run(['build', dir, '-t', 'app/cli:v1', '--oidc', '--oidc-token-env', 'STRATA_ID_TOKEN', '--no-follow'], gl.io)).toBe(1);
      expect(gl.err.join('')).toMatch(new RegExp(`^signed in to tenant ${owner.name} with the CI's OIDC token \\(registry:pull; until .+\\)\\nstrata: POST /v1/builds: 403 The API token lacks the "builds:write" scope\\.\\n$`));

      const nowhere = io({});
      expect(await run(['build', dir, '-t', 'app/cli:v1', '--oidc'], nowhere.io)).toBe(2);
      expect(nowhere.err.join('')).toContain('--oidc needs GitHub Actions with "permissions: id-token: write"');
      const unset = io({ GITLAB_CI: 'true' });
      expect(await run(['build', dir, '-t', 'app/cli:v1', '--oidc', '--oidc-token-env', 'STRATA_ID_TOKEN'], unset.io)).toBe(2);
      expect(unset.err.join('')).toContain('--oidc-token-env STRATA_ID_TOKEN: the variable is not set');
    } finally {
      await new Promise((resolve) => actions.close(resolve));
    }
  });
});

describe('OIDC exchange rate limit', () => {
  it('answers 429 with Retry-After past the per-address limit of exchanges', async () => {
    const stack = await startStack({ worker: false, env: { STRATA_RATE_LIMIT_OIDC_PER_MINUTE: '3' } });
    try {
      // Fixed one-minute windows: start early in one, so the four requests fall in the same window.
      const intoMinute = Date.now() % 60_000;
      if (intoMinute > 50_000) await new Promise((r) => setTimeout(r, 60_500 - intoMinute));
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push(await api(stack, null, 'POST', '/v1/auth/oidc', json({ token: 'not.a.jwt' }), 'application/json'));
      expect(answers.map((a) => a.status)).toEqual([401, 401, 401, 429]);
      expect(answers[3]!.json.message).toMatch(/^Rate limit of the source address exceeded: 3 requests per 60 s; retry in \d+ s\.$/);
      expect(Number(answers[3]!.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(answers[0]!.headers.get('ratelimit-policy')).toBe('"source";q=3;w=60');
    } finally {
      await stack.close();
    }
  });
});

// The cross-tenant matrix: every /v1 operation in the OpenAPI document the api serves, and every /v2
// route of the registry, against { no token, another tenant's token, own token lacking the scope, own
// token with it }. A new endpoint joins the matrix by being in the document (or, for /v2, a new
// RegistryRoute kind fails to compile here until it is listed).
import { createHmac, randomUUID } from 'node:crypto';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { ALL_SCOPES, type Scope } from '@strata/db';
import type { RegistryRoute } from '@strata/registry';
import { declaredRoutes } from '../apps/api/src/auth/routes.js';
import type { RouteAccess } from '../apps/api/src/auth/route-access.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

const json = (body: unknown) => JSON.stringify(body);
type Case = 'no token' | "another tenant's token" | 'own token lacking the scope' | 'own token with the scope';
const CASES: Case[] = ['no token', "another tenant's token", 'own token lacking the scope', 'own token with the scope'];

/** `/v1/builds/{id}`, `/v1/builds/:id` and `/v1/repositories/*path/tags` all become `/v1/builds/{}`… */
const shape = (p: string) => p.replace(/\{[^}]+\}|:[A-Za-z]+|\*[A-Za-z]+/g, '{}');

describe('cross-tenant matrix over every endpoint', () => {
  let stack: Stack;
  let owner: { name: string; tenantId: string; token: string; tokenId: string };
  let intruder: { name: string; token: string };
  let buildId: string;
  const repo = `matrix-secret-${Date.now().toString(36)}/app`;
  const tag = 'v1';
  let manifestDigest: string;
  let layerDigest: string;
  let triggerId: string;
  let deliveryId: string;
  const lacking = new Map<string, string>();
  const results: { endpoint: string; case: Case; status: number }[] = [];

  /** A token of the owner with every scope but `scope` (and `admin`, which holds them all). */
  async function tokenLacking(scopes: Scope[]): Promise<string> {
    const key = scopes.join(',');
    if (!lacking.has(key)) {
      const granted = ALL_SCOPES.filter((s) => s !== 'admin' && !scopes.includes(s));
      const res = await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: `lacking ${key}`, scopes: granted }), 'application/json');
      lacking.set(key, res.json.token);
    }
    return lacking.get(key)!;
  }

  /** Names of the owner's that another tenant must never read, unless it sent them itself. */
  const secrets = () => [owner.name, repo, buildId, owner.tokenId, manifestDigest, triggerId];
  function expectNoLeak(requestPath: string, body: string, who: string) {
    for (const s of secrets()) {
      if (!requestPath.includes(s) && body.includes(s)) throw new Error(`${who}: the answer to ${requestPath} contains the owner's "${s}": ${body.slice(0, 300)}`);
    }
  }

  beforeAll(async () => {
    stack = await startStack();
    owner = await stack.tenant('matrix-owner');
    intruder = await stack.tenant('matrix-intruder');
    const built = await build(stack, owner.token, `repository=${repo}&tag=${tag}`, tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' })));
    expect(built.status).toBe('succeeded');
    buildId = built.id;
    manifestDigest = built.imageDigest;
    layerDigest = built.steps.find((s: { layerDigest: string | null }) => s.layerDigest)?.layerDigest;
    // A trigger with one push delivery, so /v1/triggers/{id}/deliveries/{deliveryId} name real resources. Its
    // clone URL and forge API point at a closed loopback port: the build it starts fails without leaving the machine.
    const secret = 'matrix-webhook-secret';
    const closed = 'http://127.0.0.1:9';
    const trigger = await api(stack, owner.token, 'POST', '/v1/triggers', json({ repository: repo, provider: 'github', cloneUrl: `${closed}/acme/app.git`, apiUrl: closed, secret, rules: [{ ref: 'refs/heads/main', tags: ['main'] }] }), 'application/json');
    expect(trigger.status).toBe(201);
    triggerId = trigger.json.id;
    const sha = 'a'.repeat(40);
    const push = json({
      ref: 'refs/heads/main', before: '0'.repeat(40), after: sha, created: false, deleted: false, forced: false,
      commits: [{ id: sha, message: 'a change', added: [], removed: [], modified: ['a'] }],
      head_commit: { id: sha, message: 'a change', added: [], removed: [], modified: ['a'] },
      repository: { id: 1, name: 'app', full_name: 'acme/app', private: false, clone_url: `${closed}/acme/app.git`, default_branch: 'main' },
    });
    const hooked = await fetch(`${stack.url}${trigger.json.hookUrl}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-github-delivery': randomUUID(), 'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(push).digest('hex')}` },
      body: push,
    });
    expect(hooked.status).toBe(200);
    deliveryId = (await api(stack, owner.token, 'GET', `/v1/triggers/${triggerId}/deliveries`)).json.deliveries[0].id;
  });
  afterAll(async () => {
    await stack.close();
  });

  it('answers every /v1 operation of the OpenAPI document as its declared access says, and leaks nothing across tenants', async () => {
    const doc = SwaggerModule.createDocument(stack.app, new DocumentBuilder().build());
    const routes = declaredRoutes(stack.app);
    const accessOf = (method: string, path: string): RouteAccess => {
      const found = routes.find((r) => r.method === method.toUpperCase() && shape(r.path) === shape(path));
      if (!found?.access) throw new Error(`${method.toUpperCase()} ${path} is in the OpenAPI document but declares no access`);
      return found.access;
    };
    const throwaway = async () =>
      (await api(stack, owner.token, 'POST', '/v1/tokens', json({ name: 'to revoke', scopes: ['builds:read'] }), 'application/json')).json.id as string;
    const policy = async () =>
      (await api(stack, owner.token, 'POST', '/v1/oidc/trust-policies', json({ issuer: 'http://127.0.0.1:9', audience: 'matrix', claims: { repository: 'acme/app' }, scopes: ['builds:read'] }), 'application/json')).json.id as string;
    const fill = async (path: string): Promise<string> => {
      let out = path;
      for (const [, param] of path.matchAll(/\{([^}]+)\}/g)) {
        const value =
          param === 'path' ? repo
          : param === 'tag' ? tag
          : param === 'name' && path.startsWith('/v1/admin/tenants') ? owner.name
          : param === 'name' ? repo
          : param === 'id' && path.startsWith('/v1/tokens') ? await throwaway()
          : param === 'id' && path.startsWith('/v1/builds') ? buildId
          : param === 'id' && path.startsWith('/v1/oidc/trust-policies') ? await policy()
          : param === 'id' && (path.startsWith('/v1/triggers') || path.startsWith('/v1/hooks')) ? triggerId
          : param === 'deliveryId' ? deliveryId
          : randomUUID();
        out = out.replace(`{${param}}`, value);
      }
      return out;
    };

    // Deletions last, so the resources the other operations name still exist.
    const operations = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item as object).filter((m) => ['get', 'post', 'put', 'patch', 'delete', 'head'].includes(m)).map((method) => ({ path, method })))
      .sort((a, b) => Number(a.method === 'delete') - Number(b.method === 'delete'));
    const v1 = operations.filter((o) => o.path.startsWith('/v1/'));
    expect(v1.length).toBeGreaterThanOrEqual(15);
    for (const { path, method } of v1) {
      const access = accessOf(method, path);
      const endpoint = `${method.toUpperCase()} ${path}`;
      // A path parameter names one of the owner's resources, which another tenant must not find (404);
      // an import creates the repository in the caller's own namespace instead.
      const ownsAResource = /\{/.test(path) && !path.startsWith('/v1/admin') && !(method === 'post' && path.endsWith('/import'));
      for (const c of CASES) {
        const url = await fill(path);
        const body = ['post', 'put', 'patch'].includes(method) ? json({}) : undefined;
        let token: string | null;
        if (c === 'no token') token = null;
        else if (c === "another tenant's token") token = intruder.token;
        else if (c === 'own token lacking the scope') token = access.kind === 'scope' ? await tokenLacking([access.scope]) : access.kind === 'operator' ? owner.token : null;
        else token = access.kind === 'operator' ? stack.operatorToken : owner.token;
        if (c === 'own token lacking the scope' && access.kind === 'public') continue; // nothing to lack
        const res = await api(stack, token, method.toUpperCase(), url, body, body ? 'application/json' : undefined);
        results.push({ endpoint, case: c, status: res.status });
        const where = `${endpoint} with ${c} (${url})`;
        if (access.kind === 'public') {
          // No bearer token decides here; what authenticates the route instead (a forge's signature) may still refuse.
          expect({ where, ok: res.status < 500 }).toEqual({ where, ok: true });
          expectNoLeak(url, res.text, where);
        } else if (c === 'no token') {
          expect({ where, status: res.status }).toEqual({ where, status: 401 });
        } else if (c === "another tenant's token") {
          // The operator's API refuses tenants; another tenant's resource does not exist for the caller.
          const expected = access.kind === 'operator' ? 403 : ownsAResource ? 404 : null;
          if (expected !== null) expect({ where, status: res.status }).toEqual({ where, status: expected });
          else expect({ where, ok: res.status < 500 && res.status !== 401 && res.status !== 403 }).toEqual({ where, ok: true });
          expectNoLeak(url, res.text, where);
        } else if (c === 'own token lacking the scope') {
          expect({ where, status: res.status }).toEqual({ where, status: 403 });
        } else {
          expect({ where, ok: res.status < 500 && ![401, 403].includes(res.status) && !(ownsAResource && res.status === 404) }).toEqual({ where, ok: true });
        }
      }
    }
  });

  it('answers every /v2 route as the token may do, and leaks nothing across tenants', async () => {
    const basic = (token: string | null): Record<string, string> => (token ? { authorization: `Basic ${Buffer.from(`x:${token}`).toString('base64')}` } : {});
    const n = `${owner.name}/${repo}`;
    // One entry per RegistryRoute kind: adding a kind without listing it here fails to compile.
    const kinds: Record<RegistryRoute['kind'], { method: string; path: string; needs: 'pull' | 'push' | 'any' }[]> = {
      base: [{ method: 'GET', path: '/v2/', needs: 'any' }],
      token: [{ method: 'GET', path: `/v2/token?service=strata&scope=repository:${n}:pull,push`, needs: 'any' }],
      catalog: [{ method: 'GET', path: '/v2/_catalog', needs: 'pull' }],
      manifest: [
        { method: 'GET', path: `/v2/${n}/manifests/${tag}`, needs: 'pull' },
        { method: 'HEAD', path: `/v2/${n}/manifests/${tag}`, needs: 'pull' },
        { method: 'PUT', path: `/v2/${n}/manifests/other`, needs: 'push' },
        { method: 'DELETE', path: `/v2/${n}/manifests/nope`, needs: 'push' },
      ],
      blob: [
        { method: 'GET', path: `/v2/${n}/blobs/${layerDigest}`, needs: 'pull' },
        { method: 'HEAD', path: `/v2/${n}/blobs/${layerDigest}`, needs: 'pull' },
        { method: 'DELETE', path: `/v2/${n}/blobs/sha256:${'0'.repeat(64)}`, needs: 'push' },
      ],
      uploads: [{ method: 'POST', path: `/v2/${n}/blobs/uploads/`, needs: 'push' }],
      upload: ['GET', 'PATCH', 'PUT', 'DELETE'].map((method) => ({ method, path: `/v2/${n}/blobs/uploads/${randomUUID()}`, needs: 'push' as const })),
      tags: [{ method: 'GET', path: `/v2/${n}/tags/list`, needs: 'pull' }],
      referrers: [{ method: 'GET', path: `/v2/${n}/referrers/${manifestDigest}`, needs: 'pull' }],
    };
    for (const { method, path, needs } of Object.values(kinds).flat()) {
      const endpoint = `${method} ${path.replace(owner.name, '{tenant}').replace(repo, '{repo}').replace(/[0-9a-f]{8}-[0-9a-f-]{27}/, '{uuid}').split('?')[0]}`;
      for (const c of CASES) {
        if (c === 'own token lacking the scope' && needs === 'any') continue;
        const token =
          c === 'no token' ? null
          : c === "another tenant's token" ? intruder.token
          : c === 'own token lacking the scope' ? await tokenLacking(needs === 'pull' ? ['registry:pull'] : ['registry:push'])
          : owner.token;
        const res = await fetch(`${stack.url}${path}`, { method, headers: { ...basic(token), 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: method === 'PUT' || method === 'PATCH' ? '{}' : undefined });
        const text = await res.text();
        results.push({ endpoint, case: c, status: res.status });
        const where = `${endpoint} with ${c}`;
        if (needs === 'any') {
          const expected = c === 'no token' && path === '/v2/' ? 401 : 200;
          expect({ where, status: res.status }).toEqual({ where, status: expected });
          if (path.startsWith('/v2/token')) {
            const access = JSON.parse(Buffer.from(JSON.parse(text).token.split('.')[1], 'base64url').toString()).access;
            expect({ where, access }).toEqual({ where, access: c === 'own token with the scope' ? [{ type: 'repository', name: n, actions: ['pull', 'push'] }] : [] });
          }
        } else if (c === 'no token') {
          expect({ where, status: res.status }).toEqual({ where, status: 401 });
        } else if (c === "another tenant's token") {
          if (path === '/v2/_catalog') {
            expect({ where, status: res.status }).toEqual({ where, status: 200 });
            expectNoLeak(path, text, where);
          } else {
            expect({ where, status: res.status }).toEqual({ where, status: 403 });
            // The refusal names only what the caller asked for.
            expectNoLeak(path, text, where);
          }
        } else if (c === 'own token lacking the scope') {
          expect({ where, status: res.status }).toEqual({ where, status: 403 });
        } else {
          expect({ where, ok: ![401, 403].includes(res.status) && res.status < 500 }).toEqual({ where, ok: true });
        }
      }
    }
  });

  afterAll(() => {
    const endpoints = new Set(results.map((r) => r.endpoint));
    process.stdout.write(`cross-tenant matrix: ${endpoints.size} endpoints, ${results.length} cases\n`);
  });
});

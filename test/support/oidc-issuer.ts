import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

interface Key {
  kid: string;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  jwk: JWK;
}

/**
 * A CI's OIDC issuer on 127.0.0.1, as GitHub Actions and GitLab CI run one: a discovery document at
 * `<issuer>/.well-known/openid-configuration` naming a JWKS, whose keys the test rotates. It counts
 * the fetches, so a test can see the api's cache at work.
 */
export class TestIssuer {
  url = '';
  discoveryFetches = 0;
  jwksFetches = 0;
  private server: http.Server | null = null;
  private readonly keys = new Map<string, Key>();
  private published: string[] = [];

  /** `path` puts the issuer below the root, as a self-hosted GitLab may be. */
  async start(path = ''): Promise<this> {
    this.server = http.createServer((req, res) => {
      const send = (body: unknown) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.url === `${path}/.well-known/openid-configuration`) {
        this.discoveryFetches++;
        send({ issuer: this.url, jwks_uri: `${this.url}/jwks`, response_types_supported: ['id_token'], subject_types_supported: ['public'], id_token_signing_alg_values_supported: ['RS256'] });
      } else if (req.url === `${path}/jwks`) {
        this.jwksFetches++;
        send({ keys: this.published.map((kid) => this.keys.get(kid)!.jwk) });
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}${path}`;
    return this;
  }

  async close(): Promise<void> {
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** Makes a key pair; `publish` puts it in the JWKS. */
  async addKey(kid: string, publish = true): Promise<void> {
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    this.keys.set(kid, { kid, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } });
    if (publish) this.published.push(kid);
  }

  /** A token as the CI issues it: iss, aud, iat, nbf, exp (five minutes), jti, and the given claims. */
  async sign(
    claims: JWTPayload,
    opts: { kid: string; signWith?: string; audience?: string | string[]; issuedAt?: number; expiresAt?: number; notBefore?: number; jti?: string; issuer?: string },
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const key = this.keys.get(opts.signWith ?? opts.kid)!;
    return new SignJWT({ ...claims, nbf: opts.notBefore ?? now - 5 })
      .setProtectedHeader({ alg: 'RS256', kid: opts.kid, typ: 'JWT' })
      .setIssuer(opts.issuer ?? this.url)
      .setAudience(opts.audience ?? 'strata-test')
      .setIssuedAt(opts.issuedAt ?? now)
      .setExpirationTime(opts.expiresAt ?? now + 300)
      .setJti(opts.jti ?? randomUUID())
      .sign(key.privateKey);
  }
}

/** The claims GitHub Actions puts in a job's ID token (a push to main of acme/app). */
export function githubClaims(over: Record<string, string> = {}): JWTPayload {
  const repository = over.repository ?? 'acme/app';
  const ref = over.ref ?? 'refs/heads/main';
  return {
    sub: `repo:${repository}:ref:${ref}`,
    repository,
    repository_id: '690001',
    repository_owner: repository.split('/')[0],
    repository_owner_id: '1234',
    ref,
    ref_type: ref.startsWith('refs/tags/') ? 'tag' : 'branch',
    sha: 'c0ffee'.padEnd(40, '0'),
    workflow: 'build',
    job_workflow_ref: `${repository}/.github/workflows/build.yml@${ref}`,
    event_name: 'push',
    run_id: '4242',
    actor: 'octocat',
    runner_environment: 'github-hosted',
    ...over,
  };
}

/** The claims GitLab CI puts in an id_tokens token (a pipeline on main of acme/app, project 99). */
export function gitlabClaims(over: Record<string, string> = {}): JWTPayload {
  const ref = over.ref ?? 'main';
  const refType = over.ref_type ?? 'branch';
  return {
    sub: `project_path:acme/app:ref_type:${refType}:ref:${ref}`,
    namespace_id: '7',
    namespace_path: 'acme',
    project_id: '99',
    project_path: 'acme/app',
    user_id: '3',
    user_login: 'dev',
    pipeline_id: '555',
    pipeline_source: 'push',
    job_id: '777',
    ref,
    ref_type: refType,
    ref_protected: 'true',
    ...over,
  };
}

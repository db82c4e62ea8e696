import { createHmac, timingSafeEqual } from 'node:crypto';

/** An action on one repository, as the Docker token spec's `scope` parameter names it. */
export type RegistryAction = 'pull' | 'push';

export interface AccessEntry {
  type: 'repository';
  name: string;
  actions: RegistryAction[];
}

/** Claims of a registry bearer token: who (tenant, API token) and exactly which repositories and actions. */
export interface RegistryClaims {
  iss: string;
  aud: string;
  sub: string;
  /** The tenant the API token belongs to, or null for an anonymous (public pull) token. */
  tenantId: string | null;
  tenantName: string | null;
  access: AccessEntry[];
  iat: number;
  nbf: number;
  exp: number;
}

export const TOKEN_SERVICE = 'strata';
export const TOKEN_TTL_SECONDS = 300;

const b64 = (value: Buffer | string) => Buffer.from(value).toString('base64url');

/** A compact JWT (HS256) signed with node:crypto: registry tokens never leave Strata's own replicas. */
export function signRegistryToken(
  secret: string,
  claims: Omit<RegistryClaims, 'iat' | 'nbf' | 'exp' | 'iss' | 'aud'>,
  now = Date.now(),
  ttlSeconds = TOKEN_TTL_SECONDS,
): { token: string; claims: RegistryClaims } {
  const iat = Math.floor(now / 1000);
  const full: RegistryClaims = { iss: TOKEN_SERVICE, aud: TOKEN_SERVICE, ...claims, iat, nbf: iat - 5, exp: iat + ttlSeconds };
  const head = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(full))}`;
  return { token: `${head}.${b64(createHmac('sha256', secret).update(head).digest())}`, claims: full };
}

/** The claims of a token this deployment signed and that has not expired, or null. */
export function verifyRegistryToken(secret: string, token: string, now = Date.now()): RegistryClaims | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [header, payload, signature] = parts as [string, string, string];
  const expected = createHmac('sha256', secret).update(`${header}.${payload}`).digest();
  const given = Buffer.from(signature, 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let claims: RegistryClaims;
  try {
    const head = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as { alg?: string };
    if (head.alg !== 'HS256') return null;
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as RegistryClaims;
  } catch {
    return null;
  }
  const seconds = Math.floor(now / 1000);
  if (claims.aud !== TOKEN_SERVICE || typeof claims.exp !== 'number' || claims.exp <= seconds || claims.nbf > seconds) return null;
  if (!Array.isArray(claims.access)) return null;
  return claims;
}

/** Parses `repository:acme/app:pull,push` scopes; other resource types and unknown actions are ignored. */
export function parseScopes(scopes: readonly string[]): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const scope of scopes) {
    for (const one of scope.split(' ')) {
      const first = one.indexOf(':');
      const last = one.lastIndexOf(':');
      if (first < 0 || last === first) continue;
      if (one.slice(0, first) !== 'repository') continue;
      const actions = one
        .slice(last + 1)
        .split(',')
        .map((a) => (a === '*' ? 'push' : a))
        .filter((a): a is RegistryAction => a === 'pull' || a === 'push');
      const expanded = actions.includes('push') && one.slice(last + 1).includes('*') ? ['pull', 'push'] : actions;
      if (expanded.length > 0) out.push({ type: 'repository', name: one.slice(first + 1, last), actions: [...new Set(expanded)] as RegistryAction[] });
    }
  }
  return out;
}

/** Whether `claims` grant `action` on `name`. */
export function tokenAllows(claims: Pick<RegistryClaims, 'access'>, name: string, action: RegistryAction): boolean {
  return claims.access.some((a) => a.type === 'repository' && a.name === name && a.actions.includes(action));
}

/** The `WWW-Authenticate` challenge that sends a client to the token endpoint. */
export function bearerChallenge(publicUrl: string, scope?: string, error?: string): string {
  return `Bearer realm="${publicUrl}/v2/token",service="${TOKEN_SERVICE}"${scope ? `,scope="${scope}"` : ''}${error ? `,error="${error}"` : ''}`;
}

import { hashToken, hasScope, type PrismaClient, prismaSql, repositoryAllowed, type Sql, tokenRevocations } from '@strata/db';
import { RegistryError } from './errors.js';
import { splitName } from './path.js';
import {
  type AccessEntry,
  bearerChallenge,
  parseScopes,
  type RegistryAction,
  type RegistryClaims,
  signRegistryToken,
  TOKEN_TTL_SECONDS,
  tokenAllows,
  verifyRegistryToken,
} from './token.js';

/** Who is calling the registry. Anonymous callers reach public repositories' pulls only. */
export type RegistryCaller =
  | { kind: 'tenant'; tenantId: string; tenantName: string; tokenId: string; scopes: string[]; repositories: string[] }
  | { kind: 'bearer'; tenantId: string | null; tenantName: string | null; tokenId: string; access: AccessEntry[] }
  | { kind: 'anonymous' };

/**
 * How long a bearer token's API token is taken to be still valid after the database said so: its
 * revocation (or expiry) is honoured within this bound on every replica, at once on the replica
 * that revoked it (ADR 0034). Before, a bearer token lived its whole TTL (300 s) whatever happened.
 */
export const REVOCATION_CHECK_MS = 5_000;
/** Entries kept by each of the two caches below (cleared whole when full: they refill in one request each). */
const MAX_CACHED = 4096;

/** The API token scope each registry action needs (`admin` grants both). */
const SCOPE_FOR: Record<RegistryAction, string> = { pull: 'registry:pull', push: 'registry:push' };

/** Thrown with the challenge a 401 must carry. */
export class RegistryAuthError extends RegistryError {
  constructor(
    message: string,
    readonly challenge: string,
  ) {
    super('UNAUTHORIZED', message);
  }
}

/**
 * Registry authentication and authorisation: API tokens by HTTP basic auth, Strata-signed bearer
 * tokens from `/v2/token`, and anonymous pulls of public repositories. A tenant only ever gets
 * actions on names under its own tenant name.
 */
export class RegistryAccess {
  /** Bearer tokens whose signature was checked, with their claims (time is checked on every use). */
  private readonly verified = new Map<string, RegistryClaims>();
  /** API token id → whether it was live when last asked, and when that was. */
  private readonly apiTokenState = new Map<string, { live: boolean; checkedAt: number }>();
  private readonly sql: Sql;
  private readonly stopListening: () => void;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly secret: string,
    /** Read per request: the URL can be known only once the server listens (tests on port 0). */
    private readonly publicUrlOf: string | (() => string),
    opts: { sql?: Sql; revocationCheckMs?: number } = {},
  ) {
    this.sql = opts.sql ?? prismaSql(prisma);
    this.revocationCheckMs = opts.revocationCheckMs ?? REVOCATION_CHECK_MS;
    this.stopListening = tokenRevocations.listen((id) => this.apiTokenState.delete(id));
  }

  private readonly revocationCheckMs: number;

  /** Stops listening for revocations (Nest calls it at the api's shutdown). */
  onModuleDestroy(): void {
    this.stopListening();
  }

  /**
   * The claims of a bearer token: its HMAC is checked once per token, its times on every use
   * (verifyRegistryToken is a pure function of the token, the secret and the clock).
   */
  private bearerClaims(token: string, now: number): RegistryClaims | null {
    let claims = this.verified.get(token);
    if (claims === undefined) {
      claims = verifyRegistryToken(this.secret, token, now) ?? undefined;
      if (claims === undefined) return null;
      if (this.verified.size >= MAX_CACHED) this.verified.clear();
      this.verified.set(token, claims);
    }
    const seconds = Math.floor(now / 1000);
    if (claims.exp <= seconds || claims.nbf > seconds) {
      this.verified.delete(token);
      return null;
    }
    return claims;
  }

  /** Whether the API token `id` is neither revoked nor expired, asking the database at most every revocationCheckMs. */
  private async apiTokenLive(id: string, now: number): Promise<boolean> {
    const known = this.apiTokenState.get(id);
    if (known !== undefined && now - known.checkedAt < this.revocationCheckMs) return known.live;
    const rows = /^[0-9a-f-]{36}$/i.test(id)
      ? await this.sql.query<{ live: boolean }>(
          `SELECT ("revokedAt" IS NULL AND ("expiresAt" IS NULL OR "expiresAt" > now())) AS "live" FROM "ApiToken" WHERE "id" = $1::uuid`,
          [id],
        )
      : [];
    const live = rows[0]?.live === true;
    if (this.apiTokenState.size >= MAX_CACHED) this.apiTokenState.clear();
    this.apiTokenState.set(id, { live, checkedAt: now });
    return live;
  }

  private get publicUrl(): string {
    return typeof this.publicUrlOf === 'string' ? this.publicUrlOf : this.publicUrlOf();
  }

  /** Reads the Authorization header; a wrong credential is refused here, a missing one is anonymous. */
  async identify(authorization: string | undefined, now = Date.now()): Promise<RegistryCaller> {
    if (!authorization) return { kind: 'anonymous' };
    const bearer = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (bearer) {
      const claims = this.bearerClaims(bearer[1]!, now);
      if (claims) {
        // A tenant's bearer token stands for an API token: revoked or expired, it is refused too.
        if (claims.tenantId !== null && !(await this.apiTokenLive(claims.sub, now))) {
          throw new RegistryAuthError('the API token this bearer token was issued for is revoked or expired', bearerChallenge(this.publicUrl, undefined, 'invalid_token'));
        }
        return { kind: 'bearer', tenantId: claims.tenantId, tenantName: claims.tenantName, tokenId: claims.sub, access: claims.access };
      }
      // A Strata API token sent as a bearer token works like basic auth.
      const caller = await this.apiToken(bearer[1]!);
      if (caller) return caller;
      throw new RegistryAuthError('the bearer token is invalid or has expired', bearerChallenge(this.publicUrl, undefined, 'invalid_token'));
    }
    const basic = /^Basic\s+(\S+)$/i.exec(authorization);
    if (basic) {
      const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      const caller = colon < 0 ? null : await this.apiToken(decoded.slice(colon + 1));
      if (caller) return caller;
      throw new RegistryAuthError('the password is not a valid Strata API token', bearerChallenge(this.publicUrl));
    }
    throw new RegistryAuthError('the Authorization header must be "Basic" or "Bearer"', bearerChallenge(this.publicUrl));
  }

  private async apiToken(secret: string): Promise<RegistryCaller | null> {
    // One prepared statement (every /v2/token request and Basic-auth request comes here; through
    // Prisma its query compiler cost more CPU than the rest of the request).
    const rows = await this.sql.query<{ id: string; tenantId: string; tenantName: string; scopes: string[] | null; repositories: string[] | null; live: boolean }>(
      `SELECT k."id"::text AS "id", k."tenantId"::text AS "tenantId", t."name" AS "tenantName", k."scopes", k."repositories",
        (k."revokedAt" IS NULL AND (k."expiresAt" IS NULL OR k."expiresAt" > now())) AS "live"
      FROM "ApiToken" k JOIN "Tenant" t ON t."id" = k."tenantId" WHERE k."tokenHash" = $1::text`,
      [hashToken(secret)],
    );
    const token = rows[0];
    if (!token || !token.live) return null;
    return { kind: 'tenant', tenantId: token.tenantId, tenantName: token.tenantName, tokenId: token.id, scopes: token.scopes ?? [], repositories: token.repositories ?? [] };
  }

  /** The subset of `wanted` that `caller` may do on `name`. */
  async grant(caller: RegistryCaller, name: string, wanted: readonly RegistryAction[]): Promise<RegistryAction[]> {
    const parts = splitName(name);
    if (parts === null) return [];
    if (caller.kind === 'bearer') return wanted.filter((a) => tokenAllows(caller, name, a));
    const granted: RegistryAction[] = [];
    for (const action of wanted) {
      if (caller.kind === 'tenant' && caller.tenantName === parts.tenantName) {
        // A token grants an action only with its scope, and only on the repositories its patterns name.
        if (hasScope(caller.scopes, SCOPE_FOR[action]) && repositoryAllowed(caller.repositories, parts.repository)) granted.push(action);
      } else if (action === 'pull' && (await this.isPublic(parts.tenantName, parts.repository))) {
        granted.push(action);
      }
    }
    return granted;
  }

  private async isPublic(tenantName: string, repository: string): Promise<boolean> {
    const repo = await this.prisma.repository.findFirst({ where: { name: repository, public: true, tenant: { name: tenantName } }, select: { id: true } });
    return repo !== null;
  }

  /**
   * Allows `action` on `name` or throws the spec's error: 401 with a challenge when different
   * credentials could help (none given, or a token issued for other scopes), 403 DENIED otherwise.
   */
  async authorize(caller: RegistryCaller, name: string, action: RegistryAction): Promise<void> {
    const scope = `repository:${name}:${action === 'push' ? 'pull,push' : 'pull'}`;
    if ((await this.grant(caller, name, [action])).length > 0) return;
    const ownName = caller.kind !== 'anonymous' && caller.tenantName !== null && splitName(name)?.tenantName === caller.tenantName;
    if (caller.kind === 'anonymous') throw new RegistryAuthError('authentication required', bearerChallenge(this.publicUrl, scope));
    if (caller.kind === 'bearer' && ownName) {
      throw new RegistryAuthError(`the token does not grant ${action} on ${name}`, bearerChallenge(this.publicUrl, scope, 'insufficient_scope'));
    }
    if (ownName && caller.kind === 'tenant' && hasScope(caller.scopes, SCOPE_FOR[action])) {
      throw new RegistryError('DENIED', `the API token is limited to repositories ${caller.repositories.join(', ')}`, { name, action });
    }
    throw new RegistryError('DENIED', ownName ? `the API token lacks the "${SCOPE_FOR[action]}" scope` : `access to ${name} is denied`, { name, action });
  }

  /** The tenant whose catalog the caller may list, or an error. */
  catalogTenant(caller: RegistryCaller): { tenantId: string; tenantName: string } {
    if (caller.kind === 'tenant' && hasScope(caller.scopes, 'registry:pull')) return caller;
    if (caller.kind === 'bearer' && caller.tenantId !== null && caller.tenantName !== null) return { tenantId: caller.tenantId, tenantName: caller.tenantName };
    if (caller.kind === 'tenant') throw new RegistryError('DENIED', 'the API token lacks the "registry:pull" scope');
    throw new RegistryAuthError('authentication required', bearerChallenge(this.publicUrl, 'registry:catalog:*'));
  }

  /** The token endpoint: a short-lived bearer token limited to what the caller may do of what it asked. */
  async issueToken(caller: RegistryCaller, scopes: readonly string[], now = Date.now()) {
    if (caller.kind === 'bearer') throw new RegistryAuthError('the token endpoint takes HTTP basic auth with a Strata API token', bearerChallenge(this.publicUrl));
    const access: AccessEntry[] = [];
    for (const wanted of parseScopes(scopes)) {
      const actions = await this.grant(caller, wanted.name, wanted.actions);
      if (actions.length > 0) access.push({ type: 'repository', name: wanted.name, actions });
    }
    const tenant = caller.kind === 'tenant' ? caller : null;
    const { token } = signRegistryToken(
      this.secret,
      { sub: tenant?.tokenId ?? 'anonymous', tenantId: tenant?.tenantId ?? null, tenantName: tenant?.tenantName ?? null, access },
      now,
    );
    return { token, access_token: token, expires_in: TOKEN_TTL_SECONDS, issued_at: new Date(now).toISOString() };
  }
}

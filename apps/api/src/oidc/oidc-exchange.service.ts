import { BadRequestException, Inject, Injectable } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { hashToken, newTokenSecret, PrismaService } from '@strata/db';
import { randomUUID } from 'node:crypto';
import { decodeJwt, errors, type JWTPayload } from 'jose';
import { IssuerKeys, egressFetchJson, OidcError } from './issuer-keys.js';
import { claimsMatch, issuerKey, mostSpecific } from './trust-policy.js';

/** Clocks of a CI and of Strata may differ by this much (exp, nbf, iat). */
export const CLOCK_SKEW_SECONDS = 30;
/** Asymmetric algorithms only: GitHub and GitLab sign with RS256; a shared-secret HS256 token can never be an issuer's. */
const ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'];
const MAX_JWT_CHARS = 16 * 1024;
/** Exchanged tokens past their expiry are forgotten at most this often per api process. */
const SWEEP_EVERY_MS = 60_000;

export interface Exchanged {
  token: string;
  id: string;
  tenant: string;
  scopes: string[];
  repositories: string[];
  expiresAt: string;
}

/**
 * POST /v1/auth/oidc: a CI's OIDC token (a JWT) for a short-lived Strata token (docs/adr/0021).
 * The JWT is verified with the issuer's published keys; its iss, aud, exp, nbf and iat are checked;
 * a tenant's trust policy must match its claims; and its jti is recorded so it is exchanged once.
 * Refusals say what failed about the token, never which tenants trust what.
 */
@Injectable()
export class OidcExchangeService {
  private readonly keys: IssuerKeys;
  private lastSweep = 0;

  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) config: StrataConfig,
  ) {
    this.keys = new IssuerKeys(egressFetchJson(config.allowPrivateSources));
  }

  async exchange(body: Record<string, unknown>, sourceIp: string | null): Promise<Exchanged> {
    const { token, tenant } = body;
    for (const key of Object.keys(body)) if (key !== 'token' && key !== 'tenant') throw new BadRequestException(`Unknown field "${key}": send { "token": "<the CI's OIDC token>" } and, optionally, "tenant".`);
    if (typeof token !== 'string' || token === '' || token.length > MAX_JWT_CHARS) throw new BadRequestException(`Field "token" must be the CI's OIDC token (a JWT of at most ${MAX_JWT_CHARS} characters).`);
    if (tenant !== undefined && typeof tenant !== 'string') throw new BadRequestException('Field "tenant" must be a tenant name.');

    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw new OidcError(401, 'malformed', 'The token is not a JWT: expected three base64url parts with a JSON payload.');
    }
    if (typeof unverified.iss !== 'string') throw new OidcError(401, 'malformed', 'The token has no "iss" (issuer) claim.');
    const issuer = issuerKey(unverified.iss);
    const policies = await this.prisma.oidcTrustPolicy.findMany({ where: { issuer }, include: { tenant: { select: { name: true } } } });
    if (policies.length === 0) throw new OidcError(401, 'unknown-issuer', `No trust policy names the issuer "${issuer}": tokens it issues are not exchanged here.`);

    const audiences = [...new Set(policies.map((p) => p.audience))];
    let payload: JWTPayload;
    try {
      ({ payload } = await this.keys.verify(issuer, token, {
        issuer: unverified.iss,
        audience: audiences,
        clockTolerance: CLOCK_SKEW_SECONDS,
        algorithms: ALGORITHMS,
        requiredClaims: ['exp', 'iat', 'jti', 'sub'],
      }));
    } catch (e) {
      throw refusal(e, unverified);
    }
    const now = Date.now();
    if (payload.iat! > now / 1000 + CLOCK_SKEW_SECONDS) throw new OidcError(401, 'issued-in-future', `The token was issued in the future (${isoOf(payload.iat!)}); check the clocks.`);

    const tokenAudiences = typeof payload.aud === 'string' ? [payload.aud] : (payload.aud ?? []);
    const matching = policies.filter(
      (p) => tokenAudiences.includes(p.audience) && claimsMatch(p.claims as Record<string, string>, payload) && (tenant === undefined || p.tenant.name === tenant),
    );
    if (matching.length === 0) {
      throw new OidcError(403, 'no-policy-matched', `No trust policy matches this token's claims (sub "${String(payload.sub).slice(0, 200)}")${tenant === undefined ? '' : ` for tenant "${tenant}"`}.`);
    }
    if (new Set(matching.map((p) => p.tenantId)).size > 1) {
      throw new OidcError(403, 'ambiguous-tenant', 'Trust policies of more than one tenant match this token; send "tenant" to name the one to sign in to.');
    }
    const policy = mostSpecific(matching.map((p) => ({ ...p, claims: p.claims as Record<string, string> })))!;

    // The jti is kept until the token expires (and a clock's skew after): a second exchange of it is refused.
    this.sweep(now);
    const jti = String(payload.jti);
    const seen = await this.prisma.$executeRaw`
      INSERT INTO "OidcSeenToken" ("issuer", "jti", "expiresAt") VALUES (${issuer}, ${jti}, ${new Date((payload.exp! + CLOCK_SKEW_SECONDS) * 1000)})
      ON CONFLICT DO NOTHING`;
    if (seen === 0) throw new OidcError(401, 'replayed', `This token (jti "${jti.slice(0, 200)}") was exchanged before; a CI's token is good for one exchange.`);

    const secret = newTokenSecret('oidc');
    const subject = String(payload.sub);
    const expiresAt = new Date(now + policy.ttlSeconds * 1000);
    const id = randomUUID();
    // The token and its audit entry are written together: no token exists that the log does not show.
    await this.prisma.$transaction([
      this.prisma.apiToken.create({
        data: {
          id,
          tenantId: policy.tenantId,
          name: `oidc ${subject}`.slice(0, 100),
          tokenHash: hashToken(secret),
          scopes: policy.scopes,
          repositories: policy.repositories,
          expiresAt,
          oidcSubject: subject,
        },
      }),
      this.prisma.auditEvent.create({
      data: {
        tenantId: policy.tenantId,
        actor: `oidc:${subject}`,
        action: 'oidc.exchange',
        target: id,
        sourceIp,
        data: {
          issuer,
          policyId: policy.id,
          jti,
          scopes: policy.scopes,
          repositories: policy.repositories,
          expiresAt: expiresAt.toISOString(),
          claims: Object.fromEntries(Object.keys(policy.claims).map((c) => [c, String(payload[c])])),
        },
      },
      }),
    ]);
    return { token: secret, id, tenant: policy.tenant.name, scopes: policy.scopes, repositories: policy.repositories, expiresAt: expiresAt.toISOString() };
  }

  private sweep(now: number): void {
    if (now - this.lastSweep < SWEEP_EVERY_MS) return;
    this.lastSweep = now;
    void this.prisma.oidcSeenToken.deleteMany({ where: { expiresAt: { lt: new Date(now) } } }).catch(() => undefined);
  }
}

const isoOf = (seconds: number) => new Date(seconds * 1000).toISOString();

/** jose's errors as the exchange's refusals: what failed about the token, in one sentence. */
function refusal(e: unknown, unverified: JWTPayload): Error {
  if (e instanceof OidcError) return e;
  if (e instanceof errors.JWTExpired) return new OidcError(401, 'expired', `The token expired at ${typeof unverified.exp === 'number' ? isoOf(unverified.exp) : 'an unknown time'}.`);
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.reason === 'missing') return new OidcError(401, 'missing-claim', `The token has no "${e.claim}" claim.`);
    if (e.claim === 'aud') return new OidcError(401, 'wrong-audience', `The token's audience ${JSON.stringify(unverified.aud)} is not one a trust policy for this issuer accepts.`);
    if (e.claim === 'nbf') return new OidcError(401, 'not-yet-valid', `The token is not valid before ${typeof unverified.nbf === 'number' ? isoOf(unverified.nbf) : 'its "nbf"'}.`);
    if (e.claim === 'iat') return new OidcError(401, 'issued-in-future', 'The token\'s "iat" (issued at) is not a time in the past.');
    return new OidcError(401, 'invalid-claim', `The token's "${e.claim}" claim is not valid: ${e.message}.`);
  }
  if (e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWKSMultipleMatchingKeys) {
    return new OidcError(401, 'unknown-key', "The token is signed with a key the issuer does not publish in its JWKS.");
  }
  if (e instanceof errors.JWSSignatureVerificationFailed) return new OidcError(401, 'bad-signature', "The token's signature does not verify with the issuer's key.");
  if (e instanceof errors.JOSEAlgNotAllowed) return new OidcError(401, 'bad-algorithm', `The token's signing algorithm is not accepted; use one of ${ALGORITHMS.join(', ')}.`);
  if (e instanceof errors.JOSEError) return new OidcError(401, 'malformed', `The token cannot be verified: ${e.message}.`);
  return e as Error;
}

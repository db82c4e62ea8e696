import { EgressPolicy } from '@strata/egress';
import { createLocalJWKSet, errors, type JSONWebKeySet, jwtVerify, type JWTVerifyOptions, type JWTVerifyResult } from 'jose';
import { isIP } from 'node:net';
import { issuerKey } from './trust-policy.js';

/** Why an exchange failed: the status, a short machine-readable reason and one sentence. */
export class OidcError extends Error {
  constructor(
    readonly status: 401 | 403 | 502,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** GETs a JSON document; the api's is libs/egress, so a tenant's issuer URL cannot reach private addresses. */
export type FetchJson = (url: string) => Promise<unknown>;

interface KeySet {
  verifyWith: ReturnType<typeof createLocalJWKSet>;
  fetchedAt: number;
}

/** How long a fetched JWKS is used before it is fetched again. */
const MAX_AGE_MS = 10 * 60_000;
/** A token naming an unknown key refetches the JWKS at most this often per issuer: forged key ids cannot make the api hammer an issuer. */
const UNKNOWN_KID_REFETCH_MS = 1000;

/**
 * An issuer's signing keys, found by OIDC discovery (`<issuer>/.well-known/openid-configuration`
 * → `jwks_uri`) and cached per api process for ten minutes. A token signed with a key id the
 * cached set lacks refetches it once (at most once a second per issuer), which is how a rotated
 * key is picked up without waiting for the cache to age.
 */
export class IssuerKeys {
  private readonly sets = new Map<string, KeySet>();
  private readonly inflight = new Map<string, Promise<KeySet>>();
  private readonly lastUnknownKidRefetch = new Map<string, number>();

  constructor(
    private readonly fetchJson: FetchJson,
    private readonly now: () => number = Date.now,
  ) {}

  /** Verifies `token`'s signature with `issuer`'s keys, and its claims as `options` say. */
  async verify(issuer: string, token: string, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
    let set = await this.keySet(issuer, false);
    try {
      return await jwtVerify(token, set.verifyWith, options);
    } catch (e) {
      if (!(e instanceof errors.JWKSNoMatchingKey)) throw e;
      const last = this.lastUnknownKidRefetch.get(issuer) ?? 0;
      if (this.now() - last < UNKNOWN_KID_REFETCH_MS) throw e;
      this.lastUnknownKidRefetch.set(issuer, this.now());
      set = await this.keySet(issuer, true);
      return await jwtVerify(token, set.verifyWith, options);
    }
  }

  private keySet(issuer: string, refresh: boolean): Promise<KeySet> {
    const cached = this.sets.get(issuer);
    if (!refresh && cached && this.now() - cached.fetchedAt < MAX_AGE_MS) return Promise.resolve(cached);
    const running = this.inflight.get(issuer);
    if (running) return running;
    const loading = this.load(issuer)
      .then((set) => {
        this.sets.set(issuer, set);
        return set;
      })
      .finally(() => this.inflight.delete(issuer));
    this.inflight.set(issuer, loading);
    return loading;
  }

  private async load(issuer: string): Promise<KeySet> {
    const discoveryUrl = `${issuer}/.well-known/openid-configuration`;
    const discovery = await this.fetchJson(discoveryUrl);
    const doc = discovery as { issuer?: unknown; jwks_uri?: unknown };
    if (!doc || typeof doc !== 'object' || typeof doc.issuer !== 'string' || typeof doc.jwks_uri !== 'string') {
      throw new OidcError(502, 'issuer-unavailable', `The issuer's discovery document at ${discoveryUrl} has no "issuer" and "jwks_uri".`);
    }
    // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
    if (issuerKey(doc.issuer) !== issuer) {
      throw new OidcError(502, 'issuer-unavailable', `The discovery document at ${discoveryUrl} names issuer "${doc.issuer}", not "${issuer}".`);
    }
    const jwksUrl = doc.jwks_uri;
    const u = URL.canParse(jwksUrl) ? new URL(jwksUrl) : null;
    const loopbackHttp = u?.protocol === 'http:' && new URL(issuer).protocol === 'http:' && isLoopback(u.hostname);
    if (!u || (u.protocol !== 'https:' && !loopbackHttp)) {
      throw new OidcError(502, 'issuer-unavailable', `The issuer's jwks_uri ${JSON.stringify(jwksUrl.slice(0, 200))} is not an https URL.`);
    }
    const jwks = (await this.fetchJson(jwksUrl)) as JSONWebKeySet;
    if (!jwks || typeof jwks !== 'object' || !Array.isArray(jwks.keys)) {
      throw new OidcError(502, 'issuer-unavailable', `The issuer's JWKS at ${jwksUrl} has no "keys" list.`);
    }
    return { verifyWith: createLocalJWKSet(jwks), fetchedAt: this.now() };
  }
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1');
  return (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
}

/** GETs JSON through the egress policy: no private address unless the operator allows it, 512 KiB at most, 10 s at most. */
export function egressFetchJson(allowPrivateSources: readonly string[]): FetchJson {
  const policy = new EgressPolicy(allowPrivateSources);
  return async (url) => {
    let res;
    try {
      res = await policy.get(url, { headers: { accept: 'application/json' }, maxBytes: 512 * 1024, timeoutMs: 10_000 });
    } catch (e) {
      throw new OidcError(502, 'issuer-unavailable', `The issuer could not be reached at ${url}: ${(e as Error).message}.`);
    }
    if (res.status !== 200) throw new OidcError(502, 'issuer-unavailable', `The issuer answered ${res.status} for ${url}.`);
    try {
      return JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new OidcError(502, 'issuer-unavailable', `The issuer's answer for ${url} is not JSON.`);
    }
  };
}

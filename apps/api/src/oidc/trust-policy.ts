import { ALL_SCOPES, isScope, REPOSITORY_PATTERN } from '@strata/db';
import { EgressPolicy } from '@strata/egress';
import { isIP } from 'node:net';

/** A CI's token is exchanged for at most this long (12 hours), by default for one hour. */
export const MAX_TTL_SECONDS = 12 * 60 * 60;
export const DEFAULT_TTL_SECONDS = 60 * 60;
const MAX_CLAIMS = 20;
const CLAIM_NAME = /^[A-Za-z_][A-Za-z0-9_.:-]{0,99}$/;
const CLAIM_VALUE_MAX = 500;

/** A trust policy as POST /v1/oidc/trust-policies takes it, checked. */
export interface TrustPolicyInput {
  issuer: string;
  audience: string;
  /** Claim name → an exact value, or a prefix ending in `*` (`refs/heads/*`). */
  claims: Record<string, string>;
  scopes: string[];
  repositories: string[];
  ttlSeconds: number;
}

export class PolicyInputError extends Error {}

/**
 * The issuer as stored and compared with a token's `iss`: an https URL without query or fragment,
 * and without a trailing slash. Plain http is accepted only for a loopback address literal that
 * the operator lets tenant-given URLs reach (STRATA_ALLOW_PRIVATE_SOURCES), which is what tests use:
 * a real CI's issuer is always https.
 */
export function normalizeIssuer(value: unknown, allowPrivateSources: readonly string[]): string {
  if (typeof value !== 'string' || value.length > 500) throw new PolicyInputError('Field "issuer" must be the issuer URL, like "https://token.actions.githubusercontent.com".');
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new PolicyInputError(`Field "issuer" is not a URL: ${JSON.stringify(value.slice(0, 100))}.`);
  }
  if (u.search || u.hash || u.username || u.password) throw new PolicyInputError('Field "issuer" must have no query, fragment or credentials.');
  if (u.protocol === 'http:') {
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    const loopback = (isIP(host) === 4 && host.startsWith('127.')) || host === '::1';
    if (!loopback || new EgressPolicy(allowPrivateSources).refusal(host) !== null) {
      throw new PolicyInputError('Field "issuer" must be an https URL (plain http is accepted only for a loopback address the operator allows, for tests).');
    }
  } else if (u.protocol !== 'https:') {
    throw new PolicyInputError('Field "issuer" must be an https URL.');
  }
  return issuerKey(u.toString());
}

/** An issuer compared without its trailing slash (`https://gitlab.com/` and a token's `https://gitlab.com` are one). */
export function issuerKey(iss: string): string {
  return iss.replace(/\/+$/, '');
}

export function parseTrustPolicy(body: Record<string, unknown>, allowPrivateSources: readonly string[]): TrustPolicyInput {
  for (const key of Object.keys(body)) {
    if (!['issuer', 'audience', 'claims', 'scopes', 'repositories', 'ttlSeconds'].includes(key)) {
      throw new PolicyInputError(`Unknown field "${key}": a trust policy has issuer, audience, claims, scopes, repositories and ttlSeconds.`);
    }
  }
  const issuer = normalizeIssuer(body.issuer, allowPrivateSources);
  const { audience, claims, scopes, repositories = [], ttlSeconds = DEFAULT_TTL_SECONDS } = body;
  if (typeof audience !== 'string' || audience === '' || audience.length > 500) {
    throw new PolicyInputError('Field "audience" must be the audience the CI puts in its tokens, like "strata" or your server\'s URL.');
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new PolicyInputError('Field "claims" must be an object of claim names and values, like {"repository": "acme/app", "ref": "refs/heads/main"}.');
  }
  const entries = Object.entries(claims as Record<string, unknown>);
  if (entries.length === 0 || entries.length > MAX_CLAIMS) throw new PolicyInputError(`Field "claims" must hold 1 to ${MAX_CLAIMS} claims.`);
  for (const [name, v] of entries) {
    if (!CLAIM_NAME.test(name)) throw new PolicyInputError(`Claim name ${JSON.stringify(name)} is not valid: use letters, digits, "_", ".", ":" or "-".`);
    if (['iss', 'aud', 'exp', 'nbf', 'iat', 'jti'].includes(name)) throw new PolicyInputError(`Claim "${name}" is checked by the exchange itself; it cannot be a condition.`);
    if (typeof v !== 'string' || v === '' || v.length > CLAIM_VALUE_MAX) throw new PolicyInputError(`Claim "${name}" must be a non-empty string of at most ${CLAIM_VALUE_MAX} characters.`);
    if (v.slice(0, -1).includes('*')) throw new PolicyInputError(`Claim "${name}": "*" may only end a value (a prefix, like "refs/heads/*").`);
  }
  // A policy of prefixes only (or "*") would trust every workflow of every user of a public CI.
  if (!entries.some(([, v]) => !(v as string).endsWith('*'))) {
    throw new PolicyInputError('Field "claims" must hold at least one exact value (no "*"), such as repository_owner_id or project_id, so the policy trusts one owner\'s pipelines, not every CI user\'s.');
  }
  if (!Array.isArray(scopes) || scopes.length === 0) throw new PolicyInputError(`Field "scopes" must be a non-empty list of: ${ALL_SCOPES.join(', ')}.`);
  for (const s of scopes) if (typeof s !== 'string' || !isScope(s)) throw new PolicyInputError(`Unknown scope ${JSON.stringify(s)}: use ${ALL_SCOPES.join(', ')}.`);
  if (!Array.isArray(repositories)) throw new PolicyInputError('Field "repositories" must be a list of repository name patterns, like ["team-a/*"].');
  for (const p of repositories) {
    if (typeof p !== 'string' || !REPOSITORY_PATTERN.test(p)) throw new PolicyInputError(`Invalid repository pattern ${JSON.stringify(p)}: give a repository name, or a prefix ending in "*" like "team-a/*".`);
  }
  if (!Number.isSafeInteger(ttlSeconds) || (ttlSeconds as number) < 60 || (ttlSeconds as number) > MAX_TTL_SECONDS) {
    throw new PolicyInputError(`Field "ttlSeconds" must be a whole number from 60 to ${MAX_TTL_SECONDS}.`);
  }
  return {
    issuer,
    audience,
    claims: Object.fromEntries(entries) as Record<string, string>,
    scopes: [...new Set(scopes as string[])],
    repositories: [...new Set(repositories as string[])],
    ttlSeconds: ttlSeconds as number,
  };
}

/**
 * Whether a verified token's claims meet every condition: the claim must be present and equal the
 * value, or start with its text before a final `*`. Numbers and booleans compare as their JSON text
 * (GitLab sends some ids as strings, other issuers as numbers); objects and arrays never match.
 */
export function claimsMatch(conditions: Record<string, string>, payload: Record<string, unknown>): boolean {
  return Object.entries(conditions).every(([name, want]) => {
    const got = payload[name];
    const text = typeof got === 'string' ? got : typeof got === 'number' || typeof got === 'boolean' ? String(got) : null;
    if (text === null) return false;
    return want.endsWith('*') ? text.startsWith(want.slice(0, -1)) : text === want;
  });
}

/** Of several matching policies, the one with the most conditions (the most specific); the oldest on a tie. */
export function mostSpecific<T extends { claims: Record<string, string>; createdAt: Date }>(policies: T[]): T | undefined {
  return [...policies].sort((a, b) => Object.keys(b.claims).length - Object.keys(a.claims).length || a.createdAt.getTime() - b.createdAt.getTime())[0];
}

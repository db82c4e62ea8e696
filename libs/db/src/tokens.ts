import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import type { PrismaClient } from './generated/client.js';

/**
 * Token secrets: `<prefix>_<30 random base62 chars><6 base62 chars of CRC32 of the random part>`,
 * as GitHub's `ghp_` tokens are, so a secret scanner can spot a Strata token and check its checksum
 * without asking the server (docs/adr/0015). Only the sha256 of a secret is stored.
 */
export const TOKEN_PREFIXES = {
  /** A tenant's API token (POST /v1/tokens, or a tenant's first admin token). */
  tenant: 'strata_pat',
  /** The operator's token (admin API only). */
  operator: 'strata_op',
  /** A short-lived token exchanged for a CI's OIDC token. */
  oidc: 'strata_oidc',
} as const;
export type TokenKind = keyof typeof TOKEN_PREFIXES;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const RANDOM_CHARS = 30;
const CHECKSUM_CHARS = 6;

function base62(n: number, width: number): string {
  let out = '';
  for (let v = n; v > 0; v = Math.floor(v / 62)) out = BASE62[v % 62] + out;
  return out.padStart(width, '0');
}

function randomBase62(length: number): string {
  let out = '';
  // Rejection sampling keeps every character equally likely (256 is not a multiple of 62).
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      if (byte < 248 && out.length < length) out += BASE62[byte % 62];
    }
  }
  return out;
}

export function newTokenSecret(kind: TokenKind = 'tenant'): string {
  const body = randomBase62(RANDOM_CHARS);
  return `${TOKEN_PREFIXES[kind]}_${body}${base62(zlib.crc32(body), CHECKSUM_CHARS)}`;
}

/** Whether `secret` has the shape and checksum of a Strata token (what a secret scanner checks). */
export function isWellFormedToken(secret: string): boolean {
  const m = /^strata_(?:pat|op|oidc)_([0-9A-Za-z]{30})([0-9A-Za-z]{6})$/.exec(secret);
  return m !== null && base62(zlib.crc32(m[1]!), CHECKSUM_CHARS) === m[2];
}

export function hashToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** What a token may do. `admin` holds every other scope. */
export const ALL_SCOPES = ['builds:read', 'builds:write', 'registry:pull', 'registry:push', 'triggers:admin', 'tokens:admin', 'admin'] as const;
export type Scope = (typeof ALL_SCOPES)[number];

export function isScope(value: string): value is Scope {
  return (ALL_SCOPES as readonly string[]).includes(value);
}

export function hasScope(granted: readonly string[], needed: string): boolean {
  return granted.includes(needed) || granted.includes('admin');
}

/** A repository name pattern: a name, or a prefix ending in `*` (`team-a/*`). No other wildcard, so matching stays linear. */
export const REPOSITORY_PATTERN = /^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?:\/\*|\*)?$|^\*$/;

/** Whether a token limited to `patterns` (empty: all) may touch repository `name`. */
export function repositoryAllowed(patterns: readonly string[], name: string): boolean {
  if (patterns.length === 0) return true;
  return patterns.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : name === p));
}

/** Creates a tenant (or finds it by name) and issues it a new token; returns the secret once. */
export async function createTenantWithToken(
  prisma: PrismaClient,
  tenantName: string,
  opts: { tokenName?: string; scopes?: readonly Scope[]; repositories?: readonly string[] } = {},
): Promise<{ tenantId: string; tokenId: string; token: string }> {
  const tenant = await prisma.tenant.upsert({ where: { name: tenantName }, update: {}, create: { name: tenantName } });
  const token = newTokenSecret();
  const row = await prisma.apiToken.create({
    data: {
      tenantId: tenant.id,
      name: opts.tokenName ?? 'admin',
      tokenHash: hashToken(token),
      scopes: [...(opts.scopes ?? ['admin'])],
      repositories: [...(opts.repositories ?? [])],
    },
  });
  return { tenantId: tenant.id, tokenId: row.id, token };
}

type RevocationListener = (tokenId: string) => void;
const revocationListeners = new Set<RevocationListener>();

/**
 * In-process notice that an API token was revoked, for what caches a token's validity (the
 * registry's bearer-token check, ADR 0034): this replica forgets it at once; other replicas
 * within their cache's bound.
 */
export const tokenRevocations = {
  notify(tokenId: string): void {
    for (const listener of revocationListeners) listener(tokenId);
  },
  /** Returns the function that stops listening. */
  listen(listener: RevocationListener): () => void {
    revocationListeners.add(listener);
    return () => revocationListeners.delete(listener);
  },
};

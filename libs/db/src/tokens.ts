import { createHash, randomBytes } from 'node:crypto';
import type { PrismaClient } from './generated/client.js';

/** API tokens are shown once; only their sha256 is stored. The prefix makes leaked tokens easy to spot. */
export function newTokenSecret(): string {
  return `strata_${randomBytes(24).toString('base64url')}`;
}

export function hashToken(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export const ALL_SCOPES = ['builds:read', 'builds:write', 'repositories:read', 'repositories:write', 'registry:pull', 'registry:push', 'admin'] as const;
export type Scope = (typeof ALL_SCOPES)[number];

/** Creates a tenant (or finds it by name) and issues it a new token; returns the secret once. */
export async function createTenantWithToken(
  prisma: PrismaClient,
  tenantName: string,
  opts: { tokenName?: string; scopes?: readonly Scope[] } = {},
): Promise<{ tenantId: string; token: string }> {
  const tenant = await prisma.tenant.upsert({ where: { name: tenantName }, update: {}, create: { name: tenantName } });
  const token = newTokenSecret();
  await prisma.apiToken.create({
    data: { tenantId: tenant.id, name: opts.tokenName ?? 'default', tokenHash: hashToken(token), scopes: [...(opts.scopes ?? ALL_SCOPES)] },
  });
  return { tenantId: tenant.id, token };
}

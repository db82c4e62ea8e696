import { BadRequestException, ConflictException, Injectable, NotFoundException } from '@nestjs/common';
import { ALL_SCOPES, createTenantWithToken, hashToken, isScope, newTokenSecret, type Prisma, PrismaService, REPOSITORY_PATTERN, type Tenant } from '@strata/db';
import type { Caller } from '../auth/tenant.js';
import { TokenRevocationRelay } from './token-revocations.js';

/** Tenant names are the first component of registry names (`<tenant>/<repository>`). */
const TENANT_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const TOKEN_NAME_MAX = 100;

export const QUOTA_FIELDS = ['maxConcurrentBuilds', 'maxQueuedBuilds', 'maxBuildMinutesPerMonth', 'maxStoredBytes', 'requestsPerMinute'] as const;
type QuotaField = (typeof QUOTA_FIELDS)[number];
export type Quotas = Record<QuotaField, number | null>;

export interface TokenView {
  id: string;
  name: string;
  scopes: string[];
  repositories: string[];
  expiresAt: string | null;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

export function quotasOf(tenant: Tenant): Quotas {
  return {
    maxConcurrentBuilds: tenant.maxConcurrentBuilds,
    maxQueuedBuilds: tenant.maxQueuedBuilds,
    maxBuildMinutesPerMonth: tenant.maxBuildMinutesPerMonth,
    maxStoredBytes: tenant.maxStoredBytes === null ? null : Number(tenant.maxStoredBytes),
    requestsPerMinute: tenant.requestsPerMinute,
  };
}

/** Whether pattern `p` only covers names that one of `limits` covers (a token cannot hand out more than it has). */
export function patternWithin(p: string, limits: readonly string[]): boolean {
  return limits.some((l) => (l.endsWith('*') ? p.startsWith(l.slice(0, -1)) : p === l));
}

/** Tenants (the operator's side) and their API tokens (the tenant's side). */
@Injectable()
export class TenancyService {
  constructor(
    private readonly prisma: PrismaService,
    private readonly revocations: TokenRevocationRelay,
  ) {}

  async createTenant(body: Record<string, unknown>): Promise<{ id: string; name: string; token: string }> {
    const name = body.name;
    if (typeof name !== 'string' || !TENANT_NAME.test(name)) {
      throw new BadRequestException('Field "name" must be 1 to 63 lowercase letters, digits or inner "-", like "team-a".');
    }
    if (await this.prisma.tenant.findUnique({ where: { name } })) throw new ConflictException(`A tenant named "${name}" already exists.`);
    const { tenantId, token } = await createTenantWithToken(this.prisma, name, { tokenName: 'admin', scopes: ['admin'] });
    return { id: tenantId, name, token };
  }

  async listTenants() {
    const tenants = await this.prisma.tenant.findMany({ orderBy: { name: 'asc' } });
    return { tenants: tenants.map((t) => ({ id: t.id, name: t.name, createdAt: t.createdAt.toISOString(), quotas: quotasOf(t) })) };
  }

  async setQuotas(name: string, body: Record<string, unknown>) {
    const data: Prisma.TenantUpdateInput = {};
    for (const [field, value] of Object.entries(body)) {
      if (!(QUOTA_FIELDS as readonly string[]).includes(field)) throw new BadRequestException(`Unknown field "${field}": quotas are ${QUOTA_FIELDS.join(', ')}.`);
      if (value !== null && !(Number.isSafeInteger(value) && (value as number) >= 0)) {
        throw new BadRequestException(`Field "${field}" must be a whole number of at least 0, or null for no limit.`);
      }
      if (field === 'maxStoredBytes') data.maxStoredBytes = value === null ? null : BigInt(value as number);
      else data[field as Exclude<QuotaField, 'maxStoredBytes'>] = value as number | null;
    }
    const tenant = await this.prisma.tenant.findUnique({ where: { name } });
    if (!tenant) throw new NotFoundException(`There is no tenant named "${name}".`);
    const updated = await this.prisma.tenant.update({ where: { id: tenant.id }, data });
    return { id: updated.id, name: updated.name, quotas: quotasOf(updated) };
  }

  async createToken(caller: Caller, body: Record<string, unknown>): Promise<TokenView & { token: string }> {
    const { name, scopes, repositories = [], expiresAt } = body;
    if (typeof name !== 'string' || name.trim() === '' || name.length > TOKEN_NAME_MAX) {
      throw new BadRequestException(`Field "name" must be a non-empty string of at most ${TOKEN_NAME_MAX} characters.`);
    }
    if (!Array.isArray(scopes) || scopes.length === 0) throw new BadRequestException(`Field "scopes" must be a non-empty list of: ${ALL_SCOPES.join(', ')}.`);
    for (const s of scopes) {
      if (typeof s !== 'string' || !isScope(s)) throw new BadRequestException(`Unknown scope ${JSON.stringify(s)}: use ${ALL_SCOPES.join(', ')}.`);
      if (!caller.scopes.includes('admin') && !caller.scopes.includes(s)) throw new BadRequestException(`Scope "${s}" is more than the calling token holds.`);
    }
    if (!Array.isArray(repositories)) throw new BadRequestException('Field "repositories" must be a list of repository name patterns, like ["team-a/*"].');
    for (const p of repositories) {
      if (typeof p !== 'string' || !REPOSITORY_PATTERN.test(p)) {
        throw new BadRequestException(`Invalid repository pattern ${JSON.stringify(p)}: give a repository name, or a prefix ending in "*" like "team-a/*".`);
      }
    }
    if (caller.repositories.length > 0) {
      const wider = repositories.length === 0 ? '(every repository)' : (repositories as string[]).find((p) => !patternWithin(p, caller.repositories));
      if (wider) throw new BadRequestException(`Repositories ${wider} are more than the calling token may touch (${caller.repositories.join(', ')}).`);
    }
    let expires: Date | null = null;
    if (expiresAt !== undefined && expiresAt !== null) {
      expires = typeof expiresAt === 'string' ? new Date(expiresAt) : new Date(NaN);
      if (Number.isNaN(expires.getTime())) throw new BadRequestException('Field "expiresAt" must be an ISO 8601 date-time, like "2027-01-31T00:00:00Z".');
      if (expires.getTime() <= Date.now()) throw new BadRequestException(`Field "expiresAt" is in the past (${expires.toISOString()}).`);
    }
    const token = newTokenSecret();
    const row = await this.prisma.apiToken.create({
      data: {
        tenantId: caller.tenantId,
        name: name.trim(),
        tokenHash: hashToken(token),
        scopes: [...new Set(scopes as string[])],
        repositories: [...new Set(repositories as string[])],
        expiresAt: expires,
      },
    });
    return { ...toTokenView(row), token };
  }

  async listTokens(tenantId: string): Promise<{ tokens: TokenView[] }> {
    const rows = await this.prisma.apiToken.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
    return { tokens: rows.map(toTokenView) };
  }

  /**
   * Revokes at once: the guard reads the token row on every request, so the next request is refused;
   * /v2 bearer tokens issued for it are refused at once on every replica that hears of it (ADR 0034),
   * within 5 s on one that does not.
   */
  async revokeToken(tenantId: string, id: string): Promise<TokenView> {
    const row = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.apiToken.findFirst({ where: { id, tenantId } }) : null;
    if (!row) throw new NotFoundException(`There is no token "${id}".`);
    const revoked = row.revokedAt ? row : await this.prisma.apiToken.update({ where: { id }, data: { revokedAt: new Date() } });
    // The registries' cached checks of bearer tokens issued for it forget it now, on every replica (ADR 0034).
    this.revocations.revoked(id);
    return toTokenView(revoked);
  }
}

function toTokenView(row: { id: string; name: string; scopes: string[]; repositories: string[]; expiresAt: Date | null; createdAt: Date; lastUsedAt: Date | null; revokedAt: Date | null }): TokenView {
  return {
    id: row.id,
    name: row.name,
    scopes: row.scopes,
    repositories: row.repositories,
    expiresAt: row.expiresAt?.toISOString() ?? null,
    createdAt: row.createdAt.toISOString(),
    lastUsedAt: row.lastUsedAt?.toISOString() ?? null,
    revokedAt: row.revokedAt?.toISOString() ?? null,
  };
}

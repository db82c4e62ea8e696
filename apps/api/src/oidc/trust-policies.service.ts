import { BadRequestException, Inject, Injectable, NotFoundException } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { type OidcTrustPolicy, PrismaService } from '@strata/db';
import type { Caller } from '../auth/tenant.js';
import { patternWithin } from '../tenancy/tenancy.service.js';
import { parseTrustPolicy, PolicyInputError, type TrustPolicyInput } from './trust-policy.js';

/** A stored policy as the API shows it: what was posted, checked, with its id and creation time. */
export interface TrustPolicyView extends TrustPolicyInput {
  id: string;
  createdAt: string;
}

/** A tenant's OIDC trust policies: which CI tokens it exchanges for Strata tokens, and for what. */
@Injectable()
export class TrustPoliciesService {
  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
  ) {}

  async create(caller: Caller, body: Record<string, unknown>): Promise<TrustPolicyView> {
    let input;
    try {
      input = parseTrustPolicy(body, this.config.allowPrivateSources);
    } catch (e) {
      if (e instanceof PolicyInputError) throw new BadRequestException(e.message);
      throw e;
    }
    // As with POST /v1/tokens: a policy hands out no more than the calling token holds.
    for (const s of input.scopes) {
      if (!caller.scopes.includes('admin') && !caller.scopes.includes(s)) throw new BadRequestException(`Scope "${s}" is more than the calling token holds.`);
    }
    if (caller.repositories.length > 0) {
      const wider = input.repositories.length === 0 ? '(every repository)' : input.repositories.find((p) => !patternWithin(p, caller.repositories));
      if (wider) throw new BadRequestException(`Repositories ${wider} are more than the calling token may touch (${caller.repositories.join(', ')}).`);
    }
    const row = await this.prisma.oidcTrustPolicy.create({ data: { tenantId: caller.tenantId, ...input } });
    return toView(row);
  }

  async list(tenantId: string): Promise<{ policies: TrustPolicyView[] }> {
    const rows = await this.prisma.oidcTrustPolicy.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
    return { policies: rows.map(toView) };
  }

  /** Deletes at once: the next exchange no longer finds it. Tokens it already issued live out their short life. */
  async remove(tenantId: string, id: string): Promise<TrustPolicyView> {
    const row = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.oidcTrustPolicy.findFirst({ where: { id, tenantId } }) : null;
    if (!row) throw new NotFoundException(`There is no trust policy "${id}".`);
    await this.prisma.oidcTrustPolicy.delete({ where: { id: row.id } });
    return toView(row);
  }
}

function toView(row: OidcTrustPolicy): TrustPolicyView {
  return {
    id: row.id,
    issuer: row.issuer,
    audience: row.audience,
    claims: row.claims as Record<string, string>,
    scopes: row.scopes,
    repositories: row.repositories,
    ttlSeconds: row.ttlSeconds,
    createdAt: row.createdAt.toISOString(),
  };
}

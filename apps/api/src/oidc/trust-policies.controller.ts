import { Controller, Delete, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { AuditLog } from '../audit/audit-log.js';
import { RequireScope } from '../auth/route-access.js';
import { type AuthedRequest, type Caller, CurrentCaller } from '../auth/tenant.js';
import { readJsonObject } from '../common/json-body.js';
import { TrustPoliciesService } from './trust-policies.service.js';

@ApiTags('oidc')
@ApiBearerAuth()
@Controller('v1/oidc/trust-policies')
@RequireScope('tokens:admin')
export class TrustPoliciesController {
  constructor(
    private readonly policies: TrustPoliciesService,
    private readonly audit: AuditLog,
  ) {}

  @Post()
  @HttpCode(201)
  @ApiOperation({
    summary:
      'Trust a CI\'s OIDC tokens: { issuer, audience, claims, scopes, repositories?, ttlSeconds? }. A token from issuer for audience whose claims all match ' +
      '(exact values, or a prefix ending in "*") is exchanged at POST /v1/auth/oidc for a token with these scopes and repositories, for ttlSeconds (default 3600, at most 43200)',
  })
  @ApiResponse({ status: 400, description: 'A field is missing or invalid, or grants more than the calling token holds' })
  async create(@CurrentCaller() caller: Caller, @Req() req: AuthedRequest) {
    const created = await this.policies.create(caller, await readJsonObject(req, 'trust policy'));
    await this.audit.byCaller(req, 'oidc.policy.create', created.id, { issuer: created.issuer, audience: created.audience, claims: created.claims, scopes: created.scopes, repositories: created.repositories, ttlSeconds: created.ttlSeconds });
    return created;
  }

  @Get()
  @ApiOperation({ summary: "The tenant's OIDC trust policies" })
  list(@CurrentCaller() caller: Caller) {
    return this.policies.list(caller.tenantId);
  }

  @Delete(':id')
  @ApiOperation({ summary: 'Delete a trust policy: its CI tokens are no longer exchanged (tokens already issued expire as set)' })
  @ApiResponse({ status: 404, description: 'No such trust policy for this tenant' })
  async remove(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    const removed = await this.policies.remove(caller.tenantId, id);
    await this.audit.byCaller(req, 'oidc.policy.delete', removed.id, { issuer: removed.issuer, claims: removed.claims });
    return removed;
  }
}

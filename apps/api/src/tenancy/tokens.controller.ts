import { Controller, Delete, Get, HttpCode, Param, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { AuditLog } from '../audit/audit-log.js';
import { RequireScope } from '../auth/route-access.js';
import { type AuthedRequest, type Caller, CurrentCaller } from '../auth/tenant.js';
import { readJsonObject } from '../common/json-body.js';
import { TenancyService } from './tenancy.service.js';

@ApiTags('tokens')
@ApiBearerAuth()
@Controller('v1/tokens')
@RequireScope('tokens:admin')
export class TokensController {
  constructor(
    private readonly tenancy: TenancyService,
    private readonly audit: AuditLog,
  ) {}

  @Post()
  @HttpCode(201)
  @ApiOperation({ summary: 'Create a scoped token { name, scopes, repositories?, expiresAt? }; the secret is in the answer only' })
  async create(@CurrentCaller() caller: Caller, @Req() req: AuthedRequest) {
    const created = await this.tenancy.createToken(caller, await readJsonObject(req, 'token'));
    await this.audit.byCaller(req, 'token.create', created.id, { name: created.name, scopes: created.scopes, repositories: created.repositories });
    return created;
  }

  @Get()
  @ApiOperation({ summary: "The tenant's tokens, without secrets, with when each was last used" })
  list(@CurrentCaller() caller: Caller) {
    return this.tenancy.listTokens(caller.tenantId);
  }

  @Delete(':id')
  @ApiOperation({ summary: 'Revoke a token; the next request with it is refused' })
  async revoke(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    const revoked = await this.tenancy.revokeToken(caller.tenantId, id);
    await this.audit.byCaller(req, 'token.revoke', revoked.id, { name: revoked.name });
    return revoked;
  }
}

import { Controller, Get, HttpCode, Param, Patch, Post, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { AuditLog } from '../audit/audit-log.js';
import { OperatorOnly } from '../auth/route-access.js';
import type { AuthedRequest } from '../auth/tenant.js';
import { readJsonObject } from '../common/json-body.js';
import { TenancyService } from './tenancy.service.js';

/** The operator's API: tenants and their quotas. Only the operator token (`.strata/operator-token` in development) gets in. */
@ApiTags('admin')
@ApiBearerAuth()
@Controller('v1/admin/tenants')
@OperatorOnly()
export class AdminTenantsController {
  constructor(
    private readonly tenancy: TenancyService,
    private readonly audit: AuditLog,
  ) {}

  @Post()
  @HttpCode(201)
  @ApiOperation({ summary: 'Create a tenant; answers { id, name, token } with its first admin token, shown once' })
  async create(@Req() req: AuthedRequest) {
    const created = await this.tenancy.createTenant(await readJsonObject(req, 'tenant'));
    await this.audit.record({ tenantId: created.id, actor: 'operator', action: 'tenant.create', target: created.name, sourceIp: req.ip });
    return created;
  }

  @Get()
  @ApiOperation({ summary: 'Every tenant with its quotas' })
  list() {
    return this.tenancy.listTenants();
  }

  @Patch(':name')
  @ApiOperation({ summary: "Set a tenant's quotas (null removes a limit)" })
  async setQuotas(@Param('name') name: string, @Req() req: AuthedRequest) {
    const body = await readJsonObject(req, 'quotas');
    const updated = await this.tenancy.setQuotas(name, body);
    await this.audit.record({ tenantId: updated.id, actor: 'operator', action: 'tenant.quotas', target: updated.name, sourceIp: req.ip, data: body as object });
    return updated;
  }
}

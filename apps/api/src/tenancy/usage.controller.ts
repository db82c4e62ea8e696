import { Controller, Get } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { RequireScope } from '../auth/route-access.js';
import { type Caller, CurrentCaller } from '../auth/tenant.js';
import { QuotasService } from './quotas.service.js';

@ApiTags('tokens')
@ApiBearerAuth()
@Controller('v1/usage')
export class UsageController {
  constructor(private readonly quotas: QuotasService) {}

  @Get()
  @RequireScope('builds:read')
  @ApiOperation({ summary: "The tenant's usage against each quota (limit null: no limit)" })
  usage(@CurrentCaller() caller: Caller) {
    return this.quotas.report(caller.tenantId);
  }
}

import { Controller, Get } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { RequireScope } from './route-access.js';
import { type Caller, CurrentCaller } from './tenant.js';

@ApiTags('auth')
@ApiBearerAuth()
@Controller('v1/whoami')
export class WhoamiController {
  // Every token the console signs in with can read builds; a registry-only token uses /v2.
  @Get()
  @RequireScope('builds:read')
  @ApiOperation({ summary: "The token's tenant (whose name prefixes its images in /v2) and scopes; any valid token may ask" })
  whoami(@CurrentCaller() caller: Caller) {
    return { tenant: caller.tenantName, scopes: caller.scopes };
  }
}

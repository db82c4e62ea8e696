import { Controller, Get, UseGuards } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { AuthGuard } from './auth.guard.js';
import { type Caller, CurrentCaller } from './tenant.js';

@ApiTags('auth')
@ApiBearerAuth()
@Controller('v1/whoami')
@UseGuards(AuthGuard)
export class WhoamiController {
  @Get()
  @ApiOperation({ summary: "The token's tenant (whose name prefixes its images in /v2) and scopes; any valid token may ask" })
  whoami(@CurrentCaller() caller: Caller) {
    return { tenant: caller.tenantName, scopes: caller.scopes };
  }
}

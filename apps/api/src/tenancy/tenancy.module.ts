import { Global, Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { AdminTenantsController } from './admin-tenants.controller.js';
import { QuotasService } from './quotas.service.js';
import { TenancyService } from './tenancy.service.js';
import { TokenRevocationRelay } from './token-revocations.js';
import { TokensController } from './tokens.controller.js';
import { UsageController } from './usage.controller.js';

/** Tenants, tokens and quotas. Global: builds, imports and registry pushes check quotas through QuotasService. */
@Global()
@Module({
  imports: [AuditModule],
  controllers: [AdminTenantsController, TokensController, UsageController],
  providers: [TenancyService, QuotasService, TokenRevocationRelay],
  exports: [QuotasService],
})
export class TenancyModule {}

import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { OidcExchangeController } from './oidc-exchange.controller.js';
import { OidcExchangeService } from './oidc-exchange.service.js';
import { TrustPoliciesController } from './trust-policies.controller.js';
import { TrustPoliciesService } from './trust-policies.service.js';

/** OIDC from CI (docs/adr/0021): tenants' trust policies, and the exchange of a CI's token for a short-lived Strata token. */
@Module({
  imports: [AuditModule],
  controllers: [TrustPoliciesController, OidcExchangeController],
  providers: [TrustPoliciesService, OidcExchangeService],
})
export class OidcModule {}

import { Controller, HttpCode, HttpException, Inject, Post, Req, Res } from '@nestjs/common';
import { ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import type { Request, Response } from 'express';
import { RateLimiter } from '../auth/rate-limiter.js';
import { Public } from '../auth/route-access.js';
import { readJsonObject } from '../common/json-body.js';
import { OidcError } from './issuer-keys.js';
import { OidcExchangeService } from './oidc-exchange.service.js';

const ERROR_NAMES = { 401: 'Unauthorized', 403: 'Forbidden', 502: 'Bad Gateway' } as const;

@ApiTags('oidc')
@Controller('v1/auth/oidc')
@Public("the CI's OIDC token in the body, verified against its issuer's keys and a tenant's trust policy")
export class OidcExchangeController {
  constructor(
    private readonly exchanges: OidcExchangeService,
    private readonly rateLimiter: RateLimiter,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
  ) {}

  @Post()
  @HttpCode(201)
  @ApiOperation({
    summary:
      "Exchange a CI's OIDC token { token, tenant? } for a short-lived Strata token { token, id, tenant, scopes, repositories, expiresAt }; " +
      'refusals are JSON with a "reason": malformed, unknown-issuer, expired, not-yet-valid, issued-in-future, wrong-audience, unknown-key, bad-signature, missing-claim, no-policy-matched, ambiguous-tenant, replayed',
  })
  @ApiResponse({ status: 401, description: 'The token is not valid: its reason says what failed' })
  @ApiResponse({ status: 403, description: 'The token is valid but no trust policy matches its claims' })
  @ApiResponse({ status: 429, description: 'Too many exchanges from this address' })
  async exchange(@Req() req: Request, @Res({ passthrough: true }) res: Response) {
    await this.rateLimiter.consumeBySource(res, req.ip ?? 'unknown', this.config.rateLimit.oidcPerMinute);
    const body = await readJsonObject(req, 'OIDC exchange request');
    try {
      return await this.exchanges.exchange(body, req.ip ?? null);
    } catch (e) {
      if (e instanceof OidcError) throw new HttpException({ statusCode: e.status, error: ERROR_NAMES[e.status], reason: e.reason, message: e.message }, e.status);
      throw e;
    }
  }
}

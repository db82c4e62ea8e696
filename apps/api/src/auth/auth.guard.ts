import { type CanActivate, type ExecutionContext, ForbiddenException, Inject, Injectable, Logger, UnauthorizedException } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { hashToken, hasScope, PrismaService } from '@strata/db';
import { timingSafeEqual } from 'node:crypto';
import { RateLimiter } from './rate-limiter.js';
import { ROUTE_ACCESS, type RouteAccess } from './route-access.js';
import type { AuthedRequest } from './tenant.js';

/** lastUsedAt is written at most this often per token, so a busy token does not write on every request. */
const LAST_USED_RESOLUTION_MS = 60_000;

/**
 * Authentication and scopes for every route (installed as the global guard). Only a token's sha256
 * is stored, and a token belongs to one tenant. A route's access comes from its RouteAccess
 * metadata; a route without any is refused.
 */
@Injectable()
export class AuthGuard implements CanActivate {
  private readonly logger = new Logger('AuthGuard');

  constructor(
    private readonly prisma: PrismaService,
    private readonly reflector: Reflector,
    private readonly rateLimiter: RateLimiter,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    const access = this.reflector.getAllAndOverride<RouteAccess | undefined>(ROUTE_ACCESS, [ctx.getHandler(), ctx.getClass()]);
    if (!access) {
      this.logger.error(`${ctx.getClass().name}.${ctx.getHandler().name} declares no scope; refused`);
      throw new ForbiddenException('This route declares no access scope, so it is refused.');
    }
    if (access.kind === 'public') return true;
    // A controller that still lists AuthGuard in @UseGuards runs it twice; the second pass has nothing to add.
    if (req.caller || req.operator) return true;
    const secret = bearerOf(req.headers.authorization);
    const hash = hashToken(secret);
    if (access.kind === 'operator') {
      const expected = this.config.operatorTokenHash;
      if (expected === null) throw new ForbiddenException('The admin API is off: set STRATA_OPERATOR_TOKEN_SHA256 to turn it on.');
      if (!timingSafeEqual(Buffer.from(hash), Buffer.from(expected))) throw new ForbiddenException('Only the operator token reaches /v1/admin.');
      req.operator = true;
      return true;
    }
    const token = await this.prisma.apiToken.findUnique({ where: { tokenHash: hash }, include: { tenant: true } });
    if (!token || token.revokedAt) throw new UnauthorizedException('The API token is not valid.');
    if (token.expiresAt && token.expiresAt.getTime() <= Date.now()) throw new UnauthorizedException(`The API token expired at ${token.expiresAt.toISOString()}.`);
    await this.rateLimiter.consume(ctx.switchToHttp().getResponse(), { tokenId: token.id, tenantId: token.tenantId, tenantPerMinute: token.tenant.requestsPerMinute });
    if (!hasScope(token.scopes, access.scope)) throw new ForbiddenException(`The API token lacks the "${access.scope}" scope.`);
    if (!token.lastUsedAt || Date.now() - token.lastUsedAt.getTime() > LAST_USED_RESOLUTION_MS) {
      await this.prisma.apiToken.update({ where: { id: token.id }, data: { lastUsedAt: new Date() } });
    }
    req.caller = {
      tenantId: token.tenantId,
      tenantName: token.tenant.name,
      tokenId: token.id,
      scopes: token.scopes,
      repositories: token.repositories,
      // A token exchanged for a CI's OIDC token acts as the CI's subject (the workflow or pipeline).
      actor: token.oidcSubject ? `oidc:${token.oidcSubject}` : `token:${token.id}`,
    };
    return true;
  }
}

function bearerOf(header: string | undefined): string {
  if (!header) throw new UnauthorizedException('Missing Authorization header: send "Authorization: Bearer <token>".');
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match) throw new UnauthorizedException('The Authorization header must be "Bearer <token>".');
  return match[1]!;
}

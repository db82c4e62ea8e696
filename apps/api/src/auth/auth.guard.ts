import { type CanActivate, type ExecutionContext, ForbiddenException, Injectable, SetMetadata, UnauthorizedException } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { hashToken, PrismaService } from '@strata/db';
import type { AuthedRequest } from './tenant.js';

const SCOPE_KEY = 'strata:scope';
/** The API token scope a route needs (tokens with `admin` have them all). */
export const RequireScope = (scope: string) => SetMetadata(SCOPE_KEY, scope);

/** Bearer-token authentication: only the token's sha256 is stored, and it belongs to one tenant. */
@Injectable()
export class AuthGuard implements CanActivate {
  constructor(
    private readonly prisma: PrismaService,
    private readonly reflector: Reflector,
  ) {}

  async canActivate(ctx: ExecutionContext): Promise<boolean> {
    const req = ctx.switchToHttp().getRequest<AuthedRequest>();
    const header = req.headers.authorization;
    if (!header) throw new UnauthorizedException('Missing Authorization header: send "Authorization: Bearer <token>".');
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw new UnauthorizedException('The Authorization header must be "Bearer <token>".');
    const token = await this.prisma.apiToken.findUnique({ where: { tokenHash: hashToken(match[1]) }, include: { tenant: true } });
    if (!token || token.revokedAt) throw new UnauthorizedException('The API token is not valid.');
    const scope = this.reflector.getAllAndOverride<string | undefined>(SCOPE_KEY, [ctx.getHandler(), ctx.getClass()]);
    if (scope && !token.scopes.includes(scope) && !token.scopes.includes('admin')) {
      throw new ForbiddenException(`The API token lacks the "${scope}" scope.`);
    }
    req.caller = { tenantId: token.tenantId, tenantName: token.tenant.name, tokenId: token.id, scopes: token.scopes };
    return true;
  }
}

import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import type { Request } from 'express';

/** Who is calling: resolved from the bearer token by AuthGuard. */
export interface Caller {
  tenantId: string;
  tenantName: string;
  tokenId: string;
  scopes: string[];
}

export type AuthedRequest = Request & { caller?: Caller };

export const CurrentCaller = createParamDecorator((_: unknown, ctx: ExecutionContext): Caller => {
  const req = ctx.switchToHttp().getRequest<AuthedRequest>();
  if (!req.caller) throw new Error('CurrentCaller used on a route without AuthGuard');
  return req.caller;
});

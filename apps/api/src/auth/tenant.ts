import { createParamDecorator, type ExecutionContext, ForbiddenException } from '@nestjs/common';
import { repositoryAllowed } from '@strata/db';
import type { Request } from 'express';

/** Who is calling: resolved from the bearer token by AuthGuard. */
export interface Caller {
  tenantId: string;
  tenantName: string;
  tokenId: string;
  scopes: string[];
  /** Repository name patterns the token is limited to; empty: every repository of the tenant. */
  repositories: string[];
  /** How the audit log names the caller: `token:<id>` (or `oidc:<subject>` for exchanged tokens). */
  actor: string;
}

export type AuthedRequest = Request & { caller?: Caller; operator?: boolean };

export const CurrentCaller = createParamDecorator((_: unknown, ctx: ExecutionContext): Caller => {
  const req = ctx.switchToHttp().getRequest<AuthedRequest>();
  if (!req.caller) throw new Error('CurrentCaller used on a route without a scope');
  return req.caller;
});

/** `name`, if the caller's token may touch that repository; 403 naming the token's patterns otherwise. */
export function allowedRepository(caller: Caller, name: string): string {
  if (!repositoryAllowed(caller.repositories, name)) {
    throw new ForbiddenException(`The API token is limited to repositories ${caller.repositories.join(', ')}; "${name}" is not one of them.`);
  }
  return name;
}

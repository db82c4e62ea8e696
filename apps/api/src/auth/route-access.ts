import { SetMetadata } from '@nestjs/common';
import type { Scope } from '@strata/db';

/**
 * What a route lets in, declared on every handler or controller and read by AuthGuard. A route that
 * declares nothing is refused (fail closed), and test/route-access.e2e.spec.ts lists every route to
 * prove each declares one.
 */
export type RouteAccess =
  | { kind: 'scope'; scope: Scope }
  /** No bearer token: health, docs, or a route that authenticates by its own means (the /v2 token flow, webhook signatures). */
  | { kind: 'public'; reason: string }
  /** The operator's token only (/v1/admin). */
  | { kind: 'operator' };

export const ROUTE_ACCESS = 'strata:route-access';

/** The API token scope a route needs (tokens with `admin` hold them all). */
export const RequireScope = (scope: Scope) => SetMetadata(ROUTE_ACCESS, { kind: 'scope', scope } satisfies RouteAccess);

/** A route that takes no bearer token; `reason` says why (what authenticates it instead, if anything). */
export const Public = (reason: string) => SetMetadata(ROUTE_ACCESS, { kind: 'public', reason } satisfies RouteAccess);

/** A route for the operator's token only. */
export const OperatorOnly = () => SetMetadata(ROUTE_ACCESS, { kind: 'operator' } satisfies RouteAccess);

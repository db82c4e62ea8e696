import { Global, Module } from '@nestjs/common';
import { APP_GUARD } from '@nestjs/core';
import { AuthGuard } from './auth.guard.js';
import { RateLimiter } from './rate-limiter.js';

/**
 * Authentication for the whole api: AuthGuard runs on every route (APP_GUARD), and a route that
 * declares no access is refused (route-access.ts). Global, so a module that still lists AuthGuard
 * among its providers resolves its dependencies.
 */
@Global()
@Module({
  providers: [{ provide: APP_GUARD, useClass: AuthGuard }, AuthGuard, RateLimiter],
  exports: [AuthGuard, RateLimiter],
})
export class AuthModule {}

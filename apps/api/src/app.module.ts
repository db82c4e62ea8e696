import { type DynamicModule, type MiddlewareConsumer, Module, type NestModule, RequestMethod } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { DbModule } from '@strata/db';
import { AuditModule } from './audit/audit.module.js';
import { AuthModule } from './auth/auth.module.js';
import { WhoamiController } from './auth/whoami.controller.js';
import { BuildsController } from './builds/builds.controller.js';
import { BuildsService } from './builds/builds.service.js';
import { ContextsController } from './contexts/contexts.controller.js';
import { ContextStoreService } from './contexts/context-store.service.js';
import { DockerfileController } from './dockerfile/dockerfile.controller.js';
import { HealthController } from './health/health.controller.js';
import { LogsModule } from './logs/logs.module.js';
import { OidcModule } from './oidc/oidc.module.js';
import { FleetRedisModule } from './metrics/fleet-redis.provider.js';
import { MetricsController } from './metrics/metrics.controller.js';
import { MetricsService } from './metrics/metrics.service.js';
import { RegistryRequestsMiddleware } from './metrics/registry-requests.middleware.js';
import { buildQueueProviders } from './queue.provider.js';
import { ReconcilerService } from './reconcile/reconciler.service.js';
import { RepositoriesController } from './repositories/repositories.controller.js';
import { RepositoriesService } from './repositories/repositories.service.js';
import { RegistryModule } from './registry/registry.module.js';
import { storageProvider } from './storage/storage.provider.js';
import { TenancyModule } from './tenancy/tenancy.module.js';
import { TriggersModule } from './triggers/triggers.module.js';

@Module({})
export class AppModule implements NestModule {
  static forConfig(config: StrataConfig): DynamicModule {
    const configModule: DynamicModule = {
      module: class ConfigModule {},
      global: true,
      providers: [{ provide: STRATA_CONFIG, useValue: config }],
      exports: [STRATA_CONFIG],
    };
    return {
      module: AppModule,
      imports: [configModule, FleetRedisModule, DbModule, AuthModule, AuditModule, TenancyModule, RegistryModule, LogsModule, TriggersModule, OidcModule],
      controllers: [HealthController, WhoamiController, BuildsController, ContextsController, RepositoriesController, DockerfileController, MetricsController],
      providers: [...buildQueueProviders, BuildsService, ContextStoreService, RepositoriesService, storageProvider, MetricsService, ReconcilerService],
    };
  }

  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(RegistryRequestsMiddleware).forRoutes({ path: 'v2', method: RequestMethod.ALL }, { path: 'v2/*path', method: RequestMethod.ALL });
  }
}

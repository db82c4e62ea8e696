import { type DynamicModule, Module } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { DbModule } from '@strata/db';
import { AuditModule } from './audit/audit.module.js';
import { AuthModule } from './auth/auth.module.js';
import { BuildsController } from './builds/builds.controller.js';
import { BuildsService } from './builds/builds.service.js';
import { DockerfileController } from './dockerfile/dockerfile.controller.js';
import { HealthController } from './health/health.controller.js';
import { LogsModule } from './logs/logs.module.js';
import { BuildsQueueCloser, buildsQueueProvider } from './queue.provider.js';
import { RepositoriesController } from './repositories/repositories.controller.js';
import { RepositoriesService } from './repositories/repositories.service.js';
import { RegistryModule } from './registry/registry.module.js';
import { storageProvider } from './storage/storage.provider.js';
import { TenancyModule } from './tenancy/tenancy.module.js';
import { TriggersModule } from './triggers/triggers.module.js';

@Module({})
export class AppModule {
  static forConfig(config: StrataConfig): DynamicModule {
    const configModule: DynamicModule = {
      module: class ConfigModule {},
      global: true,
      providers: [{ provide: STRATA_CONFIG, useValue: config }],
      exports: [STRATA_CONFIG],
    };
    return {
      module: AppModule,
      imports: [configModule, DbModule, AuthModule, AuditModule, TenancyModule, RegistryModule, LogsModule, TriggersModule],
      controllers: [HealthController, BuildsController, RepositoriesController, DockerfileController],
      providers: [
        BuildsQueueCloser,
        BuildsService,
        RepositoriesService,
        buildsQueueProvider,
        storageProvider,
      ],
    };
  }
}

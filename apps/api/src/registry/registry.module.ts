import { Module } from '@nestjs/common';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { ImageStore, Registry, RegistryAccess } from '@strata/registry';
import { STORAGE, type Storage, storageProvider } from '../storage/storage.provider.js';
import { AuditModule } from '../audit/audit.module.js';
import { RegistryController } from './registry.controller.js';

/** The OCI Distribution registry at /v2 (images built by Strata are pushed and pulled here). */
@Module({
  imports: [AuditModule],
  controllers: [RegistryController],
  providers: [
    storageProvider,
    {
      provide: Registry,
      inject: [PrismaService, STORAGE],
      useFactory: (prisma: PrismaService, storage: Storage) => new Registry(prisma, storage.blobs, new ImageStore(prisma, storage.blobs), prisma.sql),
    },
    {
      provide: RegistryAccess,
      inject: [PrismaService, STRATA_CONFIG],
      useFactory: (prisma: PrismaService, config: StrataConfig) => new RegistryAccess(prisma, config.registrySecret, () => config.publicUrl, { sql: prisma.sql }),
    },
  ],
})
export class RegistryModule {}

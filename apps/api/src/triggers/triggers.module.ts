import { Module } from '@nestjs/common';
import { AuditModule } from '../audit/audit.module.js';
import { HooksController } from '../hooks/hooks.controller.js';
import { HooksService } from '../hooks/hooks.service.js';
import { buildQueueProviders } from '../queue.provider.js';
import { TriggersController } from './triggers.controller.js';
import { TriggersService } from './triggers.service.js';

/** Builds on git push: triggers (`/v1/triggers`) and the forges' webhooks (`/v1/hooks/{id}`). */
@Module({
  imports: [AuditModule],
  controllers: [TriggersController, HooksController],
  providers: [TriggersService, HooksService, ...buildQueueProviders],
})
export class TriggersModule {}

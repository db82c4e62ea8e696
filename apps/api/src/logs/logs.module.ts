import { Module } from '@nestjs/common';
import { storageProvider } from '../storage/storage.provider.js';
import { LogsController } from './logs.controller.js';
import { LogsService } from './logs.service.js';

/** `GET /v1/builds/{id}/logs`: live and archived build logs. */
@Module({
  controllers: [LogsController],
  providers: [LogsService, storageProvider],
})
export class LogsModule {}

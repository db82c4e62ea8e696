import 'reflect-metadata';
import type { INestApplication } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import type { StrataConfig } from '@strata/config';
import { AppModule } from './app.module.js';
import { HttpErrorFilter } from './common/http-error.filter.js';
import { JsonLogger } from './common/json-logger.js';
import { consoleFiles } from './console/console-files.js';

/** Builds the api application (used by main.ts and by the end-to-end tests). */
export async function createApiApp(config: StrataConfig, opts: { logger?: boolean } = {}): Promise<INestApplication> {
  const app = await NestFactory.create(AppModule.forConfig(config), {
    // Nest's bootstrap, route and exception lines as JSON, like every other line (STRATA_LOG_LEVEL filters them).
    logger: opts.logger === false ? false : new JsonLogger(),
    // Build contexts and imports are streamed by their handlers; only JSON is parsed here.
    bodyParser: false,
  });
  app.useGlobalFilters(new HttpErrorFilter());
  // No `X-Powered-By: Express` on every answer: it tells a scanner what to try and a client nothing.
  (app.getHttpAdapter().getInstance() as { disable(setting: string): void }).disable('x-powered-by');
  // Idle keep-alive connections outlive a load balancer's (60 s on most) and clients': the side that
  // closes an idle connection first must be the client, or a request sent as it closes is reset.
  const server = app.getHttpServer() as { keepAliveTimeout: number; headersTimeout: number };
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  app.enableShutdownHooks();
  // The web console (apps/console, built by Vite) at `/`; registered before the routes, it passes API paths on.
  app.use(consoleFiles());
  const doc = new DocumentBuilder()
    .setTitle('Strata API')
    .setDescription('Container image builds: contexts in, OCI images out.')
    .setVersion('1')
    .addBearerAuth()
    .build();
  SwaggerModule.setup('docs', app, () => SwaggerModule.createDocument(app, doc));
  return app;
}

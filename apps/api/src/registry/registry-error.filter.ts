import { type ArgumentsHost, Catch, type ExceptionFilter, Logger } from '@nestjs/common';
import { RegistryAuthError, RegistryError } from '@strata/registry';
import type { Request, Response } from 'express';

/**
 * /v2 answers errors in the Distribution spec's `{ errors: [{ code, message, detail }] }` form
 * (clients parse it), not the api's usual JSON; 401s carry the token challenge.
 */
@Catch()
export class RegistryErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger('Registry');

  catch(exception: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    const req = host.switchToHttp().getRequest<Request>();
    if (res.headersSent) {
      res.destroy();
      return;
    }
    let error: RegistryError;
    if (exception instanceof RegistryError) error = exception;
    else {
      this.logger.error(exception instanceof Error ? exception.stack : String(exception));
      error = new RegistryError('UNSUPPORTED', 'the registry failed to handle the request', undefined, 500);
    }
    if (error instanceof RegistryAuthError) res.setHeader('WWW-Authenticate', error.challenge);
    res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
    // Drain what the client is still sending, so it reads the answer instead of a reset connection.
    if (!req.complete) req.resume();
    const body = JSON.stringify(error.toBody());
    res.status(error.status).type('application/json').setHeader('Content-Length', Buffer.byteLength(body));
    if (req.method === 'HEAD') res.end();
    else res.end(body);
  }
}

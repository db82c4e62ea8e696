import { type ArgumentsHost, Catch, type ExceptionFilter, Logger } from '@nestjs/common';
import { RegistryAuthError, RegistryError } from '@strata/registry';
import type { Request, Response } from 'express';
import { STORAGE_RETRY_AFTER_SECONDS, storageUnavailable } from '../common/http-error.filter.js';
import { requestLogFields } from '../common/json-logger.js';

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
    const storage = storageUnavailable(exception);
    if (exception instanceof RegistryError) error = exception;
    else if (storage) {
      // Nothing of the request was recorded (an upload's size stays where it was): the client asks
      // for the upload's status and resumes, or sends the request again.
      this.logger.warn({ msg: 'storage (S3) failed a registry request', error: storage.message, ...requestLogFields(req) });
      error = new RegistryError('UNAVAILABLE', `storage (S3) is failing (${storage.operation} failed after ${storage.attempts} attempts); nothing of this request was stored, retry it`);
      res.setHeader('Retry-After', String(STORAGE_RETRY_AFTER_SECONDS));
    } else {
      this.logger.error({ msg: exception instanceof Error ? exception.message : String(exception), stack: exception instanceof Error ? exception.stack : undefined, ...requestLogFields(req) });
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

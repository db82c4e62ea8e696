import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';
import { StorageUnavailableError } from '@strata/blobstore';
import { type AuthedRequest } from '../auth/tenant.js';
import { requestLogFields } from './json-logger.js';

/** Seconds a client is told to wait before retrying a request S3 failed. */
export const STORAGE_RETRY_AFTER_SECONDS = 5;

/** The storage failure behind an error (itself or one of its causes), if S3 is what failed. */
export function storageUnavailable(e: unknown): StorageUnavailableError | null {
  for (let cur = e, depth = 0; cur instanceof Error && depth < 5; cur = (cur as { cause?: unknown }).cause, depth++) {
    if (cur instanceof StorageUnavailableError) return cur;
  }
  return null;
}

/**
 * Every error leaves as JSON `{ statusCode, error, message }` with a one-sentence message;
 * storage (S3) failures that outlasted the retries are a 503 with Retry-After (nothing was
 * recorded: the request can be sent again); other unexpected errors are logged and answered as
 * 500 without leaking internals.
 */
@Catch()
export class HttpErrorFilter implements ExceptionFilter {
  private readonly logger = new Logger('HttpError');

  catch(exception: unknown, host: ArgumentsHost): void {
    const res = host.switchToHttp().getResponse<Response>();
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // A refusal sent before the body was read (a bad header, not a tar): drain what the client is
    // still sending, so it reads the answer and its connection stays usable.
    const req = host.switchToHttp().getRequest<Request>();
    if (!req.complete) req.resume();
    if (exception instanceof HttpException) {
      const status = exception.getStatus();
      const body = exception.getResponse();
      const payload = typeof body === 'string' ? { statusCode: status, message: body } : { statusCode: status, ...(body as object) };
      res.status(status).json(payload);
      return;
    }
    const storage = storageUnavailable(exception);
    if (storage) {
      this.logger.warn({ msg: 'storage (S3) failed a request', error: storage.message, ...requestLogFields(req as AuthedRequest) });
      res.setHeader('Retry-After', String(STORAGE_RETRY_AFTER_SECONDS));
      res.status(503).json({
        statusCode: 503,
        error: 'Service Unavailable',
        message: `Storage (S3) is failing (${storage.operation} failed after ${storage.attempts} attempts); nothing was recorded, send the request again shortly.`,
      });
      return;
    }
    this.logger.error({ msg: exception instanceof Error ? exception.message : String(exception), stack: exception instanceof Error ? exception.stack : undefined, ...requestLogFields(req as AuthedRequest) });
    res.status(500).json({ statusCode: 500, error: 'Internal Server Error', message: 'The server failed to handle the request.' });
  }
}

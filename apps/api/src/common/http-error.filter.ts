import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Logger } from '@nestjs/common';
import type { Request, Response } from 'express';

/**
 * Every error leaves as JSON `{ statusCode, error, message }` with a one-sentence message;
 * unexpected errors are logged and answered as 500 without leaking internals.
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
    this.logger.error(exception instanceof Error ? exception.stack : String(exception));
    res.status(500).json({ statusCode: 500, error: 'Internal Server Error', message: 'The server failed to handle the request.' });
  }
}

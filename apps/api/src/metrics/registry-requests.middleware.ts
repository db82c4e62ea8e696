import { Injectable, type NestMiddleware } from '@nestjs/common';
import type { NextFunction, Request, Response } from 'express';
import { MetricsService } from './metrics.service.js';

/** Counts every /v2 request once its answer is sent, whatever it was. */
@Injectable()
export class RegistryRequestsMiddleware implements NestMiddleware {
  constructor(private readonly metrics: MetricsService) {}

  use(req: Request, res: Response, next: NextFunction): void {
    res.once('finish', () => this.metrics.registryRequests.inc({ method: req.method, status: String(res.statusCode) }));
    next();
  }
}

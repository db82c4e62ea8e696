import { Controller, Get, Res } from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { OperatorOnly } from '../auth/route-access.js';
import { MetricsService } from './metrics.service.js';

@ApiTags('health')
@Controller()
export class MetricsController {
  constructor(private readonly metrics: MetricsService) {}

  /** The operator's token only: the series name every tenant (Prometheus sends it as a bearer token). */
  @Get('metrics')
  @OperatorOnly()
  @ApiOperation({ summary: 'Prometheus metrics: queue depth per tenant, build and step durations, cache hits, registry requests, S3 errors, reconciler actions' })
  async scrape(@Res() res: Response): Promise<void> {
    const text = await this.metrics.render();
    res.status(200).setHeader('content-type', this.metrics.contentType).send(text);
  }
}

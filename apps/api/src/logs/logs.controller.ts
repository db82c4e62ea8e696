import { BadRequestException, Controller, Get, Headers, Param, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiHeader, ApiOperation, ApiProduces, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { isStreamId } from '@strata/queue';
import { RequireScope } from '../auth/route-access.js';
import { type Caller, CurrentCaller } from '../auth/tenant.js';
import { LogsService } from './logs.service.js';

@ApiTags('builds')
@ApiBearerAuth()
@Controller('v1/builds')
export class LogsController {
  constructor(private readonly logs: LogsService) {}

  @Get(':id/logs')
  @RequireScope('builds:read')
  @ApiOperation({
    summary: "A build's log: the whole log so far as text, or with Accept: text/event-stream, events (log, step, end) that follow the build until it ends",
  })
  @ApiProduces('text/plain', 'text/event-stream')
  @ApiHeader({ name: 'Last-Event-ID', required: false, description: 'Resume an event stream after this id' })
  async get(
    @CurrentCaller() caller: Caller,
    @Param('id') id: string,
    @Headers('accept') accept: string | undefined,
    @Headers('last-event-id') lastEventId: string | undefined,
    @Res() res: Response,
  ): Promise<void> {
    const build = await this.logs.build(caller.tenantId, id, caller.repositories);
    if (!(accept ?? '').includes('text/event-stream')) return this.logs.text(build.id, res);
    const after = lastEventId === undefined || lastEventId === '' ? null : lastEventId.trim();
    if (after !== null && !isStreamId(after)) {
      throw new BadRequestException(`Last-Event-ID "${lastEventId}" is not an id this log sent: expected the "id:" of an event, like 1700000000000-0.`);
    }
    return this.logs.follow(build.id, after, res);
  }
}

import { BadRequestException, Controller, Delete, Get, HttpCode, Param, Patch, Post, Query, Req } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import type { Request } from 'express';
import { AuditLog } from '../audit/audit-log.js';
import { RequireScope } from '../auth/route-access.js';
import { type AuthedRequest, type Caller, CurrentCaller } from '../auth/tenant.js';
import { readSmallBody } from '../common/body.js';
import { querySingle } from '../common/query.js';
import { parseTriggerInput } from './trigger-input.js';
import { TriggersService } from './triggers.service.js';

async function jsonBody(req: Request): Promise<unknown> {
  const text = (await readSmallBody(req, 256 * 1024, 'trigger')).toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    throw new BadRequestException('The body must be JSON.');
  }
}

@ApiTags('triggers')
@ApiBearerAuth()
@Controller('v1/triggers')
export class TriggersController {
  constructor(
    private readonly triggers: TriggersService,
    private readonly audit: AuditLog,
  ) {}

  @Post()
  @HttpCode(201)
  @RequireScope('triggers:admin')
  @ApiOperation({
    summary:
      'Create a trigger: { repository, provider: github|gitlab|gitea|bitbucket, cloneUrl, secret, rules: [{ ref, tags }], dockerfile?, context?, buildArgs?, target?, paths?: { include?, exclude? }, submodules?, credentials?: { token, username? } | { deployKey }, apiUrl? }',
  })
  async create(@CurrentCaller() caller: Caller, @Req() req: AuthedRequest) {
    const created = await this.triggers.create(caller.tenantId, parseTriggerInput(await jsonBody(req), null));
    await this.audit.byCaller(req, 'trigger.create', created.id);
    return created;
  }

  @Get()
  @RequireScope('triggers:admin')
  @ApiOperation({ summary: "The tenant's triggers (never their secrets or credentials)" })
  async list(@CurrentCaller() caller: Caller) {
    return this.triggers.list(caller.tenantId);
  }

  @Get(':id')
  @RequireScope('triggers:admin')
  async get(@CurrentCaller() caller: Caller, @Param('id') id: string) {
    return this.triggers.get(caller.tenantId, id);
  }

  @Patch(':id')
  @RequireScope('triggers:admin')
  @ApiOperation({ summary: 'Change the fields given; a new secret or credentials replace the old ones' })
  async update(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    const body = await jsonBody(req);
    const merged = parseTriggerInput(body, await this.triggers.input(caller.tenantId, id));
    const updated = await this.triggers.update(caller.tenantId, id, merged);
    await this.audit.byCaller(req, 'trigger.update', id);
    return updated;
  }

  @Delete(':id')
  @HttpCode(204)
  @RequireScope('triggers:admin')
  async remove(@CurrentCaller() caller: Caller, @Param('id') id: string, @Req() req: AuthedRequest) {
    await this.triggers.remove(caller.tenantId, id);
    await this.audit.byCaller(req, 'trigger.delete', id);
  }

  @Get(':id/deliveries')
  @RequireScope('triggers:admin')
  @ApiOperation({ summary: "The trigger's deliveries, newest first: event, ref, sha, outcome, reason, build id, commit statuses sent" })
  @ApiQuery({ name: 'limit', required: false, type: Number })
  async deliveries(@CurrentCaller() caller: Caller, @Param('id') id: string, @Query() q: Record<string, unknown>) {
    const raw = querySingle(q.limit, 'limit') ?? '50';
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > 500) throw new BadRequestException(`Invalid limit "${raw}": use a number from 1 to 500.`);
    return this.triggers.deliveries(caller.tenantId, id, Number(raw));
  }

  @Post(':id/deliveries/:deliveryId/redeliver')
  @HttpCode(200)
  @RequireScope('triggers:admin')
  @ApiOperation({ summary: 'Run a recorded push through the trigger again as a new delivery (a new build when a rule matches)' })
  async redeliver(@CurrentCaller() caller: Caller, @Param('id') id: string, @Param('deliveryId') deliveryId: string, @Req() req: AuthedRequest) {
    const delivery = await this.triggers.redeliver(caller.tenantId, id, deliveryId, { actor: caller.actor, sourceIp: req.ip ?? null });
    await this.audit.byCaller(req, 'trigger.redeliver', id, { deliveryId });
    return delivery;
  }
}

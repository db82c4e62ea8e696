import { BadRequestException, Controller, Get, Query } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiQuery, ApiTags } from '@nestjs/swagger';
import { type Prisma, PrismaService } from '@strata/db';
import { RequireScope } from '../auth/route-access.js';
import { type Caller, CurrentCaller } from '../auth/tenant.js';
import { decodeCursor, encodeCursor } from '../builds/cursor.js';
import { querySingle } from '../common/query.js';

function dateParam(value: string | undefined, name: string): Date | undefined {
  if (value === undefined) return undefined;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new BadRequestException(`Query parameter "${name}" must be an ISO 8601 date-time, got "${value}".`);
  return d;
}

@ApiTags('audit')
@ApiBearerAuth()
@Controller('v1/audit')
export class AuditController {
  constructor(private readonly prisma: PrismaService) {}

  @Get()
  @RequireScope('admin')
  @ApiOperation({ summary: "The tenant's audit log, newest first: who (actor), what (action, target), from where (sourceIp) and when" })
  @ApiQuery({ name: 'action', required: false, description: 'e.g. token.create, build.start, tag.push' })
  @ApiQuery({ name: 'actor', required: false, description: 'token:<id>, operator or oidc:<subject>' })
  @ApiQuery({ name: 'target', required: false })
  @ApiQuery({ name: 'since', required: false })
  @ApiQuery({ name: 'until', required: false })
  @ApiQuery({ name: 'limit', required: false })
  @ApiQuery({ name: 'cursor', required: false })
  async list(@CurrentCaller() caller: Caller, @Query() q: Record<string, unknown>) {
    const where: Prisma.AuditEventWhereInput = { tenantId: caller.tenantId };
    const action = querySingle(q.action, 'action');
    const actor = querySingle(q.actor, 'actor');
    const target = querySingle(q.target, 'target');
    if (action) where.action = action;
    if (actor) where.actor = actor;
    if (target) where.target = target;
    const since = dateParam(querySingle(q.since, 'since'), 'since');
    const until = dateParam(querySingle(q.until, 'until'), 'until');
    if (since || until) where.createdAt = { ...(since ? { gte: since } : {}), ...(until ? { lt: until } : {}) };
    const limitRaw = querySingle(q.limit, 'limit') ?? '50';
    if (!/^\d+$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > 500) throw new BadRequestException(`Invalid limit "${limitRaw}": use a number from 1 to 500.`);
    const limit = Number(limitRaw);
    const cursor = querySingle(q.cursor, 'cursor');
    if (cursor) {
      const c = decodeCursor(cursor);
      where.AND = [{ OR: [{ createdAt: { lt: c.createdAt } }, { createdAt: c.createdAt, id: { lt: c.id } }] }];
    }
    const rows = await this.prisma.auditEvent.findMany({ where, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], take: limit + 1 });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return {
      events: page.map((e) => ({ id: e.id, time: e.createdAt.toISOString(), actor: e.actor, action: e.action, target: e.target, sourceIp: e.sourceIp, data: e.data })),
      nextCursor: rows.length > limit && last ? encodeCursor(last.createdAt, last.id) : null,
    };
  }
}

import { Injectable } from '@nestjs/common';
import { type Prisma, PrismaService } from '@strata/db';
import type { AuthedRequest } from '../auth/tenant.js';

export interface AuditEntry {
  tenantId: string;
  /** `token:<id>`, `operator`, `oidc:<subject>` or `trigger:<id>` (a forge's webhook) */
  actor: string;
  /** What changed, as `<thing>.<verb>`: `token.create`, `build.cancel`, `tag.push`… */
  action: string;
  target?: string;
  sourceIp?: string | null;
  data?: Prisma.InputJsonValue;
}

/** The append-only audit log (the table refuses UPDATE and DELETE). Every change a caller makes is recorded here. */
@Injectable()
export class AuditLog {
  constructor(private readonly prisma: PrismaService) {}

  async record(entry: AuditEntry): Promise<void> {
    await this.prisma.auditEvent.create({ data: { ...entry, sourceIp: entry.sourceIp ?? null } });
  }

  /** Records a change made by the tenant caller of `req`. */
  async byCaller(req: AuthedRequest, action: string, target: string, data?: Prisma.InputJsonValue): Promise<void> {
    if (!req.caller) throw new Error('AuditLog.byCaller on a request without a tenant caller');
    await this.record({ tenantId: req.caller.tenantId, actor: req.caller.actor, action, target, sourceIp: req.ip ?? null, data });
  }
}

import { ForbiddenException, HttpException, HttpStatus, Injectable } from '@nestjs/common';
import { type Prisma, PrismaService, type Tenant } from '@strata/db';

export interface Usage {
  concurrentBuilds: number;
  queuedBuilds: number;
  buildMinutesThisMonth: number;
  storedBytes: number;
}

type QuotaName = 'maxConcurrentBuilds' | 'maxQueuedBuilds' | 'maxBuildMinutesPerMonth' | 'maxStoredBytes';

/** Which usage each quota limits, and how it is said in a message. */
const MEASURES: Record<QuotaName, { usage: keyof Usage; unit: string }> = {
  maxConcurrentBuilds: { usage: 'concurrentBuilds', unit: 'builds running' },
  maxQueuedBuilds: { usage: 'queuedBuilds', unit: 'builds queued' },
  maxBuildMinutesPerMonth: { usage: 'buildMinutesThisMonth', unit: 'build minutes this month' },
  maxStoredBytes: { usage: 'storedBytes', unit: 'bytes stored' },
};

/**
 * A tenant's usage against its quotas. Queued builds are rate-like (429: wait and retry); build
 * minutes and stored bytes are hard (403: the operator must raise them, or the tenant delete).
 * Concurrent builds are held back by workers, not refused: a worker takes a slot atomically (apps/worker/src/concurrency-slot.ts).
 */
@Injectable()
export class QuotasService {
  constructor(private readonly prisma: PrismaService) {}

  async usage(tenantId: string, now = new Date()): Promise<Usage> {
    const monthStart = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    const [running, queued, minutes, stored, contexts] = await Promise.all([
      this.prisma.build.count({ where: { tenantId, status: 'running' } }),
      this.prisma.build.count({ where: { tenantId, status: 'queued' } }),
      // Time on a worker this month: builds still running count up to now; a build started last month counts from the 1st.
      this.prisma.$queryRaw<{ ms: number | null }[]>`
        SELECT SUM(EXTRACT(EPOCH FROM (COALESCE("finishedAt", ${now}) - GREATEST("startedAt", ${monthStart}))) * 1000)::float8 AS ms
        FROM "Build" WHERE "tenantId" = ${tenantId}::uuid AND "startedAt" IS NOT NULL AND COALESCE("finishedAt", ${now}) >= ${monthStart}`,
      // Every blob the tenant's repositories or cache reach, each counted once (blobs are shared by digest).
      this.prisma.$queryRaw<{ bytes: number | null }[]>`
        SELECT SUM(b.size)::float8 AS bytes FROM "Blob" b WHERE b.digest IN (
          SELECT rb.digest FROM "RepositoryBlob" rb WHERE rb."tenantId" = ${tenantId}::uuid
          UNION SELECT m.digest FROM "Manifest" m WHERE m."tenantId" = ${tenantId}::uuid
          UNION SELECT mb.digest FROM "ManifestBlob" mb JOIN "Manifest" m ON m.id = mb."manifestId" WHERE m."tenantId" = ${tenantId}::uuid
          UNION SELECT c.result->'layer'->'descriptor'->>'digest' FROM "CacheEntry" c WHERE c."tenantId" = ${tenantId}::uuid)`,
      // The tenant's own content store for incremental contexts (docs/adr/0025).
      this.prisma.$queryRaw<{ bytes: number | null }[]>`SELECT SUM(size)::float8 AS bytes FROM "ContextBlob" WHERE "tenantId" = ${tenantId}::uuid`,
    ]);
    return {
      concurrentBuilds: running,
      queuedBuilds: queued,
      buildMinutesThisMonth: Math.round(((minutes[0]?.ms ?? 0) / 60_000) * 100) / 100,
      storedBytes: (stored[0]?.bytes ?? 0) + (contexts[0]?.bytes ?? 0),
    };
  }

  /** Usage against each quota, as GET /v1/usage shows it. */
  async report(tenantId: string) {
    const tenant = await this.prisma.tenant.findUniqueOrThrow({ where: { id: tenantId } });
    const usage = await this.usage(tenantId);
    const quotas = Object.fromEntries(
      (Object.keys(MEASURES) as QuotaName[]).map((q) => [q, { limit: limitOf(tenant, q), used: usage[MEASURES[q].usage] }]),
    );
    return { tenant: tenant.name, quotas };
  }

  /** Refuses a new build over the queued-builds, build-minutes or stored-bytes quota. */
  async assertCanStartBuild(tenantId: string): Promise<void> {
    const tenant = await this.prisma.tenant.findUniqueOrThrow({ where: { id: tenantId } });
    if (limitOf(tenant, 'maxQueuedBuilds') === null && limitOf(tenant, 'maxBuildMinutesPerMonth') === null && limitOf(tenant, 'maxStoredBytes') === null) return;
    const usage = await this.usage(tenantId);
    this.check(tenant, usage, 'maxQueuedBuilds', HttpStatus.TOO_MANY_REQUESTS);
    this.check(tenant, usage, 'maxBuildMinutesPerMonth', HttpStatus.FORBIDDEN);
    this.check(tenant, usage, 'maxStoredBytes', HttpStatus.FORBIDDEN);
  }

  /** Refuses a push, an import or a context upload once the tenant stores as many bytes as its quota allows. */
  async assertCanStore(tenantId: string): Promise<void> {
    const tenant = await this.prisma.tenant.findUniqueOrThrow({ where: { id: tenantId } });
    if (limitOf(tenant, 'maxStoredBytes') === null) return;
    this.check(tenant, await this.usage(tenantId), 'maxStoredBytes', HttpStatus.FORBIDDEN);
  }

  /**
   * Runs `create` (a new build's insert) only while the tenant is under its queued-builds quota, and
   * atomically: with a quota set, the count and the insert happen in one transaction holding the
   * tenant's row lock, so two requests at once cannot both take the last queued slot. `create`
   * gets the transaction, or null when the tenant has no such quota (nothing to hold).
   */
  async withQueuedSlot<T>(tenantId: string, create: (tx: Prisma.TransactionClient | null) => Promise<T>): Promise<T> {
    const tenant = await this.prisma.tenant.findUniqueOrThrow({ where: { id: tenantId }, select: { maxQueuedBuilds: true } });
    if (tenant.maxQueuedBuilds === null) return create(null);
    return this.prisma.$transaction(
      async (tx) => {
        const [locked] = await tx.$queryRaw<{ maxQueuedBuilds: number | null }[]>`SELECT "maxQueuedBuilds" FROM "Tenant" WHERE "id" = ${tenantId}::uuid FOR UPDATE`;
        const limit = locked?.maxQueuedBuilds ?? null;
        if (limit !== null) {
          // Read after the lock: under READ COMMITTED this sees every build committed before it was granted.
          const queued = await tx.build.count({ where: { tenantId, status: 'queued' } });
          if (queued >= limit) refuse('maxQueuedBuilds', queued, limit, HttpStatus.TOO_MANY_REQUESTS);
        }
        return create(tx);
      },
      // Requests of one tenant queue on its row for as long as an insert takes; give them room under load.
      { maxWait: 15_000, timeout: 20_000 },
    );
  }

  private check(tenant: Tenant, usage: Usage, quota: QuotaName, status: HttpStatus.TOO_MANY_REQUESTS | HttpStatus.FORBIDDEN): void {
    const limit = limitOf(tenant, quota);
    const used = usage[MEASURES[quota].usage];
    if (limit === null || used < limit) return;
    refuse(quota, used, limit, status);
  }
}

function refuse(quota: QuotaName, used: number, limit: number, status: HttpStatus.TOO_MANY_REQUESTS | HttpStatus.FORBIDDEN): never {
  const message = `Quota ${quota} reached: ${used} ${MEASURES[quota].unit} of ${limit} allowed.`;
  if (status === HttpStatus.FORBIDDEN) throw new ForbiddenException(message);
  throw new HttpException({ statusCode: 429, error: 'Too Many Requests', message: `${message} Retry once some have run.` }, HttpStatus.TOO_MANY_REQUESTS);
}

function limitOf(tenant: Tenant, quota: QuotaName): number | null {
  const v = tenant[quota];
  return v === null ? null : Number(v);
}

import type { PrismaClient } from '@strata/db';

/**
 * Takes one of the tenant's maxConcurrentBuilds slots for a queued build, or answers false when
 * they are all taken. Atomic across workers: the check and the claim (the build becomes `running`
 * on this worker) happen in one transaction holding the tenant's row lock, so two workers taking
 * the same tenant's builds at once cannot both pass the last slot. A tenant without the quota, or a
 * build no longer queued (a retry, a cancel), is left to the runner's own claim.
 */
export async function claimConcurrencySlot(prisma: PrismaClient, buildId: string, workerId: string): Promise<boolean> {
  // Most tenants have no such quota: one read says so, without a transaction's extra round trips.
  const [first] = await prisma.$queryRaw<Array<{ status: string; maxConcurrentBuilds: number | null }>>`
    SELECT b."status"::text AS "status", t."maxConcurrentBuilds" FROM "Build" b JOIN "Tenant" t ON t."id" = b."tenantId" WHERE b."id" = ${buildId}::uuid`;
  if (!first || first.status !== 'queued' || first.maxConcurrentBuilds === null) return true;
  return prisma.$transaction(async (tx) => {
    const build = await tx.build.findUnique({ where: { id: buildId }, select: { status: true, tenantId: true, tenant: { select: { maxConcurrentBuilds: true } } } });
    if (!build || build.status !== 'queued' || build.tenant.maxConcurrentBuilds === null) return true;
    await tx.$queryRaw`SELECT 1 FROM "Tenant" WHERE "id" = ${build.tenantId}::uuid FOR UPDATE`;
    // Read after the lock: under READ COMMITTED this sees every claim committed before it was granted.
    const quota = await tx.tenant.findUniqueOrThrow({ where: { id: build.tenantId }, select: { maxConcurrentBuilds: true } });
    if (quota.maxConcurrentBuilds === null) return true;
    const running = await tx.build.count({ where: { tenantId: build.tenantId, status: 'running' } });
    if (running >= quota.maxConcurrentBuilds) return false;
    await tx.build.updateMany({ where: { id: buildId, status: 'queued' }, data: { status: 'running', startedAt: new Date(), workerId } });
    return true;
  });
}

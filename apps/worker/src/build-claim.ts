import type { Prisma, PrismaClient } from '@strata/db';

/** What a worker taking a build's job finds: it runs it, the tenant is at its quota, or there is nothing to run. */
export type ClaimOutcome = 'claimed' | 'held' | 'gone';

/**
 * Claims a queued build (or one handed back to this job) for a worker, keeping the tenant's
 * maxConcurrentBuilds: for a tenant with that quota, the count of its running builds and the claim
 * happen in one transaction holding a per-tenant advisory lock, so two slots taking two of its jobs at
 * the same moment cannot both start past the quota. A build already `running` (its job came back after
 * a worker died) counts towards the quota already and is never held.
 */
export async function claimBuild(prisma: PrismaClient, buildId: string, data: Omit<Prisma.BuildUpdateManyMutationInput, 'startedAt'>): Promise<ClaimOutcome> {
  const found = await prisma.build.findUnique({ where: { id: buildId }, select: { status: true, tenantId: true, tenant: { select: { maxConcurrentBuilds: true } } } });
  if (!found || (found.status !== 'queued' && found.status !== 'running')) return 'gone';
  // startedAt is read at the claim, after the count: a build of the tenant that ended just before has an earlier finishedAt.
  const claim = async (tx: Prisma.TransactionClient | PrismaClient) =>
    (await tx.build.updateMany({ where: { id: buildId, status: { in: ['queued', 'running'] } }, data: { ...data, startedAt: new Date() } })).count === 0 ? 'gone' : 'claimed';
  const quota = found.tenant.maxConcurrentBuilds;
  if (quota === null || found.status === 'running') return claim(prisma);
  return prisma.$transaction(
    async (tx) => {
      await tx.$executeRaw`SELECT pg_advisory_xact_lock(hashtext(${`strata-claim:${found.tenantId}`}))`;
      const running = await tx.build.count({ where: { tenantId: found.tenantId, status: 'running' } });
      if (running >= quota) return 'held';
      return claim(tx);
    },
    { maxWait: 10_000, timeout: 10_000 },
  );
}

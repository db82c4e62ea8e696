import type { BlobStore } from '@strata/blobstore';
import type { PrismaClient } from '@strata/db';
import type { Digest } from '@strata/oci';

export interface GcOptions {
  /** Blobs younger than this are never deleted: a push or build may be about to reference them. */
  graceMs: number;
  /** Per-tenant cache budget in bytes of layers; least recently used entries beyond it are evicted. */
  cacheBudgetBytes: number;
  /** Cache entries unused for longer than this are evicted. */
  cacheMaxIdleMs: number;
  dryRun?: boolean;
  now?: Date;
  /** Limit cache eviction to these tenants (default: all). */
  tenantIds?: string[];
}

export interface GcReport {
  dryRun: boolean;
  evictedCacheEntries: number;
  deletedBlobs: Array<{ digest: string; size: number }>;
  keptBlobs: number;
  staleUploads: number;
}

interface CachedLayer {
  layer?: { descriptor?: { digest?: string; size?: number } };
}

/**
 * Online garbage collection (after gitlab's container registry: Postgres knows every reference,
 * so nothing needs to stop). First the per-tenant cache is trimmed to its budget, then every blob
 * that no manifest, cache entry or recent push references, and that is older than the grace
 * period, is deleted. A dry run reports the same without deleting.
 */
export class GarbageCollector {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly blobs: BlobStore,
  ) {}

  async run(opts: GcOptions): Promise<GcReport> {
    const now = opts.now ?? new Date();
    const dryRun = opts.dryRun === true;
    const evictedCacheEntries = await this.evictCache(opts, now, dryRun);

    const staleUploadCutoff = new Date(now.getTime() - Math.max(opts.graceMs, 24 * 3600 * 1000));
    const staleUploads = await this.prisma.blobUpload.count({ where: { updatedAt: { lt: staleUploadCutoff } } });
    if (!dryRun) await this.prisma.blobUpload.deleteMany({ where: { updatedAt: { lt: staleUploadCutoff } } });

    const referenced = await this.referencedDigests();
    const cutoff = now.getTime() - opts.graceMs;
    const deletedBlobs: GcReport['deletedBlobs'] = [];
    let keptBlobs = 0;
    for await (const digest of this.blobs.list()) {
      if (referenced.has(digest)) {
        keptBlobs++;
        continue;
      }
      const stat = await this.blobs.driver.stat(`blobs/sha256/${digest.slice(7)}`);
      if (!stat || stat.modified.getTime() > cutoff) {
        keptBlobs++;
        continue;
      }
      // Re-check just before deleting: a manifest may have been pushed since the scan began.
      if (await this.isReferenced(digest)) {
        keptBlobs++;
        continue;
      }
      deletedBlobs.push({ digest, size: stat.size });
      if (!dryRun) {
        // Rows first: a Blob row is then never left naming a deleted blob (the cache trusts the row),
        // while a crash before the delete only leaves a blob the next run removes.
        await this.prisma.repositoryBlob.deleteMany({ where: { digest } });
        await this.prisma.blob.deleteMany({ where: { digest } });
        await this.blobs.delete(digest as Digest);
      }
    }
    return { dryRun, evictedCacheEntries, deletedBlobs, keptBlobs, staleUploads };
  }

  private async evictCache(opts: GcOptions, now: Date, dryRun: boolean): Promise<number> {
    let evicted = 0;
    const idleCutoff = new Date(now.getTime() - opts.cacheMaxIdleMs);
    const scope = opts.tenantIds ? { tenantId: { in: opts.tenantIds } } : {};
    const idle = await this.prisma.cacheEntry.findMany({ where: { ...scope, lastUsedAt: { lt: idleCutoff } }, select: { id: true } });
    evicted += idle.length;
    if (!dryRun && idle.length > 0) await this.prisma.cacheEntry.deleteMany({ where: { id: { in: idle.map((e) => e.id) } } });
    const idleIds = new Set(idle.map((e) => e.id));

    const tenants = await this.prisma.cacheEntry.groupBy({ by: ['tenantId'], where: scope });
    for (const { tenantId } of tenants) {
      const entries = await this.prisma.cacheEntry.findMany({ where: { tenantId }, orderBy: { lastUsedAt: 'desc' }, select: { id: true, result: true } });
      let used = 0;
      const over: string[] = [];
      for (const e of entries) {
        if (idleIds.has(e.id)) continue;
        used += (e.result as CachedLayer).layer?.descriptor?.size ?? 0;
        if (used > opts.cacheBudgetBytes) over.push(e.id);
      }
      evicted += over.length;
      if (!dryRun && over.length > 0) await this.prisma.cacheEntry.deleteMany({ where: { id: { in: over } } });
    }
    return evicted;
  }

  /** Every digest something still needs: manifests, what they reference, cached layers, blobs linked by recent pushes. */
  private async referencedDigests(): Promise<Set<string>> {
    const set = new Set<string>();
    for (const m of await this.prisma.manifest.findMany({ select: { digest: true } })) set.add(m.digest);
    for (const r of await this.prisma.manifestBlob.findMany({ select: { digest: true }, distinct: ['digest'] })) set.add(r.digest);
    for (const c of await this.prisma.cacheEntry.findMany({ select: { result: true } })) {
      const d = (c.result as CachedLayer).layer?.descriptor?.digest;
      if (d) set.add(d);
    }
    // An upload in progress whose first chunk was stored under the blob key its bytes hash to
    // (Registry.appendChunk): its PUT links that blob without writing it again.
    for (const u of await this.prisma.$queryRaw<Array<{ part: string }>>`SELECT DISTINCT p AS part FROM "BlobUpload", unnest("parts") AS p WHERE p LIKE 'blobs/sha256/%'`) {
      set.add(`sha256:${u.part.slice('blobs/sha256/'.length)}`);
    }
    return set;
  }

  private async isReferenced(digest: string): Promise<boolean> {
    const [m, mb] = await Promise.all([
      this.prisma.manifest.count({ where: { digest } }),
      this.prisma.manifestBlob.count({ where: { digest } }),
    ]);
    if (m + mb > 0) return true;
    const uploads = await this.prisma.$queryRaw<Array<{ n: bigint }>>`SELECT count(*) AS n FROM "BlobUpload" WHERE ${`blobs/sha256/${digest.slice('sha256:'.length)}`} = ANY("parts")`;
    if (Number(uploads[0]?.n ?? 0) > 0) return true;
    const cache = await this.prisma.$queryRaw<Array<{ n: bigint }>>`SELECT count(*) AS n FROM "CacheEntry" WHERE result->'layer'->'descriptor'->>'digest' = ${digest}`;
    return Number(cache[0]?.n ?? 0) > 0;
  }
}

import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import type { Storage } from '@strata/blobstore';
import type { PrismaClient } from '@strata/db';
import { CONTEXT_PENDING_MANIFEST_MS } from '@strata/config';
import { ContextManifestError, type ContextManifest, decodeStoredManifest, type ManifestLimits } from '@strata/oci';

export interface ContextGcOptions {
  /** A content no build has named for this long is deleted. */
  retentionMs: number;
  /** A pack no content points at is deleted this long after it was found so (a worker may be reading it). */
  graceMs: number;
  limits: ManifestLimits;
  now?: Date;
  dryRun?: boolean;
  /** Limit the run to these tenants (default: all); a limited run leaves the watermark alone. */
  tenantIds?: string[];
}

export interface ContextGcReport {
  dryRun: boolean;
  /** Manifests read to mark their contents used. */
  manifestsRead: number;
  deletedContents: number;
  deletedBytes: number;
  /** Packs rewritten with only their live contents. */
  compactedPacks: number;
  /** Packs found with no content pointing at them (deleted after the grace period). */
  retiredPacks: number;
  deletedPacks: number;
  /** Refused manifests (context-pending/) whose build by digest never came. */
  deletedPendingManifests: number;
}

const WATERMARK = 'context-store';
/** Builds created this long before the watermark are read again: a transaction may commit after a later one. */
const OVERLAP_MS = 5 * 60_000;
const PREFIX = 'context-store/';
const LOOKUP_BATCH = 10_000;
/** A pack is rewritten when less than this share of its bytes is still pointed at. */
const COMPACT_BELOW = 0.5;

/**
 * Collects the tenants' context stores (docs/adr/0032). A content's last use moves forward from the
 * manifests of the builds created since the previous run (each manifest read once); a content unused
 * past the retention is deleted; a pack object no content points at is retired and deleted after the
 * grace period; a pack mostly dead is rewritten with its live contents. The api stops vouching for a
 * content at three quarters of the retention (the client uploads it again), so a build checked
 * against the store never names a content the collector takes.
 */
export class ContextStoreCollector {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly storage: Storage,
  ) {}

  async run(opts: ContextGcOptions): Promise<ContextGcReport> {
    const now = opts.now ?? new Date();
    const report: ContextGcReport = { dryRun: opts.dryRun === true, manifestsRead: 0, deletedContents: 0, deletedBytes: 0, compactedPacks: 0, retiredPacks: 0, deletedPacks: 0, deletedPendingManifests: 0 };
    await this.markUsed(opts, now, report);
    await this.deleteUnused(opts, now, report);
    await this.sweepPacks(opts, now, report);
    await this.sweepPending(opts, now, report);
    return report;
  }

  /** Deletes the manifests the api kept for a build by digest (ADR 0025) left twice as long as the api would use them. */
  private async sweepPending(opts: ContextGcOptions, now: Date, report: ContextGcReport): Promise<void> {
    const cutoff = now.getTime() - 2 * CONTEXT_PENDING_MANIFEST_MS;
    for (const prefix of opts.tenantIds ? opts.tenantIds.map((t) => `context-pending/${t}/`) : ['context-pending/']) {
      for await (const key of this.storage.objects.list(prefix)) {
        const stat = await this.storage.objects.stat(key);
        if (!stat || stat.modified.getTime() > cutoff) continue;
        if (!report.dryRun) await this.storage.objects.delete(key);
        if (key.endsWith('.json')) report.deletedPendingManifests += 1;
      }
    }
  }

  /** Moves `lastUsedAt` forward for every content a build created since the last run named. */
  private async markUsed(opts: ContextGcOptions, now: Date, report: ContextGcReport): Promise<void> {
    const scoped = opts.tenantIds !== undefined;
    const mark = scoped ? null : await this.prisma.gcWatermark.findUnique({ where: { name: WATERMARK } });
    const since = mark ? new Date(mark.at.getTime() - OVERLAP_MS) : new Date(0);
    const builds = await this.prisma.build.findMany({
      where: {
        ...(scoped ? { tenantId: { in: opts.tenantIds } } : {}),
        contextFormat: 'manifest',
        contextKey: { not: null },
        OR: [{ createdAt: { gte: since } }, { status: { in: ['queued', 'running'] } }],
      },
      select: { tenantId: true, contextDigest: true, contextKey: true, createdAt: true, status: true },
      orderBy: { createdAt: 'desc' },
    });
    // One read per tenant and manifest, marked with its latest use (now, for a build not finished yet).
    const uses = new Map<string, { tenantId: string; key: string; at: Date }>();
    for (const b of builds) {
      const at = b.status === 'queued' || b.status === 'running' ? now : b.createdAt;
      const id = `${b.tenantId} ${b.contextDigest ?? b.contextKey}`;
      const seen = uses.get(id);
      if (!seen) uses.set(id, { tenantId: b.tenantId, key: b.contextKey!, at });
      else if (at > seen.at) seen.at = at;
    }
    for (const use of uses.values()) {
      const manifest = await this.readManifest(use.key, opts.limits);
      if (!manifest) continue;
      report.manifestsRead += 1;
      if (report.dryRun) continue;
      const hex = [...manifest.contents.keys()].map((d) => d.slice('sha256:'.length));
      for (let i = 0; i < hex.length; i += LOOKUP_BATCH) {
        await this.prisma.$executeRaw`
          UPDATE "ContextBlob" SET "lastUsedAt" = ${use.at}
          WHERE "tenantId" = ${use.tenantId}::uuid AND digest = ANY(${hex.slice(i, i + LOOKUP_BATCH)}::text[]) AND "lastUsedAt" < ${use.at}`;
      }
    }
    if (!scoped && !report.dryRun) await this.prisma.gcWatermark.upsert({ where: { name: WATERMARK }, create: { name: WATERMARK, at: now }, update: { at: now } });
  }

  private async deleteUnused(opts: ContextGcOptions, now: Date, report: ContextGcReport): Promise<void> {
    const cutoff = new Date(now.getTime() - opts.retentionMs);
    const tenants = opts.tenantIds ?? null;
    const [row] = report.dryRun
      ? await this.prisma.$queryRaw<Array<{ n: number; bytes: number }>>`
          SELECT count(*)::int AS n, COALESCE(SUM(size), 0)::float8 AS bytes FROM "ContextBlob"
          WHERE "lastUsedAt" < ${cutoff} AND (${tenants}::uuid[] IS NULL OR "tenantId" = ANY(${tenants}::uuid[]))`
      : await this.prisma.$queryRaw<Array<{ n: number; bytes: number }>>`
          WITH gone AS (
            DELETE FROM "ContextBlob" WHERE "lastUsedAt" < ${cutoff} AND (${tenants}::uuid[] IS NULL OR "tenantId" = ANY(${tenants}::uuid[]))
            RETURNING size)
          SELECT count(*)::int AS n, COALESCE(SUM(size), 0)::float8 AS bytes FROM gone`;
    report.deletedContents = row?.n ?? 0;
    report.deletedBytes = row?.bytes ?? 0;
  }

  /** Retires packs nothing points at, deletes those retired before the grace period, compacts mostly dead ones. */
  private async sweepPacks(opts: ContextGcOptions, now: Date, report: ContextGcReport): Promise<void> {
    const graceCutoff = now.getTime() - opts.graceMs;
    const prefixes = opts.tenantIds ? opts.tenantIds.map((t) => `${PREFIX}${t}/`) : [PREFIX];
    const live = new Map<string, number>();
    for (const prefix of prefixes) {
      const rows = await this.prisma.$queryRaw<Array<{ packKey: string; bytes: number }>>`
        SELECT "packKey", SUM(size)::float8 AS bytes FROM "ContextBlob" WHERE "packKey" LIKE ${`${prefix}%`} GROUP BY "packKey"`;
      for (const r of rows) live.set(r.packKey, r.bytes);
    }
    const retired = new Map<string, Date>();
    for (const prefix of prefixes) {
      for (const r of await this.prisma.contextPackRetired.findMany({ where: { key: { startsWith: prefix } } })) retired.set(r.key, r.retiredAt);
    }
    const listed = new Set<string>();
    for (const prefix of prefixes) {
      for await (const key of this.storage.objects.list(prefix)) {
        listed.add(key);
        const liveBytes = live.get(key);
        const retiredAt = retired.get(key);
        if (liveBytes !== undefined) {
          if (retiredAt && !report.dryRun) await this.prisma.contextPackRetired.deleteMany({ where: { key } });
          const stat = await this.storage.objects.stat(key);
          if (stat && stat.size > 0 && liveBytes < stat.size * COMPACT_BELOW && stat.modified.getTime() <= graceCutoff) {
            report.compactedPacks += 1;
            if (!report.dryRun) await this.compact(key, now);
          }
          continue;
        }
        if (!retiredAt) {
          // Also a pack whose upload finished a moment ago, its rows not yet written: they appear
          // long before the grace period ends, and the pack is checked again before it is deleted.
          report.retiredPacks += 1;
          if (!report.dryRun) await this.prisma.contextPackRetired.upsert({ where: { key }, create: { key, retiredAt: now }, update: {} });
          continue;
        }
        if (retiredAt.getTime() > graceCutoff) continue;
        if ((await this.prisma.contextBlob.count({ where: { packKey: key } })) > 0) {
          if (!report.dryRun) await this.prisma.contextPackRetired.deleteMany({ where: { key } });
          continue;
        }
        report.deletedPacks += 1;
        if (!report.dryRun) {
          await this.storage.objects.delete(key);
          await this.prisma.contextPackRetired.deleteMany({ where: { key } });
        }
      }
    }
    const forgotten = [...retired.keys()].filter((k) => !listed.has(k));
    if (forgotten.length > 0 && !report.dryRun) await this.prisma.contextPackRetired.deleteMany({ where: { key: { in: forgotten } } });
  }

  /**
   * Rewrites a pack with only the contents still pointing at it (one sequential read of the old
   * object), points those rows at the new pack, and retires the old one: a worker that located a
   * content in it before can read it until the grace period ends.
   */
  private async compact(key: string, now: Date): Promise<void> {
    const tenantId = key.split('/')[1];
    const rows = await this.prisma.contextBlob.findMany({ where: { packKey: key }, orderBy: { offset: 'asc' }, select: { digest: true, offset: true, size: true } });
    const ranges = rows.map((r) => ({ digest: r.digest, start: Number(r.offset), end: Number(r.offset) + Number(r.size) }));
    const newKey = `${PREFIX}${tenantId}/${randomUUID()}`;
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    const put = this.storage.objects.put(newKey, out);
    put.catch(() => undefined);
    // Contents keep their order, back to back: each one's new offset is the sum of the sizes before it.
    const moved: Array<{ digest: string; offset: number }> = [];
    let written = 0;
    for (const r of ranges) {
      moved.push({ digest: r.digest, offset: written });
      written += r.end - r.start;
    }
    try {
      let pos = 0;
      let i = 0;
      for await (const chunk of await this.storage.objects.get(key)) {
        const buf = chunk as Buffer;
        const end = pos + buf.length;
        for (; i < ranges.length && ranges[i].start < end; i += 1) {
          const r = ranges[i];
          const from = Math.max(r.start, pos);
          const to = Math.min(r.end, end);
          if (to > from && !out.write(buf.subarray(from - pos, to - pos))) await Promise.race([once(out, 'drain'), put]);
          if (r.end > end) break;
        }
        pos = end;
      }
      while (i < ranges.length && ranges[i].start === ranges[i].end && ranges[i].start <= pos) i += 1;
      if (i < ranges.length) throw new Error(`context pack ${key} is shorter (${pos} bytes) than its contents say`);
      out.end();
      await put;
    } catch (e) {
      out.destroy();
      await put.catch(() => undefined);
      await this.storage.objects.delete(newKey).catch(() => undefined);
      throw e;
    }
    for (let i = 0; i < moved.length; i += LOOKUP_BATCH) {
      const slice = moved.slice(i, i + LOOKUP_BATCH);
      // Only rows still in the old pack: an upload may have moved one meanwhile.
      await this.prisma.$executeRaw`
        UPDATE "ContextBlob" AS b SET "packKey" = ${newKey}, "offset" = x.at
        FROM unnest(${slice.map((m) => m.digest)}::text[], ${slice.map((m) => m.offset)}::bigint[]) AS x(digest, at)
        WHERE b."tenantId" = ${tenantId}::uuid AND b.digest = x.digest AND b."packKey" = ${key}`;
    }
    if ((await this.prisma.contextBlob.count({ where: { packKey: key } })) === 0) {
      await this.prisma.contextPackRetired.upsert({ where: { key }, create: { key, retiredAt: now }, update: {} });
    }
  }

  private async readManifest(key: string, limits: ManifestLimits): Promise<ContextManifest | null> {
    try {
      const chunks: Buffer[] = [];
      for await (const c of await this.storage.objects.get(key)) chunks.push(c as Buffer);
      return decodeStoredManifest(Buffer.concat(chunks), limits);
    } catch (e) {
      // Gone (the build's context was deleted) or not a manifest: it names nothing to keep.
      if ((e as Error).name === 'NotFoundError' || e instanceof ContextManifestError || e instanceof SyntaxError) return null;
      throw e;
    }
  }
}

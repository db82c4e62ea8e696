import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Storage, StorageUnavailableError } from '@strata/blobstore';
import type { CachedStep, CacheIndex, LayerSink } from '@strata/build-engine';
import type { PrismaClient, Prisma } from '@strata/db';
import type { Descriptor, Digest, PackedLayer } from '@strata/oci';

/** The spool is read for the upload in chunks this large (the default 64 KiB costs a thread-pool round trip per 64 KiB). */
const SPOOL_READ_BYTES = 1024 * 1024;

/** Attempts to store a large layer (one streamed PutObject each). */
const LAYER_PUT_ATTEMPTS = 3;

/** The cache index in Postgres, scoped to one tenant: another tenant's keys are never read. */
export class PrismaCacheIndex implements CacheIndex {
  /** Entries read ahead in one query (prefetch), by key: null where the key had no usable entry then. */
  private ahead: Promise<Map<string, CachedStep | null>> | null = null;
  /** Keys answered from `ahead`, marked used together by touchPrefetched(). */
  private readonly hits = new Set<string>();

  constructor(
    private readonly prisma: PrismaClient,
    private readonly tenantId: string,
  ) {}

  /** A hit whose layer has no Blob row is a miss: garbage collection removes the row before the blob. */
  readonly checksLayers = true;

  /**
   * Reads the entries of `keys` (the previous build's steps: what an unchanged rebuild asks for) in
   * one round trip, so each step's lookup of one of them costs none (docs/adr/0033). Read only: the
   * hits are marked used by touchPrefetched(). A failed read leaves every lookup to get().
   */
  prefetch(keys: readonly string[]): void {
    const unique = [...new Set(keys)];
    if (unique.length === 0) return;
    this.ahead = this.prisma.$queryRaw<Array<{ cacheKey: string; result: CachedStep; stored: boolean }>>`
      SELECT c."cacheKey", c."result",
        (c."result"->'layer' IS NULL OR EXISTS (SELECT 1 FROM "Blob" b WHERE b."digest" = c."result"->'layer'->'descriptor'->>'digest')) AS "stored"
      FROM "CacheEntry" c WHERE c."tenantId" = ${this.tenantId}::uuid AND c."cacheKey" = ANY(${unique}::text[])`.then(
      (rows) => {
        const found = new Map<string, CachedStep | null>(unique.map((k) => [k, null]));
        for (const r of rows) found.set(r.cacheKey, r.stored ? r.result : null);
        return found;
      },
      () => new Map(),
    );
  }

  async get(key: string): Promise<CachedStep | null> {
    const ahead = await this.ahead;
    if (ahead?.has(key)) {
      const hit = ahead.get(key) ?? null;
      // A key read ahead without an entry is a miss as it would have been a moment later; no second query.
      if (hit) this.hits.add(key);
      return hit;
    }
    // One round trip: a hit is read, checked against the blob table and marked used together
    // (every step of every build asks; an S3 HEAD per step would cost more than the query).
    const rows = await this.prisma.$queryRaw<Array<{ result: CachedStep; stored: boolean }>>`
      UPDATE "CacheEntry" SET "lastUsedAt" = now()
      WHERE "tenantId" = ${this.tenantId}::uuid AND "cacheKey" = ${key}
      RETURNING "result",
        ("result"->'layer' IS NULL OR EXISTS (SELECT 1 FROM "Blob" b WHERE b."digest" = "result"->'layer'->'descriptor'->>'digest')) AS "stored"`;
    return rows.length > 0 && rows[0].stored ? rows[0].result : null;
  }

  /** Marks the entries served from the read-ahead as used, in one statement (the build is over by then; GC's idle clock moves as get() moves it). */
  async touchPrefetched(): Promise<void> {
    const keys = [...this.hits];
    this.hits.clear();
    if (keys.length === 0) return;
    await this.prisma.$executeRaw`UPDATE "CacheEntry" SET "lastUsedAt" = now() WHERE "tenantId" = ${this.tenantId}::uuid AND "cacheKey" = ANY(${keys}::text[])`;
  }

  async put(key: string, value: CachedStep): Promise<void> {
    // Asked again later in this build (another stage): read it then, not from the read-ahead.
    void this.ahead?.then((m) => m.delete(key));
    const result = value as unknown as Prisma.InputJsonValue;
    await this.prisma.cacheEntry.upsert({
      where: { tenantId_cacheKey: { tenantId: this.tenantId, cacheKey: key } },
      update: { result, lastUsedAt: new Date() },
      create: { tenantId: this.tenantId, cacheKey: key, result },
    });
  }
}

/**
 * Layers go to the shared blob store, written once under their digest, and are recorded as Blob
 * rows. A layer is first written to a local spool file, so the step is done as soon as its digest
 * is known; the upload goes on while the next step runs (`stored` settles when it is durable, and
 * until then `open` reads the spool).
 */
export class BlobLayerSink implements LayerSink {
  private readonly spooled = new Map<string, string>();
  /** The spool directory, emptied of what a crashed worker left on first use. */
  private ready: Promise<void> | null = null;

  constructor(
    private readonly storage: Storage,
    private readonly prisma: PrismaClient,
    private readonly spoolDir: string,
  ) {}

  async store(layer: PackedLayer): Promise<{ descriptor: Descriptor; diffId: Digest; stored: Promise<void> }> {
    this.ready ??= rm(this.spoolDir, { recursive: true, force: true }).then(() => mkdir(this.spoolDir, { recursive: true })).then(() => undefined);
    await this.ready;
    const file = path.join(this.spoolDir, randomUUID());
    try {
      await pipeline(layer.stream, createWriteStream(file, { mode: 0o600, highWaterMark: SPOOL_READ_BYTES }));
    } catch (e) {
      await rm(file, { force: true });
      throw e;
    }
    const result = await layer.result;
    const digest = result.digest;
    // Another build of this worker may be spooling the same layer: the first file serves reads for both.
    if (!this.spooled.has(digest)) this.spooled.set(digest, file);
    const stored = (async () => {
      try {
        if (result.size <= 4 * 1024 * 1024) {
          // Verified against the digest the layer was written with (a mismatch throws).
          await this.storage.blobs.put(await readFile(file), digest);
        } else {
          // One streamed PutObject of the known size; the SDK cannot replay a stream, so a failed
          // attempt is retried here from the spool file (a multipart upload retried its parts).
          // The layer writer hashed these bytes on their way into the spool: not hashed again.
          for (let attempt = 1; ; attempt++) {
            try {
              await this.storage.blobs.putHashed(createReadStream(file, { highWaterMark: SPOOL_READ_BYTES }), digest, result.size);
              break;
            } catch (e) {
              if (!(e instanceof StorageUnavailableError) || attempt >= LAYER_PUT_ATTEMPTS) throw e;
              await sleep(200 * 2 ** attempt);
            }
          }
        }
        await this.prisma.blob.createMany({ data: [{ digest, size: BigInt(result.size), mediaType: result.mediaType }], skipDuplicates: true });
      } finally {
        if (this.spooled.get(digest) === file) this.spooled.delete(digest);
        await rm(file, { force: true });
      }
    })();
    stored.catch(() => undefined);
    return { descriptor: result.descriptor, diffId: result.diffId, stored };
  }

  has(digest: Digest): Promise<boolean> {
    return this.storage.blobs.exists(digest);
  }

  async open(digest: Digest): Promise<Readable> {
    const file = this.spooled.get(digest);
    if (file) {
      try {
        return await openReadStream(file);
      } catch {
        // Uploaded and removed meanwhile: the store has it.
      }
    }
    return this.storage.blobs.get(digest);
  }
}

/** A read stream that has opened its file (so a missing file fails here, not on first read). */
function openReadStream(file: string): Promise<Readable> {
  return new Promise((resolve, reject) => {
    const stream = createReadStream(file);
    stream.once('open', () => resolve(stream));
    stream.once('error', reject);
  });
}

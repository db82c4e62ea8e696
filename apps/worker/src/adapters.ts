import type { Readable } from 'node:stream';
import type { Storage } from '@strata/blobstore';
import type { BaseImage, CachedStep, CacheIndex, ImageResolver, LayerSink } from '@strata/build-engine';
import type { PrismaClient, Prisma } from '@strata/db';
import { type Descriptor, type Digest, type PackedLayer, parseImageReference } from '@strata/oci';
import { ImageNotFoundError, type ImageStore } from '@strata/registry';

/** The cache index in Postgres, scoped to one tenant: another tenant's keys are never read. */
export class PrismaCacheIndex implements CacheIndex {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly tenantId: string,
  ) {}

  async get(key: string): Promise<CachedStep | null> {
    const row = await this.prisma.cacheEntry.findUnique({ where: { tenantId_cacheKey: { tenantId: this.tenantId, cacheKey: key } } });
    if (!row) return null;
    await this.prisma.cacheEntry.update({ where: { id: row.id }, data: { lastUsedAt: new Date() } });
    return row.result as CachedStep;
  }

  async put(key: string, value: CachedStep): Promise<void> {
    const result = value as unknown as Prisma.InputJsonValue;
    await this.prisma.cacheEntry.upsert({
      where: { tenantId_cacheKey: { tenantId: this.tenantId, cacheKey: key } },
      update: { result, lastUsedAt: new Date() },
      create: { tenantId: this.tenantId, cacheKey: key, result },
    });
  }
}

/** Layers go to the shared blob store, written once under their digest, and are recorded as Blob rows. */
export class BlobLayerSink implements LayerSink {
  constructor(
    private readonly storage: Storage,
    private readonly prisma: PrismaClient,
  ) {}

  async store(layer: PackedLayer): Promise<{ descriptor: Descriptor; diffId: Digest }> {
    const stored = await this.storage.blobs.put(layer.stream);
    const result = await layer.result;
    if (stored.digest !== result.digest) throw new Error(`layer digest changed while storing: ${result.digest} became ${stored.digest}`);
    await this.prisma.blob.upsert({
      where: { digest: result.digest },
      update: {},
      create: { digest: result.digest, size: BigInt(result.size), mediaType: result.mediaType },
    });
    return { descriptor: result.descriptor, diffId: result.diffId };
  }

  has(digest: Digest): Promise<boolean> {
    return this.storage.blobs.exists(digest);
  }

  open(digest: Digest): Promise<Readable> {
    return this.storage.blobs.get(digest);
  }
}

/** FROM resolution: a short name is the tenant's own repository. */
export class TenantImageResolver implements ImageResolver {
  constructor(
    private readonly images: ImageStore,
    private readonly tenantId: string,
  ) {}

  async resolve(ref: string): Promise<BaseImage> {
    let parsed;
    try {
      parsed = parseImageReference(ref);
    } catch (e) {
      throw new Error((e as Error).message);
    }
    if (parsed.registry) throw new Error(`pulling from the registry "${parsed.registry}" is not supported yet; use an image of your own repositories`);
    const reference = parsed.digest ?? parsed.tag ?? 'latest';
    try {
      const image = await this.images.resolve(this.tenantId, parsed.repository, reference);
      return {
        ref: `${parsed.repository}${parsed.digest ? `@${parsed.digest}` : `:${reference}`}`,
        source: 'tenant',
        manifestDigest: image.manifestDigest,
        config: image.config,
        layers: image.manifest.layers,
      };
    } catch (e) {
      if (e instanceof ImageNotFoundError) throw new Error(`${e.message} (import a base image with POST /v1/repositories/{name}/import, or build it first)`);
      throw e;
    }
  }
}

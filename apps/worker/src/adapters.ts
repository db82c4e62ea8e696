import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Storage } from '@strata/blobstore';
import type { BaseImage, CachedStep, CacheIndex, ImageResolver, LayerSink } from '@strata/build-engine';
import type { PrismaClient, Prisma } from '@strata/db';
import { type Descriptor, type Digest, type PackedLayer, parseImageReference } from '@strata/oci';
import type { PullSettings } from '@strata/config';
import {
  ImageNotFoundError,
  type ImageStore,
  type PullBlobStore,
  type PullStats,
  RegistryClient,
  RegistryPullError,
  type RegistryAuth,
  splitName,
} from '@strata/registry';

/** The cache index in Postgres, scoped to one tenant: another tenant's keys are never read. */
export class PrismaCacheIndex implements CacheIndex {
  constructor(
    private readonly prisma: PrismaClient,
    private readonly tenantId: string,
  ) {}

  /** A hit whose layer has no Blob row is a miss: garbage collection removes the row before the blob. */
  readonly checksLayers = true;

  async get(key: string): Promise<CachedStep | null> {
    // One round trip: a hit is read, checked against the blob table and marked used together
    // (every step of every build asks; an S3 HEAD per step would cost more than the query).
    const rows = await this.prisma.$queryRaw<Array<{ result: CachedStep; stored: boolean }>>`
      UPDATE "CacheEntry" SET "lastUsedAt" = now()
      WHERE "tenantId" = ${this.tenantId}::uuid AND "cacheKey" = ${key}
      RETURNING "result",
        ("result"->'layer' IS NULL OR EXISTS (SELECT 1 FROM "Blob" b WHERE b."digest" = "result"->'layer'->'descriptor'->>'digest')) AS "stored"`;
    return rows.length > 0 && rows[0].stored ? rows[0].result : null;
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
      await pipeline(layer.stream, createWriteStream(file, { mode: 0o600 }));
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
        const body = result.size <= 4 * 1024 * 1024 ? await readFile(file) : createReadStream(file);
        // Verified against the digest the layer was written with (a mismatch throws).
        await this.storage.blobs.put(body, digest);
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

/** What FROM resolution needs of the deployment's settings. */
export interface ResolverSettings {
  publicUrl: string;
  pull: PullSettings;
}

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * FROM resolution. A reference with a registry host is pulled from that host, except Strata's own
 * public host, which resolves internally (`<tenant>/<repository>`: the build's own tenant, or a
 * public repository of another). A short name (`busybox:1`, `team/app`) is the tenant's own
 * repository of that name when one exists, otherwise the deployment's upstream registry
 * (`library/` prefixed to single-component names, as Docker Hub names them).
 *
 * Pulls re-resolve a tag on every build, as BuildKit does (a moved tag is seen at once); a digest
 * reference whose manifest is stored needs no request at all. Manifests, configs and layers go to
 * the blob store verified against their digests, and blobs already stored are never fetched again.
 */
export class TenantImageResolver implements ImageResolver {
  private readonly client: RegistryClient | null;

  constructor(
    private readonly images: ImageStore,
    private readonly tenantId: string,
    private readonly pull?: {
      prisma: PrismaClient;
      blobs: PullBlobStore;
      settings: ResolverSettings;
      credentials?: RegistryAuth;
      /** Told what a pull fetched, for the build log. */
      onPull?: (ref: string, stats: PullStats) => void;
      client?: RegistryClient;
    },
  ) {
    this.client = pull
      ? (pull.client ??
        new RegistryClient({
          insecureRegistries: pull.settings.pull.insecureRegistries,
          credentials: (host) => pull.credentials?.[host.toLowerCase()],
          userAgent: 'strata-worker',
        }))
      : null;
  }

  async resolve(ref: string): Promise<BaseImage> {
    let parsed;
    try {
      parsed = parseImageReference(ref);
    } catch (e) {
      throw new Error((e as Error).message);
    }
    const reference = parsed.digest ?? parsed.tag ?? 'latest';
    const at = parsed.digest ? `@${parsed.digest}` : `:${reference}`;
    if (parsed.registry) {
      if (this.pull && this.isOwnHost(parsed.registry)) return this.resolveOwnHost(parsed.registry, parsed.repository, reference, at);
      let host = parsed.registry;
      let repository = parsed.repository;
      if (DOCKER_HUB_HOSTS.has(host.toLowerCase())) {
        host = 'registry-1.docker.io';
        if (!repository.includes('/')) repository = `library/${repository}`;
      }
      return this.pullImage(host, repository, reference, at);
    }
    try {
      return await this.fromTenant(this.tenantId, parsed.repository, reference, `${parsed.repository}${at}`, 'tenant');
    } catch (e) {
      if (!(e instanceof ImageNotFoundError)) throw e;
      // A repository of that name that lacks the tag is still the tenant's: no fallback upstream.
      const repoExists =
        this.pull !== undefined &&
        (await this.pull.prisma.repository.findUnique({ where: { tenantId_name: { tenantId: this.tenantId, name: parsed.repository } }, select: { id: true } })) !== null;
      if (repoExists || !this.pull || this.pull.settings.pull.upstreamRegistry === null) {
        throw new Error(`${e.message} (import a base image with POST /v1/repositories/{name}/import, or build it first)`);
      }
    }
    const upstream = this.pull.settings.pull.upstreamRegistry;
    if (upstream === null) throw new Error(`repository "${parsed.repository}" does not exist`);
    const repository = parsed.repository.includes('/') ? parsed.repository : `library/${parsed.repository}`;
    return this.pullImage(upstream, repository, reference, at, ` (no repository "${parsed.repository}" of your own, so it was looked up in ${upstream})`);
  }

  private isOwnHost(host: string): boolean {
    try {
      return new URL(this.pull!.settings.publicUrl).host.toLowerCase() === host.toLowerCase();
    } catch {
      return false;
    }
  }

  private async resolveOwnHost(host: string, name: string, reference: string, at: string): Promise<BaseImage> {
    const parts = splitName(name);
    if (!parts) throw new Error(`"${host}/${name}" names no repository: images here are <tenant>/<repository>`);
    const tenant = await this.pull!.prisma.tenant.findUnique({ where: { name: parts.tenantName }, select: { id: true } });
    const own = tenant?.id === this.tenantId;
    let visible = own;
    if (tenant && !own) {
      const repo = await this.pull!.prisma.repository.findFirst({ where: { tenantId: tenant.id, name: parts.repository, public: true }, select: { id: true } });
      visible = repo !== null;
    }
    // Another tenant's private repository reads as not existing, as the registry answers it.
    if (!tenant || !visible) throw new Error(`"${host}/${name}" does not exist or is not readable by this tenant`);
    try {
      return await this.fromTenant(tenant.id, parts.repository, reference, `${host}/${name}${at}`, own ? 'tenant' : 'registry');
    } catch (e) {
      if (e instanceof ImageNotFoundError) throw new Error(`"${host}/${name}${at}" does not exist`);
      throw e;
    }
  }

  private async fromTenant(tenantId: string, repository: string, reference: string, shownRef: string, source: BaseImage['source']): Promise<BaseImage> {
    const image = await this.images.resolve(tenantId, repository, reference);
    return { ref: shownRef, source, manifestDigest: image.manifestDigest, config: image.config, layers: image.manifest.layers };
  }

  private async pullImage(host: string, repository: string, reference: string, at: string, why = ''): Promise<BaseImage> {
    const { blobs, onPull } = this.pull!;
    const shown = `${host}/${repository}${at}`;
    try {
      const image = await this.client!.resolve(host, repository, reference, blobs);
      const stats = await this.client!.pullBlobs(host, repository, image.manifest.layers, blobs);
      onPull?.(shown, stats);
      return { ref: shown, source: 'registry', manifestDigest: image.manifestDigest, config: image.config, layers: image.manifest.layers };
    } catch (e) {
      if (e instanceof RegistryPullError) throw new Error(`pulling ${shown} failed: ${e.message}${why}`);
      throw e;
    }
  }
}

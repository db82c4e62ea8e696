import type { Readable } from 'node:stream';
import { type PrismaClient, retryOnUniqueViolation } from '@strata/db';
import {
  type Descriptor,
  type Digest,
  encodeJsonBlob,
  type ImageConfig,
  type ImageManifest,
  MediaType,
} from '@strata/oci';

/** How long a publish may wait for a connection, and how long its transaction may take (row-lock waits included). */
const PUBLISH_MAX_WAIT_MS = 10_000;
const PUBLISH_TIMEOUT_MS = 60_000;

/** What the image store needs of the content-addressed blob store. */
export interface ImageBlobs {
  put(body: Buffer | Readable, expectedDigest?: Digest): Promise<{ digest: Digest; size: number }>;
  get(digest: Digest): Promise<Readable>;
}

export interface StoredImage {
  repositoryId: string;
  manifestDigest: Digest;
  manifest: ImageManifest;
  config: ImageConfig;
  configDigest: Digest;
}

/** An image's config and manifest as stored by `ImageStore.storeDocuments`. */
export interface StoredDocuments {
  config: { descriptor: Descriptor };
  manifest: { descriptor: Descriptor };
}

export class ImageNotFoundError extends Error {
  override readonly name = 'ImageNotFoundError';
}

async function readAll(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error(`document larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

const MAX_DOCUMENT = 4 * 1024 * 1024;

/**
 * Images as a tenant's repositories see them: manifests and configs in the blob store, the
 * manifest → blob references and tags in Postgres. Builds, imports and the registry publish
 * through here, so a tag only ever points at a manifest whose blobs are all stored.
 */
export class ImageStore {
  /**
   * Manifests and configs read lately, by digest: immutable, so every FROM of the same base need
   * not fetch them again. Only read after the tenant's own tag or manifest row named the digest.
   */
  private readonly documents = new Map<string, Buffer>();

  constructor(
    private readonly prisma: PrismaClient,
    private readonly blobs: ImageBlobs,
  ) {}

  /** Stores config and manifest, records the references, then moves the tags, all or nothing. */
  async publish(args: {
    tenantId: string;
    repositoryId: string;
    config: ImageConfig;
    layers: Descriptor[];
    tags: string[];
    buildId?: string;
    /** What {@link storeDocuments} answered for this config and these layers, when the caller stored them ahead. */
    stored?: StoredDocuments;
  }): Promise<{ manifestDigest: Digest; configDigest: Digest; manifestSize: number }> {
    const { config, manifest } = args.stored ?? (await this.storeDocuments(args.config, args.layers, args.repositoryId));
    await this.recordManifest({
      tenantId: args.tenantId,
      repositoryId: args.repositoryId,
      manifest: manifest.descriptor,
      references: [config.descriptor, ...args.layers],
      configDigest: config.descriptor.digest,
      tags: args.tags,
      ...(args.buildId === undefined ? {} : { buildId: args.buildId }),
    });
    return { manifestDigest: manifest.descriptor.digest, configDigest: config.descriptor.digest, manifestSize: manifest.descriptor.size };
  }

  /**
   * Stores an image's config and manifest blobs, nothing more: no row or tag names them until
   * `publish({ stored })`. A build stores them while its last layer uploads finish.
   */
  async storeDocuments(imageConfig: ImageConfig, layers: Descriptor[], repositoryId?: string): Promise<StoredDocuments> {
    const config = encodeJsonBlob(MediaType.ociConfig, imageConfig);
    const manifestDoc: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: config.descriptor,
      layers,
    };
    const manifest = encodeJsonBlob(MediaType.ociManifest, manifestDoc);
    // A manifest the repository records is stored with its config (garbage collection keeps what a
    // manifest row names): an unchanged rebuild's image needs no S3 request at all (docs/adr/0033).
    const recorded =
      repositoryId === undefined
        ? null
        : await this.prisma.manifest.findUnique({ where: { repositoryId_digest: { repositoryId, digest: manifest.descriptor.digest } }, select: { configDigest: true } });
    if (recorded?.configDigest !== config.descriptor.digest) {
      await Promise.all([this.blobs.put(config.bytes, config.descriptor.digest), this.blobs.put(manifest.bytes, manifest.descriptor.digest)]);
    }
    return { config: { descriptor: config.descriptor }, manifest: { descriptor: manifest.descriptor } };
  }

  /**
   * Records a manifest whose bytes are already stored under its digest: the Blob rows, the
   * Manifest row, what it references (so garbage collection keeps those), then moves the tags,
   * all in one transaction. Builds (through `publish`) and registry pushes both end here.
   */
  async recordManifest(args: {
    tenantId: string;
    repositoryId: string;
    manifest: Descriptor;
    /** Blobs and child manifests the manifest names; all must already be stored. */
    references: Descriptor[];
    configDigest?: Digest | null;
    subject?: Digest | null;
    artifactType?: string | null;
    tags: string[];
    buildId?: string;
  }): Promise<void> {
    const { manifest } = args;
    // Blob rows in digest order: concurrent publishes that share blobs (a base image's layers) then
    // take their row locks in the same order and wait for each other instead of deadlocking.
    const blobs = [...new Map([...args.references, manifest].map((d) => [d.digest, d])).values()].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    // Concurrent publishes of the same content race on unique rows; the loser runs again and finds them.
    await retryOnUniqueViolation(() => this.prisma.$transaction(async (tx) => {
      await tx.blob.createMany({
        data: blobs.map((d) => ({ digest: d.digest, size: BigInt(d.size), mediaType: d.mediaType })),
        skipDuplicates: true,
      });
      const row = await tx.manifest.upsert({
        where: { repositoryId_digest: { repositoryId: args.repositoryId, digest: manifest.digest } },
        update: {},
        create: {
          tenantId: args.tenantId,
          repositoryId: args.repositoryId,
          digest: manifest.digest,
          mediaType: manifest.mediaType,
          configDigest: args.configDigest ?? null,
          size: manifest.size,
          subject: args.subject ?? null,
          artifactType: args.artifactType ?? null,
        },
      });
      await tx.manifestBlob.createMany({
        data: [...new Set(args.references.map((d) => d.digest))].map((digest) => ({ manifestId: row.id, digest })),
        skipDuplicates: true,
      });
      for (const name of args.tags) {
        const tag = await tx.tag.upsert({
          where: { repositoryId_name: { repositoryId: args.repositoryId, name } },
          update: { manifestDigest: manifest.digest },
          create: { tenantId: args.tenantId, repositoryId: args.repositoryId, name, manifestDigest: manifest.digest },
        });
        await tx.tagHistory.create({ data: { tagId: tag.id, manifestDigest: manifest.digest, buildId: args.buildId ?? null } });
      }
      // A Blob row another publish inserted and has not committed yet makes this one wait for it: on a
      // loaded machine that can pass Prisma's 5 s default, and a wait is not a failure. A stuck lock still ends it.
    }, { maxWait: PUBLISH_MAX_WAIT_MS, timeout: PUBLISH_TIMEOUT_MS }));
  }

  /** Resolves `repository:tag` (or a digest) within one tenant; other tenants' repositories do not exist here. */
  async resolve(tenantId: string, repository: string, reference: string): Promise<StoredImage> {
    const repo = await this.prisma.repository.findUnique({ where: { tenantId_name: { tenantId, name: repository } } });
    if (!repo) throw new ImageNotFoundError(`repository "${repository}" does not exist`);
    let digest: string;
    if (reference.startsWith('sha256:')) {
      const m = await this.prisma.manifest.findUnique({ where: { repositoryId_digest: { repositoryId: repo.id, digest: reference } } });
      if (!m) throw new ImageNotFoundError(`"${repository}@${reference}" does not exist`);
      digest = m.digest;
    } else {
      const tag = await this.prisma.tag.findUnique({ where: { repositoryId_name: { repositoryId: repo.id, name: reference } } });
      if (!tag) throw new ImageNotFoundError(`"${repository}:${reference}" does not exist`);
      digest = tag.manifestDigest;
    }
    const manifest = JSON.parse((await this.readBlob(digest as Digest)).toString('utf8')) as ImageManifest;
    const config = JSON.parse((await this.readBlob(manifest.config.digest)).toString('utf8')) as ImageConfig;
    return { repositoryId: repo.id, manifestDigest: digest as Digest, manifest, config, configDigest: manifest.config.digest };
  }

  async readBlob(digest: Digest): Promise<Buffer> {
    const hit = this.documents.get(digest);
    if (hit) return hit;
    const bytes = await readAll(await this.blobs.get(digest), MAX_DOCUMENT);
    if (bytes.length <= 256 * 1024) {
      this.documents.set(digest, bytes);
      if (this.documents.size > 512) this.documents.delete(this.documents.keys().next().value as string);
    }
    return bytes;
  }
}

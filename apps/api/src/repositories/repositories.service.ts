import { BadRequestException, Inject, Injectable, NotFoundException } from '@nestjs/common';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { Response } from 'express';
import { PrismaService, retryOnUniqueViolation } from '@strata/db';
import { DigestingStream, type Digest, type ImageConfig, MediaType, writeOciLayoutTar } from '@strata/oci';
import { ImageNotFoundError, ImageStore } from '@strata/registry';
import { STORAGE, type Storage } from '../storage/storage.provider.js';

@Injectable()
export class RepositoriesService {
  private readonly images: ImageStore;

  constructor(
    private readonly prisma: PrismaService,
    @Inject(STORAGE) private readonly storage: Storage,
  ) {
    this.images = new ImageStore(prisma, storage.blobs);
  }

  async list(tenantId: string) {
    const repos = await this.prisma.repository.findMany({
      where: { tenantId },
      orderBy: { name: 'asc' },
      include: { _count: { select: { tags: true, builds: true } } },
    });
    return {
      repositories: repos.map((r) => ({ name: r.name, public: r.public, createdAt: r.createdAt.toISOString(), tags: r._count.tags, builds: r._count.builds })),
    };
  }

  private async repository(tenantId: string, name: string) {
    const repo = await this.prisma.repository.findUnique({ where: { tenantId_name: { tenantId, name } } });
    if (!repo) throw new NotFoundException(`Repository "${name}" does not exist.`);
    return repo;
  }

  async tags(tenantId: string, name: string) {
    const repo = await this.repository(tenantId, name);
    const tags = await this.prisma.tag.findMany({ where: { tenantId, repositoryId: repo.id }, orderBy: { name: 'asc' } });
    const sizes = new Map(await Promise.all([...new Set(tags.map((t) => t.manifestDigest))].map(async (d) => [d, await this.imageSize(d)] as const)));
    return {
      repository: name,
      tags: tags.map((t) => ({ name: t.name, digest: t.manifestDigest, size: sizes.get(t.manifestDigest) ?? null, updatedAt: t.updatedAt.toISOString() })),
    };
  }

  /** What a pull downloads: the manifest, its config and its (compressed) layers; null for an index or an unreadable manifest. */
  private async imageSize(digest: string): Promise<number | null> {
    try {
      const bytes = await this.images.readBlob(digest as Digest);
      const manifest = JSON.parse(bytes.toString('utf8')) as { config?: { size?: number }; layers?: Array<{ size?: number }> };
      if (!manifest.config || !Array.isArray(manifest.layers)) return null;
      return bytes.length + (manifest.config.size ?? 0) + manifest.layers.reduce((sum, l) => sum + (l.size ?? 0), 0);
    } catch {
      return null;
    }
  }

  /** Removes a tag; the image stays reachable by digest and other tags until garbage collection finds it unreferenced. */
  async deleteTag(tenantId: string, name: string, tag: string): Promise<void> {
    const repo = await this.repository(tenantId, name);
    const { count } = await this.prisma.tag.deleteMany({ where: { tenantId, repositoryId: repo.id, name: tag } });
    if (count === 0) throw new NotFoundException(`Tag "${name}:${tag}" does not exist.`);
  }

  async streamOciArchive(tenantId: string, name: string, tag: string, res: Response): Promise<void> {
    let image;
    try {
      image = await this.images.resolve(tenantId, name, tag);
    } catch (e) {
      if (e instanceof ImageNotFoundError) throw new NotFoundException(`Image "${name}:${tag}" does not exist.`);
      throw e;
    }
    res.status(200);
    res.setHeader('Content-Type', 'application/x-tar');
    res.setHeader('Content-Disposition', `attachment; filename="${name.replace(/\//g, '_')}_${tag}.oci.tar"`);
    res.setHeader('Docker-Content-Digest', image.manifestDigest);
    const manifestSize = (await this.images.readBlob(image.manifestDigest)).length;
    await writeOciLayoutTar(
      {
        images: [{ descriptor: { mediaType: MediaType.ociManifest, digest: image.manifestDigest, size: manifestSize }, refName: tag }],
        openBlob: (digest: Digest) => this.storage.blobs.get(digest),
      },
      res,
    );
    res.end();
  }

  /** One layer from a root filesystem tar, as `docker import`: the tar is kept as it is, gzipped. */
  async importRootfs(tenantId: string, name: string, tag: string, body: Readable) {
    const { head, rest } = await sniffBody(body);
    const gzipped = head[0] === 0x1f && head[1] === 0x8b;
    const tarStream: Readable = gzipped ? rest.pipe(createGunzip()) : rest;
    const diff = new DigestingStream();
    const gz = createGzip();
    const sink = new PassThrough();
    let firstBlock: Buffer | null = null;
    const check = new PassThrough();
    check.once('data', (chunk: Buffer) => {
      firstBlock = chunk;
    });
    const piping = pipeline(tarStream, check, diff, gz, sink);
    const stored = this.storage.blobs.put(sink);
    try {
      await Promise.all([piping, stored]);
    } catch (e) {
      throw new BadRequestException(`The root filesystem could not be read: ${(e as Error).message}.`);
    }
    const block = firstBlock as Buffer | null;
    if (!block || block.length < 262 || block.subarray(257, 262).toString('latin1') !== 'ustar') {
      throw new BadRequestException('The body is not a tar archive (no ustar header in its first block).');
    }
    const layer = await stored;
    const created = new Date().toISOString();
    const config: ImageConfig = {
      created,
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [diff.digest] },
      history: [{ created, created_by: 'strata import', comment: 'Imported from a root filesystem tar' }],
    };
    const repo = await retryOnUniqueViolation(() =>
      this.prisma.repository.upsert({ where: { tenantId_name: { tenantId, name } }, update: {}, create: { tenantId, name } }),
    );
    const result = await this.images.publish({
      tenantId,
      repositoryId: repo.id,
      config,
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
      tags: [tag],
    });
    return { repository: name, tag, digest: result.manifestDigest, layers: [{ digest: layer.digest, diffId: diff.digest, size: layer.size }] };
  }
}

/** Reads the first bytes to tell tar from gzip, then hands on a stream of the whole body. */
async function sniffBody(body: Readable): Promise<{ head: Buffer; rest: Readable }> {
  const rest = new PassThrough();
  const head = await new Promise<Buffer>((resolve, reject) => {
    let got = Buffer.alloc(0);
    let ended = false;
    const finish = () => {
      body.off('data', onData);
      body.off('end', onEnd);
      body.pause();
      rest.write(got);
      if (ended) rest.end();
      else body.pipe(rest);
      resolve(got);
    };
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2) finish();
    };
    const onEnd = () => {
      ended = true;
      finish();
    };
    body.on('data', onData);
    body.once('end', onEnd);
    body.once('error', reject);
  });
  body.resume();
  return { head, rest };
}

import { BadRequestException, ConflictException, HttpException, HttpStatus, Inject, Injectable, NotFoundException, type OnModuleDestroy, UnsupportedMediaTypeException } from '@nestjs/common';
import { Redis } from 'ioredis';
import { createHash, randomUUID } from 'node:crypto';
import { pipeline, Transform, type Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { readUpTo } from '@strata/blobstore';
import { buildCancelChannel, contextStaleBefore, sealSecrets, STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService, type Prisma, retryOnUniqueViolation } from '@strata/db';
import { type RegistryAuth, registryAuthToEntries } from '@strata/registry';
import { type BuildScheduler, logEvent, redisConnection } from '@strata/queue';
import { CONTEXT_MANIFEST_MEDIA_TYPE, readTarEntries } from '@strata/oci';
import { ContextStoreService } from '../contexts/context-store.service.js';
import { BUILD_SCHEDULER_TOKEN, BUILDS_QUEUE_TOKEN, type BuildsQueue } from '../queue.provider.js';
import { QuotasService } from '../tenancy/quotas.service.js';
import { STORAGE, type Storage } from '../storage/storage.provider.js';
import { toBuildView, type BuildView } from './build-view.js';
import { ContextArchiveCheck } from './context-archive-check.js';
import { captureDockerfile, dockerfileText, manifestDockerfile, streamingDockerfileCapture } from './dockerfile-capture.js';
import { decodeCursor, encodeCursor } from './cursor.js';
import { buildsVisibleTo } from './visible-builds.js';

/**
 * A build's steps as its view shows them: without the fingerprint (a COPY's holds up to 5,000 file
 * hashes, read only by the worker to explain misses), which every GET of a large build parsed and dropped.
 */
const STEPS_FOR_VIEW = { omit: { fingerprint: true } } as const;

/**
 * The Build columns a view never shows, left in the database when builds are read for one: the
 * Dockerfile read at upload (up to 256 KiB a row, which a list of 100 builds would carry) and the
 * sealed secrets and registry credentials.
 */
const BUILD_COLUMNS_NOT_VIEWED = { dockerfileText: true, secretsSealed: true, registryAuthSealed: true } as const;

export interface BuildRequest {
  repository: string;
  tags: string[];
  dockerfile: string;
  target?: string;
  buildArgs: Record<string, string>;
  noCache: boolean;
  noCacheFilter: string[];
  contentType: string | undefined;
  /** For a context manifest: identity or gzip. */
  contentEncoding?: string;
  /** Strata-Context-Digest: build from the manifest of that digest this tenant already sent. */
  contextDigest?: string;
  /** Registry credentials for FROM pulls; sealed before they are stored. */
  registryAuth?: RegistryAuth;
}

/** The worker refuses Dockerfiles above this size too. */
const DOCKERFILE_MAX_BYTES = 4 * 1024 * 1024;

/** The reconciler claimed this upload's row (it looked abandoned) before the Build could be made. */
class ContextUploadSwept extends Error {}

/** Tar contexts up to this size are read whole before they are stored, so an unchanged one is not stored again (docs/adr/0033). */
const REUSE_MAX_BYTES = 4 * 1024 * 1024;

const isGzip = (b: Buffer) => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;

/** A context sent as a manifest, where it is kept (docs/adr/0025). */
interface StoredContext {
  contextKey: string;
  size: number;
  digest: string;
  /** The Dockerfile read from the context's contents (ADR 0041), when the manifest was sent. */
  dockerfileText?: string | null;
}

const CONTEXT_TYPES = new Set(['application/x-tar', 'application/tar', 'application/gzip', 'application/x-gzip', 'application/octet-stream']);

@Injectable()
export class BuildsService implements OnModuleDestroy {
  /** Publishes cancel requests to the workers; opened on the first cancel of a running build. */
  private publisher: Redis | null = null;

  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
    @Inject(STORAGE) private readonly storage: Storage,
    @Inject(BUILDS_QUEUE_TOKEN) private readonly queue: BuildsQueue,
    @Inject(BUILD_SCHEDULER_TOKEN) private readonly scheduler: BuildScheduler,
    private readonly quotas: QuotasService,
    private readonly contextStore: ContextStoreService,
  ) {}

  /**
   * Streams the context to S3 (never whole in memory above REUSE_MAX_BYTES), records the build and
   * queues it. Nothing is recorded unless the whole context arrived within the size limit. A small
   * context is read whole first: when an earlier build of the same tenant stored the same bytes, the
   * build uses that object and nothing is stored (docs/adr/0033).
   */
  async submit(tenantId: string, req: BuildRequest, body: Readable, secrets: ReadonlyMap<string, Buffer> = new Map()): Promise<BuildView> {
    const type = (req.contentType ?? '').split(';')[0].trim().toLowerCase();
    if (req.contextDigest || type === CONTEXT_MANIFEST_MEDIA_TYPE) return this.submitManifest(tenantId, req, body, secrets);
    if (!CONTEXT_TYPES.has(type)) {
      body.resume();
      throw new UnsupportedMediaTypeException(
        `The build context must be sent as application/x-tar or application/gzip, not "${req.contentType ?? 'nothing'}" (or as a context manifest: ${CONTEXT_MANIFEST_MEDIA_TYPE}).`,
      );
    }
    const id = randomUUID();
    let contextKey = `contexts/${id}`;
    const limit = this.config.maxContextBytes;
    let size = 0;
    let tooLarge = false;
    const contextHash = createHash('sha256');
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        contextHash.update(chunk);
        if (size > limit) {
          tooLarge = true;
          done(new Error('context too large'));
          return;
        }
        done(null, chunk);
      },
    });
    const archive = new ContextArchiveCheck();
    body.on('error', (e) => counter.destroy(e));
    counter.on('error', (e) => archive.destroy(e));
    body.pipe(counter).pipe(archive);
    const refused = (e: unknown): unknown => {
      body.resume();
      if (archive.refusal) return archive.refusal;
      if (tooLarge) {
        return new HttpException(
          { statusCode: 413, error: 'Payload Too Large', message: `The build context is larger than the limit of ${limit} bytes.` },
          HttpStatus.PAYLOAD_TOO_LARGE,
        );
      }
      return e;
    };
    // A context that fits in REUSE_MAX_BYTES is read whole before anything goes to S3, so its digest
    // is known first; a larger one streams on as it arrives.
    let head: { bytes: Buffer; rest: Readable | null };
    try {
      head = await readUpTo(archive, REUSE_MAX_BYTES);
    } catch (e) {
      throw refused(e);
    }
    if (size === 0) throw new BadRequestException('The request body is empty: send the build context as a tar or tar.gz archive.');
    const reused = head.rest === null ? await this.storedTarContext(tenantId, `sha256:${contextHash.copy().digest('hex')}`, size) : null;
    if (reused) contextKey = reused.contextKey;
    // The context's Dockerfile, read while the context is stored (docs/adr/0041): the earlier
    // build's for the same bytes and path; from a context read whole; from a larger plain tar beside
    // its upload as it streams (a large tar.gz is the worker's to read). The worker starts the steps
    // that do not read the context while it fetches the context.
    const streamed = head.rest !== null && !isGzip(head.bytes) ? streamingDockerfileCapture(req.dockerfile, limit + 1024 * 1024) : null;
    const upload = head.rest === null ? head.bytes : streamed ? pipeline(head.rest, streamed.tap, () => undefined) : head.rest;
    const dockerfileText =
      reused?.dockerfilePath === req.dockerfile
        ? Promise.resolve(reused.dockerfileText)
        : head.rest === null
          ? captureDockerfile(head.bytes, req.dockerfile)
          : (streamed?.dockerfile ?? Promise.resolve(null));
    // Recorded before the first byte goes to S3 and refreshed while the request is open: if this
    // process dies mid-upload, the reconciler finds the row gone stale and deletes what reached S3.
    const abandon = async () => {
      if (reused) return; // another build's context: never ours to delete
      await this.storage.objects.delete(contextKey).catch(() => undefined);
      await this.prisma.contextUpload.deleteMany({ where: { id } }).catch(() => undefined);
    };
    if (!reused) {
      await this.prisma.contextUpload.create({ data: { id, tenantId, queue: this.config.queuePrefix, key: contextKey } });
      const beat = setInterval(() => {
        this.prisma.contextUpload.updateMany({ where: { id }, data: { updatedAt: new Date() } }).catch(() => undefined);
      }, Math.max(100, Math.floor(this.config.reconcile.workerStaleMs / 3)));
      try {
        await this.storage.objects.put(contextKey, upload);
      } catch (e) {
        await abandon();
        throw refused(e);
      } finally {
        clearInterval(beat);
      }
    }
    const contextDigest = `sha256:${contextHash.digest('hex')}`;
    const captured = await dockerfileText;

    const { common, repository } = await this.buildRecord(id, tenantId, req, secrets);
    // The upload's row is deleted in the transaction that makes the Build: either the build exists
    // with its context, or the reconciler (which claims a stale row the same way) removes the context.
    const record = async (tx: Prisma.TransactionClient) => {
      if (!reused) {
        const claimed = await tx.contextUpload.deleteMany({ where: { id } });
        if (claimed.count === 0) throw new ContextUploadSwept();
      }
      // A new build has no steps, and its repository is known: the insert alone.
      return tx.build.create({ data: { ...common, contextKey, contextSize: BigInt(size), contextDigest, dockerfileText: captured } });
    };
    let build;
    try {
      // The queued-builds quota is checked again here, atomically with the insert (QuotasService.withQueuedSlot).
      build = await this.quotas.withQueuedSlot(tenantId, (tx) => (tx ? record(tx) : reused ? record(this.prisma) : this.prisma.$transaction((t) => record(t))));
    } catch (e) {
      await abandon();
      if (e instanceof ContextUploadSwept) {
        throw new HttpException(
          { statusCode: 503, error: 'Service Unavailable', message: 'The upload of the build context was abandoned (its api process went quiet for too long) and nothing was recorded: send the build again.' },
          HttpStatus.SERVICE_UNAVAILABLE,
        );
      }
      throw e;
    }
    await this.scheduler.enqueue({ buildId: id, tenantId });
    logEvent('info', 'build queued', { buildId: id, tenantId, repository: req.repository, contextBytes: size });
    return toBuildView({ ...build, repository, steps: [] });
  }

  /**
   * The key of a tar context with these bytes that an earlier build of this tenant stored, recently
   * enough to be kept (as a build by manifest digest reuses one), with the Dockerfile that build read
   * from it at its path (ADR 0041), or null. Only this tenant's builds
   * are looked at: another tenant's identical context is never used, nor is its existence revealed.
   */
  private async storedTarContext(tenantId: string, digest: string, size: number): Promise<{ contextKey: string; dockerfilePath: string; dockerfileText: string | null } | null> {
    const earlier = await this.prisma.build.findFirst({
      where: { tenantId, source: 'upload', contextFormat: 'tar', contextDigest: digest, contextSize: BigInt(size), contextKey: { not: null }, createdAt: { gte: contextStaleBefore(this.config) } },
      orderBy: { createdAt: 'desc' },
      select: { contextKey: true, dockerfilePath: true, dockerfileText: true },
    });
    if (!earlier?.contextKey) return null;
    const stored = await this.storage.objects.stat(earlier.contextKey);
    return stored?.size === size ? { contextKey: earlier.contextKey, dockerfilePath: earlier.dockerfilePath, dockerfileText: earlier.dockerfileText } : null;
  }

  /**
   * What a new Build row holds whatever carried its context: the request's settings, its secrets
   * and registry credentials sealed (the plaintext buffers wiped), and its repository. The repository
   * upsert stays outside any transaction: parallel builds of one repository would queue on its row
   * lock past the transaction timeout under load. It is idempotent.
   */
  private async buildRecord(id: string, tenantId: string, req: BuildRequest, secrets: ReadonlyMap<string, Buffer>, known?: ReturnType<PrismaService["repository"]["findUnique"]>) {
    const secretsSealed = secrets.size > 0 ? new Uint8Array(sealSecrets(this.config.secretsKey, id, secrets)) : null;
    for (const v of secrets.values()) v.fill(0);
    const registryAuthSealed =
      req.registryAuth && Object.keys(req.registryAuth).length > 0
        ? new Uint8Array(sealSecrets(this.config.secretsKey, id, registryAuthToEntries(req.registryAuth)))
        : null;
    // A repository read ahead (the build by digest reads it while it looks for the manifest) is not written again.
    const repository = (await known) ?? await retryOnUniqueViolation(() =>
      this.prisma.repository.upsert({
        where: { tenantId_name: { tenantId, name: req.repository } },
        update: {},
        create: { tenantId, name: req.repository },
      }),
    );
    const common = {
      id,
      tenantId,
      repositoryId: repository.id,
      dockerfilePath: req.dockerfile,
      target: req.target ?? null,
      buildArgs: req.buildArgs,
      noCache: req.noCache,
      noCacheFilter: req.noCacheFilter,
      tags: req.tags,
      secretsSealed,
      registryAuthSealed,
      queue: this.config.queuePrefix,
    };
    return { common, repository };
  }

  /**
   * A build from a context manifest (docs/adr/0025): by digest (a manifest this tenant built from
   * before), or the manifest itself, checked, with every content present in the tenant's store.
   */
  private async submitManifest(tenantId: string, req: BuildRequest, body: Readable, secrets: ReadonlyMap<string, Buffer>): Promise<BuildView> {
    const id = randomUUID();
    // By digest, the repository is read meanwhile (one round trip fewer on a no-op rebuild); it is
    // created, when new, only once the manifest was found.
    const known = req.contextDigest ? this.prisma.repository.findUnique({ where: { tenantId_name: { tenantId, name: req.repository } } }) : undefined;
    known?.catch(() => undefined);
    const context = req.contextDigest ? await this.knownManifest(tenantId, req, body, `contexts/${id}`) : await this.storeManifest(tenantId, id, req, body);
    const { common, repository } = await this.buildRecord(id, tenantId, req, secrets, known);
    const build = await this.quotas.withQueuedSlot(tenantId, (tx) =>
      (tx ?? this.prisma).build.create({
        data: { ...common, contextKey: context.contextKey, contextSize: BigInt(context.size), contextDigest: context.digest, contextFormat: 'manifest', dockerfileText: context.dockerfileText ?? null },
      }),
    );
    await this.scheduler.enqueue({ buildId: id, tenantId });
    logEvent('info', 'build queued', { buildId: id, tenantId, repository: req.repository, contextBytes: context.size, contextFormat: 'manifest' });
    return toBuildView({ ...build, repository, steps: [] });
  }

  /**
   * A manifest this tenant already built from, named by its digest (Strata-Context-Digest): the
   * earlier build's stored manifest is used again, as a rebuild does, and nothing is sent. 409 with
   * `unknownManifest: true` when the tenant has none with that digest: send the manifest itself.
   * A manifest refused within the hour for missing contents counts too, once they have arrived
   * (moved to `contextKey`): after the upload the client names it instead of sending it again.
   */
  private async knownManifest(tenantId: string, req: BuildRequest, body: Readable, contextKey: string): Promise<StoredContext> {
    const digest = req.contextDigest!;
    body.resume();
    if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new BadRequestException(`Invalid Strata-Context-Digest "${digest.slice(0, 100)}": give "sha256:" and 64 lowercase hex digits.`);
    // Only a build recent enough that the collector cannot have taken its contents (docs/adr/0032).
    const earlier = await this.prisma.build.findFirst({
      where: { tenantId, contextFormat: 'manifest', contextDigest: digest, contextKey: { not: null }, createdAt: { gte: contextStaleBefore(this.config) } },
      orderBy: { createdAt: 'desc' },
      select: { contextKey: true, contextSize: true, dockerfilePath: true, dockerfileText: true },
    });
    if (!earlier?.contextKey || !(await this.storage.objects.stat(earlier.contextKey))) {
      const pending = await this.contextStore.takePending(tenantId, digest, contextKey);
      if (pending) return { ...pending, dockerfileText: pending.dockerfile?.path === req.dockerfile ? await this.storedDockerfile(tenantId, pending.dockerfile) : null };
      throw new ConflictException({ statusCode: 409, error: 'Conflict', message: `No earlier build of yours has the context manifest ${digest}: send the manifest itself.`, unknownManifest: true });
    }
    // The same manifest holds the same Dockerfile at the same path.
    return { contextKey: earlier.contextKey, size: Number(earlier.contextSize ?? 0), digest, dockerfileText: earlier.dockerfilePath === req.dockerfile ? earlier.dockerfileText : null };
  }

  /** A Dockerfile's text from the tenant's content store (ADR 0041); null when it is not there or holds a NUL. */
  private async storedDockerfile(tenantId: string, content: { digest: string }): Promise<string | null> {
    const bytes = await this.contextStore.readSmall(tenantId, content.digest).catch(() => null);
    return bytes ? dockerfileText(bytes) : null;
  }

  /**
   * A context sent as a manifest (docs/adr/0025): checked, every content present in the tenant's
   * store (400 naming those that are not), then kept in its canonical form for the worker.
   */
  private async storeManifest(tenantId: string, id: string, req: BuildRequest, body: Readable): Promise<StoredContext> {
    const manifest = await this.contextStore.readManifest(body, req.contentEncoding);
    const dockerfile = manifestDockerfile(manifest, req.dockerfile);
    await this.contextStore.assertComplete(tenantId, manifest, { keepPending: true, dockerfile: dockerfile && { path: req.dockerfile, ...dockerfile } });
    const contextKey = `contexts/${id}`;
    // Its Dockerfile read from the store while the manifest is stored: the worker starts the steps
    // that do not read the context while it makes the context ready (ADR 0041).
    const text = dockerfile ? this.storedDockerfile(tenantId, dockerfile) : Promise.resolve(null);
    // Stored as sent (gzip or JSON); readers check it again, so the canonical form is not needed there.
    await this.storage.objects.put(contextKey, manifest.wire);
    return { contextKey, size: manifest.bytes, digest: manifest.digest, dockerfileText: await text };
  }

  /**
   * A queued build is cancelled here and its job removed (a worker that already took the job finds it
   * cancelled and skips it); a running one is cancelled by the worker holding it, told over Redis.
   */
  async cancel(tenantId: string, id: string, repositories: readonly string[] = []): Promise<BuildView> {
    const found = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.build.findFirst({ where: { id, tenantId, ...buildsVisibleTo(repositories) }, select: { status: true } }) : null;
    if (!found) throw new NotFoundException(`Build "${id}" does not exist.`);
    const queued = await this.prisma.build.updateMany({
      where: { id, tenantId, status: 'queued' },
      data: { status: 'cancelled', finishedAt: new Date(), errorMessage: 'the build was cancelled before it started', secretsSealed: null, registryAuthSealed: null },
    });
    if (queued.count > 0) {
      await this.queue.remove(id).catch(() => 0);
    } else {
      const now = await this.prisma.build.findFirstOrThrow({ where: { id, tenantId }, select: { status: true } });
      if (now.status !== 'running') throw new ConflictException(`Build "${id}" has already finished (${now.status}); there is nothing to cancel.`);
      this.publisher ??= new Redis({ ...redisConnection(this.config.redisUrl), protocol: 2 });
      await this.publisher.publish(buildCancelChannel(this.config.queuePrefix), id);
    }
    return this.get(tenantId, id, repositories);
  }

  async onModuleDestroy(): Promise<void> {
    await this.publisher?.quit().catch(() => undefined);
  }

  /**
   * A new build of the same context (kept in S3 under the first build's key, or the same commit for
   * a build from a push), Dockerfile, target, build args, tags and cache filters. Secrets and registry credentials were erased when the
   * first build ended, so they are not carried over: send a new build for those.
   */
  async rebuild(tenantId: string, id: string, repositories: readonly string[] = []): Promise<BuildView> {
    const first = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.build.findFirst({ where: { id, tenantId, ...buildsVisibleTo(repositories) } }) : null;
    if (!first) throw new NotFoundException(`Build "${id}" does not exist.`);
    // A build from a push fetches its commit again; an upload needs its stored context.
    const fromGit = first.source === 'git' && first.gitSource !== null;
    if (!fromGit && (!first.contextKey || !(await this.storage.objects.stat(first.contextKey)))) {
      throw new ConflictException(`Build "${id}" has no stored build context to rebuild from: send the context again with POST /v1/builds.`);
    }
    const build = await this.quotas.withQueuedSlot(tenantId, (tx) => (tx ?? this.prisma).build.create({
      data: {
        tenantId,
        repositoryId: first.repositoryId,
        source: first.source,
        dockerfilePath: first.dockerfilePath,
        dockerfileText: first.dockerfileText,
        target: first.target,
        buildArgs: first.buildArgs as Prisma.InputJsonValue,
        noCache: false,
        noCacheFilter: first.noCacheFilter,
        tags: first.tags,
        contextKey: first.contextKey,
        contextSize: first.contextSize,
        contextDigest: first.contextDigest,
        contextFormat: first.contextFormat,
        // The reconciler of this queue re-enqueues it if its job is lost (docs/adr/0011).
        queue: this.config.queuePrefix,
        ...(fromGit ? { gitSource: first.gitSource as Prisma.InputJsonValue, commitSha: first.commitSha } : {}),
      },
      include: { repository: true, steps: STEPS_FOR_VIEW },
      omit: BUILD_COLUMNS_NOT_VIEWED,
    }));
    await this.scheduler.enqueue({ buildId: build.id, tenantId });
    return toBuildView(build);
  }

  /** The build's Dockerfile as the worker reads it: from the stored context, at the build's Dockerfile path. */
  async dockerfile(tenantId: string, id: string, repositories: readonly string[] = []): Promise<{ path: string; text: string }> {
    const build = /^[0-9a-f-]{36}$/i.test(id) ? await this.prisma.build.findFirst({ where: { id, tenantId, ...buildsVisibleTo(repositories) } }) : null;
    if (!build) throw new NotFoundException(`Build "${id}" does not exist.`);
    const wanted = build.dockerfilePath.replace(/^\.\//, '');
    // Read at upload from this context (and checked against it by the worker): no need to open the context again.
    if (build.dockerfileText !== null) return { path: wanted, text: build.dockerfileText };
    const gone = () => new NotFoundException(`Build "${id}" has no stored build context, so its Dockerfile cannot be shown.`);
    if (!build.contextKey || !(await this.storage.objects.stat(build.contextKey))) throw gone();
    if (build.contextFormat === 'manifest') return this.dockerfileFromManifest(tenantId, id, build.contextKey, wanted);
    const context = await this.storage.objects.get(build.contextKey);
    try {
      for await (const entry of readTarEntries(context, { maxUncompressedBytes: this.config.maxContextBytes * 4 })) {
        if (entry.header.name.replace(/^(\.\/)+/, '') !== wanted) continue;
        if (entry.header.type !== 'file') break;
        if (entry.header.size > DOCKERFILE_MAX_BYTES) throw new ConflictException(`${wanted} is larger than ${DOCKERFILE_MAX_BYTES} bytes.`);
        const chunks: Buffer[] = [];
        for await (const chunk of entry.chunks) chunks.push(chunk);
        return { path: wanted, text: Buffer.concat(chunks).toString('utf8') };
      }
    } catch (e) {
      if (e instanceof HttpException) throw e;
      throw new ConflictException(`The build context of build "${id}" could not be read: ${(e as Error).message}.`);
    }
    throw new NotFoundException(`The build context of build "${id}" has no regular file at "${wanted}".`);
  }

  private async dockerfileFromManifest(tenantId: string, id: string, key: string, wanted: string): Promise<{ path: string; text: string }> {
    const chunks: Buffer[] = [];
    for await (const c of await this.storage.objects.get(key)) chunks.push(c as Buffer);
    const stored = Buffer.concat(chunks);
    const { entries } = JSON.parse((isGzip(stored) ? gunzipSync(stored) : stored).toString('utf8')) as { entries: Array<{ path: string; type: string; size?: number; digest?: string }> };
    const entry = entries.find((e) => e.path === wanted);
    if (entry?.type !== 'file' || !entry.digest) throw new NotFoundException(`The build context of build "${id}" has no regular file at "${wanted}".`);
    if ((entry.size ?? 0) > DOCKERFILE_MAX_BYTES) throw new ConflictException(`${wanted} is larger than ${DOCKERFILE_MAX_BYTES} bytes.`);
    const content = await this.contextStore.readSmall(tenantId, entry.digest);
    if (!content) throw new ConflictException(`The content of ${wanted} in build "${id}" is no longer in the content store.`);
    return { path: wanted, text: content.toString('utf8') };
  }

  async get(tenantId: string, id: string, repositories: readonly string[] = []): Promise<BuildView> {
    const build = /^[0-9a-f-]{36}$/i.test(id)
      ? await this.prisma.build.findFirst({ where: { id, tenantId, ...buildsVisibleTo(repositories) }, include: { repository: true, steps: STEPS_FOR_VIEW }, omit: BUILD_COLUMNS_NOT_VIEWED })
      : null;
    if (!build) throw new NotFoundException(`Build "${id}" does not exist.`);
    return toBuildView(build);
  }

  async list(
    tenantId: string,
    q: { repository?: string; status?: string; sha?: string; limit: number; cursor?: string },
    repositories: readonly string[] = [],
  ): Promise<{ builds: BuildView[]; nextCursor: string | null }> {
    const where: Prisma.BuildWhereInput = { tenantId, AND: [buildsVisibleTo(repositories)] };
    if (q.repository) where.repository = { name: q.repository };
    if (q.status) where.status = q.status as Prisma.BuildWhereInput['status'];
    if (q.sha) where.commitSha = q.sha.length >= 40 ? q.sha : { startsWith: q.sha };
    if (q.cursor) {
      const c = decodeCursor(q.cursor);
      where.OR = [{ createdAt: { lt: c.createdAt } }, { createdAt: c.createdAt, id: { lt: c.id } }];
    }
    const rows = await this.prisma.build.findMany({
      where,
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: q.limit + 1,
      include: { repository: true, steps: STEPS_FOR_VIEW },
      omit: BUILD_COLUMNS_NOT_VIEWED,
    });
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return { builds: page.map(toBuildView), nextCursor: rows.length > q.limit && last ? encodeCursor(last.createdAt, last.id) : null };
  }
}

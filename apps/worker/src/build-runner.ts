import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import type { Storage } from '@strata/blobstore';
import {
  BuildEngine, ContextSourceError, IgnoreMatcher, IndexedContext, parseDockerignore, RootfsIndexer, type BuildEvent, BuildFailure, type ImageResolver,
  type RootfsProvider, type RunExecutor, type StepFingerprint,
} from '@strata/build-engine';
import { openSecrets, SSH_KEY_PREFIX, type StrataConfig, triggerSealScope } from '@strata/config';
import type { Build, Prisma, PrismaClient } from '@strata/db';
import {
  type BuildPlan, type Diagnostic, DockerfileError, lintCopyIgnoredFile, lintWithResolvedImages, parseDockerfile, resolveBuild, type ResolvedBaseImage,
} from '@strata/dockerfile';
import type { ImageConfig } from '@strata/oci';
import { ImageStore, type RegistryAuth, registryAuthFromEntries, RegistryClient, type StoredDocuments, TenantImageResolver } from '@strata/registry';
import { ContextCache, type ExtractedContext } from './context-cache.js';
import { ContextPackCache, manifestContext } from './context-store.js';
import { CommitStatusReporter } from './commit-status.js';
import { type CommitRequest, GitCommitSource, gitContextDigest, GitFetchError } from './git-source.js';
import { contextFailure } from './context-errors.js';
import { profiled } from './cpu-profile.js';
import { diskFailure } from './disk-errors.js';
import { storageFailure } from './storage-errors.js';
import { BlobLayerSink, PrismaCacheIndex } from './adapters.js';
import { EgressSourceFetcher } from './url-source.js';
import { BuildWarnings, warningsColumn } from './build-warnings.js';
import type { BuildLog, BuildLogs } from '@strata/queue';
import { GitAddSourceFetcher } from './git-add-source.js';

export interface BuildRunnerDeps {
  prisma: PrismaClient;
  storage: Storage;
  config: StrataConfig;
  /** A RunExecutor, or one per tenant (cache mounts are kept per tenant). */
  executor?: RunExecutor | { forTenant(tenantId: string): RunExecutor };
  rootfs?: RootfsProvider;
  /** Build log lines and step events, for live logs. */
  onEvent?: (buildId: string, e: BuildEvent) => void;
  /** Each build's log: live in a Redis stream, archived to S3 when the build ends. */
  logs?: BuildLogs;
  workerId?: string;
}

/**
 * Runs one build job end to end: context from S3, safe extraction, the engine, then the image
 * published and the tags moved in one transaction. A failed build records why and where, and
 * moves no tag.
 */
export class BuildRunner {
  private readonly images: ImageStore;
  private readonly layers: BlobLayerSink;
  private readonly contexts: ContextCache;
  /** Packs of the tenants' content stores, for contexts sent as manifests. */
  private readonly packs: ContextPackCache;
  /** Shared by builds without credentials, so anonymous registry tokens are reused. */
  private readonly registryClient: RegistryClient;
  /** Layer indexes (paths, owners) shared by every build on this worker. */
  private readonly indexer: RootfsIndexer;
  /** Builds from a push fetch their commit with git. */
  private readonly git: GitCommitSource;
  private readonly urls: EgressSourceFetcher;
  /** ADD <git repository>: refs resolved and commits checked out through the same guarded git as pushes. */
  private readonly gitSources: GitAddSourceFetcher;
  /** Aborted when the worker stops waiting for its builds on shutdown. */
  private readonly shutdown = new AbortController();
  /** Builds handed back by handBackAll(), for the worker to re-queue. */
  readonly handedBack: Array<{ id: string; tenantId: string }> = [];

  constructor(private readonly deps: BuildRunnerDeps) {
    this.contexts = new ContextCache(path.resolve(deps.config.dataDir, 'contexts'));
    this.packs = new ContextPackCache(deps.prisma, deps.storage, path.resolve(deps.config.dataDir, 'context-packs'));
    this.images = new ImageStore(deps.prisma, deps.storage.blobs);
    this.layers = new BlobLayerSink(deps.storage, deps.prisma, path.resolve(deps.config.dataDir, 'spool'));
    // Through the sink: a layer still being uploaded is read from its spool file.
    this.indexer = new RootfsIndexer((d) => this.layers.open(d));
    this.git = new GitCommitSource(deps.config.allowPrivateSources);
    this.urls = new EgressSourceFetcher(deps.config.allowPrivateSources, deps.config.addUrl);
    this.gitSources = new GitAddSourceFetcher(deps.config.allowPrivateSources, deps.config.addUrl);
    this.registryClient = new RegistryClient({ insecureRegistries: deps.config.pull.insecureRegistries, responseTimeoutMs: deps.config.pull.responseTimeoutMs, userAgent: 'strata-worker' });
  }

  async run(buildId: string, signal?: AbortSignal): Promise<void> {
    return profiled(process.env.STRATA_WORKER_CPU_PROFILE_DIR, `build-${buildId}`, () => this.runBuild(buildId, signal));
  }

  private async runBuild(buildId: string, signal?: AbortSignal): Promise<void> {
    // The build's time limit stops it like a cancel, but it ends failed, saying why.
    const deadline = AbortSignal.timeout(this.deps.config.run.buildTimeoutMs);
    const stop = AbortSignal.any([...(signal ? [signal] : []), deadline, this.shutdown.signal]);
    const { prisma, config } = this.deps;
    const claimed = await prisma.build.updateMany({
      where: { id: buildId, status: { in: ['queued', 'running'] } },
      data: { status: 'running', startedAt: new Date(), workerId: this.deps.workerId ?? hostname(), queue: config.queuePrefix, attempts: { increment: 1 } },
    });
    if (claimed.count === 0) return; // cancelled, or already finished by another worker
    // The row alone (one query); a build from a push reads its repository's name in gitRequest.
    const build = await prisma.build.findUniqueOrThrow({ where: { id: buildId } });
    // Rows an earlier attempt left go before this attempt writes its own; nothing else waits for that.
    const cleared = prisma.buildStep.deleteMany({ where: { buildId } });
    cleared.catch(() => undefined);
    // The build's secrets, decrypted only in this worker's memory; every value is redacted from the log.
    let secrets = new Map<string, Buffer>();
    let secretsError: string | null = null;
    if (build.secretsSealed) {
      try {
        secrets = openSecrets(config.secretsKey, buildId, build.secretsSealed);
      } catch (e) {
        secretsError = (e as Error).message;
      }
    }
    const log = this.deps.logs?.open(buildId, [...secrets.values()].map((v) => v.toString('utf8')));
    log?.started(this.deps.workerId ?? hostname());
    // Registry credentials for FROM pulls, sealed like the secrets and opened only here.
    let registryAuth: RegistryAuth | undefined;
    if (build.registryAuthSealed) {
      try {
        registryAuth = registryAuthFromEntries(openSecrets(config.secretsKey, buildId, build.registryAuthSealed));
      } catch (e) {
        secretsError ??= `the registry credentials: ${(e as Error).message}`;
      }
    }
    const workDir = path.resolve(config.dataDir, 'builds', buildId);
    const fromGit =
      build.source === 'git' ? await this.gitRequest(build).catch((e: Error) => ({ problem: `the trigger could not be read: ${e.message}`, statuses: null })) : null;
    // The forge hears that the commit is being built, and later how it ended.
    const statuses = fromGit?.statuses ?? null;
    statuses?.report('pending');
    let extracted: ExtractedContext | undefined;
    // The Dockerfile's plan (for the lints that need the context or the FROM images), the findings so
    // far, and the FROM images the engine resolved (InvalidBaseImagePlatform and UndefinedVar need them).
    let plan: BuildPlan | null = null;
    const warnings = new BuildWarnings({
      store: (all) => prisma.build.update({ where: { id: buildId }, data: { warnings: warningsColumn(all) } }),
      line: (text) => log?.line(null, 'system', text),
    });
    const resolvedImages = new Map<string, ImageConfig>();
    let handedBack = false;
    // The previous build's steps, read while the context is made ready: their fingerprints explain
    // misses, and their cache keys are read ahead in one query (an unchanged rebuild asks for exactly those).
    const cache = new PrismaCacheIndex(prisma, build.tenantId);
    const previousSteps = this.previousSteps(build).then((p) => {
      if (!build.noCache) cache.prefetch(p.cacheKeys);
      return p;
    });
    previousSteps.catch(() => undefined);
    // The context as it is fetched and indexed; with a Dockerfile read at upload, the steps start meanwhile.
    let opening: Promise<IndexedContext> | undefined;
    let contextChecked: Promise<void> | undefined;
    try {
      if (secretsError) throw new BuildFailure(secretsError, null);
      await rm(workDir, { recursive: true, force: true });
      await mkdir(workDir, { recursive: true });
      opening = this.openContext(build, fromGit, workDir, stop, log).then((e) => {
        extracted = e;
        return IndexedContext.open(e.tree ?? e.index, e.pack, e.directory);
      });
      opening.catch(() => undefined);
      // The api read the Dockerfile of a small tar context at upload (docs/adr/0041): the steps that
      // do not read the context (FROM, a RUN before the first COPY) run while it is fetched and
      // indexed, as BuildKit resolves its context only when a step reads it.
      const early = build.dockerfileText;
      const dockerfile = early ?? (await this.readDockerfile(await opening, build.dockerfilePath));
      const linted = lintDockerfile(build, dockerfile);
      plan = linted.plan;
      await warnings.add([...linted.warnings, ...(early === null ? await this.lintIgnoredCopies(build, plan, await opening) : [])]);
      const lintError = warnings.all.find((w) => w.severity === 'error');
      if (lintError) throw new BuildFailure(`${build.dockerfilePath}:${lintError.line}: ${lintError.message}`, lintError.line);
      // Checked once the context is in: the Dockerfile read at upload is the context's, and the
      // findings that need the context. A context that fails stops the steps running meanwhile.
      const contextFailed = new AbortController();
      const arrivedPlan = plan;
      contextChecked = early === null ? Promise.resolve() : opening.then((context) => this.checkArrivedContext(build, early, context, arrivedPlan, warnings));
      contextChecked.catch(() => contextFailed.abort());
      let contextIn = early === null;
      opening.then(() => (contextIn = true), () => (contextIn = true));
      const { fingerprints: previousFingerprints } = await previousSteps;
      let previousRead: Promise<Map<string, StepFingerprint>> | null = null;
      const stepRows = new StepRows(prisma, cleared);
      const engine = new BuildEngine({
        // Fingerprints (a COPY's holds up to 5,000 file hashes) are read at the first miss only.
        previousStep: async (stage, index) => (await (previousRead ??= previousFingerprints().catch(() => new Map<string, StepFingerprint>()))).get(`${stage}:${index}`) ?? null,
        images: recordingResolver(
          new TenantImageResolver(this.images, build.tenantId, {
            prisma,
            blobs: this.deps.storage.blobs,
            settings: config,
            ...(registryAuth ? { credentials: registryAuth } : { client: this.registryClient }),
            signal: stop,
            onPull: (ref, s) => log?.line(null, 'system', `pulled ${ref}: ${s.fetched} blob(s) fetched (${s.bytes} bytes), ${s.skipped} already stored`),
          }),
          resolvedImages,
        ),
        layers: this.layers,
        indexer: this.indexer,
        cache,
        executor: this.deps.executor && 'forTenant' in this.deps.executor ? this.deps.executor.forTenant(build.tenantId) : this.deps.executor,
        allowHostNetwork: config.run.network === 'host',
        allowInsecure: config.run.allowInsecure,
        rootfs: this.deps.rootfs,
        sources: this.urls,
        git: this.gitSources,
        onEvent: (e) => {
          this.deps.onEvent?.(buildId, e);
          // The log's answer goes back to the RUN step: while the log is behind, its output is not read.
          const behind = log?.event(e);
          if (e.type === 'step-done') {
            stepRows.add({
              buildId,
              tenantId: build.tenantId,
              stage: e.stage,
              stageName: e.stageName,
              index: e.index,
              line: e.line,
              instruction: e.instruction,
              cacheKey: e.cacheKey,
              cached: e.cached,
              missReason: e.missReason,
              fingerprint: e.fingerprint as unknown as Prisma.InputJsonValue,
              startedAt: e.startedAt,
              durationMs: e.durationMs,
              layerDigest: e.layerDigest,
            });
          }
          return behind;
        },
      });
      let documents: Promise<StoredDocuments> | undefined;
      const building = engine.build({
        dockerfile,
        dockerfilePath: build.dockerfilePath,
        context: early === null ? await opening : opening,
        buildArgs: build.buildArgs as Record<string, string>,
        target: build.target ?? undefined,
        noCache: build.noCache,
        noCacheStages: build.noCacheFilter,
        secrets: new Map([...secrets].filter(([id]) => !id.startsWith(SSH_KEY_PREFIX))),
        sshKeys: sshKeysOf(secrets),
        signal: AbortSignal.any([stop, contextFailed.signal]),
        // The config and manifest blobs go to the store while the last layer uploads finish; the
        // Manifest row and the tags are written only once every layer is stored (publish, below).
        whileSettling: (image) => (documents = this.images.storeDocuments(image.config, image.layers.map((l) => l.descriptor), build.repositoryId)),
      });
      // A build whose context failed (or whose checks did) ends with that error, not with the step
      // it stopped or the COPY that found no context; a step failing while the context is still
      // arriving is the build's error.
      const out = await building.catch(async (e: unknown) => {
        if (contextIn || contextFailed.signal.aborted) await contextChecked;
        throw e;
      });
      await contextChecked;
      // Cancelled after the last step: nothing is published and no tag moves.
      if (stop.aborted) throw new BuildFailure('the build was cancelled', null);
      const imageFindings = await this.lintResolvedImages(plan, resolvedImages, warnings);
      const imageError = imageFindings.find((w) => w.severity === 'error');
      if (imageError) throw new BuildFailure(`${build.dockerfilePath}:${imageError.line}: ${imageError.message}`, imageError.line);
      // Every step row is in before the build reads as finished; they are written while the image is published.
      const rowsWritten = stepRows.settled();
      const touched = cache.touchPrefetched().catch(() => undefined);
      const published = await this.images.publish({
        tenantId: build.tenantId,
        repositoryId: build.repositoryId,
        config: out.image.config,
        layers: out.image.layers.map((l) => l.descriptor),
        tags: build.tags,
        buildId,
        ...(documents ? { stored: await documents } : {}),
      });
      await rowsWritten;
      await prisma.build.update({
        where: { id: buildId },
        data: {
          status: 'succeeded',
          finishedAt: new Date(),
          imageDigest: published.manifestDigest,
          secretsSealed: null,
          registryAuthSealed: null,
          baseImageRef: out.base?.ref ?? null,
          baseImageDigest: out.base?.manifestDigest ?? null,
          baseImageSource: out.base?.source ?? null,
        },
      });
      statuses?.report('success');
      await touched;
      await log?.finish('succeeded', `image ${published.manifestDigest}`, { imageDigest: published.manifestDigest });
    } catch (e) {
      if (this.shutdown.signal.aborted && signal?.aborted !== true) {
        handedBack = await this.handBack(buildId, build.tenantId, log);
        if (handedBack) return;
      }
      const timedOut = deadline.aborted && signal?.aborted !== true;
      const failure = timedOut
        ? new BuildFailure(`the build took longer than its time limit of ${Math.round(this.deps.config.run.buildTimeoutMs / 1000)} s and was stopped`, null)
        : e instanceof BuildFailure ? e : (storageFailure(e) ?? diskFailure(e));
      const message = failure ? failure.message : `internal error: ${(e as Error).message}`;
      const cancelled = signal?.aborted === true;
      statuses?.report(failure && !cancelled ? 'failure' : 'error');
      // A failed build still says what its resolved FROM images revealed (a wrong platform often explains the failure).
      await this.lintResolvedImages(plan, resolvedImages, warnings).catch(() => undefined);
      await prisma.build.update({
        where: { id: buildId },
        data: {
          status: cancelled ? 'cancelled' : 'failed',
          finishedAt: new Date(),
          errorMessage: message,
          errorLine: failure?.line ?? null,
          secretsSealed: null,
          registryAuthSealed: null,
        },
      });
      await log?.finish(cancelled ? 'cancelled' : 'failed', failure?.line ? `${message} (Dockerfile line ${failure.line})` : message);
      if (!failure) throw e;
    } finally {
      // However the build ended, its sealed secrets are erased and the plaintext wiped from memory (kept for the next worker when handed back).
      if ((build.secretsSealed || build.registryAuthSealed) && !handedBack) {
        await prisma.build.updateMany({ where: { id: buildId }, data: { secretsSealed: null, registryAuthSealed: null } }).catch(() => undefined);
      }
      for (const v of secrets.values()) v.fill(0);
      // A build that failed while its context was still arriving releases it once it is in (and once
      // the findings that needed it are recorded: nothing of this build is written after it ends).
      await opening?.catch(() => undefined);
      await contextChecked?.catch(() => undefined);
      await warnings.settled();
      await extracted?.release();
      await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
      await statuses?.settled();
    }
  }

  /**
   * Fetches and indexes the build's context: from git, from the tenant's content store (a context
   * manifest), or the uploaded tar. A context that cannot be read fails the build saying why.
   */
  private async openContext(
    build: Build,
    fromGit: { request: CommitRequest } | { problem: string } | null,
    workDir: string,
    stop: AbortSignal,
    log: ReturnType<BuildLogs['open']> | undefined,
  ): Promise<ExtractedContext> {
    const limits = { maxBytes: this.deps.config.maxContextBytes, maxEntries: this.deps.config.maxContextEntries };
    try {
      if (fromGit) {
        if ('problem' in fromGit) throw new BuildFailure(fromGit.problem, null);
        const req = fromGit.request;
        log?.line(null, 'system', `fetching commit ${req.sha} from ${req.cloneUrl}${req.context !== '.' ? ` (context ${req.context})` : ''}`);
        return await this.contexts.open(build.tenantId, gitContextDigest(req), () => this.git.contextTar(req, path.join(workDir, 'git'), stop), limits);
      }
      if (build.contextFormat === 'manifest') {
        // Sent as a manifest (docs/adr/0025, 0028): indexed straight from the manifest, over the tenant's packs.
        const { tree, pack } = await this.packs.open(build.tenantId, build.contextDigest, () => this.packs.manifest(build.contextKey!, limits));
        return manifestContext(tree, pack, path.join(workDir, 'context'));
      }
      const download = () => this.deps.storage.objects.get(build.contextKey!);
      // Contexts are kept by content digest; a build recorded without one is indexed under its own id.
      return await this.contexts.open(build.tenantId, build.contextDigest ?? `build-${build.id}`, download, limits);
    } catch (e) {
      if (e instanceof GitFetchError) throw new BuildFailure(`fetching the commit failed: ${e.message}`, null);
      throw contextFailure(e) ?? e;
    }
  }

  /**
   * For a build that started on the Dockerfile read at upload, once its context is in: that
   * Dockerfile is the context's, and the findings that need the context are recorded; an error
   * among them fails the build, as it would have before the first step.
   */
  private async checkArrivedContext(build: Build, early: string, context: IndexedContext, plan: BuildPlan | null, warnings: BuildWarnings): Promise<void> {
    if ((await this.readDockerfile(context, build.dockerfilePath)) !== early) {
      throw new BuildFailure(`${build.dockerfilePath} in the build context is not the Dockerfile read from it at upload`, null);
    }
    const found = await warnings.add(await this.lintIgnoredCopies(build, plan, context));
    const error = found.find((w) => w.severity === 'error');
    if (error) throw new BuildFailure(`${build.dockerfilePath}:${error.line}: ${error.message}`, error.line);
  }

  /** The findings that need the context (CopyIgnoredFile: a COPY of what .dockerignore excludes), for the stages the build needs. */
  private async lintIgnoredCopies(build: Build, plan: BuildPlan | null, context: IndexedContext): Promise<Diagnostic[]> {
    if (!plan) return [];
    const ignoreText = (await context.readFile('.dockerignore', 4 * 1024 * 1024).catch(() => null))?.toString('utf8');
    if (!ignoreText) return [];
    // A .dockerignore the context cannot use fails the build elsewhere; here it only means no finding.
    let patterns: ReturnType<typeof parseDockerignore>;
    try {
      patterns = parseDockerignore(ignoreText);
    } catch {
      return [];
    }
    const matcher = new IgnoreMatcher(patterns);
    const view = { hasExceptions: patterns.some((p) => p.exclusion), matches: (rel: string) => matcher.ignores(rel) };
    return lintCopyIgnoredFile(plan.dockerfile, view, { buildArgs: build.buildArgs as Record<string, string>, stages: plan.neededStages });
  }

  /** Adds the findings the resolved FROM images reveal to the build's warnings; returns them. */
  private async lintResolvedImages(plan: BuildPlan | null, resolved: ReadonlyMap<string, ImageConfig>, warnings: BuildWarnings): Promise<Diagnostic[]> {
    if (!plan || resolved.size === 0) return [];
    const found = lintWithResolvedImages(plan, (i): ResolvedBaseImage | null => {
      const base = plan.stages[i].base;
      const config = base.kind === 'image' ? resolved.get(base.ref) : undefined;
      if (!config) return null;
      return { platform: { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }, env: config.config?.Env ?? [] };
    });
    // Recorded once, even when both the success and the failure path ask.
    await warnings.add(found);
    return found;
  }

  /**
   * What a build from a push fetches, with the trigger's credentials opened in this worker's memory
   * only, and where its commit statuses go. A problem (the trigger was deleted) fails the build.
   */
  private async gitRequest(build: Build): Promise<{ request: CommitRequest; statuses: CommitStatusReporter } | { problem: string; statuses: null }> {
    const g = build.gitSource as Record<string, string | boolean>;
    const triggerId = String(g.triggerId);
    const trigger = await this.deps.prisma.trigger.findFirst({ where: { id: triggerId, tenantId: build.tenantId } });
    if (!trigger) return { problem: `the trigger ${triggerId} this build came from was deleted`, statuses: null };
    let creds: Map<string, Buffer> = new Map();
    if (trigger.credentialsSealed) {
      try {
        creds = openSecrets(this.deps.config.secretsKey, triggerSealScope(trigger.id), trigger.credentialsSealed);
      } catch (e) {
        return { problem: `the trigger's credentials: ${(e as Error).message}`, statuses: null };
      }
    }
    const text = (k: string) => creds.get(k)?.toString('utf8');
    const request: CommitRequest = {
      provider: String(g.provider),
      cloneUrl: String(g.cloneUrl),
      sha: String(g.sha),
      context: String(g.context ?? '.'),
      submodules: g.submodules === true,
      credentials: creds.size > 0 ? { token: text('token'), username: text('username'), deployKey: text('deployKey') } : null,
    };
    const statuses = new CommitStatusReporter(
      this.deps.prisma,
      {
        provider: request.provider,
        apiUrl: trigger.apiUrl,
        cloneUrl: request.cloneUrl,
        forgeRepository: String(g.forgeRepository ?? ''),
        sha: request.sha,
        token: text('token') ?? null,
        username: text('username') ?? null,
        context: `strata/${(await this.deps.prisma.repository.findUniqueOrThrow({ where: { id: build.repositoryId }, select: { name: true } })).name}`,
        targetUrl: `${this.deps.config.publicUrl}/builds/${build.id}`,
        triggerId,
        deliveryId: String(g.deliveryId),
      },
      this.deps.config.allowPrivateSources,
    );
    return { request, statuses };
  }

  /** Stops every running build and hands it back to the queue (a worker shutting down past its grace period). */
  handBackAll(): void {
    this.shutdown.abort(new Error('the worker is shutting down'));
  }

  /** A build stopped by a shutdown is queued again, its claim not counted; the caller re-adds its job once BullMQ let go of it. */
  private async handBack(buildId: string, tenantId: string, log: BuildLog | undefined): Promise<boolean> {
    const back = await this.deps.prisma.build.updateMany({
      where: { id: buildId, status: 'running', workerId: this.deps.workerId ?? hostname() },
      data: { status: 'queued', workerId: null, startedAt: null, attempts: { decrement: 1 } },
    });
    if (back.count === 0) return false;
    log?.line(null, 'system', `worker ${this.deps.workerId ?? hostname()} is shutting down; the build goes back to the queue`);
    await log?.flush();
    this.handedBack.push({ id: buildId, tenantId });
    return true;
  }

  /** Step fingerprints and cache keys of the previous finished build of the same repository and target. */
  private async previousSteps(build: Build): Promise<{ fingerprints: () => Promise<Map<string, StepFingerprint>>; cacheKeys: string[] }> {
    const prev = await this.deps.prisma.build.findFirst({
      where: {
        tenantId: build.tenantId,
        repositoryId: build.repositoryId,
        target: build.target,
        dockerfilePath: build.dockerfilePath,
        status: { in: ['succeeded', 'failed'] },
        createdAt: { lt: build.createdAt },
        id: { not: build.id },
      },
      orderBy: { createdAt: 'desc' },
      select: { id: true, steps: { select: { cacheKey: true } } },
    });
    // The fingerprints only when a step misses: an unchanged rebuild never reads them (docs/adr/0037).
    const fingerprints = async () => {
      const map = new Map<string, StepFingerprint>();
      if (!prev) return map;
      const steps = await this.deps.prisma.buildStep.findMany({ where: { buildId: prev.id }, select: { stage: true, index: true, fingerprint: true } });
      for (const s of steps) if (s.fingerprint) map.set(`${s.stage}:${s.index}`, s.fingerprint as unknown as StepFingerprint);
      return map;
    };
    return { fingerprints, cacheKeys: (prev?.steps ?? []).flatMap((s) => (s.cacheKey ? [s.cacheKey] : [])) };
  }

  private async readDockerfile(context: IndexedContext, rel: string): Promise<string> {
    let bytes: Buffer | null;
    try {
      bytes = await context.readFile(rel, 4 * 1024 * 1024);
    } catch (e) {
      if (e instanceof ContextSourceError) throw new BuildFailure(`${rel} is larger than 4 MiB`, null);
      throw e;
    }
    if (bytes === null) throw new BuildFailure(`no Dockerfile at "${rel}" in the build context`, null);
    return bytes.toString('utf8');
  }
}

/**
 * The Dockerfile's own lint findings and its plan, for the stages this build needs. A Dockerfile
 * that does not parse has none: the engine reports its errors.
 */
function lintDockerfile(build: Build, dockerfile: string): { warnings: Diagnostic[]; plan: BuildPlan | null } {
  let plan: BuildPlan;
  try {
    plan = resolveBuild(parseDockerfile(dockerfile), { buildArgs: build.buildArgs as Record<string, string>, target: build.target ?? undefined });
  } catch (e) {
    if (e instanceof DockerfileError) return { warnings: [], plan: null };
    throw e;
  }
  return { warnings: [...plan.dockerfile.warnings], plan };
}

/**
 * A build's step rows, written as its steps end: the rows of steps that end together (cache hits
 * come a few at a time) go in one INSERT, not one each. A failed write is dropped, as before.
 */
class StepRows {
  private pending: Prisma.BuildStepCreateManyInput[] = [];
  private writing: Promise<void>;

  /** @param cleared the delete of an earlier attempt's rows: the first write waits for it. */
  constructor(private readonly prisma: PrismaClient, cleared: Promise<unknown>) {
    this.writing = cleared.then(() => undefined, () => undefined);
  }

  add(row: Prisma.BuildStepCreateManyInput): void {
    this.pending.push(row);
    // The first row of a batch schedules its write; the rows that follow within the same turn join it.
    if (this.pending.length === 1) this.writing = this.writing.then(() => new Promise<void>((r) => setImmediate(r))).then(() => this.flush());
  }

  private async flush(): Promise<void> {
    const rows = this.pending.splice(0);
    if (rows.length === 0) return;
    // One JSON parameter that Postgres unpacks: a COPY step's fingerprint holds up to 5,000 file hashes,
    // which the client's own row mapping (createMany) spent tens of milliseconds of CPU on.
    const json = JSON.stringify(rows.map((r) => ({ ...r, id: randomUUID() })));
    await this.prisma.$executeRaw`
      INSERT INTO "BuildStep" ("id", "buildId", "tenantId", "stage", "stageName", "index", "line", "instruction", "cacheKey", "cached", "missReason", "fingerprint", "startedAt", "durationMs", "layerDigest")
      SELECT (r->>'id')::uuid, (r->>'buildId')::uuid, (r->>'tenantId')::uuid, (r->>'stage')::int, r->>'stageName', (r->>'index')::int, (r->>'line')::int,
        r->>'instruction', r->>'cacheKey', (r->>'cached')::boolean, r->>'missReason', NULLIF(r->'fingerprint', 'null'::jsonb),
        ((r->>'startedAt')::timestamptz AT TIME ZONE 'UTC'), (r->>'durationMs')::int, r->>'layerDigest'
      FROM jsonb_array_elements(${json}::jsonb) AS r
      ON CONFLICT DO NOTHING`.then(() => undefined, () => undefined);
  }

  /** Resolves once every row added so far is written (or its write failed). */
  settled(): Promise<void> {
    return this.writing;
  }
}


/** The engine's image resolver, remembering each resolved FROM image's config by the reference asked for. */
function recordingResolver(inner: ImageResolver, seen: Map<string, ImageConfig>): ImageResolver {
  return {
    async resolve(ref) {
      const image = await inner.resolve(ref);
      seen.set(ref, image.config);
      return image;
    },
  };
}

/** The SSH keys sealed with the secrets (`ssh:<id>:<n>`), grouped by id in the order they were sent. */
function sshKeysOf(sealed: ReadonlyMap<string, Buffer>): Map<string, Buffer[]> {
  const out = new Map<string, Buffer[]>();
  const entries = [...sealed].filter(([name]) => name.startsWith(SSH_KEY_PREFIX)).map(([name, key]) => {
    const [id, n] = [name.slice(SSH_KEY_PREFIX.length, name.lastIndexOf(':')), Number(name.slice(name.lastIndexOf(':') + 1))];
    return { id, n, key };
  });
  for (const { id, key } of entries.sort((a, b) => a.n - b.n)) out.set(id, [...(out.get(id) ?? []), key]);
  return out;
}

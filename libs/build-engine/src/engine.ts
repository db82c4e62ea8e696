import { createHash } from 'node:crypto';
import path from 'node:path/posix';
import type { Readable } from 'node:stream';
import {
  type CommandLine,
  type CopyInstruction,
  type AddInstruction,
  type Dockerfile,
  DockerfileError,
  expand,
  type Instruction,
  parseDockerfile,
  runScript,
  type StageInstruction,
  type VariableLookup,
} from '@strata/dockerfile';
import {
  canonicalJson,
  type ContainerConfig,
  type Descriptor,
  type Digest,
  type HistoryEntry,
  type ImageConfig,
  type LayerEntry,
  type FileContent,
  normalizeLayerPath,
  type PackedLayer,
  LayerWriter,
  resolveInRoot,
} from '@strata/oci';
import { BuildContext, ContextSourceError, type ContextEntry, IndexedRootfs } from './context.js';
import {
  type BaseImage,
  type BuildEvent,
  BuildFailure,
  type CacheIndex,
  type CachedStep,
  type ImageResolver,
  type LayerSink,
  type RootfsProvider,
  type RootfsView,
  type RunExecutor,
  type RunMountRequest,
  type RunOutcome,
  RunStepError,
} from './interfaces.js';
import { explainMiss, MAX_FINGERPRINT_FILES, type StepFingerprint } from './miss-reason.js';
import { resolveOwner, type RootfsIndex, RootfsIndexer } from './rootfs-index.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface BuildInput {
  dockerfile: string;
  /** Name of the Dockerfile in the context, for messages. */
  dockerfilePath: string;
  context: BuildContext;
  buildArgs: Record<string, string>;
  target?: string;
  noCache?: boolean;
  /** Stages (by name) whose steps skip the cache, like BuildKit's --no-cache-filter. */
  noCacheStages?: string[];
  platform?: Platform;
  signal?: AbortSignal;
  /** Secrets sent with the build, by id, for `RUN --mount=type=secret`: values never enter a cache key. */
  secrets?: ReadonlyMap<string, Buffer>;
}

export interface EngineDeps {
  images: ImageResolver;
  layers: LayerSink;
  cache: CacheIndex;
  /** Most stages of one build run at once (independent stages run in parallel). Default 4. */
  maxParallelStages?: number;
  executor?: RunExecutor;
  rootfs?: RootfsProvider;
  onEvent?: (e: BuildEvent) => void;
  /** The same step in the previous build of this repository and target, to explain misses. */
  previousStep?: (stage: number, index: number) => StepFingerprint | null;
  /** Wall clock, replaceable for tests. */
  now?: () => Date;
  /** Layer indexes shared by every build of a worker; by default one per engine. */
  indexer?: RootfsIndexer;
}

export interface StageResult {
  index: number;
  name: string | null;
  config: ImageConfig;
  layers: Array<{ descriptor: Descriptor; diffId: Digest }>;
  /** Cache key of the stage's filesystem: what a dependent stage's steps chain from. */
  fsKey: string;
}

export interface BuildOutput {
  image: StageResult;
  base: { ref: string; source: string; manifestDigest: string } | null;
  warnings: Array<{ line: number; message: string }>;
}

const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const HISTORY_COMMENT = 'buildkit.dockerfile.v0';
const PROXY_ARGS = ['HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'NO_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'ftp_proxy', 'no_proxy', 'all_proxy'];

function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function platformString(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Build args that are always defined, like BuildKit's automatic platform args. */
function platformArgs(target: Platform, build: Platform): Record<string, string> {
  return {
    TARGETPLATFORM: platformString(target),
    TARGETOS: target.os,
    TARGETARCH: target.architecture,
    TARGETVARIANT: target.variant ?? '',
    BUILDPLATFORM: platformString(build),
    BUILDOS: build.os,
    BUILDARCH: build.architecture,
    BUILDVARIANT: build.variant ?? '',
  };
}

function envToMap(env: string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

function setEnv(config: ContainerConfig, key: string, value: string): void {
  const env = (config.Env ?? []).filter((kv) => !kv.startsWith(`${key}=`));
  env.push(`${key}=${value}`);
  config.Env = env;
}

/** Per-stage state while walking its instructions. */
interface StageState {
  config: ImageConfig;
  layers: Array<{ descriptor: Descriptor; diffId: Digest }>;
  /** Key of the filesystem so far: filesystem steps chain from it, metadata steps don't change it. */
  fsKey: string;
  /** Key of the previous step of any kind, for metadata steps. */
  stepKey: string;
  /** ARGs declared in this stage: name → value (undefined when declared without a value). */
  args: Map<string, string | undefined>;
  shell: string[];
  /** The image the stage starts from, for miss explanations of its first step. */
  base?: { ref: string; digest: string };
  /** The latest step of this stage that missed the cache, named in the misses it caused. */
  lastMiss: { line: number; instruction: string } | null;
  /** A RUN comes later in this stage: a layer written now is unpacked on this worker while it is stored. */
  runFollows?: boolean;
}

/**
 * The solver: reads a Dockerfile, walks the stages the target needs, and for every instruction
 * computes a cache key, reuses the cached result or executes the step. Knows nothing of S3,
 * Postgres or runc: those come in through EngineDeps.
 */
export class BuildEngine {
  private readonly indexer: RootfsIndexer;
  private readonly now: () => Date;
  /** Read-only views of stages that COPY --from reads, one per stage and build, released when the build ends. */
  private readonly stageViews = new WeakMap<BuildInput, Map<StageResult, Promise<RootfsView>>>();
  /** Layers written during a build from sources that outlive the step (the context pack): where their files' contents are. */
  private readonly live = new WeakMap<BuildInput, LiveLayers>();

  constructor(private readonly deps: EngineDeps) {
    this.indexer = deps.indexer ?? new RootfsIndexer((d) => deps.layers.open(d));
    this.now = deps.now ?? (() => new Date());
  }

  async build(request: BuildInput): Promise<BuildOutput> {
    // One signal for the whole build: the caller's cancel, or the first failing stage stopping the others.
    const stop = new AbortController();
    const onCancel = () => stop.abort();
    if (request.signal?.aborted) stop.abort();
    request.signal?.addEventListener('abort', onCancel, { once: true });
    const input: BuildInput = { ...request, signal: stop.signal };
    try {
      return await this.solve(input, stop);
    } finally {
      request.signal?.removeEventListener('abort', onCancel);
    }
  }

  private async solve(input: BuildInput, stop: AbortController): Promise<BuildOutput> {
    let df: Dockerfile;
    try {
      df = parseDockerfile(input.dockerfile);
    } catch (e) {
      if (e instanceof DockerfileError) {
        const d = e.diagnostics[0];
        throw new BuildFailure(`${input.dockerfilePath}:${d.line}: ${d.message}`, d.line);
      }
      throw e;
    }
    if (df.stages.length === 0) throw new BuildFailure(`${input.dockerfilePath} has no FROM instruction, so there is nothing to build`, 1);

    const platform = input.platform ?? DEFAULT_PLATFORM;
    const predefined = platformArgs(platform, DEFAULT_PLATFORM);
    const epoch = input.buildArgs.SOURCE_DATE_EPOCH;
    const sourceDateEpoch = epoch !== undefined && /^\d+$/.test(epoch) ? Number(epoch) : undefined;

    // Global ARGs: usable in FROM lines; build args override their defaults.
    const globalArgs = new Map<string, string | undefined>(Object.entries(predefined));
    for (const arg of df.globalArgs) {
      for (const decl of arg.args) {
        const fromBuild = input.buildArgs[decl.name];
        const value = fromBuild ?? (decl.defaultValue === null ? undefined : this.expandIn(decl.defaultValue, mapLookup(globalArgs), arg.line));
        globalArgs.set(decl.name, value);
      }
    }

    const names = new Map<string, number>();
    df.stages.forEach((s) => {
      if (s.name) names.set(s.name, s.index);
    });
    let targetIndex = df.stages.length - 1;
    if (input.target) {
      const t = names.get(input.target.toLowerCase());
      if (t === undefined) throw new BuildFailure(`target stage "${input.target}" is not a stage of ${input.dockerfilePath}`, null);
      targetIndex = t;
    }

    // Which stages the target needs: FROM <stage> and COPY --from=<stage>.
    const stageRef = (ref: string, before: number): number | null => {
      const byName = names.get(ref.toLowerCase());
      if (byName !== undefined && byName < before) return byName;
      if (/^\d+$/.test(ref) && Number(ref) < before) return Number(ref);
      return null;
    };
    const fromRefs = df.stages.map((s) => this.expandIn(s.from.image, mapLookup(globalArgs), s.from.line));
    const deps = df.stages.map((s, i) => {
      const d = new Set<number>();
      const base = stageRef(fromRefs[i], i);
      if (base !== null) d.add(base);
      for (const ins of s.instructions) {
        if (ins.keyword === 'COPY' && ins.from) {
          const r = stageRef(ins.from, i);
          if (r !== null) d.add(r);
        }
        if (ins.keyword === 'RUN') for (const m of ins.mounts) if (m.from) {
          const r = stageRef(m.from, i);
          if (r !== null) d.add(r);
        }
      }
      return d;
    });
    const needed = new Set<number>();
    const visit = (i: number) => {
      if (needed.has(i)) return;
      needed.add(i);
      for (const d of deps[i]) visit(d);
    };
    visit(targetIndex);

    const results = new Map<number, Promise<StageResult>>();
    let firstBase: BuildOutput['base'] = null;
    const slots = new Semaphore(this.deps.maxParallelStages ?? 4);
    const runStage = (i: number): Promise<StageResult> => {
      let p = results.get(i);
      if (!p) {
        p = (async () => {
          await Promise.all([...deps[i]].map((d) => runStage(d)));
          // Dependencies first, then a slot: a stage never holds a slot while it waits for another.
          const release = await slots.acquire();
          try {
            const stage = df.stages[i];
            const ref = fromRefs[i];
            const baseStage = stageRef(ref, i);
            let state: StageState;
            if (baseStage !== null) {
              const b = await runStage(baseStage);
              state = this.initialState(structuredClone(b.config), [...b.layers], b.fsKey);
            } else if (ref.toLowerCase() === 'scratch') {
              const created = this.timestamp(sourceDateEpoch);
              state = this.initialState(
                { created, architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}), config: { Env: [`PATH=${DEFAULT_PATH}`] }, rootfs: { type: 'layers', diff_ids: [] }, history: [] },
                [],
                sha256(`scratch\0${platformString(platform)}`),
              );
            } else {
              let base: BaseImage;
              try {
                base = await this.deps.images.resolve(ref);
              } catch (e) {
                throw new BuildFailure(`${input.dockerfilePath}:${stage.from.line}: FROM ${ref}: ${(e as Error).message}`, stage.from.line);
              }
              if (i === targetIndex || firstBase === null) firstBase = { ref: base.ref, source: base.source, manifestDigest: base.manifestDigest };
              const layers = base.layers.map((descriptor, n) => ({ descriptor, diffId: base.config.rootfs.diff_ids[n] }));
              const config = structuredClone(base.config);
              config.config = config.config ?? {};
              state = this.initialState(config, layers, sha256(`image\0${base.manifestDigest}\0${platformString(platform)}`));
              state.base = { ref: base.ref, digest: base.manifestDigest };
            }
            const instructions = [...this.onbuildTriggers(state, stage.from.line), ...stage.instructions];
            const lastRun = instructions.findLastIndex((later) => later.keyword === 'RUN');
            const inheritedHistory = state.config.history!.length;
            for (const [n, ins] of instructions.entries()) {
              if (input.signal?.aborted) throw new BuildFailure('the build was cancelled', ins.line);
              state.runFollows = n < lastRun;
              await this.step(input, df, state, { stage: i, stageName: stage.name, index: n }, ins, globalArgs, predefined, sourceDateEpoch, (ref) => {
                const s = stageRef(ref, i);
                return s === null ? null : runStage(s);
              });
            }
            state.config.rootfs = { type: 'layers', diff_ids: state.layers.map((l) => l.diffId) };
            // The image was made when its last step ran (FROM alone keeps the base image's time).
            if (state.config.history!.length > inheritedHistory) state.config.created = state.config.history!.at(-1)!.created;
            if (sourceDateEpoch !== undefined) state.config.created = this.timestamp(sourceDateEpoch);
            return { index: i, name: stage.name, config: state.config, layers: state.layers, fsKey: state.fsKey };
          } finally {
            release();
          }
        })();
        // A failing stage stops the stages running beside it; the first error is the one reported.
        p.catch(() => stop.abort());
        results.set(i, p);
      }
      return p;
    };
    let image: StageResult;
    try {
      image = await runStage(targetIndex);
      // Every layer durable and every cache entry written before the image is handed over.
      const pending = this.live.get(input)?.pending ?? [];
      await Promise.all(pending);
    } catch (e) {
      // Nothing of this build keeps running once it has failed: wait for the stopped stages to end.
      stop.abort();
      await Promise.allSettled(results.values());
      await Promise.allSettled(this.live.get(input)?.pending ?? []);
      throw e;
    } finally {
      const views = this.stageViews.get(input);
      this.stageViews.delete(input);
      for (const view of views?.values() ?? []) await view.then((v) => v.release()).catch(() => undefined);
      this.live.delete(input);
    }
    return { image, base: firstBase, warnings: df.warnings.map((w) => ({ line: w.line, message: w.message })) };
  }

  private timestamp(epoch: number | undefined): string {
    return (epoch !== undefined ? new Date(epoch * 1000) : this.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  private initialState(config: ImageConfig, layers: StageState['layers'], fsKey: string): StageState {
    config.config = config.config ?? {};
    config.history = config.history ?? [];
    return { config, layers, fsKey, stepKey: fsKey, args: new Map(), shell: config.config.Shell ?? ['/bin/sh', '-c'], lastMiss: null };
  }

  /** ONBUILD triggers of the base image run first, as if written right after FROM; then they are cleared. */
  private onbuildTriggers(state: StageState, fromLine: number): StageInstruction[] {
    const triggers = state.config.config?.OnBuild ?? [];
    if (triggers.length === 0) return [];
    state.config.config!.OnBuild = null;
    try {
      const parsed = parseDockerfile(`FROM scratch\n${triggers.join('\n')}\n`);
      return parsed.stages[0].instructions.map((ins) => ({ ...ins, line: fromLine, endLine: fromLine }));
    } catch (e) {
      throw new BuildFailure(`an ONBUILD trigger of the base image is invalid: ${(e as Error).message}`, fromLine);
    }
  }

  private expandIn(word: string, lookup: VariableLookup, line: number): string {
    try {
      return expand(word, lookup, { position: { line, column: 1 } }).value;
    } catch (e) {
      throw new BuildFailure((e as Error).message, line);
    }
  }

  private async step(
    input: BuildInput,
    df: Dockerfile,
    state: StageState,
    where: { stage: number; stageName: string | null; index: number },
    ins: StageInstruction,
    globalArgs: Map<string, string | undefined>,
    predefined: Record<string, string>,
    sourceDateEpoch: number | undefined,
    stageResult: (ref: string) => Promise<StageResult> | null,
  ): Promise<void> {
    const started = Date.now();
    const emit = this.deps.onEvent ?? (() => undefined);
    const instruction = ins.original.trim();
    emit({ type: 'step-start', stage: where.stage, index: where.index, instruction, line: ins.line });
    const cfg = state.config.config!;
    const env = envToMap(cfg.Env);
    // ENV wins over ARG of the same name.
    const lookup = (name: string): string | undefined => (env.has(name) ? env.get(name) : state.args.get(name));
    const seenArgs = new Set<string>();
    const x = (word: string): string => {
      try {
        const r = expand(word, lookup, { escapeToken: df.escapeToken, position: { line: ins.line, column: ins.column } });
        for (const m of r.matched) if (!env.has(m) && state.args.has(m)) seenArgs.add(m);
        return r.value;
      } catch (e) {
        throw new BuildFailure(`${input.dockerfilePath}:${ins.line}: ${(e as Error).message.replace(/^line \d+, column \d+: /, '')}`, ins.line);
      }
    };
    const fail = (message: string): never => {
      throw new BuildFailure(`${input.dockerfilePath}:${ins.line}: ${ins.keyword}: ${message}`, ins.line);
    };

    let definition: unknown;
    let createdBy = instruction;
    let fsStep = false;
    let execute: (() => Promise<CachedStep>) | null = null;
    let files: Map<string, string> | undefined;
    let label: string = ins.keyword;
    const history: HistoryEntry = {};

    switch (ins.keyword) {
      case 'ARG':
        for (const decl of ins.args) {
          const fromBuild = input.buildArgs[decl.name];
          let value: string | undefined;
          if (fromBuild !== undefined) value = fromBuild;
          else if (decl.defaultValue !== null) value = x(decl.defaultValue);
          else if (globalArgs.has(decl.name)) value = globalArgs.get(decl.name);
          else if (decl.name in predefined) value = predefined[decl.name];
          state.args.set(decl.name, value);
        }
        definition = { args: ins.args.map((a) => [a.name, state.args.get(a.name) ?? null]) };
        break;
      case 'ENV':
        for (const pair of ins.pairs) {
          const key = x(pair.key);
          const value = x(pair.value);
          setEnv(cfg, key, value);
          env.set(key, value);
        }
        definition = { env: cfg.Env };
        createdBy = `ENV ${ins.pairs.map((p) => `${x(p.key)}=${env.get(x(p.key))}`).join(' ')}`;
        break;
      case 'LABEL': {
        const labels = { ...(cfg.Labels ?? {}) };
        for (const pair of ins.pairs) labels[x(pair.key)] = x(pair.value);
        cfg.Labels = labels;
        definition = { labels };
        break;
      }
      case 'WORKDIR': {
        const dir = x(ins.path);
        cfg.WorkingDir = path.resolve(cfg.WorkingDir || '/', dir);
        definition = { workdir: cfg.WorkingDir };
        break;
      }
      case 'USER':
        cfg.User = x(ins.user);
        definition = { user: cfg.User };
        break;
      case 'EXPOSE': {
        const ports = { ...(cfg.ExposedPorts ?? {}) };
        for (const word of ins.ports) {
          for (const p of x(word).split(/\s+/).filter(Boolean)) {
            const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(p);
            if (!m) fail(`"${p}" is not a port: use PORT, PORT/tcp, PORT/udp or a range like 8000-8010`);
            const from = Number(m![1]);
            const to = m![2] ? Number(m![2]) : from;
            if (to < from || to > 65535) fail(`"${p}" is not a valid port range`);
            for (let port = from; port <= to; port++) ports[`${port}/${(m![3] ?? 'tcp').toLowerCase()}`] = {};
          }
        }
        cfg.ExposedPorts = ports;
        definition = { ports: Object.keys(ports).sort() };
        break;
      }
      case 'VOLUME': {
        const vols = { ...(cfg.Volumes ?? {}) };
        for (const p of ins.paths) {
          const v = x(p);
          if (v.trim() === '') fail('a volume path is empty');
          vols[v] = {};
        }
        cfg.Volumes = vols;
        definition = { volumes: Object.keys(vols).sort() };
        break;
      }
      case 'STOPSIGNAL':
        cfg.StopSignal = x(ins.signal);
        definition = { signal: cfg.StopSignal };
        break;
      case 'CMD':
        cfg.Cmd = commandArgs(ins.cmd, state.shell);
        definition = { cmd: cfg.Cmd };
        break;
      case 'ENTRYPOINT':
        cfg.Entrypoint = commandArgs(ins.cmd, state.shell);
        // As in Docker: a new ENTRYPOINT drops the CMD inherited from the base image.
        if (!(state as StageState & { cmdSet?: boolean }).cmdSet) cfg.Cmd = null;
        definition = { entrypoint: cfg.Entrypoint };
        break;
      case 'SHELL':
        state.shell = ins.shell;
        cfg.Shell = ins.shell;
        definition = { shell: ins.shell };
        break;
      case 'HEALTHCHECK': {
        const h = ins.healthcheck;
        cfg.Healthcheck =
          h.kind === 'none'
            ? { Test: ['NONE'] }
            : {
                Test: h.cmd.form === 'exec' ? ['CMD', ...h.cmd.args] : ['CMD-SHELL', h.cmd.command],
                ...(h.interval !== null ? { Interval: h.interval } : {}),
                ...(h.timeout !== null ? { Timeout: h.timeout } : {}),
                ...(h.startPeriod !== null ? { StartPeriod: h.startPeriod } : {}),
                ...(h.startInterval !== null ? { StartInterval: h.startInterval } : {}),
                ...(h.retries !== null ? { Retries: h.retries } : {}),
              };
        definition = { healthcheck: cfg.Healthcheck };
        break;
      }
      case 'ONBUILD':
        cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.trigger];
        definition = { onbuild: cfg.OnBuild };
        break;
      case 'MAINTAINER':
        state.config.author = ins.maintainer;
        definition = { author: ins.maintainer };
        break;
      case 'COPY':
      case 'ADD': {
        fsStep = true;
        const prepared = await this.prepareCopy(input, state, ins, x, fail, stageResult);
        definition = prepared.definition;
        files = prepared.files;
        label = `${ins.keyword} ${ins.sources.join(' ')}`;
        createdBy = `${instruction} # buildkit`;
        execute = () => this.executeCopy(input, state, prepared, sourceDateEpoch);
        break;
      }
      case 'RUN': {
        fsStep = true;
        if (!this.deps.executor) fail('RUN is not supported by this worker yet (it has no container runtime)');
        // RUN sees the image ENV plus the ARGs in scope; only ARGs it sees go into its key.
        const runEnv = new Map(env);
        for (const [k, v] of state.args) if (v !== undefined && !runEnv.has(k)) runEnv.set(k, v);
        const args = runArgs(ins, state.shell, fail);
        const envList = [...runEnv].map(([k, v]) => `${k}=${v}`);
        if (!runEnv.has('PATH')) envList.push(`PATH=${DEFAULT_PATH}`);
        for (const k of state.args.keys()) if (!env.has(k) && !PROXY_ARGS.includes(k)) seenArgs.add(k);
        const user = cfg.User || 'root';
        const cwd = cfg.WorkingDir || '/';
        const network = ins.network ?? 'default';
        const mounts = await this.prepareRunMounts(input, ins, cwd, x, fail, stageResult);
        definition = { args, env: envList.sort(), user, cwd, network, heredocs: ins.heredocs.map((h) => h.content), ...(mounts.length > 0 ? { mounts: mounts.map((m) => m.key) } : {}) };
        createdBy = `RUN ${args.join(' ')} # buildkit`;
        execute = () => this.executeRun(input, state, where, ins.line, { args, env: envList, user, cwd, network }, mounts, sourceDateEpoch, fail);
        break;
      }
      default:
        fail(`instruction ${(ins as Instruction).keyword} is not supported yet`);
    }

    const parentKey = fsStep ? state.fsKey : state.stepKey;
    const key = sha256(canonicalJson({ v: 1, kind: ins.keyword, parent: parentKey, definition, args: [...seenArgs].sort().map((a) => [a, state.args.get(a) ?? null]) }));
    const seen = Object.fromEntries([...seenArgs].sort().map((a) => [a, state.args.get(a) ?? null]));
    const fileList = files ? [...files].slice(0, MAX_FINGERPRINT_FILES) : undefined;
    const fingerprint: StepFingerprint = {
      kind: ins.keyword,
      line: ins.line,
      definition: sha256(canonicalJson(definition ?? null)),
      args: seen,
      ...(where.index === 0 && state.base ? { base: state.base } : {}),
      ...(fileList ? { files: Object.fromEntries(fileList), ...(files!.size > fileList.length ? { filesTruncated: true } : {}) } : {}),
      parent: parentKey,
    };
    const skipCache = input.noCache === true || (where.stageName !== null && (input.noCacheStages ?? []).includes(where.stageName));
    let cached = false;
    let result: CachedStep | null = null;
    if (!skipCache) {
      result = await this.deps.cache.get(key);
      if (result?.layer && !this.deps.cache.checksLayers && !(await this.deps.layers.has(result.layer.descriptor.digest))) result = null;
      cached = result !== null;
    }
    let missReason: string | null = null;
    if (!result) {
      missReason = skipCache
        ? input.noCache ? 'noCache was set for this build' : `noCache was set for stage "${where.stageName}"`
        : explainMiss(fingerprint, this.deps.previousStep?.(where.stage, where.index) ?? null, state.lastMiss, label);
      state.lastMiss = { line: ins.line, instruction };
      result = execute ? await execute() : {};
      const done: CachedStep = { ...result, created: this.timestamp(undefined) };
      result = done;
      // The entry is written once its layer is durable; the next step need not wait for that.
      const upload = done.layer ? this.live.get(input)?.stored.get(done.layer.descriptor.digest) : undefined;
      if (upload) {
        const entry = upload.then(() => this.deps.cache.put(key, done));
        entry.catch(() => undefined); // reported when the build awaits it
        this.liveOf(input).pending.push(entry);
      }
      else await this.deps.cache.put(key, done);
    }
    if (result.layer) state.layers.push(result.layer);
    if (fsStep) state.fsKey = key;
    state.stepKey = key;
    if (ins.keyword === 'CMD') (state as StageState & { cmdSet?: boolean }).cmdSet = true;
    // A step taken from the cache keeps the time it ran, so a rebuild with nothing changed gives the
    // same image digest (as BuildKit); SOURCE_DATE_EPOCH overrides both.
    const created = sourceDateEpoch !== undefined ? this.timestamp(sourceDateEpoch) : result.created ?? this.timestamp(undefined);
    state.config.history!.push({
      created,
      created_by: createdBy,
      comment: HISTORY_COMMENT,
      ...(result.layer ? {} : { empty_layer: true }),
      ...history,
    });
    emit({
      type: 'step-done',
      stage: where.stage,
      stageName: where.stageName,
      index: where.index,
      line: ins.line,
      instruction,
      cacheKey: key,
      cached,
      missReason,
      fingerprint,
      startedAt: new Date(started),
      durationMs: Date.now() - started,
      layerDigest: result.layer?.descriptor.digest ?? null,
      layerSize: result.layer?.descriptor.size ?? null,
    });
  }

  private async prepareCopy(
    input: BuildInput,
    state: StageState,
    ins: CopyInstruction | AddInstruction,
    x: (w: string) => string,
    fail: (m: string) => never,
    stageResult: (ref: string) => Promise<StageResult> | null,
  ): Promise<PreparedCopy> {
    if (ins.keyword === 'ADD') {
      for (const s of ins.sources) {
        if (/^(https?|git):\/\//.test(s) || s.startsWith('git@')) fail(`remote sources ("${s}") are not supported yet`);
      }
    }
    let context = input.context;
    if (ins.keyword === 'COPY' && ins.from) {
      const from = x(ins.from);
      const sr = stageResult(from);
      if (!sr) fail(`--from=${from}: copying from an image is not supported yet; name a stage of this Dockerfile`);
      if (!this.deps.rootfs) fail('COPY --from a stage is not supported by this worker yet');
      const stage = await sr!;
      context = new IndexedRootfs(
        await this.indexer.index(stage.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId }))),
        (layer, at) => this.live.get(input)?.contents.get(layer)?.get(at),
        async () => (await this.stageView(input, stage)).root,
      );
    }
    if (ins.heredocs.length > 0) fail('heredoc sources are not supported yet');
    const cfg = state.config.config!;
    let dest = x(ins.dest);
    const destIsDir = dest.endsWith('/') || dest === '.' || dest === '..';
    dest = path.resolve(cfg.WorkingDir || '/', dest);
    const sources: ContextEntry[] = [];
    for (const s of ins.sources) {
      try {
        sources.push(...(await context.resolve(x(s))));
      } catch (e) {
        if (e instanceof ContextSourceError) fail(e.message);
        throw e;
      }
    }
    if ((sources.length > 1 || ins.sources.length > 1) && !destIsDir) {
      fail(`with more than one source, the destination must be a directory and end with a "/" ("${ins.dest}")`);
    }
    const chmod = ins.chmod ? x(ins.chmod) : null;
    if (chmod !== null && !/^[0-7]{3,4}$/.test(chmod)) fail(`--chmod="${chmod}" is not an octal mode like 755 or 0644`);
    const chown = ins.chown ? x(ins.chown) : null;
    let owner = { uid: 0, gid: 0 };
    // Reading the image's layers costs downloads: only when needed (named owners now, parents on a miss).
    const layers = state.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId }));
    const index = () => this.indexer.index(layers);
    if (chown && !/^\d+(:\d+)?$/.test(chown)) {
      try {
        owner = resolveOwner(chown, await index());
      } catch (e) {
        fail(`--chown=${chown}: ${(e as Error).message}`);
      }
    } else if (chown) {
      const [uid, gid] = chown.split(':').map(Number);
      owner = { uid, gid: gid ?? uid };
    }
    const checksum = await context.checksum(sources);
    return {
      sources,
      dest,
      destIsDir,
      owner,
      chmod: chmod === null ? null : parseInt(chmod, 8),
      index,
      context,
      definition: { kind: ins.keyword, dest, destIsDir, chown: owner, chmod, sources: ins.sources.map(x), checksum: checksum.digest },
      files: checksum.files,
    };
  }

  private async executeCopy(input: BuildInput, state: StageState, p: PreparedCopy, sourceDateEpoch: number | undefined): Promise<CachedStep> {
    const image = await p.index();
    const entries = new Map<string, LayerEntry>();
    const rel = (abs: string) => abs.replace(/^\/+/, '');
    const epochMtime = sourceDateEpoch ?? 0;
    // Parents of what we write: kept as they are in the image when they exist, created root-owned 0755 otherwise.
    const addParents = (target: string) => {
      const parts = rel(target).split('/').slice(0, -1);
      for (let n = 1; n <= parts.length; n++) {
        const dir = parts.slice(0, n).join('/');
        if (entries.has(dir)) continue;
        const existing = image.paths.get(dir);
        entries.set(dir, existing
          ? { type: 'directory', path: dir, mode: existing.mode, uid: existing.uid, gid: existing.gid, mtime: existing.mtime }
          : { type: 'directory', path: dir, mode: 0o755, uid: 0, gid: 0, mtime: epochMtime });
      }
    };
    const put = (target: string, e: ContextEntry) => {
      const pth = rel(target);
      if (pth === '') return;
      addParents(target);
      const mode = p.chmod ?? e.mode;
      const base = { path: pth, uid: p.owner.uid, gid: p.owner.gid, mtime: e.mtime };
      if (e.type === 'directory') entries.set(pth, { ...base, type: 'directory', mode });
      else if (e.type === 'symlink') entries.set(pth, { ...base, type: 'symlink', target: e.linkTarget!, mode: 0o777 });
      else entries.set(pth, { ...base, type: 'file', mode, content: p.context.content(e) });
    };
    for (const src of p.sources) {
      if (src.type === 'directory') {
        // A directory's contents go into the destination; the destination itself takes the owner.
        const destDir = p.dest;
        if (rel(destDir) !== '') {
          addParents(destDir);
          const existing = image.paths.get(rel(destDir));
          entries.set(rel(destDir), { type: 'directory', path: rel(destDir), mode: existing?.mode ?? 0o755, uid: p.chmod !== null || p.owner.uid !== 0 ? p.owner.uid : existing?.uid ?? 0, gid: p.owner.gid !== 0 ? p.owner.gid : existing?.gid ?? 0, mtime: existing?.mtime ?? epochMtime });
        }
        for await (const e of p.context.walk(src)) {
          if (e === src) continue;
          const sub = e.rel.slice(src.rel === '' ? 0 : src.rel.length + 1);
          put(path.join(destDir, sub), e);
        }
      } else {
        const target = p.destIsDir ? path.join(p.dest, path.basename(src.rel)) : p.dest;
        put(target, src);
      }
    }
    const layerEntries = [...entries.values()];
    // A RUN later in this stage stacks on this layer: unpack it here while it is compressed and stored.
    const adopt = state.runFollows && this.deps.rootfs?.adopt ? this.deps.rootfs.adopt(() => new LayerWriter({ clampMtime: sourceDateEpoch, compression: 'none' }).pack(layerEntries).stream) : null;
    adopt?.catch(() => undefined);
    const layer = await this.storeLayer(input, new LayerWriter({ clampMtime: sourceDateEpoch }).pack(layerEntries), layerEntries, sourceDateEpoch);
    // Failing to unpack it here only means the RUN unpacks it itself.
    await adopt?.catch(() => undefined);
    return { layer };
  }

  /**
   * Stores a layer and indexes it from what was written, so later COPY steps need not read it
   * back; its files' sources stay at hand for COPY --from until the build ends.
   */
  private async storeLayer(input: BuildInput, packed: PackedLayer, entries: readonly LayerEntry[], clampMtime?: number): Promise<{ descriptor: Descriptor; diffId: Digest }> {
    const { stored, ...layer } = await this.deps.layers.store(packed);
    this.indexer.seed(layer.descriptor.digest, (await packed.result).entries);
    if (stored) {
      this.liveOf(input).stored.set(layer.descriptor.digest, stored);
      this.liveOf(input).pending.push(stored);
    }
    const contents = new Map<string, FileContent>();
    let reusable = entries.length > 0;
    for (const e of entries) {
      if (e.type !== 'file') continue;
      const c = e.content;
      // One-shot streams cannot be read twice; everything else can.
      if ('stream' in c && typeof c.stream !== 'function') {
        reusable = false;
        continue;
      }
      contents.set(normalizeLayerPath(e.path, false), c);
    }
    const live = this.liveOf(input);
    live.contents.set(layer.descriptor.digest, contents);
    // A RUN stacked on this layer unpacks it from the same sources, uncompressed, not from the store.
    if (reusable) live.tars.set(layer.descriptor.digest, () => new LayerWriter({ clampMtime, compression: 'none' }).pack(entries).stream);
    return layer;
  }

  /** Layers as the runtime gets them: those this build wrote come from where the build has them, not the store. */
  private layerRefs(input: BuildInput, layers: ReadonlyArray<{ descriptor: Descriptor; diffId: Digest }>): Array<{ descriptor: Descriptor; diffId: Digest; open?: () => Readable | Promise<Readable> }> {
    const live = this.live.get(input);
    return layers.map((l) => {
      const d = l.descriptor.digest;
      const open = live?.tars.get(d) ?? (live?.stored.has(d) ? () => this.deps.layers.open(d) : undefined);
      return open ? { ...l, open } : l;
    });
  }

  private liveOf(input: BuildInput): LiveLayers {
    let live = this.live.get(input);
    if (!live) this.live.set(input, (live = { contents: new Map(), tars: new Map(), stored: new Map(), pending: [] }));
    return live;
  }

  private stageView(input: BuildInput, stage: StageResult): Promise<RootfsView> {
    let views = this.stageViews.get(input);
    if (!views) this.stageViews.set(input, (views = new Map()));
    let view = views.get(stage);
    if (!view) {
      view = this.deps.rootfs!.open(this.layerRefs(input, stage.layers));
      views.set(stage, view);
    }
    return view;
  }

  /** Resolves `RUN --mount` options: what goes into the cache key and how to mount it when the step runs. */
  private async prepareRunMounts(
    input: BuildInput,
    ins: Extract<StageInstruction, { keyword: 'RUN' }>,
    cwd: string,
    x: (w: string) => string,
    fail: (m: string) => never,
    stageResult: (ref: string) => Promise<StageResult> | null,
  ): Promise<PreparedMount[]> {
    const out: PreparedMount[] = [];
    for (const m of ins.mounts) {
      const what = `--mount=${m.raw}`;
      if (m.type === 'ssh') fail(`${what}: ssh mounts are not supported yet`);
      if (m.type === 'secret') {
        // As BuildKit: id defaults to the target's base name; with neither target nor env the file goes to /run/secrets/<id>.
        const target = m.target ? path.resolve(cwd, x(m.target)) : null;
        const id = m.id ? x(m.id) : m.source ? x(m.source) : target ? path.basename(target) : '';
        if (!/^[A-Za-z0-9._-]+$/.test(id)) fail(`${what}: invalid secret id "${id}"`);
        const env = m.env ? x(m.env) : null;
        if (env !== null && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(env)) fail(`${what}: invalid environment variable name "${env}"`);
        const dest = target ?? (env === null ? `/run/secrets/${id}` : null);
        if (dest === '/') fail(`${what}: cannot mount over the root directory`);
        const value = input.secrets?.get(id);
        if (!value) {
          if (m.required) fail(`${what}: the secret "${id}" is required but was not sent with the build (Strata-Build-Secret: id=${id},src=<base64>)`);
          continue; // BuildKit skips a missing optional secret
        }
        const uid = m.uid ?? 0;
        const gid = m.gid ?? 0;
        const mode = m.mode ?? 0o400;
        // The key names the secret, never its value.
        out.push({ key: { type: 'secret', id, target: dest, env, uid, gid, mode }, request: { type: 'secret', id, target: dest, env, value, uid, gid, mode } });
        continue;
      }
      if (!m.target) fail(`${what}: the mount needs a target`);
      const target = path.resolve(cwd, x(m.target!));
      if (target === '/') fail(`${what}: cannot mount over the root directory`);
      if (m.type === 'tmpfs') {
        const req = { type: 'tmpfs' as const, target, ...(m.size !== null ? { sizeBytes: m.size } : {}) };
        out.push({ key: req, request: req });
      } else if (m.type === 'cache') {
        const id = m.id ? x(m.id) : target;
        const req = { type: 'cache' as const, target, id, sharing: m.sharing ?? 'shared', readOnly: m.readOnly, uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o755 };
        out.push({ key: req, request: req });
      } else if (m.type === 'bind') {
        const source = m.source ? x(m.source) : '/';
        if (m.from) {
          const from = x(m.from);
          const pending = stageResult(from);
          if (!pending) fail(`${what}: binding from an image is not supported yet; name a stage of this Dockerfile`);
          if (!this.deps.rootfs) fail(`${what}: this worker cannot mount other stages`);
          const stage = await pending!;
          out.push({ key: { type: 'bind', target, from: stage.fsKey, source, readOnly: m.readOnly }, request: { type: 'bind', target, source: '', readOnly: m.readOnly }, stage, source });
        } else {
          // Writes to a context bind would leak into later COPY steps: only read-only for now.
          if (!m.readOnly) fail(`${what}: read-write binds of the build context are not supported yet`);
          let entries: ContextEntry[];
          try {
            entries = await input.context.resolve(source);
          } catch (e) {
            if (e instanceof ContextSourceError) fail(`${what}: ${e.message}`);
            throw e;
          }
          const checksum = await input.context.checksum(entries!);
          const abs = await resolveInRoot(await input.context.directory(), source);
          out.push({ key: { type: 'bind', target, context: checksum.digest, source, readOnly: true }, request: { type: 'bind', target, source: abs, readOnly: true } });
        }
      } else {
        fail(`${what}: mount type "${m.type as string}" is not supported`);
      }
    }
    return out;
  }

  private async executeRun(
    input: BuildInput,
    state: StageState,
    where: { stage: number; index: number },
    line: number,
    spec: { args: string[]; env: string[]; user: string; cwd: string; network: 'default' | 'none' | 'host' },
    mounts: PreparedMount[],
    sourceDateEpoch: number | undefined,
    fail: (m: string) => never,
  ): Promise<CachedStep> {
    const emit = this.deps.onEvent ?? (() => undefined);
    const tail: string[] = [];
    const views: Array<{ release(): Promise<void> }> = [];
    let outcome: RunOutcome;
    try {
      const requests: RunMountRequest[] = [];
      for (const m of mounts) {
        if (m.stage) {
          const view = await this.deps.rootfs!.open(m.stage.layers);
          views.push(view);
          requests.push({ ...m.request, source: await resolveInRoot(view.root, m.source!) } as RunMountRequest);
        } else {
          requests.push(m.request);
        }
      }
      try {
        outcome = await this.deps.executor!.run({
          layers: this.layerRefs(input, state.layers),
          mounts: requests,
          ...spec,
          line,
          signal: input.signal ?? new AbortController().signal,
          onOutput: (stream, text) => {
            tail.push(text);
            if (tail.length > 10) tail.shift();
            emit({ type: 'log', stage: where.stage, index: where.index, stream, line: text });
          },
        });
      } catch (e) {
        if (e instanceof RunStepError) fail(e.message);
        throw e;
      }
    } finally {
      for (const view of views) await view.release().catch(() => undefined);
    }
    const lastOutput = tail.length ? `; last output:\n${tail.join('\n')}` : '';
    let kept = false;
    try {
      if (outcome.cancelled || input.signal?.aborted) fail('the build was cancelled; the command was killed');
      if (outcome.oomKilled) fail(`"${spec.args.join(' ')}" ran out of memory and was killed${lastOutput}`);
      if (outcome.timedOut) fail(`"${spec.args.join(' ')}" took longer than the step time limit and was killed${lastOutput}`);
      if (outcome.exitCode !== 0) {
        const pids = outcome.pidsLimitHit ? ' (it hit the process limit: a fork failed)' : '';
        fail(`"${spec.args.join(' ')}" exited with code ${outcome.exitCode}${pids}${lastOutput}`);
      }
      if (outcome.entries.length === 0) return { emptyLayer: true };
      const packed = new LayerWriter({ clampMtime: sourceDateEpoch }).pack(outcome.entries);
      const layer = await this.storeLayer(input, packed, []);
      if (outcome.keep) {
        // What the step wrote becomes the worker's copy of the layer (a failure only costs a fetch later).
        kept = true;
        await outcome.keep(layer.diffId, (await packed.result).uncompressedSize).catch(() => outcome.release());
      }
      return { layer };
    } finally {
      if (!kept) await outcome.release();
    }
  }
}

interface LiveLayers {
  /** Layer digest → path in the layer → where the file's content is. */
  contents: Map<string, Map<string, FileContent>>;
  /** Layer digest → its uncompressed tar, written again from the same sources. */
  tars: Map<string, () => Readable>;
  /** Layer digest → its upload, for layers still being stored. */
  stored: Map<string, Promise<void>>;
  /** Uploads and the cache entries waiting on them: all settle before the build's image is returned. */
  pending: Array<Promise<unknown>>;
}

/** A RUN mount: `key` goes into the step's cache key, `request` to the executor (stage binds get their source when the step runs). */
interface PreparedMount {
  key: unknown;
  request: RunMountRequest;
  stage?: StageResult;
  source?: string;
}

interface PreparedCopy {
  sources: ContextEntry[];
  dest: string;
  destIsDir: boolean;
  owner: { uid: number; gid: number };
  chmod: number | null;
  /** The image's paths, owners, passwd and group; read lazily (it downloads layers). */
  index: () => Promise<RootfsIndex>;
  context: BuildContext;
  definition: unknown;
  /** Each source entry's hash, for miss explanations. */
  files: Map<string, string>;
}

function mapLookup(m: Map<string, string | undefined>): (name: string) => string | undefined {
  return (name) => m.get(name);
}

function commandArgs(cmd: CommandLine, shell: string[]): string[] {
  return cmd.form === 'exec' ? cmd.args : [...shell, cmd.command];
}

function runArgs(ins: Extract<StageInstruction, { keyword: 'RUN' }>, shell: string[], fail: (m: string) => never): string[] {
  const script = runScript(ins);
  if (script.kind === 'exec') return script.args;
  if (script.kind === 'shell') return [...shell, script.script];
  // `RUN <<EOF` with a `#!` line: shell interpreters run the body as is; others need a script file, not done yet.
  const interpreter = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(script.content);
  const program = interpreter ? (interpreter[1].endsWith('/env') ? interpreter[2] ?? '' : interpreter[1]) : '';
  if (/(^|\/)(sh|bash|ash|dash)$/.test(program)) return [program.includes('/') ? program : `/bin/${program}`, '-c', script.content];
  return fail(`heredoc scripts run by "${program}" are not supported yet; use a shell script or RUN <<EOF ${program}`);
}

/** Counts free slots; acquire() resolves with the function that gives the slot back. */
class Semaphore {
  private readonly waiting: Array<() => void> = [];

  constructor(private free: number) {}

  async acquire(): Promise<() => void> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
  }
}

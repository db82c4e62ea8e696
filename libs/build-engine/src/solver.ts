// The solver: reads a Dockerfile, walks the stages the target needs (independent stages in
// parallel), and runs each stage's instructions as steps. Knows nothing of S3, Postgres or runc:
// those come in through EngineDeps.

import {
  type Dockerfile,
  DockerfileError,
  expand,
  parseDockerfile,
  type StageInstruction,
  type VariableLookup,
} from '@strata/dockerfile';
import type { ImageConfig } from '@strata/oci';
import type { BuildInput, BuildOutput, EngineDeps, Platform, StageResult } from './build-input.js';
import { sha256 } from './cache-key.js';
import { runStep, stepContext } from './dispatch.js';
import { type BaseImage, BuildFailure } from './interfaces.js';
import { LiveLayers } from './live-layers.js';
import { RootfsIndexer } from './rootfs-index.js';
import { Semaphore } from './semaphore.js';
import { type BuildScope, DEFAULT_PATH, initialState, type StageState } from './step-context.js';

const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

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

function mapLookup(m: Map<string, string | undefined>): (name: string) => string | undefined {
  return (name) => m.get(name);
}

function expandIn(word: string, lookup: VariableLookup, line: number): string {
  try {
    return expand(word, lookup, { position: { line, column: 1 } }).value;
  } catch (e) {
    throw new BuildFailure((e as Error).message, line);
  }
}

/** ONBUILD triggers of the base image run first, as if written right after FROM; then they are cleared. */
function onbuildTriggers(state: StageState, fromLine: number): StageInstruction[] {
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

/**
 * Builds Dockerfiles: for every instruction of the stages the target needs, computes a cache key,
 * reuses the cached result or executes the step.
 */
export class BuildEngine {
  private readonly indexer: RootfsIndexer;
  private readonly now: () => Date;

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

  private timestamp(epoch: number | undefined): string {
    return (epoch !== undefined ? new Date(epoch * 1000) : this.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
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
        const value = fromBuild ?? (decl.defaultValue === null ? undefined : expandIn(decl.defaultValue, mapLookup(globalArgs), arg.line));
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
    const fromRefs = df.stages.map((s) => expandIn(s.from.image, mapLookup(globalArgs), s.from.line));
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

    const live = new LiveLayers(this.deps.layers, this.indexer, this.deps.rootfs);
    const build: BuildScope = {
      input, deps: this.deps, df, indexer: this.indexer, live, globalArgs, predefined, sourceDateEpoch,
      timestamp: (e) => this.timestamp(e),
      emit: this.deps.onEvent ?? (() => undefined),
    };
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
              state = initialState(structuredClone(b.config), [...b.layers], b.fsKey);
            } else if (ref.toLowerCase() === 'scratch') {
              const created = this.timestamp(sourceDateEpoch);
              const config: ImageConfig = { created, architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}), config: { Env: [`PATH=${DEFAULT_PATH}`] }, rootfs: { type: 'layers', diff_ids: [] }, history: [] };
              state = initialState(config, [], sha256(`scratch\0${platformString(platform)}`));
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
              state = initialState(config, layers, sha256(`image\0${base.manifestDigest}\0${platformString(platform)}`));
              state.base = { ref: base.ref, digest: base.manifestDigest };
            }
            const instructions = [...onbuildTriggers(state, stage.from.line), ...stage.instructions];
            const lastRun = instructions.findLastIndex((later) => later.keyword === 'RUN');
            const inheritedHistory = state.config.history!.length;
            const stageResult = (ref: string) => {
              const s = stageRef(ref, i);
              return s === null ? null : runStage(s);
            };
            for (const [n, ins] of instructions.entries()) {
              if (input.signal?.aborted) throw new BuildFailure('the build was cancelled', ins.line);
              state.runFollows = n < lastRun;
              await runStep(stepContext(build, state, { stage: i, stageName: stage.name, index: n }, ins, stageResult));
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
      await live.settle();
    } catch (e) {
      // Nothing of this build keeps running once it has failed: wait for the stopped stages to end.
      stop.abort();
      await Promise.allSettled(results.values());
      await live.drain();
      throw e;
    } finally {
      await live.release();
    }
    return { image, base: firstBase, warnings: df.warnings.map((w) => ({ line: w.line, message: w.message })) };
  }
}

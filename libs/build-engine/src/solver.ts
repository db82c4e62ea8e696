// The solver: runs the plan libs/dockerfile makes of a Dockerfile, walking the stages the target
// needs (independent stages in parallel, at most maxParallelStages at once) and running each stage's
// instructions as steps. Knows nothing of S3, Postgres or runc: those come in through EngineDeps.

import {
  analyzeDockerfile,
  type BuildPlan,
  DEFAULT_PLATFORM,
  DockerfileError,
  formatPlatform,
  parseCheckedTrigger,
  StageEnv,
  stageReference,
  type StageInstruction,
  type SupportOptions,
} from '@strata/dockerfile';
import type { ImageConfig } from '@strata/oci';
import type { BuildInput, BuildOutput, EngineDeps, StageResult } from './build-input.js';
import { sha256 } from './cache-key.js';
import { runStep, stepContext } from './dispatch.js';
import { type BaseImage, BuildFailure } from './interfaces.js';
import { LiveLayers } from './live-layers.js';
import { RootfsIndexer } from './rootfs-index.js';
import { Semaphore } from './semaphore.js';
import { type BuildScope, initialState, type StageState } from './step-context.js';

/** ONBUILD triggers of the base image run first, as if written right after FROM; then they are cleared. */
function onbuildTriggers(config: ImageConfig, fromLine: number, support: SupportOptions): StageInstruction[] {
  const triggers = config.config?.OnBuild ?? [];
  if (triggers.length === 0) return [];
  config.config!.OnBuild = null;
  return triggers.map((trigger) => {
    try {
      return { ...parseCheckedTrigger(trigger, support), line: fromLine, endLine: fromLine };
    } catch (e) {
      const message = e instanceof DockerfileError ? e.diagnostics[0].message : (e as Error).message;
      throw new BuildFailure(`the ONBUILD trigger "${trigger}" of the base image cannot be built: ${message}`, fromLine);
    }
  });
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
    // The Dockerfile frontend decides what the file means, exactly as /v1/dockerfile/check does.
    const { result, plan } = analyzeDockerfile(input.dockerfile, {
      buildArgs: input.buildArgs,
      target: input.target,
      platform: input.platform ?? DEFAULT_PLATFORM,
      allowHostNetwork: this.deps.allowHostNetwork,
      allowInsecure: this.deps.allowInsecure,
    });
    if (!plan) {
      const d = result.errors[0];
      throw new BuildFailure(`${input.dockerfilePath}:${d.line}: ${d.message}`, d.line);
    }
    const df = plan.dockerfile;
    const platform = plan.platform;
    const epoch = input.buildArgs.SOURCE_DATE_EPOCH;
    const sourceDateEpoch = epoch !== undefined && /^\d+$/.test(epoch) ? Number(epoch) : undefined;
    const targetIndex = plan.target;

    const live = new LiveLayers(this.deps.layers, this.indexer, this.deps.rootfs);
    const build: BuildScope = {
      input, deps: this.deps, plan, indexer: this.indexer, live, sourceDateEpoch,
      timestamp: (e) => this.timestamp(e),
      emit: this.deps.onEvent ?? (() => undefined),
    };
    const results = new Map<number, Promise<StageResult>>();
    // Each finished stage's variables: a stage built FROM it carries them on, as in BuildKit.
    const stageVars = new Map<number, StageEnv>();
    let firstBase: BuildOutput['base'] = null;
    const slots = new Semaphore(this.deps.maxParallelStages ?? 4);
    // `COPY --from` and `RUN --mount=from` naming no stage take an image, resolved like FROM, once per build.
    const images = new Map<string, Promise<StageResult>>();
    const imageResult = (ref: string): Promise<StageResult> => {
      let p = images.get(ref);
      if (!p) {
        p = this.deps.images.resolve(ref).then((base) => ({
          index: -1,
          name: null,
          config: base.config,
          layers: base.layers.map((descriptor, n) => ({ descriptor, diffId: base.config.rootfs.diff_ids[n] })),
          fsKey: sha256(`image\0${base.manifestDigest}\0${formatPlatform(platform)}`),
        }));
        p.catch(() => undefined);
        images.set(ref, p);
      }
      return p;
    };
    const runStage = (i: number): Promise<StageResult> => {
      let p = results.get(i);
      if (!p) {
        p = (async () => {
          await Promise.all(plan.stages[i].dependsOn.map((d) => runStage(d)));
          // Dependencies first, then a slot: a stage never holds a slot while it waits for another.
          const release = await slots.acquire();
          try {
            const stage = df.stages[i];
            const from = plan.stages[i].base;
            let state: StageState;
            if (from.kind === 'stage') {
              const b = await runStage(from.index);
              state = initialState(structuredClone(b.config), [...b.layers], b.fsKey, new StageEnv(plan, { parent: stageVars.get(from.index) }));
            } else if (from.kind === 'scratch') {
              const created = this.timestamp(sourceDateEpoch);
              const config: ImageConfig = { created, architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}), config: { WorkingDir: '/' }, rootfs: { type: 'layers', diff_ids: [] }, history: [] };
              state = initialState(config, [], sha256(`scratch\0${formatPlatform(platform)}`), new StageEnv(plan, { baseEnv: [], baseWorkdir: '/' }));
            } else {
              const ref = from.ref;
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
              state = initialState(config, layers, sha256(`image\0${base.manifestDigest}\0${formatPlatform(platform)}`), baseVars(plan, config));
              state.base = { ref: base.ref, digest: base.manifestDigest };
            }
            const instructions = [...onbuildTriggers(state.config, stage.from.line, { allowHostNetwork: this.deps.allowHostNetwork, allowInsecure: this.deps.allowInsecure }), ...stage.instructions];
            const lastRun = instructions.findLastIndex((later) => later.keyword === 'RUN');
            const inheritedHistory = state.config.history!.length;
            const stageResult = (ref: string) => {
              const s = stageReference(df.stages, ref);
              return s === null ? imageResult(ref) : runStage(s);
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
            stageVars.set(i, state.vars);
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
      // Every layer durable and every cache entry written before the image is handed over; what the
      // caller does with the finished image meanwhile (storing its config and manifest) overlaps the wait.
      const meanwhile = input.whileSettling?.(image);
      meanwhile?.catch(() => undefined);
      await Promise.all([live.settle(), meanwhile]);
    } catch (e) {
      // Nothing of this build keeps running once it has failed: wait for the stopped stages to end.
      stop.abort();
      await Promise.allSettled(results.values());
      await live.drain();
      throw e;
    } finally {
      await live.release();
    }
    return { image, base: firstBase, warnings: result.warnings.map((w) => ({ line: w.line, message: w.message })) };
  }
}

/** The variables of a stage built on an image: its config's Env, WorkingDir, User and Shell. */
function baseVars(plan: BuildPlan, config: ImageConfig): StageEnv {
  const c = config.config ?? {};
  return new StageEnv(plan, { baseEnv: c.Env ?? [], baseWorkdir: c.WorkingDir ?? '', baseUser: c.User ?? '', baseShell: c.Shell ?? undefined });
}

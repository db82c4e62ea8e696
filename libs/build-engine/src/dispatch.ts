// One step of a stage: dispatch the instruction to what handles it (metadata, COPY/ADD, RUN),
// look its key up in the cache, run it on a miss, and record its history line and events.

import { DockerfileError, type EvaluatedStep, type Instruction, type StageInstruction } from '@strata/dockerfile';
import type { HistoryEntry } from '@strata/oci';
import type { StageResult } from './build-input.js';
import { lookupStep, missReason, sha256, skipsCache, stepCacheKey, stepFingerprint, type StepIdentity } from './cache-key.js';
import { executeCopy, prepareCopy } from './copy-step.js';
import { BuildFailure, type CachedStep } from './interfaces.js';
import { applyMetadataStep, isMetadataStep } from './metadata-steps.js';
import { executeRun, prepareRun } from './run-step.js';
import { type BuildScope, type StageState, type StepContext, type StepPosition } from './step-context.js';

const HISTORY_COMMENT = 'buildkit.dockerfile.v0';
/** What a --link step's key chains from instead of the stage's filesystem: the same for every base. */
const LINKED_LAYER_ROOT = sha256('strata:copy --link');

/** What a dispatched instruction amounts to before the cache is asked. */
interface PlannedStep {
  definition: unknown;
  /** The history line, as BuildKit writes it; null: the step adds no history entry. */
  createdBy: string | null;
  /** COPY/ADD/RUN: chains from the stage's filesystem key and moves it. */
  fsStep: boolean;
  /** COPY/ADD --link: the layer does not depend on the filesystem below it, so its key does not chain from it. */
  independent?: boolean;
  /** Runs the step on a cache miss; metadata steps have nothing to run. */
  execute: (() => Promise<CachedStep>) | null;
  files?: ReadonlyMap<string, string>;
  /** How a miss names the step. */
  label: string;
}

/**
 * A step's context: the build, the stage so far, and the instruction as the frontend's StageEnv
 * evaluates it (words expanded, the stage's variables advanced).
 */
export function stepContext(
  build: BuildScope,
  stage: StageState,
  where: StepPosition,
  raw: StageInstruction,
  stageResult: (ref: string) => Promise<StageResult>,
): StepContext {
  const fail = (message: string): never => {
    throw new BuildFailure(`${build.input.dockerfilePath}:${raw.line}: ${raw.keyword}: ${message}`, raw.line);
  };
  let evaluated: EvaluatedStep;
  try {
    evaluated = stage.vars.step(raw);
  } catch (e) {
    const message = e instanceof DockerfileError ? e.diagnostics[0].message : (e as Error).message;
    throw new BuildFailure(`${build.input.dockerfilePath}:${raw.line}: ${message.replace(/^line \d+, column \d+: /, '')}`, raw.line);
  }
  return { build, stage, where, ins: evaluated.instruction, evaluated, cfg: stage.config.config!, fail, stageResult };
}

async function planStep(ctx: StepContext): Promise<PlannedStep> {
  const { ins, build, stage } = ctx;
  const instruction = ins.original.trim();
  if (isMetadataStep(ctx)) {
    const m = applyMetadataStep(ctx);
    // WORKDIR writes a layer (the directory) besides changing the config.
    return { definition: m.definition, createdBy: m.createdBy === undefined ? instruction : m.createdBy, fsStep: m.layer !== undefined, execute: m.layer ?? null, label: ins.keyword };
  }
  if (ins.keyword === 'COPY' || ins.keyword === 'ADD') {
    const prepared = await prepareCopy(ctx as StepContext<typeof ins>);
    const heredocNames = ins.heredocs.map((h) => `<<${h.name}`);
    return {
      // BuildKit's history names the expanded sources (heredocs as <<NAME) and destination, without flags.
      definition: prepared.definition, createdBy: `${ins.keyword} ${[...ins.sources, ...heredocNames, ins.dest].join(' ')} # buildkit`, fsStep: true, files: prepared.files,
      independent: prepared.link,
      label: `${ins.keyword} ${[...ins.sources, ...heredocNames].join(' ')}`,
      execute: () => executeCopy(build, stage, prepared, ctx.fail),
    };
  }
  if (ins.keyword === 'RUN') {
    const prepared = await prepareRun(ctx as StepContext<typeof ins>);
    return {
      definition: prepared.definition, createdBy: prepared.createdBy, fsStep: true, label: ins.keyword,
      execute: () => executeRun(build, stage, ctx.where, ins.line, prepared, ctx.fail),
    };
  }
  return ctx.fail(`instruction ${(ins as Instruction).keyword} is not supported yet`);
}

/** Runs one instruction of a stage (from the cache when it can) and advances the stage's state. */
export async function runStep(ctx: StepContext): Promise<void> {
  const { build, stage, where, ins } = ctx;
  const started = Date.now();
  const instruction = ins.original.trim();
  build.emit({ type: 'step-start', stage: where.stage, index: where.index, instruction, line: ins.line });

  const planned = await planStep(ctx);
  const parent = planned.independent ? LINKED_LAYER_ROOT : planned.fsStep ? stage.fsKey : stage.stepKey;
  const identity: StepIdentity = {
    kind: ins.keyword, line: ins.line, parent, definition: planned.definition,
    // Build args whose values reached the step: a changed one is named when the step misses.
    args: ctx.evaluated.usedBuildArgs.map((a) => [a, build.plan.buildArgs[a] ?? null]),
    ...(planned.files ? { files: planned.files } : {}),
  };
  const key = stepCacheKey(identity);
  const fingerprint = stepFingerprint(identity, where.index === 0 ? stage.base : undefined);
  let result = skipsCache(build, where.stageName) ? null : await lookupStep(build, key);
  const cached = result !== null;
  let reason: string | null = null;
  if (!result) {
    reason = await missReason(build, stage, where, fingerprint, planned.label);
    stage.lastMiss = { line: ins.line, instruction };
    const done: CachedStep = { ...(planned.execute ? await planned.execute() : {}), created: build.timestamp() };
    result = done;
    // The entry is written once its layer is durable; the next step need not wait for that.
    const upload = done.layer ? build.live.upload(done.layer.descriptor.digest) : undefined;
    if (upload) build.live.wait(upload.then(() => build.deps.cache.put(key, done)));
    else await build.deps.cache.put(key, done);
  }
  if (result.layer) stage.layers.push(result.layer);
  // After a linked layer the filesystem is the base's plus that layer: later steps depend on both.
  if (planned.fsStep) stage.fsKey = planned.independent ? sha256(`${stage.fsKey}\0${key}`) : key;
  stage.stepKey = key;
  if (ins.keyword === 'CMD') stage.cmdSet = true;
  // A step taken from the cache keeps the time it ran, so a rebuild with nothing changed gives the
  // same image digest (as BuildKit); SOURCE_DATE_EPOCH overrides both.
  const created = build.sourceDateEpoch !== undefined ? build.timestamp(build.sourceDateEpoch) : result.created ?? build.timestamp();
  if (planned.createdBy !== null) {
    const history: HistoryEntry = { created, created_by: planned.createdBy, comment: HISTORY_COMMENT, ...(result.layer ? {} : { empty_layer: true }) };
    stage.config.history!.push(history);
  }
  build.emit({
    type: 'step-done',
    stage: where.stage,
    stageName: where.stageName,
    index: where.index,
    line: ins.line,
    instruction,
    cacheKey: key,
    cached,
    missReason: reason,
    fingerprint,
    startedAt: new Date(started),
    durationMs: Date.now() - started,
    layerDigest: result.layer?.descriptor.digest ?? null,
    layerSize: result.layer?.descriptor.size ?? null,
  });
}

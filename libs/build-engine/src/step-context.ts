// What a step of a build works with: the build it belongs to, its stage's state so far, and the
// instruction as the frontend evaluated it, in one object instead of a long parameter list.

import type { ContainerConfig, ImageConfig } from '@strata/oci';
import type { BuildPlan, EvaluatedStep, StageEnv, StageInstruction } from '@strata/dockerfile';
import type { BuildInput, EngineDeps, ImageLayer, StageResult } from './build-input.js';
import { BuildFailure, type BuildEvent } from './interfaces.js';
import type { LiveLayers } from './live-layers.js';
import type { RootfsIndexer } from './rootfs-index.js';

/** Everything of one build that every step shares. */
export interface BuildScope {
  input: BuildInput;
  deps: EngineDeps;
  /** What the Dockerfile means for this build (stages, target, global ARGs), from @strata/dockerfile. */
  plan: BuildPlan;
  indexer: RootfsIndexer;
  live: LiveLayers;
  /** SOURCE_DATE_EPOCH from the build args, when it is a number. */
  sourceDateEpoch: number | undefined;
  /** RFC 3339 time, seconds precision: the epoch when given, now otherwise. */
  timestamp(epoch?: number): string;
  /** Hands an event to EngineDeps.onEvent, answering what it answers. */
  emit(e: BuildEvent): unknown;
}

/** Per-stage state while walking its instructions. */
export interface StageState {
  config: ImageConfig;
  layers: ImageLayer[];
  /** ARG/ENV scope, working directory, user and shell, as the Dockerfile frontend evaluates them. */
  vars: StageEnv;
  /** Key of the filesystem so far: filesystem steps chain from it, metadata steps don't change it. */
  fsKey: string;
  /** Key of the previous step of any kind, for metadata steps. */
  stepKey: string;
  /** The image the stage starts from, for miss explanations of its first step. */
  base?: { ref: string; digest: string };
  /** The latest step of this stage that missed the cache, named in the misses it caused. */
  lastMiss: { line: number; instruction: string } | null;
  /** A RUN comes later in this stage: a layer written now is unpacked on this worker while it is stored. */
  runFollows?: boolean;
  /** A CMD ran in this stage: a later ENTRYPOINT keeps it. */
  cmdSet?: boolean;
  /** ARG names declared in this stage so far, in order: BuildKit lists them in a RUN's history line. */
  declaredArgs: string[];
}

/** Where a step is: its stage (index and name) and its position in the stage. */
export interface StepPosition {
  stage: number;
  stageName: string | null;
  index: number;
}

/** One step while it is prepared and run. */
export interface StepContext<I extends StageInstruction = StageInstruction> {
  build: BuildScope;
  stage: StageState;
  where: StepPosition;
  /** The instruction with its words expanded (ARG/ENV) by the stage's StageEnv. */
  ins: I;
  /** The frontend's evaluation of the step: the variables it sees, the build args that reached it. */
  evaluated: EvaluatedStep<I>;
  /** The image config's `config`, as this step changes it. */
  cfg: ContainerConfig;
  /** Fails the build at this step's line. */
  fail(message: string): never;
  /**
   * The result of the stage `ref` names (a name or an index), or else of the image it names,
   * resolved like FROM (index -1); rejects with the resolver's error when there is no such image.
   */
  stageResult(ref: string): Promise<StageResult>;
}

/**
 * A stage's state at its start: the base's config (with a PATH added when it has none, as
 * BuildKit does) and the StageEnv its instructions are evaluated with.
 */
export function initialState(config: ImageConfig, layers: ImageLayer[], fsKey: string, vars: StageEnv): StageState {
  config.config = config.config ?? {};
  config.config.Env = vars.imageEnv;
  config.history = config.history ?? [];
  return { config, layers, vars, fsKey, stepKey: fsKey, lastMiss: null, declaredArgs: [] };
}

/** The stage or image `ref` names for `what` (`--from=x`): an image that cannot be had fails the step at its line. */
export async function sourceOf(ctx: StepContext, ref: string, what: string): Promise<StageResult> {
  try {
    return await ctx.stageResult(ref);
  } catch (e) {
    if (e instanceof BuildFailure) throw e;
    ctx.fail(`${what}: ${(e as Error).message}`);
  }
}

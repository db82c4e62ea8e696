// What a step of a build works with: the build it belongs to, its stage's state so far, and the
// instruction with its expansion and failure helpers, in one object instead of a long parameter list.

import type { ContainerConfig, ImageConfig } from '@strata/oci';
import type { Dockerfile, StageInstruction } from '@strata/dockerfile';
import type { BuildInput, EngineDeps, ImageLayer, StageResult } from './build-input.js';
import type { BuildEvent } from './interfaces.js';
import type { LiveLayers } from './live-layers.js';
import type { RootfsIndexer } from './rootfs-index.js';

/** The PATH BuildKit gives a step (and an image whose base has none). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Everything of one build that every step shares. */
export interface BuildScope {
  input: BuildInput;
  deps: EngineDeps;
  df: Dockerfile;
  indexer: RootfsIndexer;
  live: LiveLayers;
  /** Global ARGs (build args applied), usable in FROM lines and by `ARG NAME` in a stage. */
  globalArgs: Map<string, string | undefined>;
  /** The predefined platform ARGs. */
  predefined: Record<string, string>;
  /** SOURCE_DATE_EPOCH from the build args, when it is a number. */
  sourceDateEpoch: number | undefined;
  /** RFC 3339 time, seconds precision: the epoch when given, now otherwise. */
  timestamp(epoch?: number): string;
  emit(e: BuildEvent): void;
}

/** Per-stage state while walking its instructions. */
export interface StageState {
  config: ImageConfig;
  layers: ImageLayer[];
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
  /** A CMD ran in this stage: a later ENTRYPOINT keeps it. */
  cmdSet?: boolean;
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
  ins: I;
  /** The image config's `config`, as this step changes it. */
  cfg: ContainerConfig;
  /** The image ENV before this step, updated by ENV. */
  env: Map<string, string>;
  /** Stage ARGs an expansion of this step used (they go into the cache key). */
  seenArgs: Set<string>;
  /** Expands a word of the instruction with the stage's ENV and ARGs. */
  expand(word: string): string;
  /** Fails the build at this step's line. */
  fail(message: string): never;
  /** The result of an earlier stage named by `ref` (name or index), or null when it names none. */
  stageResult(ref: string): Promise<StageResult> | null;
}

export function initialState(config: ImageConfig, layers: ImageLayer[], fsKey: string): StageState {
  config.config = config.config ?? {};
  config.history = config.history ?? [];
  return { config, layers, fsKey, stepKey: fsKey, args: new Map(), shell: config.config.Shell ?? ['/bin/sh', '-c'], lastMiss: null };
}

export function envToMap(env: string[] | undefined): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

export function setEnv(config: ContainerConfig, key: string, value: string): void {
  const env = (config.Env ?? []).filter((kv) => !kv.startsWith(`${key}=`));
  env.push(`${key}=${value}`);
  config.Env = env;
}

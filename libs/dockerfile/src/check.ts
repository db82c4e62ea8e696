import type { Dockerfile, Keyword, StageInstruction } from './ast.js';
import { DockerfileError, errorAt, type Diagnostic } from './diagnostics.js';
import { parseOnbuildTrigger } from './onbuild.js';
import { parseDockerfile, sortDiagnostics } from './parser.js';
import { resolveBuild, type BuildPlan } from './plan.js';
import type { Platform } from './platform.js';
import { StageEnv } from './stage-env.js';
import { type SupportOptions, unsupportedInInstruction, unsupportedInPlan } from './support.js';

/** The body of `POST /v1/dockerfile/check` (200 when `errors` is empty, 422 otherwise). */
export interface CheckResult {
  /** Names of the ARGs declared before the first FROM, in order. */
  globalArgs: string[];
  stages: Array<{
    name: string | null;
    /** The FROM reference as written, before expansion. */
    from: string;
    /** The instructions after FROM (FROM itself is not listed). */
    instructions: Array<{
      keyword: Keyword;
      line: number;
      /**
       * For stages the target needs: the variables (ARG and ENV, `K=V`) the step sees, as a build
       * evaluates them. A base image's own ENV and ONBUILD triggers are not known to a check and not included.
       */
      env?: string[];
    }>;
    /** Earlier stages this one needs (FROM, COPY --from, RUN --mount=from), by index; empty when the Dockerfile did not resolve. */
    dependsOn: number[];
  }>;
  /** Indexes of the stages the target needs, sorted. */
  neededStages: number[];
  warnings: Diagnostic[];
  errors: Diagnostic[];
}

export interface CheckOptions extends SupportOptions {
  buildArgs?: Readonly<Record<string, string>>;
  target?: string;
  /** Platform of the image being built; default linux/amd64. */
  platform?: Platform;
}

/** A check's result and, when the Dockerfile can be built, the plan a build runs. */
export interface Analysis {
  result: CheckResult;
  /** Null when `result.errors` is not empty. */
  plan: BuildPlan | null;
}

/** The stage's instructions evaluated in order (a FROM <stage> continues that stage's state). */
function walkNeededStages(plan: BuildPlan): Map<number, string[][]> {
  const envs = new Map<number, StageEnv>();
  const seen = new Map<number, string[][]>();
  for (const i of plan.neededStages) {
    const base = plan.stages[i].base;
    const env = base.kind === 'stage' ? new StageEnv(plan, { parent: envs.get(base.index) }) : new StageEnv(plan, base.kind === 'scratch' ? { baseEnv: [], baseWorkdir: '/' } : {});
    seen.set(i, plan.dockerfile.stages[i].instructions.map((ins) => env.step(ins).env));
    envs.set(i, env);
  }
  return seen;
}

/**
 * Everything a build decides from the Dockerfile text alone: parse errors, lint warnings, the plan
 * (stages, target, needed stages), what Strata refuses to build, and each step's variables. The
 * engine builds from this same analysis, so a check and a build never disagree.
 */
export function analyzeDockerfile(text: string, opts: CheckOptions = {}): Analysis {
  const result: CheckResult = { globalArgs: [], stages: [], neededStages: [], warnings: [], errors: [] };
  let plan: BuildPlan | null = null;
  try {
    const df: Dockerfile = parseDockerfile(text);
    result.globalArgs = df.globalArgs.flatMap((a) => a.args.map((d) => d.name));
    result.stages = df.stages.map((s) => ({
      name: s.name,
      from: s.from.image,
      instructions: s.instructions.map((i) => ({ keyword: i.keyword, line: i.line })),
      dependsOn: [] as number[],
    }));
    if (df.check?.error) result.errors.push(...df.warnings.map((w) => ({ ...w, severity: 'error' as const })));
    else result.warnings = df.warnings;
    plan = resolveBuild({ ...df, check: null }, { buildArgs: opts.buildArgs, target: opts.target, platform: opts.platform });
    result.neededStages = plan.neededStages;
    result.errors.push(...unsupportedInPlan(plan, opts));
    for (const [i, envs] of walkNeededStages(plan)) envs.forEach((env, n) => (result.stages[i].instructions[n].env = env));
    for (const st of plan.stages) result.stages[st.index].dependsOn = st.dependsOn;
  } catch (e) {
    if (e instanceof DockerfileError) result.errors.push(...e.diagnostics);
    else result.errors.push(errorAt({ line: 1, column: 1 }, `the Dockerfile could not be checked: ${e instanceof Error ? e.message : String(e)}`));
  }
  result.errors = sortDiagnostics(result.errors);
  return { result, plan: result.errors.length === 0 ? plan : null };
}

/**
 * Checks a Dockerfile without building it, like `docker build --check`. Never throws: problems are
 * returned in `errors`. With `# check=error=true`, lint warnings are returned as errors.
 */
export function checkDockerfile(text: string, opts: CheckOptions = {}): CheckResult {
  return analyzeDockerfile(text, opts).result;
}

/**
 * An ONBUILD trigger of a base image, parsed and checked like an instruction of the Dockerfile
 * (only a build sees the base image, so only a build can check its triggers). Throws
 * {@link DockerfileError} with positions relative to the trigger.
 */
export function parseCheckedTrigger(trigger: string, opts: SupportOptions = {}): StageInstruction {
  const ins = parseOnbuildTrigger(trigger);
  const refused = unsupportedInInstruction(ins, opts);
  if (refused.length > 0) throw new DockerfileError(refused);
  return ins;
}

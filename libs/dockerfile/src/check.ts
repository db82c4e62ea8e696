import { DockerfileError, errorAt, type Diagnostic } from './diagnostics.js';
import { parseDockerfile } from './parser.js';
import { resolveBuild } from './plan.js';
import type { Keyword } from './ast.js';

/** The body of `POST /v1/dockerfile/check` (200 when `errors` is empty, 422 otherwise). */
export interface CheckResult {
  /** Names of the ARGs declared before the first FROM, in order. */
  globalArgs: string[];
  stages: Array<{
    name: string | null;
    /** The FROM reference as written, before expansion. */
    from: string;
    /** The stage's instructions after FROM (FROM itself is not listed). */
    instructions: Array<{ keyword: Keyword; line: number }>;
  }>;
  /** Indexes of the stages the target needs, sorted. */
  neededStages: number[];
  warnings: Diagnostic[];
  errors: Diagnostic[];
}

export interface CheckOptions {
  buildArgs?: Readonly<Record<string, string>>;
  target?: string;
}

/**
 * Checks a Dockerfile without building it, like `docker build --check`. Never throws: problems are
 * returned in `errors`. With `# check=error=true`, lint warnings are returned as errors.
 */
export function checkDockerfile(text: string, opts: CheckOptions = {}): CheckResult {
  const result: CheckResult = { globalArgs: [], stages: [], neededStages: [], warnings: [], errors: [] };
  try {
    const df = parseDockerfile(text);
    result.globalArgs = df.globalArgs.flatMap((a) => a.args.map((d) => d.name));
    result.stages = df.stages.map((s) => ({
      name: s.name,
      from: s.from.image,
      instructions: s.instructions.map((i) => ({ keyword: i.keyword, line: i.line })),
    }));
    if (df.check?.error) result.errors.push(...df.warnings.map((w) => ({ ...w, severity: 'error' as const })));
    else result.warnings = df.warnings;
    const plan = resolveBuild({ ...df, check: null }, { buildArgs: opts.buildArgs, target: opts.target });
    result.neededStages = plan.neededStages;
  } catch (e) {
    if (e instanceof DockerfileError) result.errors.push(...e.diagnostics);
    else result.errors.push(errorAt({ line: 1, column: 1 }, `the Dockerfile could not be checked: ${e instanceof Error ? e.message : String(e)}`));
  }
  return result;
}

/**
 * @strata/dockerfile — the Dockerfile language as BuildKit's Dockerfile frontend reads it:
 * parsing (directives, continuations, heredocs, every instruction and flag), variable expansion,
 * the stage graph, and positioned errors and lint warnings. Pure: no I/O.
 */
export * from './ast.js';
export { DockerfileError, formatDiagnostic, type Diagnostic, type Position, type Severity } from './diagnostics.js';
export { parseDockerfile, parseCheckDirective } from './parser.js';
export { parseOnbuildTrigger } from './onbuild.js';
export {
  expand, expandWord, expandWords, type ExpandOptions, type Expansion, type VariableLookup,
} from './shell.js';
export {
  findStage, resolveBuild, stageReference, type BaseRef, type BuildPlan, type ImageSource, type PlannedStage, type ResolveOptions,
  type ResolvedArg, type StageDependency,
} from './plan.js';
export {
  DEFAULT_PATH, StageEnv, createStageEnv, classifyAddSource, exposedPortKeys, resolveWorkdir,
  type EvaluatedStep, type StageEnvOptions,
} from './stage-env.js';
export { parseGitSource, type GitSource } from './git-ref.js';
export { HEREDOC_SCRIPT_DIR, runScript, type RunScript } from './run-script.js';
export { analyzeDockerfile, checkDockerfile, parseCheckedTrigger, type Analysis, type CheckOptions, type CheckResult } from './check.js';
export { unsupportedInInstruction, unsupportedInPlan, type SupportOptions } from './support.js';
export { isValidImageReference } from './image-reference.js';
export {
  lintBaseImagePlatforms, lintCopyIgnoredFile, lintUndefinedVars, lintWithResolvedImages,
  type CopyIgnoredFileOptions, type DockerignoreView, type ResolvedBaseImage, type ScopeOptions,
} from './lint.js';
export {
  DEFAULT_PLATFORM, PLATFORM_ARG_NAMES, PROXY_ARG_NAMES, formatPlatform, parsePlatform, platformArgs, type Platform,
} from './platform.js';

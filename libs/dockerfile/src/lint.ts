// BuildKit's build checks that can be decided from the Dockerfile alone (docker build --check).
// Rule names and messages follow docs.docker.com/reference/build-checks.

import type { ArgInstruction, CheckConfig, Dockerfile, EscapeToken, Instruction, Stage, StageInstruction } from './ast.js';
import { warningAt, type Diagnostic } from './diagnostics.js';
import { isValidImageReference } from './image-reference.js';
import { editDistance } from './mounts.js';
import type { BuildPlan } from './plan.js';
import { DEFAULT_PLATFORM, PLATFORM_ARG_NAMES, PROXY_ARG_NAMES, formatPlatform, parsePlatform, platformArgs, type Platform } from './platform.js';
import { expand, type Expansion } from './shell.js';
import { classifyAddSource } from './stage-env.js';

function variablesIn(word: string, known: (name: string) => string | undefined): { matched: Set<string>; unmatched: Set<string>; value: string } | null {
  try {
    return expand(word, known);
  } catch {
    return null;
  }
}

/** The lint findings of a parsed Dockerfile (BuildKit's build checks, all warnings). */
export function lintDockerfile(globalArgs: ArgInstruction[], stages: Stage[]): { errors: Diagnostic[]; warnings: Diagnostic[] } {
  const errors: Diagnostic[] = [];
  const warnings: Diagnostic[] = [];

  // Stage names.
  const seen = new Set<string>();
  for (const st of stages) {
    if (st.name === null) continue;
    if (st.name === 'scratch' || st.name === 'context') {
      warnings.push(warningAt(st.from, `Stage name should not use the same name as reserved stage "${st.name}"`, 'ReservedStageName'));
    }
    if (seen.has(st.name)) {
      // A warning, as in BuildKit: references to the name use the last stage that has it.
      warnings.push(warningAt(st.from, `Duplicate stage name "${st.name}", stage names should be unique`, 'DuplicateStageName'));
    }
    seen.add(st.name);
  }

  // Instruction casing against the majority.
  const all: Instruction[] = stages.flatMap((s) => [s.from, ...s.instructions]);
  let lower = 0;
  let upper = 0;
  for (const ins of all) {
    const k = ins.keywordAsWritten;
    if (k === k.toLowerCase()) lower++;
    else if (k === k.toUpperCase()) upper++;
  }
  const majorityLower = lower > upper;
  for (const ins of all) {
    const k = ins.keywordAsWritten;
    const wrong = majorityLower ? k !== k.toLowerCase() : k !== k.toUpperCase();
    if (wrong) {
      warnings.push(warningAt(ins, `Command '${k}' should match the case of the command majority (${majorityLower ? 'lowercase' : 'uppercase'})`, 'ConsistentInstructionCasing'));
    }
  }

  // FROM lines against the global ARGs.
  const declared = new Set<string>([...PLATFORM_ARG_NAMES, ...globalArgs.flatMap((a) => a.args.map((d) => d.name))]);
  const knownLookup = (name: string): string | undefined => (declared.has(name) ? '' : undefined);
  const defaults = platformArgs(DEFAULT_PLATFORM, DEFAULT_PLATFORM);
  for (const a of globalArgs) {
    for (const d of a.args) {
      if (d.defaultValue === null) continue;
      const r = variablesIn(d.defaultValue, (n) => defaults.get(n));
      if (r) defaults.set(d.name, r.value);
    }
  }
  const stageHasShell = new Map<string, boolean>();
  for (const st of stages) {
    const from = st.from;
    const image = variablesIn(from.image, knownLookup);
    for (const name of image?.unmatched ?? []) {
      warnings.push(warningAt(from, `FROM argument '${name}' is not declared`, 'UndefinedArgInFrom'));
    }
    if (from.image.includes('$')) {
      const withDefaults = variablesIn(from.image, (n) => defaults.get(n));
      if (withDefaults && (withDefaults.value === '' || !isValidImageReference(withDefaults.value))) {
        warnings.push(warningAt(from, `Default value for ARG ${from.image} results in empty or invalid base image name`, 'InvalidDefaultArgInFrom'));
      }
    }
    if (from.platform !== null) {
      const plat = variablesIn(from.platform, knownLookup);
      for (const name of plat?.unmatched ?? []) {
        warnings.push(warningAt(from, `FROM argument '${name}' is not declared`, 'UndefinedArgInFrom'));
      }
      if (plat && plat.matched.size === 1 && plat.unmatched.size === 0 && plat.matched.has('TARGETPLATFORM') && plat.value === '') {
        warnings.push(warningAt(from, `Setting platform to predefined ${from.platform} in FROM is redundant as this is the default behavior`, 'RedundantTargetPlatform'));
      }
      if (plat && plat.matched.size === 0 && plat.unmatched.size === 0) {
        const p = parsePlatform(plat.value);
        const name = st.name ?? '';
        if (p && !name.includes(p.os) && !name.includes(p.architecture)) {
          warnings.push(warningAt(from, `FROM --platform flag should not use constant value ${JSON.stringify(plat.value)}`, 'FromPlatformFlagConstDisallowed'));
        }
      }
    }

    // Per-stage checks.
    let hasShell = stageHasShell.get(from.image.toLowerCase()) ?? false;
    let workdirSeen = stageHasShell.has(from.image.toLowerCase());
    const last = new Map<string, Instruction>();
    for (const ins of st.instructions) {
      switch (ins.keyword) {
        case 'SHELL':
          hasShell = true;
          break;
        case 'CMD':
        case 'ENTRYPOINT':
          if (ins.cmd.form === 'shell' && !hasShell) {
            warnings.push(warningAt(ins, `JSON arguments recommended for ${ins.keyword} to prevent unintended behavior related to OS signals`, 'JSONArgsRecommended'));
          }
          break;
        case 'WORKDIR':
          if (!workdirSeen && !ins.path.startsWith('/') && !ins.path.includes('$')) {
            warnings.push(warningAt(ins, `Relative workdir ${JSON.stringify(ins.path)} can have unexpected results if the base image changes`, 'WorkdirRelativePath'));
          }
          workdirSeen = true;
          break;
      }
      if (ins.keyword === 'CMD' || ins.keyword === 'ENTRYPOINT' || ins.keyword === 'HEALTHCHECK') {
        const prev = last.get(ins.keyword);
        if (prev) {
          warnings.push(warningAt(prev, `Multiple ${ins.keyword} instructions should not be used in the same stage because only the last one will be used`, 'MultipleInstructionsDisallowed'));
        }
        last.set(ins.keyword, ins);
      }
    }
    if (st.name !== null) stageHasShell.set(st.name, hasShell);
  }
  warnings.push(...lintUndefinedVars(globalArgs, stages));
  return { errors, warnings };
}

// ---------------------------------------------------------------------------------------------
// Variables in scope, stage by stage, as BuildKit's dispatcher sees them before each instruction.

/** BuildKit's PATH for a stage FROM scratch (its empty image has it). */
const SCRATCH_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Names BuildKit defines without an ARG: never reported as undefined. */
const PREDEFINED_NAMES = new Set<string>([...PLATFORM_ARG_NAMES, ...PROXY_ARG_NAMES]);

interface StageScope {
  /** Names in scope before the instruction → value (undefined: an ARG declared without a value). */
  vars: Map<string, string | undefined>;
  /** False when the stage starts from an image whose environment is unknown: a missing name may be set there. */
  complete: boolean;
}

export interface ScopeOptions {
  buildArgs?: Readonly<Record<string, string>>;
  escapeToken?: EscapeToken;
  /** The env (`K=V`) of the image a stage starts from, when it is known (after the image was resolved). */
  baseImageEnv?: (stage: Stage) => readonly string[] | null;
}

function expandIn(word: string, vars: ReadonlyMap<string, string | undefined>, escapeToken: EscapeToken): Expansion | null {
  try {
    return expand(word, (n) => vars.get(n), { escapeToken });
  } catch {
    return null;
  }
}

/** Calls `visit` with each stage instruction and the scope before it: FROM a stage inherits its scope, ARG and ENV add to it. */
function walkStageScopes(globalArgs: ArgInstruction[], stages: Stage[], opts: ScopeOptions, visit: (stage: Stage, ins: StageInstruction, scope: StageScope) => void): void {
  const escapeToken = opts.escapeToken ?? '\\';
  const buildArgs = opts.buildArgs ?? {};
  const given = (n: string): boolean => Object.prototype.hasOwnProperty.call(buildArgs, n);
  const globals = new Map<string, string | undefined>(platformArgs(DEFAULT_PLATFORM, DEFAULT_PLATFORM));
  for (const a of globalArgs) {
    for (const d of a.args) {
      const value = given(d.name) ? buildArgs[d.name] : d.defaultValue !== null ? expandIn(d.defaultValue, globals, escapeToken)?.value : undefined;
      if (value === undefined && globals.has(d.name)) continue;
      globals.set(d.name, value);
    }
  }
  const finished: StageScope[] = [];
  for (const st of stages) {
    const image = expandIn(st.from.image, globals, escapeToken)?.value.toLowerCase() ?? null;
    const parent = image === null ? -1 : stages.findLastIndex((s) => s.index < st.index && s.name === image); // the last earlier stage of the name, as FROM resolves it
    let scope: StageScope;
    if (parent >= 0) scope = { vars: new Map(finished[parent].vars), complete: finished[parent].complete };
    else if (image === 'scratch') scope = { vars: new Map([['PATH', SCRATCH_PATH]]), complete: true };
    else {
      const env = opts.baseImageEnv?.(st) ?? null;
      const vars = new Map<string, string | undefined>();
      for (const kv of env ?? []) {
        const eq = kv.indexOf('=');
        vars.set(eq < 0 ? kv : kv.slice(0, eq), eq < 0 ? '' : kv.slice(eq + 1));
      }
      scope = { vars, complete: env !== null };
    }
    const envNames = new Set<string>();
    for (const ins of st.instructions) {
      visit(st, ins, scope);
      if (ins.keyword === 'ARG') {
        for (const d of ins.args) {
          // An ENV of the same name keeps its value; a stage ARG without a default takes the global one.
          if (envNames.has(d.name)) continue;
          const value = given(d.name) ? buildArgs[d.name] : d.defaultValue !== null ? expandIn(d.defaultValue, scope.vars, escapeToken)?.value : globals.get(d.name);
          scope.vars.set(d.name, value);
        }
      } else if (ins.keyword === 'ENV') {
        // Every pair of one ENV is expanded with the environment before it, as BuildKit does.
        const before = new Map(scope.vars);
        for (const p of ins.pairs) {
          const key = expandIn(p.key, before, escapeToken)?.value ?? p.key;
          scope.vars.set(key, expandIn(p.value, before, escapeToken)?.value ?? '');
          envNames.add(key);
        }
      }
    }
    finished.push(scope);
  }
}

/** The words of an instruction BuildKit expands itself (RUN, CMD, ENTRYPOINT and HEALTHCHECK are left to the shell). */
function expandedWords(ins: StageInstruction): string[] {
  switch (ins.keyword) {
    case 'ENV':
    case 'LABEL':
      return ins.pairs.flatMap((p) => [p.key, p.value]);
    case 'COPY':
    case 'ADD':
      return [...ins.sources, ins.dest, ...(ins.chown !== null ? [ins.chown] : []), ...(ins.chmod !== null ? [ins.chmod] : [])];
    case 'WORKDIR':
      return [ins.path];
    case 'USER':
      return [ins.user];
    case 'EXPOSE':
      return ins.ports;
    case 'VOLUME':
      return ins.paths;
    case 'STOPSIGNAL':
      return [ins.signal];
    case 'ARG':
      return ins.args.flatMap((d) => (d.defaultValue !== null ? [d.defaultValue] : []));
    default:
      return [];
  }
}

/** Whether `word` uses `$name` or `${name}` as such, not only inside `${name:-default}` and the other forms that handle it unset. */
function usedBare(word: string, name: string): boolean {
  const n = name.replace(/[^A-Za-z0-9_]/g, (c) => `\\${c}`);
  return new RegExp(`\\$(?:${n}(?![A-Za-z0-9_])|\\{${n}\\})`).test(word);
}

/** BuildKit's suggestion: the closest name in scope at an edit distance under 3, case-sensitive. */
function closestName(name: string, options: Iterable<string>): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const o of options) {
    const d = editDistance(name, o);
    if (d < bestDistance) {
      best = o;
      bestDistance = d;
    }
  }
  return best;
}

/**
 * UndefinedVar: a variable an instruction expands that is neither an ARG or ENV in scope, nor a
 * predefined platform or proxy ARG. Like BuildKit it only speaks when it is sure, so a stage that
 * starts from an image is checked only when that image's env is given (`baseImageEnv`): without
 * it, only stages FROM scratch (and the stages built on them) are checked. ARG defaults see the
 * names declared before them in the same instruction.
 */
export function lintUndefinedVars(globalArgs: ArgInstruction[], stages: Stage[], opts: ScopeOptions & { stages?: readonly number[] } = {}): Diagnostic[] {
  const out: Diagnostic[] = [];
  walkStageScopes(globalArgs, stages, opts, (st, ins, scope) => {
    if (!scope.complete || (opts.stages && !opts.stages.includes(st.index))) return;
    const reported = new Set<string>();
    const declaredHere = new Set<string>();
    const words = expandedWords(ins);
    for (const [n, word] of words.entries()) {
      if (ins.keyword === 'ARG') {
        // Names declared earlier in this ARG count as defined for the defaults after them.
        const withDefault = ins.args.filter((d) => d.defaultValue !== null);
        for (const d of ins.args.slice(0, ins.args.indexOf(withDefault[n]))) declaredHere.add(d.name);
      }
      const r = expandIn(word, scope.vars, opts.escapeToken ?? '\\');
      for (const name of r?.unmatched ?? []) {
        if (scope.vars.has(name) || declaredHere.has(name) || PREDEFINED_NAMES.has(name) || reported.has(name) || !usedBare(word, name)) continue;
        reported.add(name);
        const hint = closestName(name, scope.vars.keys());
        out.push(warningAt(ins, `Usage of undefined variable '$${name}'${hint ? ` (did you mean $${hint}?)` : ''}`, 'UndefinedVar'));
      }
    }
  });
  return out;
}

/** Lint findings computed outside the parser, with the `# check=` directive applied: skipped rules dropped, errors under `error=true`. */
function underCheckDirective(check: CheckConfig | null, found: Diagnostic[]): Diagnostic[] {
  const skip = check?.skip ?? [];
  const kept = found.filter((d) => d.rule === undefined || (skip !== 'all' && !skip.includes(d.rule)));
  return check?.error ? kept.map((d) => ({ ...d, severity: 'error' as const })) : kept;
}

/** Go's path.Clean on a slash path: `.` and `..` resolved, duplicate and trailing slashes removed. */
function cleanSlashPath(p: string): string {
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop();
    else if (part !== '..' || !rooted) out.push(part);
  }
  const joined = out.join('/');
  return rooted ? `/${joined}` : joined === '' ? '.' : joined;
}

/** What CopyIgnoredFile needs of the context's .dockerignore; the matcher itself lives with the build context. */
export interface DockerignoreView {
  /** Whether any pattern is an exception (`!…`): BuildKit then skips the rule, since an excluded directory may let a file through. */
  hasExceptions: boolean;
  /** Whether a context path (relative, cleaned) or one of its parent directories matches a pattern. */
  matches(path: string): boolean;
}

export interface CopyIgnoredFileOptions {
  buildArgs?: Readonly<Record<string, string>>;
  /** Only these stages (a build checks the stages its target needs); default every stage. */
  stages?: readonly number[];
}

/**
 * CopyIgnoredFile: a COPY or ADD source from the build context that .dockerignore excludes, so the
 * build will not find it. Sources are expanded first; one whose value is unknown (a variable the
 * base image may set) is not judged. Returns nothing when .dockerignore has exceptions, as BuildKit.
 */
export function lintCopyIgnoredFile(df: Dockerfile, ignore: DockerignoreView, opts: CopyIgnoredFileOptions = {}): Diagnostic[] {
  if (ignore.hasExceptions) return [];
  const found: Diagnostic[] = [];
  walkStageScopes(df.globalArgs, df.stages, { buildArgs: opts.buildArgs, escapeToken: df.escapeToken }, (st, ins, scope) => {
    if (opts.stages && !opts.stages.includes(st.index)) return;
    if (ins.keyword !== 'COPY' && ins.keyword !== 'ADD') return;
    if (ins.keyword === 'COPY' && ins.from !== null) return;
    for (const source of ins.sources) {
      const r = expandIn(source, scope.vars, df.escapeToken);
      if (!r || (!scope.complete && [...r.unmatched].some((n) => !scope.vars.has(n)))) continue;
      if (ins.keyword === 'ADD' && classifyAddSource(r.value).kind !== 'local') continue;
      const cleaned = cleanSlashPath(r.value);
      const rel = cleaned.replace(/^\/+/, '');
      if (rel === '' || rel === '.') continue;
      if (ignore.matches(rel)) {
        const verb = ins.keyword === 'ADD' ? 'Add' : 'Copy';
        found.push(warningAt(ins, `Attempting to ${verb} file ${JSON.stringify(cleaned)} that is excluded by .dockerignore`, 'CopyIgnoredFile'));
      }
    }
  });
  return underCheckDirective(df.check, found);
}

/**
 * InvalidBaseImagePlatform: a FROM image whose config names another platform than the stage is
 * built for (its `--platform`, else the build's). Known only once the image is resolved, so the
 * caller gives each stage's resolved image platform (null: not an image, or not resolved).
 */
export function lintBaseImagePlatforms(plan: BuildPlan, imagePlatform: (stage: number) => Platform | null): Diagnostic[] {
  const found: Diagnostic[] = [];
  for (const i of plan.neededStages) {
    const st = plan.stages[i];
    const actual = imagePlatform(i);
    if (st.base.kind !== 'image' || actual === null) continue;
    const expected = st.platform ?? plan.platform;
    const differs =
      actual.os !== expected.os || actual.architecture !== expected.architecture || (expected.variant !== undefined && actual.variant !== undefined && actual.variant !== expected.variant);
    if (differs) {
      found.push(
        warningAt(
          plan.dockerfile.stages[i].from,
          `Base image ${st.base.ref} was pulled with platform ${JSON.stringify(formatPlatform(actual))}, expected ${JSON.stringify(formatPlatform(expected))} for current build`,
          'InvalidBaseImagePlatform',
        ),
      );
    }
  }
  return underCheckDirective(plan.dockerfile.check, found);
}

/** What a build learns of a FROM image once it is resolved. */
export interface ResolvedBaseImage {
  platform: Platform;
  /** The image config's Env (`K=V`). */
  env: readonly string[];
}

/**
 * The lint findings that need the FROM images resolved, for a build: InvalidBaseImagePlatform, and
 * UndefinedVar in the stages that start from an image (the parser could not judge those).
 */
export function lintWithResolvedImages(plan: BuildPlan, base: (stage: number) => ResolvedBaseImage | null): Diagnostic[] {
  const df = plan.dockerfile;
  const opts: ScopeOptions = { buildArgs: plan.buildArgs, escapeToken: df.escapeToken };
  const known = new Set(lintUndefinedVars(df.globalArgs, df.stages, opts).map((d) => `${d.line}:${d.column}:${d.message}`));
  const undefinedVars = lintUndefinedVars(df.globalArgs, df.stages, { ...opts, stages: plan.neededStages, baseImageEnv: (st) => base(st.index)?.env ?? null }).filter(
    (d) => !known.has(`${d.line}:${d.column}:${d.message}`),
  );
  return [...lintBaseImagePlatforms(plan, (i) => base(i)?.platform ?? null), ...underCheckDirective(df.check, undefinedVars)].sort((a, b) => a.line - b.line || a.column - b.column);
}

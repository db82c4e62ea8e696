// resolveBuild: global ARGs and build args → FROM lines expanded → each stage's base and the
// stages it depends on → the target and the stages it needs, in levels that can run in parallel.

import type { Dockerfile, EscapeToken, Stage } from './ast.js';
import { DockerfileError, errorAt, type Diagnostic, type Position } from './diagnostics.js';
import { isValidImageReference } from './image-reference.js';
import { DEFAULT_PLATFORM, PLATFORM_ARG_NAMES, PROXY_ARG_NAMES, parsePlatform, platformArgs, type Platform } from './platform.js';
import { expand } from './shell.js';

export interface ResolveOptions {
  /** `--build-arg` values. */
  buildArgs?: Readonly<Record<string, string>>;
  /** Stage name to build; default the last stage. */
  target?: string;
  /** Platform of the image being built (TARGETPLATFORM); default linux/amd64. */
  platform?: Platform;
  /** Platform of the worker (BUILDPLATFORM); default the target platform. */
  buildPlatform?: Platform;
}

/** A global ARG (or predefined platform ARG) with its value for this build. */
export interface ResolvedArg {
  name: string;
  /** null when declared without a default and not given as a build arg. */
  value: string | null;
  /** Build args this value came from (the arg itself when overridden, or those its default used). */
  buildArgs: string[];
  /** True for TARGETPLATFORM, BUILDARCH and the other predefined platform ARGs. */
  predefined: boolean;
}

/** What a stage starts from. */
export type BaseRef = { kind: 'scratch' } | { kind: 'stage'; index: number } | { kind: 'image'; ref: string };

/** An edge of the stage graph: this stage needs `stage` because of the instruction at line/column. */
export interface StageDependency {
  stage: number;
  via: 'from' | 'copy' | 'mount';
  line: number;
  column: number;
}

/** An image a stage reads files from (COPY --from=image, RUN --mount=from=image). */
export interface ImageSource {
  ref: string;
  via: 'copy' | 'mount';
  line: number;
  column: number;
}

export interface PlannedStage {
  index: number;
  name: string | null;
  base: BaseRef;
  /** `--platform` expanded and parsed, or null (the build's target platform). */
  platform: Platform | null;
  dependencies: StageDependency[];
  /** Distinct stage indexes this stage needs, sorted. */
  dependsOn: number[];
  images: ImageSource[];
  /** Build args the FROM line used. */
  usedBuildArgs: string[];
}

export interface BuildPlan {
  dockerfile: Dockerfile;
  escapeToken: EscapeToken;
  /** Index of the stage to build. */
  target: number;
  stages: PlannedStage[];
  /** Indexes of the stages the target needs (itself included), sorted. */
  neededStages: number[];
  /** Needed stages grouped so that each group only needs earlier groups: a group's stages can run in parallel. */
  buildLevels: number[][];
  /** Global ARGs after build-arg overrides, predefined platform ARGs first. */
  globalArgs: ResolvedArg[];
  buildArgs: Readonly<Record<string, string>>;
  platform: Platform;
  buildPlatform: Platform;
  /** Build args no needed stage declares (BuildKit warns that they were not consumed). */
  unusedBuildArgs: string[];
  warnings: Diagnostic[];
}

/** Resolved global ARGs keyed by name, for expansion. */
export function globalArgMap(args: readonly ResolvedArg[]): Map<string, ResolvedArg> {
  const m = new Map<string, ResolvedArg>();
  for (const a of args) if (a.value !== null) m.set(a.name, a);
  return m;
}

function resolveGlobalArgs(df: Dockerfile, buildArgs: Readonly<Record<string, string>>, target: Platform, build: Platform): ResolvedArg[] {
  const out: ResolvedArg[] = [];
  const has = (k: string): boolean => Object.prototype.hasOwnProperty.call(buildArgs, k);
  for (const [name, value] of platformArgs(target, build)) {
    out.push(has(name) ? { name, value: buildArgs[name], buildArgs: [name], predefined: true } : { name, value, buildArgs: [], predefined: true });
  }
  const current = (): Map<string, ResolvedArg> => globalArgMap(out);
  for (const ins of df.globalArgs) {
    for (const d of ins.args) {
      let resolved: ResolvedArg;
      if (has(d.name)) resolved = { name: d.name, value: buildArgs[d.name], buildArgs: [d.name], predefined: false };
      else if (d.defaultValue !== null) {
        const env = current();
        const r = expand(d.defaultValue, (n) => env.get(n)?.value ?? undefined, { escapeToken: df.escapeToken, position: ins });
        const deps = new Set<string>();
        for (const m of r.matched) for (const b of env.get(m)?.buildArgs ?? []) deps.add(b);
        resolved = { name: d.name, value: r.value, buildArgs: [...deps].sort(), predefined: false };
      } else resolved = { name: d.name, value: null, buildArgs: [], predefined: false };
      const i = out.findIndex((a) => a.name === d.name);
      // A redeclaration without value keeps the earlier value, as BuildKit does.
      if (i >= 0 && resolved.value === null) continue;
      if (i >= 0) out.splice(i, 1);
      out.push(resolved);
    }
  }
  return out;
}

/**
 * The stage a name refers to: with several stages of that name the last one wins, as in BuildKit
 * (DuplicateStageName is only a warning). -1 when no stage has it.
 */
export function findStage(stages: readonly Stage[], name: string): number {
  const lower = name.toLowerCase();
  return stages.findLastIndex((s) => s.name === lower);
}

/**
 * The stage that `COPY --from` or `RUN --mount=from` names in a Dockerfile: a stage name (the last
 * of that name) or a stage index; null when it names an image.
 */
export function stageReference(stages: readonly Stage[], ref: string): number | null {
  if (/^[0-9]+$/.test(ref)) return Number(ref) < stages.length ? Number(ref) : null;
  const i = findStage(stages, ref);
  return i >= 0 ? i : null;
}

/**
 * Resolves a parsed Dockerfile for one build: expands FROM lines with global and build args,
 * links stages, picks the target and the stages it needs. Throws {@link DockerfileError} for an
 * unknown target, a self reference or cycle, a bad stage index, or an empty or invalid base.
 */
export function resolveBuild(df: Dockerfile, opts: ResolveOptions = {}): BuildPlan {
  const buildArgs = opts.buildArgs ?? {};
  const buildPlatform = opts.buildPlatform ?? opts.platform ?? DEFAULT_PLATFORM;
  const platform = opts.platform ?? buildPlatform;
  if (df.check?.error && df.warnings.length > 0) {
    throw new DockerfileError(df.warnings.map((w) => ({ ...w, severity: 'error' as const })));
  }
  const globalArgs = resolveGlobalArgs(df, buildArgs, platform, buildPlatform);
  const env = globalArgMap(globalArgs);
  const lookup = (n: string): string | undefined => env.get(n)?.value ?? undefined;
  const errors: Diagnostic[] = [];
  const stages: PlannedStage[] = [];
  const stageCount = df.stages.length;

  for (const st of df.stages) {
    const from = st.from;
    const r = expand(from.image, lookup, { escapeToken: df.escapeToken, position: from });
    const used = new Set<string>();
    for (const m of r.matched) for (const b of env.get(m)?.buildArgs ?? []) used.add(b);
    let base: BaseRef;
    if (r.value === '') {
      errors.push(errorAt(from, `the base image "${from.image}" expands to an empty name`));
      base = { kind: 'scratch' };
    } else {
      const earlier = findStage(df.stages.slice(0, st.index), r.value);
      base = earlier >= 0 ? { kind: 'stage', index: earlier } : r.value === 'scratch' ? { kind: 'scratch' } : { kind: 'image', ref: r.value };
    }
    let stagePlatform: Platform | null = null;
    if (from.platform !== null) {
      const p = expand(from.platform, lookup, { escapeToken: df.escapeToken, position: from });
      for (const m of p.matched) for (const b of env.get(m)?.buildArgs ?? []) used.add(b);
      if (p.value === '') errors.push(errorAt(from, `the platform "${from.platform}" expands to an empty value`));
      else {
        stagePlatform = parsePlatform(p.value, platform);
        if (stagePlatform === null) errors.push(errorAt(from, `invalid platform "${p.value}" (use a value such as linux/amd64)`));
      }
    }
    const dependencies: StageDependency[] = [];
    const images: ImageSource[] = [];
    if (base.kind === 'stage') dependencies.push({ stage: base.index, via: 'from', line: from.line, column: from.column });
    for (const ins of st.instructions) {
      if (ins.keyword === 'COPY' && ins.from !== null) {
        const flag = ins.flags.find((f) => f.name === 'from');
        const pos: Position = flag ?? ins;
        let literal: string;
        try {
          literal = expand(ins.from, () => undefined).value;
        } catch {
          literal = '';
        }
        if (literal !== ins.from) {
          errors.push(errorAt(pos, 'COPY --from does not support variables; define a stage with FROM using a global ARG and copy from that stage instead'));
          continue;
        }
        if (/^[+-]?[0-9]+$/.test(ins.from)) {
          const index = Number(ins.from);
          if (index < 0 || index >= stageCount) {
            errors.push(errorAt(pos, `COPY --from=${ins.from} names no stage: stage indexes run from 0 to ${stageCount - 1}`));
            continue;
          }
          dependencies.push({ stage: index, via: 'copy', line: pos.line, column: pos.column });
        } else {
          const index = findStage(df.stages, ins.from);
          if (index >= 0) dependencies.push({ stage: index, via: 'copy', line: pos.line, column: pos.column });
          else images.push({ ref: ins.from, via: 'copy', line: pos.line, column: pos.column });
        }
      } else if (ins.keyword === 'RUN') {
        const flag = ins.flags.find((f) => f.name === 'mount');
        const pos: Position = flag ?? ins;
        for (const m of ins.mounts) {
          if (m.from === null || m.from === '') continue;
          const index = stageReference(df.stages, m.from) ?? -1;
          if (index >= 0) dependencies.push({ stage: index, via: 'mount', line: pos.line, column: pos.column });
          else images.push({ ref: m.from, via: 'mount', line: pos.line, column: pos.column });
        }
      }
    }
    for (const d of dependencies) {
      if (d.stage === st.index) {
        const what = d.via === 'copy' ? 'COPY --from' : 'RUN --mount=from';
        errors.push(errorAt(d, `stage ${describeStage(st)} refers to itself with ${what}; a stage can only use other stages`));
      }
    }
    stages.push({
      index: st.index, name: st.name, base, platform: stagePlatform, dependencies,
      dependsOn: [...new Set(dependencies.map((d) => d.stage))].sort((a, b) => a - b), images, usedBuildArgs: [...used].sort(),
    });
  }
  if (errors.length === 0) {
    const cycle = findCycle(stages);
    if (cycle) {
      const names = cycle.map((i) => describeStage(df.stages[i])).join(' → ');
      const edge = stages[cycle[0]].dependencies.find((d) => d.stage === cycle[1]) as StageDependency;
      errors.push(errorAt(edge, `circular dependency between stages: ${names}`));
    }
  }
  if (errors.length > 0) throw new DockerfileError(errors);

  let target = stageCount - 1;
  if (opts.target !== undefined && opts.target !== '') {
    target = findStage(df.stages, opts.target);
    if (target < 0) {
      const names = df.stages.flatMap((s) => (s.name ? [s.name] : []));
      const known = names.length > 0 ? `; the named stages are ${names.join(', ')}` : '; no stage has a name';
      throw new DockerfileError([errorAt({ line: 1, column: 1 }, `target stage "${opts.target}" could not be found${known}`)]);
    }
  }
  const needed = new Set<number>();
  const visit = (i: number): void => {
    if (needed.has(i)) return;
    needed.add(i);
    for (const d of stages[i].dependsOn) visit(d);
  };
  visit(target);
  const neededStages = [...needed].sort((a, b) => a - b);

  // Invalid image names only fail stages that are built, as in BuildKit.
  for (const i of neededStages) {
    const s = stages[i];
    const refs: Array<{ ref: string; pos: Position }> = s.images.map((im) => ({ ref: im.ref, pos: im }));
    if (s.base.kind === 'image') refs.push({ ref: s.base.ref, pos: df.stages[i].from });
    for (const { ref, pos } of refs) {
      if (!isValidImageReference(ref)) errors.push(errorAt(pos, `"${ref}" is not a valid image reference (nor the name of a stage)`));
    }
  }
  if (errors.length > 0) throw new DockerfileError(errors);

  const level = new Map<number, number>();
  const levelOf = (i: number): number => {
    const known = level.get(i);
    if (known !== undefined) return known;
    const l = stages[i].dependsOn.reduce((max, d) => Math.max(max, levelOf(d) + 1), 0);
    level.set(i, l);
    return l;
  };
  const buildLevels: number[][] = [];
  for (const i of neededStages) (buildLevels[levelOf(i)] ??= []).push(i);

  const declared = new Set<string>([...PLATFORM_ARG_NAMES, ...PROXY_ARG_NAMES]);
  for (const a of df.globalArgs) for (const d of a.args) declared.add(d.name);
  for (const i of neededStages) {
    for (const ins of df.stages[i].instructions) if (ins.keyword === 'ARG') for (const d of ins.args) declared.add(d.name);
  }
  const unusedBuildArgs = Object.keys(buildArgs).filter((k) => !declared.has(k)).sort();

  return {
    dockerfile: df, escapeToken: df.escapeToken, target, stages, neededStages, buildLevels: buildLevels.filter((l) => l !== undefined),
    globalArgs, buildArgs, platform, buildPlatform, unusedBuildArgs, warnings: df.warnings,
  };
}

function describeStage(st: Stage): string {
  return st.name !== null ? `"${st.name}"` : `#${st.index}`;
}

/** A dependency cycle as stage indexes (first repeated at the end), or null. */
function findCycle(stages: readonly PlannedStage[]): number[] | null {
  const state = new Array<0 | 1 | 2>(stages.length).fill(0);
  const path: number[] = [];
  const dfs = (i: number): number[] | null => {
    state[i] = 1;
    path.push(i);
    for (const d of stages[i].dependsOn) {
      if (state[d] === 1) return [...path.slice(path.indexOf(d)), d];
      if (state[d] === 0) {
        const c = dfs(d);
        if (c) return c;
      }
    }
    path.pop();
    state[i] = 2;
    return null;
  };
  for (let i = 0; i < stages.length; i++) {
    if (state[i] === 0) {
      const c = dfs(i);
      if (c) return c;
    }
  }
  return null;
}

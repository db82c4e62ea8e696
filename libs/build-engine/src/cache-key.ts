// A step's cache key (what it chains from, what it does, the build args it saw), its fingerprint
// for explaining misses, and the cache lookup that treats an entry whose layer is gone as a miss.

import { createHash } from 'node:crypto';
import { canonicalJson } from '@strata/oci';
import type { CachedStep } from './interfaces.js';
import { explainMiss, MAX_FINGERPRINT_FILES, type StepFingerprint } from './miss-reason.js';
import type { BuildScope, StageState, StepPosition } from './step-context.js';

export function sha256(data: string | Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** What identifies a step for the cache. */
export interface StepIdentity {
  kind: string;
  line: number;
  /** The key it chains from: the stage's filesystem for COPY/ADD/RUN, the previous step otherwise. */
  parent: string;
  /** The step's expanded definition. */
  definition: unknown;
  /** Build args (stage ARGs) the step saw, with their values, sorted by name. */
  args: Array<[string, string | null]>;
  /** For COPY/ADD: each source entry's hash. */
  files?: ReadonlyMap<string, string>;
}

/** The cache key: a hash of the step's kind, parent, definition and the ARGs it saw. */
export function stepCacheKey(step: StepIdentity): string {
  // v2: COPY/ADD/WORKDIR layers follow BuildKit's tree rules (symlinks, archives, owners), so v1 entries hold other layers.
  return sha256(canonicalJson({ v: 2, kind: step.kind, parent: step.parent, definition: step.definition, args: step.args }));
}

/** What a later build compares with to explain why this step missed. */
export function stepFingerprint(step: StepIdentity, base?: { ref: string; digest: string }): StepFingerprint {
  // The first MAX_FINGERPRINT_FILES entries, without spreading the whole map (a COPY of 50,000 files).
  let fileList: Array<[string, string]> | undefined;
  if (step.files) {
    fileList = [];
    for (const pair of step.files) {
      if (fileList.length === MAX_FINGERPRINT_FILES) break;
      fileList.push(pair);
    }
  }
  return {
    kind: step.kind,
    line: step.line,
    definition: sha256(canonicalJson(step.definition ?? null)),
    args: Object.fromEntries(step.args),
    ...(base ? { base } : {}),
    ...(fileList ? { files: Object.fromEntries(fileList), ...(step.files!.size > fileList.length ? { filesTruncated: true } : {}) } : {}),
    parent: step.parent,
  };
}

/** Whether this build skips the cache for a stage (noCache, or the stage named in noCacheStages). */
export function skipsCache(build: BuildScope, stageName: string | null): boolean {
  return build.input.noCache === true || (stageName !== null && (build.input.noCacheStages ?? []).includes(stageName));
}

/** The cached result of a step, or null; an entry whose layer blob is gone is a miss. */
export async function lookupStep(build: BuildScope, key: string): Promise<CachedStep | null> {
  const { cache, layers } = build.deps;
  const result = await cache.get(key);
  if (result?.layer && !cache.checksLayers && !(await layers.has(result.layer.descriptor.digest))) return null;
  return result;
}

/** Why a step missed the cache, in a sentence. */
export async function missReason(build: BuildScope, stage: StageState, where: StepPosition, fingerprint: StepFingerprint, label: string): Promise<string> {
  if (skipsCache(build, where.stageName)) return build.input.noCache ? 'noCache was set for this build' : `noCache was set for stage "${where.stageName}"`;
  const lastMiss = stage.lastMiss;
  return explainMiss(fingerprint, (await build.deps.previousStep?.(where.stage, where.index)) ?? null, lastMiss, label);
}

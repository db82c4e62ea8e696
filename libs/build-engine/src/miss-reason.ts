/**
 * Why a step missed the cache, in the words a user needs: which file, which build arg, which base
 * image. No peer explains its misses; this compares a step with the same step of the previous
 * build of the same repository and target.
 */
export interface StepFingerprint {
  kind: string;
  line: number;
  /** sha256 of the step's expanded definition without its parent and inputs. */
  definition: string;
  /** Build args the step saw, with their values. */
  args: Record<string, string | null>;
  /** For the first step of a stage built on an image: the reference and the digest it resolved to. */
  base?: { ref: string; digest: string };
  /** For COPY/ADD: each source entry's path and a hash of its metadata and content (capped). */
  files?: Record<string, string>;
  /** Whether `files` was cut short because there were too many entries. */
  filesTruncated?: boolean;
  /** Cache key of the step it chains from. */
  parent: string;
}

export const MAX_FINGERPRINT_FILES = 5000;

function listChanged(prev: Record<string, string>, cur: Record<string, string>): string[] {
  const changed = new Set<string>();
  for (const [p, h] of Object.entries(cur)) if (prev[p] !== h) changed.add(p);
  for (const p of Object.keys(prev)) if (!(p in cur)) changed.add(p);
  return [...changed].sort();
}

function summarise(paths: string[]): string {
  const shown = paths.slice(0, 3).join(', ');
  return paths.length > 3 ? `${shown} and ${paths.length - 3} more` : shown;
}

/**
 * Explains a miss. `previous` is the same step in the previous build (null when there was none);
 * `upstream` names the earlier step of this build that missed, if any.
 */
export function explainMiss(
  current: StepFingerprint,
  previous: StepFingerprint | null,
  upstream: { line: number; instruction: string } | null,
  /** How the step names its sources, e.g. `COPY src/`. */
  label: string,
): string {
  if (!previous) return 'no earlier build of this repository and target ran this step';
  if (current.base && previous.base && current.base.digest !== previous.base.digest) {
    return `base image ${current.base.ref} now resolves to ${current.base.digest} (was ${previous.base.digest})`;
  }
  if (previous.kind !== current.kind || previous.definition !== current.definition) {
    const changedArgs = Object.keys({ ...previous.args, ...current.args }).filter((a) => previous.args[a] !== current.args[a]);
    if (changedArgs.length > 0 && previous.kind === current.kind) return `build arg ${changedArgs.sort().join(', ')} changed`;
    if (current.files && previous.files && previous.kind === current.kind) {
      const changed = listChanged(previous.files, current.files);
      if (changed.length > 0) return `${label} changed: ${summarise(changed)}`;
    }
    return 'instruction changed';
  }
  const changedArgs = Object.keys({ ...previous.args, ...current.args }).filter((a) => previous.args[a] !== current.args[a]);
  if (changedArgs.length > 0) return `build arg ${changedArgs.sort().join(', ')} changed`;
  if (current.files && previous.files) {
    const changed = listChanged(previous.files, current.files);
    if (changed.length > 0) return `${label} changed: ${summarise(changed)}`;
  }
  if (upstream) return `an earlier step changed: line ${upstream.line} (${upstream.instruction})`;
  if (previous.parent !== current.parent) return 'an earlier step or the base image changed';
  return 'the cached result is gone (evicted or never stored)';
}

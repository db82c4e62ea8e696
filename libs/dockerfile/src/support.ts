// What Strata parses but does not build (FROM --platform other than the build's), what the operator
// has not allowed (RUN --network=host, RUN --security=insecure), and git sources BuildKit would
// reject: refused at check time and at build time from this one list, with its line and a sentence.

import type { Flag, StageInstruction } from './ast.js';
import { errorAt, type Diagnostic, type Position } from './diagnostics.js';
import type { BuildPlan } from './plan.js';
import { formatPlatform } from './platform.js';
import { classifyAddSource } from './stage-env.js';

export interface SupportOptions {
  /** The operator allows `RUN --network=host` (STRATA_RUN_NETWORK=host). */
  allowHostNetwork?: boolean;
  /** The operator allows `RUN --security=insecure` (STRATA_RUN_ALLOW_INSECURE=true). */
  allowInsecure?: boolean;
}

function at(ins: StageInstruction, flag: string): Position {
  return ins.flags.find((f: Flag) => f.name === flag) ?? ins;
}

/**
 * The refusals for one instruction of a stage (its words expanded or not: variables that hide a
 * refused value are caught again when the build expands them). Empty when Strata builds it.
 */
export function unsupportedInInstruction(ins: StageInstruction, opts: SupportOptions = {}): Diagnostic[] {
  const out: Diagnostic[] = [];
  switch (ins.keyword) {
    case 'COPY':
    case 'ADD': {
      if (ins.keyword === 'ADD') {
        // Not a refusal: a git source whose fragment or query BuildKit would reject (checked again, expanded, by the build).
        for (const s of ins.sources) {
          const src = classifyAddSource(s);
          if (src.kind === 'git' && src.problem !== null && !s.includes('$')) out.push(errorAt(ins, `ADD: invalid git source "${s}": ${src.problem}`));
        }
      }
      break;
    }
    case 'RUN': {
      if (ins.security === 'insecure' && !opts.allowInsecure) {
        out.push(errorAt(at(ins, 'security'), 'RUN --security=insecure is not allowed on this deployment (STRATA_RUN_ALLOW_INSECURE is not true); remove the flag or ask the operator to allow privileged steps'));
      }
      if (ins.network === 'host' && !opts.allowHostNetwork) {
        out.push(errorAt(at(ins, 'network'), 'RUN --network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host); use the default network or --network=none'));
      }
      break;
    }
    default:
      break;
  }
  return out;
}

/**
 * The refusals for the stages a build needs: their instructions, and a FROM --platform other than
 * the build's platform.
 */
export function unsupportedInPlan(plan: BuildPlan, opts: SupportOptions = {}): Diagnostic[] {
  const out: Diagnostic[] = [];
  for (const i of plan.neededStages) {
    const planned = plan.stages[i];
    const stage = plan.dockerfile.stages[i];
    if (planned.platform !== null && formatPlatform(planned.platform) !== formatPlatform(plan.platform)) {
      out.push(errorAt(stage.from, `FROM --platform=${formatPlatform(planned.platform)} is not supported by Strata: this build makes ${formatPlatform(plan.platform)} images, and multi-platform builds are not supported yet`));
    }
    for (const ins of stage.instructions) out.push(...unsupportedInInstruction(ins, opts));
  }
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

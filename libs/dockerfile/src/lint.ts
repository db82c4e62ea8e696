// BuildKit's build checks that can be decided from the Dockerfile alone (docker build --check).
// Rule names and messages follow docs.docker.com/reference/build-checks.

import type { ArgInstruction, Instruction, Stage } from './ast.js';
import { errorAt, warningAt, type Diagnostic } from './diagnostics.js';
import { DEFAULT_PLATFORM, PLATFORM_ARG_NAMES, parsePlatform, platformArgs } from './platform.js';
import { expand } from './shell.js';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const TAG = /^\w[\w.-]{0,127}$/;
const DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}$/;

/** Whether `ref` is a valid image reference (`name[:tag][@digest]`, optional registry host). */
export function isValidImageReference(ref: string): boolean {
  let rest = ref;
  const at = rest.indexOf('@');
  if (at >= 0) {
    if (!DIGEST.test(rest.slice(at + 1))) return false;
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    if (!TAG.test(rest.slice(colon + 1))) return false;
    rest = rest.slice(0, colon);
  }
  if (rest === '' || rest.length > 255) return false;
  const parts = rest.split('/');
  if (parts.length > 1 && (parts[0].includes('.') || parts[0].includes(':') || parts[0] === 'localhost' || /[A-Z]/.test(parts[0]))) {
    const [host, port] = parts[0].split(':', 2);
    if (port !== undefined && !/^[0-9]+$/.test(port)) return false;
    if (!host.split('.').every((c) => DOMAIN_COMPONENT.test(c))) return false;
    parts.shift();
  }
  return parts.every((p) => COMPONENT.test(p));
}

function variablesIn(word: string, known: (name: string) => string | undefined): { matched: Set<string>; unmatched: Set<string>; value: string } | null {
  try {
    return expand(word, known);
  } catch {
    return null;
  }
}

/** The lint findings of a parsed Dockerfile; DuplicateStageName is an error, the rest warnings. */
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
      errors.push(errorAt(st.from, `Duplicate stage name "${st.name}", stage names should be unique`, 'DuplicateStageName'));
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
  return { errors, warnings };
}

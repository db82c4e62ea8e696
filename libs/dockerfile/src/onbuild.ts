import type { StageInstruction } from './ast.js';
import { DockerfileError } from './diagnostics.js';
import { parseDockerfile } from './parser.js';

/**
 * Parses an ONBUILD trigger taken from a base image's config (`OnBuild`), for the engine to run
 * at the start of a stage built on that image. Positions in errors are relative to the trigger.
 */
export function parseOnbuildTrigger(trigger: string): StageInstruction {
  let parsed;
  try {
    parsed = parseDockerfile(`FROM scratch\n${trigger}`);
  } catch (e) {
    if (e instanceof DockerfileError) {
      throw new DockerfileError(e.diagnostics.map((d) => ({ ...d, line: Math.max(1, d.line - 1) })));
    }
    throw e;
  }
  const instructions = parsed.stages.length === 1 ? parsed.stages[0].instructions : [];
  if (instructions.length !== 1) {
    throw new DockerfileError([{ line: 1, column: 1, severity: 'error', message: 'an ONBUILD trigger must be exactly one instruction' }]);
  }
  const [ins] = instructions;
  return { ...ins, line: ins.line - 1, endLine: ins.endLine - 1 };
}

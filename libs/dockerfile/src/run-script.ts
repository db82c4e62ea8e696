import type { RunInstruction } from './ast.js';
import { heredocWord } from './instructions.js';

/** What a RUN executes once its heredocs are taken into account. */
export type RunScript =
  | { kind: 'exec'; args: string[] }
  /** Run `[...shell, script]`. */
  | { kind: 'shell'; script: string }
  /**
   * A lone heredoc starting with `#!`: `content` goes into the executable file `/dev/pipes/<name>`
   * (mounted read-only, never in the layer), and that file is the command.
   */
  | { kind: 'shebang'; name: string; content: string };

/**
 * Turns a RUN into what the executor runs, as BuildKit does: a lone `RUN <<EOF` runs the body as a
 * script (or as an executable file when it starts with `#!`); other heredoc forms hand the command
 * with the bodies appended to the shell, which feeds them to the programs (`RUN <<EOF python3`).
 */
export function runScript(run: RunInstruction): RunScript {
  if (run.cmd.form === 'exec') return { kind: 'exec', args: run.cmd.args };
  const command = run.cmd.command;
  if (run.heredocs.length === 0) return { kind: 'shell', script: command };
  if (heredocWord(command) !== null) {
    const body = run.heredocs[0].content;
    return body.startsWith('#!') ? { kind: 'shebang', name: run.heredocs[0].name, content: body } : { kind: 'shell', script: body };
  }
  let full = command;
  for (const h of run.heredocs) full += `\n${h.content}${h.name}`;
  return { kind: 'shell', script: full };
}

/** Where BuildKit puts a lone `#!` heredoc for the kernel to run it with its interpreter. */
export const HEREDOC_SCRIPT_DIR = '/dev/pipes';

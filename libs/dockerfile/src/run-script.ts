import type { RunInstruction } from './ast.js';
import { heredocWord } from './instructions.js';

/** What a RUN executes once its heredocs are taken into account. */
export type RunScript =
  | { kind: 'exec'; args: string[] }
  /** Run `[...shell, script]`. */
  | { kind: 'shell'; script: string }
  /** A lone heredoc starting with `#!`: write `content` to a file, make it executable and run it. */
  | { kind: 'shebang'; content: string };

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
    return body.startsWith('#!') ? { kind: 'shebang', content: body } : { kind: 'shell', script: body };
  }
  let full = command;
  for (const h of run.heredocs) full += `\n${h.content}${h.name}`;
  return { kind: 'shell', script: full };
}

/** The program a `#!` line names (`#!/usr/bin/env python3` → `python3`), or '' without one. */
export function shebangProgram(content: string): string {
  const interpreter = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(content);
  return interpreter ? (interpreter[1].endsWith('/env') ? interpreter[2] ?? '' : interpreter[1]) : '';
}

/**
 * How Strata runs a `#!` heredoc script: a shell interpreter gets the body with `-c`; any other
 * interpreter needs the body written to a file first, which Strata does not do yet (null).
 */
export function shebangShellArgs(content: string): string[] | null {
  const program = shebangProgram(content);
  if (!/(^|\/)(sh|bash|ash|dash)$/.test(program)) return null;
  return [program.includes('/') ? program : `/bin/${program}`, '-c', content];
}

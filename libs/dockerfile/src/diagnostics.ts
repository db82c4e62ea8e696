/** How bad a finding is: errors stop a build, warnings are BuildKit lint findings. */
export type Severity = 'error' | 'warning';

/**
 * One finding about a Dockerfile. `line` and `column` are 1-based; `column` counts UTF-16 code
 * units on that physical line. `message` is one sentence without the position in it.
 */
export interface Diagnostic {
  line: number;
  column: number;
  message: string;
  severity: Severity;
  /** BuildKit's rule name for lint findings (e.g. `FromAsCasing`), absent for plain syntax errors. */
  rule?: string;
}

/** A position in the Dockerfile text (1-based line and column). */
export interface Position {
  line: number;
  column: number;
}

/** Formats a diagnostic the way logs and the CLI show it: `line 3, column 1: unknown instruction "RUNN"`. */
export function formatDiagnostic(d: Diagnostic): string {
  return `line ${d.line}, column ${d.column}: ${d.message}`;
}

/**
 * Thrown when a Dockerfile cannot be read or built. `diagnostics` holds every error found (at least
 * one), each with its own position; `message` is the first one, formatted with its position.
 */
export class DockerfileError extends Error {
  readonly diagnostics: Diagnostic[];

  constructor(diagnostics: Diagnostic[]) {
    const list = diagnostics.length > 0 ? diagnostics : [errorAt({ line: 1, column: 1 }, 'the Dockerfile is invalid')];
    super(list.length === 1 ? formatDiagnostic(list[0]) : `${formatDiagnostic(list[0])} (and ${list.length - 1} more)`);
    this.name = 'DockerfileError';
    this.diagnostics = list;
  }
}

/** An error diagnostic at `pos`. */
export function errorAt(pos: Position, message: string, rule?: string): Diagnostic {
  return rule === undefined
    ? { line: pos.line, column: pos.column, message, severity: 'error' }
    : { line: pos.line, column: pos.column, message, severity: 'error', rule };
}

/** A warning diagnostic at `pos` for a BuildKit lint rule. */
export function warningAt(pos: Position, message: string, rule?: string): Diagnostic {
  return rule === undefined
    ? { line: pos.line, column: pos.column, message, severity: 'warning' }
    : { line: pos.line, column: pos.column, message, severity: 'warning', rule };
}

/** Internal: thrown inside the parser for one instruction, caught and collected by the caller. */
export class InstructionError extends Error {
  constructor(
    message: string,
    readonly pos?: Position,
  ) {
    super(message);
    this.name = 'InstructionError';
  }
}

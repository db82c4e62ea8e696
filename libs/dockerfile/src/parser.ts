// parseDockerfile: the file → directives, logical lines (continuations, comments, heredocs) →
// typed instructions → stages, with BuildKit's lint warnings. One pass over the lines, no regex
// that can backtrack badly, so a large Dockerfile parses in linear time.

import type {
  ArgInstruction, CheckConfig, Directive, Dockerfile, EscapeToken, Instruction, Stage, StageInstruction,
} from './ast.js';
import { DockerfileError, InstructionError, errorAt, warningAt, type Diagnostic, type Position } from './diagnostics.js';
import {
  canContainHeredoc, heredocWord, parseInstructionLine, splitInstruction, type LineContext, type RawHeredoc,
} from './instructions.js';
import { expand } from './shell.js';
import { lintDockerfile } from './lint.js';

interface PhysicalLine {
  /** Text without the line ending. */
  text: string;
  /** Text with its line ending, as heredoc bodies keep it. */
  full: string;
}

function splitLines(input: string): PhysicalLine[] {
  const text = input.charCodeAt(0) === 0xfeff ? input.slice(1) : input;
  const lines: PhysicalLine[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf('\n', start);
    const end = nl < 0 ? text.length : nl + 1;
    const full = text.slice(start, end);
    lines.push({ text: full.replace(/[\r\n]+$/, ''), full });
    start = end;
  }
  return lines;
}

/** Go's unicode.IsSpace on one UTF-16 unit (enough for leading white space). */
function isSpaceChar(c: string): boolean {
  return /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/.test(c);
}

function leadingSpace(s: string): number {
  let i = 0;
  while (i < s.length && isSpaceChar(s[i])) i++;
  return i;
}

const DIRECTIVE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$/;

class DirectiveParser {
  done = false;
  readonly seen = new Set<string>();
  readonly directives: Directive[] = [];

  /** Looks at a (left-trimmed) line; returns a directive, or null once directives have ended. */
  parse(text: string, line: number): Directive | null {
    if (this.done) return null;
    if (!text.startsWith('#')) {
      this.done = true;
      return null;
    }
    const m = DIRECTIVE.exec(text.slice(1).replace(/^[\s\u0085]+/, ''));
    const name = m?.[1].toLowerCase();
    if (!m || (name !== 'syntax' && name !== 'escape' && name !== 'check')) {
      this.done = true;
      return null;
    }
    if (this.seen.has(name)) throw new DockerfileError([errorAt({ line, column: 1 }, `only one ${name} parser directive can be used`)]);
    this.seen.add(name);
    const d: Directive = { name, value: m[2], line };
    this.directives.push(d);
    return d;
  }
}

/** Parses the value of a `# check=` directive (`skip=Rule1,Rule2;error=true`). */
export function parseCheckDirective(value: string): CheckConfig {
  const cfg: CheckConfig = { skip: [], error: false };
  for (const part of value.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const key = part.slice(0, eq).trim().toLowerCase();
    const v = part.slice(eq + 1).trim();
    if (key === 'skip') {
      const names = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
      cfg.skip = names.some((n) => n.toLowerCase() === 'all') ? 'all' : names;
    } else if (key === 'error') cfg.error = v.toLowerCase() === 'true' || v === '1';
  }
  return cfg;
}

/** True when the line ends with the escape token (not itself escaped), i.e. continues. */
function continuation(text: string, escape: string): string | null {
  let end = text.length;
  while (end > 0 && (text[end - 1] === ' ' || text[end - 1] === '\t')) end--;
  if (end === 0 || text[end - 1] !== escape) return null;
  if (end >= 2 && text[end - 2] === escape) return null;
  return text.slice(0, end - 1);
}

interface Segment {
  offset: number;
  line: number;
  column: number;
}

/**
 * Parses a Dockerfile's syntax. Nothing is expanded. Throws {@link DockerfileError} with every error
 * found (line-structure errors such as an unterminated heredoc stop at the first one).
 */
export function parseDockerfile(text: string): Dockerfile {
  const lines = splitLines(text);
  const directives = new DirectiveParser();
  let escape: EscapeToken = '\\';
  const errors: Diagnostic[] = [];
  const warnings: Diagnostic[] = [];
  const instructions: Instruction[] = [];
  const fatal = (pos: Position, message: string): never => {
    throw new DockerfileError([...errors, errorAt(pos, message)]);
  };

  let i = 0;
  while (i < lines.length) {
    const lineNo = i + 1;
    const physical = lines[i].text;
    const lead = leadingSpace(physical);
    const trimmed = physical.slice(lead);
    const directive = directives.parse(trimmed, lineNo);
    if (directive?.name === 'escape') {
      if (directive.value !== '`' && directive.value !== '\\') {
        fatal({ line: lineNo, column: 1 }, `invalid escape token "${directive.value}": use \` or \\`);
      }
      escape = directive.value as EscapeToken;
    }
    i++;
    if (trimmed.startsWith('#')) continue;
    const segments: Segment[] = [{ offset: 0, line: lineNo, column: lead + 1 }];
    let logical = trimmed;
    let cont = continuation(logical, escape);
    if (cont === null && logical === '') continue;
    let lastContinuation: Position = { line: lineNo, column: lead + logical.length };
    let emptyContinuation: Position | null = null;
    if (cont !== null) {
      logical = cont;
      while (cont !== null) {
        if (i >= lines.length) {
          fatal(lastContinuation, 'the line continues past the end of the file: remove the trailing escape character or add the missing line');
        }
        const next = lines[i].text;
        const nextNo = i + 1;
        i++;
        if (next.slice(leadingSpace(next)).startsWith('#')) continue;
        if (leadingSpace(next) === next.length) {
          emptyContinuation ??= { line: nextNo, column: 1 };
          continue;
        }
        segments.push({ offset: logical.length, line: nextNo, column: 1 });
        cont = continuation(next, escape);
        lastContinuation = { line: nextNo, column: next.trimEnd().length };
        logical += cont ?? next;
      }
    }
    if (emptyContinuation) warnings.push(warningAt(emptyContinuation, 'Empty continuation line', 'NoEmptyContinuation'));

    const posAt = (offset: number): Position => {
      let seg = segments[0];
      for (const s of segments) if (s.offset <= offset) seg = s;
      return { line: seg.line, column: seg.column + (offset - seg.offset) };
    };
    const startPos = posAt(0);
    const split = splitInstruction(logical, escape);
    const heredocs: RawHeredoc[] = [];
    if (canContainHeredoc(split, escape) && logical.includes('<<')) {
      let words: string[] = [];
      try {
        words = expand(logical, () => undefined, { rawQuotes: true, rawEscapes: true, skipUnset: true }).words;
      } catch {
        words = [];
      }
      for (const w of words) {
        const h = heredocWord(w);
        if (!h) continue;
        let content = '';
        let terminated = false;
        const bodyStart = i + 1;
        while (i < lines.length) {
          const body = lines[i];
          i++;
          const candidate = h.chomp ? body.text.replace(/^\t+/, '') : body.text;
          if (candidate === h.name) {
            terminated = true;
            break;
          }
          content += body.full;
        }
        if (!terminated) {
          const at = logical.indexOf('<<');
          fatal(posAt(at < 0 ? 0 : at), `unterminated heredoc: no line "${h.name}" ends it before the end of the file`);
        }
        heredocs.push({ ...h, rawContent: content, line: bodyStart });
      }
    }
    const ctx: LineContext = { text: logical, escape, line: startPos.line, endLine: i, posAt, heredocs, warnings };
    try {
      instructions.push(parseInstructionLine(ctx, split));
    } catch (e) {
      if (!(e instanceof InstructionError)) throw e;
      errors.push(errorAt(e.pos ?? startPos, e.message));
    }
  }

  if (instructions.length === 0 && errors.length === 0) {
    fatal({ line: Math.max(1, lines.length), column: 1 }, 'the Dockerfile has no instructions');
  }

  // Group into stages: ARGs before the first FROM are global.
  const globalArgs: ArgInstruction[] = [];
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      stages.push({ index: stages.length, name: ins.stageName, from: ins, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') globalArgs.push(ins);
      else errors.push(errorAt(ins, `${ins.keyword} comes before the first FROM; only ARG may appear before FROM`));
    } else stages[stages.length - 1].instructions.push(ins as StageInstruction);
  }
  if (stages.length === 0 && errors.length === 0) {
    const last = instructions[instructions.length - 1];
    errors.push(errorAt({ line: last.line, column: last.column }, 'FROM is missing: the Dockerfile has no build stage'));
  }

  const lint = lintDockerfile(globalArgs, stages);
  errors.push(...lint.errors);
  if (errors.length > 0) throw new DockerfileError(sortDiagnostics(errors));

  const checkDirective = directives.directives.find((d) => d.name === 'check');
  const check = checkDirective ? parseCheckDirective(checkDirective.value) : null;
  const allWarnings = sortDiagnostics([...warnings, ...lint.warnings]);
  const skip = check?.skip ?? [];
  const kept = skip === 'all' ? allWarnings.filter((w) => w.rule === undefined) : allWarnings.filter((w) => w.rule === undefined || !skip.includes(w.rule));
  return { directives: directives.directives, escapeToken: escape, check, globalArgs, stages, warnings: kept };
}

/** Orders diagnostics by position. */
export function sortDiagnostics(list: Diagnostic[]): Diagnostic[] {
  return [...list].sort((a, b) => a.line - b.line || a.column - b.column);
}

// Variable substitution and word splitting with the rules of BuildKit's shell lexer
// (frontend/dockerfile/shell/lex.go): $var, ${var}, the ${var<op>word} modifiers, quotes and the
// escape token. Written from its documented behaviour and tests, not translated.

import { DockerfileError, errorAt, type Position } from './diagnostics.js';
import { PatternError, replacePattern, trimPrefix, trimSuffix } from './pattern.js';
import type { EscapeToken } from './ast.js';

/** Where variable values come from: a Map, a plain record, or a function (undefined = unset). */
export type VariableLookup =
  | ReadonlyMap<string, string>
  | Readonly<Record<string, string>>
  | ((name: string) => string | undefined);

export interface ExpandOptions {
  /** The Dockerfile's escape token; default `\`. */
  escapeToken?: EscapeToken;
  /** Keep quote characters in the result (BuildKit's RawQuotes). */
  rawQuotes?: boolean;
  /** Keep escape characters in the result (BuildKit's RawEscapes). */
  rawEscapes?: boolean;
  /** Treat quotes as ordinary characters (used for heredoc bodies). */
  skipQuotes?: boolean;
  /** Leave references to unset variables as written instead of expanding them to "". */
  skipUnset?: boolean;
  /** Position reported when expansion fails (the instruction's). */
  position?: Position;
}

/** The result of one expansion: the word, its split form and the variables it looked up. */
export interface Expansion {
  value: string;
  words: string[];
  /** Names looked up and found. */
  matched: Set<string>;
  /** Names looked up and not set. */
  unmatched: Set<string>;
}

const EOF = -1;

/** Go's unicode.IsSpace. */
export function isSpaceCodePoint(cp: number): boolean {
  return (
    (cp >= 9 && cp <= 13) || cp === 32 || cp === 0x85 || cp === 0xa0 || cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) || cp === 0x2028 || cp === 0x2029 || cp === 0x202f ||
    cp === 0x205f || cp === 0x3000
  );
}

const LETTER = /\p{L}/u;
const DIGIT = /\p{Nd}/u;

function isLetter(cp: number): boolean {
  return cp >= 0 && (cp < 128 ? (cp | 32) >= 97 && (cp | 32) <= 122 : LETTER.test(String.fromCodePoint(cp)));
}
function isDigit(cp: number): boolean {
  return cp >= 0 && (cp < 128 ? cp >= 48 && cp <= 57 : DIGIT.test(String.fromCodePoint(cp)));
}

class ExpansionFailure extends Error {}

class Words {
  private buf = '';
  private inWord = false;
  readonly words: string[] = [];

  addChar(cp: number): void {
    if (isSpaceCodePoint(cp)) {
      if (this.inWord && this.buf.length > 0) {
        this.words.push(this.buf);
        this.buf = '';
        this.inWord = false;
      }
    } else this.addRawChar(cp);
  }
  addRawChar(cp: number): void {
    this.buf += String.fromCodePoint(cp);
    this.inWord = true;
  }
  addString(s: string): void {
    for (const ch of s) this.addChar(ch.codePointAt(0) as number);
  }
  addRawString(s: string): void {
    this.buf += s;
    this.inWord = true;
  }
  finish(): string[] {
    if (this.buf.length > 0) {
      this.words.push(this.buf);
      this.buf = '';
      this.inWord = false;
    }
    return this.words;
  }
}

class Lexer {
  private readonly cps: number[];
  private pos = 0;
  private rawEscapes: boolean;
  private readonly escape: number;
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();

  constructor(
    word: string,
    private readonly get: (name: string) => string | undefined,
    private readonly opts: ExpandOptions,
  ) {
    this.cps = [];
    for (const ch of word) this.cps.push(ch.codePointAt(0) as number);
    this.rawEscapes = opts.rawEscapes ?? false;
    this.escape = (opts.escapeToken ?? '\\').codePointAt(0) as number;
  }

  private peek(): number {
    return this.pos < this.cps.length ? this.cps[this.pos] : EOF;
  }
  private next(): number {
    return this.pos < this.cps.length ? this.cps[this.pos++] : EOF;
  }

  private lookup(name: string): string | undefined {
    const v = this.get(name);
    if (v === undefined) this.unmatched.add(name);
    else this.matched.add(name);
    return v;
  }

  /** Reads up to `stop` (consumed) or the end; returns the text and its words. */
  run(stop: number, rawEscapes: boolean): { value: string; words: string[] } {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      let result = '';
      const words = new Words();
      while (this.peek() !== EOF) {
        const ch = this.peek();
        if (stop !== EOF && ch === stop) {
          this.next();
          return { value: result, words: words.finish() };
        }
        if (ch === 0x24 /* $ */) {
          const v = this.dollar();
          result += v;
          words.addString(v);
        } else if (ch === 0x3c /* < */) {
          const v = this.possibleHeredoc();
          result += v;
          words.addRawString(v);
        } else if (!this.opts.skipQuotes && ch === 0x27 /* ' */) {
          const v = this.singleQuote();
          result += v;
          words.addRawString(v);
        } else if (!this.opts.skipQuotes && ch === 0x22 /* " */) {
          const v = this.doubleQuote();
          result += v;
          words.addRawString(v);
        } else {
          let c = this.next();
          if (c === this.escape) {
            if (this.rawEscapes) {
              words.addRawChar(c);
              result += String.fromCodePoint(c);
            }
            c = this.next();
            if (c === EOF) break; // an escape at the very end is dropped
            words.addRawChar(c);
          } else words.addChar(c);
          result += String.fromCodePoint(c);
        }
      }
      if (stop !== EOF) {
        throw new ExpansionFailure(`unexpected end of statement while looking for matching ${String.fromCodePoint(stop)}`);
      }
      return { value: result, words: words.finish() };
    } finally {
      this.rawEscapes = saved;
    }
  }

  private singleQuote(): string {
    let out = '';
    const open = this.next();
    if (this.opts.rawQuotes) out += String.fromCodePoint(open);
    for (;;) {
      const c = this.next();
      if (c === EOF) throw new ExpansionFailure('unexpected end of statement while looking for matching single-quote');
      if (c === 0x27) {
        if (this.opts.rawQuotes) out += "'";
        return out;
      }
      out += String.fromCodePoint(c);
    }
  }

  private doubleQuote(): string {
    let out = '';
    const open = this.next();
    if (this.opts.rawQuotes) out += String.fromCodePoint(open);
    for (;;) {
      const p = this.peek();
      if (p === EOF) throw new ExpansionFailure('unexpected end of statement while looking for matching double-quote');
      if (p === 0x22) {
        this.next();
        if (this.opts.rawQuotes) out += '"';
        return out;
      }
      if (p === 0x24) {
        out += this.dollar();
        continue;
      }
      let c = this.next();
      if (c === this.escape) {
        if (this.rawEscapes) out += String.fromCodePoint(c);
        const after = this.peek();
        if (after === EOF) continue; // reported as the missing quote on the next turn
        // Inside double quotes only ", $ and the escape token itself can be escaped.
        if (after === 0x22 || after === 0x24 || after === this.escape) c = this.next();
      }
      out += String.fromCodePoint(c);
    }
  }

  private possibleHeredoc(): string {
    this.next();
    if (this.peek() !== 0x3c) return '<';
    this.next();
    let space = '';
    for (let p = this.peek(); p === 9 || p === 13 || p === 32; p = this.peek()) {
      space += String.fromCodePoint(p);
      this.next();
    }
    return '<<' + space;
  }

  private name(): string {
    let name = '';
    while (this.peek() !== EOF) {
      const c = this.peek();
      if (name.length === 0 && isDigit(c)) {
        while (this.peek() !== EOF && isDigit(this.peek())) name += String.fromCodePoint(this.next());
        return name;
      }
      if (name.length === 0 && isSpecialParam(c)) return String.fromCodePoint(this.next());
      if (!isLetter(c) && !isDigit(c) && c !== 0x5f) break;
      name += String.fromCodePoint(this.next());
    }
    return name;
  }

  private dollar(): string {
    this.next();
    if (this.peek() !== 0x7b /* { */) {
      const name = this.name();
      if (name === '') return '$';
      const v = this.lookup(name);
      if (v === undefined && this.opts.skipUnset) return '$' + name;
      return v ?? '';
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new ExpansionFailure("syntax error: missing '}'");
    if (first === 0x7b || first === 0x7d || first === 0x3a) throw new ExpansionFailure('syntax error: bad substitution');
    const name = this.name();
    let ch = this.next();
    if (ch === EOF) throw new ExpansionFailure("syntax error: missing '}'");
    let mod = String.fromCodePoint(ch);
    if (ch === 0x7d /* } */) {
      const v = this.lookup(name);
      if (v === undefined && this.opts.skipUnset) return '${' + name + '}';
      return v ?? '';
    }
    if (ch === 0x2f /* / */) return this.substitute(name);
    let nullIsUnset = false;
    if (ch === 0x3a /* : */) {
      nullIsUnset = true;
      ch = this.next();
      if (ch === EOF) throw new ExpansionFailure("syntax error: missing '}'");
      mod += String.fromCodePoint(ch);
    } else if (ch !== 0x2b && ch !== 0x2d && ch !== 0x3f && ch !== 0x23 && ch !== 0x25) {
      throw new ExpansionFailure(`unsupported modifier (${mod}) in substitution`);
    }
    const trims = ch === 0x23 /* # */ || ch === 0x25; /* % */
    if (nullIsUnset && trims) throw new ExpansionFailure(`unsupported modifier (${mod}) in substitution`);
    const word = this.runUntilBrace(trims);
    const value = this.lookup(name);
    if (this.opts.skipUnset && value === undefined) return '${' + name + mod + word + '}';
    const isNull = value === undefined || (nullIsUnset && value === '');
    switch (ch) {
      case 0x2d /* - */:
        return isNull ? word : (value as string);
      case 0x2b /* + */:
        return isNull ? '' : word;
      case 0x3f /* ? */: {
        if (value === undefined) throw new ExpansionFailure(`${name}: ${word !== '' ? word : 'is not allowed to be unset'}`);
        if (nullIsUnset && value === '') throw new ExpansionFailure(`${name}: ${word !== '' ? word : 'is not allowed to be empty'}`);
        return value;
      }
      case 0x23:
      case 0x25: {
        let pattern = word;
        let greedy = false;
        if (pattern.length > 0 && pattern.codePointAt(0) === ch) {
          greedy = true;
          pattern = pattern.slice(1);
        }
        try {
          return ch === 0x25 ? trimSuffix(pattern, value ?? '', greedy) : trimPrefix(pattern, value ?? '', greedy);
        } catch (e) {
          if (e instanceof PatternError) throw new ExpansionFailure(`invalid pattern (${pattern}) in substitution: ${e.message}`);
          throw e;
        }
      }
      default:
        throw new ExpansionFailure(`unsupported modifier (${mod}) in substitution`);
    }
  }

  private runUntilBrace(rawEscapes: boolean): string {
    try {
      return this.run(0x7d, rawEscapes).value;
    } catch (e) {
      if (e instanceof ExpansionFailure && this.peek() === EOF) throw new ExpansionFailure("syntax error: missing '}'");
      throw e;
    }
  }

  private substitute(name: string): string {
    const all = this.peek() === 0x2f;
    if (all) this.next();
    let pattern: string;
    try {
      pattern = this.run(0x2f, true).value;
    } catch (e) {
      if (e instanceof ExpansionFailure && this.peek() === EOF) throw new ExpansionFailure("syntax error: missing '/' in ${}");
      throw e;
    }
    const replacement = this.runUntilBrace(true);
    const value = this.lookup(name);
    if (this.opts.skipUnset && value === undefined) return '${' + name + '/' + pattern + '/' + replacement + '}';
    try {
      return replacePattern(pattern, value ?? '', replacement, all);
    } catch (e) {
      if (e instanceof PatternError) throw new ExpansionFailure(`invalid pattern (${pattern}) in substitution: ${e.message}`);
      throw e;
    }
  }
}

function isSpecialParam(cp: number): boolean {
  // @ * # ? - $ ! 0
  return cp === 0x40 || cp === 0x2a || cp === 0x23 || cp === 0x3f || cp === 0x2d || cp === 0x24 || cp === 0x21 || cp === 0x30;
}

/** Turns any supported lookup into a function. */
export function toLookupFunction(lookup: VariableLookup): (name: string) => string | undefined {
  if (typeof lookup === 'function') return lookup;
  if (lookup instanceof Map) return (name) => lookup.get(name);
  const record = lookup as Readonly<Record<string, string>>;
  return (name) => (Object.prototype.hasOwnProperty.call(record, name) ? record[name] : undefined);
}

/**
 * Expands variables in `word` and splits it into words, reporting which variables were used.
 * Throws {@link DockerfileError} (at `opts.position`) for syntax errors and `${x:?message}`.
 */
export function expand(word: string, lookup: VariableLookup, opts: ExpandOptions = {}): Expansion {
  const lexer = new Lexer(word, toLookupFunction(lookup), opts);
  try {
    const { value, words } = lexer.run(EOF, opts.rawEscapes ?? false);
    return { value, words, matched: lexer.matched, unmatched: lexer.unmatched };
  } catch (e) {
    if (e instanceof ExpansionFailure) {
      const pos = opts.position ?? { line: 1, column: 1 };
      throw new DockerfileError([errorAt(pos, `failed to expand ${JSON.stringify(word)}: ${e.message}`)]);
    }
    throw e;
  }
}

/** Expands variables in one word without splitting it (BuildKit's ProcessWord). */
export function expandWord(word: string, lookup: VariableLookup, opts: ExpandOptions = {}): string {
  return expand(word, lookup, opts).value;
}

/** Expands variables and splits the result into words on unquoted white space (BuildKit's ProcessWords). */
export function expandWords(word: string, lookup: VariableLookup, opts: ExpandOptions = {}): string[] {
  return expand(word, lookup, opts).words;
}

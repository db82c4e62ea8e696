// Tokenisers the Dockerfile parser uses before any variable is expanded: BuildKit's flag
// extraction, its quote-aware word splitting for ENV/LABEL/ARG, and plain white-space splitting.

import { isSpaceCodePoint } from './shell.js';

/** A flag word found at the start of an instruction's arguments, with its offset in the line. */
export interface RawFlag {
  text: string;
  offset: number;
}

function isSpace(ch: string): boolean {
  return isSpaceCodePoint(ch.codePointAt(0) as number);
}

/** The ASCII white space BuildKit splits instructions on (`[\t\v\f\r ]+`). */
export function isAsciiBlank(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\v' || ch === '\f' || ch === '\r';
}

/** Splits on runs of `[\t\v\f\r ]`, keeping empty edges like Go's regexp Split (input is trimmed first). */
export function splitBlank(s: string): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  while (i < s.length) {
    if (isAsciiBlank(s[i])) {
      out.push(s.slice(start, i));
      while (i < s.length && isAsciiBlank(s[i])) i++;
      start = i;
    } else i++;
  }
  out.push(s.slice(start));
  return out;
}

/** Go's strings.TrimSpace (Unicode white space), with the offset of what remains. */
export function trimSpace(s: string): { text: string; start: number } {
  let a = 0;
  let b = s.length;
  while (a < b && isSpace(s[a])) a++;
  while (b > a && isSpace(s[b - 1])) b--;
  return { text: s.slice(a, b), start: a };
}

/**
 * Extracts leading `--flag[=value]` words from `line` (BuildKit's extractBuilderFlags): quotes are
 * removed, the escape token escapes one character, a lone `--` ends the flags. Returns the rest of
 * the line and the flags with their offsets relative to `line`.
 */
export function extractFlags(line: string, escape: string): { rest: string; restOffset: number; flags: RawFlag[] } {
  const flags: RawFlag[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let wordStart = 0;
  let quote = '';
  let blankOk = false;
  for (let pos = 0; pos <= line.length; pos++) {
    const ch = pos < line.length ? line[pos] : '';
    if (phase === 'spaces') {
      if (pos === line.length) break;
      if (isSpace(ch)) continue;
      if (ch !== '-' || pos + 1 === line.length || line[pos + 1] !== '-') {
        return { rest: line.slice(pos), restOffset: pos, flags };
      }
      phase = 'word';
      wordStart = pos;
    }
    if (pos === line.length) {
      if (word !== '--' && (blankOk || word.length > 0)) flags.push({ text: word, offset: wordStart });
      break;
    }
    if (phase === 'word') {
      if (isSpace(ch)) {
        phase = 'spaces';
        if (word === '--') return { rest: line.slice(pos), restOffset: pos, flags };
        if (blankOk || word.length > 0) flags.push({ text: word, offset: wordStart });
        word = '';
        blankOk = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOk = true;
        phase = 'quote';
        continue;
      }
      if (ch === escape) {
        if (pos + 1 === line.length) continue;
        pos++;
        word += line[pos];
        continue;
      }
      word += ch;
      continue;
    }
    // phase === 'quote'
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === escape) {
      if (pos + 1 === line.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += line[pos];
      continue;
    }
    word += ch;
  }
  return { rest: '', restOffset: line.length, flags };
}

/**
 * Splits on white space but keeps quoted runs (and the quotes and escapes themselves) together,
 * as BuildKit's parseWords does for ENV, LABEL and ARG.
 */
export function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOk = false;
  const chars = Array.from(rest);
  for (let pos = 0; pos <= chars.length; pos++) {
    let ch = pos < chars.length ? chars[pos] : '';
    if (phase === 'spaces') {
      if (pos === chars.length) break;
      if (isSpace(ch)) continue;
      phase = 'word';
    }
    if (pos === chars.length) {
      if (blankOk || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (isSpace(ch)) {
        phase = 'spaces';
        if (blankOk || word.length > 0) words.push(word);
        word = '';
        blankOk = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOk = true;
        phase = 'quote';
      }
      if (ch === escape) {
        if (pos + 1 === chars.length) continue;
        // Unquoted escape: keep it and the character after it, even a quote.
        word += ch;
        pos++;
        ch = chars[pos];
      }
      word += ch;
      continue;
    }
    if (ch === quote) phase = 'word';
    if (ch === escape && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos];
    }
    word += ch;
  }
  return words;
}

// Shell patterns of ${var#p}, ${var%p} and ${var/p/r}: `*` any run of characters, `?` one
// character, `\*` `\?` `\\` literal. BuildKit turns them into Go regular expressions where `.` does
// not match a newline; here they run on a small table instead of a backtracking regex, so a
// hostile pattern costs O(pattern × value) and can never hang a worker.

type Token = { kind: 'lit'; cp: number } | { kind: 'any' } | { kind: 'star' };

const NEWLINE = 10;

/** Thrown for a pattern BuildKit rejects (an unsupported escape). */
export class PatternError extends Error {}

function compile(pattern: number[]): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < pattern.length; i++) {
    const cp = pattern[i];
    if (cp === 0x2a /* * */) tokens.push({ kind: 'star' });
    else if (cp === 0x3f /* ? */) tokens.push({ kind: 'any' });
    else if (cp === 0x5c /* \ */) {
      const next = pattern[i + 1];
      // `\}` and `\/` escape the ${} syntax, not the pattern: drop the backslash.
      if (next === 0x7d || next === 0x2f) continue;
      if (next !== 0x2a && next !== 0x3f && next !== 0x5c) {
        const shown = next === undefined ? '' : String.fromCodePoint(next);
        throw new PatternError(`invalid escape '\\${shown}'`);
      }
      tokens.push({ kind: 'lit', cp: next });
      i++;
    } else tokens.push({ kind: 'lit', cp });
  }
  return tokens;
}

/**
 * For every start offset s in `value`, the end of the match a backtracking regex engine would pick
 * first when matching the pattern anchored at s (greedy or lazy stars), or -1.
 */
function firstMatchEnds(tokens: Token[], value: number[], greedy: boolean): Int32Array {
  const n = value.length;
  let next = new Int32Array(n + 1);
  for (let v = 0; v <= n; v++) next[v] = v;
  for (let p = tokens.length - 1; p >= 0; p--) {
    const tok = tokens[p];
    const cur = new Int32Array(n + 1);
    if (tok.kind === 'star') {
      // A star may take value[v..j) for v ≤ j ≤ the next newline; greedy tries the largest j first.
      let best = -1;
      for (let v = n; v >= 0; v--) {
        if (v < n && value[v] === NEWLINE) best = -1;
        if (next[v] >= 0 && (!greedy || best === -1)) best = v;
        cur[v] = best >= 0 ? next[best] : -1;
      }
    } else {
      for (let v = 0; v <= n; v++) {
        const ok = v < n && (tok.kind === 'any' ? value[v] !== NEWLINE : value[v] === tok.cp);
        cur[v] = ok ? next[v + 1] : -1;
      }
    }
    next = cur;
  }
  return next;
}

function codePoints(s: string): number[] {
  const out: number[] = [];
  for (const ch of s) out.push(ch.codePointAt(0) as number);
  return out;
}

function fromCodePoints(cps: number[]): string {
  let s = '';
  for (const cp of cps) s += String.fromCodePoint(cp);
  return s;
}

/** `${value#pattern}` (shortest) or `${value##pattern}` (greedy). */
export function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const v = codePoints(value);
  const ends = firstMatchEnds(compile(codePoints(pattern)), v, greedy);
  return ends[0] >= 0 ? fromCodePoints(v.slice(ends[0])) : value;
}

/** Reverses a pattern but keeps each `\x` escape pair in order, as BuildKit does. */
function reversePattern(pattern: number[]): number[] {
  const out = new Array<number>(pattern.length);
  const last = pattern.length - 1;
  for (let i = 0; i <= last; ) {
    const outIdx = last - i;
    if (pattern[i] === 0x5c && i !== last) {
      out[outIdx - 1] = pattern[i];
      out[outIdx] = pattern[i + 1];
      i += 2;
    } else {
      out[outIdx] = pattern[i];
      i++;
    }
  }
  return out;
}

/** `${value%pattern}` (shortest) or `${value%%pattern}` (greedy): match reversed from the end. */
export function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  const v = codePoints(value).reverse();
  const ends = firstMatchEnds(compile(reversePattern(codePoints(pattern))), v, greedy);
  return ends[0] >= 0 ? fromCodePoints(v.slice(ends[0]).reverse()) : value;
}

/** `${value/pattern/replacement}` and `${value//pattern/replacement}` (leftmost, greedy). */
export function replacePattern(pattern: string, value: string, replacement: string, all: boolean): string {
  const v = codePoints(value);
  const ends = firstMatchEnds(compile(codePoints(pattern)), v, true);
  let out = '';
  let copied = 0;
  let pos = 0;
  let lastEnd = -1;
  while (pos <= v.length) {
    let s = pos;
    while (s <= v.length && ends[s] < 0) s++;
    if (s > v.length) break;
    const e = ends[s];
    if (e === s && s === lastEnd) {
      // Go skips an empty match right after the previous match.
      pos = s + 1;
      continue;
    }
    out += fromCodePoints(v.slice(copied, s)) + replacement;
    copied = e;
    lastEnd = e;
    if (!all) break;
    pos = e === s ? s + 1 : e;
  }
  return out + fromCodePoints(v.slice(copied));
}

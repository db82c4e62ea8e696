/**
 * `.dockerignore` and path patterns as Docker reads them (moby/patternmatcher): Go filepath.Match
 * syntax per path component (`*`, `?`, `[a-z]`, `[^a]`, `\` escapes), `**` for any number of
 * directories, `!` exceptions where the last matching pattern wins, and a pattern that matches a
 * directory matching everything below it.
 */
export interface IgnorePattern {
  source: string;
  exclusion: boolean;
  regex: RegExp;
}

export class PatternSyntaxError extends Error {
  override readonly name = 'PatternSyntaxError';
}

/** Cleans a slash path like Go's path.Clean, relative to the context root (no leading `/`, no `..` above the root). */
export function cleanRelative(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

function escapeRegex(ch: string): string {
  return /[.+^${}()|[\]\\*?]/.test(ch) ? `\\${ch}` : ch;
}

/** Compiles one pattern to an anchored regular expression over slash paths. */
export function compilePattern(pattern: string): RegExp {
  let re = '^';
  const chars = [...pattern];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === '*') {
      if (chars[i + 1] === '*') {
        i++;
        // `**/` matches zero or more whole directories; a trailing `**` matches everything.
        if (chars[i + 1] === '/') {
          i++;
          re += '(?:.*/)?';
        } else re += '.*';
      } else re += '[^/]*';
    } else if (ch === '?') re += '[^/]';
    else if (ch === '[') {
      let j = i + 1;
      let cls = '[';
      if (chars[j] === '^' || chars[j] === '!') {
        cls += '^';
        j++;
      }
      let closed = false;
      for (; j < chars.length; j++) {
        const c = chars[j];
        if (c === ']' && j > i + 1) {
          closed = true;
          break;
        }
        if (c === '\\') {
          j++;
          if (j >= chars.length) break;
          cls += escapeRegex(chars[j]);
        } else if (c === '/') throw new PatternSyntaxError(`pattern "${pattern}" has a "/" inside a character class`);
        else cls += c === '-' ? '-' : escapeRegex(c);
      }
      if (!closed) throw new PatternSyntaxError(`pattern "${pattern}" has an unterminated character class`);
      re += `${cls}]`;
      i = j;
    } else if (ch === '\\') {
      i++;
      if (i >= chars.length) throw new PatternSyntaxError(`pattern "${pattern}" ends with a lone backslash`);
      re += escapeRegex(chars[i]);
    } else re += escapeRegex(ch);
  }
  return new RegExp(`${re}$`, 's');
}

/** Parses a .dockerignore file's text. */
export function parseDockerignore(text: string): IgnorePattern[] {
  const patterns: IgnorePattern[] = [];
  for (const rawLine of text.split(/\r?\n/)) {
    let line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    let exclusion = false;
    if (line.startsWith('!')) {
      exclusion = true;
      line = line.slice(1).trim();
    }
    const cleaned = cleanRelative(line);
    if (cleaned === '') continue;
    patterns.push({ source: rawLine.trim(), exclusion, regex: compilePattern(cleaned) });
  }
  return patterns;
}

/** Decides whether a context path is excluded; the last pattern that matches the path or a parent wins. */
export class IgnoreMatcher {
  constructor(private readonly patterns: IgnorePattern[]) {}

  static fromText(text: string | null): IgnoreMatcher {
    return new IgnoreMatcher(text ? parseDockerignore(text) : []);
  }

  /** Patterns given one by one (COPY --exclude), in .dockerignore syntax. */
  static fromPatterns(patterns: string[]): IgnoreMatcher {
    return new IgnoreMatcher(patterns.flatMap((p) => parseDockerignore(p)));
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /** The patterns as written, in order: equal texts match alike (a memo key). */
  get text(): string {
    return this.patterns.map((p) => `${p.exclusion ? '!' : ''}${p.source}`).join('\n');
  }

  ignores(relPath: string): boolean {
    if (this.patterns.length === 0) return false;
    const parts = relPath.split('/');
    let excluded = false;
    for (const p of this.patterns) {
      let matched = p.regex.test(relPath);
      for (let n = 1; !matched && n < parts.length; n++) matched = p.regex.test(parts.slice(0, n).join('/'));
      if (matched) excluded = !p.exclusion;
    }
    return excluded;
  }

  /**
   * Whether a directory could hold an included path even though it is itself excluded
   * (an exception pattern reaches below it), so a walk must still descend into it.
   */
  mayIncludeBelow(dirRel: string): boolean {
    return this.patterns.some((p) => p.exclusion && (p.source.replace(/^!\s*/, '').replace(/^\/+/, '').startsWith(`${dirRel}/`) || p.source.includes('**')));
  }
}

/** Whether one path component matches one pattern component (Go filepath.Match). */
export function matchComponent(pattern: string, name: string): boolean {
  return compilePattern(pattern).test(name) && !name.includes('/');
}

export function hasGlob(p: string): boolean {
  return /[*?[\\]/.test(p);
}

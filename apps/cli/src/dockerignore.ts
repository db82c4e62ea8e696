/**
 * `.dockerignore` as the worker reads it (libs/build-engine/src/ignore.ts, moby/patternmatcher
 * semantics), for leaving ignored files out of a context manifest on this machine, as BuildKit's
 * client does. The CLI talks to the api over HTTP only and imports no lib, so the matcher is
 * repeated here; ignore.parity.spec.ts holds the two to the same answers. The worker applies the
 * file again, so a path sent here that it ignores is still invisible to the build.
 */
interface Pattern {
  exclusion: boolean;
  regex: RegExp;
}

function cleanRelative(p: string): string {
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

function compilePattern(pattern: string): RegExp {
  let re = '^';
  const chars = [...pattern];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i];
    if (ch === '*') {
      if (chars[i + 1] === '*') {
        i++;
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
        } else if (c === '/') throw new SyntaxError(`pattern "${pattern}" has a "/" inside a character class`);
        else cls += c === '-' ? '-' : escapeRegex(c);
      }
      if (!closed) throw new SyntaxError(`pattern "${pattern}" has an unterminated character class`);
      re += `${cls}]`;
      i = j;
    } else if (ch === '\\') {
      i++;
      if (i >= chars.length) throw new SyntaxError(`pattern "${pattern}" ends with a lone backslash`);
      re += escapeRegex(chars[i]);
    } else re += escapeRegex(ch);
  }
  return new RegExp(`${re}$`, 's');
}

export class DockerIgnore {
  private constructor(private readonly patterns: Pattern[]) {}

  /** The matcher for a .dockerignore text; one that does not parse ignores nothing here (the worker reports it). */
  static parse(text: string | null): DockerIgnore {
    const patterns: Pattern[] = [];
    try {
      for (const rawLine of (text ?? '').split(/\r?\n/)) {
        let line = rawLine.trim();
        if (line === '' || line.startsWith('#')) continue;
        let exclusion = false;
        if (line.startsWith('!')) {
          exclusion = true;
          line = line.slice(1).trim();
        }
        const cleaned = cleanRelative(line);
        if (cleaned === '') continue;
        patterns.push({ exclusion, regex: compilePattern(cleaned) });
      }
    } catch {
      return new DockerIgnore([]);
    }
    return new DockerIgnore(patterns);
  }

  /** Whether an exception (`!pattern`) exists: then an ignored directory is still walked for what it lets back in. */
  get hasExceptions(): boolean {
    return this.patterns.some((p) => p.exclusion);
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
}

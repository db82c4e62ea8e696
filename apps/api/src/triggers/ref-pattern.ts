// A rule's `ref` is a regular expression a tenant writes and every push is matched against. A
// backtracking engine (JavaScript's RegExp) can take exponential time on a hostile pattern such as
// `(a+)+$`, which would hang the api answering the hook. So, as libs/dockerfile/src/pattern.ts does
// for shell patterns, the pattern is compiled for a Pike VM (Thompson's construction with capture
// slots): every input character advances every live thread once, so a match costs
// O(program × ref) whatever the pattern. Backreferences and lookarounds, which need backtracking,
// are refused. Lengths are bounded too.

export const MAX_PATTERN_LENGTH = 256;
export const MAX_REF_LENGTH = 1024;
/** Instructions after counted repetitions are expanded (`a{1000}` is 1000 copies). */
const MAX_PROGRAM = 4096;

export class RefPatternError extends Error {
  override readonly name = 'RefPatternError';
}

type CharTest = (c: number) => boolean;
type Node =
  | { t: 'char'; test: CharTest }
  | { t: 'seq'; items: Node[] }
  | { t: 'alt'; options: Node[] }
  | { t: 'group'; index: number | null; body: Node }
  | { t: 'repeat'; body: Node; min: number; max: number; lazy: boolean }
  | { t: 'bol' }
  | { t: 'eol' };

type Inst =
  | { op: 'char'; test: CharTest }
  | { op: 'split'; x: number; y: number }
  | { op: 'jmp'; x: number }
  | { op: 'save'; slot: number }
  | { op: 'bol' }
  | { op: 'eol' }
  | { op: 'match' };

const isDigit: CharTest = (c) => c >= 48 && c <= 57;
const isWord: CharTest = (c) => isDigit(c) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
const isSpace: CharTest = (c) => c === 32 || (c >= 9 && c <= 13);

class Parser {
  private i = 0;
  groups = 0;
  constructor(private readonly src: string) {}

  fail(why: string): never {
    throw new RefPatternError(`ref pattern "${this.src}": ${why} at character ${this.i + 1}`);
  }

  parse(): Node {
    const n = this.alternation();
    if (this.i < this.src.length) this.fail(`unmatched ")"`);
    return n;
  }

  private alternation(): Node {
    const options = [this.sequence()];
    while (this.src[this.i] === '|') {
      this.i++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0] : { t: 'alt', options };
  }

  private sequence(): Node {
    const items: Node[] = [];
    while (this.i < this.src.length && this.src[this.i] !== '|' && this.src[this.i] !== ')') items.push(this.quantified());
    return { t: 'seq', items };
  }

  private quantified(): Node {
    const atom = this.atom();
    const ch = this.src[this.i];
    let min: number;
    let max: number;
    if (ch === '*') [min, max] = [0, Infinity];
    else if (ch === '+') [min, max] = [1, Infinity];
    else if (ch === '?') [min, max] = [0, 1];
    else if (ch === '{' && /^\{\d+(,\d*)?\}/.test(this.src.slice(this.i))) {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.i))!;
      min = Number(m[1]);
      max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
      if (min > 100 || (max !== Infinity && max > 100)) this.fail('a counted repetition above 100');
      if (max < min) this.fail('a repetition {n,m} with m below n');
      this.i += m[0].length - 1;
    } else return atom;
    if (atom.t === 'bol' || atom.t === 'eol') this.fail('a quantifier on an anchor');
    this.i++;
    const lazy = this.src[this.i] === '?';
    if (lazy) this.i++;
    if ('*+?{'.includes(this.src[this.i] ?? '') && this.src[this.i] !== undefined && this.src[this.i] !== '{') this.fail('a quantifier after a quantifier');
    return { t: 'repeat', body: atom, min, max, lazy };
  }

  private atom(): Node {
    const ch = this.src[this.i];
    if (ch === '(') {
      this.i++;
      let index: number | null = null;
      if (this.src.startsWith('?:', this.i)) this.i += 2;
      else if (this.src[this.i] === '?') this.fail('lookarounds and named groups are not supported; use ( ) or (?: )');
      else index = ++this.groups;
      const body = this.alternation();
      if (this.src[this.i] !== ')') this.fail('a "(" without its ")"');
      this.i++;
      return { t: 'group', index, body };
    }
    if (ch === '*' || ch === '+' || ch === '?') this.fail(`"${ch}" with nothing to repeat`);
    this.i++;
    if (ch === '^') return { t: 'bol' };
    if (ch === '$') return { t: 'eol' };
    if (ch === '.') return { t: 'char', test: () => true };
    if (ch === '[') return { t: 'char', test: this.charClass() };
    if (ch === '\\') return { t: 'char', test: this.escape(false) };
    const c = ch.codePointAt(0)!;
    return { t: 'char', test: (x) => x === c };
  }

  private escape(inClass: boolean): CharTest {
    const e = this.src[this.i++];
    if (e === undefined) this.fail('a "\\" at the end');
    if (e === 'd') return isDigit;
    if (e === 'D') return (c) => !isDigit(c);
    if (e === 'w') return isWord;
    if (e === 'W') return (c) => !isWord(c);
    if (e === 's') return isSpace;
    if (e === 'S') return (c) => !isSpace(c);
    if (/[0-9]/.test(e) && !inClass) this.fail('backreferences are not supported');
    if (/[A-Za-z]/.test(e)) this.fail(`the escape "\\${e}" is not supported`);
    const c = e.codePointAt(0)!;
    return (x) => x === c;
  }

  private charClass(): CharTest {
    const negate = this.src[this.i] === '^';
    if (negate) this.i++;
    const parts: CharTest[] = [];
    let first = true;
    for (;;) {
      const ch = this.src[this.i];
      if (ch === undefined) this.fail('a "[" without its "]"');
      if (ch === ']' && !first) {
        this.i++;
        break;
      }
      first = false;
      let lo: number | null;
      this.i++;
      if (ch === '\\') {
        const before = this.i;
        const test = this.escape(true);
        const e = this.src[before];
        if (/[dDwWsS]/.test(e)) {
          parts.push(test);
          continue;
        }
        lo = e.codePointAt(0)!;
      } else lo = ch.codePointAt(0)!;
      if (this.src[this.i] === '-' && this.src[this.i + 1] !== ']' && this.src[this.i + 1] !== undefined) {
        this.i++;
        let hiCh = this.src[this.i++];
        if (hiCh === '\\') hiCh = this.src[this.i++] ?? this.fail('a "\\" at the end');
        const hi = hiCh.codePointAt(0)!;
        if (hi < lo) this.fail('a character range out of order');
        const [a, b] = [lo, hi];
        parts.push((c) => c >= a && c <= b);
      } else {
        const a = lo;
        parts.push((c) => c === a);
      }
    }
    return negate ? (c) => !parts.some((p) => p(c)) : (c) => parts.some((p) => p(c));
  }
}

class Compiler {
  readonly prog: Inst[] = [];

  emit(inst: Inst): number {
    if (this.prog.length >= MAX_PROGRAM) throw new RefPatternError(`ref pattern is too large once its repetitions are expanded (over ${MAX_PROGRAM} steps)`);
    this.prog.push(inst);
    return this.prog.length - 1;
  }

  node(n: Node): void {
    switch (n.t) {
      case 'char':
        this.emit({ op: 'char', test: n.test });
        return;
      case 'bol':
        this.emit({ op: 'bol' });
        return;
      case 'eol':
        this.emit({ op: 'eol' });
        return;
      case 'seq':
        for (const item of n.items) this.node(item);
        return;
      case 'group':
        if (n.index !== null) this.emit({ op: 'save', slot: 2 * n.index });
        this.node(n.body);
        if (n.index !== null) this.emit({ op: 'save', slot: 2 * n.index + 1 });
        return;
      case 'alt': {
        const jumps: number[] = [];
        for (let k = 0; k < n.options.length; k++) {
          if (k < n.options.length - 1) {
            const split = this.emit({ op: 'split', x: 0, y: 0 });
            (this.prog[split] as { x: number }).x = split + 1;
            this.node(n.options[k]);
            jumps.push(this.emit({ op: 'jmp', x: 0 }));
            (this.prog[split] as { y: number }).y = this.prog.length;
          } else this.node(n.options[k]);
        }
        for (const j of jumps) (this.prog[j] as { x: number }).x = this.prog.length;
        return;
      }
      case 'repeat': {
        for (let k = 0; k < n.min; k++) this.node(n.body);
        if (n.max === Infinity) {
          const split = this.emit({ op: 'split', x: 0, y: 0 });
          this.node(n.body);
          this.emit({ op: 'jmp', x: split });
          this.setSplit(split, split + 1, this.prog.length, n.lazy);
        } else {
          const ends: number[] = [];
          for (let k = n.min; k < n.max; k++) {
            const split = this.emit({ op: 'split', x: 0, y: 0 });
            ends.push(split);
            this.node(n.body);
          }
          for (const s of ends) this.setSplit(s, s + 1, this.prog.length, n.lazy);
        }
        return;
      }
    }
  }

  private setSplit(at: number, body: number, skip: number, lazy: boolean): void {
    this.prog[at] = lazy ? { op: 'split', x: skip, y: body } : { op: 'split', x: body, y: skip };
  }
}

/** A compiled rule ref pattern; `match` gives the capture groups of a whole-ref match, or null. */
export class RefPattern {
  private constructor(
    readonly source: string,
    private readonly prog: Inst[],
    private readonly groups: number,
  ) {}

  static compile(source: string): RefPattern {
    if (source.length === 0) throw new RefPatternError('ref pattern is empty');
    if (source.length > MAX_PATTERN_LENGTH) throw new RefPatternError(`ref pattern is ${source.length} characters long, over the limit of ${MAX_PATTERN_LENGTH}`);
    const parser = new Parser(source);
    const ast = parser.parse();
    if (parser.groups > 9) throw new RefPatternError(`ref pattern "${source}" has ${parser.groups} capture groups; templates reach {1} to {9}, so at most 9`);
    const c = new Compiler();
    c.emit({ op: 'save', slot: 0 });
    c.node(ast);
    c.emit({ op: 'save', slot: 1 });
    c.emit({ op: 'match' });
    return new RefPattern(source, c.prog, parser.groups);
  }

  /** Groups 0..9 of a match of the whole `ref` (missing groups are ''), or null when it does not match. */
  match(ref: string): string[] | null {
    if (ref.length > MAX_REF_LENGTH) return null;
    const input = [...ref].map((ch) => ch.codePointAt(0)!);
    const slots = 2 * (this.groups + 1);
    let current: Array<{ pc: number; caps: Int32Array }> = [];
    const add = (list: Array<{ pc: number; caps: Int32Array }>, seen: Uint8Array, pc: number, caps: Int32Array, sp: number) => {
      const stack: Array<{ pc: number; caps: Int32Array }> = [{ pc, caps }];
      while (stack.length > 0) {
        const th = stack.pop()!;
        if (seen[th.pc]) continue;
        seen[th.pc] = 1;
        const inst = this.prog[th.pc];
        if (inst.op === 'jmp') stack.push({ pc: inst.x, caps: th.caps });
        else if (inst.op === 'split') {
          // Pushed in reverse so the preferred branch is explored (and listed) first.
          stack.push({ pc: inst.y, caps: th.caps }, { pc: inst.x, caps: th.caps });
        } else if (inst.op === 'save') {
          const caps2 = th.caps.slice();
          caps2[inst.slot] = sp;
          stack.push({ pc: th.pc + 1, caps: caps2 });
        } else if (inst.op === 'bol') {
          if (sp === 0) stack.push({ pc: th.pc + 1, caps: th.caps });
        } else if (inst.op === 'eol') {
          if (sp === input.length) stack.push({ pc: th.pc + 1, caps: th.caps });
        } else list.push(th);
      }
    };
    add(current, new Uint8Array(this.prog.length), 0, new Int32Array(slots).fill(-1), 0);
    for (let sp = 0; sp <= input.length; sp++) {
      const next: Array<{ pc: number; caps: Int32Array }> = [];
      const seen = new Uint8Array(this.prog.length);
      for (const th of current) {
        const inst = this.prog[th.pc];
        if (inst.op === 'match') {
          // The whole ref must match; the first thread in priority order to get there wins.
          if (sp === input.length) return this.groupsOf(th.caps, input);
          continue;
        }
        if (inst.op === 'char' && sp < input.length && inst.test(input[sp])) add(next, seen, th.pc + 1, th.caps, sp + 1);
      }
      current = next;
    }
    return null;
  }

  private groupsOf(caps: Int32Array, input: number[]): string[] {
    const out: string[] = [];
    for (let g = 0; g <= 9; g++) {
      const [a, b] = [caps[2 * g], caps[2 * g + 1]];
      out.push(g <= this.groups && a >= 0 && b >= 0 ? String.fromCodePoint(...input.slice(a, b)) : '');
    }
    return out;
  }
}

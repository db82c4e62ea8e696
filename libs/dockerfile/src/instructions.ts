// Turns one logical Dockerfile line (continuations joined, heredoc bodies read) into a typed
// instruction, with BuildKit's argument rules and flag checks for each keyword.

import type {
  AddInstruction, ArgDeclaration, CommandLine, CopyInstruction, EscapeToken, Flag, FromInstruction,
  Healthcheck, Heredoc, Instruction, InstructionBase, KeyValue, Keyword, Mount, NetworkMode,
  SecurityMode, StageInstruction,
} from './ast.js';
import { KEYWORDS } from './ast.js';
import { InstructionError, type Diagnostic, type Position } from './diagnostics.js';
import { MountError, editDistance, parseMount } from './mounts.js';
import { expand } from './shell.js';
import { parseGoDuration } from './values.js';
import { extractFlags, parseWords, splitBlank, trimSpace, type RawFlag } from './words.js';

/** A heredoc as read from the file, before chomping. */
export interface RawHeredoc {
  name: string;
  fd: number | null;
  expand: boolean;
  chomp: boolean;
  rawContent: string;
  line: number;
}

/** The parts of an instruction line, with offsets into the logical text. */
export interface SplitLine {
  keyword: string;
  keywordOffset: number;
  flags: RawFlag[];
  args: string;
  argsOffset: number;
}

/** BuildKit's splitCommand: keyword, leading flags, and the trimmed rest. */
export function splitInstruction(text: string, escape: string, base = 0): SplitLine {
  const trimmed = trimSpace(text);
  let i = 0;
  const t = trimmed.text;
  while (i < t.length && !/[\t\v\f\r ]/.test(t[i])) i++;
  const keyword = t.slice(0, i);
  const keywordOffset = base + trimmed.start;
  if (i === t.length) return { keyword, keywordOffset, flags: [], args: '', argsOffset: keywordOffset + i };
  while (i < t.length && /[\t\v\f\r ]/.test(t[i])) i++;
  const restStart = trimmed.start + i;
  const ex = extractFlags(t.slice(i), escape);
  const flags = ex.flags.map((f) => ({ text: f.text, offset: base + restStart + f.offset }));
  const args = trimSpace(ex.rest);
  return { keyword, keywordOffset, flags, args: args.text, argsOffset: base + restStart + ex.restOffset + args.start };
}

/** Result of reading `[...]` arguments: the strings, `null` when not JSON, or an error. */
export function parseJsonArray(args: string): string[] | null | 'not-strings' {
  const s = args.replace(/^\s+/, '');
  if (!s.startsWith('[')) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch {
    return null;
  }
  if (!Array.isArray(parsed)) return null;
  return parsed.every((x) => typeof x === 'string') ? (parsed as string[]) : 'not-strings';
}

const NOT_STRINGS = 'the JSON array form must hold only strings';

/** Whether an instruction line may carry heredocs (RUN, COPY, ADD in shell form, also under ONBUILD). */
export function canContainHeredoc(split: SplitLine, escape: string): boolean {
  let s = split;
  if (s.keyword.toLowerCase() === 'onbuild') s = splitInstruction(s.args, escape);
  const k = s.keyword.toLowerCase();
  if (k !== 'run' && k !== 'copy' && k !== 'add') return false;
  return parseJsonArray(s.args) === null;
}

type FlagKind = 'string' | 'bool' | 'strings';
type FlagSpec = Record<string, FlagKind>;

const FLAG_SPECS: Record<string, FlagSpec> = {
  FROM: { platform: 'string' },
  RUN: { mount: 'strings', network: 'string', security: 'string' },
  ADD: { chown: 'string', chmod: 'string', link: 'bool', 'keep-git-dir': 'bool', checksum: 'string', unpack: 'bool', exclude: 'strings' },
  COPY: { chown: 'string', from: 'string', chmod: 'string', link: 'bool', exclude: 'strings', parents: 'bool' },
  HEALTHCHECK: { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' },
};

class FlagValues {
  readonly strings = new Map<string, string>();
  readonly lists = new Map<string, string[]>();
  readonly bools = new Map<string, boolean>();
  readonly positions = new Map<string, Position>();
  string(name: string): string | null {
    return this.strings.get(name) ?? null;
  }
  bool(name: string): boolean | null {
    return this.bools.get(name) ?? null;
  }
  list(name: string): string[] {
    return this.lists.get(name) ?? [];
  }
}

/** What parsing one line needs to know about its place in the file. */
export interface LineContext {
  text: string;
  escape: EscapeToken;
  line: number;
  endLine: number;
  posAt(offset: number): Position;
  heredocs: RawHeredoc[];
  /** Lint findings are added here. */
  warnings: Diagnostic[];
}

function toFlags(raw: RawFlag[], ctx: LineContext): Flag[] {
  return raw.map((f) => {
    const body = f.text.startsWith('--') ? f.text.slice(2) : f.text;
    const eq = body.indexOf('=');
    const pos = ctx.posAt(f.offset);
    return { name: eq < 0 ? body : body.slice(0, eq), value: eq < 0 ? null : body.slice(eq + 1), line: pos.line, column: pos.column };
  });
}

function parseFlags(keyword: Keyword, raw: RawFlag[], ctx: LineContext): FlagValues {
  const spec = FLAG_SPECS[keyword] ?? {};
  const out = new FlagValues();
  const used = new Set<string>();
  for (const f of raw) {
    const pos = ctx.posAt(f.offset);
    if (f.text === '--') break;
    const body = f.text.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? '' : body.slice(eq + 1);
    const hasValue = eq >= 0;
    const kind = spec[name];
    if (kind === undefined) {
      const names = Object.keys(spec);
      const hint = names.find((n) => editDistance(n, name) <= 2);
      const allowed = names.length === 0 ? `; ${keyword} takes no flags` : hint ? ` (did you mean --${hint}?)` : '';
      throw new InstructionError(`unknown flag --${name} for ${keyword}${allowed}`, pos);
    }
    if (used.has(name) && kind !== 'strings') throw new InstructionError(`the flag --${name} is given more than once`, pos);
    used.add(name);
    out.positions.set(name, pos);
    if (kind === 'bool') {
      if (hasValue && value === '') throw new InstructionError(`the flag --${name} is missing a value after "="`, pos);
      const v = value.toLowerCase();
      if (v === 'true' || v === '') out.bools.set(name, true);
      else if (v === 'false') out.bools.set(name, false);
      else throw new InstructionError(`the flag --${name} expects true or false, not "${value}"`, pos);
    } else {
      if (!hasValue) throw new InstructionError(`the flag --${name} needs a value (--${name}=...)`, pos);
      if (kind === 'string') out.strings.set(name, value);
      else out.lists.set(name, [...out.list(name), value]);
    }
  }
  return out;
}

function commandLine(args: string, keyword: string): CommandLine {
  const json = parseJsonArray(args);
  if (json === 'not-strings') throw new InstructionError(`${keyword}: ${NOT_STRINGS}`);
  if (json !== null) return { form: 'exec', args: json };
  return { form: 'shell', command: args };
}

const HEREDOC_WORD = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;

/** Recognises a heredoc word such as `<<EOF`, `<<-"EOF"` or `3<<EOF` (null when it is not one). */
export function parseHeredocWord(word: string, expandWords: (s: string, raw: boolean) => string[]): Omit<RawHeredoc, 'rawContent' | 'line'> | null {
  const m = HEREDOC_WORD.exec(word);
  if (!m) return null;
  const rest = m[3];
  if (rest.length === 0) return null;
  const words = expandWords(rest, false);
  if (words.length !== 1) return null;
  const raw = expandWords(rest, true);
  const quotes = (s: string): number => (s.match(/['"]/g) ?? []).length;
  return {
    name: words[0],
    fd: m[1] === '' ? null : Number(m[1]),
    chomp: m[2] === '-',
    expand: raw.length === 1 && quotes(words[0]) === quotes(raw[0]),
  };
}

/** Removes leading tabs from every line (the `<<-` form). */
export function chompHeredoc(content: string): string {
  return content.replace(/^\t+/gm, '');
}

function publicHeredoc(h: RawHeredoc): Heredoc {
  return { name: h.name, fd: h.fd, expand: h.expand, chomp: h.chomp, content: h.chomp ? chompHeredoc(h.rawContent) : h.rawContent, line: h.line };
}

const VALID_STAGE_NAME = /^[a-z][a-z0-9\-_.]*$/;

/** Parses one instruction line. Throws InstructionError (with a position when it can tell). */
export function parseInstructionLine(ctx: LineContext, split: SplitLine, nested = false): Instruction {
  const keyword = split.keyword.toUpperCase() as Keyword;
  const kwPos = ctx.posAt(split.keywordOffset);
  if (!(KEYWORDS as readonly string[]).includes(keyword)) {
    const hint = KEYWORDS.find((k) => editDistance(k, keyword) <= Math.max(1, Math.floor(k.length / 3)));
    throw new InstructionError(`unknown instruction "${split.keyword}"${hint ? ` (did you mean ${hint}?)` : ''}`, kwPos);
  }
  const base: InstructionBase = {
    keyword,
    keywordAsWritten: split.keyword,
    line: kwPos.line,
    endLine: ctx.endLine,
    column: kwPos.column,
    original: nested ? trimSpace(ctx.text.slice(split.keywordOffset)).text : ctx.text,
    flags: toFlags(split.flags, ctx),
  };
  const args = split.args;
  const needOne = (what: string): void => {
    if (args === '') throw new InstructionError(`${keyword} requires ${what}`, kwPos);
  };
  const warn = (rule: string, message: string, pos: Position = kwPos): void => {
    ctx.warnings.push({ line: pos.line, column: pos.column, message, severity: 'warning', rule });
  };

  switch (keyword) {
    case 'FROM': {
      const words = args === '' ? [] : splitBlank(args);
      let stageName: string | null = null;
      if (words.length === 3 && words[1].toLowerCase() === 'as') {
        stageName = words[2].toLowerCase();
        if (!VALID_STAGE_NAME.test(stageName)) {
          throw new InstructionError(`invalid stage name "${words[2]}": a name starts with a letter and holds only letters, digits, "-", "_" and "."`, kwPos);
        }
      } else if (words.length !== 1) {
        throw new InstructionError('FROM takes an image and optionally "AS <name>"', kwPos);
      }
      const flags = parseFlags(keyword, split.flags, ctx);
      if (words.length === 3) {
        if (words[2] !== words[2].toLowerCase()) warn('StageNameCasing', `Stage name '${words[2]}' should be lowercase`);
        const kwLower = split.keyword === split.keyword.toLowerCase();
        const kwUpper = split.keyword === split.keyword.toUpperCase();
        if ((kwLower && words[1] !== words[1].toLowerCase()) || (kwUpper && words[1] !== words[1].toUpperCase())) {
          warn('FromAsCasing', `'${words[1]}' and '${split.keyword}' keywords' casing do not match`);
        }
      }
      const from: FromInstruction = {
        ...base, keyword: 'FROM', image: words[0], platform: flags.string('platform'),
        stageName, stageNameAsWritten: words.length === 3 ? words[2] : null,
      };
      return from;
    }
    case 'RUN': {
      const flags = parseFlags(keyword, split.flags, ctx);
      const mounts: Mount[] = [];
      for (const raw of flags.list('mount')) {
        try {
          mounts.push(parseMount(raw));
        } catch (e) {
          if (e instanceof MountError) throw new InstructionError(e.message, flags.positions.get('mount'));
          throw e;
        }
      }
      const network = flags.string('network');
      if (network !== null && !['default', 'none', 'host'].includes(network)) {
        throw new InstructionError(`invalid network mode "${network}"; use default, none or host`, flags.positions.get('network'));
      }
      const security = flags.string('security');
      if (security !== null && !['sandbox', 'insecure'].includes(security)) {
        throw new InstructionError(`invalid security mode "${security}"; use sandbox or insecure`, flags.positions.get('security'));
      }
      return {
        ...base, keyword: 'RUN', cmd: commandLine(args, keyword), heredocs: ctx.heredocs.map(publicHeredoc), mounts,
        network: network as NetworkMode | null, security: security as SecurityMode | null,
      };
    }
    case 'CMD':
    case 'ENTRYPOINT': {
      parseFlags(keyword, split.flags, ctx);
      return { ...base, keyword, cmd: commandLine(args, keyword) };
    }
    case 'LABEL':
    case 'ENV': {
      parseFlags(keyword, split.flags, ctx);
      const pairs = parseKeyValues(args, keyword, ctx.escape, kwPos);
      if (pairs.some((p) => p.legacy)) {
        warn('LegacyKeyValueFormat', `"${keyword} key=value" should be used instead of legacy "${keyword} key value" format`);
      }
      if (keyword === 'ENV') for (const p of pairs) checkSecretName('ENV', p.key, warn);
      return keyword === 'ENV' ? { ...base, keyword, pairs } : { ...base, keyword, pairs };
    }
    case 'EXPOSE': {
      needOne('at least one port');
      parseFlags(keyword, split.flags, ctx);
      const ports = splitBlank(args);
      for (const p of ports) {
        if (p.includes('$')) continue;
        if (p.includes(':')) warn('ExposeInvalidFormat', `EXPOSE instruction should not define an IP address or host-port mapping, found '${p}'`);
        else if (/\/[a-z]*[A-Z]/.test(p)) warn('ExposeProtoCasing', `Defined protocol '${p}' in EXPOSE instruction should be lowercase`);
      }
      return { ...base, keyword, ports };
    }
    case 'ADD':
    case 'COPY':
      return parseCopyLike(keyword, base, split, ctx, kwPos);
    case 'ARG': {
      needOne('at least one argument');
      parseFlags(keyword, split.flags, ctx);
      const decls: ArgDeclaration[] = parseWords(args, ctx.escape).map((w) => {
        const eq = w.indexOf('=');
        if (eq === 0) throw new InstructionError('ARG names cannot be blank', kwPos);
        return eq < 0 ? { name: w, defaultValue: null } : { name: w.slice(0, eq), defaultValue: w.slice(eq + 1) };
      });
      if (decls.length === 0) throw new InstructionError('ARG requires at least one argument', kwPos);
      for (const d of decls) checkSecretName('ARG', d.name, warn);
      return { ...base, keyword, args: decls };
    }
    case 'USER':
      needOne('exactly one argument');
      parseFlags(keyword, split.flags, ctx);
      return { ...base, keyword, user: args };
    case 'WORKDIR':
      needOne('exactly one argument');
      parseFlags(keyword, split.flags, ctx);
      return { ...base, keyword, path: args };
    case 'STOPSIGNAL':
      // BuildKit never checks STOPSIGNAL's flags.
      needOne('exactly one argument');
      return { ...base, keyword, signal: args };
    case 'MAINTAINER':
      needOne('exactly one argument');
      parseFlags(keyword, split.flags, ctx);
      warn('MaintainerDeprecated', 'Maintainer instruction is deprecated in favor of using label');
      return { ...base, keyword, maintainer: args };
    case 'VOLUME': {
      const json = parseJsonArray(args);
      if (json === 'not-strings') throw new InstructionError(`VOLUME: ${NOT_STRINGS}`, kwPos);
      const paths = json ?? (args === '' ? [] : splitBlank(args));
      if (paths.length === 0) throw new InstructionError('VOLUME requires at least one argument', kwPos);
      parseFlags(keyword, split.flags, ctx);
      const trimmedPaths = paths.map((p) => trimSpace(p).text);
      if (trimmedPaths.some((p) => p === '')) throw new InstructionError('VOLUME paths cannot be empty strings', kwPos);
      return { ...base, keyword, paths: trimmedPaths, form: json ? 'json' : 'shell' };
    }
    case 'HEALTHCHECK':
      return { ...base, keyword, healthcheck: parseHealthcheck(args, split, ctx, kwPos) };
    case 'SHELL': {
      parseFlags(keyword, split.flags, ctx);
      const json = parseJsonArray(args);
      if (json === 'not-strings') throw new InstructionError(`SHELL: ${NOT_STRINGS}`, kwPos);
      if (json === null) {
        if (args === '') throw new InstructionError('SHELL requires at least one argument', kwPos);
        throw new InstructionError('SHELL requires its arguments in JSON form, such as SHELL ["/bin/sh", "-c"]', kwPos);
      }
      if (json.length === 0) throw new InstructionError('SHELL requires at least one argument', kwPos);
      return { ...base, keyword, shell: json };
    }
    case 'ONBUILD': {
      if (nested) throw new InstructionError('Chaining ONBUILD via "ONBUILD ONBUILD" is not allowed', kwPos);
      needOne('an instruction to run later');
      parseFlags(keyword, split.flags, ctx);
      const inner = splitInstruction(args, ctx.escape, split.argsOffset);
      const innerKw = inner.keyword.toUpperCase();
      if (innerKw === 'ONBUILD') throw new InstructionError('Chaining ONBUILD via "ONBUILD ONBUILD" is not allowed', kwPos);
      if (innerKw === 'MAINTAINER' || innerKw === 'FROM') throw new InstructionError(`${innerKw} is not allowed as an ONBUILD trigger`, kwPos);
      let trigger = ctx.text.replace(/^\s*ONBUILD\s*/i, '');
      for (const h of ctx.heredocs) trigger += `\n${h.rawContent}${h.name}`;
      let instruction: StageInstruction | null = null;
      const warnings: Diagnostic[] = [];
      try {
        instruction = parseInstructionLine({ ...ctx, warnings }, inner, true) as StageInstruction;
      } catch (e) {
        if (!(e instanceof InstructionError)) throw e;
        const pos = e.pos ?? kwPos;
        ctx.warnings.push({ line: pos.line, column: pos.column, message: `this ONBUILD trigger will fail when an image built from this one is used: ${e.message}`, severity: 'warning' });
      }
      return { ...base, keyword, trigger, instruction };
    }
  }
}

function parseKeyValues(args: string, keyword: 'ENV' | 'LABEL', escape: EscapeToken, pos: Position): KeyValue[] {
  const words = parseWords(args, escape);
  if (words.length === 0) throw new InstructionError(`${keyword} requires at least one argument`, pos);
  if (!words[0].includes('=')) {
    const parts = splitBlank(args);
    if (parts.length < 2) throw new InstructionError(`${keyword} needs a name and a value`, pos);
    const value = args.slice(parts[0].length).replace(/^[\t\v\f\r ]+/, '');
    return [{ key: parts[0], value, legacy: true }];
  }
  return words.map((w) => {
    const eq = w.indexOf('=');
    if (eq < 0) throw new InstructionError(`"${w}" has no "=": ${keyword} takes name=value pairs`, pos);
    if (eq === 0) throw new InstructionError(`${keyword} names cannot be blank`, pos);
    return { key: w.slice(0, eq), value: w.slice(eq + 1), legacy: false };
  });
}

const SECRET_WORD = /(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)/i;
const SECRET_ALLOW = /(?:_|^)(?:public|file|version)(?:_|$)/i;

function checkSecretName(instruction: string, name: string, warn: (rule: string, message: string) => void): void {
  if (SECRET_WORD.test(name) && !SECRET_ALLOW.test(name)) {
    warn('SecretsUsedInArgOrEnv', `Do not use ARG or ENV instructions for sensitive data (${instruction} ${JSON.stringify(name)})`);
  }
}

function parseCopyLike(keyword: 'ADD' | 'COPY', base: InstructionBase, split: SplitLine, ctx: LineContext, pos: Position): AddInstruction | CopyInstruction {
  const json = parseJsonArray(split.args);
  if (json === 'not-strings') throw new InstructionError(`${keyword}: ${NOT_STRINGS}`, pos);
  const words = json ?? (split.args === '' ? [] : splitBlank(split.args));
  if (words.length < 2) throw new InstructionError(`${keyword} needs at least one source and a destination`, pos);
  const flags = parseFlags(keyword, split.flags, ctx);
  const dest = words[words.length - 1];
  if (json === null && heredocWord(dest) !== null) throw new InstructionError(`${keyword} cannot use a heredoc as its destination`, pos);
  const sources: string[] = [];
  const heredocs: Heredoc[] = [];
  for (const w of words.slice(0, -1)) {
    const info = json === null ? heredocWord(w) : null;
    const h = info ? ctx.heredocs.find((x) => x.name === info.name) : undefined;
    if (info) heredocs.push(h ? publicHeredoc(h) : { name: info.name, fd: info.fd, expand: info.expand, chomp: info.chomp, content: '', line: base.line });
    else sources.push(w);
  }
  const common = {
    sources, heredocs, dest, form: json ? ('json' as const) : ('shell' as const),
    chown: flags.string('chown'), chmod: flags.string('chmod'), link: flags.bool('link') ?? false, excludes: flags.list('exclude'),
  };
  if (keyword === 'ADD') {
    return { ...base, keyword, ...common, keepGitDir: flags.bool('keep-git-dir'), checksum: flags.string('checksum'), unpack: flags.bool('unpack') };
  }
  return { ...base, keyword, ...common, from: flags.string('from'), parents: flags.bool('parents') ?? false };
}

/** BuildKit's ParseHeredoc for one word (`<<EOF`, `<<-"EOF"`, `3<<EOF`), or null. */
export function heredocWord(word: string): Omit<RawHeredoc, 'rawContent' | 'line'> | null {
  try {
    return parseHeredocWord(word, (s, raw) => expand(s, () => undefined, { rawQuotes: raw, skipUnset: true }).words);
  } catch {
    return null;
  }
}

function parseHealthcheck(args: string, split: SplitLine, ctx: LineContext, pos: Position): Healthcheck {
  if (args === '') throw new InstructionError('HEALTHCHECK requires at least one argument', pos);
  let sep = 0;
  while (sep < args.length && !/\s/.test(args[sep])) sep++;
  const typ = args.slice(0, sep).toUpperCase();
  const rest = args.slice(sep).replace(/^\s+/, '');
  if (typ === 'NONE') {
    if (rest !== '') throw new InstructionError('HEALTHCHECK NONE takes no arguments', pos);
    return { kind: 'none' };
  }
  const flags = parseFlags('HEALTHCHECK', split.flags, ctx);
  if (typ !== 'CMD') throw new InstructionError(`unknown HEALTHCHECK type "${args.slice(0, sep)}"; use CMD or NONE`, pos);
  if (rest === '') throw new InstructionError('HEALTHCHECK CMD needs a command', pos);
  const cmd = commandLine(rest, 'HEALTHCHECK');
  if (cmd.form === 'exec' && cmd.args.length === 0) throw new InstructionError('HEALTHCHECK CMD needs a command', pos);
  const duration = (name: string): number | null => {
    const v = flags.string(name);
    if (v === null || v === '') return null;
    const ns = parseGoDuration(v);
    const at = flags.positions.get(name) ?? pos;
    if (ns === null || ns < 0) throw new InstructionError(`invalid duration "${v}" for --${name} (use a value such as 30s or 1m30s)`, at);
    if (ns === 0) return null;
    if (ns < 1e6) throw new InstructionError(`--${name} cannot be less than 1ms`, at);
    return ns;
  };
  const interval = duration('interval');
  const timeout = duration('timeout');
  const startPeriod = duration('start-period');
  const startInterval = duration('start-interval');
  let retries: number | null = null;
  const r = flags.string('retries');
  if (r !== null && r !== '') {
    const at = flags.positions.get('retries') ?? pos;
    if (!/^[+-]?\d+$/.test(r) || Math.abs(Number(r)) > 2 ** 31 - 1) throw new InstructionError(`invalid value "${r}" for --retries (use a whole number)`, at);
    retries = Number(r);
    if (retries < 0) throw new InstructionError(`--retries cannot be negative (${retries})`, at);
  }
  return { kind: 'cmd', cmd, interval, timeout, startPeriod, startInterval, retries };
}

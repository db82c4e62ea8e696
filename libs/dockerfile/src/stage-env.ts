// StageEnv: the state the build engine walks through a stage with — ARG scope, ENV, working
// directory, user, shell — and each instruction with its expandable fields expanded, the way
// BuildKit's dispatcher does it.

import type {
  AddSource, EscapeToken, ExposeInstruction, Heredoc, KeyValue, Mount, StageInstruction,
} from './ast.js';
import { DockerfileError, errorAt, type Position } from './diagnostics.js';
import { parseGitSource } from './git-ref.js';
import { MountError, parseMount } from './mounts.js';
import type { BuildPlan, ResolvedArg } from './plan.js';
import { PROXY_ARG_NAMES } from './platform.js';
import { expand } from './shell.js';

/** One instruction evaluated in its stage. */
export interface EvaluatedStep<I extends StageInstruction = StageInstruction> {
  /** A copy of the instruction whose expandable fields are expanded (ONBUILD triggers stay as written). */
  instruction: I;
  /** The environment the step sees, `K=V` in order: image env, ARGs in scope, ENV (the later wins). */
  env: string[];
  /** Build args whose values reached this step, sorted: only these change its cache key. */
  usedBuildArgs: string[];
  /** RUN only: proxy variables from build args, given to the process but kept out of cache keys. */
  proxyEnv: Record<string, string>;
  /** The working directory after the step. */
  workdir: string;
}

export interface StageEnvOptions {
  /**
   * Env of the base image's config (`K=V`); empty for scratch. Given, a PATH is added when it has
   * none, as BuildKit does; left out (a check that has not fetched the base), the base env is unknown.
   */
  baseEnv?: readonly string[];
  /** WorkingDir of the base image's config. */
  baseWorkdir?: string;
  baseUser?: string;
  /** Shell of the base image's config; default `["/bin/sh", "-c"]`. */
  baseShell?: readonly string[];
  /** When the stage is `FROM <another stage>`: that stage's finished StageEnv (its state carries over as in BuildKit). */
  parent?: StageEnv;
}

interface EnvEntry {
  value: string;
  /** Build args the value derives from. */
  deps: ReadonlySet<string>;
}

const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** The PATH BuildKit puts in an image whose base sets none. */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Resolves a WORKDIR against the current one like BuildKit: absolute paths replace it, relative
 * ones join it, and the result is cleaned (`.` and `..` removed). An empty current dir is `/`.
 */
export function resolveWorkdir(current: string, path: string): string {
  const parent = current === '' ? '/' : current.startsWith('/') ? current : `/${current}`;
  if (path === '') return cleanPath(parent);
  return cleanPath(path.startsWith('/') ? path : `${parent}/${path}`);
}

/** Go's path.Clean for absolute paths. */
function cleanPath(p: string): string {
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return '/' + out.join('/');
}

/** What an ADD source names: a git repository (as BuildKit recognises one), a URL, or a path in the build context. */
export function classifyAddSource(src: string): AddSource {
  const git = parseGitSource(src);
  if (git) return git;
  if (/^https?:\/\//i.test(src)) return { kind: 'url', url: src };
  return { kind: 'local', path: src };
}

/** Docker-style exposed port keys (`80/tcp`) for expanded EXPOSE words; ranges are listed port by port. */
export function exposedPortKeys(ports: readonly string[]): string[] {
  const out: string[] = [];
  for (const word of ports) {
    const [spec, proto = 'tcp'] = word.split('/', 2);
    if (!['tcp', 'udp', 'sctp'].includes(proto.toLowerCase())) throw new Error(`invalid protocol "${proto}" in "${word}": use tcp, udp or sctp`);
    const hostless = spec.includes(':') ? spec.slice(spec.lastIndexOf(':') + 1) : spec;
    const m = /^(\d+)(?:-(\d+))?$/.exec(hostless);
    if (!m) throw new Error(`invalid port "${word}"`);
    const start = Number(m[1]);
    const end = m[2] === undefined ? start : Number(m[2]);
    if (start > 65535 || end > 65535 || end < start) throw new Error(`invalid port range "${word}"`);
    for (let p = start; p <= end; p++) out.push(`${p}/${proto.toLowerCase()}`);
  }
  return out;
}

/**
 * The evaluation state of one stage. Create it with the plan, the stage index and the base image's
 * config, then call {@link StageEnv.step} for each instruction of the stage in order.
 */
export class StageEnv {
  private readonly envs = new Map<string, EnvEntry>();
  private readonly image = new Map<string, string>();
  private readonly globals: Map<string, ResolvedArg>;
  private readonly escapeToken: EscapeToken;
  private readonly buildArgs: Readonly<Record<string, string>>;
  private dir: string;
  private currentUser: string;
  private currentShell: string[];

  constructor(plan: BuildPlan, opts: StageEnvOptions = {}) {
    this.escapeToken = plan.escapeToken;
    this.buildArgs = plan.buildArgs;
    this.globals = new Map(plan.globalArgs.map((a) => [a.name, a]));
    if (opts.parent) {
      for (const [k, v] of opts.parent.envs) this.envs.set(k, v);
      for (const [k, v] of opts.parent.image) this.image.set(k, v);
      this.dir = opts.parent.dir;
      this.currentUser = opts.parent.currentUser;
      this.currentShell = [...opts.parent.currentShell];
    } else {
      const baseEnv = opts.baseEnv === undefined ? [] : opts.baseEnv.some((kv) => kv.startsWith('PATH=')) ? opts.baseEnv : [...opts.baseEnv, `PATH=${DEFAULT_PATH}`];
      for (const kv of baseEnv) {
        const eq = kv.indexOf('=');
        const [k, v] = eq < 0 ? [kv, ''] : [kv.slice(0, eq), kv.slice(eq + 1)];
        this.envs.set(k, { value: v, deps: new Set() });
        this.image.set(k, v);
      }
      this.dir = resolveWorkdir('/', opts.baseWorkdir ?? '');
      this.currentUser = opts.baseUser ?? '';
      this.currentShell = [...(opts.baseShell && opts.baseShell.length > 0 ? opts.baseShell : DEFAULT_SHELL)];
    }
  }

  /** The environment RUN sees now (`K=V`). */
  get env(): string[] {
    return [...this.envs].map(([k, e]) => `${k}=${e.value}`);
  }
  /** The image config's Env now (ENV only, no ARGs). */
  get imageEnv(): string[] {
    return [...this.image].map(([k, v]) => `${k}=${v}`);
  }
  get workdir(): string {
    return this.dir;
  }
  get user(): string {
    return this.currentUser;
  }
  get shell(): string[] {
    return [...this.currentShell];
  }
  /** A variable's current value, as expansion sees it. */
  lookup(name: string): string | undefined {
    return this.envs.get(name)?.value;
  }

  private expander(pos: Position, deps: Set<string>, opts: { split?: boolean; raw?: boolean } = {}) {
    return (word: string): string[] => {
      const r = expand(word, (n) => this.envs.get(n)?.value, {
        escapeToken: opts.raw ? '\\' : this.escapeToken, skipQuotes: opts.raw, position: pos,
      });
      for (const m of r.matched) for (const d of this.envs.get(m)?.deps ?? []) deps.add(d);
      return opts.split ? r.words : [r.value];
    };
  }

  /** Evaluates the next instruction of the stage: returns it expanded and advances the state. */
  step<I extends StageInstruction>(ins: I): EvaluatedStep<I> {
    const deps = new Set<string>();
    const one = this.expander(ins, deps);
    const word = (s: string): string => one(s)[0];
    const maybe = (s: string | null): string | null => (s === null ? null : word(s));
    const seen = [...this.envs];
    let out: StageInstruction = ins;
    let proxyEnv: Record<string, string> = {};
    switch (ins.keyword) {
      case 'ARG': {
        // The instruction carries its defaults expanded (BuildKit's history line shows them so),
        // each with the names declared before it; a build arg's value never shows there.
        const args = ins.args.map((d) => {
          let defaultValue = d.defaultValue;
          if (defaultValue !== null) {
            try {
              defaultValue = this.expander(ins, new Set())(defaultValue)[0];
            } catch {
              // An expansion error is declareArg's to report (or not, when a build arg replaces the default).
            }
          }
          this.declareArg(d.name, d.defaultValue, ins);
          return { ...d, defaultValue };
        });
        for (const d of ins.args) for (const b of this.envs.get(d.name)?.deps ?? []) deps.add(b);
        out = { ...ins, args };
        break;
      }
      case 'ENV': {
        // Every pair sees the environment from before the instruction.
        const pairs: KeyValue[] = ins.pairs.map((p) => {
          const pairDeps = new Set<string>();
          const e = this.expander(ins, pairDeps);
          const kv = { key: e(p.key)[0], value: e(p.value)[0], legacy: p.legacy };
          for (const d of pairDeps) deps.add(d);
          return { kv, pairDeps };
        }).map(({ kv, pairDeps }) => {
          this.envs.delete(kv.key);
          this.envs.set(kv.key, { value: kv.value, deps: pairDeps });
          // The image config keeps a replaced variable where it was, as BuildKit does.
          this.image.set(kv.key, kv.value);
          return kv;
        });
        out = { ...ins, pairs };
        break;
      }
      case 'LABEL':
        out = { ...ins, pairs: ins.pairs.map((p) => ({ key: word(p.key), value: word(p.value), legacy: p.legacy })) };
        break;
      case 'EXPOSE': {
        const split = this.expander(ins, deps, { split: true });
        const expanded: ExposeInstruction = { ...ins, ports: ins.ports.flatMap((p) => split(p)) };
        try {
          exposedPortKeys(expanded.ports);
        } catch (e) {
          throw new DockerfileError([errorAt(ins, `EXPOSE: ${(e as Error).message}`)]);
        }
        out = expanded;
        break;
      }
      case 'USER': {
        const user = word(ins.user);
        out = { ...ins, user };
        this.currentUser = user;
        break;
      }
      case 'WORKDIR': {
        const path = word(ins.path);
        out = { ...ins, path };
        this.dir = resolveWorkdir(this.dir, path);
        break;
      }
      case 'VOLUME': {
        const paths = ins.paths.map(word);
        if (paths.some((p) => p.trim() === '')) throw new DockerfileError([errorAt(ins, 'VOLUME: a volume path is empty')]);
        out = { ...ins, paths };
        break;
      }
      case 'STOPSIGNAL':
        out = { ...ins, signal: word(ins.signal) };
        break;
      case 'SHELL':
        this.currentShell = [...ins.shell];
        break;
      case 'ADD':
      case 'COPY': {
        const raw = this.expander(ins, deps, { raw: true });
        const heredocs: Heredoc[] = ins.heredocs.map((h) => (h.expand ? { ...h, content: raw(h.content)[0] } : h));
        const common = { sources: ins.sources.map(word), dest: word(ins.dest), heredocs, chown: maybe(ins.chown), chmod: maybe(ins.chmod), excludes: ins.excludes.map(word) };
        out = ins.keyword === 'ADD' ? { ...ins, ...common, checksum: maybe(ins.checksum) } : { ...ins, ...common };
        break;
      }
      case 'RUN': {
        const mounts: Mount[] = ins.mounts.map((m) => {
          try {
            return parseMount(m.raw, word);
          } catch (e) {
            if (e instanceof MountError) {
              const flag = ins.flags.find((f) => f.name === 'mount') ?? ins;
              throw new DockerfileError([errorAt(flag, e.message)]);
            }
            throw e;
          }
        });
        out = { ...ins, mounts };
        for (const [, e] of this.envs) for (const d of e.deps) deps.add(d);
        proxyEnv = this.proxyEnv();
        break;
      }
      default:
        break;
    }
    return {
      instruction: out as I,
      env: seen.map(([k, e]) => `${k}=${e.value}`),
      usedBuildArgs: [...deps].sort(),
      proxyEnv,
      workdir: this.dir,
    };
  }

  private proxyEnv(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of PROXY_ARG_NAMES) {
      if (Object.prototype.hasOwnProperty.call(this.buildArgs, name)) out[name] = this.buildArgs[name];
    }
    return out;
  }

  private declareArg(name: string, defaultValue: string | null, pos: Position): void {
    const has = Object.prototype.hasOwnProperty.call(this.buildArgs, name);
    let entry: EnvEntry | null = null;
    if (has) entry = { value: this.buildArgs[name], deps: new Set([name]) };
    else if (defaultValue !== null) {
      const deps = new Set<string>();
      entry = { value: this.expander(pos, deps)(defaultValue)[0], deps };
    } else {
      // `ARG NAME` with no default inherits the global ARG (or predefined platform ARG) of that name.
      const g = this.globals.get(name);
      if (g && g.value !== null) entry = { value: g.value, deps: new Set(g.buildArgs) };
    }
    if (entry) {
      this.envs.delete(name);
      this.envs.set(name, entry);
    }
  }
}

/** Convenience: a StageEnv for `plan.stages[index]` (alias of `new StageEnv(plan, opts)`). */
export function createStageEnv(plan: BuildPlan, opts: StageEnvOptions = {}): StageEnv {
  return new StageEnv(plan, opts);
}

// Instructions that change only the image config (ENV, LABEL, WORKDIR, USER, EXPOSE, ...): each
// applies its expanded form (from the frontend's StageEnv) to the stage's config and says what
// goes into its cache key.

import { type CommandLine, exposedPortKeys, type StageInstruction } from '@strata/dockerfile';
import type { ContainerConfig } from '@strata/oci';
import { executeWorkdir } from './file-layer.js';
import type { CachedStep } from './interfaces.js';
import type { StepContext } from './step-context.js';

/**
 * What a metadata step did: the definition its cache key hashes, and its history line as BuildKit
 * writes it (the instruction as written when unset; null: no history entry, as for ONBUILD).
 */
export interface MetadataStep {
  definition: unknown;
  createdBy?: string | null;
  /** WORKDIR: the layer that creates the directory, written on a cache miss. */
  layer?: () => Promise<CachedStep>;
}

/** Go's %q of a string list (`["/bin/sh" "-c" "echo hi"]`), as BuildKit prints CMD and ENTRYPOINT in the history. */
export function goQuotedList(list: readonly string[]): string {
  const quote = (s: string) => JSON.stringify(s).replace(/\\u00([0-9a-f]{2})/g, '\\x$1');
  return `[${list.map(quote).join(' ')}]`;
}

/** Go's Duration.String of nanoseconds: `0s`, `500ms`, `1.5s`, `5m0s`, `1h0m0s`. */
export function goDuration(ns: number): string {
  if (ns === 0) return '0s';
  const sign = ns < 0 ? '-' : '';
  let u = Math.abs(Math.trunc(ns));
  const frac = (v: number, unit: number): string => {
    const whole = Math.floor(v / unit);
    const rest = v - whole * unit;
    if (rest === 0) return String(whole);
    return `${whole}.${String(rest).padStart(String(unit).length - 1, '0').replace(/0+$/, '')}`;
  };
  if (u < 1e3) return `${sign}${u}ns`;
  if (u < 1e6) return `${sign}${frac(u, 1e3)}µs`;
  if (u < 1e9) return `${sign}${frac(u, 1e6)}ms`;
  const h = Math.floor(u / 3.6e12);
  u -= h * 3.6e12;
  const m = Math.floor(u / 6e10);
  u -= m * 6e10;
  return `${sign}${h > 0 ? `${h}h` : ''}${h > 0 || m > 0 ? `${m}m` : ''}${frac(u, 1e9)}s`;
}

/** Go's %q of an int: a quoted rune ('\x00', '\a', 'A'), as BuildKit prints Retries. */
function goQuotedRune(n: number): string {
  const named: Record<number, string> = { 7: '\\a', 8: '\\b', 9: '\\t', 10: '\\n', 11: '\\v', 12: '\\f', 13: '\\r', 39: "\\'", 92: '\\\\' };
  if (named[n] !== undefined) return `'${named[n]}'`;
  if (n < 0x20 || n === 0x7f) return `'\\x${n.toString(16).padStart(2, '0')}'`;
  if (n >= 0x80 && n < 0xa0) return `'\\u${n.toString(16).padStart(4, '0')}'`;
  return `'${String.fromCodePoint(n)}'`;
}

/**
 * A healthcheck as dockerd 20.10's BuildKit writes it in the history (Go's %q of its HealthConfig):
 * `&{["CMD-SHELL" "curl -f x"] "5m0s" "3s" "0s" '\x03'}`; a start interval (newer than 20.10) is
 * printed before the retries when set.
 */
export function goHealthConfig(h: NonNullable<ContainerConfig['Healthcheck']>): string {
  const d = (ns: number | undefined) => `"${goDuration(ns ?? 0)}"`;
  const fields = [goQuotedList(h.Test ?? []), d(h.Interval), d(h.Timeout), d(h.StartPeriod), ...(h.StartInterval ? [d(h.StartInterval)] : []), goQuotedRune(h.Retries ?? 0)];
  return `&{${fields.join(' ')}}`;
}

type Keyword = Exclude<StageInstruction['keyword'], 'COPY' | 'ADD' | 'RUN'>;
type Handler<K extends Keyword> = (ctx: StepContext<Extract<StageInstruction, { keyword: K }>>) => MetadataStep;

export function commandArgs(cmd: CommandLine, shell: string[]): string[] {
  return cmd.form === 'exec' ? cmd.args : [...shell, cmd.command];
}

const handlers: { [K in Keyword]: Handler<K> } = {
  ARG({ ins, stage }) {
    stage.declaredArgs.push(...ins.args.map((a) => a.name));
    // BuildKit's line: each name with its default as expanded (quotes removed), never a build arg's value.
    const createdBy = `ARG ${ins.args.map((a) => (a.defaultValue === null ? a.name : `${a.name}=${a.defaultValue}`)).join(' ')}`;
    return { definition: { args: ins.args.map((a) => [a.name, stage.vars.lookup(a.name) ?? null]) }, createdBy };
  },
  ENV({ ins, cfg, stage }) {
    cfg.Env = stage.vars.imageEnv;
    return { definition: { env: cfg.Env }, createdBy: `ENV ${ins.pairs.map((p) => `${p.key}=${p.value}`).join(' ')}` };
  },
  LABEL({ ins, cfg }) {
    const labels = { ...(cfg.Labels ?? {}) };
    for (const pair of ins.pairs) labels[pair.key] = pair.value;
    cfg.Labels = labels;
    return { definition: { labels }, createdBy: `LABEL ${ins.pairs.map((p) => `${p.key}=${p.value}`).join(' ')}` };
  },
  WORKDIR({ cfg, evaluated, build, stage, fail }) {
    const workdir = evaluated.workdir;
    cfg.WorkingDir = workdir;
    const createdBy = `WORKDIR ${workdir}`;
    // As BuildKit: the directory is made in the image, owned by the USER of the moment; `/` makes no layer.
    if (workdir === '/') return { definition: { workdir }, createdBy };
    const user = cfg.User ?? '';
    return { definition: { workdir, user }, createdBy, layer: () => executeWorkdir(build, stage, workdir, user, fail) };
  },
  USER({ ins, cfg }) {
    cfg.User = ins.user;
    return { definition: { user: cfg.User }, createdBy: `USER ${ins.user}` };
  },
  EXPOSE({ ins, cfg }) {
    const ports = { ...(cfg.ExposedPorts ?? {}) };
    const added = exposedPortKeys(ins.ports);
    for (const key of added) ports[key] = {};
    cfg.ExposedPorts = ports;
    // BuildKit prints this instruction's ports as a Go map (keys sorted).
    return { definition: { ports: Object.keys(ports).sort() }, createdBy: `EXPOSE map[${[...new Set(added)].sort().map((k) => `${k}:{}`).join(' ')}]` };
  },
  VOLUME({ ins, cfg }) {
    const vols = { ...(cfg.Volumes ?? {}) };
    for (const v of ins.paths) vols[v] = {};
    cfg.Volumes = vols;
    return { definition: { volumes: Object.keys(vols).sort() }, createdBy: `VOLUME [${ins.paths.join(' ')}]` };
  },
  STOPSIGNAL({ ins, cfg }) {
    cfg.StopSignal = ins.signal;
    return { definition: { signal: cfg.StopSignal }, createdBy: `STOPSIGNAL ${ins.signal}` };
  },
  CMD({ ins, cfg, stage }) {
    cfg.Cmd = commandArgs(ins.cmd, stage.vars.shell);
    return { definition: { cmd: cfg.Cmd }, createdBy: `CMD ${goQuotedList(cfg.Cmd)}` };
  },
  ENTRYPOINT({ ins, cfg, stage }) {
    const entrypoint = commandArgs(ins.cmd, stage.vars.shell);
    // `ENTRYPOINT []` clears it: BuildKit leaves the field out rather than recording an empty list.
    cfg.Entrypoint = entrypoint.length > 0 ? entrypoint : null;
    // As in Docker: a new ENTRYPOINT drops the CMD inherited from the base image.
    if (!stage.cmdSet) cfg.Cmd = null;
    return { definition: { entrypoint: cfg.Entrypoint }, createdBy: `ENTRYPOINT ${goQuotedList(entrypoint)}` };
  },
  SHELL({ ins, cfg }) {
    cfg.Shell = ins.shell;
    return { definition: { shell: ins.shell }, createdBy: `SHELL [${ins.shell.join(' ')}]` };
  },
  HEALTHCHECK({ ins, cfg }) {
    const h = ins.healthcheck;
    cfg.Healthcheck =
      h.kind === 'none'
        ? { Test: ['NONE'] }
        : {
            Test: h.cmd.form === 'exec' ? ['CMD', ...h.cmd.args] : ['CMD-SHELL', h.cmd.command],
            ...(h.interval !== null ? { Interval: h.interval } : {}),
            ...(h.timeout !== null ? { Timeout: h.timeout } : {}),
            ...(h.startPeriod !== null ? { StartPeriod: h.startPeriod } : {}),
            ...(h.startInterval !== null ? { StartInterval: h.startInterval } : {}),
            ...(h.retries !== null ? { Retries: h.retries } : {}),
          };
    return { definition: { healthcheck: cfg.Healthcheck }, createdBy: `HEALTHCHECK ${goHealthConfig(cfg.Healthcheck)}` };
  },
  ONBUILD({ ins, cfg }) {
    cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.trigger];
    // BuildKit records no history for ONBUILD.
    return { definition: { onbuild: cfg.OnBuild }, createdBy: null };
  },
  MAINTAINER({ ins, stage }) {
    stage.config.author = ins.maintainer;
    return { definition: { author: ins.maintainer } };
  },
};

/** Whether an instruction only changes the image config. */
export function isMetadataStep(ctx: StepContext): ctx is StepContext<Extract<StageInstruction, { keyword: Keyword }>> {
  return Object.prototype.hasOwnProperty.call(handlers, ctx.ins.keyword);
}

/** Applies a metadata instruction to the stage's config. */
export function applyMetadataStep(ctx: StepContext<Extract<StageInstruction, { keyword: Keyword }>>): MetadataStep {
  const handler = handlers[ctx.ins.keyword] as Handler<Keyword>;
  return handler(ctx as StepContext<never>);
}

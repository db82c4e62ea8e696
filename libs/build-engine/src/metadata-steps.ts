// Instructions that change only the image config (ENV, LABEL, WORKDIR, USER, EXPOSE, ...): each
// applies itself to the stage's config and says what goes into its cache key.

import path from 'node:path/posix';
import type { CommandLine, StageInstruction } from '@strata/dockerfile';
import { setEnv, type StepContext } from './step-context.js';

/** What a metadata step did: the definition its cache key hashes, and its history line when not the instruction itself. */
export interface MetadataStep {
  definition: unknown;
  createdBy?: string;
}

type Keyword = Exclude<StageInstruction['keyword'], 'COPY' | 'ADD' | 'RUN'>;
type Handler<K extends Keyword> = (ctx: StepContext<Extract<StageInstruction, { keyword: K }>>) => MetadataStep;

export function commandArgs(cmd: CommandLine, shell: string[]): string[] {
  return cmd.form === 'exec' ? cmd.args : [...shell, cmd.command];
}

const handlers: { [K in Keyword]: Handler<K> } = {
  ARG({ ins, stage, build, expand }) {
    for (const decl of ins.args) {
      const fromBuild = build.input.buildArgs[decl.name];
      let value: string | undefined;
      if (fromBuild !== undefined) value = fromBuild;
      else if (decl.defaultValue !== null) value = expand(decl.defaultValue);
      else if (build.globalArgs.has(decl.name)) value = build.globalArgs.get(decl.name);
      else if (decl.name in build.predefined) value = build.predefined[decl.name];
      stage.args.set(decl.name, value);
    }
    return { definition: { args: ins.args.map((a) => [a.name, stage.args.get(a.name) ?? null]) } };
  },
  ENV({ ins, cfg, env, expand }) {
    for (const pair of ins.pairs) {
      const key = expand(pair.key);
      const value = expand(pair.value);
      setEnv(cfg, key, value);
      env.set(key, value);
    }
    return { definition: { env: cfg.Env }, createdBy: `ENV ${ins.pairs.map((p) => `${expand(p.key)}=${env.get(expand(p.key))}`).join(' ')}` };
  },
  LABEL({ ins, cfg, expand }) {
    const labels = { ...(cfg.Labels ?? {}) };
    for (const pair of ins.pairs) labels[expand(pair.key)] = expand(pair.value);
    cfg.Labels = labels;
    return { definition: { labels } };
  },
  WORKDIR({ ins, cfg, expand }) {
    const dir = expand(ins.path);
    cfg.WorkingDir = path.resolve(cfg.WorkingDir || '/', dir);
    return { definition: { workdir: cfg.WorkingDir } };
  },
  USER({ ins, cfg, expand }) {
    cfg.User = expand(ins.user);
    return { definition: { user: cfg.User } };
  },
  EXPOSE({ ins, cfg, expand, fail }) {
    const ports = { ...(cfg.ExposedPorts ?? {}) };
    for (const word of ins.ports) {
      for (const p of expand(word).split(/\s+/).filter(Boolean)) {
        const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(p);
        if (!m) fail(`"${p}" is not a port: use PORT, PORT/tcp, PORT/udp or a range like 8000-8010`);
        const from = Number(m![1]);
        const to = m![2] ? Number(m![2]) : from;
        if (to < from || to > 65535) fail(`"${p}" is not a valid port range`);
        for (let port = from; port <= to; port++) ports[`${port}/${(m![3] ?? 'tcp').toLowerCase()}`] = {};
      }
    }
    cfg.ExposedPorts = ports;
    return { definition: { ports: Object.keys(ports).sort() } };
  },
  VOLUME({ ins, cfg, expand, fail }) {
    const vols = { ...(cfg.Volumes ?? {}) };
    for (const p of ins.paths) {
      const v = expand(p);
      if (v.trim() === '') fail('a volume path is empty');
      vols[v] = {};
    }
    cfg.Volumes = vols;
    return { definition: { volumes: Object.keys(vols).sort() } };
  },
  STOPSIGNAL({ ins, cfg, expand }) {
    cfg.StopSignal = expand(ins.signal);
    return { definition: { signal: cfg.StopSignal } };
  },
  CMD({ ins, cfg, stage }) {
    cfg.Cmd = commandArgs(ins.cmd, stage.shell);
    return { definition: { cmd: cfg.Cmd } };
  },
  ENTRYPOINT({ ins, cfg, stage }) {
    cfg.Entrypoint = commandArgs(ins.cmd, stage.shell);
    // As in Docker: a new ENTRYPOINT drops the CMD inherited from the base image.
    if (!stage.cmdSet) cfg.Cmd = null;
    return { definition: { entrypoint: cfg.Entrypoint } };
  },
  SHELL({ ins, cfg, stage }) {
    stage.shell = ins.shell;
    cfg.Shell = ins.shell;
    return { definition: { shell: ins.shell } };
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
    return { definition: { healthcheck: cfg.Healthcheck } };
  },
  ONBUILD({ ins, cfg }) {
    cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.trigger];
    return { definition: { onbuild: cfg.OnBuild } };
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

// RUN: the command line, the environment it sees, its mounts (resolved into what the cache key
// names and what the executor mounts), and running it in the executor to make its layer.

import path from 'node:path/posix';
import { runScript, type StageInstruction } from '@strata/dockerfile';
import { LayerWriter, resolveInRoot } from '@strata/oci';
import type { StageResult } from './build-input.js';
import { ContextSourceError, type ContextEntry } from './context.js';
import { type CachedStep, type RunMountRequest, type RunOutcome, RunStepError } from './interfaces.js';
import { type BuildScope, DEFAULT_PATH, type StageState, type StepContext, type StepPosition } from './step-context.js';

type RunInstruction = Extract<StageInstruction, { keyword: 'RUN' }>;

const PROXY_ARGS = ['HTTP_PROXY', 'HTTPS_PROXY', 'FTP_PROXY', 'NO_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'ftp_proxy', 'no_proxy', 'all_proxy'];

/** A RUN mount: `key` goes into the step's cache key, `request` to the executor (stage binds get their source when the step runs). */
export interface PreparedMount {
  key: unknown;
  request: RunMountRequest;
  stage?: StageResult;
  source?: string;
}

/** What the executor runs. */
export interface RunSpec {
  args: string[];
  env: string[];
  user: string;
  cwd: string;
  network: 'default' | 'none' | 'host';
}

export interface PreparedRun {
  spec: RunSpec;
  mounts: PreparedMount[];
  definition: unknown;
  createdBy: string;
}

/** The process a RUN starts: exec form as written, shell form and shell heredocs through the stage's shell. */
export function runArgs(ins: RunInstruction, shell: string[], fail: (m: string) => never): string[] {
  const script = runScript(ins);
  if (script.kind === 'exec') return script.args;
  if (script.kind === 'shell') return [...shell, script.script];
  // `RUN <<EOF` with a `#!` line: shell interpreters run the body as is; others need a script file, not done yet.
  const interpreter = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(script.content);
  const program = interpreter ? (interpreter[1].endsWith('/env') ? interpreter[2] ?? '' : interpreter[1]) : '';
  if (/(^|\/)(sh|bash|ash|dash)$/.test(program)) return [program.includes('/') ? program : `/bin/${program}`, '-c', script.content];
  return fail(`heredoc scripts run by "${program}" are not supported yet; use a shell script or RUN <<EOF ${program}`);
}

/** Resolves a RUN without running it: what its cache key and its execution need. */
export async function prepareRun(ctx: StepContext<RunInstruction>): Promise<PreparedRun> {
  const { ins, build, stage, env, cfg, fail } = ctx;
  if (!build.deps.executor) fail('RUN is not supported by this worker yet (it has no container runtime)');
  // RUN sees the image ENV plus the ARGs in scope; only ARGs it sees go into its key.
  const runEnv = new Map(env);
  for (const [k, v] of stage.args) if (v !== undefined && !runEnv.has(k)) runEnv.set(k, v);
  const args = runArgs(ins, stage.shell, fail);
  const envList = [...runEnv].map(([k, v]) => `${k}=${v}`);
  if (!runEnv.has('PATH')) envList.push(`PATH=${DEFAULT_PATH}`);
  envList.sort();
  for (const k of stage.args.keys()) if (!env.has(k) && !PROXY_ARGS.includes(k)) ctx.seenArgs.add(k);
  const user = cfg.User || 'root';
  const cwd = cfg.WorkingDir || '/';
  const network = ins.network ?? 'default';
  const mounts = await prepareRunMounts(ctx, cwd);
  return {
    spec: { args, env: envList, user, cwd, network },
    mounts,
    definition: { args, env: envList, user, cwd, network, heredocs: ins.heredocs.map((h) => h.content), ...(mounts.length > 0 ? { mounts: mounts.map((m) => m.key) } : {}) },
    createdBy: `RUN ${args.join(' ')} # buildkit`,
  };
}

/** Resolves `RUN --mount` options: what goes into the cache key and how to mount it when the step runs. */
export async function prepareRunMounts(ctx: StepContext<RunInstruction>, cwd: string): Promise<PreparedMount[]> {
  const { ins, build, fail, expand: x } = ctx;
  const input = build.input;
  const out: PreparedMount[] = [];
  for (const m of ins.mounts) {
    const what = `--mount=${m.raw}`;
    if (m.type === 'ssh') fail(`${what}: ssh mounts are not supported yet`);
    if (m.type === 'secret') {
      // As BuildKit: id defaults to the target's base name; with neither target nor env the file goes to /run/secrets/<id>.
      const target = m.target ? path.resolve(cwd, x(m.target)) : null;
      const id = m.id ? x(m.id) : m.source ? x(m.source) : target ? path.basename(target) : '';
      if (!/^[A-Za-z0-9._-]+$/.test(id)) fail(`${what}: invalid secret id "${id}"`);
      const env = m.env ? x(m.env) : null;
      if (env !== null && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(env)) fail(`${what}: invalid environment variable name "${env}"`);
      const dest = target ?? (env === null ? `/run/secrets/${id}` : null);
      if (dest === '/') fail(`${what}: cannot mount over the root directory`);
      const value = input.secrets?.get(id);
      if (!value) {
        if (m.required) fail(`${what}: the secret "${id}" is required but was not sent with the build (Strata-Build-Secret: id=${id},src=<base64>)`);
        continue; // BuildKit skips a missing optional secret
      }
      const uid = m.uid ?? 0;
      const gid = m.gid ?? 0;
      const mode = m.mode ?? 0o400;
      // The key names the secret, never its value.
      out.push({ key: { type: 'secret', id, target: dest, env, uid, gid, mode }, request: { type: 'secret', id, target: dest, env, value, uid, gid, mode } });
      continue;
    }
    if (!m.target) fail(`${what}: the mount needs a target`);
    const target = path.resolve(cwd, x(m.target!));
    if (target === '/') fail(`${what}: cannot mount over the root directory`);
    if (m.type === 'tmpfs') {
      const req = { type: 'tmpfs' as const, target, ...(m.size !== null ? { sizeBytes: m.size } : {}) };
      out.push({ key: req, request: req });
    } else if (m.type === 'cache') {
      const id = m.id ? x(m.id) : target;
      const req = { type: 'cache' as const, target, id, sharing: m.sharing ?? 'shared', readOnly: m.readOnly, uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o755 };
      out.push({ key: req, request: req });
    } else if (m.type === 'bind') {
      const source = m.source ? x(m.source) : '/';
      if (m.from) {
        const from = x(m.from);
        const pending = ctx.stageResult(from);
        if (!pending) fail(`${what}: binding from an image is not supported yet; name a stage of this Dockerfile`);
        if (!build.deps.rootfs) fail(`${what}: this worker cannot mount other stages`);
        const stage = await pending!;
        out.push({ key: { type: 'bind', target, from: stage.fsKey, source, readOnly: m.readOnly }, request: { type: 'bind', target, source: '', readOnly: m.readOnly }, stage, source });
      } else {
        // Writes to a context bind would leak into later COPY steps: only read-only for now.
        if (!m.readOnly) fail(`${what}: read-write binds of the build context are not supported yet`);
        let entries: ContextEntry[];
        try {
          entries = await input.context.resolve(source);
        } catch (e) {
          if (e instanceof ContextSourceError) fail(`${what}: ${e.message}`);
          throw e;
        }
        const checksum = await input.context.checksum(entries!);
        const abs = await resolveInRoot(await input.context.directory(), source);
        out.push({ key: { type: 'bind', target, context: checksum.digest, source, readOnly: true }, request: { type: 'bind', target, source: abs, readOnly: true } });
      }
    } else {
      fail(`${what}: mount type "${m.type as string}" is not supported`);
    }
  }
  return out;
}

/** Runs a prepared RUN in the executor and stores what it changed as a layer. */
export async function executeRun(
  build: BuildScope,
  stage: StageState,
  where: StepPosition,
  line: number,
  run: PreparedRun,
  fail: (m: string) => never,
): Promise<CachedStep> {
  const { input, deps } = build;
  const { spec, mounts } = run;
  const tail: string[] = [];
  const views: Array<{ release(): Promise<void> }> = [];
  let outcome: RunOutcome;
  try {
    const requests: RunMountRequest[] = [];
    for (const m of mounts) {
      if (m.stage) {
        const view = await deps.rootfs!.open(m.stage.layers);
        views.push(view);
        requests.push({ ...m.request, source: await resolveInRoot(view.root, m.source!) } as RunMountRequest);
      } else {
        requests.push(m.request);
      }
    }
    try {
      outcome = await deps.executor!.run({
        layers: build.live.refs(stage.layers),
        mounts: requests,
        ...spec,
        line,
        signal: input.signal ?? new AbortController().signal,
        onOutput: (stream, text) => {
          tail.push(text);
          if (tail.length > 10) tail.shift();
          build.emit({ type: 'log', stage: where.stage, index: where.index, stream, line: text });
        },
      });
    } catch (e) {
      if (e instanceof RunStepError) fail(e.message);
      throw e;
    }
  } finally {
    for (const view of views) await view.release().catch(() => undefined);
  }
  const lastOutput = tail.length ? `; last output:\n${tail.join('\n')}` : '';
  let kept = false;
  try {
    if (outcome.cancelled || input.signal?.aborted) fail('the build was cancelled; the command was killed');
    if (outcome.oomKilled) fail(`"${spec.args.join(' ')}" ran out of memory and was killed${lastOutput}`);
    if (outcome.timedOut) fail(`"${spec.args.join(' ')}" took longer than the step time limit and was killed${lastOutput}`);
    if (outcome.exitCode !== 0) {
      const pids = outcome.pidsLimitHit ? ' (it hit the process limit: a fork failed)' : '';
      fail(`"${spec.args.join(' ')}" exited with code ${outcome.exitCode}${pids}${lastOutput}`);
    }
    if (outcome.entries.length === 0) return { emptyLayer: true };
    const packed = new LayerWriter({ clampMtime: build.sourceDateEpoch }).pack(outcome.entries);
    const layer = await build.live.store(packed, []);
    if (outcome.keep) {
      // What the step wrote becomes the worker's copy of the layer (a failure only costs a fetch later).
      kept = true;
      await outcome.keep(layer.diffId, (await packed.result).uncompressedSize).catch(() => outcome.release());
    }
    return { layer };
  } finally {
    if (!kept) await outcome.release();
  }
}

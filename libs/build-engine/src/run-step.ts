// RUN: the command line, the environment it sees, its mounts (resolved into what the cache key
// names and what the executor mounts), and running it in the executor to make its layer.

import path from 'node:path/posix';
import { HEREDOC_SCRIPT_DIR, runScript, type StageInstruction } from '@strata/dockerfile';
import { LayerWriter, resolveInRoot } from '@strata/oci';
import type { StageResult } from './build-input.js';
import { ContextSourceError, type ContextEntry } from './context.js';
import { type CachedStep, type RunMountRequest, type RunOutcome, RunStepError } from './interfaces.js';
import { type BuildScope, sourceOf, type StageState, type StepContext, type StepPosition } from './step-context.js';

type RunInstruction = Extract<StageInstruction, { keyword: 'RUN' }>;

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
  /** Set for `--security=insecure` (a privileged container), which the frontend let through only when the operator allows it. */
  security?: 'insecure';
}

export interface PreparedRun {
  spec: RunSpec;
  mounts: PreparedMount[];
  definition: unknown;
  createdBy: string;
}

/**
 * The process a RUN starts: exec form as written, shell form and heredocs fed to programs through
 * the stage's shell, and a lone `#!` heredoc as the executable file `/dev/pipes/<name>` (as BuildKit
 * does: the kernel runs it with the interpreter its first line names), mounted from `script`.
 */
export function runArgs(ins: RunInstruction, shell: string[], fail: (m: string) => never): { args: string[]; script?: Extract<RunMountRequest, { type: 'file' }> } {
  const script = runScript(ins);
  if (script.kind === 'exec') return { args: script.args };
  if (script.kind === 'shell') return { args: [...shell, script.script] };
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(script.name)) fail(`the heredoc delimiter "${script.name}" cannot name the script file; use letters, digits, "_", "." or "-"`);
  const target = path.join(HEREDOC_SCRIPT_DIR, script.name);
  return { args: [target], script: { type: 'file', target, content: Buffer.from(script.content), mode: 0o755 } };
}

/** BuildKit's prefix of a RUN history line: `|N K=V ...` for the N ARGs declared in the stage so far. */
function historyArgs(stage: StageState): string[] {
  if (stage.declaredArgs.length === 0) return [];
  return [`|${stage.declaredArgs.length}`, ...stage.declaredArgs.map((name) => `${name}=${stage.vars.lookup(name) ?? ''}`)];
}

/** Resolves a RUN without running it: what its cache key and its execution need. */
export async function prepareRun(ctx: StepContext<RunInstruction>): Promise<PreparedRun> {
  const { ins, build, stage, evaluated, cfg, fail } = ctx;
  if (!build.deps.executor) fail('RUN is not supported by this worker yet (it has no container runtime)');
  // RUN sees the stage's ARGs and ENV (the later of the two wins), as the frontend evaluated them.
  const envList = [...evaluated.env].sort();
  // Proxy build args reach the process without an ARG, and stay out of the cache key (as in BuildKit).
  const names = new Set(envList.map((kv) => kv.slice(0, kv.indexOf('='))));
  const proxies = Object.entries(evaluated.proxyEnv).filter(([k]) => !names.has(k)).map(([k, v]) => `${k}=${v}`);
  const { args, script } = runArgs(ins, stage.vars.shell, fail);
  // No USER: the runtime runs uid 0 even where the image has no /etc/passwd, as BuildKit does.
  const user = cfg.User || '';
  const cwd = stage.vars.workdir;
  const network = ins.network ?? 'default';
  const security = ins.security === 'insecure' ? { security: 'insecure' as const } : {};
  const mounts = await prepareRunMounts(ctx, cwd);
  // The first SSH agent's socket is SSH_AUTH_SOCK (as BuildKit; its target is in the key through the mount).
  const agent = mounts.find((m) => m.request.type === 'ssh')?.request.target;
  const agentEnv = agent ? [`SSH_AUTH_SOCK=${agent}`] : [];
  // The script's content is in the key through `heredocs`.
  if (script) mounts.unshift({ key: { type: 'file', target: script.target, mode: script.mode }, request: script });
  return {
    spec: { ...security, args, env: [...envList.filter((kv) => !(agent && kv.startsWith('SSH_AUTH_SOCK='))), ...proxies, ...agentEnv], user, cwd, network },
    mounts,
    definition: { args, env: envList, user, cwd, network, ...security, heredocs: ins.heredocs.map((h) => h.content), ...(mounts.length > 0 ? { mounts: mounts.map((m) => m.key) } : {}) },
    createdBy: `RUN ${[...historyArgs(stage), ...args].join(' ')} # buildkit`,
  };
}

/** Resolves `RUN --mount` options: what goes into the cache key and how to mount it when the step runs. */
export async function prepareRunMounts(ctx: StepContext<RunInstruction>, cwd: string): Promise<PreparedMount[]> {
  // Mount options arrive expanded.
  const { ins, build, fail } = ctx;
  const input = build.input;
  const out: PreparedMount[] = [];
  let sshCount = 0;
  for (const m of ins.mounts) {
    const what = `--mount=${m.raw}`;
    if (m.type === 'secret') {
      // As BuildKit: id defaults to the target's base name; with neither target nor env the file goes to /run/secrets/<id>.
      const target = m.target ? path.resolve(cwd, m.target) : null;
      const id = m.id ? m.id : m.source ? m.source : target ? path.basename(target) : '';
      if (!/^[A-Za-z0-9._-]+$/.test(id)) fail(`${what}: invalid secret id "${id}"`);
      const env = m.env ? m.env : null;
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
    if (m.type === 'ssh') {
      // As BuildKit: id "default", the socket at /run/buildkit/ssh_agent.<n>, SSH_AUTH_SOCK naming the first.
      const id = m.id ? m.id : 'default';
      const target = m.target ? path.resolve(cwd, m.target) : `/run/buildkit/ssh_agent.${sshCount}`;
      sshCount++;
      const keys = input.sshKeys?.get(id);
      if (!keys || keys.length === 0) {
        if (m.required) fail(`${what}: the SSH key "${id}" is required but was not sent with the build (strata build --ssh ${id}=<private key file>)`);
        continue; // BuildKit skips a missing optional ssh mount
      }
      const uid = m.uid ?? 0;
      const gid = m.gid ?? 0;
      const mode = m.mode ?? 0o600;
      out.push({ key: { type: 'ssh', id, target, uid, gid, mode }, request: { type: 'ssh', id, target, keys, uid, gid, mode } });
      continue;
    }
    if (!m.target) fail(`${what}: the mount needs a target`);
    const target = path.resolve(cwd, m.target!);
    if (target === '/') fail(`${what}: cannot mount over the root directory`);
    if (m.type === 'tmpfs') {
      const req = { type: 'tmpfs' as const, target, ...(m.size !== null ? { sizeBytes: m.size } : {}) };
      out.push({ key: req, request: req });
    } else if (m.type === 'cache') {
      const id = m.id ? m.id : target;
      const req = { type: 'cache' as const, target, id, sharing: m.sharing ?? 'shared', readOnly: m.readOnly, uid: m.uid ?? 0, gid: m.gid ?? 0, mode: m.mode ?? 0o755 };
      out.push({ key: req, request: req });
    } else if (m.type === 'bind') {
      const source = m.source ? m.source : '/';
      if (m.from) {
        const from = m.from;
        if (!build.deps.rootfs) fail(`${what}: this worker cannot mount other stages`);
        const stage = await sourceOf(ctx, from, what);
        out.push({ key: { type: 'bind', target, from: stage.fsKey, source, readOnly: m.readOnly }, request: { type: 'bind', target, source: '', readOnly: m.readOnly }, stage, source });
      } else {
        const context = await input.context;
        let entries: ContextEntry[];
        try {
          entries = await context.resolve(source);
        } catch (e) {
          if (e instanceof ContextSourceError) fail(`${what}: ${e.message}`);
          throw e;
        }
        const checksum = await context.checksum(entries!);
        const abs = await resolveInRoot(await context.directory(), source);
        // rw: the command may write, into a copy thrown away after the step (as BuildKit), never into the context.
        const request = m.readOnly ? { type: 'bind' as const, target, source: abs, readOnly: true } : { type: 'bind' as const, target, source: abs, readOnly: false, throwaway: true };
        out.push({ key: { type: 'bind', target, context: checksum.digest, source, readOnly: m.readOnly }, request });
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
          return build.emit({ type: 'log', stage: where.stage, index: where.index, stream, line: text });
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
    if (outcome.entries.length === 0) {
      // Nothing to keep: the snapshot is unmounted and removed while the build goes on (a failure still fails the build).
      kept = true;
      build.live.wait(outcome.release());
      return { emptyLayer: true };
    }
    const packed = new LayerWriter({ clampMtime: build.sourceDateEpoch }).pack(outcome.entries);
    const layer = await build.live.store(packed, []);
    if (outcome.keep) {
      // What the step wrote becomes the worker's copy of the layer (a failure only costs a fetch later).
      // The unmount (overlayfs syncs the upper filesystem) and the rename into the layer store go on
      // while the next step is planned and looked up; its snapshot waits for them on the layer's lock.
      kept = true;
      const { uncompressedSize } = await packed.result;
      const keep = outcome.keep(layer.diffId, uncompressedSize).catch(() => outcome.release());
      build.live.wait(keep);
    }
    return { layer };
  } finally {
    if (!kept) await outcome.release();
  }
}

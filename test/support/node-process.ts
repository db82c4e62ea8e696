import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** One of Strata's programs as an OS process of its own, run from source, as a deployment runs it. */
export interface NodeProcess {
  pid: number;
  /** Everything it wrote to stdout and stderr so far (the last MiB or so). */
  output(): string;
  /** Resolves once it printed its ready text; rejects, with its output, if it exits or takes longer than timeoutMs. */
  ready(timeoutMs?: number): Promise<void>;
  /** `work`, unless the process exits first: then rejects with its exit status and output instead of waiting out a timeout. */
  whileRunning<T>(work: Promise<T>): Promise<T>;
  /** SIGKILL, as a crash or the OOM killer would. Resolves once it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (a graceful close), SIGKILL if it is still there after graceMs. Idempotent. */
  stop(graceMs: number): Promise<void>;
  /** How it ended (`killed by SIGKILL`, `exited with code 0`), or null while it runs. */
  exitStatus(): string | null;
}

/**
 * Starts `node --import ./bench/support/register-ts.mjs <entry>` in the repository with `env`.
 * `name` introduces it in error messages; `readyText` is what it prints once it serves.
 */
export function startNodeProcess(opts: { name: string; entry: string; env: NodeJS.ProcessEnv; readyText: string }): NodeProcess {
  const child: ChildProcess = spawn(process.execPath, ['--import', './bench/support/register-ts.mjs', opts.entry], {
    cwd: root,
    env: { ...opts.env, NODE_NO_WARNINGS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const append = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    // Enough to diagnose a failure; a runaway log must not eat the test's memory.
    if (out.length > 1024 ** 2) out = `[...]${out.slice(-512 * 1024)}`;
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
    child.once('error', (err) => resolve(`could not be started: ${err.message}`));
  });
  let status: string | null = null;
  void exited.then((s) => (status = s));
  // If jest's process goes without afterAll (forceExit, a crash), the child must not outlive it.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const describe = (what: string) => `${opts.name} ${child.pid ?? '(no pid)'} ${what}; its output:\n${out || '(none)'}`;
  let stopping: Promise<void> | null = null;
  return {
    pid: child.pid ?? -1,
    output: () => out,
    async ready(timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      while (!out.includes(opts.readyText)) {
        if (status !== null) throw new Error(describe(`${status} before it was ready`));
        if (Date.now() > until) throw new Error(describe(`was not ready after ${timeoutMs} ms`));
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async whileRunning<T>(work: Promise<T>): Promise<T> {
      const died = exited.then((s) => {
        throw new Error(describe(s));
      });
      // Keeps a later exit (stop() after `work` won the race) from surfacing as an unhandled rejection.
      died.catch(() => undefined);
      return Promise.race([work, died]);
    },
    async kill() {
      if (status === null) child.kill('SIGKILL');
      await exited;
      process.removeListener('exit', killOnExit);
    },
    exitStatus: () => status,
    stop(graceMs: number) {
      stopping ??= (async () => {
        if (status === null) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(timer);
        }
        process.removeListener('exit', killOnExit);
      })();
      return stopping;
    },
  };
}

import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StrataConfig } from '@strata/config';
import { envOf } from './worker-process.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Part of the line apps/api/src/main.ts prints once it listens. */
const READY_TEXT = 'Strata api listening on';

/** An api as an OS process of its own (apps/api/src/main.ts run from source), as a deployment runs one. */
export interface ApiProcess {
  url: string;
  pid: number;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves once it listens; rejects, with its output, if it exits or takes longer than timeoutMs. */
  ready(timeoutMs?: number): Promise<void>;
  /** SIGKILL, as a crash or the OOM killer would. Resolves once it is gone. */
  kill(): Promise<void>;
  /** SIGTERM (a graceful close), SIGKILL after graceMs. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  exitStatus(): string | null;
}

/** A port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts `node --import ./bench/support/register-ts.mjs apps/api/src/main.ts` with `config`'s
 * settings (the same Postgres, Redis, bucket and queue prefix as the stack), on `port`, with `env` on top.
 */
export function startApiProcess(config: StrataConfig, port: number, env: Record<string, string> = {}): ApiProcess {
  const url = `http://127.0.0.1:${port}`;
  const childEnv = { ...process.env, ...envOf({ ...config, port, host: '127.0.0.1', publicUrl: url }), NODE_NO_WARNINGS: '1', ...env };
  const child: ChildProcess = spawn(process.execPath, ['--import', './bench/support/register-ts.mjs', 'apps/api/src/main.ts'], { cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const append = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    if (out.length > 4 * 1024 ** 2) out = out.slice(-2 * 1024 ** 2);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
    child.once('error', (err) => resolve(`could not be started: ${err.message}`));
  });
  let status: string | null = null;
  void exited.then((s) => (status = s));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const describe = (what: string) => `api process ${child.pid ?? '(no pid)'} ${what}; its output:\n${out || '(none)'}`;
  let stopping: Promise<void> | null = null;
  return {
    url,
    pid: child.pid ?? -1,
    output: () => out,
    async ready(timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      while (!out.includes(READY_TEXT)) {
        if (status !== null) throw new Error(describe(`${status} before it listened`));
        if (Date.now() > until) throw new Error(describe(`did not listen within ${timeoutMs} ms`));
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async kill() {
      if (status === null) child.kill('SIGKILL');
      await exited;
      process.removeListener('exit', killOnExit);
    },
    exitStatus: () => status,
    stop(graceMs = 15_000) {
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

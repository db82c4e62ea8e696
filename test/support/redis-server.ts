import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { portOpen } from './ports.js';

/** A Redis of a test's own (127.0.0.1, a free port, its own directory), so the test may kill it. */
export interface PrivateRedis {
  url: string;
  port: number;
  /** Kills it (SIGKILL: nothing saved) and starts it again on the same port: with `appendonly`, the data comes back. */
  restart(): Promise<void>;
  /** Kills it and leaves it down (an outage) until `up()`. */
  down(): Promise<void>;
  /** Starts it again on the same port after `down()`. */
  up(): Promise<void>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export async function startPrivateRedis(opts: { appendonly: boolean }): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-redis-'));
  let child: ChildProcess | null = null;
  const start = async () => {
    child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', opts.appendonly ? 'yes' : 'no', '--appendfsync', 'always', '--dir', dir], {
      stdio: 'ignore',
    });
    const until = Date.now() + 10_000;
    while (!(await portOpen(port))) {
      if (Date.now() > until) throw new Error(`redis-server did not listen on 127.0.0.1:${port}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    const c = child as ChildProcess | null;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGKILL');
    await exited;
  };
  const killOnExit = () => (child as ChildProcess | null)?.kill('SIGKILL');
  process.once('exit', killOnExit);
  await start();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    async restart() {
      await kill();
      await start();
    },
    down: kill,
    async up() {
      // Already up: a second redis-server could not bind the port, and the running one would be lost track of.
      const c = child as ChildProcess | null;
      if (c && c.exitCode === null && c.signalCode === null) return;
      await start();
    },
    async stop() {
      await kill();
      process.removeListener('exit', killOnExit);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { access, chmod, constants as fsConstants, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { mknodAgentPath } from '@strata/native';
import { socketPathFits } from './unix-socket.js';

export interface MknodAgentOptions {
  /**
   * A directory of the worker's (made 0700): the agent's socket is `<dir>/agent.sock`, or, when that
   * path is longer than a unix socket's 107 bytes, `/run/strata-mknod-agent/<hash of dir>/agent.sock`.
   */
  dir: string;
  /** The executable (default @strata/native's strata-mknod-agent). */
  executable?: string;
}

const START_TIMEOUT_MS = 10_000;
/** Where sockets of workers whose data directory is too deep go (one 0700 directory per worker). */
const SHORT_SOCKET_ROOT = '/run/strata-mknod-agent';
/** Restarts closer together than this are delayed, so a binary that dies at once does not spin. */
const RESTART_BACKOFF_MS = 500;

/**
 * The worker's one seccomp user-notification supervisor (libs/native/src/mknod-agent.c, docs/adr/0022):
 * user-namespaced steps' filters send mknod/mknodat to it, runc hands it each step's notify
 * descriptor over `socketPath` (the spec's `linux.seccomp.listenerPath`), and it makes device nodes
 * inside the step's root with the caller's owners. Started by `start`, restarted when it dies (steps
 * that were running then get ENOSYS from mknod: their descriptors died with it; new steps connect to
 * the new one). When it is not listening, runc cannot start a step and says so.
 */
export class MknodAgent {
  readonly socketPath: string;
  private readonly socketDir: string;
  private child: ChildProcess | undefined;
  private closed = false;
  private lastStart = 0;
  private restarts = 0;

  constructor(private readonly options: MknodAgentOptions) {
    this.socketDir = socketPathFits(path.join(options.dir, 'agent.sock')) ? options.dir : path.join(SHORT_SOCKET_ROOT, createHash('sha256').update(options.dir).digest('hex').slice(0, 16));
    this.socketPath = path.join(this.socketDir, 'agent.sock');
  }

  /** Times the agent was restarted after it died. */
  get restartCount(): number {
    return this.restarts;
  }

  /** The agent's pid while it runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    const executable = this.options.executable ?? mknodAgentPath;
    await access(executable, fsConstants.X_OK).catch((e: Error) => {
      throw new Error(`the mknod agent ${executable} is missing (${e.message}); it is built with @strata/native (npm rebuild @strata/native)`);
    });
    if (this.socketDir !== this.options.dir) {
      await mkdir(SHORT_SOCKET_ROOT, { recursive: true, mode: 0o700 });
      await chmod(SHORT_SOCKET_ROOT, 0o700);
    }
    await mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    await chmod(this.socketDir, 0o700);
    this.closed = false;
    await this.spawn(executable);
  }

  private spawn(executable: string): Promise<void> {
    this.lastStart = Date.now();
    const child = spawn(executable, [this.socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the mknod agent did not start listening on ${this.socketPath} within ${START_TIMEOUT_MS} ms`));
      }, START_TIMEOUT_MS);
      child.stdout!.on('data', (chunk: Buffer) => {
        if (!ready && chunk.toString().includes('ready')) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('error', (e) => {
        clearTimeout(timer);
        if (!ready) reject(e);
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        if (this.child === child) this.child = undefined;
        if (!ready) {
          reject(new Error(`the mknod agent exited before it listened (${signal ?? `exit code ${code}`})`));
          return;
        }
        if (this.closed) return;
        process.stderr.write(`strata worker: the mknod agent died (${signal ?? `exit code ${code}`}); restarting it (running steps' mknod of devices now fails with ENOSYS)\n`);
        this.restart(executable, Math.max(0, RESTART_BACKOFF_MS - (Date.now() - this.lastStart)));
      });
    });
  }

  /** Starts the agent again after `wait` ms; a start that fails is tried again, so one bad moment does not leave the worker without it. */
  private restart(executable: string, wait: number): void {
    setTimeout(() => {
      if (this.closed) return;
      this.restarts++;
      this.spawn(executable).catch((e: Error) => {
        process.stderr.write(`strata worker: the mknod agent did not restart (${e.message}); trying again\n`);
        this.restart(executable, RESTART_BACKOFF_MS);
      });
    }, wait).unref();
  }

  /** Stops the agent (steps still running lose their mknod supervisor) and removes its socket. */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    this.child = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
    await rm(this.socketPath, { force: true });
  }
}

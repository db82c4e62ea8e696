// dockerd 20.10 (Debian's docker.io) as a peer in tests: started by the test with its own data and
// exec root and unix socket under a temp dir, no bridge, no iptables; always stopped by the test.
// If it cannot start here the suite fails: no skips.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
/** 20.10; the `docker` first on PATH is a different client. */
export const DOCKER = '/usr/bin/docker';

/** Runs a command; a failure names it with the end of its output. */
export async function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { env, maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (e: any) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${e.code ?? e.signal}): ${String(e.stderr || e.stdout || e.message).slice(-3000)}`);
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export interface Dockerd {
  /** The temp dir everything lives in (HOME and DOCKER_CONFIG of the client too). */
  work: string;
  /** The client's environment: DOCKER_HOST is this daemon's socket. */
  env: NodeJS.ProcessEnv;
  /** Runs `/usr/bin/docker` against this daemon. */
  docker(...args: string[]): Promise<string>;
  /** Stops dockerd and its containerd, unmounts what they left and removes the work dir. */
  stop(): Promise<void>;
}

/** Starts dockerd and waits until it answers (60 s at most). */
export async function startDockerd(prefix = 'sdk-'): Promise<Dockerd> {
  // Short path: dockerd's and containerd's unix sockets must fit in 108 bytes.
  const work = mkdtempSync(path.join(tmpdir(), prefix));
  const d = path.join(work, 'd');
  const log = path.join(work, 'dockerd.log');
  mkdirSync(d, { recursive: true });
  const env = { PATH: process.env.PATH, HOME: work, DOCKER_HOST: `unix://${d}/docker.sock`, DOCKER_CONFIG: path.join(work, 'docker-config'), DOCKER_CLI_HINTS: 'false' };
  const docker = (...args: string[]) => run(DOCKER, args, env);
  const out = openSync(log, 'a');
  const child = spawn(
    '/usr/sbin/dockerd',
    [
      '--storage-driver', 'overlay2', '--data-root', path.join(d, 'data'), '--exec-root', path.join(d, 'exec'),
      '--pidfile', path.join(d, 'docker.pid'), '-H', `unix://${d}/docker.sock`,
      '--bridge=none', '--iptables=false', '--ip-forward=false', '--ip-masq=false',
    ],
    { env: { PATH: process.env.PATH }, stdio: ['ignore', out, out] },
  );

  const stop = async (): Promise<void> => {
    if (child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
      if (!(await waitExit(child, 20_000))) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await waitExit(child, 5_000);
      }
    }
    // The containerd dockerd started for itself: stopped with it on a clean exit; after a SIGKILL, by its own pid.
    const ctrPid = path.join(d, 'exec/containerd/containerd.pid');
    if (existsSync(ctrPid)) {
      const pid = Number(readFileSync(ctrPid, 'utf8').trim());
      try {
        if (pid > 0) process.kill(pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }
    // Overlay, shm and netns mounts left under the work dir would make rm fail.
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((m): m is string => !!m && m.startsWith(`${work}/`))
      .sort()
      .reverse();
    for (const m of mounts) {
      try {
        execFileSync('umount', ['-l', m]);
      } catch {
        /* best effort */
      }
    }
    rmSync(work, { recursive: true, force: true });
  };

  const until = Date.now() + 60_000;
  for (;;) {
    try {
      await docker('version', '--format', '{{.Server.Version}}');
      return { work, env, docker, stop };
    } catch (e) {
      const exited = child.exitCode !== null || child.signalCode !== null;
      if (exited || Date.now() > until) {
        const tail = existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(-25).join('\n') : '';
        await stop();
        throw new Error(`dockerd 20.10 could not start in this environment (${exited ? `exited ${child.exitCode ?? child.signalCode}` : 'not ready in 60 s'}): ${(e as Error).message}\n--- dockerd log tail ---\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

import { spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { type RunMountRequest, RunStepError } from '@strata/build-engine';
import type { StepCleanups } from './cache-mounts.js';
import type { RunMount } from './types.js';
import { socketPathFits } from './unix-socket.js';

type SshRequest = Extract<RunMountRequest, { type: 'ssh' }>;

/** A running ssh-agent holding some keys; `stop()` kills it and removes its directory. */
export interface SshAgent {
  socket: string;
  stop(): Promise<void>;
}

/** A key ssh-add refused (a passphrase, or not a private key). */
export class SshKeyError extends Error {
  override readonly name = 'SshKeyError';
}

/**
 * Where an agent's directory goes when `root` is too deep for a socket path (a worker's temporary
 * directory under a long TMPDIR): 0711, so an agent's own user reaches its directory, and lists none.
 */
const SHORT_SOCKET_ROOT = '/run/strata-ssh-agents';

/**
 * Starts `ssh-agent -D` as uid:gid (ssh-agent answers only its own user and root) with its socket
 * in a new directory under `root` (or SHORT_SOCKET_ROOT when that path would be too long for a
 * socket), and loads `keys` with ssh-add from stdin: never written to disk.
 */
export async function startSshAgent(root: string, keys: readonly Buffer[], owner: { uid: number; gid: number } = { uid: 0, gid: 0 }): Promise<SshAgent> {
  let base = root;
  if (!socketPathFits(path.join(root, 'ssh-XXXXXX', 'agent.sock'))) {
    await mkdir(SHORT_SOCKET_ROOT, { recursive: true, mode: 0o711 });
    await chmod(SHORT_SOCKET_ROOT, 0o711);
    base = SHORT_SOCKET_ROOT;
  }
  const dir = await mkdtemp(path.join(base, 'ssh-'));
  await chown(dir, owner.uid, owner.gid);
  const socket = path.join(dir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', socket], { uid: owner.uid, gid: owner.gid, stdio: 'ignore' });
  let exited = false;
  agent.once('exit', () => (exited = true));
  agent.once('error', () => (exited = true));
  const stop = async () => {
    if (!exited) agent.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let waited = 0; !(await lstat(socket).then(() => true, () => false)); waited += 20) {
      if (exited || waited > 10_000) throw new Error('ssh-agent did not start on this worker');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const key of keys) {
      // A new session without a terminal: ssh-add cannot ask for a passphrase and fails instead.
      const add = spawn('ssh-add', ['-q', '-'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SSH_AUTH_SOCK: socket }, stdio: ['pipe', 'ignore', 'pipe'], detached: true });
      let stderr = '';
      add.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
      const code = await new Promise<number>((resolve) => {
        add.once('close', (c) => resolve(c ?? 1));
        add.once('error', () => resolve(127));
        add.stdin.on('error', () => undefined);
        add.stdin.end(key);
      });
      if (code !== 0) throw new SshKeyError(`a key could not be loaded into the SSH agent (${stderr.trim().split('\n')[0] || `ssh-add exited with ${code}`}); send a private key without a passphrase`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { socket, stop };
}

/**
 * `RUN --mount=type=ssh`: an ssh-agent for one mount of one step holding the build's keys, run as
 * the mount's uid:gid (shifted by `idShift` for a step in a user namespace), its socket bound at the target. The agent is killed and its directory
 * removed when the step's cleanups run.
 */
export async function sshAgentMount(root: string, m: SshRequest, cleanups: StepCleanups, idShift = 0): Promise<RunMount> {
  const what = `--mount=type=ssh,id=${m.id}`;
  // In a user namespace the step's uid is host idShift+uid: the agent answers only its own user (and root).
  const owner = { uid: m.uid + idShift, gid: m.gid + idShift };
  let agent: SshAgent;
  try {
    agent = await startSshAgent(root, m.keys, owner);
  } catch (e) {
    if (e instanceof SshKeyError) throw new RunStepError(`${what}: ${e.message.replace('a key could', `a key sent for "${m.id}" could`)}`);
    throw new Error(`${what}: ${(e as Error).message}`);
  }
  cleanups.push(() => agent.stop());
  await chown(agent.socket, owner.uid, owner.gid);
  await chmod(agent.socket, m.mode);
  return { type: 'bind', source: agent.socket, destination: m.target, readonly: false };
}

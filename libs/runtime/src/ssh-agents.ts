import { spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { type RunMountRequest, RunStepError } from '@strata/build-engine';
import type { StepCleanups } from './cache-mounts.js';
import type { RunMount } from './types.js';

type SshRequest = Extract<RunMountRequest, { type: 'ssh' }>;

/**
 * `RUN --mount=type=ssh`: an ssh-agent for one mount of one step, holding the build's keys (given to
 * ssh-add on stdin, never written to disk), run as the mount's uid:gid (ssh-agent answers only its
 * own user and root) with its socket in a directory of its own under `root`, bound at the target.
 * The agent is killed and its directory removed when the step's cleanups run.
 */
export async function sshAgentMount(root: string, m: SshRequest, cleanups: StepCleanups): Promise<RunMount> {
  const what = `--mount=type=ssh,id=${m.id}`;
  const dir = await mkdtemp(path.join(root, 'ssh-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  await chown(dir, m.uid, m.gid);
  const socket = path.join(dir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', socket], { uid: m.uid, gid: m.gid, stdio: 'ignore' });
  let exited = false;
  agent.once('exit', () => (exited = true));
  agent.once('error', () => (exited = true));
  cleanups.push(async () => {
    if (!exited) agent.kill('SIGTERM');
  });
  for (let waited = 0; !(await lstat(socket).then(() => true, () => false)); waited += 20) {
    if (exited || waited > 10_000) throw new Error(`${what}: ssh-agent did not start on this worker`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const key of m.keys) {
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
    if (code !== 0) throw new RunStepError(`${what}: a key sent for "${m.id}" could not be loaded into the SSH agent (${stderr.trim().split('\n')[0] || `ssh-add exited with ${code}`}); send a private key without a passphrase`);
  }
  await chown(socket, m.uid, m.gid);
  await chmod(socket, m.mode);
  return { type: 'bind', source: socket, destination: m.target, readonly: false };
}

import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerCgroup, type StepCgroupLimits } from './cgroup.js';
import { spawnPiped, type PipedChild } from './spawn.js';

const SHELL_NAME = 'strata-parked-runtime';
const STOP_WAIT_MS = 5000;
const DESTROY_ATTEMPTS = 50;
const DESTROY_RETRY_MS = 20;
/**
 * util-linux's setpriv, which sets PR_SET_PDEATHSIG before it execs the shell: a parked shell (stopped
 * until its step comes) then dies with the worker that spawned it, even SIGKILLed, instead of staying
 * stopped for good. The signal is kept across the shell's exec of the runtime.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((path) => existsSync(path));

/**
 * A step's cgroups with the process that will become its OCI runtime already inside them
 * (docs/adr/0042). On cgroup v1 the first process moved into a cgroup after a quiet moment waits
 * for an RCU grace period (5-23 ms measured on this machine's kernel), which crun paid on every
 * step when it placed the container itself; a process forked inside the cgroups is born in them
 * for nothing. So a shell is started, stops itself, and is moved into a new step's cgroups before
 * the step needs them; `start` continues it and it execs the runtime (`crun
 * --cgroup-manager=disabled run …`), whose container inherits the cgroups.
 */
export class ParkedRuntime {
  private started = false;
  private discarded: Promise<void> | undefined;

  private constructor(
    /** The container id the runtime's arguments name. */
    readonly id: string,
    readonly cgroup: ContainerCgroup,
    /** The limits its cgroups carry. */
    readonly limits: StepCgroupLimits,
    private readonly child: PipedChild,
  ) {}

  /**
   * Creates the cgroups with `limits`, starts the shell that will exec `file args…`, waits until it
   * has stopped, and once `joinWhen` settles moves it into them.
   */
  static async park(id: string, file: string, args: readonly string[], limits: StepCgroupLimits, joinWhen: Promise<void>): Promise<ParkedRuntime> {
    const cgroup = await ContainerCgroup.createWhole(id);
    try {
      await cgroup.limit(limits);
    } catch (error) {
      await cgroup.destroy();
      throw error;
    }
    const shell = ['-c', 'kill -STOP $$ && exec "$@"', SHELL_NAME, file, ...args];
    const child = SETPRIV ? spawnPiped(SETPRIV, ['--pdeathsig', 'KILL', '/bin/sh', ...shell]) : spawnPiped('/bin/sh', shell);
    const parked = new ParkedRuntime(id, cgroup, limits, child);
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject);
        child.once('spawn', () => resolve());
      });
      await parked.stopped();
      await joinWhen;
      await cgroup.join(child.pid!);
      return parked;
    } catch (error) {
      await parked.discard();
      throw error;
    }
  }

  /** Whether the parked shell is still there to be started (nothing killed it meanwhile). */
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null && this.discarded === undefined;
  }

  /** Continues the shell, which execs the runtime; its stdout and stderr are the child's. Once only. */
  start(): PipedChild {
    if (this.started) throw new Error(`the parked runtime of ${this.id} was already started`);
    this.started = true;
    this.child.kill('SIGCONT');
    return this.child;
  }

  /**
   * Waits for the runtime to exit (killing the shell first if it was never started) and removes the
   * cgroups. Idempotent.
   */
  discard(): Promise<void> {
    this.discarded ??= (async () => {
      if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) {
        const closed = new Promise<void>((resolve) => this.child.once('close', () => resolve()));
        this.child.stdout.resume();
        this.child.stderr.resume();
        if (!this.started) this.child.kill('SIGKILL');
        await closed;
      }
      await destroyOnceEmpty(this.cgroup);
    })();
    return this.discarded;
  }

  /** Polls the shell's state until it has stopped itself (`T`), so a SIGCONT cannot come before its SIGSTOP. */
  private async stopped(): Promise<void> {
    const deadline = Date.now() + STOP_WAIT_MS;
    for (;;) {
      const stat = await readFile(`/proc/${this.child.pid}/stat`, 'utf8').catch(() => '');
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'T') return;
      if (state === '' || state === 'Z' || this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error('the parked runtime shell exited before it stopped');
      }
      if (Date.now() > deadline) throw new Error(`the parked runtime shell did not stop within ${STOP_WAIT_MS} ms`);
      await sleep(1);
    }
  }
}

/** The parked shells whose runtime arguments name a bundle under `bundlesDir`: their pids and container ids. */
export async function parkedRuntimesUnder(bundlesDir: string): Promise<{ pid: number; id: string }[]> {
  const found: { pid: number; id: string }[] = [];
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[3] !== SHELL_NAME || !argv.some((arg) => arg.startsWith(`${bundlesDir}/`))) continue;
    found.push({ pid: Number(pid), id: argv.filter(Boolean).at(-1)! });
  }
  return found;
}

/**
 * Kills the parked shells a worker left without closing its executor (one killed before setpriv
 * could end them, or on a host without it) and removes their cgroups: those under `bundlesDir`.
 * Returns the container ids cleared.
 */
export async function clearParkedRuntimes(bundlesDir: string): Promise<string[]> {
  const cleared: string[] = [];
  for (const { pid, id } of await parkedRuntimesUnder(bundlesDir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      continue; // gone meanwhile
    }
    // Its cgroups can go once it has (its parent is init now, which reaps it).
    for (let attempt = 0; attempt < DESTROY_ATTEMPTS && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) !== ''; attempt++) await sleep(DESTROY_RETRY_MS);
    await removeContainerCgroups(id);
    cleared.push(id);
  }
  return cleared;
}

/**
 * Removes the cgroups Strata made for container `id` (a parked runtime's, which the runtime itself
 * leaves alone), once its last processes have left them; nothing when there are none. For a
 * container a killed worker left, after the runtime deleted it.
 */
export async function removeContainerCgroups(id: string): Promise<void> {
  await destroyOnceEmpty(await ContainerCgroup.forContainer(id));
}

/** Removes the cgroups, retrying while the last processes leave them (as a pid namespace goes). */
async function destroyOnceEmpty(cgroup: ContainerCgroup): Promise<void> {
  for (let attempt = 0; !(await cgroup.destroy()) && attempt < DESTROY_ATTEMPTS; attempt++) await sleep(DESTROY_RETRY_MS);
}

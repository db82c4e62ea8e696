import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ContainerCgroup, type StepCgroupLimits } from './cgroup.js';
import { spawnPiped, type PipedChild } from './spawn.js';

const SHELL_NAME = 'strata-parked-runtime';
const STOP_WAIT_MS = 5000;
const DESTROY_ATTEMPTS = 50;
const DESTROY_RETRY_MS = 20;

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
    const child = spawnPiped('/bin/sh', ['-c', 'kill -STOP $$ && exec "$@"', SHELL_NAME, file, ...args]);
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

/**
 * Kills the parked shells a killed worker left (stopped for good once their worker is gone) and
 * removes their cgroups: those whose runtime arguments name a bundle under `bundlesDir`. Returns the
 * container ids cleared.
 */
export async function clearParkedRuntimes(bundlesDir: string): Promise<string[]> {
  const cleared: string[] = [];
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv[3] !== SHELL_NAME || !argv.some((arg) => arg.startsWith(`${bundlesDir}/`))) continue;
    const id = argv.filter(Boolean).at(-1)!;
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      continue; // gone meanwhile
    }
    // Its cgroups can go once it has (its parent is init now, which reaps it).
    for (let attempt = 0; attempt < DESTROY_ATTEMPTS && (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')) !== ''; attempt++) await sleep(DESTROY_RETRY_MS);
    await destroyOnceEmpty(await ContainerCgroup.forContainer(id));
    cleared.push(id);
  }
  return cleared;
}

/** Removes the cgroups, retrying while the last processes leave them (as a pid namespace goes). */
async function destroyOnceEmpty(cgroup: ContainerCgroup): Promise<void> {
  for (let attempt = 0; !(await cgroup.destroy()) && attempt < DESTROY_ATTEMPTS; attempt++) await sleep(DESTROY_RETRY_MS);
}

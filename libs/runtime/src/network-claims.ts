import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** What one RUN step's bridge network holds on the host, recorded so a later worker can undo it. */
export interface StepClaim {
  /** Index of the /30 link in the containers' subnet. */
  index: number;
  /** The worker (its data directory's key) that made it. */
  owner: string;
  pid: number;
  /** The process's start time (field 22 of /proc/<pid>/stat): a reused pid is not the same process. */
  started: string;
  netns: string;
  hostIf: string;
  /** The namespace the host ends live in (tests); absent: the worker's own. */
  hostNetns?: string;
}

/**
 * The /30 links of a containers' subnet, shared by every worker on the host (several workers, or
 * several test stacks, may run on one machine): an index is claimed by creating its file with
 * O_EXCL under a directory on /run, which a reboot clears together with the veths and namespaces.
 */
export class SubnetClaims {
  private next = 0;

  constructor(
    readonly dir: string,
    private readonly size = 16384,
  ) {}

  async claim(record: Omit<StepClaim, 'index' | 'pid' | 'started'>): Promise<StepClaim> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const self = { pid: process.pid, started: await processStart(process.pid) };
    for (let i = 0; i < this.size; i++) {
      const index = (this.next + i) % this.size;
      const claim: StepClaim = { index, ...record, ...self };
      try {
        await writeFile(path.join(this.dir, String(index)), JSON.stringify(claim), { flag: 'wx', mode: 0o600 });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
        throw e;
      }
      this.next = index + 1;
      return claim;
    }
    throw new Error(`no free link in the RUN containers' subnet: ${this.size} steps hold one on this host`);
  }

  /** Frees a link; with `netns`, only while the claim is still that step's (another worker may have freed and reclaimed it). */
  async release(index: number, netns?: string): Promise<void> {
    const file = path.join(this.dir, String(index));
    if (netns !== undefined) {
      const text = await readFile(file, 'utf8').catch(() => '');
      if (!text.includes(`"netns":${JSON.stringify(netns)}`)) return;
    }
    await rm(file, { force: true });
  }

  /** Claims whose process is gone, or that a previous worker on `owner`'s data directory left. */
  async leftovers(owner: string): Promise<StepClaim[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const found: StepClaim[] = [];
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue;
      let claim: StepClaim;
      try {
        claim = JSON.parse(await readFile(path.join(this.dir, name), 'utf8')) as StepClaim;
      } catch {
        // Being written right now, or half-written by a worker killed mid-claim (nothing was set up for it yet).
        const written = await stat(path.join(this.dir, name)).catch(() => null);
        if (written && Date.now() - written.mtimeMs > 10_000) await rm(path.join(this.dir, name), { force: true });
        continue;
      }
      const mine = claim.owner === owner && claim.pid !== process.pid;
      if (mine || !(await isAlive(claim.pid, claim.started))) found.push(claim);
    }
    return found;
  }
}

/** Start time of a process in clock ticks since boot, or "" when it does not exist. */
export async function processStart(pid: number): Promise<string> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? '';
}

export async function isAlive(pid: number, started: string): Promise<boolean> {
  const now = await processStart(pid);
  return now !== '' && now === started;
}

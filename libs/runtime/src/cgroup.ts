import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { readMounts } from './mountinfo.js';

export interface CgroupCounters {
  /** Processes the kernel OOM-killed in the container's cgroups. */
  oomKills: number;
  /** Memory use reached the limit at some point (usage watermark or failure counters). */
  memoryLimitReached: boolean;
  /** A fork was refused, or the process count reached the pids limit. */
  pidsLimitReached: boolean;
}

/** What one step's cgroups enforce, set just before it runs (`limit`). */
export interface StepCgroupLimits {
  memoryBytes?: number;
  pids?: number;
  /** CPUs' worth of time per period (CFS quota). */
  cpus?: number;
  /** `sandboxed`: only the devices a container gets (as runc and crun allow them); `host`: the worker's own. */
  devices: 'sandboxed' | 'host';
}

/**
 * The device rules runc and crun give a container (v1 `devices.allow` syntax): any node may be made
 * (as in Docker), and only these opened: null, random, full, tty, zero, urandom, console, ptys, ptmx.
 */
const SANDBOX_DEVICE_RULES = ['c *:* m', 'b *:* m', 'c 1:3 rwm', 'c 1:8 rwm', 'c 1:7 rwm', 'c 5:0 rwm', 'c 1:5 rwm', 'c 1:9 rwm', 'c 5:1 rwm', 'c 136:* rwm', 'c 5:2 rwm'];

interface Hierarchy {
  controllers: string[];
  /** Where the hierarchy is mounted. */
  mountPoint: string;
}

/**
 * A cgroup that Strata creates as the parent of one container's cgroup and that carries its memory
 * and pids limits. `runc run` removes the container's own cgroup when the process exits, taking
 * its OOM and pids counters with it; the parent outlives runc, so the counters can be read after.
 *
 * The runtime is given an absolute `cgroupsPath`, `<base>/strata-runtime/<id>/ctr`, which runc and
 * crun both place at that path under every hierarchy's mount point (a relative one runc nests under
 * its own cgroup in each v1 hierarchy, crun 1.8 under each hierarchy's root: docs/adr/0038). The
 * base is the worker's own cgroup: on cgroup v1 the deepest of its per-hierarchy paths when the
 * others are its ancestors (here `memory:/process_api/<id>`, every other hierarchy `/`), so the
 * steps stay inside whatever limits the worker itself runs under.
 */
export class ContainerCgroup {
  /** Highest counters seen in the container's own cgroup while it ran (runc deletes it on exit). */
  private polled = { oomKills: 0, pidsEvents: 0 };
  private poller: NodeJS.Timeout | undefined;

  private constructor(
    readonly id: string,
    private readonly hierarchies: Hierarchy[],
    private readonly base: string,
    private readonly unified: boolean,
    private limits: { memoryBytes?: number; pids?: number },
    /** Strata made the container's own cgroup (`createWhole`): it outlives the runtime, so its counters are read at the end. */
    private readonly ownsLeaf = false,
  ) {}

  /** Whether this host's cgroups are v1 (or hybrid): the only layout {@link createWhole} serves. */
  static async isV1(): Promise<boolean> {
    return !(await ownHierarchies()).unified;
  }

  /**
   * Creates the container's own cgroup (`ctr`) and its parent in every v1 hierarchy (and the hybrid
   * host's v2 one), as the runtime would, ready for a process to {@link join}: for a runtime told to
   * leave cgroups alone (crun `--cgroup-manager=disabled`), whose container is then born in them
   * (docs/adr/0042). No limits yet: {@link limit} sets them.
   */
  static async createWhole(id: string): Promise<ContainerCgroup> {
    const { hierarchies, base, unified } = await ownHierarchies();
    if (unified) throw new Error('a whole container cgroup is made on cgroup v1 only');
    const cgroup = new ContainerCgroup(id, hierarchies, base, unified, {}, true);
    try {
      const makeIn = async (hierarchy: Hierarchy): Promise<void> => {
        const leaf = join(cgroup.parentIn(hierarchy), 'ctr');
        if (!hierarchy.controllers.includes('cpuset')) {
          await mkdir(leaf, { recursive: true });
          return;
        }
        // A v1 cpuset takes no process until its cpus and mems are set: each new level copies its parent's.
        let dir = hierarchy.mountPoint;
        for (const level of [...base.split('/').filter(Boolean), 'strata-runtime', id, 'ctr']) {
          const parent = dir;
          dir = join(dir, level);
          if (await exists(dir)) continue;
          await mkdir(dir);
          for (const file of ['cpuset.cpus', 'cpuset.mems']) await writeFile(join(dir, file), await readFile(join(parent, file), 'utf8'));
        }
      };
      // One after the other: side by side they would take every thread of the pool the running step needs.
      for (const hierarchy of hierarchies) await makeIn(hierarchy);
      return cgroup;
    } catch (error) {
      await cgroup.destroy();
      throw error;
    }
  }

  /** The cgroups of container `id` as this worker places them (to remove what a killed worker left). */
  static async forContainer(id: string): Promise<ContainerCgroup> {
    const { hierarchies, base, unified } = await ownHierarchies();
    return new ContainerCgroup(id, hierarchies, base, unified, {});
  }

  /** Moves a process into the container's cgroup in every hierarchy (cgroups from {@link createWhole}). */
  async join(pid: number): Promise<void> {
    for (const hierarchy of this.hierarchies) await writeFile(join(this.parentIn(hierarchy), 'ctr', 'cgroup.procs'), String(pid));
  }

  /** Sets a step's limits on cgroups from {@link createWhole}, before its container starts. */
  async limit(limits: StepCgroupLimits): Promise<void> {
    this.limits = { ...(limits.memoryBytes !== undefined ? { memoryBytes: limits.memoryBytes } : {}), ...(limits.pids !== undefined ? { pids: limits.pids } : {}) };
    await this.limitParent(this.limits);
    const cpu = this.dirFor('cpu');
    if (limits.cpus !== undefined && cpu) {
      await writeFile(join(cpu, 'ctr', 'cpu.cfs_period_us'), '100000');
      await writeFile(join(cpu, 'ctr', 'cpu.cfs_quota_us'), String(Math.max(1000, Math.round(limits.cpus * 100_000))));
    }
    const devices = this.dirFor('devices');
    if (limits.devices === 'sandboxed') {
      if (!devices) throw new Error('no cgroup v1 devices hierarchy is mounted');
      await writeFile(join(devices, 'ctr', 'devices.deny'), 'a');
      for (const rule of SANDBOX_DEVICE_RULES) await writeFile(join(devices, 'ctr', 'devices.allow'), rule);
    }
  }

  /** The memory and pids limits on the v1 parents (which outlive the runtime's own cgroup). */
  private async limitParent(limits: { memoryBytes?: number; pids?: number }): Promise<void> {
    const memory = this.dirFor('memory');
    if (limits.memoryBytes !== undefined) {
      if (!memory) throw new Error('no cgroup v1 memory hierarchy is mounted');
      await mkdir(memory, { recursive: true });
      await writeFile(join(memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // Without swap accounting this file is absent and there is no swap to limit.
      if (await exists(join(memory, 'memory.memsw.limit_in_bytes'))) {
        await writeFile(join(memory, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      }
    } else if (memory) await mkdir(memory, { recursive: true });
    const pids = this.dirFor('pids');
    if (limits.pids !== undefined) {
      if (!pids) throw new Error('no cgroup v1 pids hierarchy is mounted');
      await mkdir(pids, { recursive: true });
      await writeFile(join(pids, 'pids.max'), String(limits.pids));
    } else if (pids) await mkdir(pids, { recursive: true });
  }

  /** The container's own cgroup, absolute (the same path in every hierarchy), for the spec's `cgroupsPath`. */
  get cgroupsPath(): string {
    return posix.join(this.base, 'strata-runtime', this.id, 'ctr');
  }

  /** The parent carrying the limits in one hierarchy. */
  private parentIn(hierarchy: Hierarchy): string {
    return join(hierarchy.mountPoint, this.base, 'strata-runtime', this.id);
  }

  static async create(id: string, limits: { memoryBytes?: number; pids?: number }): Promise<ContainerCgroup> {
    const { hierarchies, base, unified } = await ownHierarchies();
    const cgroup = new ContainerCgroup(id, hierarchies, base, unified, limits);
    try {
      if (unified) {
        const root = join(hierarchies[0]!.mountPoint, base);
        await mkdir(join(root, 'strata-runtime', id), { recursive: true });
        // Controllers must be enabled on every level down to the container's cgroup.
        await writeFile(join(root, 'strata-runtime', 'cgroup.subtree_control'), '+memory +pids +cpu').catch(() => undefined);
        await writeFile(join(root, 'strata-runtime', id, 'cgroup.subtree_control'), '+memory +pids +cpu').catch(() => undefined);
        if (limits.memoryBytes !== undefined) {
          await writeFile(join(root, 'strata-runtime', id, 'memory.max'), String(limits.memoryBytes));
          await writeFile(join(root, 'strata-runtime', id, 'memory.swap.max'), '0').catch(() => undefined);
        }
        if (limits.pids !== undefined) await writeFile(join(root, 'strata-runtime', id, 'pids.max'), String(limits.pids));
        return cgroup;
      }
      await cgroup.limitParent(limits);
      return cgroup;
    } catch (error) {
      await cgroup.destroy();
      throw error;
    }
  }

  /**
   * Polls the container's own cgroup while it runs. Measured on kernel 6.18 with cgroup v1: the
   * OOM-kill and pids "max" counters are kept in the victim's cgroup only, not in the parent that
   * holds the limit, and runc deletes that cgroup when the process exits.
   */
  watch(intervalMs = 100): void {
    const poll = async (): Promise<void> => {
      const own = await this.read(true);
      this.polled.oomKills = Math.max(this.polled.oomKills, own.oomKills);
      this.polled.pidsEvents = Math.max(this.polled.pidsEvents, own.pidsEvents);
    };
    this.poller = setInterval(() => void poll().catch(() => undefined), intervalMs);
    this.poller.unref();
  }

  async counters(): Promise<CgroupCounters> {
    if (this.poller) clearInterval(this.poller);
    // The container's own cgroup is still there when Strata made it; runc and crun delete theirs (the polls saw it).
    if (this.ownsLeaf) {
      const own = await this.read(true);
      this.polled.oomKills = Math.max(this.polled.oomKills, own.oomKills);
      this.polled.pidsEvents = Math.max(this.polled.pidsEvents, own.pidsEvents);
    }
    const parent = await this.read(false);
    const oomKills = Math.max(parent.oomKills, this.polled.oomKills);
    // The parent's watermarks outlive the container: usage at the limit, processes at the limit.
    const memoryLimitReached = this.limits.memoryBytes !== undefined && parent.memoryPeak >= this.limits.memoryBytes;
    const pidsLimitReached =
      parent.pidsEvents > 0 || this.polled.pidsEvents > 0 || (this.limits.pids !== undefined && parent.pidsPeak >= this.limits.pids);
    return { oomKills, memoryLimitReached, pidsLimitReached };
  }

  private async read(container: boolean): Promise<{ oomKills: number; memoryPeak: number; pidsEvents: number; pidsPeak: number }> {
    const leaf = container ? 'ctr' : '';
    if (this.unified) {
      const dir = join(this.parentIn(this.hierarchies[0]!), leaf);
      const memoryEvents = await readKeyed(join(dir, 'memory.events'));
      const pidsEvents = await readKeyed(join(dir, 'pids.events'));
      return {
        oomKills: memoryEvents.oom_kill ?? 0,
        memoryPeak: (memoryEvents.max ?? 0) > 0 ? Number.MAX_SAFE_INTEGER : await readNumber(join(dir, 'memory.peak')),
        pidsEvents: pidsEvents.max ?? 0,
        pidsPeak: await readNumber(join(dir, 'pids.peak')),
      };
    }
    const memory = this.dirFor('memory');
    const pids = this.dirFor('pids');
    const oom = memory ? await readKeyed(join(memory, leaf, 'memory.oom_control')) : {};
    const pidsEvents = pids ? await readKeyed(join(pids, leaf, 'pids.events')) : {};
    return {
      oomKills: oom.oom_kill ?? 0,
      memoryPeak: memory ? await readNumber(join(memory, leaf, 'memory.max_usage_in_bytes')) : 0,
      pidsEvents: pidsEvents.max ?? 0,
      pidsPeak: pids ? await readNumber(join(pids, leaf, 'pids.peak')) : 0,
    };
  }

  /**
   * Removes the parent cgroups in every hierarchy (the runtime creates them in all of them). False
   * when one is left: a process still in it (one exiting as its pid namespace goes), or no rights.
   */
  async destroy(): Promise<boolean> {
    let removed = true;
    for (const hierarchy of this.hierarchies) {
      const dir = this.parentIn(hierarchy);
      await rmdir(join(dir, 'ctr')).catch(() => undefined);
      await rmdir(dir).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') removed = false;
      });
    }
    return removed;
  }

  private dirFor(controller: string): string | undefined {
    const hierarchy = this.hierarchies.find((candidate) => candidate.controllers.includes(controller));
    return hierarchy ? this.parentIn(hierarchy) : undefined;
  }
}

type OwnHierarchies = { hierarchies: Hierarchy[]; base: string; unified: boolean };

/** The worker's own cgroups: read once (they do not move while it runs), not on every step. */
let own: Promise<OwnHierarchies> | undefined;
function ownHierarchies(): Promise<OwnHierarchies> {
  if (!own) {
    const reading = readOwnHierarchies();
    own = reading;
    reading.catch(() => {
      if (own === reading) own = undefined;
    });
  }
  return own;
}

async function readOwnHierarchies(): Promise<OwnHierarchies> {
  const [selfCgroup, mounts] = await Promise.all([readFile('/proc/self/cgroup', 'utf8'), readMounts()]);
  const hierarchies: Hierarchy[] = [];
  let unified = false;
  const v1Lines = selfCgroup.split('\n').filter((line) => line !== '' && !line.startsWith('0::'));
  if (v1Lines.length === 0) {
    unified = true;
    const path = selfCgroup.split('\n').find((line) => line.startsWith('0::'))?.slice(3) ?? '/';
    const mount = mounts.find((candidate) => candidate.fstype === 'cgroup2');
    if (!mount) throw new Error('no cgroup filesystem is mounted');
    hierarchies.push({ controllers: ['memory', 'pids', 'cpu'], mountPoint: mount.mountPoint });
    return { hierarchies, base: posix.resolve('/', relativeTo(path, mount.root)), unified };
  }
  // Hybrid mode: runc and crun also create the container's cgroup in the v2 hierarchy; destroy() must find it.
  const v2Mount = mounts.find((candidate) => candidate.fstype === 'cgroup2');
  if (v2Mount && selfCgroup.split('\n').some((line) => line.startsWith('0::'))) hierarchies.push({ controllers: [], mountPoint: v2Mount.mountPoint });
  const own: { controllers: string[]; path: string }[] = [];
  for (const line of v1Lines) {
    const [, list, path] = line.split(':');
    const controllers = list!.split(',');
    const mount = mounts.find((candidate) => candidate.fstype === 'cgroup' && controllers.every((c) => candidate.superOptions.includes(c)));
    if (!mount) continue;
    hierarchies.push({ controllers, mountPoint: mount.mountPoint });
    own.push({ controllers, path: relativeTo(path!, mount.root) });
  }
  return { hierarchies, base: commonBase(own), unified };
}

/**
 * One absolute base for every v1 hierarchy: the deepest of the worker's own paths when the others
 * are its ancestors (`/` is everyone's), so the step is under the worker's cgroup in each of them;
 * otherwise the memory hierarchy's (the one whose limit matters most), the others then not nested.
 */
export function commonBase(own: { controllers: string[]; path: string }[]): string {
  const paths = own.map((entry) => posix.resolve('/', entry.path));
  const deepest = paths.reduce((a, b) => (b.split('/').length > a.split('/').length ? b : a), '/');
  const under = (path: string, ancestor: string): boolean => ancestor === '/' || path === ancestor || path.startsWith(`${ancestor}/`);
  if (paths.every((path) => under(deepest, path))) return deepest;
  return posix.resolve('/', own.find((entry) => entry.controllers.includes('memory'))?.path ?? '/');
}

function relativeTo(path: string, root: string): string {
  return root !== '/' && path.startsWith(root) ? path.slice(root.length) : path;
}

async function readKeyed(path: string): Promise<Record<string, number>> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const result: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [key, value] = line.trim().split(/\s+/);
    if (key && value !== undefined) result[key] = Number(value);
  }
  return result;
}

async function readNumber(path: string): Promise<number> {
  const text = await readFile(path, 'utf8').catch(() => '0');
  return Number(text.trim()) || 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

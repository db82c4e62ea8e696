import { access, mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface CgroupCounters {
  /** Processes the kernel OOM-killed in the container's cgroups. */
  oomKills: number;
  /** Memory use reached the limit at some point (usage watermark or failure counters). */
  memoryLimitReached: boolean;
  /** A fork was refused, or the process count reached the pids limit. */
  pidsLimitReached: boolean;
}

interface Hierarchy {
  controllers: string[];
  /** The worker's own cgroup directory in this hierarchy. */
  ownDir: string;
}

/**
 * A cgroup that Strata creates as the parent of one container's cgroup and that carries its memory
 * and pids limits. `runc run` removes the container's own cgroup when the process exits, taking
 * its OOM and pids counters with it; the parent outlives runc, so the counters can be read after.
 * runc is given `cgroupsPath` = `strata-runtime/<id>/ctr`, relative to its own (= our) cgroup.
 */
export class ContainerCgroup {
  /** Highest counters seen in the container's own cgroup while it ran (runc deletes it on exit). */
  private polled = { oomKills: 0, pidsEvents: 0 };
  private poller: NodeJS.Timeout | undefined;

  private constructor(
    readonly id: string,
    private readonly hierarchies: Hierarchy[],
    private readonly unified: boolean,
    private readonly limits: { memoryBytes?: number; pids?: number },
  ) {}

  get runcPath(): string {
    return `strata-runtime/${this.id}/ctr`;
  }

  static async create(id: string, limits: { memoryBytes?: number; pids?: number }): Promise<ContainerCgroup> {
    const { hierarchies, unified } = await ownHierarchies();
    const cgroup = new ContainerCgroup(id, hierarchies, unified, limits);
    try {
      if (unified) {
        const root = hierarchies[0]!.ownDir;
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
      const memory = cgroup.dirFor('memory');
      if (limits.memoryBytes !== undefined) {
        if (!memory) throw new Error('no cgroup v1 memory hierarchy is mounted');
        await mkdir(memory, { recursive: true });
        await writeFile(join(memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
        // Without swap accounting this file is absent and there is no swap to limit.
        if (await exists(join(memory, 'memory.memsw.limit_in_bytes'))) {
          await writeFile(join(memory, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
        }
      } else if (memory) await mkdir(memory, { recursive: true });
      const pids = cgroup.dirFor('pids');
      if (limits.pids !== undefined) {
        if (!pids) throw new Error('no cgroup v1 pids hierarchy is mounted');
        await mkdir(pids, { recursive: true });
        await writeFile(join(pids, 'pids.max'), String(limits.pids));
      } else if (pids) await mkdir(pids, { recursive: true });
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
      const dir = join(this.hierarchies[0]!.ownDir, 'strata-runtime', this.id, leaf);
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

  /** Removes the parent cgroups in every hierarchy (runc creates them in all of them). */
  async destroy(): Promise<void> {
    for (const hierarchy of this.hierarchies) {
      const dir = join(hierarchy.ownDir, 'strata-runtime', this.id);
      await rmdir(join(dir, 'ctr')).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
    }
  }

  private dirFor(controller: string): string | undefined {
    const hierarchy = this.hierarchies.find((candidate) => candidate.controllers.includes(controller));
    return hierarchy ? join(hierarchy.ownDir, 'strata-runtime', this.id) : undefined;
  }
}

async function ownHierarchies(): Promise<{ hierarchies: Hierarchy[]; unified: boolean }> {
  const [selfCgroup, mountinfo] = await Promise.all([readFile('/proc/self/cgroup', 'utf8'), readFile('/proc/self/mountinfo', 'utf8')]);
  const mounts = mountinfo
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [before, after] = line.split(' - ');
      const fields = before!.split(' ');
      const [fstype, , superOptions] = after!.split(' ');
      return { root: fields[3]!, mountPoint: unescapeMount(fields[4]!), fstype: fstype!, options: (superOptions ?? '').split(',') };
    });
  const hierarchies: Hierarchy[] = [];
  let unified = false;
  const v1Lines = selfCgroup.split('\n').filter((line) => line !== '' && !line.startsWith('0::'));
  if (v1Lines.length === 0) {
    unified = true;
    const path = selfCgroup.split('\n').find((line) => line.startsWith('0::'))?.slice(3) ?? '/';
    const mount = mounts.find((candidate) => candidate.fstype === 'cgroup2');
    if (!mount) throw new Error('no cgroup filesystem is mounted');
    hierarchies.push({ controllers: ['memory', 'pids', 'cpu'], ownDir: join(mount.mountPoint, relativeTo(path, mount.root)) });
    return { hierarchies, unified };
  }
  // Hybrid mode: runc also creates the container's cgroup in the v2 hierarchy; destroy() must find it.
  const v2Line = selfCgroup.split('\n').find((line) => line.startsWith('0::'));
  const v2Mount = mounts.find((candidate) => candidate.fstype === 'cgroup2');
  if (v2Line && v2Mount) hierarchies.push({ controllers: [], ownDir: join(v2Mount.mountPoint, relativeTo(v2Line.slice(3), v2Mount.root)) });
  for (const line of v1Lines) {
    const [, list, path] = line.split(':');
    const controllers = list!.split(',');
    const mount = mounts.find((candidate) => candidate.fstype === 'cgroup' && controllers.every((c) => candidate.options.includes(c)));
    if (!mount) continue;
    hierarchies.push({ controllers, ownDir: join(mount.mountPoint, relativeTo(path!, mount.root)) });
  }
  return { hierarchies, unified };
}

function relativeTo(path: string, root: string): string {
  return root !== '/' && path.startsWith(root) ? path.slice(root.length) : path;
}

function unescapeMount(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
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

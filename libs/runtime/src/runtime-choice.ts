import { readFile } from 'node:fs/promises';
import { runCommand } from './command.js';
import { readMounts } from './mountinfo.js';

/** The OCI runtimes RUN steps can use. */
export type OciRuntime = 'runc' | 'crun' | 'runsc';
/** STRATA_RUN_RUNTIME: one of them, or `auto` (crun where it can run here, else runc). */
export type RuntimeSetting = OciRuntime | 'auto';

export interface RuntimeChoice {
  runtime: OciRuntime;
  /** Why `auto` did not take crun; undefined when it did, or when the runtime was named. */
  fallback?: string;
}

const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Why crun (1.8) cannot run RUN steps on this host, or undefined when it can. Mirrors what crun
 * itself checks and assumes (docs/adr/0038): the binary runs; on a cgroup "hybrid" host (v1
 * hierarchies plus a cgroup2 at /sys/fs/cgroup/unified) the cgroup2 mount holds no controllers
 * (crun refuses the container otherwise); on cgroup v1 every hierarchy that carries a step's
 * limits is mounted at /sys/fs/cgroup/<controllers> (crun joins each hierarchy there and silently
 * skips one it does not find there, which would drop the limit); on cgroup v2 the cgroup2 mount is
 * /sys/fs/cgroup itself.
 */
export async function crunUnusableReason(binary = 'crun'): Promise<string | undefined> {
  try {
    await runCommand(binary, ['--version']);
  } catch (error) {
    const message = (error as Error).message;
    return /ENOENT/.test(message) ? `${binary} is not installed (apt-get install crun)` : `${binary} does not run (${message.split('\n')[0]})`;
  }
  const mounts = (await readMounts()).filter((mount) => mount.fstype === 'cgroup' || mount.fstype === 'cgroup2');
  const v2 = mounts.find((mount) => mount.fstype === 'cgroup2');
  const v1 = mounts.filter((mount) => mount.fstype === 'cgroup');
  if (v1.length === 0) {
    if (v2?.mountPoint !== CGROUP_ROOT) return `the cgroup2 filesystem is not mounted at ${CGROUP_ROOT}, where crun looks for it`;
    return undefined;
  }
  if (v2) {
    if (v2.mountPoint !== `${CGROUP_ROOT}/unified`) return `the cgroup2 filesystem of this hybrid host is mounted at ${v2.mountPoint}, crun expects ${CGROUP_ROOT}/unified`;
    const controllers = (await readFile(`${CGROUP_ROOT}/unified/cgroup.controllers`, 'utf8').catch(() => '')).trim();
    if (controllers !== '') {
      return `cgroup hybrid host whose cgroup2 mount holds controllers (${controllers}), which crun refuses; bind them to cgroup v1 hierarchies (mount -t cgroup -o <controller> cgroup ${CGROUP_ROOT}/<controller>, what npm start / npm test do as root, docs/adr/0038)`;
    }
  }
  for (const controller of ['memory', 'pids']) {
    const mount = v1.find((candidate) => candidate.superOptions.includes(controller));
    if (!mount) return `no cgroup v1 ${controller} hierarchy is mounted`;
    const name = mount.superOptions.filter((option) => CONTROLLERS.has(option)).join(',');
    if (mount.mountPoint !== `${CGROUP_ROOT}/${name}`) {
      return `the cgroup v1 ${controller} hierarchy is mounted at ${mount.mountPoint}; crun only joins ${CGROUP_ROOT}/${name} and would run steps without their ${controller} limit`;
    }
  }
  return undefined;
}

/** STRATA_RUN_RUNTIME resolved on this host: `auto` takes crun when it can run here, else runc; a named crun that cannot run is an error. */
export async function chooseRuntime(setting: RuntimeSetting, crunBinary = 'crun'): Promise<RuntimeChoice> {
  if (setting === 'runc' || setting === 'runsc') return { runtime: setting };
  const reason = await crunUnusableReason(crunBinary);
  if (reason === undefined) return { runtime: 'crun' };
  if (setting === 'crun') throw new Error(`STRATA_RUN_RUNTIME=crun: crun cannot run RUN steps on this host: ${reason}`);
  return { runtime: 'runc', fallback: reason };
}

const CONTROLLERS = new Set(['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'net_cls', 'net_prio', 'blkio', 'perf_event', 'hugetlb', 'pids', 'rdma', 'misc']);

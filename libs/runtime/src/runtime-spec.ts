import { seccompProfile } from './seccomp-profile.js';
import type { ResolvedUser } from './user.js';
import type { RunMount } from './types.js';

/** Docker's default capability set (moby oci/caps/defaults.go). */
export const DOCKER_DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/**
 * What a sandboxed step gets: Docker's set without CAP_NET_RAW (as Podman), so a step cannot open
 * raw or packet sockets on a network other tenants' steps share. `ping` fails in a step (Debian's
 * carries cap_net_raw, which cannot be granted); ICMP datagram sockets work (ping_group_range below).
 */
export const DEFAULT_CAPABILITIES = DOCKER_DEFAULT_CAPABILITIES.filter((cap) => cap !== 'CAP_NET_RAW');

/** Every capability up to CAP_CHECKPOINT_RESTORE (Linux 5.9), by number: a privileged step gets those the worker has. */
export const ALL_CAPABILITIES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW',
  'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD',
  'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG',
  'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** moby oci/defaults.go */
export const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

export const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The network namespace: a new one (runc brings up loopback), a path to join, or none (host network). */
export type NetnsChoice = { kind: 'new' } | { kind: 'path'; path: string } | { kind: 'host' };

export interface RuntimeSpecInput {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
  user: ResolvedUser;
  hostname: string;
  netns: NetnsChoice;
  hostsFile: string;
  resolvConfFile: string;
  mounts: RunMount[];
  /** Relative cgroup path (runc nests it under its own cgroup). */
  cgroupsPath: string;
  cpus?: number;
  /** RLIMIT_NOFILE for the process; runc cannot raise it above the worker's own hard limit. */
  noFile: { soft: number; hard: number };
  /** Limits also enforced on the parent cgroup; repeated here when that cgroup could not be made. */
  memoryBytes?: number;
  pids?: number;
  /**
   * `RUN --security=insecure`: the capabilities given (every one the worker has), every device, no
   * masked or read-only paths, /sys writable (as Docker's --privileged).
   */
  privileged?: { capabilities: string[] };
  /**
   * Run in a user namespace whose ids 0..size-1 are host hostId.. (docs/adr/0022). `sys` is what /sys
   * becomes when the step joins a network namespace its user namespace does not own (sysfs cannot be
   * mounted then): a read-only bind of a sysfs the worker mounted in that network namespace, or of the
   * host's for the host network.
   */
  userns?: { hostId: number; size: number; sys?: string; mknodListener?: string };
}

/** Builds the OCI runtime config (config.json) for one RUN step, after Docker's defaults. */
export function buildRuntimeSpec(input: RuntimeSpecInput): Record<string, unknown> {
  const env = [...input.env];
  if (!env.some((entry) => entry.startsWith('PATH='))) env.push(DEFAULT_PATH);
  if (!env.some((entry) => entry.startsWith('HOME='))) env.push(`HOME=${input.user.home}`);
  const isRoot = input.user.uid === 0;
  const privileged = input.privileged !== undefined;
  const caps = input.privileged?.capabilities ?? DEFAULT_CAPABILITIES;
  const namespaces: { type: string; path?: string }[] = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (input.netns.kind === 'new') namespaces.push({ type: 'network' });
  if (input.netns.kind === 'path') namespaces.push({ type: 'network', path: input.netns.path });
  const userns = privileged ? undefined : input.userns;
  if (userns) namespaces.push({ type: 'user' });
  const sysBind = userns && input.netns.kind !== 'new' ? (userns.sys ?? '/sys') : undefined;

  const mounts: Record<string, unknown>[] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    sysBind
      ? { destination: '/sys', type: 'bind', source: sysBind, options: ['rbind', 'ro', 'nosuid', 'noexec', 'nodev'] }
      : { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'] },
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: [privileged ? 'rw' : 'ro', 'nosuid', 'noexec', 'nodev'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=67108864'] },
    // Generated per step and bind-mounted read-only, so they never land in the layer.
    { destination: '/etc/resolv.conf', type: 'bind', source: input.resolvConfFile, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] },
    { destination: '/etc/hosts', type: 'bind', source: input.hostsFile, options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'] },
  ];
  for (const mount of input.mounts) {
    if (mount.type === 'bind') {
      mounts.push({ destination: mount.destination, type: 'bind', source: mount.source, options: ['rbind', mount.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'] });
    } else {
      const options = ['nosuid', 'nodev', `mode=${(mount.mode ?? 0o1777).toString(8)}`];
      if (mount.sizeBytes !== undefined) options.push(`size=${mount.sizeBytes}`);
      mounts.push({ destination: mount.destination, type: 'tmpfs', source: 'tmpfs', options });
    }
  }

  const resources: Record<string, unknown> = {
    devices: privileged
      ? [{ allow: true, access: 'rwm' }]
      : [
          { allow: false, access: 'rwm' },
          // Docker lets containers mknod any device; using one still needs the allow-list runc adds.
          { allow: true, type: 'c', access: 'm' },
          { allow: true, type: 'b', access: 'm' },
        ],
  };
  if (input.cpus !== undefined) resources.cpu = { quota: Math.max(1000, Math.round(input.cpus * 100_000)), period: 100_000 };
  if (input.memoryBytes !== undefined) resources.memory = { limit: input.memoryBytes, swap: input.memoryBytes };
  if (input.pids !== undefined) resources.pids = { limit: input.pids };

  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: input.user.uid, gid: input.user.gid, additionalGids: input.user.additionalGids },
      args: input.args,
      env,
      cwd: input.cwd,
      capabilities: {
        bounding: caps,
        effective: isRoot ? caps : [],
        permitted: isRoot ? caps : [],
      },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: input.noFile.hard, soft: input.noFile.soft }],
      // setuid binaries and file capabilities cannot raise a sandboxed step above what it started with.
      noNewPrivileges: !privileged,
      oomScoreAdj: 0,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.hostname,
    mounts,
    linux: {
      cgroupsPath: input.cgroupsPath,
      resources,
      namespaces,
      maskedPaths: privileged ? [] : MASKED_PATHS,
      readonlyPaths: privileged ? [] : READONLY_PATHS,
      // `RUN --security=insecure` runs unconfined, as BuildKit runs it.
      ...(privileged ? {} : { seccomp: seccompProfile({ capabilities: caps, ...(userns?.mknodListener !== undefined ? { mknodListener: userns.mknodListener } : {}) }) }),
      ...(userns
        ? {
            uidMappings: [{ containerID: 0, hostID: userns.hostId, size: userns.size }],
            gidMappings: [{ containerID: 0, hostID: userns.hostId, size: userns.size }],
          }
        : {}),
      // Any group may open ICMP datagram sockets (Docker sets the same), which need no raw socket. In a
      // user namespace the range must lie in its gid map, and a network namespace it does not own
      // takes no sysctl from it: the worker sets that one (ContainerExecutor).
      ...(input.netns.kind === 'host' || (userns && input.netns.kind === 'path')
        ? {}
        : { sysctl: { 'net.ipv4.ping_group_range': userns ? `0 ${userns.size - 1}` : '0 2147483647' } }),
    },
  };
}

/** The capabilities of ALL_CAPABILITIES in a bounding set as /proc/<pid>/status shows it (`CapBnd:` in hex). */
export function capabilitiesIn(capBndHex: string): string[] {
  const set = BigInt(`0x${capBndHex}`);
  return ALL_CAPABILITIES.filter((_, bit) => (set >> BigInt(bit)) & 1n);
}

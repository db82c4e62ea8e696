export type NetworkMode = 'none' | 'host' | 'bridge';

export interface ResourceLimits {
  /** Memory limit (no swap on top). */
  memoryBytes?: number;
  /** CPU time as a number of cores (0.5 = half a core). */
  cpus?: number;
  /** Maximum number of processes and threads. */
  pids?: number;
  /** Wall-clock limit; the container is killed when it passes. */
  timeoutMs?: number;
}

export type RunMount =
  | { type: 'bind'; source: string; destination: string; readonly?: boolean }
  | { type: 'tmpfs'; destination: string; sizeBytes?: number; mode?: number };

export interface RunSpec {
  /** argv as executed: shell form must already be wrapped in the image's SHELL by the caller. */
  args: string[];
  /** "KEY=value" entries: the image ENV plus ARGs in scope. PATH and HOME get Docker's defaults when missing. */
  env: string[];
  /** Working directory; created (owned by the user) when missing. Default "/". */
  cwd?: string;
  /** USER value: "", name, uid, uid:gid, name:group. Resolved through the rootfs's /etc/passwd and /etc/group. */
  user?: string;
  hostname?: string;
  network?: NetworkMode;
  limits?: ResourceLimits;
  mounts?: RunMount[];
  /** `RUN --security=insecure`, which the worker allows only when the operator does: a privileged container. */
  privileged?: boolean;
  /**
   * Run in a user namespace: ids 0..size-1 of the step are host hostId..; `dir` is a directory only
   * that range's root may enter, where the executor binds the rootfs (runc opens it from inside the
   * namespace). The rootfs's lower dirs and the mounts' sources must already show the step's owners.
   * `mknodListener`: the mknod supervisor's socket (MknodAgent), which makes the step's device nodes.
   */
  userns?: { hostId: number; size: number; dir: string; mknodListener?: string };
}

export type OutputStream = 'stdout' | 'stderr';

export interface RunOptions {
  /** Root filesystem to run in (a Snapshot's rootfs). */
  rootfs: string;
  /**
   * Called once per line (without the newline) as soon as it is complete; lines over 64 KiB are
   * split. A Promise answered means the consumer is behind: no more output is read (the step blocks
   * on its full pipe, as on a slow terminal) until it settles. Anything else answered is ignored.
   */
  onOutput?: (stream: OutputStream, line: string) => unknown;
  /** Aborting kills the container. */
  signal?: AbortSignal;
}

export interface RunResult {
  /** Exit status; 128 + signal number when the process was killed. */
  exitCode: number;
  /** The memory limit was hit and the kernel killed a process of the step. */
  oomKilled: boolean;
  /** Killed because `limits.timeoutMs` passed. */
  timedOut: boolean;
  /** Killed because the signal was aborted. */
  cancelled: boolean;
  /** A fork failed because the pids limit was reached (undefined when that cannot be known). */
  pidsLimitHit?: boolean;
  durationMs: number;
  /** Last lines of output (both streams, in arrival order), for error messages. */
  outputTail: string[];
}

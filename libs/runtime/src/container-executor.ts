import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { chown, lstat, mkdir, readFile, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { ContainerCgroup, type CgroupCounters, type StepCgroupLimits } from './cgroup.js';
import { CrunSeccompCache } from './crun-seccomp.js';
import { runCommand } from './command.js';
import { exists } from './fs-exists.js';
import { LineSplitter } from './line-splitter.js';
import { MountStubs } from './mount-stubs.js';
import { clearParkedRuntimes, ParkedRuntime } from './parked-runtime.js';
import { spawnPiped } from './spawn.js';
import type { BridgeNetwork, NetworkAttachment } from './network.js';
import { resolveInRoot } from '@strata/oci';
import { ALL_CAPABILITIES, buildRuntimeSpec, capabilitiesIn, type NetnsChoice } from './runtime-spec.js';
import type { NetworkMode, OutputStream, RunOptions, RunResult, RunSpec } from './types.js';
import type { OciRuntime } from './runtime-choice.js';
import { resolveUser } from './user.js';
import { constants, mount, umount } from '@strata/native';

export interface ContainerExecutorOptions {
  /** The worker's data directory: bundles under `<dataDir>/bundles`, runc state under `<dataDir>/runc`. */
  dataDir: string;
  /**
   * The OCI runtime: runc (default), crun (the same sandbox, a cheaper start: docs/adr/0038), or
   * gVisor's runsc, whose own kernel serves the step's syscalls.
   */
  runtime?: OciRuntime;
  /** runsc's platform (default ptrace, which needs no virtualisation). */
  runscPlatform?: string;
  /** The runtime's binary (default "runc", "crun" or "runsc" on PATH). */
  runc?: string;
  /** Needed for `network: 'bridge'`. */
  bridge?: BridgeNetwork;
  /** Contents of the container's /etc/resolv.conf; default: the host's, without the nameservers the step's network cannot reach. */
  resolvConf?: string;
  /** Lines kept in `RunResult.outputTail`. */
  outputTailLines?: number;
  /** crun: compile each seccomp profile once and pass the filter to later steps (default true; docs/adr/0038). */
  crunSeccompCache?: boolean;
  /**
   * crun on cgroup v1: keep the next step's cgroups made, with the process that becomes its runtime
   * already in them (docs/adr/0042), while a step runs. `close()` lets it go.
   */
  parkAhead?: boolean;
}

export class ContainerStartError extends Error {
  override readonly name = 'ContainerStartError';
}

const KILL_RETRY_MS = 100;

/** Runs RUN steps as containers of the OCI runtime chosen (crun, runc or runsc: `runtime`), one container per call. */
export class ContainerExecutor {
  private readonly runc: string;
  private readonly runcRoot: string;
  private readonly bundlesDir: string;
  /** crun's compiled seccomp filters (crun only). */
  private readonly crunSeccomp: CrunSeccompCache | undefined;
  /** Cgroups and bundles of finished containers being removed. */
  private readonly tidying = new Set<Promise<void>>();
  /** Whether steps start from a parked runtime: crun on cgroup v1 (decided on the first step). */
  private parking: Promise<boolean> | undefined;
  /** The next step's parked runtime (`parkAhead`), and what lets it join its cgroups. */
  private spare: { parked: Promise<ParkedRuntime>; join: () => void } | undefined;
  private closing = false;

  constructor(private readonly options: ContainerExecutorOptions) {
    const runtime = options.runtime ?? 'runc';
    this.runc = options.runc ?? runtime;
    this.runcRoot = join(options.dataDir, runtime);
    this.bundlesDir = join(options.dataDir, 'bundles');
    this.crunSeccomp = runtime === 'crun' && options.crunSeccompCache !== false ? new CrunSeccompCache(this.runc, join(options.dataDir, 'crun-seccomp')) : undefined;
  }

  /** The OCI runtime this executor runs steps with. */
  get runtime(): OciRuntime {
    return this.options.runtime ?? 'runc';
  }

  async run(spec: RunSpec, options: RunOptions): Promise<RunResult> {
    if (spec.args.length === 0) throw new Error('a RUN needs a command');
    if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
    const limits = spec.limits ?? {};
    // What the step's cgroups carry (when Strata places them: a parked runtime, crun on cgroup v1).
    const cgroupLimits: StepCgroupLimits = {
      ...(limits.memoryBytes !== undefined ? { memoryBytes: limits.memoryBytes } : {}),
      ...(limits.pids !== undefined ? { pids: limits.pids } : {}),
      ...(limits.cpus !== undefined ? { cpus: limits.cpus } : {}),
      devices: spec.privileged ? 'host' : 'sandboxed',
    };
    const parked = await this.takeParked(cgroupLimits);
    // The next step's runtime is parked while this one runs; it joins its cgroups once this container has exited.
    const joinSpare = parked ? this.parkSpare(cgroupLimits) : undefined;
    const id = parked?.id ?? newContainerId();
    const rootfs = options.rootfs;
    const network = spec.network ?? 'none';
    const cwd = posix.resolve('/', spec.cwd ?? '/');
    const userns = spec.privileged ? undefined : spec.userns;
    const mounts = spec.mounts ?? [];
    const bundle = join(this.bundlesDir, id);
    let stubs: MountStubs | undefined;
    let cgroup: ContainerCgroup | undefined;
    let attachment: NetworkAttachment | undefined;
    const unmounts: string[] = [];
    try {
      const user = await resolveUser(rootfs, spec.user ?? '');
      // The worker writes through the overlay as host root: in a user namespace, as the step's ids would land.
      const shift = userns?.hostId ?? 0;
      await createWorkdir(rootfs, cwd, user.uid + shift, user.gid + shift);
      stubs = MountStubs.record(rootfs, ['/proc', '/dev', '/sys', '/etc/hosts', '/etc/resolv.conf', ...mounts.map((mount) => mount.destination)]);

      // The bundle's directories and small files are written synchronously, as the layer store's
      // metadata (microseconds each): through the thread pool each waited behind the build's other work.
      mkdirSync(bundle, { recursive: true });
      mkdirSync(this.runcRoot, { recursive: true, mode: 0o700 });
      const hostname = spec.hostname ?? id.slice(-12);
      const hostsFile = join(bundle, 'hosts');
      const resolvConfFile = join(bundle, 'resolv.conf');
      writeFileSync(hostsFile, `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`);

      let netns: NetnsChoice;
      if (network === 'host') netns = { kind: 'host' };
      else if (network === 'none') netns = { kind: 'new' };
      else {
        if (!this.options.bridge) throw new Error('network "bridge" needs a BridgeNetwork in the executor options');
        attachment = await this.options.bridge.attach(id);
        netns = { kind: 'path', path: attachment.netnsPath };
      }
      writeFileSync(resolvConfFile, this.options.resolvConf ?? this.defaultResolvConf(network, attachment));
      if (userns) {
        chownSync(hostsFile, userns.hostId, userns.hostId);
        chownSync(resolvConfFile, userns.hostId, userns.hostId);
      }
      let runRoot = rootfs;
      let sys: string | undefined;
      if (userns) {
        runRoot = join(userns.dir, 'rootfs');
        mkdirSync(runRoot);
        await mount(rootfs, runRoot, null, constants.MS_BIND);
        unmounts.push(runRoot);
        if (netns.kind === 'path') {
          // A user namespace cannot mount sysfs for, nor set sysctls of, a network namespace it does not own: the worker does both.
          sys = join(userns.dir, 'sys');
          await mkdir(sys);
          await runCommand('nsenter', [`--net=${netns.path}`, '--', 'sh', '-c', 'echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range && mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$0"', sys]);
          unmounts.push(sys);
        }
      }

      cgroup =
        parked?.cgroup ??
        (await ContainerCgroup.create(id, {
          ...(limits.memoryBytes !== undefined ? { memoryBytes: limits.memoryBytes } : {}),
          ...(limits.pids !== undefined ? { pids: limits.pids } : {}),
        }));
      const config = buildRuntimeSpec({
        rootfs: runRoot,
        args: spec.args,
        env: spec.env,
        cwd,
        user,
        hostname,
        netns,
        hostsFile,
        resolvConfFile,
        mounts,
        cgroupsPath: cgroup.cgroupsPath,
        noFile: hostNoFileLimit(),
        ...(limits.cpus !== undefined ? { cpus: limits.cpus } : {}),
        ...(spec.privileged ? { privileged: { capabilities: await this.privilegedCapabilities() } } : {}),
        ...(userns
          ? {
              userns: {
                hostId: userns.hostId,
                size: userns.size,
                ...(sys !== undefined ? { sys } : {}),
                ...(userns.mknodListener !== undefined ? { mknodListener: userns.mknodListener } : {}),
              },
            }
          : {}),
      });
      await this.crunSeccomp?.annotate(config);
      writeFileSync(join(bundle, 'config.json'), JSON.stringify(config));
      return await this.runContainer(id, bundle, cgroup, spec, options, parked);
    } finally {
      // `runc run` deletes its container when it exits; only one it left behind (a kill, a crash) needs deleting.
      const left = await exists(join(this.runcRoot, id));
      if (left) await runCommand(this.runc, [...this.globalArgs(), 'delete', '--force', id]).catch(() => undefined);
      // The step's result does not wait for its cgroups and bundle to go (a dozen rmdirs on cgroup v1).
      this.tidy(async () => {
        await (parked ? parked.discard() : cgroup?.destroy());
        await rm(bundle, { recursive: true, force: true });
      });
      joinSpare?.();
      // A plain unmount first: the rootfs's overlay must be gone before its upper dir can be kept as a layer.
      for (const target of unmounts.reverse()) await umount(target).catch(() => umount(target, { detach: true })).catch(() => undefined);
      await attachment?.release();
      await stubs?.clean();
    }
  }

  /**
   * The parked runtime a step starts from (crun on cgroup v1, docs/adr/0042): the one kept ahead when
   * there is one and it carries the step's limits, else one parked now. Undefined: the runtime places
   * the container in cgroups itself.
   */
  private async takeParked(limits: StepCgroupLimits): Promise<ParkedRuntime | undefined> {
    this.parking ??= this.runtime === 'crun' ? ContainerCgroup.isV1().catch(() => false) : Promise.resolve(false);
    if (!(await this.parking)) return undefined;
    const spare = this.spare;
    this.spare = undefined;
    spare?.join();
    let parked = spare ? await spare.parked.catch(() => undefined) : undefined;
    // Parked with the last step's limits: another step's (a privileged one, other limits) gets its own.
    if (parked && (!parked.alive || !sameLimits(parked.limits, limits))) {
      const unfit = parked;
      this.tidy(() => unfit.discard());
      parked = undefined;
    }
    return parked ?? (await this.park(limits));
  }

  /**
   * Parks the next step's runtime (`parkAhead`) with this step's limits. It joins its cgroups when
   * the returned function is called (this step's container has exited) or a step takes it: while a
   * process moves into a cgroup and waits out the grace period, every fork on the host waits too,
   * this step's runtime's among them.
   */
  private parkSpare(limits: StepCgroupLimits): (() => void) | undefined {
    if (!this.options.parkAhead || this.closing || this.spare !== undefined) return undefined;
    let join!: () => void;
    const joining = new Promise<void>((resolve) => (join = resolve));
    const spare = { parked: this.park(limits, joining), join };
    this.spare = spare;
    spare.parked.catch(() => {
      if (this.spare === spare) this.spare = undefined;
    });
    return join;
  }

  private park(limits: StepCgroupLimits, joinWhen: Promise<void> = Promise.resolve()): Promise<ParkedRuntime> {
    const id = newContainerId();
    return ParkedRuntime.park(id, this.runc, this.runArgs(id, join(this.bundlesDir, id), 'none', ['--cgroup-manager=disabled']), limits, joinWhen);
  }

  /** Kills the parked runtimes (and removes their cgroups) that a killed worker with this data directory left. */
  clearLeftovers(): Promise<string[]> {
    return clearParkedRuntimes(this.bundlesDir);
  }

  /** Lets go of the parked runtime kept ahead. Call it once no step runs. */
  async close(): Promise<void> {
    this.closing = true;
    const spare = this.spare;
    this.spare = undefined;
    spare?.join();
    await (await spare?.parked.catch(() => undefined))?.discard();
    await this.settled();
  }

  /** Runs `work` (removing a finished container's cgroups and bundle) in the background; {@link settled} waits for all of it. */
  private tidy(work: () => Promise<unknown>): void {
    const done = (async () => {
      await work();
    })().catch(() => undefined);
    this.tidying.add(done);
    void done.finally(() => this.tidying.delete(done));
  }

  /** Waits until the cgroups and bundles of finished containers are gone. */
  async settled(): Promise<void> {
    await Promise.all([...this.tidying]);
  }

  /** What a privileged step gets: the worker's capabilities, those runsc knows when it is the runtime. */
  private async privilegedCapabilities(): Promise<string[]> {
    const caps = await workerCapabilities();
    // Debian's runsc (2022-12) refuses CAP_PERFMON, CAP_BPF and CAP_CHECKPOINT_RESTORE (Linux 5.8, 5.9).
    return this.options.runtime === 'runsc' ? caps.filter((cap) => ALL_CAPABILITIES.indexOf(cap) <= ALL_CAPABILITIES.indexOf('CAP_AUDIT_READ')) : caps;
  }

  /** Flags before the subcommand: runc's state directory; for runsc also its platform, network and the spec's seccomp filter. */
  private globalArgs(network: NetworkMode = 'none'): string[] {
    if (this.options.runtime !== 'runsc') return ['--root', this.runcRoot];
    // runsc's netstack serves a bridge step inside the netns it is given; `none` leaves it loopback only.
    const runscNetwork = network === 'bridge' ? 'sandbox' : network;
    return ['--root', this.runcRoot, `--platform=${this.options.runscPlatform ?? 'ptrace'}`, `--network=${runscNetwork}`, '--oci-seccomp'];
  }

  /**
   * The host's resolv.conf for `host`; for `bridge` the attachment's (the worker's DNS forwarder on
   * the step's gateway, or the nameservers the policy lets it reach); for `none` no nameservers.
   */
  private defaultResolvConf(network: NetworkMode, attachment: NetworkAttachment | undefined): string {
    let host = '';
    try {
      host = readFileSync('/etc/resolv.conf', 'utf8');
    } catch {
      // none: no nameservers
    }
    if (network === 'host') return host;
    if (attachment) return attachment.resolvConf(host);
    return host
      .split('\n')
      .filter((line) => !/^\s*nameserver\s/.test(line))
      .join('\n');
  }

  /** The runtime's command line for one container: global flags (`extraGlobal` among them), its log, `run`. */
  private runArgs(id: string, bundle: string, network: NetworkMode | undefined, extraGlobal: string[] = []): string[] {
    return [...this.globalArgs(network), ...extraGlobal, '--log', join(bundle, 'runc.log'), '--log-format', 'json', 'run', '--bundle', bundle, id];
  }

  private runContainer(id: string, bundle: string, cgroup: ContainerCgroup, spec: RunSpec, options: RunOptions, parked: ParkedRuntime | undefined): Promise<RunResult> {
    const logFile = join(bundle, 'runc.log');
    const tailSize = this.options.outputTailLines ?? 20;
    const outputTail: string[] = [];
    cgroup.watch();
    const started = performance.now();
    const args = this.runArgs(id, bundle, spec.network);
    const [file, argv] = this.options.runtime === 'runsc' && spec.network === 'bridge' ? runscInStepNetns(this.runc, args) : [this.runc, args];
    // posix_spawn through the addon: forking the worker would stop its main thread ~10 ms per step (docs/adr/0039).
    const child = parked ? parked.start() : spawnPiped(file, argv);
    // Backpressure: when the consumer answers a promise (the log writer is behind), both pipes stay
    // unread until it settles; the step blocks writing to a full pipe, as on a slow terminal.
    let behind: Promise<void> | undefined;
    let paused = false;
    const waitForConsumer = (): void => {
      const wait = behind;
      behind = undefined;
      if (!wait || paused) return;
      paused = true;
      child.stdout.pause();
      child.stderr.pause();
      const resume = (): void => {
        paused = false;
        child.stdout.resume();
        child.stderr.resume();
      };
      wait.then(resume, resume);
    };
    const splitters = (['stdout', 'stderr'] as const).map((stream: OutputStream) => {
      const splitter = new LineSplitter((line) => {
        outputTail.push(line);
        if (outputTail.length > tailSize) outputTail.shift();
        const answer = options.onOutput?.(stream, line);
        if (answer instanceof Promise) behind = answer as Promise<void>;
      });
      child[stream].on('data', (chunk: Buffer) => {
        splitter.write(chunk);
        waitForConsumer();
      });
      return { stream, splitter };
    });

    let timedOut = false;
    let cancelled = false;
    let exited = false;
    const kill = (): void => {
      // runc may not have created the container yet: retry until `runc run` is gone.
      const attempt = (): void => {
        if (exited) return;
        void runCommand(this.runc, [...this.globalArgs(), 'kill', id, 'KILL']).catch(() => undefined);
        setTimeout(attempt, KILL_RETRY_MS).unref();
      };
      attempt();
    };
    const timer =
      spec.limits?.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            kill();
          }, spec.limits.timeoutMs)
        : undefined;
    const onAbort = (): void => {
      cancelled = true;
      kill();
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    // Cancelled while the bundle and cgroups were being made: the listener above will not fire.
    if (options.signal?.aborted) onAbort();

    return new Promise<RunResult>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
        exited = true;
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        for (const { splitter } of splitters) splitter.end();
        const durationMs = performance.now() - started;
        const exitCode = code ?? 128 + (signal === 'SIGKILL' ? 9 : 15);
        void (async () => {
          const counters: CgroupCounters = await cgroup.counters();
          const runcError = await readRuncError(logFile);
          // SIGKILL that we did not send, with memory use at the limit: the OOM killer (its counter may be gone with runc's cgroup).
          const oomKilled = counters.oomKills > 0 || (exitCode === 137 && !timedOut && !cancelled && counters.memoryLimitReached);
          if (runcError !== undefined && !timedOut && !cancelled && exitCode !== 0 && exitCode < 128 && !oomKilled) {
            // runc and crun dial the mknod supervisor (listenerPath) before the step runs: name what is missing.
            const hint = /seccomp agent|seccomp receiver/.test(runcError) ? " (the worker's mknod agent, which serves user-namespaced steps, is not running)" : '';
            throw new ContainerStartError(`the container for ${JSON.stringify(spec.args.join(' '))} could not start: ${runcError}${hint}`);
          }
          return {
            exitCode,
            oomKilled,
            timedOut,
            cancelled,
            pidsLimitHit: counters.pidsLimitReached,
            durationMs,
            outputTail,
          } satisfies RunResult;
        })().then(resolve, reject);
      });
    });
  }
}

function sameLimits(a: StepCgroupLimits, b: StepCgroupLimits): boolean {
  return a.memoryBytes === b.memoryBytes && a.pids === b.pids && a.cpus === b.cpus && a.devices === b.devices;
}

function newContainerId(): string {
  return `strata-${randomBytes(8).toString('hex')}`;
}

/**
 * runsc for a bridge step, its netstack taking over the step's veth. Debian's runsc (2022-12) asks
 * whether the namespace it was given is the host's by looking for /proc/sys/net/core/rmem_default,
 * which only the initial namespace had before Linux 6.x; on newer kernels every namespace has it
 * and runsc refuses the step's own ("cannot run with network enabled in root network namespace",
 * gVisor issue 10704, fixed in later releases). So runsc runs in a mount namespace of its own where
 * an empty, read-only tmpfs covers /proc/sys/net. What that check guards against cannot happen
 * here: the spec always names the step's namespace, never the worker's. `exec` keeps the pid:
 * `runsc kill` and the exit status are runsc's own. docs/adr/0024.
 */
function runscInStepNetns(runsc: string, args: string[]): [string, string[]] {
  const script = 'mount -t tmpfs -o ro,size=4k,mode=555 strata-no-host-netns /proc/sys/net && exec "$0" "$@"';
  return ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, runsc, ...args]];
}

/** Creates the working directory inside the rootfs (never through a symlink out of it), owned by the user. */
async function createWorkdir(rootfs: string, cwd: string, uid: number, gid: number): Promise<void> {
  let current = '';
  for (const part of cwd.split('/').filter(Boolean)) {
    current = `${current}/${part}`;
    const path = await resolveInRoot(rootfs, current);
    try {
      const stats = await lstat(path);
      if (!stats.isDirectory()) throw new Error(`working directory ${cwd}: ${current} exists in the image and is not a directory`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      await mkdir(path, { mode: 0o755 });
      await chown(path, uid, gid);
    }
  }
}

/** The worker's RLIMIT_NOFILE: containers get the same hard limit (Docker passes its own on too). */
function hostNoFileLimit(): { soft: number; hard: number } {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const match = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(limits);
  const hard = match && match[2] !== 'unlimited' ? Number(match[2]) : 1048576;
  return { soft: Math.min(hard, 1048576), hard };
}

async function readRuncError(logFile: string): Promise<string | undefined> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  let message: string | undefined;
  for (const line of text.split('\n')) {
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' || entry.level === 'fatal') message = entry.msg;
    } catch {
      // not JSON
    }
  }
  return message;
}

/** The capabilities this worker holds (a privileged step cannot get more: runc would fail to set them). */
async function workerCapabilities(): Promise<string[]> {
  const status = await readFile('/proc/self/status', 'utf8');
  return capabilitiesIn(/^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0');
}

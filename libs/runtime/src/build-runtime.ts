import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Readable } from 'node:stream';
import { type RootfsProvider, type RootfsView, type RunExecutor, type RunOutcome, type RunRequest, RunStepError } from '@strata/build-engine';
import type { Descriptor, Digest } from '@strata/oci';
import { CacheMounts, type CacheArchiveStore, hash, type StepCleanups } from './cache-mounts.js';
import { diffUpperDir } from './diff.js';
import { LayerStore } from './layer-store.js';
import { MknodAgent } from './mknod-agent.js';
import { BridgeNetwork } from './network.js';
import { ContainerStartError, ContainerExecutor } from './container-executor.js';
import { chooseRuntime, type OciRuntime, type RuntimeSetting } from './runtime-choice.js';
import { SecretMounts } from './secret-mounts.js';
import { sshAgentMount } from './ssh-agents.js';
import type { NetworkMode, RunMount } from './types.js';
import { UserResolutionError } from './user.js';
import { shiftOwnersBack, UserNamespaces, type UsernsStep } from './userns.js';

/** How RUN steps run on this worker (STRATA_RUN_* settings). */
export interface StepSettings {
  /** What `RUN` without `--network` gets; `--network=host` is only allowed when this is `host`. */
  network: NetworkMode;
  memoryBytes: number;
  pids: number;
  /** CPU cores per step; 0 means no quota. */
  cpus: number;
  stepTimeoutMs: number;
  /** `RUN --security=insecure` runs privileged (STRATA_RUN_ALLOW_INSECURE=true); refused otherwise. */
  allowInsecure: boolean;
  /**
   * The OCI runtime (STRATA_RUN_RUNTIME); default runc. `auto` takes crun when it can run on this
   * host (else runc, with a log line saying why), resolved by `init` (docs/adr/0038); `crun` fails
   * `init` when it cannot.
   */
  runtime?: RuntimeSetting;
  /** runsc's platform (STRATA_RUN_RUNSC_PLATFORM); default ptrace. */
  runscPlatform?: string;
  /** The bridge network's containers' subnet, a 10.N.0.0/16 (STRATA_RUN_SUBNET); default 10.213.0.0/16. */
  subnet?: string;
  /** CIDRs bridge steps may reach although private (STRATA_ALLOW_PRIVATE_SOURCES). */
  allowPrivate?: readonly string[];
  /**
   * User namespaces for runc steps (STRATA_RUN_USERNS): `on` fails `init` when this kernel and
   * filesystem cannot do them (or the mknod agent cannot start), `auto` (the default) uses them when
   * they can (else warns and runs without), `off` runs steps as host root. runsc steps and
   * `--security=insecure` steps run without.
   */
  userns?: 'auto' | 'on' | 'off';
  /** First host id of the ranges (STRATA_USERNS_BASE, a multiple of 65536) and how many (STRATA_USERNS_RANGES). */
  usernsBase?: number;
  usernsRanges?: number;
  /** Where ranges are claimed host-wide (default /run/strata-userns). */
  usernsStateDir?: string;
  /** The resolvers bridge steps' DNS forwarder asks (STRATA_RUN_DNS); empty or absent: the worker's resolv.conf. */
  dns?: ReadonlyArray<{ address: string; port: number }>;
}

export const DEFAULT_USERNS_BASE = 2 ** 30;
export const DEFAULT_USERNS_RANGES = 256;

export interface BuildRuntimeOptions {
  /** Everything goes under `<dataDir>/runtime`. */
  dataDir: string;
  step: StepSettings;
  /** A layer blob by digest, for layers this worker has not unpacked yet. */
  layerBlob(digest: Digest): Promise<Readable>;
  /** Where cache mounts are saved for every worker. */
  cacheArchives: CacheArchiveStore;
  /** A tmpfs directory for secret files and the runtime bundles of steps with secrets; default /dev/shm/strata-<hash of dataDir>. */
  secretsDir?: string;
}

type LayerRef = { descriptor: Descriptor; diffId: Digest; open?: () => Readable | Promise<Readable> };

/**
 * A worker's container runtime behind build-engine's interfaces: layers unpacked once per worker
 * (LayerStore, overlayfs), one container per RUN with its cache, tmpfs, bind and secret
 * mounts, the upper dir diffed into the step's layer. One bridge network (one subnet allocator,
 * one pair of firewall chains) serves every container of the worker (docs/adr/0024). Use `forTenant` to get the RunExecutor of one build.
 */
export class BuildRuntime implements RootfsProvider {
  readonly root: string;
  private readonly layers: LayerStore;
  private executor: ContainerExecutor;
  /** Runs steps with secrets: its bundles live on the secrets tmpfs. */
  private secretExecutor: ContainerExecutor;
  /** Why `auto` did not take crun (after `init`). */
  private fallback: string | undefined;
  private readonly caches: CacheMounts;
  private readonly secrets: SecretMounts;
  /** The worker's one bridge network (subnet allocator and firewall chains), when steps use it. */
  private readonly bridge: BridgeNetwork | undefined;
  /** User namespaces for runc steps, once `init` found they work here. */
  private userns: UserNamespaces | undefined;
  /** Makes device nodes for user-namespaced steps (seccomp user notification), with `userns`. */
  private mknodAgent: MknodAgent | undefined;
  /** Read-only views of stages (`open`) by root, with their layers top first: a bind from one is remade through a step's idmap. */
  private readonly views = new Map<string, string[]>();

  constructor(private readonly options: BuildRuntimeOptions) {
    this.root = path.resolve(options.dataDir, 'runtime');
    this.layers = new LayerStore({ dataDir: this.root });
    if (options.step.network === 'bridge') {
      const subnet = options.step.subnet ?? '10.213.0.0/16';
      this.bridge = new BridgeNetwork({
        subnetPrefix: subnet.split('.').slice(0, 2).join('.'),
        allowCidrs: options.step.allowPrivate ?? [],
        // The same data directory is the same worker: a restarted one clears what the killed one left.
        owner: hash(this.root),
        dns: options.step.dns && options.step.dns.length > 0 ? { upstreams: options.step.dns } : {},
      });
    }
    this.caches = new CacheMounts(path.join(this.root, 'cache-mounts'), options.cacheArchives);
    this.secrets = new SecretMounts(options.secretsDir ?? path.join('/dev/shm', `strata-${hash(this.root).slice(0, 12)}`));
    // `auto` and `crun` are settled by `init`; until then steps would run with runc.
    const setting = options.step.runtime ?? 'runc';
    [this.executor, this.secretExecutor] = this.executors(setting === 'auto' || setting === 'crun' ? 'runc' : setting);
  }

  private executors(runtime: OciRuntime): [ContainerExecutor, ContainerExecutor] {
    const bridge = this.bridge ? { bridge: this.bridge } : {};
    const options = { runtime, ...(this.options.step.runscPlatform !== undefined ? { runscPlatform: this.options.step.runscPlatform } : {}) };
    // The next step's cgroups and runtime made while a step runs (crun on cgroup v1, docs/adr/0042); steps with secrets are few.
    return [
      new ContainerExecutor({ dataDir: this.root, ...bridge, ...options, parkAhead: true }),
      new ContainerExecutor({ dataDir: this.secrets.bundleDir, ...bridge, ...options }),
    ];
  }

  /** The OCI runtime RUN steps run with (after `init`: `auto` resolved). */
  get runRuntime(): OciRuntime {
    return this.executor.runtime;
  }

  /** Why `auto` fell back to runc on this host (after `init`); undefined when it took crun or the runtime was named. */
  get runtimeFallback(): string | undefined {
    return this.fallback;
  }

  private async initRuntime(): Promise<void> {
    const setting = this.options.step.runtime ?? 'runc';
    if (setting !== 'auto' && setting !== 'crun') return;
    const choice = await chooseRuntime(setting);
    // The worker logs the fallback and its reason at start (apps/worker/src/main.ts).
    this.fallback = choice.fallback;
    if (choice.runtime !== this.executor.runtime) [this.executor, this.secretExecutor] = this.executors(choice.runtime);
  }

  /** Creates the directories and clears snapshots (and secret files) a crashed worker left behind. Idempotent. */
  async init(): Promise<void> {
    await this.initRuntime();
    // Parked runtimes a killed worker left stay stopped for good: gone, with their cgroups (ADR 0042).
    await Promise.all([this.executor.clearLeftovers(), this.secretExecutor.clearLeftovers()]);
    await this.layers.init();
    await this.secrets.init();
    await this.initUserns();
    // Namespaces, veths and firewall rules of steps a killed worker left; this worker's chains.
    await this.bridge?.init();
    // Copies of read-write binds and agent sockets a crashed worker left behind.
    for (const name of await readdir(this.root)) {
      if (/^(throwaway|ssh)-/.test(name)) await rm(path.join(this.root, name), { recursive: true, force: true });
    }
  }

  /** Whether runc steps run in user namespaces on this worker (known after `init`). */
  get usesUserNamespaces(): boolean {
    return this.userns !== undefined;
  }

  /** The mknod supervisor of user-namespaced steps, when they run in user namespaces (after `init`). */
  get mknodSupervisor(): MknodAgent | undefined {
    return this.mknodAgent;
  }

  private async initUserns(): Promise<void> {
    const step = this.options.step;
    const mode = step.userns ?? 'auto';
    if (mode === 'off' || this.executor.runtime === 'runsc' || this.userns) return;
    const userns = new UserNamespaces({
      base: step.usernsBase ?? DEFAULT_USERNS_BASE,
      ranges: step.usernsRanges ?? DEFAULT_USERNS_RANGES,
      root: this.root,
      layersDir: this.layers.layersDir,
      ...(step.usernsStateDir !== undefined ? { stateDir: step.usernsStateDir } : {}),
      makeAhead: true,
    });
    const agent = new MknodAgent({ dir: path.join(this.root, 'mknod-agent') });
    try {
      await userns.init();
      await agent.start();
      this.userns = userns;
      this.mknodAgent = agent;
    } catch (e) {
      await agent.close().catch(() => undefined);
      await userns.close().catch(() => undefined);
      const why = `user namespaces do not work on this worker (${(e as Error).message})`;
      if (mode === 'on') throw new Error(`STRATA_RUN_USERNS=1: ${why}`);
      process.stderr.write(
        `strata worker: WARNING: ${why}; RUN steps run as HOST ROOT, without the user namespace boundary (STRATA_RUN_USERNS=auto; set 1 to refuse to start instead, 0 to silence this)\n`,
      );
    }
  }

  /** Evicts least recently used unpacked layers that no running step uses, down to `maxBytes`. */
  trimLayers(maxBytes: number): Promise<{ evicted: string[]; freedBytes: number; usedBytes: number }> {
    return this.layers.gc(maxBytes);
  }

  /** Steps a killed worker left on the bridge network, cleared by `init`. */
  get clearedNetworkLeftovers(): number {
    return this.bridge?.cleared.length ?? 0;
  }

  /** The resolvers bridge steps' DNS forwarder asks (after `init`); undefined when steps have no bridge. */
  get runDnsUpstreams(): readonly { address: string; port: number }[] | undefined {
    return this.bridge?.dnsUpstreams;
  }

  /** Removes the worker's firewall chains: call it once no step runs any more. */
  async close(): Promise<void> {
    await Promise.all([this.executor.close(), this.secretExecutor.close()]);
    await this.bridge?.close();
    await this.userns?.close();
    this.userns = undefined;
    await this.mknodAgent?.close();
    this.mknodAgent = undefined;
  }

  /** Waits for cache uploads in flight (a worker shutting down lets them finish) and syncs the layers placed since the last sync (ADR 0035). */
  async flush(): Promise<void> {
    await Promise.all([this.caches.flush(), this.executor.settled(), this.secretExecutor.settled()]);
    await this.layers.persisted();
  }

  forTenant(tenantId: string): RunExecutor {
    return { run: (req) => this.run(tenantId, req) };
  }

  /** A read-only view of layers (COPY --from, RUN --mount=type=bind,from=): an overlay whose writes are thrown away. */
  async open(layers: LayerRef[]): Promise<RootfsView> {
    const snapshot = await this.layers.prepare(
      layers.map((l) => l.diffId),
      this.layerSource(layers),
    );
    this.views.set(snapshot.rootfs, layers.map((l) => l.diffId.slice('sha256:'.length)).reverse());
    return {
      root: snapshot.rootfs,
      release: () => {
        this.views.delete(snapshot.rootfs);
        return snapshot.release();
      },
    };
  }

  async adopt(tar: () => Readable): Promise<void> {
    await this.layers.adopt(tar());
  }

  async run(tenantId: string, req: RunRequest): Promise<RunOutcome> {
    const network = this.network(req.network);
    if (req.security === 'insecure' && !this.options.step.allowInsecure) {
      throw new RunStepError('--security=insecure is not allowed on this deployment (STRATA_RUN_ALLOW_INSECURE is not true)');
    }
    // A privileged step keeps the worker's own capabilities, which a user namespace would take away.
    const userns = this.userns && req.security !== 'insecure' ? await this.userns.step() : undefined;
    const cleanups: StepCleanups = [];
    if (userns) cleanups.push(() => userns.release());
    let snapshot;
    try {
      snapshot = await this.layers.prepare(
        req.layers.map((l) => l.diffId),
        this.layerSource(req.layers),
        userns ? { layersView: userns.layersView, rootOwner: userns.hostId } : {},
      );
    } catch (e) {
      await userns?.release();
      throw e;
    }
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      await snapshot.release();
    };
    try {
      // In a user namespace every source is seen through the step's idmap, so the step sees the owners the worker keeps.
      const seen = async (source: string): Promise<string> => (userns ? this.idmapped(userns, source) : source);
      const mounts: RunMount[] = [];
      for (const m of req.mounts ?? []) {
        if (m.type === 'cache') {
          const cache = await this.caches.mount(tenantId, m, cleanups);
          mounts.push(cache.type === 'bind' ? { ...cache, source: await seen(cache.source) } : cache);
        } else if (m.type === 'tmpfs') mounts.push({ type: 'tmpfs', destination: m.target, ...(m.sizeBytes !== undefined ? { sizeBytes: m.sizeBytes } : {}) });
        else if (m.type === 'bind' && m.throwaway) {
          const copy = await this.throwawayCopy(m.source, m.target, cleanups);
          mounts.push(copy.type === 'bind' ? { ...copy, source: await seen(copy.source) } : copy);
        } else if (m.type === 'bind') mounts.push({ type: 'bind', source: await seen(m.source), destination: m.target, readonly: m.readOnly });
        // The agent runs as the step's (shifted) uid: its socket goes where that uid may enter.
        else if (m.type === 'ssh') mounts.push(await sshAgentMount(userns ? userns.dir : this.root, m, cleanups, userns?.hostId ?? 0));
      }
      const secretRequests = (req.mounts ?? []).filter((m) => m.type === 'secret');
      const fileRequests = (req.mounts ?? []).filter((m) => m.type === 'file');
      // runc's mount point stubs for secret files are removed before the diff, as for every mount.
      const secret = await this.secrets.prepare(secretRequests, fileRequests, req.env, cleanups, userns?.hostId ?? 0);
      mounts.push(...secret.mounts);
      const executor = secretRequests.length > 0 ? this.secretExecutor : this.executor;
      const step = this.options.step;
      let result;
      try {
        result = await executor.run(
          {
            args: req.args,
            env: secret.env,
            user: req.user,
            cwd: req.cwd,
            network,
            mounts,
            ...(req.security === 'insecure' ? { privileged: true } : {}),
            ...(userns
              ? { userns: { hostId: userns.hostId, size: userns.size, dir: userns.dir, ...(this.mknodAgent ? { mknodListener: this.mknodAgent.socketPath } : {}) } }
              : {}),
            limits: {
              memoryBytes: step.memoryBytes,
              pids: step.pids,
              timeoutMs: step.stepTimeoutMs,
              ...(step.cpus > 0 ? { cpus: step.cpus } : {}),
            },
          },
          { rootfs: snapshot.rootfs, onOutput: req.onOutput, signal: req.signal },
        );
      } catch (e) {
        if (e instanceof UserResolutionError || e instanceof ContainerStartError) throw new RunStepError(e.message);
        if (req.signal.aborted) return { exitCode: 137, cancelled: true, entries: [], release };
        throw e;
      } finally {
        // A bundle on the secrets tmpfs holds the step's environment: gone before the step ends.
        if (executor === this.secretExecutor) await executor.settled();
      }
      const failed = result.exitCode !== 0 || result.oomKilled || result.timedOut || result.cancelled;
      // The step's writes are owned by its range on disk: back to the ids it wrote before the diff reads them and the upper dir is kept.
      if (!failed && userns) await shiftOwnersBack(snapshot.upperDir, userns.hostId, userns.size);
      const entries = failed ? [] : await diffUpperDir(snapshot.upperDir, { lowerDirs: snapshot.lowerDirs });
      return {
        exitCode: result.exitCode,
        oomKilled: result.oomKilled,
        timedOut: result.timedOut,
        cancelled: result.cancelled,
        ...(result.pidsLimitHit !== undefined ? { pidsLimitHit: result.pidsLimitHit } : {}),
        entries,
        release,
        keep: async (diffId: string, sizeBytes: number) => {
          if (released) return;
          released = true;
          await snapshot.keepAsLayer(diffId, sizeBytes);
        },
      };
    } catch (e) {
      await release();
      throw e;
    } finally {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    }
  }

  /** `source` as a step in `userns` sees it: a path in a stage's view is remade on the range's view of the layers; anything else is bind-mounted idmapped. */
  private async idmapped(userns: UsernsStep, source: string): Promise<string> {
    for (const [root, hexes] of this.views) {
      if (source !== root && !source.startsWith(`${root}/`)) continue;
      // overlayfs cannot be idmapped itself: the same layers, mounted again on the range's idmapped lower dirs.
      const view = await userns.layersOverlay(hexes);
      return path.join(view, path.relative(root, source));
    }
    return userns.idmapped(source);
  }

  /** A read-write context bind: the step writes into a copy of the source, deleted after it (the context stays as sent). */
  private async throwawayCopy(source: string, target: string, cleanups: StepCleanups): Promise<RunMount> {
    const dir = await mkdtemp(path.join(this.root, 'throwaway-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const copy = path.join(dir, 'source');
    await promisify(execFile)('cp', ['-a', '--reflink=auto', '--', source, copy]);
    return { type: 'bind', source: copy, destination: target, readonly: false };
  }

  private network(requested: RunRequest['network']): NetworkMode {
    const configured = this.options.step.network;
    if (requested === 'default') return configured;
    if (requested === 'none') return 'none';
    if (configured !== 'host') throw new RunStepError('--network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host)');
    return 'host';
  }

  private layerSource(layers: LayerRef[]) {
    const byDiffId = new Map(layers.map((l) => [l.diffId as string, l]));
    return async (diffId: string) => {
      const layer = byDiffId.get(diffId);
      if (!layer) throw new Error(`no blob for layer ${diffId}`);
      // A layer this build just wrote: its tar again from the same sources (the unpack still checks the diff ID).
      if (layer.open) return layer.open();
      return this.options.layerBlob(layer.descriptor.digest);
    };
  }
}

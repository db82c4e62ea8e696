import { createHash, randomBytes } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { NotFoundError, type Storage } from '@strata/blobstore';
import {
  type RootfsProvider,
  type RootfsView,
  type RunExecutor,
  type RunMountRequest,
  type RunOutcome,
  type RunRequest,
  RunStepError,
} from '@strata/build-engine';
import type { RunSettings } from '@strata/config';
import { type Descriptor, type Digest, extractTar } from '@strata/oci';
import {
  BridgeNetwork,
  ContainerStartError,
  diffUpperDir,
  LayerStore,
  type NetworkMode,
  RuncExecutor,
  type RunMount,
  UserResolutionError,
} from '@strata/runtime';

export interface WorkerRuntimeOptions {
  /** The worker's data directory: everything goes under `<dataDir>/runtime`. */
  dataDir: string;
  storage: Storage;
  run: RunSettings;
  /** A tmpfs directory for secret files and the runc bundles of steps with secrets; default /dev/shm/strata-<hash of dataDir>. */
  secretsDir?: string;
}

const TMPFS_MAGIC = 0x01021994;

type LayerRef = { descriptor: Descriptor; diffId: Digest; open?: () => Readable | Promise<Readable> };

/**
 * The worker's container runtime behind build-engine's interfaces: layers unpacked once per worker
 * (LayerStore, overlayfs), one runc container per RUN, the upper dir diffed into the step's layer.
 * Cache mounts live under `<dataDir>/runtime/cache-mounts/<tenant>/<id>`; a changed cache is saved to
 * S3 (`cache-mounts/<tenant>/<id>`) after the step, and a worker without it starts from that copy.
 * Use `forTenant` to get the RunExecutor of one build.
 */
export class WorkerRuntime implements RootfsProvider {
  readonly root: string;
  private readonly layers: LayerStore;
  private readonly runc: RuncExecutor;
  private readonly cacheRoot: string;
  private readonly cacheLocks = new Map<string, Promise<void>>();
  private readonly cacheUsers = new Map<string, number>();
  /** Signature of each cache directory as last restored or saved, so unchanged caches are not uploaded again. */
  private readonly cacheSignatures = new Map<string, string>();
  private readonly cacheUploads = new Map<string, Promise<void>>();
  /** On a tmpfs: secret files, and the bundles (config.json holds env= secrets) of steps that use secrets. */
  private readonly secretsRoot: string;
  private readonly secretRunc: RuncExecutor;

  constructor(private readonly options: WorkerRuntimeOptions) {
    this.root = path.resolve(options.dataDir, 'runtime');
    this.layers = new LayerStore({ dataDir: this.root });
    this.runc = new RuncExecutor({
      dataDir: this.root,
      ...(options.run.network === 'bridge' ? { bridge: new BridgeNetwork() } : {}),
    });
    this.cacheRoot = path.join(this.root, 'cache-mounts');
    this.secretsRoot = options.secretsDir ?? path.join('/dev/shm', `strata-${hash(this.root).slice(0, 12)}`);
    this.secretRunc = new RuncExecutor({
      dataDir: path.join(this.secretsRoot, 'runc'),
      ...(options.run.network === 'bridge' ? { bridge: new BridgeNetwork() } : {}),
    });
  }

  /** Creates the directories and clears snapshots (and secret files) a crashed worker left behind. Idempotent. */
  async init(): Promise<void> {
    await this.layers.init();
    await mkdir(this.secretsRoot, { recursive: true, mode: 0o700 });
    if ((await statfs(this.secretsRoot)).type !== TMPFS_MAGIC) {
      await promisify(execFile)('mount', ['-t', 'tmpfs', '-o', 'mode=0700,size=256m', 'tmpfs', this.secretsRoot]);
    }
    await rm(path.join(this.secretsRoot, 'files'), { recursive: true, force: true });
    await mkdir(path.join(this.secretsRoot, 'files'), { mode: 0o700 });
  }

  /** Evicts least recently used unpacked layers that no running step uses, down to `maxBytes`. */
  trimLayers(maxBytes: number): Promise<{ evicted: string[]; freedBytes: number; usedBytes: number }> {
    return this.layers.gc(maxBytes);
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
    return { root: snapshot.rootfs, release: () => snapshot.release() };
  }

  async adopt(tar: () => Readable): Promise<void> {
    await this.layers.adopt(tar());
  }

  async run(tenantId: string, req: RunRequest): Promise<RunOutcome> {
    const network = this.network(req.network);
    const snapshot = await this.layers.prepare(
      req.layers.map((l) => l.diffId),
      this.layerSource(req.layers),
    );
    const cleanups: Array<() => Promise<void>> = [];
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      await snapshot.release();
    };
    try {
      const mounts: RunMount[] = [];
      const env = [...req.env];
      const secrets = (req.mounts ?? []).filter((m) => m.type === 'secret');
      for (const m of req.mounts ?? []) {
        if (m.type !== 'secret') mounts.push(await this.mount(tenantId, m, cleanups));
      }
      if (secrets.length > 0) {
        // Secret files live on a tmpfs outside the rootfs, bind-mounted read-only; runc's mount point stubs are removed before the diff.
        const dir = await mkdtemp(path.join(this.secretsRoot, 'files', 'step-'));
        cleanups.push(() => rm(dir, { recursive: true, force: true }));
        for (const [i, m] of secrets.entries()) {
          if (m.env !== null) {
            // The secret replaces an ENV or ARG of the same name rather than sitting beside it.
            const name = m.env;
            env.splice(0, env.length, ...env.filter((e) => !e.startsWith(`${name}=`)));
            env.push(`${name}=${m.value.toString('utf8')}`);
          }
          if (m.target === null) continue;
          const file = path.join(dir, String(i));
          await writeFile(file, m.value, { mode: 0o600 });
          await chown(file, m.uid, m.gid);
          await chmod(file, m.mode);
          mounts.push({ type: 'bind', source: file, destination: m.target, readonly: true });
        }
      }
      // A step with secrets runs from bundles on the tmpfs: its config.json may hold env= secrets.
      const runc = secrets.length > 0 ? this.secretRunc : this.runc;
      let result;
      try {
        result = await runc.run(
          {
            args: req.args,
            env,
            user: req.user,
            cwd: req.cwd,
            network,
            mounts,
            limits: {
              memoryBytes: this.options.run.memoryBytes,
              pids: this.options.run.pids,
              timeoutMs: this.options.run.stepTimeoutMs,
              ...(this.options.run.cpus > 0 ? { cpus: this.options.run.cpus } : {}),
            },
          },
          { rootfs: snapshot.rootfs, onOutput: req.onOutput, signal: req.signal },
        );
      } catch (e) {
        if (e instanceof UserResolutionError || e instanceof ContainerStartError) throw new RunStepError(e.message);
        if (req.signal.aborted) return { exitCode: 137, cancelled: true, entries: [], release };
        throw e;
      }
      const failed = result.exitCode !== 0 || result.oomKilled || result.timedOut || result.cancelled;
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

  private network(requested: RunRequest['network']): NetworkMode {
    const configured = this.options.run.network;
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
      return this.options.storage.blobs.get(layer.descriptor.digest);
    };
  }

  /** Fills an empty cache directory from the copy another worker saved to S3, if there is one. */
  private async restoreCache(tenantId: string, id: string, key: string, dir: string): Promise<void> {
    let archive;
    try {
      archive = await this.options.storage.objects.get(cacheObjectKey(tenantId, id));
    } catch (e) {
      if (e instanceof NotFoundError) return;
      throw e;
    }
    try {
      await extractTar(archive, dir, { preserveOwnership: true, maxBytes: 64 * 1024 ** 3, maxEntries: 10_000_000 });
      this.cacheSignatures.set(key, await treeSignature(dir));
    } catch (e) {
      // A cache is only an accelerator: an archive we cannot take starts the cache empty.
      process.stderr.write(`cache mount ${id}: could not restore from S3 (${(e as Error).message}); starting empty\n`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    }
  }

  /** After a step, saves a changed cache directory to S3 in the background (one upload per cache at a time). */
  private saveCache(tenantId: string, id: string, key: string, dir: string): void {
    const previous = this.cacheUploads.get(key) ?? Promise.resolve();
    const next = previous
      .then(async () => {
        const signature = await treeSignature(dir);
        if (this.cacheSignatures.get(key) === signature) return;
        const tar = spawn('tar', ['--numeric-owner', '-czf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
        const exited = new Promise<number>((resolve) => tar.once('close', (code) => resolve(code ?? 1)));
        await this.options.storage.objects.put(cacheObjectKey(tenantId, id), tar.stdout);
        if ((await exited) !== 0) throw new Error('tar failed');
        this.cacheSignatures.set(key, signature);
      })
      .catch((e: unknown) => {
        process.stderr.write(`cache mount ${id}: could not save to S3: ${(e as Error).message}\n`);
      });
    this.cacheUploads.set(key, next);
    void next.finally(() => {
      if (this.cacheUploads.get(key) === next) this.cacheUploads.delete(key);
    });
  }

  /** Waits for cache uploads in flight (a worker shutting down lets them finish). */
  async flush(): Promise<void> {
    await Promise.all(this.cacheUploads.values());
  }

  private async mount(tenantId: string, m: Exclude<RunMountRequest, { type: 'secret' }>, cleanups: Array<() => Promise<void>>): Promise<RunMount> {
    if (m.type === 'tmpfs') return { type: 'tmpfs', destination: m.target, ...(m.sizeBytes !== undefined ? { sizeBytes: m.sizeBytes } : {}) };
    if (m.type === 'bind') return { type: 'bind', source: m.source, destination: m.target, readonly: m.readOnly };
    const key = `${hash(tenantId)}/${hash(m.id)}`;
    let dir = path.join(this.cacheRoot, key);
    if (m.sharing === 'locked') {
      const previous = this.cacheLocks.get(key) ?? Promise.resolve();
      let unlock!: () => void;
      const mine = new Promise<void>((resolve) => (unlock = resolve));
      const tail = previous.then(() => mine);
      this.cacheLocks.set(key, tail);
      await previous;
      cleanups.push(async () => {
        unlock();
        if (this.cacheLocks.get(key) === tail) this.cacheLocks.delete(key);
      });
    } else if (m.sharing === 'private' && (this.cacheUsers.get(key) ?? 0) > 0) {
      // In use by another step: this one gets a throwaway directory, as BuildKit gives a new mount.
      dir = path.join(this.cacheRoot, '.private', randomBytes(8).toString('hex'));
      const throwaway = dir;
      cleanups.push(() => rm(throwaway, { recursive: true, force: true }));
    }
    this.cacheUsers.set(key, (this.cacheUsers.get(key) ?? 0) + 1);
    cleanups.push(async () => {
      const n = (this.cacheUsers.get(key) ?? 1) - 1;
      if (n <= 0) this.cacheUsers.delete(key);
      else this.cacheUsers.set(key, n);
    });
    const exists = await lstat(dir).then(
      () => true,
      () => false,
    );
    const shared = dir === path.join(this.cacheRoot, key);
    if (!exists) {
      await mkdir(path.dirname(dir), { recursive: true });
      await mkdir(dir);
      await chown(dir, m.uid, m.gid);
      await chmod(dir, m.mode);
      // Another worker may have filled this cache: start from its copy in S3.
      if (shared) await this.restoreCache(tenantId, m.id, key, dir);
    }
    if (shared && !m.readOnly) cleanups.push(async () => this.saveCache(tenantId, m.id, key, dir));
    return { type: 'bind', source: dir, destination: m.target, readonly: m.readOnly };
  }
}

/** Where a tenant's cache mount is kept in S3 so that every worker gets it. */
function cacheObjectKey(tenantId: string, id: string): string {
  return `cache-mounts/${tenantId}/${hash(id)}`;
}

/** A cheap signature of a directory tree (paths, sizes, mtimes, modes, owners): did a step change it? */
async function treeSignature(dir: string): Promise<string> {
  const { stdout } = await promisify(execFile)('find', [dir, '-printf', '%P %y %s %T@ %m %U %G %l\\n'], { maxBuffer: 256 * 1024 * 1024 });
  return createHash('sha256').update(stdout.split('\n').sort().join('\n')).digest('hex');
}

function hash(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 32);
}

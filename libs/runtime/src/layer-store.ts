import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdirSync, mkdtempSync, renameSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { mount, umount } from '@strata/native';
import { runCommand } from './command.js';
import { readMounts } from './mountinfo.js';
import { LayerUnpackError, unpackLayer } from './unpack.js';
import { exists } from './fs-exists.js';

/** Gives the layer tar (gzip or plain) for a diff ID; called only when the layer is not on disk yet. */
export type LayerSource = (diffId: string) => Promise<Readable>;

export interface LayerStoreOptions {
  /** The worker's data directory; layers live under `<dataDir>/layers`, snapshots under `<dataDir>/snapshots`. */
  dataDir: string;
  /** Check that each unpacked tar hashes to its diff ID (default true). */
  verifyDiffIds?: boolean;
}

/** A mounted root for one RUN step. Diff `upperDir` before `release()`: release deletes it. */
export interface Snapshot {
  readonly id: string;
  /** The overlay mount point: the container's root filesystem. */
  readonly rootfs: string;
  /** Everything the step changes lands here (overlay whiteouts and opaque xattrs included). */
  readonly upperDir: string;
  readonly workDir: string;
  /** Unpacked layer directories, top layer first (empty for FROM scratch). */
  readonly lowerDirs: readonly string[];
  /** Unmounts and deletes the snapshot and unpins its layers. Safe to call twice. */
  release(): Promise<void>;
  /**
   * Unmounts the snapshot and keeps its upper directory as the unpacked layer `diffId` (the layer
   * its diff was written as): the next step stacks on it without downloading and unpacking it
   * again, as overlay2 stacks a container's upper directory. Then releases the rest.
   */
  keepAsLayer(diffId: string, sizeBytes: number): Promise<void>;
}

export interface PrepareOptions {
  /** The layer store's directory as the step should see it (an idmapped view of it, for a step in a user namespace). */
  layersView?: string;
  /** Owner (uid and gid) of the upper dir, which is the root directory the step sees: its namespace's root. */
  rootOwner?: number;
}

export interface LayerInfo {
  diffId: string;
  sizeBytes: number;
  lastUsed: Date;
  inUse: boolean;
}

export interface GcResult {
  evicted: string[];
  freedBytes: number;
  /** Bytes still held by unpacked layers after eviction. */
  usedBytes: number;
}

/** The kernel copies mount options into one page. */
const MOUNT_OPTIONS_LIMIT = 4096;
const DIFF_ID = /^sha256:([a-f0-9]{64})$/;
/** The kernel's id of this boot: a layer placed without a sync carries it until a sync made it durable. */
const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';
/** How long after the last layer placed the store syncs its filesystem (off every step's path). */
const PERSIST_DELAY_MS = 2000;

/**
 * Keeps each unpacked layer once under `<dataDir>/layers/<hex>/fs`, keyed by diff ID, and mounts
 * snapshots of them with overlayfs. One process owns a data directory: pins (layers used by live
 * snapshots) and per-layer locks are held in memory.
 *
 * Mount option length: a snapshot directory holds short symlinks `l/0`, `l/1`, ... to its layers
 * and the options name them relative to it, `lowerdir=l/2:l/1:l/0,upperdir=upper,workdir=work`:
 * about 5 bytes per layer instead of ~90 for absolute paths, which keeps hundreds of layers under
 * the kernel's one-page limit. overlayfs resolves them against the cwd of the thread that mounts:
 * @strata/native makes the mount(2) call in-process on a thread whose own cwd is the snapshot
 * directory (no `mount` process, and the worker's cwd never moves).
 *
 * Durability (docs/adr/0035): snapshots are mounted `volatile`, so unmounting one does not sync the
 * whole upper filesystem, and layers are placed without a sync (unpacked ones never had one). Each
 * layer is placed with a `boot` marker holding the boot id; `persist()` (run by itself a moment after
 * the last placement, off the steps' path) syncs the filesystem and then removes the markers of the
 * layers placed before it began. `init()` drops every layer whose marker names another boot: after a
 * power loss such a layer may hold empty or missing files, and later builds must not use it.
 */
export class LayerStore {
  readonly layersDir: string;
  readonly snapshotsDir: string;
  private readonly verify: boolean;
  private readonly pins = new Map<string, number>();
  private readonly locks = new Map<string, Promise<void>>();
  private initialised: Promise<void> | undefined;
  private bootId = '';
  /** Whether overlay mounts take `volatile` (Linux 5.10+); cleared by the first mount that refuses it. */
  private volatileMounts = true;
  private persistTimer: NodeJS.Timeout | undefined;
  private persisting: Promise<void> | undefined;

  constructor(options: LayerStoreOptions) {
    this.layersDir = join(options.dataDir, 'layers');
    this.snapshotsDir = join(options.dataDir, 'snapshots');
    this.verify = options.verifyDiffIds ?? true;
  }

  /** Creates the directories and clears what a crashed process left: temp unpacks, trash, stale snapshots. */
  init(): Promise<void> {
    this.initialised ??= (async () => {
      this.bootId = (await readFile(BOOT_ID_FILE, 'utf8')).trim();
      await mkdir(this.layersDir, { recursive: true });
      await mkdir(this.snapshotsDir, { recursive: true });
      await Promise.all(
        (await readdir(this.layersDir)).map(async (name) => {
          if (name.startsWith('.')) await rm(join(this.layersDir, name), { recursive: true, force: true });
          else if (/^[a-f0-9]{64}$/.test(name) && (await this.fromAnotherBoot(name))) await this.trash(name);
        }),
      );
      for (const name of await readdir(this.snapshotsDir)) await removeSnapshotDir(join(this.snapshotsDir, name));
    })();
    return this.initialised;
  }

  /** Whether layer `hex` was placed without a sync during another boot (its contents may not have reached the disk). */
  private async fromAnotherBoot(hex: string): Promise<boolean> {
    try {
      return (await readFile(join(this.layersDir, hex, 'boot'), 'utf8')).trim() !== this.bootId;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return false;
      throw error;
    }
  }

  /** Moves a layer directory out of the way and deletes it. */
  private async trash(hex: string): Promise<boolean> {
    const trash = join(this.layersDir, `.trash-${randomBytes(6).toString('hex')}`);
    try {
      await rename(join(this.layersDir, hex), trash);
    } catch {
      return false;
    }
    await rm(trash, { recursive: true, force: true });
    return true;
  }

  /**
   * Makes the layers placed so far durable: syncs the layer store's filesystem (`sync -f`, syncfs(2)),
   * then removes the `boot` markers of the layers that were placed before the sync began.
   */
  persist(): Promise<void> {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = undefined;
    const previous = this.persisting ?? Promise.resolve();
    const run = previous.then(async () => {
      await this.init();
      const marked: string[] = [];
      for (const hex of await readdir(this.layersDir)) {
        if (/^[a-f0-9]{64}$/.test(hex) && (await exists(join(this.layersDir, hex, 'boot')))) marked.push(hex);
      }
      if (marked.length === 0) return;
      await runCommand('sync', ['-f', this.layersDir]);
      await Promise.all(marked.map((hex) => rm(join(this.layersDir, hex, 'boot'), { force: true })));
    });
    this.persisting = run.catch(() => undefined);
    return run;
  }

  /** Waits for a scheduled or running {@link persist}; runs it now when one is scheduled. */
  async persisted(): Promise<void> {
    if (this.persistTimer) await this.persist();
    else await this.persisting;
  }

  private schedulePersist(): void {
    if (this.persistTimer) clearTimeout(this.persistTimer);
    this.persistTimer = setTimeout(() => void this.persist().catch(() => undefined), PERSIST_DELAY_MS);
    this.persistTimer.unref();
  }

  /** Directory holding the unpacked contents of a layer (exists only once `ensure` returned). */
  layerPath(diffId: string): string {
    return join(this.layersDir, hexOf(diffId), 'fs');
  }

  async has(diffId: string): Promise<boolean> {
    return exists(join(this.layersDir, hexOf(diffId), 'size'));
  }

  /** Unpacks the layer unless it is already on disk; concurrent calls for one diff ID unpack once. */
  async ensure(diffId: string, source: LayerSource): Promise<string> {
    await this.init();
    const hex = hexOf(diffId);
    await this.withLock(hex, async () => {
      if (await exists(join(this.layersDir, hex, 'size'))) return;
      await this.staged(async (fs, temp) => {
        await mkdir(fs);
        const result = await unpackLayer(await source(diffId), fs);
        if (this.verify && result.diffId !== diffId) {
          throw new LayerUnpackError(`layer ${diffId}: the tar's sha256 is ${result.diffId}, not its diff ID`);
        }
        this.place(temp, hex, result.sizeBytes);
      });
    });
    return this.layerPath(diffId);
  }

  /**
   * Unpacks a layer whose diff ID is not known yet (one being written right now), keyed by what the
   * tar hashes to: a later `ensure` of that diff ID finds it on disk.
   */
  async adopt(tar: Readable): Promise<string> {
    await this.init();
    return this.staged(async (fs, temp) => {
      await mkdir(fs);
      const result = await unpackLayer(tar, fs);
      const hex = hexOf(result.diffId);
      await this.withLock(hex, async () => this.place(temp, hex, result.sizeBytes));
      return result.diffId;
    });
  }

  /** Runs `fill` on a fresh temporary directory in the layer store (its layer tree goes in `fs`), removed afterwards. */
  private async staged<T>(fill: (fs: string, temp: string) => Promise<T>): Promise<T> {
    const temp = await mkdtemp(join(this.layersDir, '.tmp-'));
    try {
      return await fill(join(temp, 'fs'), temp);
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
  }

  /**
   * Moves a finished temporary layer directory into place, unless the layer is there already. Hold
   * `hex`'s lock. Synchronous, as the snapshot's directories in `prepare`: a handful of metadata
   * calls on the local layer store take microseconds each, and through the thread pool each waited
   * behind the build's other work (a kept layer's placing took 10-16 ms between two RUN steps).
   */
  private place(temp: string, hex: string, sizeBytes: number): void {
    const dir = join(this.layersDir, hex);
    if (existsSync(join(dir, 'size'))) return;
    // Not synced: the boot marker goes first, so a layer whose `size` survives a power loss names the boot it was placed in.
    writeFileSync(join(temp, 'boot'), this.bootId);
    writeFileSync(join(temp, 'size'), String(sizeBytes));
    renameIntoPlace(temp, dir);
    this.schedulePersist();
  }

  /** Mounts `diffIds` (base first) as overlay lower dirs with a fresh upper dir. */
  async prepare(diffIds: readonly string[], ensureLayer: LayerSource, options: PrepareOptions = {}): Promise<Snapshot> {
    await this.init();
    const hexes = diffIds.map(hexOf);
    // Pin before anything awaits so a concurrent gc cannot evict what this snapshot is about to use.
    for (const hex of hexes) this.pins.set(hex, (this.pins.get(hex) ?? 0) + 1);
    const unpin = (): void => {
      for (const hex of hexes) {
        const count = (this.pins.get(hex) ?? 1) - 1;
        if (count <= 0) this.pins.delete(hex);
        else this.pins.set(hex, count);
      }
    };
    const id = randomBytes(8).toString('hex');
    const dir = join(this.snapshotsDir, id);
    try {
      await Promise.all(diffIds.map((diffId) => this.ensure(diffId, ensureLayer)));
      // Synchronous, as `place`: two dozen metadata calls of microseconds each, not two dozen trips through the thread pool.
      const now = new Date();
      for (const hex of hexes) utimesSync(join(this.layersDir, hex, 'size'), now, now);
      mkdirSync(join(dir, 'l'), { recursive: true });
      for (const name of ['upper', 'work', 'rootfs']) mkdirSync(join(dir, name));
      if (options.rootOwner !== undefined) chownSync(join(dir, 'upper'), options.rootOwner, options.rootOwner);
      const lower: string[] = [];
      if (hexes.length === 0) {
        // overlayfs needs at least one lower dir: FROM scratch stacks on an empty one.
        mkdirSync(join(dir, 'empty'));
        lower.push('empty');
      }
      const lowerRoot = options.layersView ?? this.layersDir;
      hexes.forEach((hex, i) => symlinkSync(join(lowerRoot, hex, 'fs'), join(dir, 'l', String(i))));
      for (let i = hexes.length - 1; i >= 0; i--) lower.push(`l/${i}`);
      // redirect_dir and metacopy would put data an OCI layer cannot express into the upper dir.
      // volatile: the unmount does not sync the upper filesystem; the layer it becomes carries a boot marker instead.
      const mountOptions = (volatile: boolean) =>
        `index=off,redirect_dir=off,metacopy=off,${volatile ? 'volatile,' : ''}lowerdir=${lower.join(':')},upperdir=upper,workdir=work`;
      if (mountOptions(true).length >= MOUNT_OPTIONS_LIMIT) {
        throw new Error(`cannot mount ${hexes.length} layers: the overlay mount options exceed ${MOUNT_OPTIONS_LIMIT} bytes`);
      }
      try {
        await mount('overlay', 'rootfs', 'overlay', 0, mountOptions(this.volatileMounts), { cwd: dir });
      } catch (error) {
        // A kernel before 5.10 refuses the option: mount without it from now on (each unmount syncs then).
        if (!this.volatileMounts || (error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
        await mount('overlay', 'rootfs', 'overlay', 0, mountOptions(false), { cwd: dir });
        this.volatileMounts = false;
      }
    } catch (error) {
      await removeSnapshotDir(dir).catch(() => undefined);
      unpin();
      throw error;
    }

    let released: Promise<void> | undefined;
    const release = () => {
      released ??= removeSnapshotDir(dir).finally(unpin);
      return released;
    };
    return {
      id,
      rootfs: join(dir, 'rootfs'),
      upperDir: join(dir, 'upper'),
      workDir: join(dir, 'work'),
      lowerDirs: hexes.map((hex) => join(this.layersDir, hex, 'fs')).reverse(),
      release,
      keepAsLayer: async (diffId: string, sizeBytes: number) => {
        const hex = hexOf(diffId);
        let kept = false;
        try {
          if (released) throw new Error('the snapshot was already released');
          await this.withLock(hex, async () => {
            if (await exists(join(this.layersDir, hex, 'size'))) return;
            // A directory still serving as an overlay's upper cannot be another overlay's lower: a plain
            // unmount (the snapshot is mounted until released) or nothing, never a lazy detach.
            await umount(join(dir, 'rootfs'));
            // The upper dir becomes the layer by two renames (synchronous, as `place`).
            const temp = mkdtempSync(join(this.layersDir, '.tmp-'));
            try {
              renameSync(join(dir, 'upper'), join(temp, 'fs'));
              this.place(temp, hex, sizeBytes);
            } finally {
              // Still there only when it was not placed (the layer came meanwhile): then it holds a whole tree.
              if (existsSync(temp)) await rm(temp, { recursive: true, force: true });
            }
          });
          kept = true;
        } finally {
          // Once the layer is in place, what is left of the snapshot goes while the next step runs.
          if (kept) void release().catch(() => undefined);
          else await release();
        }
      },
    };
  }

  async list(): Promise<LayerInfo[]> {
    await this.init();
    const infos: LayerInfo[] = [];
    for (const hex of await readdir(this.layersDir)) {
      if (!/^[a-f0-9]{64}$/.test(hex)) continue;
      const sizeFile = join(this.layersDir, hex, 'size');
      try {
        const [text, stats] = await Promise.all([readFile(sizeFile, 'utf8'), lstat(sizeFile)]);
        infos.push({ diffId: `sha256:${hex}`, sizeBytes: Number(text) || 0, lastUsed: stats.mtime, inUse: this.pins.has(hex) });
      } catch {
        // Being evicted or half-written by another process.
      }
    }
    return infos;
  }

  /** Evicts least-recently-used layers that no live snapshot uses until at most `maxBytes` remain. */
  async gc(maxBytes: number): Promise<GcResult> {
    const layers = (await this.list()).sort((a, b) => a.lastUsed.getTime() - b.lastUsed.getTime());
    let usedBytes = layers.reduce((sum, layer) => sum + layer.sizeBytes, 0);
    const evicted: string[] = [];
    let freedBytes = 0;
    for (const layer of layers) {
      if (usedBytes <= maxBytes) break;
      const hex = hexOf(layer.diffId);
      const removed = await this.withLock(hex, async () => {
        if (this.pins.has(hex)) return false;
        return this.trash(hex);
      });
      if (!removed) continue;
      usedBytes -= layer.sizeBytes;
      freedBytes += layer.sizeBytes;
      evicted.push(layer.diffId);
    }
    return { evicted, freedBytes, usedBytes };
  }

  private withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(key) ?? Promise.resolve();
    const run = previous.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return run;
  }
}

function hexOf(diffId: string): string {
  const match = DIFF_ID.exec(diffId);
  if (!match) throw new Error(`${JSON.stringify(diffId)} is not a sha256 diff ID`);
  return match[1]!;
}


/** Moves a finished layer into place; another process sharing the disk that finished it first wins. */
function renameIntoPlace(temp: string, dir: string): void {
  try {
    renameSync(temp, dir);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
  }
}

async function removeSnapshotDir(dir: string): Promise<void> {
  await unmountRootfs(join(dir, 'rootfs'));
  await rm(dir, { recursive: true, force: true });
}

async function unmountRootfs(rootfs: string): Promise<void> {
  if (await isMountPoint(rootfs)) {
    try {
      await umount(rootfs);
    } catch (error) {
      // A straggling process keeps the mount busy: detach it so the directory can go.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EBUSY' && code !== 'EINVAL') throw error;
      // Unmounted meanwhile (the kernel can report EBUSY/EINVAL while a container's namespace lets go): nothing to detach.
      if (await isMountPoint(rootfs)) await umount(rootfs, { detach: true });
    }
  }
}

async function isMountPoint(path: string): Promise<boolean> {
  return (await readMounts()).some((mount) => mount.mountPoint === path);
}

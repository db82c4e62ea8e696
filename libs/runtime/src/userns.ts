import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { chmod, chown, lchown, lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { mountPointsUnder, readMounts } from './mountinfo.js';
import { isAlive, processStart } from './network-claims.js';
import { constants, idmappedBindMount, lgetxattr, llistxattr, lsetxattr, mount, umount } from '@strata/native';

/** Host ids per range: a step's uids and gids 0..65535 map onto one range. */
export const USERNS_RANGE_SIZE = 65536;

export interface UserNamespacesOptions {
  /** First host uid/gid of the pool (STRATA_USERNS_BASE), a multiple of 65536. */
  base: number;
  /** Ranges in the pool (STRATA_USERNS_RANGES): how many steps of this host's workers may run at once. */
  ranges: number;
  /** The worker's runtime directory: idmapped views of the layer store go under `<root>/userns`. */
  root: string;
  /** The layer store's directory, seen through each range's idmap as the steps' lower dirs. */
  layersDir: string;
  /** Range claims and steps' private directories, shared by every worker of the host. Default /run/strata-userns (0711: runc enters it from inside the namespace). */
  stateDir?: string;
  /**
   * Keep the next step made ahead: its range claimed and its view of the layer store mounted while
   * the current step runs, off the next step's path (3-9 ms a step, traced). It holds one more range.
   */
  makeAhead?: boolean;
}

/** What one RUN step holds while it runs in a user namespace. */
export interface UsernsStep {
  /** The host uid and gid the step's root is (uids and gids 0..size-1 map to hostId..hostId+size-1). */
  readonly hostId: number;
  readonly size: number;
  /**
   * A directory only the step's root may enter (owner hostId, 0700, under a 0711 parent): runc opens
   * the rootfs from inside the user namespace, so its path must be traversable there.
   */
  readonly dir: string;
  /** The layer store's directory through the range's idmap: overlay lower dirs for the step. */
  readonly layersView: string;
  /** Bind-mounts `source` (a directory or file on a filesystem that supports idmapped mounts) shifted into the range; returns the mount's path. */
  idmapped(source: string): Promise<string>;
  /** A read-only overlay of unpacked layers (top first, by their hex) seen through the range's idmap; returns its root. */
  layersOverlay(hexes: readonly string[]): Promise<string>;
  /** Unmounts what the step mounted and frees the range. */
  release(): Promise<void>;
}

/** A user namespace kept open (by descriptor) per range. */
interface RangeHandle {
  fd: number;
}

/**
 * User namespaces for RUN steps (docs/adr/0022): every step runs in a user namespace whose root is an
 * unprivileged host range of 65536 ids, claimed host-wide for the step's lifetime (two steps that run
 * at once, of any build or worker on the host, never share ids). The image's layers are unpacked
 * once, owned as the image says; each step sees them through an idmapped bind mount of the layer
 * store in its range's user namespace (kept open per range), so the step sees root own what root owns. What the step writes lands
 * in the overlay's upper dir shifted by the range's first id; `shiftOwnersBack` undoes that before
 * the upper dir is diffed and kept.
 */
export class UserNamespaces {
  readonly stateDir: string;
  private readonly handles = new Map<number, Promise<RangeHandle>>();
  private next = 0;
  /** This worker's claim record (its pid and start time), read once. */
  private self: Promise<string> | undefined;
  /** The next step, made ahead (`makeAhead`). */
  private spare: Promise<UsernsStep> | undefined;
  private closing = false;

  constructor(private readonly options: UserNamespacesOptions) {
    if (!Number.isInteger(options.base) || options.base <= 0 || options.base % USERNS_RANGE_SIZE !== 0) {
      throw new Error(`the user namespace pool's base ${options.base} must be a positive multiple of ${USERNS_RANGE_SIZE}`);
    }
    if (!Number.isInteger(options.ranges) || options.ranges < 1 || options.base + options.ranges * USERNS_RANGE_SIZE > 2 ** 32 - 1) {
      throw new Error(`the user namespace pool of ${options.ranges} ranges from ${options.base} does not fit below 2^32`);
    }
    this.stateDir = options.stateDir ?? '/run/strata-userns';
  }

  private get claimsDir(): string {
    return path.join(this.stateDir, 'claims');
  }

  private get stepsDir(): string {
    return path.join(this.stateDir, 'steps');
  }

  private get viewsDir(): string {
    return path.join(this.options.root, 'userns');
  }

  /**
   * Clears views a killed worker left, then proves the design works on this kernel and filesystem:
   * an idmapped view of the layer store as an overlay lower dir. Throws what failed when it does not.
   */
  async init(): Promise<void> {
    await mkdir(this.claimsDir, { recursive: true, mode: 0o700 });
    await mkdir(this.stepsDir, { recursive: true, mode: 0o711 });
    await chmod(this.stateDir, 0o711);
    await chmod(this.stepsDir, 0o711);
    // runc opens a step's root from inside its namespace, as a user that owns none of the parents.
    for (let dir = path.dirname(this.stateDir); ; dir = path.dirname(dir)) {
      const stats = await lstat(dir);
      if ((stats.mode & 0o001) === 0) {
        throw new Error(`${dir} (mode ${(stats.mode & 0o777).toString(8)}) cannot be entered by other users, and runc enters ${this.stepsDir} as the step's unprivileged root`);
      }
      if (dir === path.dirname(dir)) break;
    }
    await mkdir(this.viewsDir, { recursive: true, mode: 0o700 });
    for (const mountPoint of mountPointsUnder(await readMounts(), this.viewsDir)) await umount(mountPoint, { detach: true }).catch(() => undefined);
    await rm(this.viewsDir, { recursive: true, force: true });
    await mkdir(this.viewsDir, { mode: 0o700 });
    await this.clearDeadSteps();
    await this.probe();
    this.makeSpare();
  }

  /** Step directories (and what is mounted in them) of any worker on the host killed mid-step: their range's claim is gone or stale. */
  private async clearDeadSteps(): Promise<void> {
    for (const name of await readdir(this.stepsDir)) {
      const hostId = Number(name.split('-')[0]);
      if (!Number.isInteger(hostId) || hostId % USERNS_RANGE_SIZE !== 0) continue;
      const claim = path.join(this.claimsDir, String(hostId / USERNS_RANGE_SIZE));
      const held = await lstat(claim).then(() => true, () => false);
      if (held && !(await staleClaim(claim))) continue;
      const dir = path.join(this.stepsDir, name);
      for (const mountPoint of mountPointsUnder(await readMounts(), dir)) await umount(mountPoint, { detach: true }).catch(() => undefined);
      await removeUnmounted(dir);
    }
  }

  /** An overlay on an idmapped lower dir, written through, as a step's root would be. */
  private async probe(): Promise<void> {
    const name = `.userns-probe-${randomBytes(4).toString('hex')}`;
    const lower = path.join(this.options.layersDir, name);
    const scratch = path.join(this.viewsDir, name);
    let step: UsernsStep | undefined;
    try {
      await mkdir(path.join(lower, 'fs'), { recursive: true });
      await writeFile(path.join(lower, 'fs', 'f'), '');
      step = await this.step();
      await Promise.all(['upper', 'work', 'merged'].map((d) => mkdir(path.join(scratch, d), { recursive: true })));
      await chown(path.join(scratch, 'upper'), step.hostId, step.hostId);
      const seen = await lstat(path.join(step.layersView, name, 'fs', 'f'));
      if (seen.uid !== step.hostId) throw new Error(`an idmapped view shows uid ${seen.uid} for a file of uid 0, not ${step.hostId}`);
      await mount('overlay', path.join(scratch, 'merged'), 'overlay', 0, `lowerdir=${path.join(step.layersView, name, 'fs')},upperdir=${path.join(scratch, 'upper')},workdir=${path.join(scratch, 'work')}`);
      try {
        await writeFile(path.join(scratch, 'merged', 'f'), 'written');
      } finally {
        await umount(path.join(scratch, 'merged'));
      }
    } finally {
      await step?.release();
      await rm(scratch, { recursive: true, force: true });
      await rm(lower, { recursive: true, force: true });
    }
  }

  /**
   * Claims a free range for one step (waiting for none: a full pool is an error naming the setting):
   * the step made ahead when there is one (then the next is made), else a new one.
   */
  async step(): Promise<UsernsStep> {
    const spare = this.spare;
    this.spare = undefined;
    const made = spare ? await spare.catch(() => undefined) : undefined;
    const step = made ?? (await this.claimStep());
    this.makeSpare();
    return step;
  }

  /** Starts making the next step ahead (`makeAhead`), unless one is made or being made. A failure (a full pool) leaves none. */
  private makeSpare(): void {
    if (!this.options.makeAhead || this.spare !== undefined || this.closing) return;
    const spare = this.claimStep();
    this.spare = spare;
    spare.catch(() => {
      if (this.spare === spare) this.spare = undefined;
    });
  }

  private async claimStep(): Promise<UsernsStep> {
    const index = await this.claim();
    const hostId = this.options.base + index * USERNS_RANGE_SIZE;
    const mounts: string[] = [];
    let dir: string | undefined;
    try {
      const handle = await this.handle(index);
      const name = `${hostId}-${randomBytes(6).toString('hex')}`;
      dir = path.join(this.stepsDir, name);
      await mkdir(dir, { mode: 0o700 });
      await chown(dir, hostId, hostId);
      const stepDir = dir;
      // The layer store through the range's idmap, for this step only: an overlay keeps what it uses of
      // it after the (lazy) unmount, and nothing stays mounted when a step's owner forgets to close.
      const view = path.join(this.viewsDir, name);
      await mkdir(view);
      mounts.push(view);
      await idmappedBindMount(this.options.layersDir, view, { fd: handle.fd }, { recursive: false });
      let count = 0;
      const released = { done: false };
      return {
        hostId,
        size: USERNS_RANGE_SIZE,
        dir: stepDir,
        layersView: view,
        idmapped: async (source) => {
          const target = path.join(stepDir, `m${count++}`);
          if ((await lstat(source)).isDirectory()) await mkdir(target);
          else await writeFile(target, '');
          await idmappedBindMount(source, target, { fd: handle.fd }, { recursive: false });
          mounts.push(target);
          return target;
        },
        layersOverlay: async (hexes) => {
          const target = path.join(stepDir, `m${count++}`);
          const links = path.join(stepDir, `l${count}`);
          await mkdir(target);
          await mkdir(links);
          // overlayfs without an upper dir wants two lower dirs at least: an empty one, owned by the step's root, goes under.
          const empty = path.join(links, 'empty');
          await mkdir(empty);
          await chown(empty, hostId, hostId);
          await Promise.all(hexes.map((hex, i) => symlink(path.join(view, hex, 'fs'), path.join(links, String(i)))));
          // Short relative names keep many layers under the one-page limit of mount options (as LayerStore does).
          const lower = [...hexes.map((_, i) => String(i)), 'empty'].join(':');
          await mount('overlay', target, 'overlay', constants.MS_RDONLY, `lowerdir=${lower}`, { cwd: links });
          mounts.push(target);
          return target;
        },
        release: async () => {
          if (released.done) return;
          released.done = true;
          for (const target of mounts.reverse()) await umount(target, { detach: true }).catch(() => undefined);
          await removeUnmounted(stepDir);
          await removeUnmounted(view);
          await this.release(index);
          // A full pool left nothing made ahead: the range freed here can be.
          this.makeSpare();
        },
      };
    } catch (error) {
      for (const target of mounts.reverse()) await umount(target, { detach: true }).catch(() => undefined);
      if (dir) await removeUnmounted(dir);
      for (const target of mounts) await removeUnmounted(target);
      await this.release(index);
      throw error;
    }
  }

  /** Lets go of the step made ahead and of the namespaces. Call it once no step runs. */
  async close(): Promise<void> {
    this.closing = true;
    const spare = this.spare;
    this.spare = undefined;
    await (await spare?.catch(() => undefined))?.release();
    const handles = [...this.handles.values()];
    this.handles.clear();
    for (const pending of handles) {
      const handle = await pending.catch(() => undefined);
      if (handle) closeSync(handle.fd);
    }
  }

  /** Range `index`'s namespace, made on its first use by this worker. */
  private handle(index: number): Promise<RangeHandle> {
    let pending = this.handles.get(index);
    if (!pending) {
      pending = this.makeHandle(index);
      this.handles.set(index, pending);
      pending.catch(() => this.handles.delete(index));
    }
    return pending;
  }

  private async makeHandle(index: number): Promise<RangeHandle> {
    return { fd: await userNamespace(this.options.base + index * USERNS_RANGE_SIZE, USERNS_RANGE_SIZE) };
  }

  /**
   * Claims a range host-wide: its file created with O_EXCL; a claim whose process is gone is taken over.
   * Ranges this worker already holds a namespace for come first: making one (a process started, its
   * maps written) costs 15-45 ms, and a range used again needs none (its last step has exited, and
   * everything it wrote was shifted back to the ids it wrote).
   */
  private async claim(): Promise<number> {
    const self = (this.self ??= processStart(process.pid).then((started) => JSON.stringify({ pid: process.pid, started })));
    const warm = [...this.handles.keys()];
    const start = this.next;
    const order = [...warm, ...Array.from({ length: this.options.ranges }, (_, i) => (start + i) % this.options.ranges).filter((index) => !this.handles.has(index))];
    for (const index of order) {
      const file = this.claimFile(index);
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          await writeFile(file, await self, { flag: 'wx', mode: 0o600 });
          if (!this.handles.has(index)) this.next = (index + 1) % this.options.ranges;
          return index;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
        if (!(await staleClaim(file))) break;
        await rm(file, { force: true });
      }
    }
    throw new Error(
      `no free user namespace range: all ${this.options.ranges} ranges of STRATA_USERNS_BASE=${this.options.base} are held by steps running on this host (raise STRATA_USERNS_RANGES)`,
    );
  }

  private async release(index: number): Promise<void> {
    const file = this.claimFile(index);
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.includes(`"pid":${process.pid},`)) await rm(file, { force: true });
  }

  /** One file per 65536-id block of the host, so pools with other bases still never overlap. */
  private claimFile(index: number): string {
    return path.join(this.claimsDir, String(this.options.base / USERNS_RANGE_SIZE + index));
  }
}

async function staleClaim(file: string): Promise<boolean> {
  try {
    const claim = JSON.parse(await readFile(file, 'utf8')) as { pid: number; started: string };
    return !(await isAlive(claim.pid, claim.started));
  } catch {
    // Half-written by a worker killed mid-claim, or just being written: only an old one is stale.
    const stats = await lstat(file).catch(() => null);
    return stats !== null && Date.now() - stats.mtimeMs > 10_000;
  }
}

/**
 * A user namespace mapping 0..size-1 to hostId.., held by an open descriptor: a throwaway
 * `unshare -U` process makes it, the worker writes its maps, opens /proc/<pid>/ns/user and kills it.
 */
async function userNamespace(hostId: number, size: number): Promise<number> {
  const holder = spawn('unshare', ['-U', 'sleep', '60'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  holder.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const nsPath = `/proc/${holder.pid}/ns/user`;
    const mine = await readlinkOf('/proc/self/ns/user');
    // unshare execs sleep once the namespace is made: wait until the holder is in a namespace of its own.
    for (let waited = 0; (await readlinkOf(nsPath)) === mine || (await readlinkOf(nsPath)) === ''; waited += 5) {
      if (holder.exitCode !== null || waited > 5_000) throw new Error(`unshare -U did not make a user namespace: ${stderr.trim() || 'it exited'}`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await writeFile(`/proc/${holder.pid}/uid_map`, `0 ${hostId} ${size}\n`);
    await writeFile(`/proc/${holder.pid}/gid_map`, `0 ${hostId} ${size}\n`);
    return openSync(nsPath, 'r');
  } finally {
    holder.kill('SIGKILL');
  }
}

async function readlinkOf(file: string): Promise<string> {
  return readlink(file).catch(() => '');
}

/**
 * Removes a step's directory once nothing is mounted under it: a recursive delete through a mount
 * that failed to go would delete the layer store, a cache or the context through it.
 */
async function removeUnmounted(dir: string): Promise<void> {
  const left = mountPointsUnder(await readMounts(), dir);
  if (left.length > 0) {
    process.stderr.write(`strata worker: left ${dir} in place: ${left.join(', ')} still mounted\n`);
    return;
  }
  await rm(dir, { recursive: true, force: true }).catch(() => undefined);
}

const S_ISUID_GID = 0o6000;
const CAPABILITY_XATTR = 'security.capability';
const ACL_XATTRS = ['system.posix_acl_access', 'system.posix_acl_default'];
/** VFS_CAP_REVISION_3: the capability xattr carries the user namespace root it applies to. */
const VFS_CAP_REVISION_3 = 0x03000000;
const VFS_CAP_REVISION_2 = 0x02000000;
const VFS_CAP_REVISION_MASK = 0xff000000;
const ACL_USER = 0x02;
const ACL_GROUP = 0x08;

/**
 * Turns what a step in the range hostId..hostId+size-1 wrote into an upper dir back into the owners
 * it wrote (host hostId+n becomes n), in place, before the diff reads it and before it is kept as a
 * layer: the layer records what the step saw. chown clears set-id bits and file capabilities, so
 * both are put back (a capability xattr the step wrote names the range's root: it becomes an
 * ordinary v2 one); ACL entries that name users or groups are shifted too. Overlay's whiteouts (0/0
 * character devices, made with the worker's credentials) are left as they are; any other id outside
 * the range is an error naming the path.
 */
export async function shiftOwnersBack(upperDir: string, hostId: number, size: number): Promise<void> {
  const seen = new Set<string>();
  const inRange = (id: number) => id >= hostId && id < hostId + size;
  const walk = async (dir: Buffer): Promise<void> => {
    const stats = await lstat(dir);
    const whiteout = stats.isCharacterDevice() && stats.rdev === 0;
    const inode = `${stats.dev}:${stats.ino}`;
    if (!whiteout && !seen.has(inode)) {
      seen.add(inode);
      if (!inRange(stats.uid) || !inRange(stats.gid)) {
        throw new Error(`${dir.toString()} is owned by host ${stats.uid}:${stats.gid}, outside the step's user namespace range ${hostId}..${hostId + size - 1}`);
      }
      const xattrs = await keptXattrs(dir, hostId, size);
      await lchown(dir, stats.uid - hostId, stats.gid - hostId);
      if (!stats.isSymbolicLink() && (stats.mode & S_ISUID_GID) !== 0) await chmod(dir, stats.mode & 0o7777);
      for (const [name, value] of xattrs) lsetxattr(dir, name, value);
    }
    if (!stats.isDirectory()) return;
    for (const name of await readdir(dir, { encoding: 'buffer' })) await walk(Buffer.concat([dir, SLASH, name]));
  };
  await walk(Buffer.from(upperDir));
}

const SLASH = Buffer.from('/');

/** The capability and ACL xattrs of a path, rewritten for the un-shifted owners (chown drops the capability one). */
async function keptXattrs(file: Buffer, hostId: number, size: number): Promise<Array<[string, Buffer]>> {
  const name = file;
  let names: string[];
  try {
    names = llistxattr(name);
  } catch {
    return [];
  }
  const out: Array<[string, Buffer]> = [];
  for (const xattr of names) {
    if (xattr === CAPABILITY_XATTR) out.push([xattr, capabilityForLayer(lgetxattr(name, xattr))]);
    else if (ACL_XATTRS.includes(xattr)) {
      const acl = Buffer.from(lgetxattr(name, xattr));
      // posix_acl_xattr: a 4-byte header, then 8-byte entries { u16 tag, u16 perm, u32 id }.
      for (let at = 4; at + 8 <= acl.length; at += 8) {
        const tag = acl.readUInt16LE(at);
        const id = acl.readUInt32LE(at + 4);
        if ((tag === ACL_USER || tag === ACL_GROUP) && id >= hostId && id < hostId + size) acl.writeUInt32LE(id - hostId, at + 4);
      }
      out.push([xattr, acl]);
    }
  }
  return out;
}

/** A v3 capability xattr (rooted in the step's namespace) as the v2 one an image carries; v2 as it is. */
function capabilityForLayer(value: Buffer): Buffer {
  if (value.length < 4) return value;
  const magic = value.readUInt32LE(0);
  if ((magic & VFS_CAP_REVISION_MASK) !== VFS_CAP_REVISION_3 || value.length < 24) return value;
  const v2 = Buffer.from(value.subarray(0, 20));
  v2.writeUInt32LE((magic & ~VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2, 0);
  return v2;
}


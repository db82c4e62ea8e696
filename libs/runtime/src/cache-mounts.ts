import { createHash, randomBytes } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { chmod, chown, lstat, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import type { RunMountRequest } from '@strata/build-engine';
import { extractTar } from './extract.js';
import type { RunMount } from './types.js';

/** Where cache-mount archives are kept so that every worker gets them (S3 in production). */
export interface CacheArchiveStore {
  /** The archive saved under `key`, or null when there is none. */
  get(key: string): Promise<Readable | null>;
  put(key: string, body: Readable): Promise<void>;
}

/** Undo steps of one RUN, run in reverse order once it ends. */
export type StepCleanups = Array<() => Promise<void>>;

/**
 * `RUN --mount=type=cache` as BuildKit shares it, per tenant, id and uid/gid/mode (BuildKit's
 * frontend makes each cache from a directory with those owners and mode, so other options are
 * another cache): `shared` mounts one directory into every step at once, `locked` makes steps take
 * turns, `private` gives a step a throwaway directory while another uses the cache. Directories
 * live under `root/<tenant>/<cache>` (see cacheName); a changed
 * cache is saved to the archive store after the step (in the background, one upload per cache at
 * a time), and a worker without the directory starts from that copy.
 */
export class CacheMounts {
  private readonly locks = new Map<string, Promise<void>>();
  private readonly users = new Map<string, number>();
  /** Signature of each cache directory as last restored or saved, so unchanged caches are not uploaded again. */
  private readonly signatures = new Map<string, string>();
  private readonly uploads = new Map<string, Promise<void>>();

  constructor(
    private readonly root: string,
    private readonly archives: CacheArchiveStore,
  ) {}

  async mount(tenantId: string, m: Extract<RunMountRequest, { type: 'cache' }>, cleanups: StepCleanups): Promise<RunMount> {
    const name = cacheName(m);
    const key = `${hash(tenantId)}/${hash(name)}`;
    let dir = path.join(this.root, key);
    if (m.sharing === 'locked') {
      const previous = this.locks.get(key) ?? Promise.resolve();
      let unlock!: () => void;
      const mine = new Promise<void>((resolve) => (unlock = resolve));
      const tail = previous.then(() => mine);
      this.locks.set(key, tail);
      await previous;
      cleanups.push(async () => {
        unlock();
        if (this.locks.get(key) === tail) this.locks.delete(key);
      });
    } else if (m.sharing === 'private' && (this.users.get(key) ?? 0) > 0) {
      // In use by another step: this one gets a throwaway directory, as BuildKit gives a new mount.
      dir = path.join(this.root, '.private', randomBytes(8).toString('hex'));
      const throwaway = dir;
      cleanups.push(() => rm(throwaway, { recursive: true, force: true }));
    }
    this.users.set(key, (this.users.get(key) ?? 0) + 1);
    cleanups.push(async () => {
      const n = (this.users.get(key) ?? 1) - 1;
      if (n <= 0) this.users.delete(key);
      else this.users.set(key, n);
    });
    const exists = await lstat(dir).then(
      () => true,
      () => false,
    );
    const shared = dir === path.join(this.root, key);
    if (!exists) {
      await mkdir(path.dirname(dir), { recursive: true });
      await mkdir(dir);
      await chown(dir, m.uid, m.gid);
      await chmod(dir, m.mode);
      // Another worker may have filled this cache: start from its copy in the archive store.
      if (shared) await this.restore(tenantId, name, key, dir);
    }
    if (shared && !m.readOnly) cleanups.push(async () => this.save(tenantId, name, key, dir));
    return { type: 'bind', source: dir, destination: m.target, readonly: m.readOnly };
  }

  /** Waits for cache uploads in flight (a worker shutting down lets them finish). */
  async flush(): Promise<void> {
    await Promise.all(this.uploads.values());
  }

  /** Fills an empty cache directory from the copy another worker saved, if there is one. */
  private async restore(tenantId: string, name: string, key: string, dir: string): Promise<void> {
    const archive = await this.archives.get(archiveKey(tenantId, name));
    const id = name.split('\0')[0];
    if (archive === null) return;
    try {
      await extractTar(archive, dir, { preserveOwnership: true, maxBytes: 64 * 1024 ** 3, maxEntries: 10_000_000 });
      this.signatures.set(key, await treeSignature(dir));
    } catch (e) {
      // A cache is only an accelerator: an archive we cannot take starts the cache empty.
      process.stderr.write(`cache mount ${id}: could not restore from S3 (${(e as Error).message}); starting empty\n`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true });
    }
  }

  /** After a step, saves a changed cache directory in the background (one upload per cache at a time). */
  private save(tenantId: string, name: string, key: string, dir: string): void {
    const id = name.split('\0')[0];
    const previous = this.uploads.get(key) ?? Promise.resolve();
    const next = previous
      .then(async () => {
        const signature = await treeSignature(dir);
        if (this.signatures.get(key) === signature) return;
        const tar = spawn('tar', ['--numeric-owner', '-czf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'ignore'] });
        const exited = new Promise<number>((resolve) => tar.once('close', (code) => resolve(code ?? 1)));
        await this.archives.put(archiveKey(tenantId, name), tar.stdout);
        if ((await exited) !== 0) throw new Error('tar failed');
        this.signatures.set(key, signature);
      })
      .catch((e: unknown) => {
        process.stderr.write(`cache mount ${id}: could not save to S3: ${(e as Error).message}\n`);
      });
    this.uploads.set(key, next);
    void next.finally(() => {
      if (this.uploads.get(key) === next) this.uploads.delete(key);
    });
  }
}

type CacheOptions = Pick<Extract<RunMountRequest, { type: 'cache' }>, 'id' | 'uid' | 'gid' | 'mode'>;

/**
 * Which cache a mount names: its id, plus its uid/gid/mode when they are not the defaults
 * (0, 0, 0755), so a cache made before options were part of it keeps its name.
 */
export function cacheName(m: CacheOptions): string {
  if (m.uid === 0 && m.gid === 0 && m.mode === 0o755) return m.id;
  return `${m.id}\0${m.uid}:${m.gid}:${m.mode.toString(8)}`;
}

/** Where a tenant's cache mount is kept in the archive store. */
export function cacheArchiveKey(tenantId: string, m: CacheOptions): string {
  return archiveKey(tenantId, cacheName(m));
}

function archiveKey(tenantId: string, name: string): string {
  return `cache-mounts/${tenantId}/${hash(name)}`;
}

/** A cheap signature of a directory tree (paths, sizes, mtimes, modes, owners): did a step change it? */
async function treeSignature(dir: string): Promise<string> {
  const { stdout } = await promisify(execFile)('find', [dir, '-printf', '%P %y %s %T@ %m %U %G %l\\n'], { maxBuffer: 256 * 1024 * 1024 });
  return createHash('sha256').update(stdout.split('\n').sort().join('\n')).digest('hex');
}

export function hash(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 32);
}

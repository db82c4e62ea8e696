import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';

/** What a file's content digest is remembered by (BuildKit's fsutil keeps the same): size, mtime, inode and ctime. */
export interface FileStamp {
  size: number;
  mtimeNs: bigint;
  ino: bigint;
  ctimeNs: bigint;
}

type Row = [size: number, mtimeNs: string, ino: string, ctimeNs: string, sha256: string];

/**
 * path → (size, mtime, inode, ctime) → sha256 of a context directory's files, kept in a local file
 * between builds, so an unchanged file is not read again. A file modified at or after the moment
 * the previous scan started is hashed anyway (git's "racily clean" rule): a write within the same
 * timestamp tick as that scan would otherwise go unnoticed.
 */
/** What an unchanged walk of the context means (docs/adr/0037): the walk's key, its manifest's digest, its counts. */
export interface WalkRecord {
  key: string;
  digest: string;
  files: number;
  bytes: number;
}

export class StatCache {
  private next = new Map<string, Row>();
  private previous = new Map<string, Row>();
  /** When the scan that wrote `previous` started, in ns since the epoch. */
  private previousStartNs = 0n;
  private loaded = false;
  private walkToSave: WalkRecord | null = null;
  hits = 0;
  misses = 0;

  private constructor(
    private readonly file: string | null,
    private readonly dir: string,
    /** When this scan started. */
    readonly startNs: bigint,
    /** What the last scan the server took remembered of its walk (a file of its own: a few hundred bytes). */
    private readonly walk: WalkRecord | null,
  ) {}

  /**
   * The cache of `contextDir`, in `cacheDir` (or none, when cacheDir is null). Only the small walk
   * record is read here; the per-file rows are read by loadFiles, when a scan needs them.
   */
  static async open(cacheDir: string | null, contextDir: string, nowMs = Date.now()): Promise<StatCache> {
    const startNs = BigInt(Math.floor(nowMs)) * 1_000_000n;
    const dir = path.resolve(contextDir);
    if (cacheDir === null) return new StatCache(null, dir, startNs, null);
    const file = path.join(cacheDir, 'contexts', `${createHash('sha256').update(dir).digest('hex').slice(0, 32)}.json`);
    let walk: WalkRecord | null = null;
    try {
      const data = JSON.parse(await readFile(walkFileOf(file), 'utf8')) as { version: number; dir: string } & WalkRecord;
      if (data.version === 1 && data.dir === dir && typeof data.key === 'string' && typeof data.digest === 'string') {
        walk = { key: data.key, digest: data.digest, files: Number(data.files), bytes: Number(data.bytes) };
      }
    } catch {
      // No walk record yet, or an unreadable one: the manifest is made and hashed.
    }
    return new StatCache(file, dir, startNs, walk);
  }

  /** The digest (and counts) of the manifest a walk with this key makes, when the last scan the server took had the same walk. */
  knownWalk(key: string): WalkRecord | null {
    return this.walk !== null && this.walk.key === key ? this.walk : null;
  }

  /**
   * Remembers (at save) that a walk with this key makes a manifest of this digest. Only when every
   * file's mtime is before this scan's start (git's racily-clean rule, as for each file's row): a
   * file written in the same tick could change later without changing its stamp.
   */
  rememberWalk(record: WalkRecord, newestFileMtimeNs: bigint): void {
    this.walkToSave = newestFileMtimeNs < this.startNs ? record : null;
  }

  /** Reads the per-file rows (once). */
  async loadFiles(): Promise<void> {
    if (this.loaded || this.file === null) return;
    this.loaded = true;
    try {
      const data = JSON.parse(await readFile(this.file, 'utf8')) as { version: number; dir: string; startNs: string; files: Record<string, Row> };
      if (data.version === 1 && data.dir === this.dir) {
        this.previous = new Map(Object.entries(data.files));
        this.previousStartNs = BigInt(data.startNs);
      }
    } catch {
      // No cache yet, or an unreadable one: every file is hashed.
    }
  }

  /** The remembered digest of `rel`, when its stamp is unchanged and it was not racily clean. */
  lookup(rel: string, stamp: FileStamp): string | null {
    const row = this.previous.get(rel);
    if (
      row &&
      row[0] === stamp.size &&
      row[1] === String(stamp.mtimeNs) &&
      row[2] === String(stamp.ino) &&
      row[3] === String(stamp.ctimeNs) &&
      stamp.mtimeNs < this.previousStartNs
    ) {
      this.hits += 1;
      this.next.set(rel, row);
      return row[4];
    }
    this.misses += 1;
    return null;
  }

  remember(rel: string, stamp: FileStamp, sha256: string): void {
    this.next.set(rel, [stamp.size, String(stamp.mtimeNs), String(stamp.ino), String(stamp.ctimeNs), sha256]);
  }

  /**
   * Writes what this scan saw (files no longer there are forgotten). When every file hit and none
   * went away, the file on disk already says all of it (its older start time only makes it trust
   * no more than it did): an unchanged rebuild writes nothing. The walk record is written when it
   * changed; a scan that kept no walk record (racily clean) removes the old one.
   */
  async save(contextDir: string): Promise<void> {
    if (this.file === null) return;
    const walkChanged = this.walkToSave === null ? false : this.walk?.key !== this.walkToSave.key || this.walk.digest !== this.walkToSave.digest;
    const filesChanged = this.loaded && !(this.misses === 0 && this.hits === this.previous.size && this.next.size === this.previous.size);
    if (!walkChanged && !filesChanged) {
      if (this.loaded && this.walkToSave === null && this.walk !== null) await rm(walkFileOf(this.file), { force: true });
      return;
    }
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    if (filesChanged) {
      const tmp = `${this.file}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify({ version: 1, dir: path.resolve(contextDir), startNs: String(this.startNs), files: Object.fromEntries(this.next) }), { mode: 0o600 });
      await rename(tmp, this.file);
    }
    if (this.walkToSave === null) {
      await rm(walkFileOf(this.file), { force: true });
    } else if (walkChanged) {
      const tmp = `${walkFileOf(this.file)}.${process.pid}.tmp`;
      await writeFile(tmp, JSON.stringify({ version: 1, dir: path.resolve(contextDir), ...this.walkToSave }), { mode: 0o600 });
      await rename(tmp, walkFileOf(this.file));
    }
  }
}

/** The walk record sits beside the per-file rows. */
function walkFileOf(file: string): string {
  return file.replace(/\.json$/, '.walk.json');
}

/** Where the CLI keeps its caches: STRATA_CACHE_DIR, else $XDG_CACHE_HOME/strata, else ~/.cache/strata. */
export function cacheDirOf(env: Record<string, string | undefined>): string {
  if (env.STRATA_CACHE_DIR) return env.STRATA_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return path.join(env.XDG_CACHE_HOME, 'strata');
  return path.join(env.HOME || homedir(), '.cache', 'strata');
}

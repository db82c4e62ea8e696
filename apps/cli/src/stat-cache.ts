import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
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
export class StatCache {
  private next = new Map<string, Row>();
  hits = 0;
  misses = 0;

  private constructor(
    private readonly file: string | null,
    private readonly previous: Map<string, Row>,
    /** When the scan that wrote `previous` started, in ns since the epoch. */
    private readonly previousStartNs: bigint,
    /** When this scan started. */
    private readonly startNs: bigint,
  ) {}

  /** The cache of `contextDir`, in `cacheDir` (or none, when cacheDir is null). */
  static async open(cacheDir: string | null, contextDir: string, nowMs = Date.now()): Promise<StatCache> {
    const startNs = BigInt(Math.floor(nowMs)) * 1_000_000n;
    if (cacheDir === null) return new StatCache(null, new Map(), 0n, startNs);
    const file = path.join(cacheDir, 'contexts', `${createHash('sha256').update(path.resolve(contextDir)).digest('hex').slice(0, 32)}.json`);
    try {
      const data = JSON.parse(await readFile(file, 'utf8')) as { version: number; dir: string; startNs: string; files: Record<string, Row> };
      if (data.version === 1 && data.dir === path.resolve(contextDir)) return new StatCache(file, new Map(Object.entries(data.files)), BigInt(data.startNs), startNs);
    } catch {
      // No cache yet, or an unreadable one: every file is hashed.
    }
    return new StatCache(file, new Map(), 0n, startNs);
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
   * no more than it did): an unchanged rebuild writes nothing.
   */
  async save(contextDir: string): Promise<void> {
    if (this.file === null) return;
    if (this.misses === 0 && this.hits === this.previous.size && this.next.size === this.previous.size) return;
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify({ version: 1, dir: path.resolve(contextDir), startNs: String(this.startNs), files: Object.fromEntries(this.next) }), { mode: 0o600 });
    await rename(tmp, this.file);
  }
}

/** Where the CLI keeps its caches: STRATA_CACHE_DIR, else $XDG_CACHE_HOME/strata, else ~/.cache/strata. */
export function cacheDirOf(env: Record<string, string | undefined>): string {
  if (env.STRATA_CACHE_DIR) return env.STRATA_CACHE_DIR;
  if (env.XDG_CACHE_HOME) return path.join(env.XDG_CACHE_HOME, 'strata');
  return path.join(env.HOME || homedir(), '.cache', 'strata');
}

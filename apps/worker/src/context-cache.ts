import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { extractTar, type ExtractLimits } from '@strata/oci';

/** What a cached context remembers of each regular file: sha256 (hex), mode, mtime. */
type FileRecord = [string, number, number];

export interface ExtractedContext {
  /** The extracted tree: read it, never write it (other builds of the same bytes share it). */
  dir: string;
  /** Content hash of every regular file, taken while extracting. */
  fileHashes: Map<string, string>;
  release(): void;
}

/**
 * Build contexts this worker extracted, kept by tenant and content digest: rebuilding the same
 * bytes skips the download and the extraction. Entries in use are never evicted; the least
 * recently used others go when there are more than `maxEntries`.
 */
export class ContextCache {
  private readonly inUse = new Map<string, number>();
  private readonly pending = new Map<string, Promise<void>>();

  constructor(
    private readonly root: string,
    private readonly maxEntries = 16,
  ) {}

  async open(tenantId: string, digest: string, download: () => Promise<Readable>, limits: ExtractLimits): Promise<ExtractedContext> {
    const key = `${tenantId}_${digest.replace(/^sha256:/, '')}`;
    const entry = path.join(this.root, key);
    this.inUse.set(key, (this.inUse.get(key) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.inUse.get(key) ?? 1) - 1;
      if (n === 0) this.inUse.delete(key);
      else this.inUse.set(key, n);
    };
    try {
      let hashes = await this.read(entry);
      if (!hashes) {
        // Two builds of the same new context extract it once.
        let p = this.pending.get(key);
        if (!p) {
          p = this.extract(entry, tenantId, download, limits).finally(() => this.pending.delete(key));
          this.pending.set(key, p);
        }
        await p;
        hashes = await this.read(entry);
        if (!hashes) throw new Error(`context ${digest} vanished from the worker's cache`);
        void this.trim();
      }
      const now = new Date();
      await utimes(entry, now, now).catch(() => undefined);
      return { dir: path.join(entry, 'tree'), fileHashes: hashes, release };
    } catch (e) {
      release();
      throw e;
    }
  }

  private async readFiles(entry: string): Promise<Record<string, FileRecord> | null> {
    try {
      return JSON.parse(await readFile(path.join(entry, 'files.json'), 'utf8')) as Record<string, FileRecord>;
    } catch {
      return null;
    }
  }

  private async read(entry: string): Promise<Map<string, string> | null> {
    const files = await this.readFiles(entry);
    return files ? new Map(Object.entries(files).map(([p, [hash]]) => [p, hash])) : null;
  }

  /**
   * Extracts a new context. Files identical to ones in this tenant's most recent context (same
   * content, mode and mtime: a one-file change, say) are hard-linked from it rather than written.
   */
  private async extract(entry: string, tenantId: string, download: () => Promise<Readable>, limits: ExtractLimits): Promise<void> {
    const tmp = path.join(this.root, `tmp-${randomUUID()}`);
    const previous = await this.latestOfTenant(tenantId);
    if (previous) this.inUse.set(previous.key, (this.inUse.get(previous.key) ?? 0) + 1);
    try {
      await mkdir(path.join(tmp, 'tree'), { recursive: true });
      const prevTree = previous ? path.join(this.root, previous.key, 'tree') : null;
      const summary = await extractTar(await download(), path.join(tmp, 'tree'), {
        ...limits,
        hashFiles: true,
        reuse: (rel, hash, header) => {
          const old = previous?.files[rel];
          return old && old[0] === hash && old[1] === header.mode && old[2] === header.mtime ? path.join(prevTree!, rel) : null;
        },
      });
      const files: Record<string, FileRecord> = {};
      for (const [rel, hash] of summary.fileHashes ?? []) {
        const m = summary.fileModes?.get(rel);
        files[rel] = [hash, m?.mode ?? 0, m?.mtime ?? 0];
      }
      await writeFile(path.join(tmp, 'files.json'), JSON.stringify(files));
      await rm(entry, { recursive: true, force: true });
      await rename(tmp, entry);
    } finally {
      if (previous) {
        const n = (this.inUse.get(previous.key) ?? 1) - 1;
        if (n === 0) this.inUse.delete(previous.key);
        else this.inUse.set(previous.key, n);
      }
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** The tenant's most recently used context on this worker, if any. */
  private async latestOfTenant(tenantId: string): Promise<{ key: string; files: Record<string, FileRecord> } | null> {
    let best: { key: string; used: number } | null = null;
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (!name.startsWith(`${tenantId}_`)) continue;
      const st = await stat(path.join(this.root, name)).catch(() => null);
      if (st && (!best || st.mtimeMs > best.used)) best = { key: name, used: st.mtimeMs };
    }
    if (!best) return null;
    const files = await this.readFiles(path.join(this.root, best.key));
    return files ? { key: best.key, files } : null;
  }

  /** Removes the least recently used entries beyond the limit (and leftovers of interrupted extractions). */
  async trim(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return;
    }
    const entries: Array<{ name: string; used: number }> = [];
    for (const name of names) {
      if (name.startsWith('tmp-')) {
        if (![...this.pending.keys()].length) await rm(path.join(this.root, name), { recursive: true, force: true }).catch(() => undefined);
        continue;
      }
      const st = await stat(path.join(this.root, name)).catch(() => null);
      if (st) entries.push({ name, used: st.mtimeMs });
    }
    entries.sort((a, b) => b.used - a.used);
    for (const e of entries.slice(this.maxEntries)) {
      if (this.inUse.has(e.name) || this.pending.has(e.name)) continue;
      await rm(path.join(this.root, e.name), { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

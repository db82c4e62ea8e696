import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { extractTar, type ExtractLimits } from '@strata/oci';

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
    const key = `${tenantId}-${digest.replace(/^sha256:/, '')}`;
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
          p = this.extract(entry, download, limits).finally(() => this.pending.delete(key));
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

  private async read(entry: string): Promise<Map<string, string> | null> {
    try {
      return new Map(Object.entries(JSON.parse(await readFile(path.join(entry, 'hashes.json'), 'utf8')) as Record<string, string>));
    } catch {
      return null;
    }
  }

  private async extract(entry: string, download: () => Promise<Readable>, limits: ExtractLimits): Promise<void> {
    const tmp = path.join(this.root, `tmp-${randomUUID()}`);
    try {
      await mkdir(path.join(tmp, 'tree'), { recursive: true });
      const summary = await extractTar(await download(), path.join(tmp, 'tree'), { ...limits, hashFiles: true });
      await writeFile(path.join(tmp, 'hashes.json'), JSON.stringify(Object.fromEntries(summary.fileHashes ?? [])));
      await rm(entry, { recursive: true, force: true });
      await rename(tmp, entry);
    } finally {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
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

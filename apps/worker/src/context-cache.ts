import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { IndexedTree } from '@strata/build-engine';
import { type ExtractLimits, indexTar, materializeIndex, PackReader, type TarIndex, type TarIndexEntry } from '@strata/oci';

export interface ExtractedContext {
  /** Every path of the context with its metadata and, for files, content hash and place in the pack. */
  index: TarIndex;
  /** The index with what is derived from it, when kept across builds (a manifest build's). */
  tree?: IndexedTree;
  /** The file contents, read through the index. Closed on release. */
  pack: PackReader;
  /** The context as a directory (made on first call, then kept with the entry): for bind mounts. Read it, never write it. */
  directory(): Promise<string>;
  release(): Promise<void>;
}

/**
 * Build contexts this worker has indexed, kept by tenant and content digest: a rebuild of the same
 * bytes skips the download. A context is kept as an index plus one pack file of file contents
 * (see indexTar), so a context of thousands of small files costs one sequential write instead of
 * a file each. Entries in use are never evicted; the least recently used others go when there
 * are more than `maxEntries`.
 */
export class ContextCache {
  private readonly inUse = new Map<string, number>();
  private readonly pending = new Map<string, Promise<TarIndex>>();
  private readonly trees = new Map<string, Promise<string>>();
  /**
   * The indexed trees of the last contexts opened, by key, least recently used first (at most
   * `maxTreeEntries` paths in all): a rebuild of the same bytes reads and parses no index and
   * walks nothing for its COPY checksums, which the tree keeps (docs/adr/0033).
   */
  private readonly indexed = new Map<string, IndexedTree>();

  constructor(
    private readonly root: string,
    private readonly maxEntries = 16,
    private readonly maxTreeEntries = 100_000,
  ) {}

  async open(tenantId: string, digest: string, download: () => Promise<Readable>, limits: ExtractLimits): Promise<ExtractedContext> {
    const key = `${tenantId}_${digest.replace(/^sha256:/, '')}`;
    const entry = path.join(this.root, key);
    this.inUse.set(key, (this.inUse.get(key) ?? 0) + 1);
    let released = false;
    const unuse = () => {
      if (released) return false;
      released = true;
      const n = (this.inUse.get(key) ?? 1) - 1;
      if (n === 0) this.inUse.delete(key);
      else this.inUse.set(key, n);
      return true;
    };
    try {
      let tree = this.indexed.get(key);
      let index = tree?.index ?? (await this.read(entry));
      if (!index) {
        // Two builds of the same new context index it once.
        let p = this.pending.get(key);
        if (!p) {
          p = this.index(entry, download, limits).finally(() => this.pending.delete(key));
          this.pending.set(key, p);
        }
        index = await p;
        void this.trim();
      }
      const now = new Date();
      await utimes(entry, now, now).catch(() => undefined);
      const pack = await PackReader.open(path.join(entry, 'pack'));
      const ix = index;
      tree ??= new IndexedTree(ix);
      this.remember(key, tree);
      return {
        index: ix,
        tree,
        pack,
        directory: () => this.tree(key, entry, ix),
        release: async () => {
          if (unuse()) await pack.close().catch(() => undefined);
        },
      };
    } catch (e) {
      unuse();
      throw e;
    }
  }

  private remember(key: string, tree: IndexedTree): void {
    this.indexed.delete(key);
    this.indexed.set(key, tree);
    let total = 0;
    for (const t of this.indexed.values()) total += t.index.size;
    for (const [k, t] of this.indexed) {
      if (total <= this.maxTreeEntries || this.indexed.size === 1) break;
      this.indexed.delete(k);
      total -= t.index.size;
    }
  }

  private async read(entry: string): Promise<TarIndex | null> {
    try {
      const rows = JSON.parse(await readFile(path.join(entry, 'index.json'), 'utf8')) as Array<[string, TarIndexEntry]>;
      // Hard-linked names are one entry object again (COPY keeps them linked); an index written
      // before files were numbered is made again from the context.
      const inodes = new Map<number, TarIndexEntry>();
      for (const row of rows) {
        const e = row[1];
        if (e.type !== 'file') continue;
        if (e.inode === undefined) return null;
        const first = inodes.get(e.inode);
        if (first) row[1] = first;
        else inodes.set(e.inode, e);
      }
      return new Map(rows);
    } catch {
      return null;
    }
  }

  private async index(entry: string, download: () => Promise<Readable>, limits: ExtractLimits): Promise<TarIndex> {
    const tmp = path.join(this.root, `tmp-${randomUUID()}`);
    try {
      await mkdir(tmp, { recursive: true });
      const { index } = await indexTar(await download(), path.join(tmp, 'pack'), limits);
      await writeFile(path.join(tmp, 'index.json'), JSON.stringify([...index]));
      await rm(entry, { recursive: true, force: true });
      await rename(tmp, entry);
      return index;
    } finally {
      await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /** The entry's tree on disk, written from the pack the first time a build asks for it. */
  private tree(key: string, entry: string, index: TarIndex): Promise<string> {
    let p = this.trees.get(key);
    if (!p) {
      const dir = path.join(entry, 'tree');
      p = (async () => {
        const done = await stat(path.join(entry, 'tree.done')).then(() => true, () => false);
        if (!done) {
          await rm(dir, { recursive: true, force: true });
          await materializeIndex(index, path.join(entry, 'pack'), dir);
          await writeFile(path.join(entry, 'tree.done'), '');
        }
        return dir;
      })();
      this.trees.set(key, p);
      p.catch(() => this.trees.delete(key));
    }
    return p;
  }

  /** Removes the least recently used entries beyond the limit (and leftovers of interrupted indexing). */
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
      this.trees.delete(e.name);
      this.indexed.delete(e.name);
      await rm(path.join(this.root, e.name), { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

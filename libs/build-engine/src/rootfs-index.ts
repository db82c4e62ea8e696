import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { type Digest, parseWhiteout, readTarEntries, resolveThroughLinks, type WrittenEntry } from '@strata/oci';

export interface IndexedPath {
  /** 'file', 'directory', 'symlink', ...; a hard link is indexed as the file it names. */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Regular files: content size and sha256 (hex). */
  size: number;
  sha256?: string;
  /** Symlinks: the target. */
  linkTarget?: string;
}

/** Where a path of an image comes from: its metadata and the layer (blob digest) that provides it. */
export interface ProvidedPath extends IndexedPath {
  layer: Digest;
  /** Regular files: which file of the image this is; hard-linked names (one layer's) share it. */
  inode?: string;
}

/** Numbers indexed files: a hard link is indexed as the very object of the file it names. */
const inodes = new WeakMap<IndexedPath, number>();
let lastInode = 0;
function inodeOf(e: IndexedPath): number {
  let n = inodes.get(e);
  if (n === undefined) inodes.set(e, (n = ++lastInode));
  return n;
}

/** Paths that exist in an image's filesystem, with their metadata, plus /etc/passwd and /etc/group. */
export interface RootfsIndex {
  paths: { get(path: string): IndexedPath | undefined };
  passwd: string | null;
  group: string | null;
  /** The entry at a path (no symlinks followed) and the layer it comes from. */
  lookup(path: string): ProvidedPath | undefined;
  /** Names in a directory of the image, sorted. */
  list(dir: string): string[];
  /**
   * Where `rel` leads, following symlinks in its parents (and in the last component when
   * `followLast`) as a chroot would: never above the root. Null on a link loop.
   */
  resolve(rel: string, followLast: boolean): string | null;
}

/** A layer's header metadata, as written (the layer writer's WrittenEntry) or read: what the index is made of. */
export type LayerIndexEntry = Omit<WrittenEntry, 'type'> & { type: string };

/** What one layer adds and removes, without its contents (except /etc/passwd and /etc/group). */
interface LayerIndex {
  digest: Digest;
  entries: Map<string, IndexedPath>;
  /** Directory → names this layer writes in it; made on first listing. */
  children?: Map<string, string[]>;
  /** Paths this layer deletes from the layers below (`.wh.<name>`). */
  removed: Set<string>;
  /** Directories whose lower-layer children this layer hides (`.wh..wh..opq`). */
  opaque: Set<string>;
  /**
   * Content of etc/passwd and etc/group when this layer writes them; undefined when it does not;
   * their size when larger than MAX_ACCOUNT_FILE_BYTES (not held in memory).
   */
  passwd?: string | { tooLarge: number };
  group?: string | { tooLarge: number };
  /** Entries counted toward the memo's budget. */
  weight: number;
}

const KEEP_CONTENT = new Set(['etc/passwd', 'etc/group']);
/**
 * The most of /etc/passwd or /etc/group kept in a layer's index (some 100,000 accounts): a step may
 * write a file of any size there, and the worker must not hold it whole.
 */
export const MAX_ACCOUNT_FILE_BYTES = 8 * 1024 * 1024;

function cleanName(name: string): string {
  return name.replace(/^(\.\/)+/, '').replace(/^\/+/, '').replace(/\/+$/, '');
}

function* ancestors(p: string): Generator<string> {
  for (let i = p.lastIndexOf('/'); i > 0; i = p.lastIndexOf('/', i - 1)) yield p.slice(0, i);
}

/** An image's filesystem seen through its layer indexes, top layer first. */
class StackedIndex implements RootfsIndex {
  readonly paths: { get(path: string): IndexedPath | undefined };

  constructor(private readonly top: LayerIndex[]) {
    this.paths = { get: (p) => this.lookup(cleanName(p)) };
  }

  /** Read when a name is looked up (COPY --chown=name), so an oversized file fails only the builds that need it. */
  get passwd(): string | null {
    return this.content('etc/passwd', 'passwd');
  }

  get group(): string | null {
    return this.content('etc/group', 'group');
  }

  lookup(p: string): ProvidedPath | undefined {
    if (p === '') return { type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, layer: this.top[0]?.digest ?? ('' as Digest), ...this.rootEntry() };
    for (const layer of this.top) {
      const hit = layer.entries.get(p);
      if (hit) return { ...hit, layer: layer.digest, ...(hit.type === 'file' ? { inode: `${layer.digest}:${inodeOf(hit)}` } : {}) };
      // A directory the layer has entries in but does not list itself: unpacked, it exists all the same.
      if (childrenOf(layer).has(p)) return { type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0, layer: layer.digest };
      if (layer.removed.has(p)) return undefined;
      for (const a of ancestors(p)) {
        if (layer.removed.has(a) || layer.opaque.has(a)) return undefined;
        // A non-directory written over an ancestor hides everything below it.
        const over = layer.entries.get(a);
        if (over && over.type !== 'directory') return undefined;
      }
    }
    return undefined;
  }

  private rootEntry(): Partial<IndexedPath> {
    for (const layer of this.top) {
      const root = layer.entries.get('');
      if (root) return root;
    }
    return {};
  }

  list(dir: string): string[] {
    const names = new Set<string>();
    const hidden = new Set<string>();
    for (const layer of this.top) {
      if (dir !== '') {
        if (layer.removed.has(dir)) break;
        const self = layer.entries.get(dir);
        if (self && self.type !== 'directory') break;
        if ([...ancestors(dir)].some((a) => layer.removed.has(a) || layer.opaque.has(a) || (layer.entries.get(a)?.type ?? 'directory') !== 'directory')) break;
      }
      for (const n of childrenOf(layer).get(dir) ?? []) if (!hidden.has(n)) names.add(n);
      const prefix = dir === '' ? '' : `${dir}/`;
      for (const r of layer.removed) {
        if (r.startsWith(prefix) && !r.slice(prefix.length).includes('/')) hidden.add(r.slice(prefix.length));
      }
      if (layer.opaque.has(dir)) break;
    }
    for (const n of names) if (!this.lookup(dir === '' ? n : `${dir}/${n}`)) names.delete(n);
    return [...names].sort();
  }

  resolve(rel: string, followLast: boolean): string | null {
    return resolveThroughLinks(rel, followLast, (p) => {
      const e = this.lookup(p);
      return e?.type === 'symlink' ? (e.linkTarget ?? '') : null;
    });
  }

  private content(p: string, field: 'passwd' | 'group'): string | null {
    for (const layer of this.top) {
      if (layer.entries.has(p)) {
        const kept = layer[field];
        if (typeof kept === 'object') throw new Error(`the image's /${p} is ${kept.tooLarge} bytes, more than the ${MAX_ACCOUNT_FILE_BYTES} bytes Strata reads to look up a name: use numeric ids`);
        return kept ?? null;
      }
      if (layer.removed.has(p) || layer.opaque.has('etc') || layer.removed.has('etc')) return null;
    }
    return null;
  }
}

function childrenOf(layer: LayerIndex): Map<string, string[]> {
  if (!layer.children) {
    const children = new Map<string, string[]>();
    for (const p of layer.entries.keys()) {
      if (p === '') continue;
      const slash = p.lastIndexOf('/');
      const dir = slash < 0 ? '' : p.slice(0, slash);
      let names = children.get(dir);
      if (!names) children.set(dir, (names = []));
      names.push(p.slice(slash + 1));
      // Parents a layer implies without listing them are directories of the image all the same.
      for (const a of ancestors(p)) {
        const up = a.lastIndexOf('/');
        const parent = up < 0 ? '' : a.slice(0, up);
        let pn = children.get(parent);
        if (!pn) children.set(parent, (pn = []));
        if (!pn.includes(a.slice(up + 1))) pn.push(a.slice(up + 1));
      }
    }
    layer.children = children;
  }
  return layer.children;
}

/**
 * Indexes an image's layers without unpacking them: COPY needs to know which parent directories
 * exist (so a layer never resets /tmp's mode, say) and who users and groups are.
 *
 * One indexer serves a whole worker: each layer is indexed once, by its blob digest (content
 * addressed, so no tenant can make another's index answer for its own blob), and an image's index
 * is a stack of its layers' indexes. Layers the worker writes itself are indexed from the entries
 * it wrote, so they are never read back from the blob store.
 */
export class RootfsIndexer {
  /** Oldest first; `weight` is known once the layer is indexed. */
  private readonly memo = new Map<string, { index: Promise<LayerIndex>; weight: number }>();
  private weight = 0;

  /**
   * @param open reads a layer blob by digest.
   * @param maxEntries paths kept in memory across all indexed layers before the least recently used
   *   layers are dropped (they are read again when next needed).
   */
  constructor(
    private readonly open: (digest: Digest) => Promise<Readable>,
    private readonly maxEntries = 2_000_000,
  ) {}

  async index(layers: Array<{ digest: Digest; diffId: Digest }>): Promise<RootfsIndex> {
    const indexes = await Promise.all(layers.map((l) => this.layer(l.digest)));
    return new StackedIndex(indexes.reverse());
  }

  /**
   * Records a layer this worker just wrote, from the headers it wrote (LayerResult.entries). A layer
   * that writes /etc/passwd or /etc/group is left to be read from the store when needed.
   */
  seed(digest: Digest, entries: readonly LayerIndexEntry[]): void {
    if (this.memo.has(digest)) return;
    const index = emptyIndex(digest);
    for (const e of entries) {
      const name = cleanName(e.name);
      if (KEEP_CONTENT.has(name)) return;
      add(index, name, e);
    }
    this.memo.set(digest, { index: Promise.resolve(index), weight: index.weight });
    this.weight += index.weight;
    this.trim();
  }

  private layer(digest: Digest): Promise<LayerIndex> {
    const hit = this.memo.get(digest);
    if (hit) {
      // Most recently used last.
      this.memo.delete(digest);
      this.memo.set(digest, hit);
      return hit.index;
    }
    const slot = { index: this.read(digest), weight: 0 };
    this.memo.set(digest, slot);
    slot.index.then(
      (ix) => {
        if (this.memo.get(digest) !== slot) return;
        slot.weight = ix.weight;
        this.weight += ix.weight;
        this.trim();
      },
      () => {
        if (this.memo.get(digest) === slot) this.memo.delete(digest);
      },
    );
    return slot.index;
  }

  private trim(): void {
    for (const [digest, slot] of this.memo) {
      if (this.weight <= this.maxEntries || this.memo.size <= 1) break;
      this.memo.delete(digest);
      this.weight -= slot.weight;
    }
  }

  private async read(digest: Digest): Promise<LayerIndex> {
    const index = emptyIndex(digest);
    for await (const { header, chunks: content } of readTarEntries(await this.open(digest))) {
      const name = cleanName(header.name);
      if (name === '' || name === '.') continue;
      const meta: LayerIndexEntry = { name, type: header.type, mode: header.mode, uid: header.uid, gid: header.gid, mtime: Math.floor(header.mtime), size: header.size, linkname: header.linkname };
      if (header.type === 'file') {
        // Hashed while read, so COPY --from can checksum this layer's files without unpacking it.
        const hash = createHash('sha256');
        const keep = KEEP_CONTENT.has(name) && header.size <= MAX_ACCOUNT_FILE_BYTES ? ([] as Buffer[]) : null;
        for await (const chunk of content) {
          hash.update(chunk);
          keep?.push(chunk);
        }
        meta.sha256 = hash.digest('hex');
        if (KEEP_CONTENT.has(name)) {
          const kept = keep ? Buffer.concat(keep).toString('utf8') : { tooLarge: header.size };
          if (name === 'etc/passwd') index.passwd = kept;
          else index.group = kept;
        }
      }
      add(index, name, meta);
    }
    return index;
  }
}

function emptyIndex(digest: Digest): LayerIndex {
  return { digest, entries: new Map(), removed: new Set(), opaque: new Set(), weight: 0 };
}

function add(index: LayerIndex, name: string, e: LayerIndexEntry): void {
  index.weight++;
  if (name === '' || name === '.') {
    if (e.type === 'directory') index.entries.set('', { type: 'directory', mode: e.mode, uid: e.uid, gid: e.gid, mtime: Math.floor(e.mtime), size: 0 });
    return;
  }
  const wh = parseWhiteout(name);
  if (wh) {
    if (wh.kind === 'opaque') index.opaque.add(wh.directory);
    else index.removed.add(wh.removed);
    return;
  }
  if (e.type === 'hardlink') {
    // A hard link is the file it names (earlier in the same layer), under another name.
    const target = index.entries.get(cleanName(e.linkname ?? ''));
    if (target) index.entries.set(name, target);
    return;
  }
  const entry: IndexedPath = { type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, mtime: Math.floor(e.mtime), size: e.type === 'file' ? e.size : 0 };
  if (e.sha256 !== undefined && e.type === 'file') entry.sha256 = e.sha256;
  if (e.type === 'symlink') entry.linkTarget = e.linkname ?? '';
  index.entries.set(name, entry);
}

/** Resolves `user[:group]` (names or ids) to numeric ids through the image's passwd and group files. */
export function resolveOwner(spec: string, index: RootfsIndex): { uid: number; gid: number } {
  const [userPart, groupPart] = spec.split(':', 2);
  // The file is read only for a name: numeric ids need none (and pass an oversized file by).
  const lookup = (file: () => string | null, name: string, what: string): { id: number; gid?: number } => {
    if (/^\d+$/.test(name)) return { id: Number(name) };
    for (const line of (file() ?? '').split('\n')) {
      const f = line.split(':');
      if (f[0] === name && f.length >= 3) return { id: Number(f[2]), gid: what === 'user' && f[3] ? Number(f[3]) : undefined };
    }
    throw new Error(`${what} "${name}" is not in the image's /etc/${what === 'user' ? 'passwd' : 'group'}`);
  };
  const u = lookup(() => index.passwd, userPart, 'user');
  if (groupPart !== undefined && groupPart !== '') return { uid: u.id, gid: lookup(() => index.group, groupPart, 'group').id };
  // A user without a group gets the user's primary group when named, else the same number.
  return { uid: u.id, gid: u.gid ?? u.id };
}

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { type FileContent, type PackReader, resolveInIndex, type TarIndex, type TarIndexEntry } from '@strata/oci';
import { cleanRelative, hasGlob, IgnoreMatcher, matchComponent } from './ignore.js';
import type { RootfsIndex } from './rootfs-index.js';

export type ContextEntryType = 'file' | 'directory' | 'symlink';

/** A file of the build context, as COPY sees it (after .dockerignore). */
export interface ContextEntry {
  /** Slash path relative to the context root. */
  rel: string;
  /** Where it is in the tree (differs from `rel` when a parent was a symlink). */
  at: string;
  type: ContextEntryType;
  mode: number;
  size: number;
  mtime: number;
  linkTarget?: string;
  /** Owner in a stage's root filesystem; build context files have none (they are copied as root's). */
  uid?: number;
  gid?: number;
  /**
   * Regular files: which file this name is. Names sharing it are hard links to one file, and a COPY
   * keeps them linked within one source as BuildKit does; absent when the tree does not say.
   */
  inode?: string;
}

export class ContextSourceError extends Error {
  override readonly name = 'ContextSourceError';
}

/**
 * What COPY, ADD and context bind mounts read: the build context (or a stage's root filesystem)
 * seen through .dockerignore, and the checksums cache keys are made of. Subclasses say where the
 * tree lives.
 */
export abstract class BuildContext {
  protected constructor(readonly ignore: IgnoreMatcher) {}

  /** The entry at `rel`: parent symlinks are followed inside the tree, the last one only when asked. */
  protected abstract lookup(rel: string, followLast: boolean): Promise<ContextEntry | null>;
  /** Names in a directory entry, sorted. */
  protected abstract list(dir: ContextEntry): Promise<string[]>;
  /** The entry named `name` in directory `dir` (symlinks not followed). */
  protected abstract child(dir: ContextEntry, name: string, rel: string): Promise<ContextEntry | null>;
  /** sha256 (hex) of a regular file's content. */
  abstract contentHash(e: ContextEntry): Promise<string>;
  /** A regular file's content, for the layer writer. */
  abstract content(e: ContextEntry): FileContent;
  /** The tree as a directory on disk (for bind mounts); made on first use where it is not one already. */
  abstract directory(): Promise<string>;

  /**
   * The context paths a COPY/ADD source names: a plain path, or a pattern matched component by
   * component (Go filepath.Match); ignored paths are invisible. A source that is a symlink is what
   * it points to, as in BuildKit (followed inside the tree, never out of it); symlinks below a
   * copied directory stay links. A missing plain path throws, with the message users know from
   * docker; a pattern may match nothing (BuildKit copies nothing then).
   */
  async resolve(source: string): Promise<ContextEntry[]> {
    const rel = cleanRelative(source);
    if (!hasGlob(rel)) {
      const e = await this.visible(rel);
      if (!e) throw new ContextSourceError(`"${source}" not found: it is not in the build context, or .dockerignore excludes it`);
      return [e];
    }
    const parts = rel.split('/');
    let current = [''];
    for (const [i, part] of parts.entries()) {
      const next: string[] = [];
      for (const dir of current) {
        if (!hasGlob(part)) {
          next.push(dir === '' ? part : `${dir}/${part}`);
          continue;
        }
        const d = await this.lookup(dir, true);
        if (!d || d.type !== 'directory') continue;
        for (const n of await this.list(d)) if (matchComponent(part, n)) next.push(dir === '' ? n : `${dir}/${n}`);
      }
      current = next;
      if (i < parts.length - 1) current = current.filter((c) => c !== '');
    }
    const found: ContextEntry[] = [];
    for (const c of current) {
      const e = await this.visible(c);
      if (e) found.push(e);
    }
    // A pattern that matches nothing copies nothing, as in BuildKit (only a plain missing path is an error).
    return found;
  }

  /**
   * The entry a source path names, symlinks followed; null when it or what it points to is
   * ignored (BuildKit never receives an ignored file, so a link to one is not found).
   */
  private async visible(rel: string): Promise<ContextEntry | null> {
    if (rel !== '' && this.ignore.ignores(rel)) return null;
    const e = await this.lookup(rel, true);
    return e && e.at !== rel && e.at !== '' && this.ignore.ignores(e.at) ? null : e;
  }

  /**
   * The entry and, for a directory, everything below it that .dockerignore lets through, sorted;
   * `exclude` (COPY --exclude) drops paths matched relative to `excludeFrom` (the source itself, or
   * the --parents pivot), as BuildKit matches them.
   */
  async *walk(start: ContextEntry, exclude?: IgnoreMatcher, excludeFrom = start.rel): AsyncGenerator<ContextEntry> {
    if (!exclude || exclude.empty) {
      yield* this.walkVisible(start);
      return;
    }
    const prefix = excludeFrom === '' ? 0 : excludeFrom.length + 1;
    for await (const e of this.walkVisible(start)) if (e === start || !exclude.ignores(e.rel.slice(prefix))) yield e;
  }

  private async *walkVisible(start: ContextEntry): AsyncGenerator<ContextEntry> {
    yield start;
    if (start.type !== 'directory') return;
    for (const n of await this.list(start)) {
      const rel = start.rel === '' ? n : `${start.rel}/${n}`;
      const ignored = this.ignore.ignores(rel);
      const e = await this.child(start, n, rel);
      if (!e) continue;
      if (ignored) {
        // An excluded directory is still walked when an exception pattern reaches inside it.
        if (e.type === 'directory' && this.ignore.mayIncludeBelow(rel)) {
          for await (const child of this.walkVisible(e)) if (child !== e && !this.ignore.ignores(child.rel)) yield child;
        }
        continue;
      }
      yield* this.walkVisible(e);
    }
  }

  /**
   * Checksum of what a source contributes: each entry's path relative to the source, type, mode,
   * size, link target, content hash, (a stage's files) owner and, for the second and later names
   * of a hard-linked file, the first one; never mtime, so a fresh checkout of the same files hits.
   */
  async checksum(sources: Array<ContextEntry | { entry: ContextEntry; excludeFrom: string }>, exclude?: IgnoreMatcher): Promise<{ digest: string; files: ReadonlyMap<string, string> }> {
    const h = createHash('sha256');
    const files = new Map<string, string>();
    for (const source of sources) {
      const src = 'entry' in source ? source.entry : source;
      const linked = new HardLinks();
      for await (const e of this.walk(src, exclude, 'entry' in source ? source.excludeFrom : src.rel)) {
        const content = e.type === 'file' ? await this.contentHash(e) : '';
        const owner = e.uid === undefined ? '' : `\0${e.uid}:${e.gid}`;
        const first = linked.firstName(e, e.rel);
        const link = first === null ? '' : `\0=${first}`;
        const line = `${e.rel}\0${e.type}\0${e.mode.toString(8)}\0${e.size}\0${e.linkTarget ?? ''}\0${content}${owner}${link}\n`;
        h.update(line);
        files.set(e.rel, createHash('sha256').update(line).digest('hex'));
      }
    }
    return { digest: `sha256:${h.digest('hex')}`, files };
  }
}

/**
 * The hard-link groups met while walking one source: the first name of each file is remembered, and
 * a later name of the same file is told that first name (what BuildKit's copy does per source).
 */
export class HardLinks {
  private readonly first = new Map<string, string>();

  /** `at` is where this name goes; null when it is the first name of its file (or not a linked file). */
  firstName(e: ContextEntry, at: string): string | null {
    if (e.type !== 'file' || e.inode === undefined) return null;
    const seen = this.first.get(e.inode);
    if (seen !== undefined) return seen;
    this.first.set(e.inode, at);
    return null;
  }
}

/**
 * What an IndexedContext derives from its index alone: each directory's sorted names, and the COPY
 * checksums computed so far. An index never changes, so a worker that keeps the tree of a context
 * (a manifest build's, by its digest) answers a rebuild's checksums without walking 50,000 entries again.
 */
export class IndexedTree {
  readonly children = new Map<string, string[]>();
  /** COPY checksums by sources and --exclude patterns, least recently used first (bounds: `remember`). */
  readonly checksums = new Map<string, Promise<{ digest: string; files: ReadonlyMap<string, string> }>>();
  /** How many files each resolved checksum holds. */
  private readonly memoFiles = new Map<string, number>();

  constructor(readonly index: TarIndex) {
    for (const rel of index.keys()) {
      if (rel === '') continue;
      const slash = rel.lastIndexOf('/');
      const parent = slash < 0 ? '' : rel.slice(0, slash);
      let names = this.children.get(parent);
      if (!names) this.children.set(parent, (names = []));
      names.push(rel.slice(slash + 1));
    }
    for (const names of this.children.values()) names.sort();
  }

  /**
   * The checksum remembered under `key`, or `compute`'s, remembered. Least recently used go first
   * once more than MAX_MEMO_CHECKSUMS are kept or their file maps hold more than four times the
   * index's entries: a Dockerfile's every COPY stays remembered across rebuilds (a fixed handful
   * would lose all of them to a Dockerfile with one COPY more than it, asked in the same order each
   * time), and the memory stays a small multiple of the index's.
   */
  remember(key: string, compute: () => Promise<{ digest: string; files: ReadonlyMap<string, string> }>): Promise<{ digest: string; files: ReadonlyMap<string, string> }> {
    const memo = this.checksums;
    const known = memo.get(key);
    if (known) {
      memo.delete(key);
      memo.set(key, known);
      return known;
    }
    const p = compute();
    memo.set(key, p);
    p.then(
      ({ files }) => {
        if (memo.get(key) !== p) return;
        this.memoFiles.set(key, files.size);
        this.trim();
      },
      () => {
        if (memo.get(key) === p) memo.delete(key);
      },
    );
    this.trim();
    return p;
  }

  private trim(): void {
    const budget = Math.max(4 * this.index.size, MIN_MEMO_FILES);
    let files = 0;
    for (const n of this.memoFiles.values()) files += n;
    for (const key of this.checksums.keys()) {
      if (this.checksums.size <= 1 || (this.checksums.size <= MAX_MEMO_CHECKSUMS && files <= budget)) break;
      this.checksums.delete(key);
      files -= this.memoFiles.get(key) ?? 0;
      this.memoFiles.delete(key);
    }
    for (const key of this.memoFiles.keys()) if (!this.checksums.has(key)) this.memoFiles.delete(key);
  }
}

const MAX_MEMO_CHECKSUMS = 64;
const MIN_MEMO_FILES = 4096;

/**
 * A build context as indexTar (or indexManifest) left it: an index in memory and the file contents in pack files.
 * Nothing is read from disk to list, match or hash; contents are read from the pack when a layer
 * is written, and a directory is made only if a bind mount needs one.
 */
export class IndexedContext extends BuildContext {
  private readonly index: TarIndex;
  private readonly children: Map<string, string[]>;

  private constructor(
    private readonly tree: IndexedTree,
    private readonly pack: PackReader,
    private readonly materialize: () => Promise<string>,
    ignore: IgnoreMatcher,
  ) {
    super(ignore);
    this.index = tree.index;
    this.children = tree.children;
  }

  /**
   * @param materialize makes the tree a directory on disk, for bind mounts; called at most once.
   */
  static async open(index: TarIndex | IndexedTree, pack: PackReader, materialize: () => Promise<string>): Promise<IndexedContext> {
    let made: Promise<string> | null = null;
    const tree = index instanceof IndexedTree ? index : new IndexedTree(index);
    const ignoreFile = await readIndexedFile(tree.index, pack, '.dockerignore', 4 * 1024 * 1024).catch(() => null);
    return new IndexedContext(tree, pack, () => (made ??= materialize()), IgnoreMatcher.fromText(ignoreFile?.toString('utf8') ?? null));
  }

  /**
   * As BuildContext's, remembered in the tree: the same sources and --exclude patterns over the same
   * index (whose .dockerignore is part of it) give the same checksum. `files` is the remembered map:
   * read it, do not change it.
   */
  override async checksum(sources: Array<ContextEntry | { entry: ContextEntry; excludeFrom: string }>, exclude?: IgnoreMatcher): Promise<{ digest: string; files: ReadonlyMap<string, string> }> {
    const key = JSON.stringify([
      sources.map((s) => ('entry' in s ? [s.entry.rel, s.entry.at, s.excludeFrom] : [s.rel, s.at, s.rel])),
      exclude?.text ?? '',
    ]);
    // The remembered map itself, not a copy (50,000 entries copied on every unchanged rebuild was
    // measurable, docs/adr/0037): callers must not change it; a caller that adds entries copies it first.
    return this.tree.remember(key, () => super.checksum(sources, exclude));
  }

  /** A regular file's content by path (symlinks followed inside the tree); null when there is none. */
  readFile(rel: string, maxBytes: number): Promise<Buffer | null> {
    return readIndexedFile(this.index, this.pack, rel, maxBytes);
  }

  directory(): Promise<string> {
    return this.materialize();
  }

  private entry(at: string, rel: string): ContextEntry | null {
    const e = this.index.get(at);
    if (!e) return null;
    return {
      rel,
      at,
      type: e.type,
      mode: e.mode,
      size: e.type === 'file' ? e.size : 0,
      mtime: e.mtime,
      linkTarget: e.type === 'symlink' ? e.target : undefined,
      ...(e.type === 'file' && e.inode !== undefined ? { inode: `context:${e.inode}` } : {}),
    };
  }

  protected lookup(rel: string, followLast: boolean): Promise<ContextEntry | null> {
    const at = resolveInIndex(this.index, rel, followLast);
    // COPY names the source as written even when a parent was a link.
    return Promise.resolve(at === null ? null : this.entry(at, rel));
  }

  protected list(dir: ContextEntry): Promise<string[]> {
    return Promise.resolve(this.children.get(dir.at) ?? []);
  }

  protected child(dir: ContextEntry, name: string, rel: string): Promise<ContextEntry | null> {
    return Promise.resolve(this.entry(dir.at === '' ? name : `${dir.at}/${name}`, rel));
  }

  contentHash(e: ContextEntry): Promise<string> {
    const f = this.fileAt(e);
    return Promise.resolve(f.sha256);
  }

  content(e: ContextEntry): FileContent {
    const f = this.fileAt(e);
    // The hash is the index's: taken while the context was indexed, or the stored content's (indexManifest).
    if (f.size <= 256 * 1024) return { size: f.size, read: () => this.pack.read(f), sha256: f.sha256, span: this.pack.span(f) };
    return { size: f.size, stream: () => this.pack.stream(f), sha256: f.sha256 };
  }

  private fileAt(e: ContextEntry): Extract<TarIndexEntry, { type: 'file' }> {
    const f = this.index.get(e.at);
    if (f?.type !== 'file') throw new ContextSourceError(`"${e.rel}" is not a regular file of the build context`);
    return f;
  }
}

/** A regular file of an indexed tree by path, symlinks followed inside the tree; null when there is none. */
async function readIndexedFile(index: TarIndex, pack: PackReader, rel: string, maxBytes: number): Promise<Buffer | null> {
  const at = resolveInIndex(index, cleanRelative(rel), true);
  const e = at === null ? undefined : index.get(at);
  if (!e || e.type !== 'file') return null;
  if (e.size > maxBytes) throw new ContextSourceError(`${rel} is larger than ${maxBytes} bytes`);
  return pack.read(e);
}

/**
 * A stage's root filesystem as COPY --from sees it, read from its layer indexes: listing, matching
 * and checksumming need no unpacked layers. Contents come from `liveContent` when the layer was
 * written in this build from the context pack, otherwise from files of
 * the stage unpacked on demand (`view`).
 */
export class IndexedRootfs extends BuildContext {
  constructor(
    private readonly index: RootfsIndex,
    private readonly liveContent: (layer: string, path: string) => FileContent | undefined,
    private readonly view: () => Promise<string>,
  ) {
    super(IgnoreMatcher.fromText(null));
  }

  private entry(at: string, rel: string): ContextEntry | null {
    const e = this.index.lookup(at);
    if (!e || (e.type !== 'file' && e.type !== 'directory' && e.type !== 'symlink')) return null;
    return {
      rel,
      at,
      type: e.type,
      mode: e.mode & 0o7777,
      size: e.type === 'file' ? e.size : 0,
      mtime: e.mtime,
      linkTarget: e.type === 'symlink' ? e.linkTarget : undefined,
      uid: e.uid,
      gid: e.gid,
      ...(e.type === 'file' && e.inode !== undefined ? { inode: e.inode } : {}),
    };
  }

  protected lookup(rel: string, followLast: boolean): Promise<ContextEntry | null> {
    const at = this.index.resolve(rel, followLast);
    return Promise.resolve(at === null ? null : this.entry(at, rel));
  }

  protected list(dir: ContextEntry): Promise<string[]> {
    return Promise.resolve(this.index.list(dir.at));
  }

  protected child(dir: ContextEntry, name: string, rel: string): Promise<ContextEntry | null> {
    return Promise.resolve(this.entry(dir.at === '' ? name : `${dir.at}/${name}`, rel));
  }

  contentHash(e: ContextEntry): Promise<string> {
    // Every indexed file has one: hashed when its layer was written or first read.
    const sha256 = this.index.lookup(e.at)?.sha256;
    if (!sha256) return Promise.reject(new Error(`no content hash indexed for /${e.at}`));
    return Promise.resolve(sha256);
  }

  content(e: ContextEntry): FileContent {
    const f = this.index.lookup(e.at);
    const live = f ? this.liveContent(f.layer, e.at) : undefined;
    if (live) return live;
    const at = e.at;
    if (e.size <= 256 * 1024) return { size: e.size, read: async () => readFile(path.join(await this.view(), at)) };
    return { size: e.size, stream: async () => createReadStream(path.join(await this.view(), at), { highWaterMark: 256 * 1024 }) };
  }

  directory(): Promise<string> {
    return this.view();
  }
}

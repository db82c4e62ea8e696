import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import path from 'node:path';
import { resolveInRoot } from '@strata/oci';
import { cleanRelative, hasGlob, IgnoreMatcher, matchComponent } from './ignore.js';

export type ContextEntryType = 'file' | 'directory' | 'symlink';

/** A file of the build context, as COPY sees it (after .dockerignore). */
export interface ContextEntry {
  /** Slash path relative to the context root. */
  rel: string;
  abs: string;
  type: ContextEntryType;
  mode: number;
  size: number;
  mtime: number;
  linkTarget?: string;
}

export class ContextSourceError extends Error {
  override readonly name = 'ContextSourceError';
}

/**
 * The extracted build context on local disk, seen through .dockerignore: what COPY and ADD can
 * read, and the checksums cache keys are made of.
 */
export class BuildContextDir {
  private readonly contentHashes = new Map<string, string>();

  private constructor(
    readonly root: string,
    readonly ignore: IgnoreMatcher,
    /** A stage's root filesystem: sources follow symlinks the way the image sees them, never out of `root`. */
    private readonly followSymlinks = false,
  ) {}

  /** A stage's (or image's) root filesystem as COPY --from sees it: no .dockerignore, symlinks followed inside it. */
  static openRootfs(root: string): BuildContextDir {
    return new BuildContextDir(root, IgnoreMatcher.fromText(null), true);
  }

  /**
   * Where `rel` is on disk. Parent components resolve inside `root` (a symlink in the context or the
   * image never leads to the worker's own files); the last one is followed only when asked.
   */
  private async locate(rel: string, followLast: boolean): Promise<string> {
    if (rel === '') return this.root;
    if (followLast) return resolveInRoot(this.root, rel);
    return path.join(await resolveInRoot(this.root, path.posix.dirname(rel)), path.posix.basename(rel));
  }

  /**
   * @param knownHashes content hashes (path → sha256 hex) computed when the context was extracted,
   * so COPY's checksums need not read the files again.
   */
  static async open(root: string, knownHashes?: ReadonlyMap<string, string>): Promise<BuildContextDir> {
    let text: string | null = null;
    try {
      text = await readFile(path.join(root, '.dockerignore'), 'utf8');
    } catch {
      text = null;
    }
    const dir = new BuildContextDir(root, IgnoreMatcher.fromText(text));
    for (const [rel, hex] of knownHashes ?? []) dir.contentHashes.set(rel, hex);
    return dir;
  }

  private async entry(rel: string, followLast = false): Promise<ContextEntry | null> {
    return this.entryAt(rel, await this.locate(rel, followLast));
  }

  private async entryAt(rel: string, abs: string): Promise<ContextEntry | null> {
    let st;
    try {
      st = await lstat(abs);
    } catch {
      return null;
    }
    const type: ContextEntryType | null = st.isDirectory() ? 'directory' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : null;
    if (!type) return null;
    return {
      rel,
      abs,
      type,
      mode: st.mode & 0o7777,
      size: type === 'file' ? st.size : 0,
      mtime: Math.floor(st.mtimeMs / 1000),
      linkTarget: type === 'symlink' ? await readlink(abs) : undefined,
    };
  }

  /**
   * The context paths a COPY/ADD source names: a plain path, or a pattern matched component by
   * component (Go filepath.Match); ignored paths are invisible. Throws when nothing matches, with
   * the message users know from docker.
   */
  async resolve(source: string): Promise<ContextEntry[]> {
    const rel = cleanRelative(source);
    if (!hasGlob(rel)) {
      const e = rel === '' || !this.ignore.ignores(rel) ? await this.entry(rel, this.followSymlinks) : null;
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
        let names: string[];
        try {
          names = await readdir(await this.locate(dir, true));
        } catch {
          continue;
        }
        for (const n of names.sort()) if (matchComponent(part, n)) next.push(dir === '' ? n : `${dir}/${n}`);
      }
      current = next;
      if (i < parts.length - 1) current = current.filter((c) => c !== '');
    }
    const found: ContextEntry[] = [];
    for (const c of current) {
      if (this.ignore.ignores(c)) continue;
      const e = await this.entry(c, this.followSymlinks);
      if (e) found.push(e);
    }
    if (found.length === 0) throw new ContextSourceError(`"${source}" matches no file in the build context (after .dockerignore)`);
    return found;
  }

  /** The entry and, for a directory, everything below it that .dockerignore lets through, sorted. */
  async *walk(start: ContextEntry): AsyncGenerator<ContextEntry> {
    yield start;
    if (start.type !== 'directory') return;
    const names = (await readdir(start.abs)).sort();
    for (const n of names) {
      const rel = start.rel === '' ? n : `${start.rel}/${n}`;
      const ignored = this.ignore.ignores(rel);
      const e = await this.entryAt(rel, path.join(start.abs, n));
      if (!e) continue;
      if (ignored) {
        // An excluded directory is still walked when an exception pattern reaches inside it.
        if (e.type === 'directory' && this.ignore.mayIncludeBelow(rel)) {
          for await (const child of this.walk(e)) if (child !== e && !this.ignore.ignores(child.rel)) yield child;
        }
        continue;
      }
      yield* this.walk(e);
    }
  }

  async contentHash(e: ContextEntry): Promise<string> {
    const cached = this.contentHashes.get(e.rel);
    if (cached) return cached;
    const h = createHash('sha256');
    // One read for small files; a stream only when the file is large.
    if (e.size <= 256 * 1024) h.update(await readFile(e.abs));
    else for await (const chunk of createReadStream(e.abs)) h.update(chunk as Buffer);
    const hex = h.digest('hex');
    this.contentHashes.set(e.rel, hex);
    return hex;
  }

  /**
   * Checksum of what a source contributes: each entry's path relative to the source, type, mode,
   * size, link target and content hash; never mtime, so a fresh checkout of the same files hits.
   */
  async checksum(sources: ContextEntry[]): Promise<{ digest: string; files: Map<string, string> }> {
    const h = createHash('sha256');
    const files = new Map<string, string>();
    for (const src of sources) {
      for await (const e of this.walk(src)) {
        const content = e.type === 'file' ? await this.contentHash(e) : '';
        const line = `${e.rel}\0${e.type}\0${e.mode.toString(8)}\0${e.size}\0${e.linkTarget ?? ''}\0${content}\n`;
        h.update(line);
        files.set(e.rel, createHash('sha256').update(line).digest('hex'));
      }
    }
    return { digest: `sha256:${h.digest('hex')}`, files };
  }
}


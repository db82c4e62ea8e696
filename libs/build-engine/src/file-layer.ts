// Layers Strata writes itself (COPY, ADD, WORKDIR): where their paths land in the image, the
// directories they create on the way, and storing them.

import path from 'node:path/posix';
import { type LayerEntry, LayerWriter, resolveThroughLinks } from '@strata/oci';
import type { CachedStep } from './interfaces.js';
import { resolveOwner, type RootfsIndex } from './rootfs-index.js';
import type { BuildScope, StageState } from './step-context.js';

/** A destination that cannot be written: a link loop, or a path through something that is not a directory. */
export class DestinationError extends Error {
  override readonly name = 'DestinationError';
}

/** Owner and time of the directories a step creates. */
export interface CreatedDirs {
  uid: number;
  gid: number;
  /**
   * Seconds since the epoch. BuildKit stamps them with the time the step ran; Strata uses
   * SOURCE_DATE_EPOCH or 0, so a layer made again (after a cache miss or garbage collection) has
   * the same digest and the images that name it stay whole.
   */
  mtime: number;
}

/**
 * The entries of one layer being planned over an image. Paths are followed through the image's
 * symlinks as BuildKit follows them inside the rootfs (relative and absolute, never above the
 * root), so `/bin/tool` on a merged-/usr base lands in `usr/bin/tool` and `/bin` stays a link.
 */
export class LayerTree {
  readonly entries = new Map<string, LayerEntry>();
  /** Directories this layer creates (they did not exist in the image). */
  readonly created = new Set<string>();

  constructor(
    private readonly image: RootfsIndex,
    private readonly dirs: CreatedDirs,
  ) {}

  /**
   * Where an absolute path of the image leads (a relative path, "" for the root), every symlink
   * in it followed, the last one too (BuildKit writes through a destination that is a link, even a
   * dangling one). Missing components are kept as named; entries this layer wrote count first.
   */
  resolve(abs: string): string {
    // What this layer already wrote wins over the image (an archive's directory replaces a link).
    const real = resolveThroughLinks(abs.replace(/^\/+/, ''), true, (p) => {
      const own = this.entries.get(p);
      if (own) return own.type === 'symlink' ? own.target : null;
      const e = this.image.lookup(p);
      return e?.type === 'symlink' ? (e.linkTarget ?? '') : null;
    });
    if (real === null) throw new DestinationError(`${abs}: too many levels of symbolic links in the image`);
    return real;
  }

  /** The type at a resolved path: this layer's entry first, then the image's. */
  typeAt(rel: string): string | undefined {
    if (rel === '') return 'directory';
    const own = this.entries.get(rel);
    if (own) return own.type;
    return this.image.lookup(rel)?.type;
  }

  /**
   * Makes sure the resolved directory `rel` and its parents exist: existing ones go into the layer
   * as the image has them (so a layer never resets /tmp's mode), missing ones are created 0755 with
   * the step's owner. A parent that is a file is an error, as in BuildKit ("not a directory").
   */
  mkdirAll(rel: string): void {
    if (rel === '') return;
    const parts = rel.split('/');
    for (let n = 1; n <= parts.length; n++) {
      const dir = parts.slice(0, n).join('/');
      const own = this.entries.get(dir);
      if (own) {
        if (own.type !== 'directory') throw new DestinationError(`/${dir} is not a directory`);
        continue;
      }
      const existing = this.image.lookup(dir);
      if (existing && existing.type !== 'directory') throw new DestinationError(`/${dir} is not a directory`);
      if (existing) {
        this.entries.set(dir, { type: 'directory', path: dir, mode: existing.mode & 0o7777, uid: existing.uid, gid: existing.gid, mtime: existing.mtime });
      } else {
        this.entries.set(dir, { type: 'directory', path: dir, mode: 0o755, uid: this.dirs.uid, gid: this.dirs.gid, mtime: this.dirs.mtime });
        this.created.add(dir);
      }
    }
  }

  /**
   * Puts a directory copied from a source tree at a resolved path: BuildKit (dockerd 20.10)
   * refuses to copy a directory onto anything else the image has there, a symlink to a directory
   * included ("cannot copy to non-directory").
   */
  putCopiedDirectory(entry: LayerEntry & { type: 'directory' }): void {
    if (!this.entries.has(entry.path)) {
      const existing = this.image.lookup(entry.path);
      if (existing && existing.type !== 'directory') throw new DestinationError(`cannot copy a directory onto /${entry.path}, which is a ${existing.type === 'symlink' ? 'symlink' : 'file'} in the image`);
    }
    this.put(entry);
  }

  /** Adds an entry at a resolved path, creating its parents. */
  put(entry: LayerEntry): void {
    this.mkdirAll(path.dirname(entry.path) === '.' ? '' : path.dirname(entry.path));
    this.entries.set(entry.path, entry);
  }
}

/** The mtime of the directories a step creates: the same on every build of the same inputs. */
export function createdDirTime(build: BuildScope): number {
  return build.sourceDateEpoch ?? 0;
}

/** Packs and stores a layer Strata wrote; unpacked on this worker alongside when a RUN follows in the stage. */
export async function storeFileLayer(build: BuildScope, stage: StageState, entries: LayerEntry[]): Promise<CachedStep> {
  const sourceDateEpoch = build.sourceDateEpoch;
  const rootfs = build.deps.rootfs;
  const unpack = stage.runFollows && rootfs?.adopt !== undefined;
  // The layer's tar is written once: gzip and the unpack read the same chunks.
  const packed = new LayerWriter({ clampMtime: sourceDateEpoch }).pack(entries, { tar: unpack });
  const tar = packed.tar;
  const adopt = unpack && tar ? rootfs!.adopt!(() => tar) : null;
  // Failing to unpack it here only means the RUN unpacks it itself; the blob then goes on alone.
  const adopted = adopt?.catch(() => undefined).finally(() => tar?.destroy());
  try {
    const layer = await build.live.store(packed, entries, sourceDateEpoch);
    return { layer };
  } catch (e) {
    // A blob nobody reads any more would hold the unpack back: end both.
    packed.stream.destroy();
    throw e;
  } finally {
    await adopted;
  }
}

/**
 * WORKDIR's layer: the directory and its missing parents, 0755 and owned by the stage's USER (root
 * when the user is not in the image's /etc/passwd, as BuildKit does), through the image's
 * symlinks. An existing directory gives an empty layer, as in BuildKit.
 */
export async function executeWorkdir(build: BuildScope, stage: StageState, dir: string, user: string, fail: (message: string) => never): Promise<CachedStep> {
  const image = await build.indexer.index(stage.layers.map((l) => ({ digest: l.descriptor.digest, diffId: l.diffId })));
  let owner = { uid: 0, gid: 0 };
  if (user !== '') {
    try {
      owner = resolveOwner(user, image);
    } catch {
      // BuildKit creates it root-owned then; the USER fails the first RUN that needs it.
    }
  }
  const tree = new LayerTree(image, { ...owner, mtime: createdDirTime(build) });
  try {
    tree.mkdirAll(tree.resolve(dir));
  } catch (e) {
    if (e instanceof DestinationError) fail(e.message);
    throw e;
  }
  return storeFileLayer(build, stage, tree.created.size === 0 ? [] : [...tree.entries.values()]);
}

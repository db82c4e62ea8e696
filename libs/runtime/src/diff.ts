import { lstat, readdir, readlink, unlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { lgetxattrs } from '@strata/native';
import { compareLayerKeys, OPAQUE_WHITEOUT, WHITEOUT_PREFIX, type LayerEntry } from '@strata/oci';

export interface DiffOptions {
  /**
   * The snapshot's lower dirs, top first. When given, directories that overlay merely copied up
   * (same mode, owner and mtime as the lower directory they shadow) are left out, as BuildKit's
   * overlay differ does; a step that changed nothing then gives no entries at all.
   */
  lowerDirs?: readonly string[];
}

const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';

/**
 * Turns an overlayfs upper dir into the entries of the OCI layer a step produced, sorted as the
 * layer tar orders them. It takes whatever a step leaves, as overlay2 and BuildKit record it:
 * - whiteouts (0/0 character devices) become `whiteout` entries, opaque directories an `opaque`
 *   entry next to their `directory` entry;
 * - symlinks keep their target as written, dangling or absolute (never followed);
 * - fifos and device nodes become their own entries; sockets are left out, as Docker and
 *   containerd's archive writers leave them out, and removed from the upper dir so that the
 *   worker's own copy of the layer (a kept upper dir) holds what the tar holds;
 * - names sharing one inode become hard links to the first name in layer order (files,
 *   symlinks, fifos, devices), except whiteout devices: overlay links them all to one inode in
 *   its work dir;
 * - xattrs are kept (security.capability, user.*), `trusted.overlay.*` dropped;
 * - names are read as bytes: one that is not valid UTF-8 keeps its bytes in `pathBytes`.
 *
 * An empty array means the step changed nothing: record the history entry with
 * `empty_layer: true` and add no layer, as BuildKit does.
 */
export async function diffUpperDir(upperDir: string, options: DiffOptions = {}): Promise<LayerEntry[]> {
  const root = Buffer.from(upperDir);
  const found: { rel: Buffer; stats: Stats }[] = [];
  const stack: Buffer[] = [Buffer.alloc(0)];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const name of await readdir(under(root, dir), { encoding: 'buffer' })) {
      const rel = dir.length === 0 ? name : Buffer.concat([dir, SLASH, name]);
      const stats = await lstat(under(root, rel));
      if (stats.isSocket()) {
        await unlink(under(root, rel));
        continue;
      }
      found.push({ rel, stats });
      if (stats.isDirectory()) stack.push(rel);
    }
  }

  const entries: { key: Buffer[]; entry: LayerEntry; inode?: string }[] = [];
  for (const { rel, stats } of found) {
    const path = under(root, rel);
    const own = xattrsOf(path);
    const meta = {
      ...layerPath(rel),
      mode: stats.mode & 0o7777,
      uid: stats.uid,
      gid: stats.gid,
      mtime: stats.mtime,
      ...(own && own.kept ? { xattrs: own.kept } : {}),
    };
    const key = keyOf(rel);
    // Any name but a directory or a whiteout may share its inode with others: those become hard links.
    const inode = stats.nlink > 1 && !stats.isDirectory() ? `${stats.dev}:${stats.ino}` : undefined;
    if (stats.isCharacterDevice() && stats.rdev === 0) {
      const { path: shown, pathBytes } = layerPath(rel);
      entries.push({ key: whiteoutKey(key), entry: { type: 'whiteout', path: shown, ...(pathBytes ? { pathBytes } : {}) } });
    } else if (stats.isDirectory()) {
      const opaque = own?.opaque === true;
      if (opaque) entries.push({ key: [...key, OPAQUE_BYTES], entry: { type: 'opaque', path: meta.path, ...(meta.pathBytes ? { pathBytes: meta.pathBytes } : {}) } });
      if (opaque || !(await copiedUpUnchanged(rel, stats, options.lowerDirs))) {
        entries.push({ key, entry: { ...meta, type: 'directory' } });
      }
    } else if (stats.isFile()) {
      entries.push({ key, entry: { ...meta, type: 'file', content: { path: meta.pathBytes ? path : path.toString('utf8') } }, ...(inode ? { inode } : {}) });
    } else if (stats.isSymbolicLink()) {
      const target = await readlink(path, { encoding: 'buffer' });
      const text = asText(target);
      const link = text === null ? { target: target.toString('utf8'), targetBytes: target } : { target: text };
      entries.push({ key, entry: { ...meta, type: 'symlink', ...link }, ...(inode ? { inode } : {}) });
    } else if (stats.isFIFO()) {
      entries.push({ key, entry: { ...meta, type: 'fifo' }, ...(inode ? { inode } : {}) });
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      // Linux's dev_t: major in bits 8-19, minor in bits 0-7 and 20-31.
      const devmajor = Math.floor(stats.rdev / 256) & 0xfff;
      const devminor = (stats.rdev & 0xff) | ((stats.rdev >> 12) & 0xfff00);
      entries.push({
        key,
        entry: { ...meta, type: stats.isCharacterDevice() ? 'char-device' : 'block-device', devmajor, devminor },
        ...(inode ? { inode } : {}),
      });
    }
  }

  entries.sort((a, b) => compareLayerKeys(a.key, b.key));
  const firstByInode = new Map<string, LayerEntry>();
  return entries.map(({ entry, inode }) => {
    if (inode === undefined) return entry;
    const first = firstByInode.get(inode);
    if (first === undefined) {
      firstByInode.set(inode, entry);
      return entry;
    }
    return {
      type: 'hardlink',
      path: entry.path,
      ...(entry.pathBytes ? { pathBytes: entry.pathBytes } : {}),
      target: first.path,
      ...(first.pathBytes ? { targetBytes: first.pathBytes } : {}),
    } satisfies LayerEntry;
  });
}

const SLASH = Buffer.from('/');
const OPAQUE_BYTES = Buffer.from(OPAQUE_WHITEOUT);
const WHITEOUT_BYTES = Buffer.from(WHITEOUT_PREFIX);

function under(root: Buffer, rel: Buffer): Buffer {
  return rel.length === 0 ? root : Buffer.concat([root, SLASH, rel]);
}

/** Bytes as a string when they are valid UTF-8, else null. */
function asText(bytes: Buffer): string | null {
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? text : null;
}

/** A layer path from a name's bytes: the text, and the bytes themselves only when they are not UTF-8. */
function layerPath(rel: Buffer): { path: string; pathBytes?: Buffer } {
  const text = asText(rel);
  return text === null ? { path: rel.toString('utf8'), pathBytes: rel } : { path: text };
}

async function copiedUpUnchanged(rel: Buffer, stats: Stats, lowerDirs: readonly string[] | undefined): Promise<boolean> {
  if (lowerDirs === undefined) return false;
  for (const lower of lowerDirs) {
    let below: Stats;
    try {
      below = await lstat(under(Buffer.from(lower), rel));
    } catch {
      continue;
    }
    return (
      below.isDirectory() &&
      below.mode === stats.mode &&
      below.uid === stats.uid &&
      below.gid === stats.gid &&
      below.mtimeMs === stats.mtimeMs
    );
  }
  return false;
}

function keyOf(rel: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= rel.length; i++) {
    if (i < rel.length && rel[i] !== 0x2f) continue;
    parts.push(rel.subarray(start, i));
    start = i + 1;
  }
  return parts;
}

function whiteoutKey(key: Buffer[]): Buffer[] {
  return [...key.slice(0, -1), Buffer.concat([WHITEOUT_BYTES, key[key.length - 1]!])];
}

interface PathXattrs {
  opaque: boolean;
  kept?: Record<string, Buffer>;
}

/**
 * A name's own xattrs (a symlink's own: following it would fail on a dangling link and read the
 * host's file for an absolute one), in-process: one llistxattr per name, which answers with nothing
 * for almost all of them, and an lgetxattr only for those that have some. `trusted.overlay.*` is
 * overlay's bookkeeping: opaque is read from it, none is kept.
 */
function xattrsOf(path: Buffer): PathXattrs | undefined {
  const all = lgetxattrs(path);
  if (all === null) return undefined;
  const result: PathXattrs = { opaque: false };
  for (const [name, value] of Object.entries(all)) {
    if (name === 'trusted.overlay.opaque') result.opaque = value.toString() === 'y';
    if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
    (result.kept ??= {})[name] = value;
  }
  return result;
}

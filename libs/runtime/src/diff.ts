import { lstat, readdir, readlink } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { compareLayerKeys, OPAQUE_WHITEOUT, WHITEOUT_PREFIX, type LayerEntry } from '@strata/oci';
import { runCommand } from './command.js';

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
 * layer tar orders them. Whiteouts (0/0 character devices) become `whiteout` entries and opaque
 * directories an `opaque` entry next to their `directory` entry; `trusted.overlay.*` xattrs are
 * dropped, other xattrs kept; regular files sharing an inode become hard links to the first name
 * (whiteout devices are never linked: overlay links them all to one inode in its work dir).
 *
 * An empty array means the step changed nothing: record the history entry with
 * `empty_layer: true` and add no layer, as BuildKit does.
 *
 * Sockets are skipped (Docker and BuildKit drop them too); fifos and devices come out as entries
 * that `LayerWriter` only accepts with `allowDevices`.
 */
export async function diffUpperDir(upperDir: string, options: DiffOptions = {}): Promise<LayerEntry[]> {
  const xattrs = await readAllXattrs(upperDir);
  const found: { rel: string; stats: Stats }[] = [];
  const stack: string[] = [''];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const name of await readdir(join(upperDir, dir))) {
      const rel = dir === '' ? name : `${dir}/${name}`;
      const stats = await lstat(join(upperDir, rel));
      found.push({ rel, stats });
      if (stats.isDirectory()) stack.push(rel);
    }
  }

  const entries: { key: Buffer[]; entry: LayerEntry; inode?: string }[] = [];
  for (const { rel, stats } of found) {
    const path = join(upperDir, rel);
    const own = xattrs.get(rel);
    const meta = {
      path: rel,
      mode: stats.mode & 0o7777,
      uid: stats.uid,
      gid: stats.gid,
      mtime: stats.mtime,
      ...(own && own.kept ? { xattrs: own.kept } : {}),
    };
    if (stats.isCharacterDevice() && stats.rdev === 0) {
      entries.push({ key: whiteoutKey(rel), entry: { type: 'whiteout', path: rel } });
    } else if (stats.isDirectory()) {
      const opaque = own?.opaque === true;
      if (opaque) entries.push({ key: [...keyOf(rel), Buffer.from(OPAQUE_WHITEOUT)], entry: { type: 'opaque', path: rel } });
      if (opaque || !(await copiedUpUnchanged(rel, stats, options.lowerDirs))) {
        entries.push({ key: keyOf(rel), entry: { ...meta, type: 'directory' } });
      }
    } else if (stats.isFile()) {
      const inode = stats.nlink > 1 ? `${stats.dev}:${stats.ino}` : undefined;
      entries.push({ key: keyOf(rel), entry: { ...meta, type: 'file', content: { path } }, ...(inode ? { inode } : {}) });
    } else if (stats.isSymbolicLink()) {
      entries.push({ key: keyOf(rel), entry: { ...meta, type: 'symlink', target: await readlink(path) } });
    } else if (stats.isFIFO()) {
      entries.push({ key: keyOf(rel), entry: { ...meta, type: 'fifo' } });
    } else if (stats.isCharacterDevice() || stats.isBlockDevice()) {
      const devmajor = Math.floor(stats.rdev / 256) & 0xfff;
      const devminor = (stats.rdev & 0xff) | ((stats.rdev >> 12) & 0xfff00);
      entries.push({
        key: keyOf(rel),
        entry: { ...meta, type: stats.isCharacterDevice() ? 'char-device' : 'block-device', devmajor, devminor },
      });
    }
  }

  entries.sort((a, b) => compareLayerKeys(a.key, b.key));
  const firstByInode = new Map<string, string>();
  return entries.map(({ entry, inode }) => {
    if (inode === undefined) return entry;
    const first = firstByInode.get(inode);
    if (first === undefined) {
      firstByInode.set(inode, entry.path);
      return entry;
    }
    return { type: 'hardlink', path: entry.path, target: first } satisfies LayerEntry;
  });
}

async function copiedUpUnchanged(rel: string, stats: Stats, lowerDirs: readonly string[] | undefined): Promise<boolean> {
  if (lowerDirs === undefined) return false;
  for (const lower of lowerDirs) {
    let below: Stats;
    try {
      below = await lstat(join(lower, rel));
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

function keyOf(rel: string): Buffer[] {
  return rel.split('/').map((part) => Buffer.from(part));
}

function whiteoutKey(rel: string): Buffer[] {
  const parts = keyOf(rel);
  parts[parts.length - 1] = Buffer.concat([Buffer.from(WHITEOUT_PREFIX), parts[parts.length - 1]!]);
  return parts;
}


interface PathXattrs {
  opaque: boolean;
  kept?: Record<string, Buffer>;
}

/** One getfattr run dumps every xattr under the upper dir (Node has no xattr API). */
async function readAllXattrs(upperDir: string): Promise<Map<string, PathXattrs>> {
  const output = await runCommand('getfattr', ['-R', '-P', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: upperDir });
  const result = new Map<string, PathXattrs>();
  let current: PathXattrs | undefined;
  for (const line of output.split('\n')) {
    if (line.startsWith('# file: ')) {
      const name = decodeGetfattrName(line.slice('# file: '.length));
      const rel = name === '.' ? '' : name.replace(/^\.\//, '');
      current = { opaque: false };
      result.set(rel, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (current === undefined || eq === -1) continue;
    const key = line.slice(0, eq);
    const raw = line.slice(eq + 1);
    const value = raw.startsWith('0x') ? Buffer.from(raw.slice(2), 'hex') : Buffer.from(raw.replace(/^"|"$/g, ''));
    if (key === 'trusted.overlay.opaque') current.opaque = value.toString() === 'y';
    if (key.startsWith(OVERLAY_XATTR_PREFIX)) continue;
    (current.kept ??= {})[key] = value;
  }
  return result;
}

/** getfattr writes bytes outside printable ASCII (and backslash) as `\ooo` octal escapes. */
function decodeGetfattrName(quoted: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < quoted.length; i++) {
    const octal = /^\\([0-7]{3})/.exec(quoted.slice(i, i + 4));
    if (octal) {
      bytes.push(Number.parseInt(octal[1]!, 8));
      i += 3;
    } else {
      bytes.push(...Buffer.from(quoted[i]!));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, open, readlink, realpath, rm, symlink, unlink, utimes } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  DEFAULT_EXTRACT_LIMITS,
  type ExtractLimits,
  lexicallyEscapes,
  linkResolvesInside,
  OPAQUE_WHITEOUT,
  readLimitedTarEntries,
  safeArchivePath,
  type TarEntryHeader,
  TarExtractionError,
  WHITEOUT_PREFIX,
} from '@strata/oci';
import { lsetxattr, mknod, type NewFile, writeFiles } from '@strata/native';

/**
 * What an archive becomes:
 * - `tree`: an untrusted archive (a cache-mount copy, a context) as a plain directory. Refuses
 *   devices and fifos, and links whose targets leave the destination; owners only with
 *   `preserveOwnership`; xattrs ignored.
 * - `overlay-layer`: an image layer as an overlayfs lower dir. `.wh.<name>` becomes a 0/0
 *   character device at `<name>`, `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its
 *   directory; devices and fifos are made; symlink targets are kept as written (absolute ones
 *   point into the container's root, never followed here); owners and xattrs are applied, except
 *   `trusted.overlay.*` ones, so a layer cannot forge overlay redirects.
 * In both, no entry is written outside the destination: no absolute or escaping paths, no writing
 * through a symlink (parents are checked, files created O_EXCL|O_NOFOLLOW), hard links only to
 * names extracted earlier. Names, link targets and xattr values are written byte for byte, valid
 * UTF-8 or not (paths are handled as latin1 strings, one char per byte, and given to fs as bytes).
 */
export type ExtractForm = 'tree' | 'overlay-layer';

export interface ExtractOptions extends ExtractLimits {
  form?: ExtractForm;
  /** `tree`: apply the archive's uid/gid (only takes effect when running as root). */
  preserveOwnership?: boolean;
}

export interface ExtractSummary {
  entries: number;
  /** Bytes of file content. */
  bytes: number;
  /** sha256 of the uncompressed tar, "sha256:<hex>" (a layer's diff ID). */
  diffId: string;
  /** Approximate disk use: file sizes rounded to 4 KiB plus 4 KiB per other entry. */
  sizeBytes: number;
}

const BLOCK = 4096;
/** A batch of small files is written once it holds this many files or bytes; at most this many batches are written at once. */
const BATCH_FILES = 64;
const BATCH_BYTES = 1024 * 1024;
const BATCHES_IN_FLIGHT = 4;

interface SmallFileBatch {
  files: NewFile[];
  targets: Set<string>;
  xattrs: Array<{ header: TarEntryHeader; target: string }>;
  bytes: number;
}
/** Files up to this size are buffered and written in one call: far fewer round trips than a stream. */
const SMALL_FILE = 256 * 1024;
const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';
const OPAQUE_VALUE = Buffer.from('y');

interface PendingDirectory {
  parts: string[];
  mode: number;
  mtime: number;
  uid: number;
  gid: number;
}

/** The one tar extractor: see ExtractForm for what each form writes. On error destDir may hold a partial tree, never anything outside it. */
export async function extractTar(input: Readable, destDir: string, options: ExtractOptions = {}): Promise<ExtractSummary> {
  const layer = options.form === 'overlay-layer';
  // A layer comes from the blob store, checked against its digest: the limits guard untrusted archives.
  const maxEntries = layer ? Number.MAX_SAFE_INTEGER : (options.maxEntries ?? DEFAULT_EXTRACT_LIMITS.maxEntries);
  const maxBytes = layer ? Number.MAX_SAFE_INTEGER / 2 : (options.maxBytes ?? DEFAULT_EXTRACT_LIMITS.maxBytes);
  const chown = (layer || options.preserveOwnership === true) && process.getuid?.() === 0;
  await mkdir(destDir, { recursive: true });
  const root = binary(await realpath(destDir));
  const hash = createHash('sha256');
  const directories: PendingDirectory[] = [];
  const symlinks: { name: string; parts: string[]; target: string }[] = [];
  const whiteouts: string[][] = [];
  const opaqueDirs: string[][] = [];
  // Directories this extraction created or checked. Sound to trust: an entry never replaces a
  // directory with a non-directory without this set being told, so a path in it stays a directory.
  const knownDirs = new Set<string>([root]);
  // Directories created empty by this extraction, and every path it wrote: a path under a fresh
  // directory that was never written cannot exist, so it needs no lstat.
  const freshDirs = new Set<string>();
  const written = new Set<string>();
  // Small files are written in batches, each one thread-pool job of the native addon (a few
  // syscalls per file, where fs costs a thread-pool round trip per call); batches run
  // concurrently. An entry that touches a path still pending waits for its batch first.
  const inFlight = new Map<string, Promise<void>>();
  const batches = new Set<Promise<void>>();
  let batch: SmallFileBatch | null = null;
  let writeError: unknown;
  const flush = () => {
    const b = batch;
    batch = null;
    if (b === null) return;
    const write: Promise<void> = writeFiles(b.files, { chown })
      .then(() => {
        if (layer) for (const { header, target } of b.xattrs) applyXattrs(header, target);
      })
      .catch((err: unknown) => {
        writeError ??= err;
      })
      .finally(() => {
        batches.delete(write);
        for (const target of b.targets) if (inFlight.get(target) === write) inFlight.delete(target);
      });
    batches.add(write);
    for (const target of b.targets) inFlight.set(target, write);
  };
  const settle = async (path: string) => {
    if (batch?.targets.has(path)) flush();
    const p = inFlight.get(path);
    if (p) await p;
  };
  const settleAll = async () => {
    flush();
    await Promise.all(batches);
    if (writeError !== undefined) throw writeError;
  };
  let entries = 0;
  let bytes = 0;
  let sizeBytes = 0;

  try {
    for await (const { header, chunks: body } of readLimitedTarEntries(input, maxEntries, maxBytes, { onTarChunk: (chunk) => hash.update(chunk) })) {
      const name = header.name;
      entries += 1;
      bytes += header.size;
      // Layers written by other tools may name entries "/etc/x": inside a layer that is "etc/x".
      // Checked on the text; written with the name's own bytes.
      const checked = safeArchivePath(layer ? name.replace(/^\/+/, '') : name);
      const parts = header.nameBytes ? binaryParts(header.nameBytes) : checked.map(binary);
      if (parts.length === 0) {
        // "./" itself: destDir exists; a layer's root entry gives it its owner, mode and mtime.
        if (layer && header.type === 'directory') {
          directories.push({ parts, mode: header.mode, mtime: header.mtime, uid: header.uid, gid: header.gid });
          sizeBytes += BLOCK;
        }
        continue;
      }
      const base = parts[parts.length - 1]!;
      if (layer && base.startsWith(WHITEOUT_PREFIX)) {
        await ensureParentDirectories(root, parts, name, knownDirs, freshDirs);
        if (base === OPAQUE_WHITEOUT) opaqueDirs.push(parts.slice(0, -1));
        else if (base.length > WHITEOUT_PREFIX.length) whiteouts.push([...parts.slice(0, -1), base.slice(WHITEOUT_PREFIX.length)]);
        continue;
      }
      const target = join(root, ...parts);
      if (writeError !== undefined) throw writeError;
      await settle(target);
      if (header.type === 'hardlink') await settleAll();
      await ensureParentDirectories(root, parts, name, knownDirs, freshDirs);
      const existing = freshDirs.has(dirname(target)) && !written.has(target) ? null : await lstatOrNull(target);
      written.add(target);
      // In a layer a later entry replaces an earlier one, directories merging; a tree refuses to replace a directory.
      const clear = async () => {
        if (existing === null) return;
        if (!existing.isDirectory()) await unlink(fsPath(target));
        else if (layer) {
          // Files pending under the directory are written before it goes, never after.
          await settleAll();
          await rm(fsPath(target), { recursive: true, force: true });
          for (const dir of knownDirs) if (dir === target || dir.startsWith(`${target}/`)) knownDirs.delete(dir);
        } else throw new TarExtractionError(name, 'would replace a directory extracted earlier');
      };

      switch (header.type) {
        case 'directory': {
          if (existing !== null && !existing.isDirectory()) await unlink(fsPath(target));
          if (existing === null || !existing.isDirectory()) {
            await mkdir(fsPath(target), { mode: 0o700 });
            freshDirs.add(target);
          }
          knownDirs.add(target);
          directories.push({ parts, mode: header.mode, mtime: header.mtime, uid: header.uid, gid: header.gid });
          sizeBytes += BLOCK;
          break;
        }
        case 'file': {
          await clear();
          sizeBytes += Math.ceil(header.size / BLOCK) * BLOCK || BLOCK;
          if (header.size <= SMALL_FILE) {
            const chunks: Buffer[] = [];
            for await (const chunk of body) chunks.push(chunk);
            const content = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
            batch ??= { files: [], targets: new Set(), xattrs: [], bytes: 0 };
            batch.files.push({ path: fsPath(target), content, mode: header.mode, uid: header.uid, gid: header.gid, mtimeMs: header.mtime * 1000 });
            batch.targets.add(target);
            if (Object.keys(header.xattrBytes).length > 0) batch.xattrs.push({ header, target });
            batch.bytes += content.length;
            if (batch.files.length >= BATCH_FILES || batch.bytes >= BATCH_BYTES) {
              flush();
              if (batches.size >= BATCHES_IN_FLIGHT) await Promise.race(batches);
            }
            break;
          }
          // O_EXCL|O_NOFOLLOW: creating the file can never follow a link planted at this path.
          const handle = await open(fsPath(target), fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
          try {
            for await (const chunk of body) await handle.write(chunk);
            if (chown) await handle.chown(header.uid, header.gid);
            await handle.chmod(header.mode);
            await handle.utimes(timeOf(header.mtime), timeOf(header.mtime));
          } finally {
            await handle.close();
          }
          if (layer) applyXattrs(header, target);
          break;
        }
        case 'symlink': {
          if (header.linkname === '') throw new TarExtractionError(name, 'symlink has an empty target');
          const linkTarget = header.linknameBytes ?? Buffer.from(header.linkname, 'utf8');
          if (!layer) {
            if (header.linkname.startsWith('/')) throw new TarExtractionError(name, `symlink target ${JSON.stringify(header.linkname)} is absolute`);
            if (lexicallyEscapes(parts.slice(0, -1), header.linkname)) {
              throw new TarExtractionError(name, `symlink target ${JSON.stringify(header.linkname)} points outside the destination`);
            }
            symlinks.push({ name, parts, target: linkTarget.toString('latin1') });
          }
          await clear();
          await symlink(linkTarget, fsPath(target));
          if (chown) await lchown(fsPath(target), header.uid, header.gid);
          await lutimes(fsPath(target), timeOf(header.mtime), timeOf(header.mtime));
          if (layer) applyXattrs(header, target);
          sizeBytes += BLOCK;
          break;
        }
        case 'hardlink': {
          const checkedLink = safeArchivePath(layer ? header.linkname.replace(/^\/+/, '') : header.linkname, name);
          const linkParts = header.linknameBytes ? binaryParts(header.linknameBytes) : checkedLink.map(binary);
          if (linkParts.length === 0) throw new TarExtractionError(name, 'hard link points at the archive root');
          await ensureNoSymlinkComponents(root, linkParts.slice(0, -1), name);
          const source = join(root, ...linkParts);
          const sourceStat = await lstatOrNull(source);
          // A layer may link any name but a directory (a RUN can link symlinks, fifos, devices); a tree only files.
          if (sourceStat === null || (layer ? sourceStat.isDirectory() : !sourceStat.isFile())) {
            throw new TarExtractionError(name, `hard link target ${JSON.stringify(header.linkname)} is not a ${layer ? 'non-directory' : 'regular file'} extracted earlier`);
          }
          if (source === target) break;
          await clear();
          await link(fsPath(source), fsPath(target));
          break;
        }
        case 'char-device':
        case 'block-device':
        case 'fifo': {
          if (!layer) throw new TarExtractionError(name, `${header.type} entries are not allowed`);
          await clear();
          mknod(fsPath(target), header.type, 0o666, header.devmajor, header.devminor);
          if (chown) await lchown(fsPath(target), header.uid, header.gid);
          await chmod(fsPath(target), header.mode);
          await utimes(fsPath(target), timeOf(header.mtime), timeOf(header.mtime));
          applyXattrs(header, target);
          sizeBytes += BLOCK;
          break;
        }
        default:
          throw new TarExtractionError(name, 'unsupported entry type');
      }
    }
    await settleAll();
  } catch (error) {
    batch = null;
    await Promise.all(batches);
    throw error;
  }

  // A later entry can turn an earlier, harmless-looking target into an escape (a/.. once a is a link).
  for (const entry of symlinks) {
    if (!(await resolvesInside(root, entry.parts, entry.target))) {
      throw new TarExtractionError(entry.name, `symlink target ${JSON.stringify(entry.target)} resolves outside the destination`);
    }
  }
  for (const removed of whiteouts) {
    const path = join(root, ...removed);
    // A whiteout only hides lower layers; a same-named entry of this layer wins.
    if ((await lstatOrNull(path)) !== null) continue;
    mknod(fsPath(path), 'char-device', 0o666, 0, 0);
  }
  for (const dir of opaqueDirs) lsetxattr(fsPath(join(root, ...dir)), 'trusted.overlay.opaque', OPAQUE_VALUE);
  // Deepest first, so restrictive modes and mtimes are not disturbed by writing children.
  directories.sort((a, b) => b.parts.length - a.parts.length);
  for (const dir of directories) {
    const path = fsPath(join(root, ...dir.parts));
    if (chown) await lchown(path, dir.uid, dir.gid);
    await chmod(path, dir.mode);
    await utimes(path, timeOf(dir.mtime), timeOf(dir.mtime));
  }
  return { entries, bytes, diffId: `sha256:${hash.digest('hex')}`, sizeBytes };
}

/**
 * A tar mtime (seconds, fractional from a PAX record) to millisecond precision: what a Date holds,
 * so a directory whose mtime is saved and restored through a Date (MountStubs) compares equal.
 */
function timeOf(seconds: number): Date {
  return new Date(Math.trunc(seconds * 1000));
}

/** The xattrs of an entry, their values byte for byte, on the entry itself (a symlink is not followed). */
function applyXattrs(header: TarEntryHeader, target: string): void {
  for (const [name, value] of Object.entries(header.xattrBytes)) {
    if (!name.startsWith(OVERLAY_XATTR_PREFIX)) lsetxattr(fsPath(target), name, value);
  }
}

/** A path held as latin1 (one char per byte), as fs takes it: its bytes. */
function fsPath(path: string): Buffer {
  return Buffer.from(path, 'latin1');
}

/** A UTF-8 string (a path from the OS, a name that is valid UTF-8) as the latin1 form paths are held in here. */
function binary(text: string): string {
  return Buffer.from(text, 'utf8').toString('latin1');
}

/** An archive name's bytes split into components (checked already on its text by safeArchivePath), as latin1. */
function binaryParts(bytes: Buffer): string[] {
  const parts: string[] = [];
  for (const part of bytes.toString('latin1').replace(/^\/+/, '').split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return parts;
}

async function lstatOrNull(path: string) {
  try {
    return await lstat(fsPath(path));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function ensureParentDirectories(root: string, parts: string[], name: string, knownDirs: Set<string>, freshDirs: Set<string>): Promise<void> {
  let current = root;
  for (const part of parts.slice(0, -1)) {
    current = join(current, part);
    if (knownDirs.has(current)) continue;
    const stats = await lstatOrNull(current);
    if (stats === null) {
      await mkdir(fsPath(current), { mode: 0o755 });
      freshDirs.add(current);
    } else if (stats.isSymbolicLink()) throw new TarExtractionError(name, `parent ${JSON.stringify(part)} is a symlink; refusing to write through it`);
    else if (!stats.isDirectory()) throw new TarExtractionError(name, `parent ${JSON.stringify(part)} is not a directory`);
    knownDirs.add(current);
  }
}

async function ensureNoSymlinkComponents(root: string, parts: string[], name: string): Promise<void> {
  let current = root;
  for (const part of parts) {
    current = join(current, part);
    const stats = await lstatOrNull(current);
    if (stats?.isSymbolicLink()) throw new TarExtractionError(name, `hard link target passes through symlink ${JSON.stringify(part)}`);
  }
}

/** Resolves a symlink the way the kernel would, but within root: false if any step leaves it. */
function resolvesInside(root: string, linkParts: string[], target: string): Promise<boolean> {
  return linkResolvesInside(linkParts, target, async (parts) => {
    const path = join(root, ...parts);
    return (await lstatOrNull(path))?.isSymbolicLink() ? readlink(fsPath(path), { encoding: 'latin1' }) : null;
  });
}

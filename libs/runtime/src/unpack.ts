import { createHash } from 'node:crypto';
import { close as closeCb, constants as fsConstants, createWriteStream, fchmod as fchmodCb, fchown as fchownCb, futimes as futimesCb, open as openCb, write as writeCb } from 'node:fs';
import { chmod, chown, lchown, link, lstat, lutimes, mkdir, readdir, rm, symlink, utimes } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, type Gunzip } from 'node:zlib';
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from '@strata/oci';
import tar from 'tar-stream';
import { runCommand } from './command.js';
import { cleanRelativePath } from '@strata/oci';
import { exists } from './fs-exists.js';

export class LayerUnpackError extends Error {
  override readonly name = 'LayerUnpackError';
}

export interface UnpackResult {
  /** sha256 of the uncompressed tar, "sha256:<hex>". */
  diffId: string;
  /** Approximate disk use: file sizes rounded to 4 KiB plus 4 KiB per other entry. */
  sizeBytes: number;
  entries: number;
}

const BLOCK = 4096;

/** Gunzips the stream when it starts with the gzip magic, passes it through otherwise. */
class MaybeGunzip extends Transform {
  private gunzip: Gunzip | undefined;
  private decided = false;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (!this.decided) {
      this.decided = true;
      if (chunk.length >= 2 && chunk[0] === 0x1f && chunk[1] === 0x8b) {
        this.gunzip = createGunzip();
        this.gunzip.on('data', (data: Buffer) => this.push(data));
        this.gunzip.on('error', (error) => this.destroy(error));
      }
    }
    if (this.gunzip) this.gunzip.write(chunk, () => callback());
    else callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (!this.gunzip) return callback();
    this.gunzip.once('end', () => callback());
    this.gunzip.end();
  }
}

/**
 * Unpacks one layer tar (gzip or plain) into `dest`, an empty directory, in the form overlayfs
 * expects of a lower dir: `.wh.<name>` becomes a 0/0 character device at `<name>` and
 * `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on its directory. Entries cannot
 * escape `dest` (no `..`, no writing through symlinks), and `trusted.overlay.*` xattrs in the
 * archive are dropped so a layer cannot forge overlay redirects.
 */
export async function unpackLayer(input: Readable, dest: string): Promise<UnpackResult> {
  // `dest` starts empty (LayerStore unpacks into a fresh temp dir), so a path this unpack has not
  // written yet cannot exist: no lstat for it. Checked before the stream starts flowing.
  const fresh = (await readdir(dest).catch(() => [])).length === 0;
  const hash = createHash('sha256');
  const hasher = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  const extract = tar.extract();
  const piping = pipeline(input, new MaybeGunzip(), hasher, extract);
  piping.catch(() => undefined);

  const whiteouts: string[] = [];
  const opaqueDirs = new Set<string>();
  const directories: { path: string; mtime: Date }[] = [];
  const knownDirs = new Set<string>(['']);
  let sizeBytes = 0;
  let entries = 0;
  // Small files are written concurrently (a bounded window); an entry at a path still being
  // written, and every hard link, waits first.
  const written = new Set<string>();
  const inFlight = new Map<string, Promise<void>>();
  let writeError: unknown;
  const settleAll = async () => {
    await Promise.all(inFlight.values());
    if (writeError !== undefined) throw writeError;
  };

  try {
    for await (const entry of extract) {
      const header = entry.header;
      entries++;
      let rel: string;
      try {
        rel = cleanRelativePath(header.name);
      } catch (error) {
        throw new LayerUnpackError(`layer entry ${JSON.stringify(header.name)}: ${(error as Error).message}`);
      }
      const parent = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
      const base = posix.basename(rel);

      if (base.startsWith(WHITEOUT_PREFIX)) {
        await ensureDirs(dest, parent, knownDirs);
        if (base === OPAQUE_WHITEOUT) opaqueDirs.add(parent);
        else whiteouts.push(parent === '' ? base.slice(WHITEOUT_PREFIX.length) : `${parent}/${base.slice(WHITEOUT_PREFIX.length)}`);
        entry.resume();
        continue;
      }

      const target = join(dest, rel);
      const mode = (header.mode ?? 0o644) & 0o7777;
      const pax = (header as { pax?: Record<string, string> | null }).pax ?? {};
      // tar-stream applies PAX path/linkpath/size itself; ids and mtime beyond ustar range are ours to read.
      const uid = pax.uid !== undefined ? Number.parseInt(pax.uid, 10) : (header.uid ?? 0);
      const gid = pax.gid !== undefined ? Number.parseInt(pax.gid, 10) : (header.gid ?? 0);
      const mtime = pax.mtime !== undefined ? new Date(Number.parseFloat(pax.mtime) * 1000) : (header.mtime ?? new Date(0));
      if (writeError !== undefined) throw writeError;
      await inFlight.get(target);
      if (header.type === 'link') await settleAll();
      if (rel !== '') {
        await ensureDirs(dest, parent, knownDirs);
        if (!fresh || written.has(rel)) await removeUnlessDirectory(target, header.type === 'directory');
        written.add(rel);
      }

      switch (header.type) {
        case 'file':
        case 'contiguous-file':
        case null:
        case undefined: {
          sizeBytes += Math.ceil((header.size ?? 0) / BLOCK) * BLOCK || BLOCK;
          if ((header.size ?? 0) <= SMALL_FILE) {
            const chunks: Buffer[] = [];
            for await (const chunk of entry) chunks.push(chunk as Buffer);
            const content = Buffer.concat(chunks);
            const xattrHeader = entry.header as { pax?: Record<string, string> | null };
            const write = writeSmallFile(target, content, uid, gid, mode, mtime)
              .then(() => applyXattrs(xattrHeader, target))
              .catch((err: unknown) => {
                writeError ??= err;
              })
              .finally(() => inFlight.delete(target));
            inFlight.set(target, write);
            if (inFlight.size >= 32) await Promise.race(inFlight.values());
            continue;
          }
          await pipeline(entry, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
          await chown(target, uid, gid);
          await chmod(target, mode);
          await utimes(target, mtime, mtime);
          break;
        }
        case 'directory':
          await mkdir(target, { recursive: true });
          await chown(target, uid, gid);
          await chmod(target, mode);
          knownDirs.add(rel);
          directories.push({ path: target, mtime });
          sizeBytes += BLOCK;
          break;
        case 'symlink':
          await symlink(header.linkname ?? '', target);
          await lchown(target, uid, gid);
          await lutimes(target, mtime, mtime);
          sizeBytes += BLOCK;
          break;
        case 'link': {
          const linkTarget = cleanRelativePath(header.linkname ?? '');
          const linkParent = posix.dirname(linkTarget) === '.' ? '' : posix.dirname(linkTarget);
          await ensureDirs(dest, linkParent, knownDirs, false);
          await link(join(dest, linkTarget), target);
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo': {
          const args =
            header.type === 'fifo'
              ? [target, 'p']
              : [target, header.type === 'character-device' ? 'c' : 'b', String(header.devmajor ?? 0), String(header.devminor ?? 0)];
          await runCommand('mknod', args);
          await chown(target, uid, gid);
          await chmod(target, mode);
          await utimes(target, mtime, mtime);
          sizeBytes += BLOCK;
          break;
        }
        default:
          throw new LayerUnpackError(`layer entry ${JSON.stringify(header.name)}: unsupported tar entry type ${header.type}`);
      }
      entry.resume();
      await applyXattrs(entry.header as { pax?: Record<string, string> | null }, target);
    }
    await piping;
    await settleAll();
  } catch (error) {
    await Promise.all(inFlight.values());
    extract.destroy();
    await piping.catch(() => undefined);
    throw error;
  }

  for (const removed of whiteouts) {
    const target = join(dest, removed);
    // A whiteout only hides lower layers; a same-named entry of this layer wins.
    if (await exists(target)) continue;
    await runCommand('mknod', [target, 'c', '0', '0']);
  }
  if (opaqueDirs.size > 0) {
    await runCommand('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', ...[...opaqueDirs].map((dir) => join(dest, dir))]);
  }
  // Directory mtimes last: creating their children changed them.
  directories.sort((a, b) => b.path.length - a.path.length);
  for (const dir of directories) await utimes(dir.path, dir.mtime, dir.mtime);

  return { diffId: `sha256:${hash.digest('hex')}`, sizeBytes, entries };
}

const SMALL_FILE = 256 * 1024;


const UMASK = process.umask();
const OWN_UID = process.getuid?.() ?? -1;
const OWN_GID = process.getgid?.() ?? -1;
const CREATE_FLAGS = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;

const fdOpen = (path: string, flags: number, mode: number) => new Promise<number>((resolve, reject) => openCb(path, flags, mode, (e, fd) => (e ? reject(e) : resolve(fd))));
const fdCall = (fn: (cb: (e: NodeJS.ErrnoException | null) => void) => void) => new Promise<void>((resolve, reject) => fn((e) => (e ? reject(e) : resolve())));

/**
 * One small file in as few calls as the result allows, on plain descriptors: a layer can hold
 * thousands of files, and a FileHandle per file costs more than the file. Created with its mode
 * when the umask leaves it intact; not chowned when it already belongs to its owner.
 */
async function writeSmallFile(target: string, content: Buffer, uid: number, gid: number, mode: number, mtime: Date, setgidParent = false): Promise<void> {
  const exact = (mode & 0o777 & ~UMASK) === mode;
  const fd = await fdOpen(target, CREATE_FLAGS, exact ? mode : 0o600);
  try {
    let done = 0;
    while (done < content.length) {
      const n = await new Promise<number>((resolve, reject) => writeCb(fd, content, done, content.length - done, null, (e, w) => (e ? reject(e) : resolve(w))));
      done += n;
    }
    if (setgidParent || uid !== OWN_UID || gid !== OWN_GID) await fdCall((cb) => fchownCb(fd, uid, gid, cb));
    if (!exact) await fdCall((cb) => fchmodCb(fd, mode, cb));
    await fdCall((cb) => futimesCb(fd, mtime, mtime, cb));
  } finally {
    await fdCall((cb) => closeCb(fd, cb));
  }
}

/** Creates the missing parents of an entry, refusing to pass through a symlink or a non-directory. */
async function ensureDirs(root: string, rel: string, known: Set<string>, create = true): Promise<void> {
  if (known.has(rel)) return;
  let current = '';
  for (const part of rel.split('/')) {
    current = current === '' ? part : `${current}/${part}`;
    if (known.has(current)) continue;
    const path = join(root, current);
    try {
      const stats = await lstat(path);
      if (!stats.isDirectory()) throw new LayerUnpackError(`layer entry under ${JSON.stringify(current)}: parent is not a directory`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !create) throw error;
      await mkdir(path, { mode: 0o755 });
    }
    known.add(current);
  }
}

async function removeUnlessDirectory(path: string, keepDirectory: boolean): Promise<void> {
  try {
    const stats = await lstat(path);
    if (keepDirectory && stats.isDirectory()) return;
    await rm(path, { recursive: true, force: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}


async function applyXattrs(header: { pax?: Record<string, string> | null }, target: string): Promise<void> {
  if (!header.pax) return;
  for (const [key, value] of Object.entries(header.pax)) {
    if (!key.startsWith('SCHILY.xattr.')) continue;
    const name = key.slice('SCHILY.xattr.'.length);
    if (name.startsWith('trusted.overlay.')) continue;
    await runCommand('setfattr', ['-h', '-n', name, '-v', `0x${Buffer.from(value, 'utf8').toString('hex')}`, target]);
  }
}

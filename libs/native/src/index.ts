/**
 * The worker's Linux syscalls that Node has no API for, made in-process by a small N-API addon
 * (src/native.c, built by node-gyp at `npm ci`): a RUN step used to start a `mount`, `umount`,
 * `getfattr`, `setfattr` or `mknod` process for each of these (docs/adr/0026).
 *
 * Paths and xattr names are strings (UTF-8) or Buffers (their bytes as they are, for names that are
 * not UTF-8). Failures are Node errors as `fs` throws them: `code` ('EPERM', 'ENOENT', 'EBUSY',
 * 'ENODATA'...), `errno` (negative), `syscall`, `path` (and `dest` where there are two paths), and a
 * message `CODE: description, syscall 'path'`.
 *
 * Stable API (other branches build on it; extend, do not change):
 * - `mount(source, target, fstype, flags?, data?, { cwd? })`: Promise<void>
 * - `umount(target, { detach?, force? })`: Promise<void>
 * - `idmappedBindMount(source, target, userns, { recursive? })`: Promise<void>
 * - `llistxattr(path)`: string[]; `lgetxattr(path, name)`: Buffer; `lsetxattr(path, name, value, flags?)`;
 *   `lremovexattr(path, name)`
 * - `mknod(path, type, mode, major?, minor?)`
 * - `writeFiles(files, { chown })`: Promise<void>
 * - `constants` (MS_*, MNT_*, XATTR_*)
 * - `mknodAgentPath`: the seccomp user-notification supervisor's executable (src/mknod-agent.c)
 * - `spawn(file, args, { cwd?, env? })`: a child started without fork (posix_spawn), stdout and
 *   stderr piped, as a `SpawnedProcess`; `nativeSpawnAvailable` says whether this build has it
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { Readable } from 'node:stream';

export type PathArg = string | Buffer;

/** Which user namespace an idmapped mount maps through: a process's (`/proc/<pid>/ns/user`), a namespace file, or an open descriptor of one. */
export type UsernsRef = { pid: number } | { path: string } | { fd: number };

interface SpawnHandle {
  pid: number;
  /** The read ends of the child's stdout and stderr pipes. */
  stdout: number;
  stderr: number;
  handle: object;
}

interface Binding {
  mount(source: PathArg | null, target: PathArg, fstype: string | null, flags: number, data: string | null, cwd: PathArg | null): Promise<void>;
  umount(target: PathArg, flags: number): Promise<void>;
  idmappedBindMount(source: PathArg, target: PathArg, usernsPath: string | null, usernsFd: number, recursive: boolean): Promise<void>;
  llistxattr(path: PathArg): string[];
  lgetxattr(path: PathArg, name: PathArg): Buffer;
  lsetxattr(path: PathArg, name: PathArg, value: Buffer, flags: number): void;
  lremovexattr(path: PathArg, name: PathArg): void;
  mknod(path: PathArg, mode: number, major: number, minor: number): void;
  /** Absent from an addon built before ADR 0039. */
  spawn?(file: string, argv: string[], env: string[], cwd: string | null, onExit: (code: number | null, signal: number | null) => void): SpawnHandle;
  kill?(handle: object, signal: number): number;
  /** Whether the kernel has pidfd_open, which spawn needs (absent before it was added). */
  spawnSupported?(): boolean;
  writeFiles(paths: PathArg[], contents: Buffer[], meta: Float64Array, chown: boolean): Promise<void>;
  constants: NativeConstants;
}

export interface NativeConstants {
  readonly MS_RDONLY: number;
  readonly MS_NOSUID: number;
  readonly MS_NODEV: number;
  readonly MS_NOEXEC: number;
  readonly MS_REMOUNT: number;
  readonly MS_BIND: number;
  readonly MS_MOVE: number;
  readonly MS_REC: number;
  readonly MS_PRIVATE: number;
  readonly MS_SLAVE: number;
  readonly MS_SHARED: number;
  readonly MS_NOATIME: number;
  readonly MS_RELATIME: number;
  readonly MNT_FORCE: number;
  readonly MNT_DETACH: number;
  readonly XATTR_CREATE: number;
  readonly XATTR_REPLACE: number;
  readonly S_IFCHR: number;
  readonly S_IFBLK: number;
  readonly S_IFIFO: number;
}

const binding = load();

function load(): Binding {
  // The same relative path from src/ (jest, swc) and from dist/ (the built lib).
  const file = new URL('../build/Release/strata_native.node', import.meta.url);
  try {
    return createRequire(import.meta.url)(file.pathname) as Binding;
  } catch (error) {
    throw new Error(
      `@strata/native: cannot load ${file.pathname} (${(error as Error).message}); it is built by \`npm ci\` ` +
        '(node-gyp, with gcc, make and python3); rebuild it with `npm rebuild @strata/native`',
      { cause: error },
    );
  }
}

export const constants: NativeConstants = binding.constants;

/**
 * The `strata-mknod-agent` executable node-gyp builds next to the addon (src/mknod-agent.c): the
 * seccomp user-notification supervisor that makes device nodes for user-namespaced RUN steps
 * (`strata-mknod-agent <socket>`, prints "ready" once it listens; docs/adr/0022).
 */
export const mknodAgentPath: string = new URL('../build/Release/strata-mknod-agent', import.meta.url).pathname;

export interface MountOptions {
  /**
   * Resolve relative paths (`target`, and paths inside `data` such as overlayfs's lowerdir) against
   * this directory: the mount is made on a thread with its own cwd, the process's never moves.
   */
  cwd?: PathArg;
}

/** mount(2). `source` null for a remount or a propagation change; `data` the filesystem's options (one page at most). */
export function mount(source: PathArg | null, target: PathArg, fstype: string | null, flags = 0, data: string | null = null, options: MountOptions = {}): Promise<void> {
  return binding.mount(source, target, fstype, flags, data, options.cwd ?? null);
}

export interface UmountOptions {
  /** MNT_DETACH, what `umount -l` does: gone from the tree now, torn down once nothing uses it. */
  detach?: boolean;
  /** MNT_FORCE (network filesystems). */
  force?: boolean;
}

/** umount2(2) of a mount point (never following a symlink at `target`). */
export function umount(target: PathArg, options: UmountOptions = {}): Promise<void> {
  const flags = (options.detach ? binding.constants.MNT_DETACH : 0) | (options.force ? binding.constants.MNT_FORCE : 0);
  return binding.umount(target, flags);
}

export interface IdmappedBindMountOptions {
  /** Clone and map the mounts under `source` too (OPEN_TREE_CLONE|AT_RECURSIVE). Default true. */
  recursive?: boolean;
}

/**
 * Bind-mounts `source` at `target` with its owners mapped through `userns`'s uid/gid maps: a file
 * owned by host uid H is seen (and written) as the id that H maps from in that namespace, so a
 * container in the namespace sees its own root own the files of a layer unpacked as host root.
 * open_tree(OPEN_TREE_CLONE[|AT_RECURSIVE]) + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount; needs
 * CAP_SYS_ADMIN and a filesystem that supports idmapped mounts (ext4, xfs, btrfs, tmpfs from 6.3,
 * overlayfs from 5.19 for its own mount). The namespace must have its maps written already.
 */
export function idmappedBindMount(source: PathArg, target: PathArg, userns: UsernsRef, options: IdmappedBindMountOptions = {}): Promise<void> {
  const recursive = options.recursive ?? true;
  if ('fd' in userns) return binding.idmappedBindMount(source, target, null, checkedInt(userns.fd, 'userns.fd'), recursive);
  const path = 'pid' in userns ? `/proc/${checkedInt(userns.pid, 'userns.pid')}/ns/user` : userns.path;
  return binding.idmappedBindMount(source, target, path, -1, recursive);
}

/** The names of a path's own xattrs (a symlink's own, never its target's), in the kernel's order. */
export function llistxattr(path: PathArg): string[] {
  return binding.llistxattr(path);
}

/** One xattr's value, byte for byte; throws ENODATA when the path has no such xattr. */
export function lgetxattr(path: PathArg, name: PathArg): Buffer {
  return binding.lgetxattr(path, name);
}

/** Every xattr of a path (its own: a symlink is not followed), or null when it has none. */
export function lgetxattrs(path: PathArg): Record<string, Buffer> | null {
  const names = binding.llistxattr(path);
  if (names.length === 0) return null;
  const values: Record<string, Buffer> = {};
  for (const name of names) values[name] = binding.lgetxattr(path, name);
  return values;
}

/** Sets an xattr on a path itself (a symlink is not followed). `flags`: constants.XATTR_CREATE or XATTR_REPLACE. */
export function lsetxattr(path: PathArg, name: PathArg, value: Buffer | string, flags = 0): void {
  binding.lsetxattr(path, name, typeof value === 'string' ? Buffer.from(value) : value, flags);
}

export function lremovexattr(path: PathArg, name: PathArg): void {
  binding.lremovexattr(path, name);
}

export type NodeType = 'char-device' | 'block-device' | 'fifo';

/** mknod(2): a device node or fifo with `mode`'s permission bits (less the umask, as mknod(2) applies it). */
export function mknod(path: PathArg, type: NodeType, mode: number, major = 0, minor = 0): void {
  const kind = type === 'char-device' ? binding.constants.S_IFCHR : type === 'block-device' ? binding.constants.S_IFBLK : binding.constants.S_IFIFO;
  binding.mknod(path, kind | (mode & 0o7777), major, minor);
}

/** A new file for {@link writeFiles}: its content, permission bits (with set-id and sticky bits), owner and mtime. */
export interface NewFile {
  path: PathArg;
  content: Buffer;
  mode: number;
  uid: number;
  gid: number;
  /** Milliseconds since the epoch; atime gets the same. */
  mtimeMs: number;
}

/**
 * Creates each file (O_EXCL|O_NOFOLLOW: it must not exist, and a link at its path is never
 * followed), writes its content, then sets its owner (with `chown`, when it is not the process's
 * own), mode and mtime: all of it in one thread-pool job, a few syscalls per file. The first
 * failure stops the batch (files before it stay written) and rejects with its errno error.
 */
export function writeFiles(files: readonly NewFile[], options: { chown: boolean }): Promise<void> {
  const meta = new Float64Array(files.length * 4);
  files.forEach((f, i) => meta.set([f.mode, f.uid, f.gid, Math.trunc(f.mtimeMs)], i * 4));
  return binding.writeFiles(
    files.map((f) => f.path),
    files.map((f) => f.content),
    meta,
    options.chown,
  );
}

function checkedInt(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0) throw new TypeError(`${what} must be a non-negative integer, not ${value}`);
  return value;
}

/**
 * Whether this build of the addon starts processes itself on this kernel (docs/adr/0039): it has
 * spawn, and the kernel has pidfd_open (Linux 5.3+), which spawn watches its children with.
 * Otherwise callers use node:child_process.
 */
export const nativeSpawnAvailable: boolean = typeof binding.spawn === 'function' && typeof binding.kill === 'function' && binding.spawnSupported?.() !== false;

export interface SpawnOptions {
  /** The child's working directory (default: the worker's). */
  cwd?: string;
  /** The child's whole environment (default: process.env); PATH in it is where `file` is looked for. */
  env?: NodeJS.ProcessEnv;
}

const signalNames = new Map<number, NodeJS.Signals>(Object.entries(osConstants.signals).map(([name, number]) => [number, name as NodeJS.Signals]));

/**
 * A child started by {@link spawn}: the part of node's ChildProcess the worker uses. Events:
 * 'spawn'; 'error' (it could not start: ENOENT, EACCES..., as child_process reports them; no
 * 'exit' or 'close' follow); 'exit' (code, signal); 'close' (code, signal) once it has exited and
 * both pipes have ended.
 */
export class SpawnedProcess extends EventEmitter {
  readonly pid: number | undefined;
  readonly stdout: Readable;
  readonly stderr: Readable;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  /** Whether a kill() delivered its signal. */
  killed = false;
  readonly spawnfile: string;
  readonly spawnargs: string[];
  private readonly handle: object | undefined;

  constructor(file: string, args: readonly string[], options: SpawnOptions = {}) {
    super();
    this.spawnfile = file;
    this.spawnargs = [file, ...args];
    const env = Object.entries(options.env ?? process.env)
      .filter((entry): entry is [string, string] => entry[1] !== undefined)
      .map(([name, value]) => `${name}=${value}`);
    let started: SpawnHandle;
    try {
      started = binding.spawn!(file, this.spawnargs, env, options.cwd ?? null, (code, signal) => this.onExit(code, signal));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (typeof code !== 'string' || !/^E[A-Z0-9]+$/.test(code)) throw error;
      // As node reports it: 'spawn runc ENOENT', asynchronously.
      const failure = Object.assign(new Error(`spawn ${file} ${code}`), {
        errno: (error as NodeJS.ErrnoException).errno,
        code,
        syscall: `spawn ${file}`,
        path: file,
        spawnargs: [...args],
      });
      this.stdout = Readable.from([]);
      this.stderr = Readable.from([]);
      process.nextTick(() => this.emit('error', failure));
      return;
    }
    this.pid = started.pid;
    this.handle = started.handle;
    const stdout = new Socket({ fd: started.stdout, readable: true, writable: false });
    const stderr = new Socket({ fd: started.stderr, readable: true, writable: false });
    this.stdout = stdout;
    this.stderr = stderr;
    let open = 2;
    const streamClosed = (): void => {
      open -= 1;
      this.maybeClose(open);
    };
    stdout.once('close', streamClosed);
    stderr.once('close', streamClosed);
    this.pending = () => this.maybeClose(open);
    process.nextTick(() => this.emit('spawn'));
  }

  private pending: (() => void) | undefined;

  private onExit(code: number | null, signal: number | null): void {
    this.exitCode = code;
    this.signalCode = signal === null ? null : (signalNames.get(signal) ?? null);
    this.emit('exit', this.exitCode, this.signalCode);
    this.pending?.();
  }

  private closed = false;

  private maybeClose(open: number): void {
    if (this.closed || open > 0 || (this.exitCode === null && this.signalCode === null)) return;
    this.closed = true;
    this.emit('close', this.exitCode, this.signalCode);
  }

  /** Sends `signal` (default SIGTERM) through the child's pidfd; false once it has exited or never started. */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.handle === undefined) return false;
    const number = typeof signal === 'number' ? signal : osConstants.signals[signal];
    if (number === undefined) throw new TypeError(`unknown signal: ${String(signal)}`);
    const err = binding.kill!(this.handle, number);
    if (err === 0) {
      this.killed = true;
      return true;
    }
    if (err === osConstants.errno.ESRCH) return false;
    throw Object.assign(new Error(`kill ${this.pid ?? ''}: errno ${err}`), { errno: -err, syscall: 'kill' });
  }
}

/**
 * Starts `file` (looked up on the PATH of `options.env`, as execvp does) with `args`, without
 * forking the worker: posix_spawn (clone(CLONE_VM|CLONE_VFORK)), whose cost does not grow with the
 * worker's memory as fork's does. stdin is /dev/null, stdout and stderr are pipes, no other
 * descriptor is inherited, the signal mask and dispositions are the defaults (node's ignored
 * SIGPIPE is not). docs/adr/0039.
 */
export function spawn(file: string, args: readonly string[], options: SpawnOptions = {}): SpawnedProcess {
  if (!nativeSpawnAvailable) throw new Error('@strata/native: this build of the addon has no spawn (rebuild it)');
  return new SpawnedProcess(file, args, options);
}

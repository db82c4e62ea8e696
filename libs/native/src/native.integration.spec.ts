// The addon's syscalls against the real kernel (root: mounts, trusted.* xattrs, device nodes).
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, idmappedBindMount, lgetxattr, lgetxattrs, llistxattr, lremovexattr, lsetxattr, mknod, mount, umount, writeFiles } from '@strata/native';

const mounted = (path: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === path);

describe('@strata/native', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'strata-native-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('round-trips binary xattr values on a name that is not UTF-8, and on a symlink itself', () => {
    const name = Buffer.concat([Buffer.from(`${dir}/caf`), Buffer.from([0xe9, 0xff])]);
    writeFileSync(name, 'x');
    const value = Buffer.from([0x00, 0xff, 0x10, 0x0a, 0x00]);
    lsetxattr(name, 'user.bin', value);
    lsetxattr(name, 'trusted.overlay.opaque', 'y');
    expect(llistxattr(name).sort()).toEqual(['trusted.overlay.opaque', 'user.bin']);
    expect(lgetxattr(name, 'user.bin').equals(value)).toBe(true);
    expect(lgetxattrs(name)).toEqual({ 'user.bin': value, 'trusted.overlay.opaque': Buffer.from('y') });
    lsetxattr(name, 'user.empty', Buffer.alloc(0));
    expect(lgetxattr(name, 'user.empty').length).toBe(0);
    lremovexattr(name, 'user.empty');
    expect(llistxattr(name)).not.toContain('user.empty');

    // A dangling symlink: its own xattrs (trusted.* is allowed on symlinks), never its target's.
    symlinkSync('/nonexistent/target', join(dir, 'link'));
    expect(llistxattr(join(dir, 'link'))).toEqual([]);
    lsetxattr(join(dir, 'link'), 'trusted.note', Buffer.from([1, 2]));
    expect([...lgetxattr(join(dir, 'link'), 'trusted.note')]).toEqual([1, 2]);
    writeFileSync(join(dir, 'plain'), '');
    expect(lgetxattrs(join(dir, 'plain'))).toBeNull();
  });

  it('throws errors carrying the errno code, syscall and path', () => {
    const missing = join(dir, 'missing');
    expect(() => llistxattr(missing)).toThrow(expect.objectContaining({ code: 'ENOENT', errno: -2, syscall: 'llistxattr', path: missing }));
    writeFileSync(join(dir, 'f'), '');
    expect(() => lgetxattr(join(dir, 'f'), 'user.none')).toThrow(expect.objectContaining({ code: 'ENODATA', syscall: 'lgetxattr' }));
    expect(() => lgetxattr(join(dir, 'f'), 'user.none')).toThrow(/^ENODATA: no data available, lgetxattr '.*\/f'$/);
    lsetxattr(join(dir, 'f'), 'user.a', 'x');
    expect(() => lsetxattr(join(dir, 'f'), 'user.a', 'y', constants.XATTR_CREATE)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(() => llistxattr(`${dir}/a\0b`)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => llistxattr(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('mounts and unmounts a tmpfs, and rejects with EINVAL/EBUSY codes', async () => {
    const target = join(dir, 'm');
    mkdirSync(target);
    await mount('tmpfs', target, 'tmpfs', constants.MS_NOSUID | constants.MS_NODEV, 'size=1m,mode=0711');
    try {
      expect(mounted(target)).toBe(true);
      expect(statSync(target).mode & 0o7777).toBe(0o711);
      await expect(mount('tmpfs', join(dir, 'absent'), 'tmpfs', 0, null)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'mount', dest: join(dir, 'absent') });
      await expect(mount('none', target, 'no-such-fs', 0, null)).rejects.toMatchObject({ code: 'ENODEV' });
    } finally {
      await umount(target);
    }
    expect(mounted(target)).toBe(false);
    await expect(umount(target)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'umount2', path: target });
  });

  it('resolves relative paths against cwd without moving the process cwd', async () => {
    for (const name of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(dir, name));
    writeFileSync(join(dir, 'lower', 'from-lower'), 'l');
    const before = process.cwd();
    await mount('overlay', 'merged', 'overlay', 0, 'lowerdir=lower,upperdir=upper,workdir=work', { cwd: dir });
    try {
      expect(process.cwd()).toBe(before);
      expect(readFileSync(join(dir, 'merged', 'from-lower'), 'utf8')).toBe('l');
    } finally {
      await umount(join(dir, 'merged'));
    }
    await expect(mount('overlay', 'merged', 'overlay', 0, null, { cwd: join(dir, 'absent') })).rejects.toMatchObject({ code: 'ENOENT', syscall: 'chdir' });
  });

  it('detaches a busy mount lazily', async () => {
    const target = join(dir, 'm');
    mkdirSync(target);
    await mount('tmpfs', target, 'tmpfs', 0, 'size=1m');
    const holder = spawn('sleep', ['30'], { cwd: target, stdio: 'ignore' });
    try {
      await new Promise((resolve) => holder.once('spawn', resolve));
      await expect(umount(target)).rejects.toMatchObject({ code: 'EBUSY' });
      await umount(target, { detach: true });
      expect(mounted(target)).toBe(false);
    } finally {
      holder.kill();
    }
  });

  it('makes device nodes and fifos on names that are not UTF-8', () => {
    const name = Buffer.concat([Buffer.from(`${dir}/n`), Buffer.from([0xff])]);
    mknod(name, 'char-device', 0o600, 0, 0);
    const stats = statSync(name);
    expect(stats.isCharacterDevice() && stats.rdev === 0).toBe(true);
    mknod(join(dir, 'null'), 'char-device', 0o644, 1, 3);
    expect(statSync(join(dir, 'null')).rdev).toBe(0x103);
    mknod(join(dir, 'fifo'), 'fifo', 0o644);
    expect(statSync(join(dir, 'fifo')).isFIFO()).toBe(true);
    expect(() => mknod(join(dir, 'fifo'), 'fifo', 0o644)).toThrow(expect.objectContaining({ code: 'EEXIST', syscall: 'mknod' }));
  });

  it('bind-mounts a directory with its owners mapped through a user namespace', async () => {
    mkdirSync(join(dir, 'src'));
    mkdirSync(join(dir, 'dst'));
    writeFileSync(join(dir, 'src', 'f'), 'x');
    const holder = spawn('unshare', ['--user', 'sleep', '30'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => holder.once('spawn', resolve));
      // unshare has to have entered its namespace before the maps can be written.
      const ns = `/proc/${holder.pid}/ns/user`;
      const own = statSync('/proc/self/ns/user').ino;
      for (let i = 0; i < 100 && statSync(ns).ino === own; i++) await new Promise((resolve) => setTimeout(resolve, 10));
      writeFileSync(`/proc/${holder.pid}/uid_map`, '0 100000 65536');
      writeFileSync(`/proc/${holder.pid}/gid_map`, '0 100000 65536');
      await idmappedBindMount(join(dir, 'src'), join(dir, 'dst'), { pid: holder.pid! });
      try {
        // Host root's file seen through the mount belongs to the id host root maps to: 100000.
        expect(statSync(join(dir, 'src', 'f')).uid).toBe(0);
        expect(statSync(join(dir, 'dst', 'f'))).toMatchObject({ uid: 100000, gid: 100000 });
      } finally {
        await umount(join(dir, 'dst'));
      }
      await expect(idmappedBindMount(join(dir, 'src'), join(dir, 'absent'), { pid: holder.pid! })).rejects.toMatchObject({ code: 'ENOENT', syscall: 'move_mount' });
      // The initial namespace cannot be an idmapping.
      await expect(idmappedBindMount(join(dir, 'src'), join(dir, 'dst'), { path: '/proc/self/ns/user' })).rejects.toMatchObject({ code: 'EPERM', syscall: 'mount_setattr' });
    } finally {
      holder.kill();
    }
  });
  it('writes a batch of new files with their contents, modes, owners and mtimes, and stops at the first it must not write', async () => {
    const odd = Buffer.concat([Buffer.from(`${dir}/f-`), Buffer.from([0xe9, 0xff])]);
    const big = Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a);
    await writeFiles(
      [
        { path: join(dir, 'plain'), content: Buffer.from('hello'), mode: 0o644, uid: 0, gid: 0, mtimeMs: 1_600_000_000_123 },
        { path: join(dir, 'setuid'), content: Buffer.alloc(0), mode: 0o4755, uid: 1000, gid: 2000, mtimeMs: 1_500_000_000_000 },
        { path: odd, content: big, mode: 0o600, uid: 65534, gid: 65534, mtimeMs: 0 },
      ],
      { chown: true },
    );
    expect(readFileSync(join(dir, 'plain'), 'utf8')).toBe('hello');
    const plain = lstatSync(join(dir, 'plain'));
    expect([plain.mode & 0o7777, plain.uid, plain.gid, plain.mtimeMs]).toEqual([0o644, 0, 0, 1_600_000_000_123]);
    // The owner went on before the mode, which kept its set-uid bit.
    const setuid = lstatSync(join(dir, 'setuid'));
    expect([setuid.mode & 0o7777, setuid.uid, setuid.gid, setuid.size, setuid.atimeMs]).toEqual([0o4755, 1000, 2000, 0, 1_500_000_000_000]);
    expect(readFileSync(odd).equals(big)).toBe(true);
    expect(lstatSync(odd).uid).toBe(65534);

    // Without chown the files are the process's own.
    await writeFiles([{ path: join(dir, 'mine'), content: Buffer.from('x'), mode: 0o640, uid: 1000, gid: 1000, mtimeMs: 1000 }], { chown: false });
    expect(lstatSync(join(dir, 'mine')).uid).toBe(process.getuid!());

    // A link planted at a path is never followed, an existing file never overwritten: the batch stops there.
    symlinkSync(join(dir, 'plain'), join(dir, 'planted'));
    const failed = writeFiles(
      [
        { path: join(dir, 'before'), content: Buffer.from('1'), mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 },
        { path: join(dir, 'planted'), content: Buffer.from('through the link'), mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 },
        { path: join(dir, 'after'), content: Buffer.from('3'), mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 },
      ],
      { chown: true },
    );
    await expect(failed).rejects.toMatchObject({ code: 'EEXIST', syscall: 'open', path: join(dir, 'planted') });
    expect(readFileSync(join(dir, 'plain'), 'utf8')).toBe('hello');
    expect(existsSync(join(dir, 'before'))).toBe(true);
    expect(existsSync(join(dir, 'after'))).toBe(false);
    await expect(writeFiles([{ path: join(dir, 'no', 'such', 'dir'), content: Buffer.alloc(1), mode: 0o644, uid: 0, gid: 0, mtimeMs: 0 }], { chown: false })).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

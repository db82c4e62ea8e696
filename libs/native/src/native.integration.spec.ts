// The addon's syscalls against the real kernel (root: mounts, trusted.* xattrs, device nodes).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, idmappedBindMount, lgetxattr, lgetxattrs, llistxattr, lremovexattr, lsetxattr, mknod, mount, umount } from '@strata/native';

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
});

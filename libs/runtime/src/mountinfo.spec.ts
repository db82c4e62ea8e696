import { mountPointsUnder, parseMountinfo, readMountsSync } from './mountinfo.js';

// Lines as a hybrid-cgroup host shows them (proc(5)): optional fields before the " - " separator.
const SAMPLE = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro',
  '31 22 0:26 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,memory',
  '32 22 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct',
  '33 22 0:28 /strata /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate',
  '40 22 0:50 / /data/my\\040builds/snap/rootfs rw,relatime - overlay overlay rw,lowerdir=l/a,upperdir=u,workdir=w,volatile',
  '41 40 0:51 / /data/my\\040builds/snap/rootfs/proc rw - proc proc rw',
  '42 22 0:52 / /data/my\\040builds-other rw - tmpfs tmpfs rw',
  '',
].join('\n');

describe('parseMountinfo', () => {
  it('reads the mount point (escapes decoded), root, filesystem type and both option lists', () => {
    const mounts = parseMountinfo(SAMPLE);
    expect(mounts).toHaveLength(7);
    expect(mounts[1]).toEqual({ root: '/', mountPoint: '/sys/fs/cgroup/memory', mountOptions: ['rw', 'nosuid', 'nodev', 'noexec', 'relatime'], fstype: 'cgroup', superOptions: ['rw', 'memory'] });
    expect(mounts[3]).toMatchObject({ root: '/strata', mountPoint: '/sys/fs/cgroup/unified', fstype: 'cgroup2' });
    expect(mounts[4]).toMatchObject({ mountPoint: '/data/my builds/snap/rootfs', fstype: 'overlay' });
    expect(mounts[4]!.superOptions).toContain('volatile');
  });

  it('lists the mount points under a directory deepest first, not its siblings that share a prefix', () => {
    expect(mountPointsUnder(parseMountinfo(SAMPLE), '/data/my builds')).toEqual(['/data/my builds/snap/rootfs/proc', '/data/my builds/snap/rootfs']);
    expect(mountPointsUnder(parseMountinfo(SAMPLE), '/data/my builds/snap/rootfs')).toEqual(['/data/my builds/snap/rootfs/proc', '/data/my builds/snap/rootfs']);
  });

  it("reads this process's own table, which always has a root mount", () => {
    expect(readMountsSync().some((mount) => mount.mountPoint === '/')).toBe(true);
  });
});

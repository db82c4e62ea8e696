import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { resolveUser } from './user.js';

describe('resolveUser', () => {
  let rootfs: string;
  beforeEach(() => {
    rootfs = mkdtempSync(path.join(tmpdir(), 'strata-user-'));
    mkdirSync(path.join(rootfs, 'etc'));
    writeFileSync(path.join(rootfs, 'etc/passwd'), '# comment\nroot:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nsvc:x:1002:1002::/:/bin/sh\n');
    writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1001:\nwheel:x:10:app,svc\ndocker:x:999:app\nstaff:x:50:svc');
  });
  afterEach(() => rmSync(rootfs, { recursive: true, force: true }));

  it('resolves names and ids as Docker does: the primary group, supplementary groups by membership, home', async () => {
    expect(await resolveUser(rootfs, '')).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/root' });
    expect(await resolveUser(rootfs, 'app')).toEqual({ uid: 1000, gid: 1001, additionalGids: [10, 999], home: '/home/app' });
    expect(await resolveUser(rootfs, '1002')).toEqual({ uid: 1002, gid: 1002, additionalGids: [10, 50], home: '/' });
    expect(await resolveUser(rootfs, 'app:staff')).toEqual({ uid: 1000, gid: 50, additionalGids: [], home: '/home/app' });
    expect(await resolveUser(rootfs, '4242:7')).toEqual({ uid: 4242, gid: 7, additionalGids: [], home: '/' });
    expect(await resolveUser(rootfs, '4242')).toEqual({ uid: 4242, gid: 0, additionalGids: [], home: '/' });
    await expect(resolveUser(rootfs, 'nobody')).rejects.toThrow("unable to find user nobody: no matching entries in the image's /etc/passwd");
    await expect(resolveUser(rootfs, 'app:nogroup')).rejects.toThrow("unable to find group nogroup: no matching entries in the image's /etc/group");
  });

  it('works without /etc/passwd and /etc/group (FROM scratch)', async () => {
    rmSync(path.join(rootfs, 'etc'), { recursive: true });
    expect(await resolveUser(rootfs, '')).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/' });
    await expect(resolveUser(rootfs, 'app')).rejects.toThrow('unable to find user app');
  });

  it('takes a passwd that is not a regular file (a FIFO, a device node) as none, without waiting on it', async () => {
    rmSync(path.join(rootfs, 'etc/passwd'));
    execFileSync('mkfifo', [path.join(rootfs, 'etc/passwd')]);
    expect(await resolveUser(rootfs, '')).toEqual({ uid: 0, gid: 0, additionalGids: [], home: '/' });
    await expect(resolveUser(rootfs, 'app')).rejects.toThrow('unable to find user app');
    rmSync(path.join(rootfs, 'etc/passwd'));
    execFileSync('mknod', [path.join(rootfs, 'etc/passwd'), 'c', '1', '5']);
    await expect(resolveUser(rootfs, 'app')).rejects.toThrow('unable to find user app');
  });

  it('reads a passwd file of any size line by line: an entry after 64 MiB of others and one line of 4 MiB is found', async () => {
    const file = path.join(rootfs, 'etc/passwd');
    writeFileSync(file, `junk:${'x'.repeat(4 * 1024 * 1024)}\n`);
    const filler = Array.from({ length: 16_384 }, (_, i) => `u${i}:x:${20_000 + (i % 1000)}:100::/home/u:/bin/sh`).join('\n');
    for (let written = 0; written < 64 * 1024 * 1024; written += filler.length + 1) appendFileSync(file, `${filler}\n`);
    appendFileSync(file, 'late:x:31337:31337::/srv/late:/bin/sh\n');
    expect(await resolveUser(rootfs, 'late')).toEqual({ uid: 31337, gid: 31337, additionalGids: [], home: '/srv/late' });
  });
});

import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { api, type Stack, tarOf } from './stack.js';

/** A busybox root filesystem made from Debian's busybox-static, with root and an `app` user (1000). */
export function busyboxRootfs(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-busybox-'));
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin']) mkdirSync(path.join(dir, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  execFileSync('chroot', [dir, '/bin/busybox', '--install', '-s']);
  mkdirSync(path.join(dir, 'etc'));
  writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\napp:x:1000:\n');
  for (const d of ['root', 'tmp', 'home/app']) mkdirSync(path.join(dir, d), { recursive: true });
  chmodSync(path.join(dir, 'tmp'), 0o1777);
  chownSync(path.join(dir, 'home/app'), 1000, 1000);
  return dir;
}

/**
 * A busybox root filesystem laid out like Debian's merged /usr (/bin -> usr/bin, /sbin, /lib), with
 * the links and odd directories destinations meet in real images: a relative chain (l1 -> l2 ->
 * usr/share), an absolute link (abs -> /usr/local), and /opt 0700 owned 5:6.
 */
export function mergedUsrRootfs(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-usrmerge-'));
  for (const d of ['usr/bin', 'usr/sbin', 'usr/lib', 'usr/local', 'usr/share', 'etc', 'root', 'tmp', 'home/app', 'opt']) mkdirSync(path.join(dir, d), { recursive: true });
  for (const [link, target] of [['bin', 'usr/bin'], ['sbin', 'usr/sbin'], ['lib', 'usr/lib'], ['l1', 'l2'], ['l2', 'usr/share'], ['abs', '/usr/local']]) symlinkSync(target, path.join(dir, link));
  copyFileSync('/bin/busybox', path.join(dir, 'usr/bin/busybox'));
  chmodSync(path.join(dir, 'usr/bin/busybox'), 0o755);
  execFileSync('chroot', [dir, '/usr/bin/busybox', '--install', '-s']);
  writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\napp:x:1000:\n');
  chmodSync(path.join(dir, 'tmp'), 0o1777);
  chownSync(path.join(dir, 'home/app'), 1000, 1000);
  chmodSync(path.join(dir, 'opt'), 0o700);
  chownSync(path.join(dir, 'opt'), 5, 6);
  return dir;
}

/** Imports busyboxRootfs() into the tenant as `busybox:1`, as a user would (POST .../import), and checks it was stored. */
export async function importBusybox(stack: Stack, token: string): Promise<void> {
  const res = await api(stack, token, 'POST', '/v1/repositories/busybox/import?tag=1', tarOf(busyboxRootfs()), 'application/x-tar');
  if (res.status !== 201) throw new Error(`importing busybox answered ${res.status}: ${res.text}`);
}

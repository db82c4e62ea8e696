import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** One line of /proc/self/mountinfo (proc(5)), the fields the worker reads. */
export interface MountEntry {
  /** The mount's root within its filesystem (field 4): a bind mount's source, a cgroup namespace's root. */
  root: string;
  /** Where it is mounted, with the kernel's octal escapes (`\040` for a space) decoded. */
  mountPoint: string;
  /** Per-mount options (`rw,relatime`). */
  mountOptions: string[];
  fstype: string;
  /** Per-superblock options: the overlay's `volatile`, a cgroup v1 hierarchy's controllers. */
  superOptions: string[];
}

export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator < 0) continue;
    const fields = line.slice(0, separator).split(' ');
    const [fstype = '', , superOptions = ''] = line.slice(separator + 3).split(' ');
    entries.push({
      root: unescapeMountField(fields[3] ?? ''),
      mountPoint: unescapeMountField(fields[4] ?? ''),
      mountOptions: (fields[5] ?? '').split(','),
      fstype,
      superOptions: superOptions.split(','),
    });
  }
  return entries;
}

/** This process's mount table. */
export async function readMounts(): Promise<MountEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** This process's mount table, read synchronously (for exit paths and test teardown). */
export function readMountsSync(): MountEntry[] {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** Mount points at or under `dir`, deepest first: the order to unmount them in. */
export function mountPointsUnder(mounts: MountEntry[], dir: string): string[] {
  return mounts
    .map((mount) => mount.mountPoint)
    .filter((point) => point === dir || point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

function unescapeMountField(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

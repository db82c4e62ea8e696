import { lstatSync, statSync } from 'node:fs';
import { lstat, readdir, rmdir, unlink, utimes } from 'node:fs/promises';
import { posix } from 'node:path';
import { resolveInRootSync } from '@strata/oci';

/**
 * runc creates missing mount points (/proc, /etc/hosts, a bind mount's target...) in the rootfs,
 * which would put them into the step's layer. Like BuildKit's mount stub cleaner, record which of
 * them did not exist before the run and remove them afterwards, restoring the parent's mtime.
 */
export class MountStubs {
  private constructor(
    private readonly created: string[],
    private readonly parents: { path: string; atime: Date; mtime: Date }[],
  ) {}

  /** Synchronous: a few lstats per destination of the step's own mount list (ADR 0042's rule for bounded metadata calls). */
  static record(rootfs: string, destinations: readonly string[]): MountStubs {
    const missing = new Set<string>();
    const parents = new Map<string, { path: string; atime: Date; mtime: Date }>();
    for (const destination of destinations) {
      const parts = destination.split('/').filter(Boolean);
      for (let i = 1; i <= parts.length; i++) {
        const path = resolveInRootSync(rootfs, `/${parts.slice(0, i).join('/')}`);
        try {
          lstatSync(path);
        } catch {
          missing.add(path);
          const parent = posix.dirname(path);
          if (!missing.has(parent) && !parents.has(parent)) {
            const stats = statSync(parent, { throwIfNoEntry: false });
            if (stats) parents.set(parent, { path: parent, atime: stats.atime, mtime: stats.mtime });
          }
          break;
        }
      }
    }
    return new MountStubs([...missing], [...parents.values()]);
  }

  /** Removes stubs that are still empty (a step that wrote into one keeps it). */
  async clean(): Promise<void> {
    for (const path of this.created.sort((a, b) => b.length - a.length)) await removeEmptyTree(path);
    for (const parent of this.parents) await utimes(parent.path, parent.atime, parent.mtime).catch(() => undefined);
  }
}

async function removeEmptyTree(path: string): Promise<boolean> {
  let stats;
  try {
    stats = await lstat(path);
  } catch {
    return true;
  }
  if (stats.isDirectory()) {
    for (const name of await readdir(path)) if (!(await removeEmptyTree(posix.join(path, name)))) return false;
    await rmdir(path).catch(() => undefined);
    return true;
  }
  if (stats.isFile() && stats.size === 0) {
    await unlink(path);
    return true;
  }
  return false;
}

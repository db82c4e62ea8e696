import { lstatSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';

const MAX_SYMLINKS = 40;

/**
 * Resolves `path` inside `root` the way the container would see it: symlinks are followed,
 * but absolute targets and `..` are interpreted relative to `root`, so the result never
 * leaves it (a rootfs can hold `etc/passwd -> /host/secret`). Missing tails are kept as is.
 */
export async function resolveInRoot(root: string, path: string): Promise<string> {
  return resolveInRootSync(root, path);
}

/**
 * {@link resolveInRoot} without the thread pool: at most one lstat per component and one readlink
 * per link followed (40 at most), microseconds each on a local root, where each trip through the
 * pool waited behind the build's other work.
 */
export function resolveInRootSync(root: string, path: string): string {
  const pending = path.split('/').filter((part) => part !== '' && part !== '.');
  const resolved: string[] = [];
  let followed = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const candidate = posix.join(root, ...resolved, part);
    let isLink = false;
    try {
      isLink = lstatSync(candidate).isSymbolicLink();
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++followed > MAX_SYMLINKS) throw new Error(`too many levels of symbolic links resolving ${path} in the image`);
    const target = readlinkSync(candidate);
    if (target.startsWith('/')) resolved.length = 0;
    pending.unshift(...target.split('/').filter((p) => p !== '' && p !== '.'));
  }
  return posix.join(root, ...resolved);
}

/** Normalises an archive or container path to "a/b/c" and refuses `..` components. */
export function cleanRelativePath(path: string): string {
  const parts = path.split('/').filter((part) => part !== '' && part !== '.');
  if (parts.includes('..')) throw new Error(`path ${JSON.stringify(path)} contains ".."`);
  return parts.join('/');
}

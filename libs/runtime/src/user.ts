import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { resolveInRootSync } from '@strata/oci';

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Supplementary groups from /etc/group membership. */
  additionalGids: number[];
  /** From /etc/passwd; "/" when the user has no entry. */
  home: string;
}

export class UserResolutionError extends Error {
  override readonly name = 'UserResolutionError';
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

const NUMERIC = /^\d+$/;

/**
 * Resolves a Dockerfile USER value ("", "name", "uid", "uid:gid", "name:group", ...) against the
 * image's own /etc/passwd and /etc/group, read inside `rootfs` (symlinks cannot lead out of it).
 * Follows Docker: a numeric uid without a passwd entry runs with gid 0; a name must exist.
 */
export async function resolveUser(rootfs: string, spec: string): Promise<ResolvedUser> {
  // No USER: uid 0 even in images without /etc/passwd (FROM scratch).
  const trimmed = spec.trim() === '' ? '0' : spec.trim();
  const colon = trimmed.indexOf(':');
  const userPart = colon === -1 ? trimmed : trimmed.slice(0, colon);
  const groupPart = colon === -1 ? undefined : trimmed.slice(colon + 1);
  if (userPart === '' || groupPart === '') throw new UserResolutionError(`user ${JSON.stringify(spec)} is not of the form user[:group]`);

  // Both files are read line by line, keeping only the entries that match: a step may have written
  // either at any size, and the worker must not hold it whole.
  const numericUser = NUMERIC.test(userPart);
  let entry: PasswdEntry | undefined;
  await eachLine(rootfs, '/etc/passwd', (line) => {
    const candidate = parsePasswdLine(line);
    if (candidate === null || (numericUser ? candidate.uid !== Number(userPart) : candidate.name !== userPart)) return true;
    entry = candidate;
    return false;
  });
  let uid: number;
  if (numericUser) uid = Number(userPart);
  else {
    if (entry === undefined) throw new UserResolutionError(`unable to find user ${userPart}: no matching entries in the image's /etc/passwd`);
    uid = entry.uid;
  }
  if (uid > 0xffffffff - 1) throw new UserResolutionError(`uid ${uid} is out of range`);

  let gid = entry?.gid ?? 0;
  const additional = new Set<number>();
  const member = groupPart === undefined ? entry?.name : undefined;
  if (groupPart !== undefined && NUMERIC.test(groupPart)) gid = Number(groupPart);
  else if (groupPart !== undefined || member !== undefined) {
    let group: GroupEntry | undefined;
    await eachLine(rootfs, '/etc/group', (line) => {
      const candidate = parseGroupLine(line);
      if (candidate === null) return true;
      if (member !== undefined) {
        if (candidate.gid !== gid && candidate.members.includes(member)) additional.add(candidate.gid);
        return true;
      }
      if (candidate.name !== groupPart) return true;
      group = candidate;
      return false;
    });
    if (groupPart !== undefined) {
      if (group === undefined) throw new UserResolutionError(`unable to find group ${groupPart}: no matching entries in the image's /etc/group`);
      gid = group.gid;
    }
  }
  return { uid, gid, additionalGids: [...additional], home: entry?.home || '/' };
}

/** Longest line kept whole (a group of thousands of members); a longer one is skipped, never held. */
const MAX_LINE_CHARS = 1024 * 1024;

/** A passwd or group file up to this size is read whole, synchronously (ADR 0042); a bigger one is streamed. */
const READ_WHOLE_BYTES = 64 * 1024;

/** Calls `each` with every line of a file of the image until it answers false; nothing when the file does not exist. */
async function eachLine(rootfs: string, path: string, each: (line: string) => boolean): Promise<void> {
  const resolved = resolveInRootSync(rootfs, path);
  const small = readSmallFile(resolved);
  if (small === null) return;
  if (small !== undefined) {
    const lines = small.split('\n');
    const last = lines.pop()!;
    for (const line of lines) if (!each(line)) return;
    if (last !== '') each(last);
    return;
  }
  let handle: FileHandle;
  try {
    handle = await open(resolved, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  const input = handle.createReadStream({ encoding: 'utf8', highWaterMark: 64 * 1024 });
  try {
    let rest = '';
    let skipping = false;
    for await (const chunk of input) {
      const text = rest + (chunk as string);
      let at = 0;
      for (let nl = text.indexOf('\n'); nl !== -1; nl = text.indexOf('\n', at)) {
        if (!skipping && !each(text.slice(at, nl))) return;
        skipping = false;
        at = nl + 1;
      }
      rest = text.slice(at);
      if (rest.length > MAX_LINE_CHARS) {
        rest = '';
        skipping = true;
      }
    }
    if (!skipping && rest !== '') each(rest);
  } finally {
    input.destroy();
    await handle.close().catch(() => undefined);
  }
}

/**
 * The file's text when it is a regular file of at most READ_WHOLE_BYTES; undefined for a bigger
 * one (stream it); null when there is none. Anything but a regular file counts as none: a FIFO
 * would hang the reader, and a device node in a layer would be the worker's own device.
 */
function readSmallFile(path: string): string | null | undefined {
  let fd: number;
  try {
    // Non-blocking: a FIFO at the path must not hold the worker's main thread (it is then streamed, as before).
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    const stats = fstatSync(fd);
    if (!stats.isFile()) return null;
    if (stats.size > READ_WHOLE_BYTES) return undefined;
    const buffer = Buffer.alloc(stats.size + 1);
    const length = readSync(fd, buffer, 0, buffer.length, 0);
    // Grown past the limit since the fstat: stream it instead.
    return length > stats.size ? undefined : buffer.toString('utf8', 0, length);
  } finally {
    closeSync(fd);
  }
}

function parsePasswdLine(line: string): PasswdEntry | null {
  const fields = line.split(':');
  if (fields.length < 7 || line.startsWith('#') || !NUMERIC.test(fields[2]!) || !NUMERIC.test(fields[3]!)) return null;
  return { name: fields[0]!, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]! };
}

function parseGroupLine(line: string): GroupEntry | null {
  const fields = line.split(':');
  if (fields.length < 4 || line.startsWith('#') || !NUMERIC.test(fields[2]!)) return null;
  return { name: fields[0]!, gid: Number(fields[2]), members: fields[3]!.split(',').filter(Boolean) };
}

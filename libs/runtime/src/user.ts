import { readFile } from 'node:fs/promises';
import { resolveInRoot } from '@strata/oci';

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

  const passwd = parsePasswd(await readImageFile(rootfs, '/etc/passwd'));
  const groups = parseGroup(await readImageFile(rootfs, '/etc/group'));

  let entry: PasswdEntry | undefined;
  let uid: number;
  if (NUMERIC.test(userPart)) {
    uid = Number(userPart);
    entry = passwd.find((candidate) => candidate.uid === uid);
  } else {
    entry = passwd.find((candidate) => candidate.name === userPart);
    if (entry === undefined) {
      throw new UserResolutionError(`unable to find user ${userPart}: no matching entries in the image's /etc/passwd`);
    }
    uid = entry.uid;
  }
  if (uid > 0xffffffff - 1) throw new UserResolutionError(`uid ${uid} is out of range`);

  let gid = entry?.gid ?? 0;
  if (groupPart !== undefined) {
    if (NUMERIC.test(groupPart)) gid = Number(groupPart);
    else {
      const group = groups.find((candidate) => candidate.name === groupPart);
      if (group === undefined) throw new UserResolutionError(`unable to find group ${groupPart}: no matching entries in the image's /etc/group`);
      gid = group.gid;
    }
  }
  const additionalGids =
    groupPart === undefined && entry !== undefined
      ? [...new Set(groups.filter((group) => group.members.includes(entry!.name) && group.gid !== gid).map((group) => group.gid))]
      : [];
  return { uid, gid, additionalGids, home: entry?.home || '/' };
}

async function readImageFile(rootfs: string, path: string): Promise<string> {
  try {
    return await readFile(await resolveInRoot(rootfs, path), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw error;
  }
}

function parsePasswd(text: string): PasswdEntry[] {
  const entries: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 7 || line.startsWith('#') || !NUMERIC.test(fields[2]!) || !NUMERIC.test(fields[3]!)) continue;
    entries.push({ name: fields[0]!, uid: Number(fields[2]), gid: Number(fields[3]), home: fields[5]! });
  }
  return entries;
}

function parseGroup(text: string): GroupEntry[] {
  const entries: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields.length < 4 || line.startsWith('#') || !NUMERIC.test(fields[2]!)) continue;
    entries.push({ name: fields[0]!, gid: Number(fields[2]), members: fields[3]!.split(',').filter(Boolean) });
  }
  return entries;
}

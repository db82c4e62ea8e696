// TEMPORARY until wip/native (@strata/native) is merged: the same signatures, made with processes.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

export type UsernsRef = { pid: number } | { path: string } | { fd: number };

const run = promisify(execFile);

export async function mount(source: string | null, target: string, fstype: string | null, _flags = 0, data: string | null = null): Promise<void> {
  await run('mount', [...(fstype ? ['-t', fstype] : ['--bind']), ...(data ? ['-o', data] : []), source ?? 'none', target]);
}

export async function umount(target: string, options: { detach?: boolean } = {}): Promise<void> {
  await run('umount', [...(options.detach ? ['-l'] : []), target]);
}

export async function idmappedBindMount(source: string, target: string, userns: UsernsRef, _options: { recursive?: boolean } = {}): Promise<void> {
  const path = 'fd' in userns ? `/proc/${process.pid}/fd/${userns.fd}` : 'pid' in userns ? `/proc/${userns.pid}/ns/user` : userns.path;
  await run('perl', [new URL('../../../bench/run-sandbox/idmap.pl', import.meta.url).pathname, path, source, target]);
}

export function llistxattr(path: string): string[] {
  const out = execFileSync('getfattr', ['-h', '-m', '-', '--absolute-names', path], { encoding: 'latin1' });
  return out.split('\n').filter((l) => l !== '' && !l.startsWith('#'));
}

export function lgetxattr(path: string, name: string): Buffer {
  const out = execFileSync('getfattr', ['-h', '-n', name, '-e', 'hex', '--absolute-names', path], { encoding: 'latin1' });
  const line = out.split('\n').find((l) => l.startsWith(`${name}=`));
  return Buffer.from(line!.slice(name.length + 3), 'hex');
}

export function lsetxattr(path: string, name: string, value: Buffer): void {
  execFileSync('setfattr', ['-h', '-n', name, '-v', `0x${value.toString('hex')}`, path]);
}

import { chmod, chown, mkdir, mkdtemp, rm, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { RunMountRequest } from '@strata/build-engine';
import { mount } from '@strata/native';
import type { StepCleanups } from './cache-mounts.js';
import type { RunMount } from './types.js';

const TMPFS_MAGIC = 0x01021994;

type SecretRequest = Extract<RunMountRequest, { type: 'secret' }>;
type FileRequest = Extract<RunMountRequest, { type: 'file' }>;

/**
 * `RUN --mount=type=secret`: secret files live on a tmpfs outside the rootfs (never on disk, never
 * in the upper dir) and are bind-mounted read-only; an `env=` secret replaces the variable of that
 * name. The runc bundles of steps with secrets go on the same tmpfs (`bundleDir`): their
 * config.json holds env= secrets.
 */
export class SecretMounts {
  constructor(readonly root: string) {}

  get bundleDir(): string {
    return path.join(this.root, 'runc');
  }

  /** Mounts the tmpfs when `root` is not one, and clears secret files a crashed worker left. Idempotent. */
  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    if ((await statfs(this.root)).type !== TMPFS_MAGIC) {
      await mount('tmpfs', this.root, 'tmpfs', 0, 'mode=0700,size=256m');
    }
    await rm(path.join(this.root, 'files'), { recursive: true, force: true });
    await mkdir(path.join(this.root, 'files'), { mode: 0o700 });
  }

  /**
   * The mounts and environment of a step's secrets, and its files made for the step (a `#!` heredoc
   * script, read-only, owned by root); the files go when the step's cleanups run. `idShift`: the
   * host id of the step's root when it runs in a user namespace (owners are shifted by it).
   */
  async prepare(secrets: SecretRequest[], files: FileRequest[], env: readonly string[], cleanups: StepCleanups, idShift = 0): Promise<{ mounts: RunMount[]; env: string[] }> {
    const mounts: RunMount[] = [];
    let stepEnv = [...env];
    if (secrets.length === 0 && files.length === 0) return { mounts, env: stepEnv };
    const dir = await mkdtemp(path.join(this.root, 'files', 'step-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    for (const [i, m] of files.entries()) {
      const file = path.join(dir, `file-${i}`);
      await writeFile(file, m.content, { mode: 0o600 });
      if (idShift !== 0) await chown(file, idShift, idShift);
      await chmod(file, m.mode);
      mounts.push({ type: 'bind', source: file, destination: m.target, readonly: true });
    }
    for (const [i, m] of secrets.entries()) {
      if (m.env !== null) {
        // The secret replaces an ENV or ARG of the same name rather than sitting beside it.
        const name = m.env;
        stepEnv = [...stepEnv.filter((e) => !e.startsWith(`${name}=`)), `${name}=${m.value.toString('utf8')}`];
      }
      if (m.target === null) continue;
      const file = path.join(dir, String(i));
      await writeFile(file, m.value, { mode: 0o600 });
      await chown(file, m.uid + idShift, m.gid + idShift);
      await chmod(file, m.mode);
      mounts.push({ type: 'bind', source: file, destination: m.target, readonly: true });
    }
    return { mounts, env: stepEnv };
  }
}

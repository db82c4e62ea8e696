import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCommand } from './command.js';

/**
 * crun's compiled seccomp filters, one per distinct `linux.seccomp` section, for the life of the
 * worker (docs/adr/0038). crun compiles the profile with libseccomp at every start (12 ms of its
 * 21 ms CPU per start here); upstream crun caches the result in its state directory, but only when
 * built with libgcrypt, which Debian's crun 1.8.1 is not. So the executor compiles each section
 * once, with crun itself: `crun create` of a probe container that never runs (an empty rootfs, no
 * cgroups), whose state directory then holds the filter crun made (`<root>/<id>/seccomp.bpf`),
 * and passes it to every later step in crun's `run.oci.seccomp_bpf_data` annotation, which makes
 * crun load those bytes instead of compiling. crun still takes the filter's flags and the mknod
 * agent's `listenerPath` from the spec, so only the rules come from the cache. The key is the
 * whole section except `listenerPath` (which is not part of the filter); the cache is in memory,
 * so a worker started after a crun, libseccomp or kernel upgrade compiles afresh. When the probe
 * fails, the step goes without the annotation and crun compiles as before.
 */
export class CrunSeccompCache {
  private readonly compiled = new Map<string, Promise<string | undefined>>();
  /** Probes a killed worker left (their init waits on crun's exec FIFO for good), deleted before the first probe. */
  private cleared: Promise<void> | undefined;

  constructor(
    private readonly crun: string,
    /** A directory of the worker's for the probe's bundle and state. */
    private readonly dir: string,
  ) {}

  /** Adds `run.oci.seccomp_bpf_data` to a spec with a seccomp section, once its filter is compiled. */
  async annotate(spec: Record<string, unknown>): Promise<void> {
    const linux = spec.linux as { seccomp?: Record<string, unknown> } | undefined;
    if (!linux?.seccomp) return;
    const bpf = await this.filterFor(linux.seccomp);
    if (bpf === undefined) return;
    spec.annotations = { ...(spec.annotations as Record<string, string> | undefined), 'run.oci.seccomp_bpf_data': bpf };
  }

  /** The compiled filter of a seccomp section, base64; undefined when crun could not compile it here. */
  filterFor(seccomp: Record<string, unknown>): Promise<string | undefined> {
    const { listenerPath: _listener, ...rules } = seccomp;
    const key = JSON.stringify(rules);
    let entry = this.compiled.get(key);
    if (!entry) {
      entry = this.compile(rules).catch(() => undefined);
      this.compiled.set(key, entry);
    }
    return entry;
  }

  private async compile(seccomp: Record<string, unknown>): Promise<string | undefined> {
    const id = `strata-seccomp-${randomBytes(6).toString('hex')}`;
    const bundle = join(this.dir, 'bundles', id);
    const root = join(this.dir, 'state');
    await (this.cleared ??= this.clearLeftovers(root));
    await mkdir(join(bundle, 'rootfs', 'dev'), { recursive: true });
    await mkdir(root, { recursive: true, mode: 0o700 });
    // crun checks the program exists at create time; it is never started.
    await writeFile(join(bundle, 'rootfs', 'never-runs'), '');
    await chmod(join(bundle, 'rootfs', 'never-runs'), 0o755);
    const config = {
      ociVersion: '1.0.2',
      process: { args: ['/never-runs'], cwd: '/', user: { uid: 0, gid: 0 }, env: [] },
      root: { path: 'rootfs' },
      mounts: [],
      linux: { namespaces: [{ type: 'mount' }], seccomp },
    };
    await writeFile(join(bundle, 'config.json'), JSON.stringify(config));
    try {
      // stdio ignored: the created container's init holds what it inherits until it is deleted.
      const code = await new Promise<number | null>((resolve, reject) => {
        const child = spawn(this.crun, ['--root', root, '--cgroup-manager=disabled', 'create', '--bundle', bundle, id], { stdio: 'ignore' });
        child.once('error', reject);
        child.once('exit', resolve);
      });
      if (code !== 0) return undefined;
      const filter = await readFile(join(root, id, 'seccomp.bpf'));
      return filter.length > 0 ? filter.toString('base64') : undefined;
    } finally {
      await this.remove(root, id);
      await rm(bundle, { recursive: true, force: true });
    }
  }

  /**
   * Ends a probe: crun 1.8.1's `delete --force` of a container that was created and never started
   * removes its state but leaves its init process waiting on the exec FIFO for good (measured: one
   * such process per probe, a few hundred after a day of test runs); `kill` reaches it first.
   */
  private async remove(root: string, id: string): Promise<void> {
    await this.crunQuiet(['--root', root, 'kill', id, 'KILL']);
    await this.crunQuiet(['--root', root, 'delete', '--force', id]);
  }

  private async clearLeftovers(root: string): Promise<void> {
    const ids = await readdir(root).catch(() => [] as string[]);
    for (const id of ids.filter((name) => name.startsWith('strata-seccomp-'))) await this.remove(root, id);
    await rm(join(this.dir, 'bundles'), { recursive: true, force: true });
  }

  /** A crun command whose failure changes nothing (the probe may be gone already). */
  private async crunQuiet(args: string[]): Promise<void> {
    await runCommand(this.crun, args).catch(() => undefined);
  }
}

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { removeContainerCgroups } from '@strata/runtime';

const run = promisify(execFile);

export interface Leftovers {
  /** runc or crun containers a killed worker left running (their RUN steps go on without it). */
  containers: string[];
  /** Build work directories of builds it was running. */
  workDirs: number;
}

/**
 * Clears what a worker killed on this data directory left behind, before this one takes builds:
 * its runc and crun containers (still running: the container outlives a SIGKILLed worker and its
 * runtime process) are killed and deleted, with their cgroups (the runtime's own, and those Strata
 * made for a parked crun, which the runtime leaves alone), and its build directories removed.
 * Snapshots (overlay mounts), spool files, secret files and RUN networks (namespaces, veths,
 * firewall rules) are cleared by their owners on start (LayerStore.init, BlobLayerSink,
 * WorkerRuntime.init, which calls BridgeNetwork.init). A data directory belongs to one worker at a
 * time.
 */
export async function clearLeftovers(dataDir: string): Promise<Leftovers> {
  const runtimeRoot = path.resolve(dataDir, 'runtime');
  // The same places WorkerRuntime gives its two executors (the second for steps with secrets, on tmpfs), for
  // each runtime a worker on this data directory may have used (STRATA_RUN_RUNTIME=auto picks crun or runc).
  const secretsRoot = path.join('/dev/shm', `strata-${createHash('sha256').update(runtimeRoot).digest('hex').slice(0, 12)}`, 'runc');
  const containers: string[] = [];
  for (const runtime of ['runc', 'crun']) {
    for (const root of [path.join(runtimeRoot, runtime), path.join(secretsRoot, runtime)]) {
      let ids: string[];
      try {
        ids = (await run(runtime, ['--root', root, 'list', '-q'])).stdout.split('\n').filter((id) => id.trim() !== '');
      } catch {
        continue; // no such root (or runtime): nothing ran there
      }
      for (const id of ids) {
        await run(runtime, ['--root', root, 'kill', id, 'KILL']).catch(() => undefined);
        await run(runtime, ['--root', root, 'delete', '--force', id]).catch(() => undefined);
        await removeContainerCgroups(id).catch(() => undefined);
        containers.push(id);
      }
    }
  }
  const buildsDir = path.resolve(dataDir, 'builds');
  const workDirs = await readdir(buildsDir).catch(() => [] as string[]);
  await rm(buildsDir, { recursive: true, force: true });
  return { containers, workDirs: workDirs.length };
}

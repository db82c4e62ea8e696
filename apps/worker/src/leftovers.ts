import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Leftovers {
  /** runc containers a killed worker left running (their RUN steps go on without it). */
  containers: string[];
  /** Build work directories of builds it was running. */
  workDirs: number;
}

/**
 * Clears what a worker killed on this data directory left behind, before this one takes builds:
 * its runc containers (still running: `runc run` outlives a SIGKILLed parent) are killed and
 * deleted, which also frees their cgroups, and its build directories removed. Snapshots (overlay
 * mounts), spool files, secret files and RUN networks (namespaces, veths, firewall rules) are
 * cleared by their owners on start (LayerStore.init, BlobLayerSink, WorkerRuntime.init, which calls
 * BridgeNetwork.init). A data directory belongs to one worker at a time.
 */
export async function clearLeftovers(dataDir: string): Promise<Leftovers> {
  const runtimeRoot = path.resolve(dataDir, 'runtime');
  // The same places WorkerRuntime gives its two runc executors (the second for steps with secrets, on tmpfs).
  const runcRoots = [path.join(runtimeRoot, 'runc'), path.join('/dev/shm', `strata-${createHash('sha256').update(runtimeRoot).digest('hex').slice(0, 12)}`, 'runc', 'runc')];
  const containers: string[] = [];
  for (const root of runcRoots) {
    let ids: string[];
    try {
      ids = (await run('runc', ['--root', root, 'list', '-q'])).stdout.split('\n').filter((id) => id.trim() !== '');
    } catch {
      continue; // no such root: nothing ran there
    }
    for (const id of ids) {
      await run('runc', ['--root', root, 'kill', id, 'KILL']).catch(() => undefined);
      await run('runc', ['--root', root, 'delete', '--force', id]).catch(() => undefined);
      containers.push(id);
    }
  }
  const buildsDir = path.resolve(dataDir, 'builds');
  const workDirs = await readdir(buildsDir).catch(() => [] as string[]);
  await rm(buildsDir, { recursive: true, force: true });
  return { containers, workDirs: workDirs.length };
}

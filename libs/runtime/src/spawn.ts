import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { nativeSpawnAvailable, spawn as nativeSpawn } from '@strata/native';

/**
 * The part of node's ChildProcess the worker uses, for a child whose stdin is /dev/null and whose
 * stdout and stderr are pipes. Events: 'error' (could not start), 'exit' and 'close' (code, signal).
 */
export interface PipedChild extends EventEmitter {
  readonly pid?: number | undefined;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  kill(signal?: NodeJS.Signals | number): boolean;
}

export interface SpawnPipedOptions {
  cwd?: string;
  /** The child's whole environment (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Whether children start through the addon's posix_spawn (docs/adr/0039): yes when the addon has
 * it, unless STRATA_NATIVE_SPAWN=0 (read at each start: a benchmark compares both in one process).
 */
export function nativeSpawnEnabled(): boolean {
  return nativeSpawnAvailable && process.env['STRATA_NATIVE_SPAWN'] !== '0';
}

/**
 * Starts a host tool (runc, nsenter...) with stdout and stderr piped. Through the addon, the worker
 * is not forked: node's child_process forks, which stops the main thread for a time that grows with
 * the worker's resident memory (~10 ms at 250 MB, ~30 ms at 650 MB); posix_spawn's clone(CLONE_VM|
 * CLONE_VFORK) costs the same at any size. child_process is the fallback.
 */
export function spawnPiped(file: string, args: readonly string[], options: SpawnPipedOptions = {}): PipedChild {
  if (nativeSpawnEnabled()) return nativeSpawn(file, args, options);
  const child: ChildProcess = nodeSpawn(file, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.env !== undefined ? { env: options.env } : {}),
  });
  return child as ChildProcess & { stdout: Readable; stderr: Readable };
}

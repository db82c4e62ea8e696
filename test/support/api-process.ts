import { createServer } from 'node:net';
import type { StrataConfig } from '@strata/config';
import { type NodeProcess, startNodeProcess } from './node-process.js';
import { envOf } from './worker-process.js';

/** Part of the line apps/api/src/main.ts prints once it listens. */
const READY_TEXT = 'Strata api listening on';

/** An api as an OS process of its own (apps/api/src/main.ts run from source), as a deployment runs one. */
export interface ApiProcess extends Omit<NodeProcess, 'stop'> {
  url: string;
  /** SIGTERM (a graceful close), SIGKILL after graceMs (default 15 s). Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/** A port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts `node --import ./bench/support/register-ts.mjs apps/api/src/main.ts` with `config`'s
 * settings (the same Postgres, Redis, bucket and queue prefix as the stack), on `port`, with `env` on top.
 */
export function startApiProcess(config: StrataConfig, port: number, env: Record<string, string> = {}): ApiProcess {
  const url = `http://127.0.0.1:${port}`;
  const proc = startNodeProcess({
    name: 'api process',
    entry: 'apps/api/src/main.ts',
    env: { ...process.env, ...envOf({ ...config, port, host: '127.0.0.1', publicUrl: url }), ...env },
    readyText: READY_TEXT,
  });
  return { ...proc, url, stop: (graceMs = 15_000) => proc.stop(graceMs) };
}

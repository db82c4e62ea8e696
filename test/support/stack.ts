import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { INestApplication } from '@nestjs/common';
import { createApiApp } from '../../apps/api/src/app.js';
import { startWorker } from '../../apps/worker/src/main.js';
import { loadConfig, type StrataConfig } from '@strata/config';
import { createPrismaClient, createTenantWithToken, hashToken, newTokenSecret, type PrismaClient } from '@strata/db';

/** The api and a worker in this process against the services `npm test` started, as a user's deployment. */
export interface Stack {
  url: string;
  config: StrataConfig;
  prisma: PrismaClient;
  app: INestApplication;
  close(): Promise<void>;
  /** A new tenant with an admin token. */
  tenant(prefix?: string): Promise<{ tenantId: string; tokenId: string; token: string; name: string }>;
  /** The operator's token (reaches /v1/admin). */
  operatorToken: string;
}

export async function startStack(opts: { worker?: boolean; env?: Record<string, string> } = {}): Promise<Stack> {
  // Each stack pairs its api with its own worker: a queue prefix of its own keeps other suites' workers
  // (which may run with other settings) from taking its builds.
  const queuePrefix = `${process.env.STRATA_QUEUE_PREFIX ?? 'strata-test'}-${randomBytes(3).toString('hex')}`;
  // And a data directory of its own: a worker owns its directory (it clears what a crashed worker left there).
  const dataRoot = process.env.STRATA_DATA_DIR ?? tmpdir();
  mkdirSync(dataRoot, { recursive: true });
  const dataDir = mkdtempSync(path.join(dataRoot, 'worker-'));
  const operatorToken = newTokenSecret('operator');
  const config = loadConfig({
    ...process.env,
    STRATA_OPERATOR_TOKEN_SHA256: hashToken(operatorToken),
    // Tests poll builds every 100 ms with one token; the rate-limit suite sets its own limits.
    STRATA_RATE_LIMIT_TOKEN_PER_MINUTE: '1000000',
    STRATA_RATE_LIMIT_TENANT_PER_MINUTE: '1000000',
    STRATA_RATE_LIMIT_OIDC_PER_MINUTE: '1000000',
    PORT: '0',
    HOST: '127.0.0.1',
    STRATA_QUEUE_PREFIX: queuePrefix,
    STRATA_DATA_DIR: dataDir,
    ...opts.env,
  });
  const app = await createApiApp(config, { logger: false });
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as { port: number };
  const url = `http://127.0.0.1:${address.port}`;
  // The port is known only now; the registry's auth challenges name this URL.
  config.publicUrl = url;
  const worker = opts.worker === false ? null : await startWorker(config);
  const prisma = createPrismaClient(config.databaseUrl);
  let n = 0;
  return {
    url,
    config,
    prisma,
    app,
    operatorToken,
    async close() {
      await worker?.close();
      await app.close();
      await prisma.$disconnect();
      // Unpacked layers and snapshots are unmounted by now; the files can go.
      await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
    },
    async tenant(prefix = 't') {
      const name = `${prefix}-${process.pid}-${Date.now()}-${n++}`;
      const created = await createTenantWithToken(prisma, name);
      return { ...created, name };
    },
  };
}

/** Writes files into a fresh directory: { 'path': 'content' } or { 'path': { content, mode } }. */
export function makeDir(files: Record<string, string | { content: string; mode?: number; symlink?: string }>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-ctx-'));
  for (const [rel, spec] of Object.entries(files)) {
    const abs = path.join(dir, rel);
    mkdirSync(path.dirname(abs), { recursive: true });
    if (typeof spec === 'string') writeFileSync(abs, spec);
    else if (spec.symlink) execFileSync('ln', ['-s', spec.symlink, abs]);
    else {
      writeFileSync(abs, spec.content);
      if (spec.mode !== undefined) chmodSync(abs, spec.mode);
    }
  }
  return dir;
}

/** A tar of a directory as CI would send it (GNU tar). */
export function tarOf(dir: string, gzip = false): Buffer {
  return execFileSync('tar', [gzip ? '-czf' : '-cf', '-', '-C', dir, '.'], { maxBuffer: 1024 ** 3 });
}

export async function api(stack: Stack, token: string | null, method: string, pathAndQuery: string, body?: Buffer | string, contentType?: string) {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (contentType) headers['content-type'] = contentType;
  const res = await fetch(`${stack.url}${pathAndQuery}`, { method, headers, body });
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: res.status, json, text, headers: res.headers };
}

/** Submits a build and waits for it to finish; returns the final build JSON. */
export async function build(stack: Stack, token: string, query: string, context: Buffer, contentType = 'application/x-tar') {
  const res = await api(stack, token, 'POST', `/v1/builds?${query}`, context, contentType);
  if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${res.text}`);
  return waitForBuild(stack, token, res.json.id);
}

export async function waitForBuild(stack: Stack, token: string, id: string, timeoutMs = 90_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const res = await api(stack, token, 'GET', `/v1/builds/${id}`);
    if (['succeeded', 'failed', 'cancelled'].includes(res.json?.status)) return res.json;
    if (Date.now() > until) throw new Error(`build ${id} still ${res.json?.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { loadConfig, type StrataConfig } from '@strata/config';
import { mountPointsUnder, readMountsSync, removeContainerCgroups } from '@strata/runtime';
import { type NodeProcess, startNodeProcess } from './node-process.js';

/** What apps/worker/src/bin.ts prints once it consumes the builds queue. */
const READY_LINE = 'Strata worker consuming the builds queue';

/**
 * The environment that makes loadConfig() give back `config` (the inverse of libs/config), so a
 * worker process reaches the same Postgres, Redis, S3 bucket and queue prefix, and holds the same
 * registry secret and secrets key, as the stack's api.
 */
export function envOf(config: StrataConfig): Record<string, string> {
  const env: Record<string, string> = {
    PORT: String(config.port),
    HOST: config.host,
    PUBLIC_URL: config.publicUrl,
    DATABASE_URL: config.databaseUrl,
    REDIS_URL: config.redisUrl,
    S3_REGION: config.s3.region,
    S3_BUCKET: config.s3.bucket,
    S3_FORCE_PATH_STYLE: String(config.s3.forcePathStyle),
    STRATA_DATA_DIR: config.dataDir,
    STRATA_MAX_CONTEXT_BYTES: String(config.maxContextBytes),
    STRATA_MAX_CONTEXT_ENTRIES: String(config.maxContextEntries),
    STRATA_WORKER_CONCURRENCY: String(config.workerConcurrency),
    STRATA_SCHEDULING: config.scheduling,
    STRATA_RUN_NETWORK: config.run.network,
    STRATA_RUN_SUBNET: config.run.subnet,
    STRATA_RUN_MEMORY_BYTES: String(config.run.memoryBytes),
    STRATA_RUN_PIDS: String(config.run.pids),
    STRATA_RUN_CPUS: config.run.cpus === 0 ? '' : String(config.run.cpus),
    STRATA_RUN_STEP_TIMEOUT_MS: String(config.run.stepTimeoutMs),
    STRATA_BUILD_TIMEOUT_MS: String(config.run.buildTimeoutMs),
    STRATA_RUN_ALLOW_INSECURE: String(config.run.allowInsecure),
    STRATA_RUN_RUNTIME: config.run.runtime,
    STRATA_RUN_RUNSC_PLATFORM: config.run.runscPlatform,
    STRATA_QUEUE_PREFIX: config.queuePrefix,
    STRATA_REGISTRY_SECRET: config.registrySecret,
    STRATA_SECRETS_KEY: config.secretsKey.toString('base64'),
    STRATA_UPSTREAM_REGISTRY: config.pull.upstreamRegistry ?? 'none',
    STRATA_INSECURE_REGISTRIES: config.pull.insecureRegistries.join(','),
    STRATA_ALLOW_PRIVATE_SOURCES: config.allowPrivateSources.join(','),
    STRATA_PULL_TIMEOUT_MS: String(config.pull.responseTimeoutMs),
    STRATA_LOG_STEP_MAX_BYTES: String(config.log.stepMaxBytes),
    STRATA_LOG_BUILD_MAX_BYTES: String(config.log.buildMaxBytes),
    STRATA_LOG_LINE_MAX_BYTES: String(config.log.lineMaxBytes),
    STRATA_LOG_STREAM_TTL_SECONDS: String(config.log.streamTtlSeconds),
    STRATA_GC_INTERVAL_MS: String(config.gc.intervalMs),
    STRATA_GC_GRACE_MS: String(config.gc.graceMs),
    STRATA_CACHE_BUDGET_BYTES: String(config.gc.cacheBudgetBytes),
    STRATA_CACHE_MAX_IDLE_MS: String(config.gc.cacheMaxIdleMs),
    STRATA_WORKER_LAYERS_MAX_BYTES: String(config.gc.workerLayersMaxBytes),
    STRATA_OPERATOR_TOKEN_SHA256: config.operatorTokenHash ?? '',
    STRATA_RATE_LIMIT_TOKEN_PER_MINUTE: String(config.rateLimit.tokenPerMinute),
    STRATA_RATE_LIMIT_TENANT_PER_MINUTE: String(config.rateLimit.tenantPerMinute),
    STRATA_RATE_LIMIT_OIDC_PER_MINUTE: String(config.rateLimit.oidcPerMinute),
    STRATA_RECONCILE_INTERVAL_MS: String(config.reconcile.intervalMs),
    STRATA_WORKER_STALE_MS: String(config.reconcile.workerStaleMs),
    STRATA_BUILD_MAX_ATTEMPTS: String(config.reconcile.maxAttempts),
    STRATA_WORKER_DRAIN_MS: String(config.reconcile.drainMs),
  };
  if (config.s3.endpoint !== undefined) env.S3_ENDPOINT = config.s3.endpoint;
  if (config.s3.accessKeyId !== undefined) env.S3_ACCESS_KEY_ID = config.s3.accessKeyId;
  if (config.s3.secretAccessKey !== undefined) env.S3_SECRET_ACCESS_KEY = config.s3.secretAccessKey;
  if (config.storageDir !== undefined) env.STRATA_STORAGE_DIR = config.storageDir;
  // A setting added to libs/config but not here would silently differ between the api and the worker.
  const back = loadConfig(env);
  if (!isDeepStrictEqual(back, config)) {
    const differing = Object.keys(config).filter((k) => !isDeepStrictEqual(back[k as keyof StrataConfig], config[k as keyof StrataConfig]));
    throw new Error(`envOf() does not reproduce these config fields: ${differing.join(', ')}; map them to their environment variables`);
  }
  return env;
}

/** A worker as an OS process of its own (apps/worker/src/bin.ts run from source), as a deployment runs one. */
export interface WorkerProcess extends Omit<NodeProcess, 'stop'> {
  /** What the worker records in Build.workerId for the builds it runs (apps/worker/src/main.ts). */
  workerId: string;
  dataDir: string;
  /** SIGTERM (a graceful close), SIGKILL if it is still there after graceMs (default 20 s); then removes its data directory. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `node --import ./bench/support/register-ts.mjs apps/worker/src/bin.ts` (as bench/build-cache
 * does) with `config`'s settings and a fresh data directory of its own (or `opts.dataDir`).
 */
export function startWorkerProcess(config: StrataConfig, opts: { dataDir?: string } = {}): WorkerProcess {
  // The same root as startStack()'s data directories; or a killed worker's, to start again where it died.
  const dataRoot = process.env.STRATA_DATA_DIR ?? tmpdir();
  mkdirSync(dataRoot, { recursive: true });
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(dataRoot, 'worker-process-'));
  const proc = startNodeProcess({ name: 'worker process', entry: 'apps/worker/src/bin.ts', env: { ...process.env, ...envOf({ ...config, dataDir }) }, readyText: READY_LINE });
  let stopping: Promise<void> | null = null;
  return {
    ...proc,
    workerId: `${hostname()}:${proc.pid}`,
    dataDir,
    stop(graceMs = 20_000) {
      stopping ??= proc.stop(graceMs).then(async () => {
        await clearLeftovers(dataDir);
        await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
      });
      return stopping;
    },
  };
}

/**
 * What a worker killed mid-step leaves in its data directory and no worker will clear (nothing
 * starts on that directory again): its `runc run` outlives it, with the step's overlay and
 * idmapped mounts. The RUN containers are deleted with their cgroups and the mounts detached
 * (deepest first), so the directory can be removed and no test run leaves mounts behind.
 */
async function clearLeftovers(dataDir: string): Promise<void> {
  for (const runtime of ['runc', 'crun']) {
    const runtimeRoot = path.join(dataDir, 'runtime', runtime);
    const listed = spawnSync(runtime, ['--root', runtimeRoot, 'list', '-q'], { encoding: 'utf8' });
    for (const id of listed.status === 0 ? listed.stdout.split('\n').filter(Boolean) : []) {
      spawnSync(runtime, ['--root', runtimeRoot, 'delete', '--force', id], { stdio: 'ignore' });
      await removeContainerCgroups(id);
    }
  }
  const mounts = mountPointsUnder(readMountsSync(), dataDir).filter((point) => point !== dataDir);
  for (const p of mounts) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
}

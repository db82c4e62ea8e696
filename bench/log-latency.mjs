// Build log latency: from a line handed to the worker's BuildLog to the same line at an SSE client
// of GET /v1/builds/{id}/logs, while the writer produces 10,000 lines a second.
//   node bench/log-latency.mjs [--seconds 10] [--rate 10000]
// Starts (or reuses) PostgreSQL, Redis and S3 on 127.0.0.1 like `npm test`, runs the api as its own
// process, and writes and reads in this one (so both ends share a clock). Prints median and p95.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};

// The writer is TypeScript: re-run this script under the project's TS loader.
if (!process.env.STRATA_LOG_BENCH_CHILD) {
  const r = spawnSync(process.execPath, ['--import', './bench/support/register-ts.mjs', fileURLToPath(import.meta.url), ...args], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, STRATA_LOG_BENCH_CHILD: '1' },
  });
  process.exit(r.status ?? 1);
}

const seconds = opt('seconds', 10);
const rate = opt('rate', 10_000);
const warmupMs = 1000;
const { ensureServices, generatePrismaClient, migrate } = await import('../infra/local/services.mjs');
const { installSignalHandlers, portOpen, startProcess, stopAll, waitFor } = await import('./support/procs.mjs');
const log = (m) => process.stderr.write(`[bench:log-latency] ${m}\n`);

const env = { ...process.env, ...(await ensureServices({ database: 'strata_bench', bucket: 'strata-bench', redisDb: 2 })) };
Object.assign(process.env, env);
generatePrismaClient();
migrate(env);
installSignalHandlers(stopAll);

const port = 20000 + Math.floor(Math.random() * 20000);
const prefix = `strata-bench-logs-${process.pid}`;
const apiEnv = { ...env, PORT: String(port), HOST: '127.0.0.1', STRATA_QUEUE_PREFIX: prefix };
const apiProc = startProcess('strata-api', process.execPath, ['--import', './bench/support/register-ts.mjs', 'apps/api/src/main.ts'], {
  env: apiEnv,
  cwd: root,
  logFile: path.join(root, 'bench/results/log-latency-api.log'),
});

const { Redis } = await import('ioredis');
const { loadConfig } = await import('@strata/config');
const { createPrismaClient, createTenantWithToken } = await import('@strata/db');
const { storageFromConfig } = await import('@strata/blobstore');
const { redisConnection } = await import('@strata/queue');
const { BuildLog } = await import('../libs/queue/src/build-log-writer.ts');

try {
  await waitFor('the api', () => portOpen(port), 60_000, apiProc);
  const config = loadConfig(apiEnv);
  const prisma = createPrismaClient(config.databaseUrl);
  const { tenantId, token } = await createTenantWithToken(prisma, `bench-logs-${process.pid}-${Date.now()}`);
  const repo = await prisma.repository.create({ data: { tenantId, name: 'bench/logs' } });
  const build = await prisma.build.create({ data: { tenantId, repositoryId: repo.id, status: 'running', tags: [] } });
  const redis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
  const storage = await storageFromConfig(config.s3);
  const writer = new BuildLog({
    redis,
    objects: storage.objects,
    queuePrefix: prefix,
    buildId: build.id,
    limits: { stepMaxBytes: 1024 ** 3, buildMaxBytes: 1024 ** 3, lineMaxBytes: 16 * 1024 },
    streamTtlSeconds: 60,
  });
  const now = () => performance.timeOrigin + performance.now();

  // The SSE client.
  const latencies = [];
  let received = 0;
  const res = await fetch(`http://127.0.0.1:${port}/v1/builds/${build.id}/logs`, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
  });
  if (res.status !== 200) throw new Error(`the logs endpoint answered ${res.status}`);
  const reading = (async () => {
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      const at = now();
      buf += decoder.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (block.includes('event: end')) return;
        const m = /"line":"seq=(\d+) t=([\d.]+)"/.exec(block);
        if (!m) continue;
        received++;
        const sent = Number(m[2]);
        if (sent - start >= warmupMs) latencies.push(at - sent);
      }
    }
  })();

  // The producer: as a RUN step printing `rate` lines a second, in 1 ms ticks.
  log(`writing ${rate} lines/s for ${seconds} s (first ${warmupMs} ms not measured)`);
  const start = now();
  let written = 0;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(rate * seconds, Math.floor(((now() - start) / 1000) * rate));
      while (written < due) writer.line({ stage: 0, index: 0 }, 'stdout', `seq=${written++} t=${now().toFixed(3)}`);
      if (written >= rate * seconds) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  const elapsed = (now() - start) / 1000;
  await writer.finish('succeeded');
  await reading;

  const sorted = latencies.sort((a, b) => a - b);
  const pct = (p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  const result = {
    linesWritten: written,
    linesReceived: received,
    writeRatePerSec: Math.round(written / elapsed),
    measured: sorted.length,
    medianMs: Number(pct(50).toFixed(2)),
    p95Ms: Number(pct(95).toFixed(2)),
    p99Ms: Number(pct(99).toFixed(2)),
    maxMs: Number(sorted[sorted.length - 1].toFixed(2)),
  };
  console.log(JSON.stringify(result, null, 2));
  console.log(`median ${result.medianMs} ms, p95 ${result.p95Ms} ms at ${result.writeRatePerSec} lines/s (${received}/${written} lines received)`);
  await redis.quit();
  await prisma.$disconnect();
} finally {
  await stopAll();
}

// Load: BUILDS builds (default 200) from TENANTS tenants (default 5), submitted at once, round robin
// over two api processes, run by two worker processes, all sharing Postgres, Redis and S3. Checks
// that every build succeeded exactly once (Build.attempts = 1: no build lost or run twice) and
// reports builds per minute and queue wait (created → a worker took it) p50/p95, overall and per tenant.
// Run by `npm run bench -- --only load` (infra/local/bench.mjs), which provides the services' env.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installSignalHandlers, portOpen, reportAndExit, run, runAsync, runBench, startProcess, stopAll, waitFor } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BUILDS = Number(process.env.BENCH_LOAD_BUILDS ?? 200);
const TENANTS = Number(process.env.BENCH_LOAD_TENANTS ?? 5);
const API_PORTS = [Number(process.env.BENCH_API_PORT ?? 3311), Number(process.env.BENCH_API_PORT ?? 3311) + 1];
const SUBMIT_CONCURRENCY = 16;
const work = mkdtempSync(path.join(tmpdir(), 'strata-load-'));
const log = (m) => process.stderr.write(`[bench/load] ${m}\n`);
const result = { builds: BUILDS, tenants: TENANTS, apis: 2, workers: 2 };
const queuePrefix = `strata-load-${process.pid}`;

function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}

/** A small context per build: a Dockerfile that copies two files, one of them unique, so every build makes a layer. */
function context(dir, n) {
  const d = path.join(dir, `ctx-${n}`);
  run('mkdir', ['-p', d]);
  writeFileSync(path.join(d, 'Dockerfile'), 'FROM scratch\nCOPY shared.txt /shared.txt\nCOPY unique.txt /unique.txt\nCMD ["/unique.txt"]\n');
  writeFileSync(path.join(d, 'shared.txt'), 'the same in every build\n');
  writeFileSync(path.join(d, 'unique.txt'), `build ${n} of run ${process.pid}\n`);
  return run('tar', ['-cf', '-', '-C', d, '.'], { encoding: 'buffer' });
}

const status = await runBench(
  result,
  async () => {
    installSignalHandlers(stopAll);
    for (const p of API_PORTS) if (await portOpen(p)) throw new Error(`127.0.0.1:${p} is taken; set BENCH_API_PORT`);
    const loader = ['--import', './bench/support/register-ts.mjs'];
    const base = { ...process.env, HOST: '127.0.0.1', STRATA_QUEUE_PREFIX: queuePrefix, NODE_NO_WARNINGS: '1', STRATA_LOG_LEVEL: 'warn' };
    const apis = API_PORTS.map((port, i) => startProcess(`api-${i}`, process.execPath, [...loader, 'apps/api/src/main.ts'], { env: { ...base, PORT: String(port) }, cwd: root, logFile: path.join(work, `api-${i}.log`) }));
    for (let i = 0; i < 2; i++) {
      startProcess(`worker-${i}`, process.execPath, [...loader, 'apps/worker/src/bin.ts'], { env: { ...base, STRATA_DATA_DIR: path.join(work, `worker-${i}`) }, cwd: root, logFile: path.join(work, `worker-${i}.log`) });
    }
    const urls = API_PORTS.map((p) => `http://127.0.0.1:${p}`);
    for (const [i, url] of urls.entries()) await waitFor(`api ${i}`, async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok === true, 60000, apis[i]);
    const names = Array.from({ length: TENANTS }, (_, i) => `load-${process.pid}-${i}`);
    const tenants = JSON.parse(await runAsync(process.execPath, [...loader, 'bench/support/tenant.ts', ...names], { cwd: root, env: process.env }));
    const contexts = Array.from({ length: BUILDS }, (_, n) => context(work, n));
    log(`submitting ${BUILDS} builds from ${TENANTS} tenants over 2 apis`);
    const submitted = [];
    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: SUBMIT_CONCURRENCY }, async () => {
        while (next < BUILDS) {
          const n = next++;
          const t = tenants[n % TENANTS];
          const url = urls[n % 2];
          const res = await fetch(`${url}/v1/builds?repository=load&tag=b${n}`, { method: 'POST', headers: { authorization: `Bearer ${t.token}`, 'content-type': 'application/x-tar' }, body: contexts[n] });
          const body = await res.json();
          if (res.status !== 202) throw new Error(`build ${n} was refused: ${res.status} ${JSON.stringify(body)}`);
          submitted.push({ id: body.id, tenant: t.name, token: t.token, url });
        }
      }),
    );
    result.submitSeconds = (Date.now() - started) / 1000;
    log(`submitted in ${result.submitSeconds.toFixed(1)} s; waiting for them to finish`);
    const done = new Map();
    const deadline = Date.now() + 30 * 60 * 1000;
    while (done.size < submitted.length) {
      if (Date.now() > deadline) throw new Error(`${submitted.length - done.size} builds still not finished after 30 minutes`);
      for (const b of submitted) {
        if (done.has(b.id)) continue;
        const view = await (await fetch(`${b.url}/v1/builds/${b.id}`, { headers: { authorization: `Bearer ${b.token}` } })).json();
        if (['succeeded', 'failed', 'cancelled'].includes(view.status)) done.set(b.id, { ...b, view });
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const views = [...done.values()];
    const failed = views.filter((b) => b.view.status !== 'succeeded');
    if (failed.length > 0) throw new Error(`${failed.length} builds did not succeed, e.g. ${JSON.stringify(failed[0].view.error)}`);
    // None run twice: each build was claimed once (the reconciler and BullMQ never handed one to a second worker).
    const claims = run('psql', [process.env.DATABASE_URL, '-tAc', `SELECT attempts, count(*) FROM "Build" WHERE queue = '${queuePrefix}' GROUP BY attempts`]).trim();
    result.claims = claims;
    if (claims !== `1|${BUILDS}`) throw new Error(`builds claimed other than once each: ${claims}`);
    const t = (s) => new Date(s).getTime();
    const waits = views.map((b) => (t(b.view.startedAt) - t(b.view.createdAt)) / 1000);
    const first = Math.min(...views.map((b) => t(b.view.createdAt)));
    const last = Math.max(...views.map((b) => t(b.view.finishedAt)));
    result.wallSeconds = (last - first) / 1000;
    result.buildsPerMinute = (BUILDS / result.wallSeconds) * 60;
    result.queueWaitP50 = percentile(waits, 50);
    result.queueWaitP95 = percentile(waits, 95);
    result.buildP50 = percentile(views.map((b) => b.view.durationMs / 1000), 50);
    result.perTenant = names.map((name) => {
      const w = views.filter((b) => b.tenant === name).map((b) => (t(b.view.startedAt) - t(b.view.createdAt)) / 1000);
      return { tenant: name, builds: w.length, queueWaitP50: percentile(w, 50), queueWaitP95: percentile(w, 95) };
    });
    log(`${BUILDS} builds in ${result.wallSeconds.toFixed(1)} s: ${result.buildsPerMinute.toFixed(0)} builds/min, queue wait p50 ${result.queueWaitP50.toFixed(1)} s, p95 ${result.queueWaitP95.toFixed(1)} s`);
    return 0;
  },
  stopAll,
  log,
);
reportAndExit(result, status);

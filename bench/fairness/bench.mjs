// Fairness: a busy tenant submits BENCH_FAIR_BACKLOG builds (default 200) at once; while they run, a
// quiet tenant submits BENCH_FAIR_QUIET builds (default 5), spread over the backlog: the n-th once
// n * BACKLOG / (QUIET + 1) of the busy builds have started (whatever the scheduling, each arrives
// with the same part of the backlog still to run). Reports the quiet tenant's queue wait (created → a worker took it) and how many of
// the busy tenant's builds started between its submission and its start, once with
// STRATA_SCHEDULING=fifo (one line in arrival order, as before docs/adr/0023) and once with fair
// scheduling, on one api process and two worker processes (concurrency 2 each): 4 build slots.
// Checks that every build succeeded and was claimed exactly once in both modes.
// Run by `npm run bench -- --only fairness` (infra/local/bench.mjs), which provides the services' env.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { installSignalHandlers, median, portOpen, reportAndExit, run, runAsync, runBench, startProcess, stopAll, waitFor } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BACKLOG = Number(process.env.BENCH_FAIR_BACKLOG ?? 200);
const QUIET = Number(process.env.BENCH_FAIR_QUIET ?? 5);
const API_PORT = Number(process.env.BENCH_API_PORT ?? 3321);
const SUBMIT_CONCURRENCY = 16;
const MODES = (process.env.BENCH_FAIR_MODES ?? 'fifo,fair').split(',');
const work = mkdtempSync(path.join(tmpdir(), 'strata-fairness-'));
const log = (m) => process.stderr.write(`[bench/fairness] ${m}\n`);
const result = { backlog: BACKLOG, quietBuilds: QUIET, apis: 1, workers: 2, concurrency: 2, modes: {} };
const loader = ['--import', './bench/support/register-ts.mjs'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A small context: FROM scratch, one COPY of a file unique per build. */
function context(dir, name) {
  const d = path.join(dir, `ctx-${name}`);
  run('mkdir', ['-p', d]);
  writeFileSync(path.join(d, 'Dockerfile'), 'FROM scratch\nCOPY unique.txt /unique.txt\n');
  writeFileSync(path.join(d, 'unique.txt'), `${name} of run ${process.pid}\n`);
  return run('tar', ['-cf', '-', '-C', d, '.'], { encoding: 'buffer' });
}

async function submit(url, tenant, tag, body) {
  const res = await fetch(`${url}/v1/builds?repository=fair&tag=${tag}`, { method: 'POST', headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/x-tar' }, body });
  const json = await res.json();
  if (res.status !== 202) throw new Error(`build ${tag} was refused: ${res.status} ${JSON.stringify(json)}`);
  return { id: json.id, tenant };
}

async function finished(url, builds) {
  const done = new Map();
  const deadline = Date.now() + 30 * 60 * 1000;
  while (done.size < builds.length) {
    if (Date.now() > deadline) throw new Error(`${builds.length - done.size} builds still not finished after 30 minutes`);
    for (const b of builds) {
      if (done.has(b.id)) continue;
      const view = await (await fetch(`${url}/v1/builds/${b.id}`, { headers: { authorization: `Bearer ${b.tenant.token}` } })).json();
      if (['succeeded', 'failed', 'cancelled'].includes(view.status)) done.set(b.id, view);
    }
    await sleep(500);
  }
  return done;
}

async function measure(mode) {
  const queuePrefix = `strata-fair-${mode}-${process.pid}`;
  const base = { ...process.env, HOST: '127.0.0.1', STRATA_QUEUE_PREFIX: queuePrefix, STRATA_SCHEDULING: mode, NODE_NO_WARNINGS: '1', STRATA_LOG_LEVEL: 'warn' };
  if (await portOpen(API_PORT)) throw new Error(`127.0.0.1:${API_PORT} is taken; set BENCH_API_PORT`);
  const apiProc = startProcess(`api-${mode}`, process.execPath, [...loader, 'apps/api/src/main.ts'], { env: { ...base, PORT: String(API_PORT) }, cwd: root, logFile: path.join(work, `api-${mode}.log`) });
  for (let i = 0; i < 2; i++) {
    startProcess(`worker-${mode}-${i}`, process.execPath, [...loader, 'apps/worker/src/bin.ts'], { env: { ...base, STRATA_WORKER_CONCURRENCY: '2', STRATA_DATA_DIR: path.join(work, `worker-${mode}-${i}`) }, cwd: root, logFile: path.join(work, `worker-${mode}-${i}.log`) });
  }
  const url = `http://127.0.0.1:${API_PORT}`;
  await waitFor(`api (${mode})`, async () => (await fetch(`${url}/healthz`).catch(() => null))?.ok === true, 60000, apiProc);
  const [busy, quiet] = JSON.parse(await runAsync(process.execPath, [...loader, 'bench/support/tenant.ts', `busy-${mode}-${process.pid}`, `quiet-${mode}-${process.pid}`], { cwd: root, env: process.env }));
  const backlogBodies = Array.from({ length: BACKLOG }, (_, n) => context(work, `${mode}-busy-${n}`));
  const quietBodies = Array.from({ length: QUIET }, (_, n) => context(work, `${mode}-quiet-${n}`));
  log(`${mode}: the busy tenant submits ${BACKLOG} builds`);
  const backlog = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: SUBMIT_CONCURRENCY }, async () => {
      while (next < BACKLOG) {
        const n = next++;
        backlog.push(await submit(url, busy, `b${n}`, backlogBodies[n]));
      }
    }),
  );
  log(`${mode}: backlog queued; the quiet tenant submits ${QUIET} builds spread over it`);
  const busyStarted = () => Number(run('psql', [process.env.DATABASE_URL, '-tAc', `SELECT count(*) FROM "Build" b JOIN "Tenant" t ON t.id = b."tenantId" WHERE t.name = '${busy.name}' AND b."startedAt" IS NOT NULL`]).trim());
  const quietBuilds = [];
  for (let n = 0; n < QUIET; n++) {
    const after = Math.floor(((n + 1) * BACKLOG) / (QUIET + 1));
    while (busyStarted() < after) await sleep(50);
    quietBuilds.push({ ...(await submit(url, quiet, `q${n}`, quietBodies[n])), busyStartedBefore: after });
  }
  const views = await finished(url, [...backlog, ...quietBuilds]);
  await stopAll();
  const all = [...views.values()];
  const failed = all.filter((v) => v.status !== 'succeeded');
  if (failed.length > 0) throw new Error(`${mode}: ${failed.length} builds did not succeed, e.g. ${JSON.stringify(failed[0].error)}`);
  const claims = run('psql', [process.env.DATABASE_URL, '-tAc', `SELECT attempts, count(*) FROM "Build" WHERE queue = '${queuePrefix}' GROUP BY attempts`]).trim();
  if (claims !== `1|${BACKLOG + QUIET}`) throw new Error(`${mode}: builds claimed other than once each: ${claims}`);
  const t = (s) => new Date(s).getTime();
  const busyViews = backlog.map((b) => views.get(b.id));
  const quietRows = quietBuilds.map((b) => {
    const v = views.get(b.id);
    const ahead = busyViews.filter((x) => t(x.startedAt) > t(v.createdAt) && t(x.startedAt) < t(v.startedAt)).length;
    const stillQueued = busyViews.filter((x) => t(x.startedAt) > t(v.createdAt)).length;
    return { waitSeconds: (t(v.startedAt) - t(v.createdAt)) / 1000, busyStillQueued: stillQueued, busyStartedAhead: ahead };
  });
  const busyWaits = busyViews.map((v) => (t(v.startedAt) - t(v.createdAt)) / 1000);
  const first = Math.min(...all.map((v) => t(v.createdAt)));
  const last = Math.max(...all.map((v) => t(v.finishedAt)));
  const out = {
    claims,
    quiet: quietRows,
    quietWaitMedian: median(quietRows.map((r) => r.waitSeconds)),
    quietWaitMax: Math.max(...quietRows.map((r) => r.waitSeconds)),
    busyStartedAheadMax: Math.max(...quietRows.map((r) => r.busyStartedAhead)),
    busyWaitMedian: median(busyWaits),
    wallSeconds: (last - first) / 1000,
    buildsPerMinute: ((BACKLOG + QUIET) / ((last - first) / 1000)) * 60,
  };
  log(`${mode}: quiet wait median ${out.quietWaitMedian.toFixed(2)} s, max ${out.quietWaitMax.toFixed(2)} s; at most ${out.busyStartedAheadMax} busy builds started ahead of a quiet one; ${out.buildsPerMinute.toFixed(0)} builds/min`);
  return out;
}

const status = await runBench(
  result,
  async () => {
    installSignalHandlers(stopAll);
    for (const mode of MODES) {
      if (mode !== 'fifo' && mode !== 'fair') throw new Error(`BENCH_FAIR_MODES takes fifo and/or fair, got "${mode}"`);
      result.modes[mode] = await measure(mode);
    }
    return 0;
  },
  stopAll,
  log,
);
reportAndExit(result, status);

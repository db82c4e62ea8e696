// Where the time of a RUN-heavy build goes: starts Strata's api and worker (as bench/build-cache
// does, STRATA_RUN_NETWORK=none), runs `app-run: one file changed` and `run10: ten RUN steps, cold`
// builds and `app-run` cold ones (a fresh tenant each, TIMELINE_COLD=0 leaves them out), and prints per build the wall time, the worker's CPU time (its own and its reaped
// children's: runc) and the step rows it recorded, plus any `[step-trace] <phase> <ms>` lines the
// worker wrote (the per-phase figures in docs/benchmarks.md came from temporary trace points that
// print those; none are committed). BENCH_CPU_PROF=<dir>: the worker's CPU profile. TIMELINE_RUN10=0:
// app-run only. Needs the services `npm run bench` starts (DATABASE_URL, REDIS_URL, S3_* in the
// environment, as infra/local/bench.mjs passes them), run as root:
//   node bench/run-step/timeline.mjs [iterations]
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { busyboxBaseTar, tenants } from '../support/peers.mjs';
import { run, startProcess, stopAll, waitFor } from '../support/procs.mjs';

const N = Number(process.argv[2] ?? 3);
const PORT = Number(process.env.BENCH_API_PORT ?? 38330);
const work = mkdtempSync(path.join(tmpdir(), 'sbt-'));
const log = (m) => process.stdout.write(`${m}\n`);

let url = '';
let workerPid = 0;
/** CPU ms of the worker and the children it reaped (runc), from /proc (10 ms ticks). */
function workerCpuMs() {
  const f = readFileSync(`/proc/${workerPid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
}
async function api(token, method, p, body, type) {
  const headers = { authorization: `Bearer ${token}`, ...(type ? { 'content-type': type } : {}) };
  const res = await fetch(`${url}${p}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null, text };
}

const workerLog = path.join(work, 'worker.log');
let logOffset = 0;
function newTrace() {
  const text = readFileSync(workerLog, 'utf8');
  const lines = text.slice(logOffset).split('\n').filter((l) => l.includes('[step-trace]'));
  logOffset = text.length;
  return lines.map((l) => l.slice(l.indexOf('[step-trace]') + 13));
}

async function build(token, ctxDir, label) {
  const body = run('tar', ['-cf', '-', '-C', ctxDir, '.'], { encoding: 'buffer' });
  run('sync', []);
  newTrace();
  const cpu0 = workerCpuMs();
  const t0 = performance.now();
  const res = await api(token, 'POST', '/v1/builds?repository=t/x&tag=1', body, 'application/x-tar');
  if (res.status !== 202) throw new Error(res.text);
  let b;
  for (;;) {
    b = (await api(token, 'GET', `/v1/builds/${res.json.id}`)).json;
    if (b.status === 'succeeded') break;
    if (b.status === 'failed' || b.status === 'cancelled') throw new Error(JSON.stringify(b.error));
    await new Promise((r) => setTimeout(r, 20));
  }
  const ms = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 300)); // background work of the build (keeps, trace lines)
  const cpu = workerCpuMs() - cpu0;
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  log(`\n=== ${label}: ${ms.toFixed(0)} ms, worker CPU ${cpu} ms (load ${load}); worker ${new Date(b.finishedAt) - new Date(b.startedAt)} ms; steps ${b.steps.map((s) => `${s.instruction.slice(0, 12)}=${s.durationMs}${s.cached ? 'c' : ''}`).join(' ')}`);
  for (const l of newTrace()) log(`  ${l}`);
  return ms;
}

function writeFiles(dir, n, salt) {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    const name = `file-${String(i).padStart(4, '0')}.txt`;
    writeFileSync(path.join(dir, name), `${name} ${salt}\n${'x'.repeat(200 + (i % 50))}\n`);
  }
}

try {
  const base = readFileSync(busyboxBaseTar(work));
  // As bench/support/peers.mjs starts them; BENCH_CPU_PROF=<dir> writes the worker's CPU profile there.
  const env = { ...process.env, PORT: String(PORT), HOST: '127.0.0.1', STRATA_DATA_DIR: path.join(work, 'strata-worker'), NODE_NO_WARNINGS: '1', STRATA_QUEUE_PREFIX: `strata-timeline-${process.pid}`, STRATA_RUN_NETWORK: 'none', STRATA_STEP_TRACE: '1' };
  const loader = ['--import', './bench/support/register-ts.mjs'];
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const root = path.resolve(import.meta.dirname, '../..');
  const apiProc = startProcess('strata-api', process.execPath, [...loader, 'apps/api/src/main.ts'], { env, cwd: root, logFile: path.join(work, 'api.log') });
  workerPid = startProcess('strata-worker', process.execPath, [...prof, ...loader, 'apps/worker/src/bin.ts'], { env, cwd: root, logFile: workerLog }).child.pid;
  url = `http://127.0.0.1:${PORT}`;
  await waitFor('strata api', async () => {
    try { return (await fetch(`${url}/healthz`)).ok; } catch { return false; }
  }, 60000, apiProc);
  const names = Array.from({ length: 2 * N + 1 }, (_, i) => `timeline-${process.pid}-${i}`);
  const ts = tenants(names);
  for (const t of ts) {
    const r = await api(t.token, 'POST', '/v1/repositories/base/import?tag=1', base, 'application/x-tar');
    if (r.status !== 201) throw new Error(r.text);
  }
  // app-run, one file of src/ changed each time, after a priming build.
  const ctx = mkdtempSync(path.join(work, 'ctx-app-run-'));
  writeFileSync(path.join(ctx, 'Dockerfile'), ['FROM base:1', 'RUN mkdir -p /app/deps && echo installed > /app/deps/marker', 'COPY src/ /app/src/', 'RUN find /app/src -type f | wc -l > /app/file-count', 'CMD ["/bin/sh"]', ''].join('\n'));
  writeFiles(path.join(ctx, 'src'), 1000, `${process.pid}`);
  await build(ts[0].token, ctx, 'app-run priming');
  for (let i = 0; i < N; i++) {
    writeFileSync(path.join(ctx, 'src', 'file-0007.txt'), `changed ${process.pid} ${i}\n`);
    await build(ts[0].token, ctx, `app-run one file changed #${i + 1}`);
  }
  // app-run cold: a fresh tenant and a context no build has seen (the base layer is on the worker from the priming build).
  for (let i = 0; i < N && process.env.TIMELINE_COLD !== '0'; i++) {
    const dir = mkdtempSync(path.join(work, 'ctx-app-run-cold-'));
    writeFileSync(path.join(dir, 'Dockerfile'), readFileSync(path.join(ctx, 'Dockerfile')));
    writeFiles(path.join(dir, 'src'), 1000, `${process.pid}-cold-${i}`);
    await build(ts[N + 1 + i].token, dir, `app-run cold #${i + 1}`);
  }
  for (let i = 0; i < N; i++) {
    const dir = mkdtempSync(path.join(work, 'ctx-run10-'));
    const lines = ['FROM base:1', `RUN echo ${process.pid}-${i} > /salt`];
    for (let k = 1; k < 10; k++) lines.push(`RUN mkdir -p /work/s${k} && echo step ${k} > /work/s${k}/out && ls /work > /dev/null`);
    writeFileSync(path.join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
    if (process.env.TIMELINE_RUN10 !== '0') await build(ts[i + 1].token, dir, `run10 cold #${i + 1}`);
  }
} finally {
  await stopAll();
  // Its contexts and the worker's data: tens of thousands of files a run, which slow file creation
  // under the temporary directory once enough runs have left them.
  rmSync(work, { recursive: true, force: true });
}

// `npm run bench`: installs what is missing (apt), starts (or reuses) PostgreSQL, Redis and S3 on
// 127.0.0.1 with the benchmark's own database and bucket, applies migrations, then runs the
// benchmarks under bench/ and prints a table of ratios (Strata / peer; below 1 means Strata is faster).
//   npm run bench                       both benchmarks, 5 runs per case
//   npm run bench -- --runs 9           more runs per case (medians are reported)
//   npm run bench -- --only parse       or --only build-cache, --only registry, --only console, --only load, --only fairness, --only run-sandbox, --only run-step
//                                       or --only large-context (BENCH_CTX_FILES, BENCH_CTX_MIB: 50,000 files, 1 GiB by default)
//                                       or --only memory (peak resident memory of api, worker and CLI; BENCH_MEMORY_MIB: 1 GiB by default)
//   npm run bench -- --write-docs       also replace the results block in docs/benchmarks.md
// The build-cache benchmark starts dockerd, a docker-registry and Strata's api and worker itself and
// stops them when it ends (also on failure or Ctrl-C). PostgreSQL, Redis and S3 are left running, as
// `npm test` leaves them, since other runs share them.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConsole, ensureDependencies, ensurePackages, ensureServices, generatePrismaClient, log, migrate, prepareCgroups, root } from './services.mjs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const runs = Number(opt('runs', process.env.BENCH_RUNS ?? 5));
const only = opt('only', 'all');
const writeDocs = args.includes('--write-docs');
if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a positive integer');
if (!['all', 'parse', 'build-cache', 'registry', 'console', 'load', 'fairness', 'run-sandbox', 'run-step', 'large-context', 'memory'].includes(only)) throw new Error('--only takes parse, build-cache, registry, console, load, fairness, run-sandbox, run-step, large-context or memory');

const started = Date.now();
ensureDependencies();
// attr (getfattr; bench/run-step times it against the worker's in-process xattr reads), iproute2 and iptables are the worker's RUN tooling, bzip2/xz-utils its ADD unpackers; runsc the optional
// RUN runtime; buildah is the third peer.
ensurePackages(['postgresql', 'redis-server', 'busybox-static', 'debootstrap', 'docker.io', 'docker-registry', 'runc', 'crun', 'runsc', 'attr', 'iproute2', 'iptables', 'bzip2', 'xz-utils', 'tar', 'skopeo', 'buildah', 'chromium']);
// crun (STRATA_RUN_RUNTIME=auto's pick) needs a hybrid host's cgroup2 controllers on v1 (docs/adr/0038).
prepareCgroups();
const env = await ensureServices({ database: 'strata_bench', bucket: 'strata-bench', redisDb: 2 });
generatePrismaClient();
migrate(env);
log(`services ready in ${((Date.now() - started) / 1000).toFixed(1)}s`);

const resultsDir = path.join(root, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const loader = ['--import', './bench/support/register-ts.mjs'];

function runBench(name, script, extraArgs = []) {
  const out = path.join(resultsDir, `${name}.json`);
  log(`running bench/${name}`);
  const r = spawnSync(process.execPath, [...extraArgs, script], {
    cwd: root, stdio: ['ignore', 'inherit', 'inherit'],
    // Benchmarks talk only to this machine: no Docker Hub fallback for short FROM names.
    env: { ...process.env, ...env, STRATA_UPSTREAM_REGISTRY: 'none', BENCH_RUNS: String(runs), BENCH_OUT: out, NODE_NO_WARNINGS: '1' },
  });
  const result = existsSync(out) ? JSON.parse(readFileSync(out, 'utf8')) : { error: `bench/${name} wrote no result (exit ${r.status ?? r.signal})` };
  return { status: r.status ?? 1, result };
}

const git = (a) => spawnSync('git', a, { cwd: root, encoding: 'utf8' }).stdout.trim();
const meta = {
  date: new Date().toISOString(),
  commit: git(['rev-parse', '--short', 'HEAD']),
  dirty: git(['status', '--porcelain', '--untracked-files=no']) !== '',
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model ?? 'unknown',
  memGiB: Math.round(os.totalmem() / 1024 ** 3),
  node: process.version,
  runs,
};

let failed = false;
const parse = only === 'all' || only === 'parse' ? runBench('dockerfile-parse', 'bench/dockerfile-parse/bench.ts', loader) : null;
const cache = only === 'all' || only === 'build-cache' ? runBench('build-cache', 'bench/build-cache/bench.mjs') : null;
const registry = only === 'all' || only === 'registry' ? runBench('registry', 'bench/registry/bench.mjs') : null;
if (only === 'all' || only === 'console') buildConsole();
const consoleBench = only === 'all' || only === 'console' ? runBench('console', 'bench/console/bench.mjs') : null;
const load = only === 'all' || only === 'load' ? runBench('load', 'bench/load/bench.mjs') : null;
const fairness = only === 'all' || only === 'fairness' ? runBench('fairness', 'bench/fairness/bench.mjs') : null;
const sandbox = only === 'all' || only === 'run-sandbox' ? runBench('run-sandbox', 'bench/run-sandbox/bench.ts', loader) : null;
const runStep = only === 'all' || only === 'run-step' ? runBench('run-step', 'bench/run-step/bench.ts', loader) : null;
const largeContext = only === 'all' || only === 'large-context' ? runBench('large-context', 'bench/large-context/bench.mjs') : null;
const memory = only === 'all' || only === 'memory' ? runBench('memory', 'bench/memory/bench.mjs') : null;
for (const b of [parse, cache, registry, consoleBench, load, fairness, sandbox, runStep, largeContext, memory]) if (b && (b.status !== 0 || b.result.error)) failed = true;

const ms = (x) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(0)} ms`);
const opt2 = (x) => (x == null || Number.isNaN(x) ? '-' : ms(x));
const lines = [];
lines.push(`Run ${meta.date}, commit ${meta.commit}${meta.dirty ? ' + uncommitted changes' : ''}, ${meta.cpus} cores (${meta.cpuModel}), ${meta.memGiB} GiB, Node ${meta.node}, median of ${runs} runs per case.`);
lines.push('');
if (cache) {
  const c = cache.result;
  lines.push(`Build cache: Strata (POST /v1/builds to succeeded) vs BuildKit (dockerd ${c.dockerVersion ?? '?'}: docker build + docker push to a local registry)`);
  lines.push('');
  lines.push('| case | Strata | BuildKit | ratio Strata/BuildKit | buildah | ratio Strata/buildah | Strata: queued | worker | of which in steps | steps cached |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of c.rows ?? []) {
    const buildah = typeof r.buildahMs === 'number' ? ms(r.buildahMs) : '-';
    const vsBuildah = typeof r.ratioBuildah === 'number' ? `**${r.ratioBuildah.toFixed(2)}**` : '-';
    lines.push(`| ${r.case} | ${ms(r.strataMs)} | ${ms(r.buildkitMs)} | **${r.ratio.toFixed(2)}** | ${buildah} | ${vsBuildah} | ${opt2(r.strataQueuedMs)} | ${opt2(r.strataWorkerMs)} | ${opt2(r.strataStepsMs)} | ${r.strataHits ?? '-'} |`);
  }
  const run10 = (c.rows ?? []).find((r) => r.strataRunStepMs != null);
  if (run10) lines.push('', `Strata per-RUN step time (median over the ten RUN steps, then over runs; step durations as the worker records them): ${ms(run10.strataRunStepMs)} (target: under 150 ms).`);
  for (const n of c.notes ?? []) lines.push('', `Note: ${n}`);
  if (c.error) lines.push('', `Build-cache benchmark failed: ${c.error.split('\n')[0]}`);
  lines.push('');
}
if (largeContext) {
  const g = largeContext.result;
  lines.push(`Large context: ${g.files ?? '?'} files, ${g.contextBytes ? (g.contextBytes / 1024 ** 2).toFixed(0) : '?'} MiB, FROM scratch + COPY . /app/; Strata (strata build, manifest upload, from its start to its exit) vs BuildKit (dockerd ${g.dockerVersion ?? '?'}: docker build + docker push to a local registry)`);
  lines.push('');
  lines.push('| case | Strata | BuildKit | ratio Strata/BuildKit | Strata sent |');
  lines.push('|---|---:|---:|---:|---|');
  for (const r of g.rows ?? []) {
    const sent = r.strataSent ? `${r.strataSent.contents} contents (${(r.strataSent.contentBytes / 1024 ** 2).toFixed(1)} MiB) + manifest ${(r.strataSent.manifestBytes / 1024).toFixed(0)} KiB, ${r.strataSent.hashed} files hashed` : '-';
    lines.push(`| ${r.case} | ${ms(r.strataMs)} | ${ms(r.buildkitMs)} | **${r.ratio.toFixed(2)}** | ${sent} |`);
  }
  for (const n of g.notes ?? []) lines.push('', `Note: ${n}`);
  if (g.error) lines.push('', `Large-context benchmark failed: ${g.error.split('\n')[0]}`);
  lines.push('');
}
if (memory) {
  const g = memory.result;
  const mib = (x) => (x == null || Number.isNaN(x) ? '-' : `${x.toFixed(0)} MiB`);
  lines.push(`Memory: peak resident memory (VmHWM after a reset, and VmRSS every ${g.sampleMs ?? 50} ms) while ${g.mib ?? '?'} MiB of random bytes go through a build; api and worker are separate node processes, their idle baseline in brackets${g.load ? `; load at the end ${g.load}` : ''}:`);
  lines.push('');
  lines.push('| case | time | api peak | worker peak | CLI peak | dockerd peak | containerd peak |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  const cell = (m) => (m ? `${mib(m.peakMiB)} (${mib(m.baselineMiB)})` : '-');
  for (const r of g.rows ?? []) lines.push(`| ${r.case} | ${ms(r.ms)} | ${cell(r.memory.api)} | ${cell(r.memory.worker)} | ${r.memory.cli ? mib(r.memory.cli.peakMiB) : '-'} | ${cell(r.memory.dockerd)} | ${cell(r.memory.containerd)} |`);
  for (const n of g.notes ?? []) lines.push('', `Note: ${n}`);
  if (g.error) lines.push('', `Memory benchmark failed: ${g.error.split('\n')[0]}`);
  lines.push('');
}
if (registry) {
  const g = registry.result;
  lines.push(`Registry: skopeo copy push and pull, Strata /v2 (token auth) vs docker-registry (${g.peerVersion ?? '?'}, ${g.peerStorage === 's3' ? 'S3 storage on the same s3rver' : 'filesystem storage'}); cold pushes of images salted per run, pulls to a fresh dir:`);
  lines.push('');
  lines.push(`Medians of ${g.runs} runs; "per run" is the median of each run's own ratio (Strata filesystem and docker-registry ran back to back in it) with its quartiles.`);
  lines.push('');
  lines.push('| case | size | Strata (filesystem) | Strata (S3) | docker-registry | ratio Strata filesystem / docker-registry | per run (quartiles) | ratio Strata S3 / docker-registry |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of g.rows ?? []) {
    const paired = r.pairedRatioFs ? `${r.pairedRatioFs[1].toFixed(2)} (${r.pairedRatioFs[0].toFixed(2)}-${r.pairedRatioFs[2].toFixed(2)})` : '-';
    lines.push(`| ${r.case} | ${(r.bytes / 1024 ** 2).toFixed(1)} MiB in ${r.layers} layer${r.layers === 1 ? '' : 's'} | ${ms(r.strataFsMs)} | ${ms(r.strataMs)} | ${ms(r.peerMs)} | **${r.ratioFs.toFixed(2)}** | ${paired} | **${r.ratio.toFixed(2)}** |`);
  }
  if ((g.rows ?? []).some((r) => Number.isFinite(r.peerCpuMs))) {
    lines.push('', 'CPU time of each server process during the case (median; less sensitive to the machine\'s load than the wall time above):', '');
    lines.push('| case | Strata (filesystem) | Strata (S3, api only) | docker-registry | CPU ratio Strata filesystem / docker-registry | load average (1 min) at the case\'s start, end |');
    lines.push('|---|---:|---:|---:|---:|---:|');
    for (const r of g.rows) lines.push(`| ${r.case} | ${ms(r.strataFsCpuMs)} | ${ms(r.strataCpuMs)} | ${ms(r.peerCpuMs)} | ${(r.strataFsCpuMs / r.peerCpuMs).toFixed(2)} | ${r.load ? r.load.join(', ') : '-'} |`);
  }
  for (const n of g.notes ?? []) lines.push('', `Note: ${n}`);
  if (g.error) lines.push('', `Registry benchmark failed: ${g.error.split('\n')[0]}`);
  lines.push('');
}
if (load) {
  const l = load.result;
  if (l.error) lines.push(`Load benchmark failed: ${l.error.split('\n')[0]}`);
  else {
    lines.push(`Load: ${l.builds} builds (FROM scratch, two COPY steps) from ${l.tenants} tenants submitted at once over ${l.apis} api processes, ${l.workers} workers (concurrency 2 each); every build succeeded and was claimed once:`);
    lines.push('');
    lines.push('| builds/min | queue wait p50 | queue wait p95 | build p50 (in the worker) | wall time |');
    lines.push('|---:|---:|---:|---:|---:|');
    lines.push(`| ${l.buildsPerMinute.toFixed(0)} | ${l.queueWaitP50.toFixed(1)} s | ${l.queueWaitP95.toFixed(1)} s | ${l.buildP50.toFixed(2)} s | ${l.wallSeconds.toFixed(1)} s |`);
  }
  lines.push('');
}
if (fairness) {
  const f = fairness.result;
  if (f.error) lines.push(`Fairness benchmark failed: ${f.error.split('\n')[0]}`);
  else {
    lines.push(`Fairness: one tenant submits ${f.backlog} builds at once, a quiet tenant ${f.quietBuilds} builds spread over that backlog (the n-th once n/${f.quietBuilds + 1} of it has started); ${f.workers} workers (concurrency ${f.concurrency} each); every build succeeded and was claimed once:`);
    lines.push('');
    lines.push('| scheduling | quiet tenant: queue wait median | max | busy builds started ahead of a quiet one (max) | busy tenant: queue wait median | builds/min |');
    lines.push('|---|---:|---:|---:|---:|---:|');
    for (const [mode, m] of Object.entries(f.modes)) {
      lines.push(`| ${mode} | ${m.quietWaitMedian.toFixed(2)} s | ${m.quietWaitMax.toFixed(2)} s | ${m.busyStartedAheadMax} | ${m.busyWaitMedian.toFixed(1)} s | ${m.buildsPerMinute.toFixed(0)} |`);
    }
    lines.push('');
    lines.push(`Per quiet build (busy builds still queued when it arrived → started ahead of it, its wait): ${Object.entries(f.modes).map(([mode, m]) => `${mode}: ${m.quiet.map((q) => `${q.busyStillQueued}→${q.busyStartedAhead}, ${q.waitSeconds.toFixed(2)} s`).join('; ')}`).join(' · ')}`);
  }
  lines.push('');
}
if (sandbox) {
  const r = sandbox.result;
  if (r.error) lines.push(`RUN sandbox benchmark failed: ${r.error.split('\n')[0]}`);
  else {
    lines.push(`RUN sandbox: \`RUN true\` per container runtime setup (ADR 0022), ${r.runs} runs each, round robin:`);
    lines.push('');
    lines.push('| variant | median wall | min | max | CPU per run |');
    lines.push('|---|---:|---:|---:|---:|');
    for (const [name, v] of Object.entries(r.results)) lines.push(`| ${name} | ${ms(v.medianMs)} | ${ms(v.minMs)} | ${ms(v.maxMs)} | ${ms(v.cpuMsPerRun)} |`);
  }
  lines.push('');
}
if (runStep) {
  const r = runStep.result;
  if (r.error) lines.push(`RUN step benchmark failed: ${r.error.split('\n')[0]}`);
  else {
    lines.push(`RUN step: the work around the container as processes and in-process, and a whole \`RUN true\` per runtime (ADR 0026), ${r.runs} runs each, round robin, load ${r.load}:`);
    lines.push('');
    lines.push('| variant | median wall | min | CPU per run |');
    lines.push('|---|---:|---:|---:|');
    // Several of these take under a millisecond: one decimal.
    const ms1 = (x) => `${x.toFixed(1)} ms`;
    for (const [name, v] of Object.entries(r.results)) lines.push(`| ${name} | ${ms1(v.medianMs)} | ${ms1(v.minMs)} | ${ms1(v.cpuMsPerRun)} |`);
    for (const n of r.notes ?? []) lines.push('', `Note: ${n}`);
  }
  lines.push('');
}
if (parse) {
  const p = parse.result;
  if (p.error) lines.push(`Dockerfile parse benchmark failed: ${p.error.split('\n')[0]}`);
  else {
    lines.push(`Dockerfile parse: ${p.lines} lines (${(p.bytes / 1024).toFixed(0)} KiB, ${p.stages} stages), parseDockerfile, ${p.iterations} parses after warm-up`);
    lines.push('');
    lines.push('| measure | median | p95 | target | ratio median/target |');
    lines.push('|---|---:|---:|---:|---:|');
    lines.push(`| ms per parse | ${p.medianMs.toFixed(2)} ms | ${p.p95Ms.toFixed(2)} ms | ${p.targetMs} ms | **${p.ratioToTarget.toFixed(2)}** |`);
  }
  lines.push('');
}
if (consoleBench) {
  const c = consoleBench.result;
  if (c.error) lines.push(`Console benchmark failed: ${c.error.split('\n')[0]}`);
  else {
    lines.push(`Console: a build page whose log has ${c.logLines.toLocaleString('en')} lines (${(c.logBytes / 1024 ** 2).toFixed(1)} MiB as text), opened in Chromium (${c.chromium}), median of ${c.runs} page loads`);
    lines.push('');
    lines.push('| measure | median | worst | target | ratio median/target |');
    lines.push('|---|---:|---:|---:|---:|');
    lines.push(`| navigation to the last line on screen | ${ms(c.lastLineMs)} | ${ms(c.maxLastLineMs)} | ${ms(c.targetMs)} | **${(c.lastLineMs / c.targetMs).toFixed(2)}** |`);
    lines.push(`| JS heap used then (CDP JSHeapUsedSize) | ${c.heapUsedMB.toFixed(1)} MB | ${c.maxHeapUsedMB.toFixed(1)} MB | ${c.targetHeapMB} MB | **${(c.heapUsedMB / c.targetHeapMB).toFixed(2)}** |`);
    lines.push(`| JS heap after a forced GC | ${c.heapAfterGcMB.toFixed(1)} MB | - | - | - |`);
    lines.push(`| the same log as SSE, read by Node alone (the api's part; ${(c.sseBytes / 1024 ** 2).toFixed(1)} MiB) | ${ms(c.sseMs)} | - | - | - |`);
    lines.push(`| search over the whole log to its match count | ${ms(c.searchMs)} | - | - | - |`);
    lines.push(`| DOM nodes in the page | ${Math.round(c.domNodes)} | - | - | - |`);
  }
  lines.push('');
}
const table = lines.join('\n');
process.stdout.write(`\n${table}\n`);
writeFileSync(path.join(resultsDir, 'latest.md'), `${table}\n`);
writeFileSync(path.join(resultsDir, 'latest.json'), JSON.stringify({ meta, parse: parse?.result ?? null, buildCache: cache?.result ?? null, registry: registry?.result ?? null, console: consoleBench?.result ?? null, load: load?.result ?? null, fairness: fairness?.result ?? null, runSandbox: sandbox?.result ?? null, runStep: runStep?.result ?? null, largeContext: largeContext?.result ?? null, memory: memory?.result ?? null }, null, 2));

if (writeDocs) {
  const doc = path.join(root, 'docs/benchmarks.md');
  const begin = '<!-- bench:results:begin -->';
  const end = '<!-- bench:results:end -->';
  const text = readFileSync(doc, 'utf8');
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  if (a < 0 || b < a) log(`docs/benchmarks.md has no ${begin} ... ${end} block; not updated`);
  else {
    writeFileSync(doc, `${text.slice(0, a + begin.length)}\n${table}\n${text.slice(b)}`);
    log('docs/benchmarks.md updated');
  }
}
log(`results in bench/results/latest.md and latest.json (${((Date.now() - started) / 1000).toFixed(0)} s)`);
process.exit(failed ? 1 : 0);

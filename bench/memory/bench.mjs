// Memory benchmark (issue 17): the resident memory of Strata's api and worker (separate node
// processes, as a deployment runs them) while they move BENCH_MEMORY_MIB MiB (1 GiB by default) of
// incompressible data through a build, and the CLI's while it sends it:
//   (a) tar upload: a context of random files tarred and POSTed to /v1/builds (FROM scratch + COPY . /app/);
//   (b) the same directory through `strata build` (apps/cli: manifest, then the missing contents), a fresh tenant;
//   (c) a RUN step that writes a 1 GiB file of random bytes (RUN --network=none, busybox base): a 1 GiB layer;
//   (d) that image pulled back from /v2 with skopeo.
// Each case resets the peak (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+) of every process it
// watches, samples VmRSS and VmHWM every 50 ms while it runs, and records the peak and what the
// process held before it started (its baseline). When dockerd is installed, cases (a) and (c) are
// also built by dockerd 20.10 (BuildKit) and pushed to a docker-registry, and the peak of dockerd
// and its containerd is taken the same way (BENCH_MEMORY_PEER=0 leaves the peer out).
// Started by infra/local/bench.mjs (--only memory); writes its results as JSON to $BENCH_OUT.
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCli, buildkitBuild, busyboxBaseTar, dockerClient, startDockerPeers, startStrataProcesses, strataApi, strataCliBuild, tenants, waitForStrataBuild } from '../support/peers.mjs';
import { cleanUpWork, installSignalHandlers, reportAndExit, run, runAsync, runBench } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MIB = Number(process.env.BENCH_MEMORY_MIB ?? 1024);
const FILES = Number(process.env.BENCH_MEMORY_FILES ?? 16);
const API_PORT = Number(process.env.BENCH_API_PORT ?? 38245);
const REGISTRY_PORT = Number(process.env.BENCH_REGISTRY_PORT ?? 5045);
const PEER = process.env.BENCH_MEMORY_PEER !== '0' && existsSync('/usr/sbin/dockerd');
const SAMPLE_MS = 50;
const KEEP = process.env.BENCH_KEEP === '1';
if (!Number.isInteger(MIB) || MIB < 1 || !Number.isInteger(FILES) || FILES < 1) throw new Error('BENCH_MEMORY_MIB and BENCH_MEMORY_FILES take positive integers');

const log = (m) => process.stderr.write(`[bench:memory] ${m}\n`);
const work = mkdtempSync(path.join(tmpdir(), 'smem-'));
const resultsDir = path.join(root, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const regHost = `127.0.0.1:${REGISTRY_PORT}`;
const docker = dockerClient(work);
const MiB = 1024 * 1024;

// ---------------------------------------------------------------- watching memory
function status(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
    const rss = kb('VmRSS');
    const hwm = kb('VmHWM');
    // A process that exited but is not reaped yet has no memory lines.
    return Number.isNaN(rss) || Number.isNaN(hwm) ? null : { rss, hwm };
  } catch {
    return null; // gone
  }
}

/** The direct children of `pid` (dockerd's containerd, say). */
function children(pid) {
  const out = [];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      out.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    }
  } catch { /* gone */ }
  return out;
}

/**
 * Peak resident memory of named processes over one case: each one's peak counter is reset when
 * it is added, then VmRSS and VmHWM are read every SAMPLE_MS; the peak is the larger of the two
 * (VmHWM also catches a spike between samples).
 */
class PeakWatch {
  constructor() {
    this.procs = new Map();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  add(name, pid) {
    try { writeFileSync(`/proc/${pid}/clear_refs`, '5'); } catch { /* not ours to reset, or gone: sampling still works */ }
    const s = status(pid);
    this.procs.set(name, { pid, baseline: s?.rss ?? NaN, peak: s ? Math.max(s.rss, s.hwm) : 0, samples: s ? 1 : 0 });
  }

  sample() {
    for (const p of this.procs.values()) {
      const s = status(p.pid);
      if (!s) continue;
      p.samples += 1;
      p.peak = Math.max(p.peak, s.rss, s.hwm);
    }
  }

  stop() {
    this.sample();
    clearInterval(this.timer);
    const out = {};
    for (const [name, p] of this.procs) out[name] = { peakMiB: p.peak / MiB, baselineMiB: p.baseline / MiB, growthMiB: (p.peak - p.baseline) / MiB, samples: p.samples };
    return out;
  }
}

/** Watches `pids` (name → pid) while `body(watch)` runs; answers the body's result and the peaks. */
async function watched(pids, body) {
  const watch = new PeakWatch();
  for (const [name, pid] of Object.entries(pids)) if (pid) watch.add(name, pid);
  const t0 = performance.now();
  try {
    const value = await body(watch);
    return { value, ms: performance.now() - t0, memory: watch.stop() };
  } catch (e) {
    watch.stop();
    throw e;
  }
}

// ---------------------------------------------------------------- fixtures
/** FILES files of random bytes adding up to MIB MiB (incompressible, so gzip cannot shrink what is held), and a Dockerfile. */
function makeContext() {
  const dir = path.join(work, 'ctx');
  mkdirSync(path.join(dir, 'data'), { recursive: true });
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /app/\n');
  const each = Math.floor(MIB / FILES);
  for (let i = 0; i < FILES; i++) {
    const size = i === FILES - 1 ? MIB - each * (FILES - 1) : each;
    run('sh', ['-c', `head -c ${size}M /dev/urandom > "$1"`, 'sh', path.join(dir, 'data', `f${String(i).padStart(3, '0')}.bin`)]);
  }
  execFileSync('find', [dir, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
  const tar = path.join(work, 'ctx.tar');
  run('tar', ['-cf', tar, '--numeric-owner', '-C', dir, '.']);
  return { dir, tar, bytes: statSync(tar).size };
}

/** A context whose RUN step writes MIB MiB of random bytes: a layer of that size. */
function makeRunContext() {
  const dir = path.join(work, 'run-ctx');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'Dockerfile'), `FROM base:1\nRUN --network=none dd if=/dev/urandom of=/big bs=1048576 count=${MIB} && ls -l /big\n`);
  const tar = path.join(work, 'run-ctx.tar');
  run('tar', ['-cf', tar, '-C', dir, '.']);
  // dockerd 20.10's built-in frontend has no RUN --network; `docker build --network none` says the same.
  const peerDir = path.join(work, 'run-ctx-peer');
  mkdirSync(peerDir, { recursive: true });
  writeFileSync(path.join(peerDir, 'Dockerfile'), `FROM base:1\nRUN dd if=/dev/urandom of=/big bs=1048576 count=${MIB} && ls -l /big\n`);
  return { dir, tar, peerDir };
}

// ---------------------------------------------------------------- Strata
let strata = null;

const api = (token, method, pathAndQuery, body, contentType) => strataApi(strata.url, token, method, pathAndQuery, body, contentType);

/**
 * A web stream that reads its source only when fetch asks for more (Node 20's Readable.toWeb reads
 * ahead without bound: the benchmark itself held the whole context).
 */
function pulledStream(source) {
  const it = source[Symbol.asyncIterator]();
  return new ReadableStream({
    async pull(controller) {
      const { value, done } = await it.next();
      if (done) controller.close();
      else controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    },
    async cancel() { await it.return?.(); },
  }, { highWaterMark: 0 });
}

/** POST /v1/builds with the tar streamed from disk (the benchmark itself holds none of it), until the build succeeded. */
async function strataTarBuild(token, repo, tarFile) {
  const body = pulledStream(createReadStream(tarFile, { highWaterMark: MiB }));
  const res = await api(token, 'POST', `/v1/builds?repository=${repo}&tag=1`, body, 'application/x-tar');
  if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${res.text}`);
  return waitForStrataBuild(strata.url, token, res.json.id);
}

/** `strata build DIR -t REF`, its pid added to the watch as 'cli' once spawned; answers its account of the context. */
async function cliBuild(watch, token, cacheDir, dir, ref) {
  const { stderr } = await strataCliBuild({ apiUrl: strata.url, token, cacheDir, dir, ref, onStart: (pid) => watch.add('cli', pid) });
  return /context: .*/.exec(stderr)?.[0] ?? null;
}

// ---------------------------------------------------------------- the peer
const dockerdPid = () => Number(readFileSync(path.join(work, 'd/docker.pid'), 'utf8').trim());
const peerPids = () => {
  const pid = dockerdPid();
  const containerd = children(pid).find((c) => {
    try { return readFileSync(`/proc/${c}/comm`, 'utf8').trim() === 'containerd'; } catch { return false; }
  });
  return { dockerd: pid, containerd };
};

// ---------------------------------------------------------------- run
const cleanup = () => cleanUpWork({ work, resultsDir, prefix: 'memory', keep: KEEP });

installSignalHandlers(cleanup);
const result = { mib: MIB, files: FILES, sampleMs: SAMPLE_MS, rows: [], notes: [] };
const status_ = await runBench(result, async () => {
  buildCli();
  const t0 = performance.now();
  const ctx = makeContext();
  const runCtx = makeRunContext();
  const baseTar = busyboxBaseTar(work);
  result.contextBytes = ctx.bytes;
  log(`fixtures: ${FILES} random files, ${(ctx.bytes / MiB).toFixed(0)} MiB of tar, made in ${((performance.now() - t0) / 1000).toFixed(1)} s (untimed)`);
  const [dockerVersion, started] = await Promise.all([
    PEER ? startDockerPeers({ work, registryPort: REGISTRY_PORT, regHost, docker }) : Promise.resolve(null),
    startStrataProcesses({
      work,
      port: API_PORT,
      env: { STRATA_QUEUE_PREFIX: `strata-bench-mem-${process.pid}`, STRATA_MAX_CONTEXT_BYTES: String(Math.max(4 * 1024 ** 3, 2 * MIB * MiB)) },
    }),
  ]);
  strata = started;
  result.dockerVersion = dockerVersion;
  const [ta, tb, tc] = tenants([`bench-mem-${process.pid}-a`, `bench-mem-${process.pid}-b`, `bench-mem-${process.pid}-c`]);
  const imported = await api(tc.token, 'POST', '/v1/repositories/base/import?tag=1', readFileSync(baseTar), 'application/x-tar');
  if (imported.status !== 201) throw new Error(`base import answered ${imported.status}: ${imported.text}`);
  if (PEER) await docker(['import', baseTar, 'base:1']);
  // What each process holds idle once it has served one small build: the start-up cost is not the case's.
  const warm = path.join(work, 'warm');
  mkdirSync(warm);
  writeFileSync(path.join(warm, 'Dockerfile'), 'FROM scratch\nCOPY . /w/\n');
  run('tar', ['-cf', `${warm}.tar`, '-C', warm, '.']);
  await strataTarBuild(ta.token, 'warmup', `${warm}.tar`);
  const pids = { api: strata.apiPid, worker: strata.workerPid };
  const row = (name, r, extra = {}) => {
    result.rows.push({ case: name, ms: r.ms, memory: r.memory, ...extra });
    log(`${name}: ${(r.ms / 1000).toFixed(1)} s; ${Object.entries(r.memory).map(([k, m]) => `${k} peak ${m.peakMiB.toFixed(0)} MiB (+${m.growthMiB.toFixed(0)})`).join(', ')}; load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
  };

  row('a. tar context: POST /v1/builds, COPY . /app/', await watched(pids, () => strataTarBuild(ta.token, 'mem-tar', ctx.tar)));
  row('b. strata build: manifest + contents, COPY . /app/', await watched(pids, (w) => cliBuild(w, tb.token, mkdtempSync(path.join(work, 'cli-cache-')), ctx.dir, 'mem-cli:1')));
  row(`c. RUN writes a ${MIB} MiB random file (one layer)`, await watched(pids, () => strataTarBuild(tc.token, 'mem-run', runCtx.tar)));
  const pullDir = path.join(work, 'pull');
  row('d. skopeo copy of (c) from /v2', await watched(pids, () => runAsync('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', `x:${tc.token}`, `docker://127.0.0.1:${API_PORT}/${tc.name}/mem-run:1`, `dir:${pullDir}`], { env: { PATH: process.env.PATH, HOME: work } })));
  const pulled = readdirSync(pullDir).map((f) => statSync(path.join(pullDir, f)).size).reduce((a, b) => Math.max(a, b), 0);
  result.pulledLargestBlobBytes = pulled;
  rmSync(pullDir, { recursive: true, force: true });
  if (PEER) {
    row('a. tar context (peer: docker build + push)', await watched(peerPids(), () => buildkitBuild(docker, regHost, 'mem-tar:1', ctx.dir)));
    row(`c. RUN writes a ${MIB} MiB random file (peer: docker build + push)`, await watched(peerPids(), () => buildkitBuild(docker, regHost, 'mem-run:1', runCtx.peerDir)));
  }
  result.load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  if (MIB !== 1024) result.notes.push(`Smaller than the issue's 1 GiB: ${MIB} MiB (BENCH_MEMORY_MIB).`);
  return 0;
}, cleanup, log);
reportAndExit(result, status_);

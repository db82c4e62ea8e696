// Large-context benchmark (issue 17, docs/adr/0025): a context of BENCH_CTX_FILES files adding up to
// BENCH_CTX_MIB MiB (default 50,000 files, 1 GiB), `FROM scratch` + `COPY . /app/`, built cold, rebuilt
// unchanged and rebuilt with one file changed, timed from the client's start to the tag:
//   Strata: `strata build` (apps/cli, the manifest upload with its stat cache) until it exits;
//   BuildKit: `docker build` (dockerd 20.10, started as bench/build-cache starts it) + `docker push` to
//   a local docker-registry (as bench/build-cache times it: the image is in a registry on both sides).
// Cold: a fresh tenant and stat cache / `docker builder prune -af`, and a salt file new in every run,
// so every layer is new everywhere. Side by side in one run, Strata then BuildKit in each iteration.
// Started by infra/local/bench.mjs (--only large-context); writes its results as JSON to $BENCH_OUT.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildCli, buildkitBuild as buildkitBuildAt, dockerClient, startDockerPeers, startStrataProcesses, strataCliBuild, tenants } from '../support/peers.mjs';
import { cleanUpWork, installSignalHandlers, median, reportAndExit, run, runBench } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const FILES = Number(process.env.BENCH_CTX_FILES ?? 50_000);
const MIB = Number(process.env.BENCH_CTX_MIB ?? 1024);
const API_PORT = Number(process.env.BENCH_API_PORT ?? 38231);
const REGISTRY_PORT = Number(process.env.BENCH_REGISTRY_PORT ?? 5001);
const KEEP = process.env.BENCH_KEEP === '1';

const log = (m) => process.stderr.write(`[bench:large-context] ${m}\n`);
const work = mkdtempSync(path.join(tmpdir(), 'sl-'));
const resultsDir = path.join(root, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const regHost = `127.0.0.1:${REGISTRY_PORT}`;
const docker = dockerClient(work);

/** FILES files in 100 directories, MIB MiB in all (sizes spread around the mean), random bytes: incompressible, like most real contexts' bulk. */
function makeContext() {
  const dir = path.join(work, 'ctx');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nCOPY . /app/\n');
  const mean = Math.floor((MIB * 1024 * 1024) / FILES);
  const perDir = Math.ceil(FILES / 100);
  const pool = randomBytes(4 * 1024 * 1024 + 2 * mean + 1);
  for (let n = 0; n < FILES; n++) {
    const d = path.join(dir, 'src', `d${Math.floor(n / perDir)}`);
    if (n % perDir === 0) mkdirSync(d, { recursive: true });
    const size = Math.floor(mean / 2) + ((n * 7919) % (mean + 1));
    // A distinct slice of the pool per file, with the file's number in front: no two files share a content.
    const start = (n * 104729) % (pool.length - size);
    writeFileSync(path.join(d, `f${n}.bin`), Buffer.concat([Buffer.from(`${n}\n`), pool.subarray(start, start + size)]));
  }
  // Older than any scan, as a checked-out tree is (the stat cache trusts no file written during its last scan).
  execFileSync('find', [dir, '-exec', 'touch', '-h', '-d', '@1700000000', '{}', '+']);
  const bytes = Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
  return { dir, bytes };
}

const startPeers = () => startDockerPeers({ work, registryPort: REGISTRY_PORT, regHost, docker });

let apiUrl = '';
let pids = { api: 0, worker: 0 };
async function startStrata() {
  const started = await startStrataProcesses({
    work,
    port: API_PORT,
    env: { STRATA_QUEUE_PREFIX: `strata-bench-ctx-${process.pid}`, STRATA_MAX_CONTEXT_BYTES: String(Math.max(4 * 1024 ** 3, 2 * MIB * 1024 * 1024)) },
  });
  apiUrl = started.url;
  pids = { api: started.apiPid, worker: started.workerPid };
}

/** CPU time (user + system, ms) a process has used so far: less at the mercy of the other sessions' load than wall time. */
function cpuMs(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10; // utime, stime in clock ticks of 10 ms
  } catch {
    return NaN;
  }
}

/** `strata build DIR -t REF` from its start to its exit (the build succeeded and the tag moved); with the CLI's own account of what it sent. */
async function strataBuild(token, cacheDir, dir, ref) {
  run('sync', []);
  const cpu0 = { api: cpuMs(pids.api), worker: cpuMs(pids.worker) };
  const { ms, stderr } = await strataCliBuild({ apiUrl, token, cacheDir, dir, ref, trace: true });
  const cpu = { api: cpuMs(pids.api) - cpu0.api, worker: cpuMs(pids.worker) - cpu0.worker };
  const m = /context: (\d+) files, (\d+) bytes, (\d+) hashed; uploaded (\d+) contents? \((\d+) bytes\) and the manifest \((\d+) bytes\) in (\d+) requests?/.exec(stderr);
  // The build's own times, asked after the clock stopped (the CLI no longer asks for the build after its log).
  const id = /build (\S+) queued/.exec(stderr)?.[1];
  const b = id ? await fetch(`${apiUrl}/v1/builds/${id}`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json()) : {};
  const trace = `${/trace: (.*)/.exec(stderr)?.[1] ?? ''}; the build's own times: queued ${b.createdAt}, started ${b.startedAt}, finished ${b.finishedAt}; cpu: api ${cpu.api} ms, worker ${cpu.worker} ms; load ${readFileSync('/proc/loadavg', 'utf8').split(' ')[0]}`;
  return { ms, trace, sent: m ? { files: +m[1], hashed: +m[3], contents: +m[4], contentBytes: +m[5], manifestBytes: +m[6], requests: +m[7] } : null };
}

const buildkitBuild = (image, dir) => buildkitBuildAt(docker, regHost, image, dir);

const cleanup = () => cleanUpWork({ work, resultsDir, prefix: 'large-context', keep: KEEP });

installSignalHandlers(cleanup);
const result = { runs: RUNS, files: FILES, mib: MIB, rows: [], notes: [] };
const status = await runBench(result, async () => {
  buildCli();
  const t0 = performance.now();
  const ctx = makeContext();
  result.contextBytes = ctx.bytes;
  log(`context: ${FILES} files, ${(ctx.bytes / 1024 ** 2).toFixed(0)} MiB made in ${((performance.now() - t0) / 1000).toFixed(1)} s (untimed)`);
  const [dockerVersion] = await Promise.all([startPeers(), startStrata()]);
  result.dockerVersion = dockerVersion;
  const names = Array.from({ length: RUNS }, (_, i) => `bench-ctx-${process.pid}-${i}`);
  const ts = tenants(names);
  const salt = path.join(ctx.dir, 'salt.txt');
  const cases = { cold: { s: [], b: [], sent: null }, noop: { s: [], b: [], sent: null }, one: { s: [], b: [], sent: null } };
  const changed = path.join(ctx.dir, 'src/d50', `f${50 * Math.ceil(FILES / 100)}.bin`);
  if (!existsSync(changed)) throw new Error(`${changed} was not made`);
  for (let i = 0; i < RUNS; i++) {
    const cacheDir = mkdtempSync(path.join(work, 'cli-cache-'));
    writeFileSync(salt, `run ${process.pid} ${i}\n`);
    execFileSync('touch', ['-d', '@1700000000', salt, ctx.dir]);
    await docker(['builder', 'prune', '-af']);
    const tag = (c) => `bench/large:${c}${i}`;
    const record = (c, s, b) => {
      cases[c].s.push(s.ms);
      cases[c].b.push(b.ms);
      cases[c].sent = s.sent;
      cases[c].traces = [...(cases[c].traces ?? []), s.trace];
      log(`${c} #${i + 1}: Strata ${s.ms.toFixed(0)} ms (${JSON.stringify(s.sent)}; ${s.trace}), BuildKit ${b.ms.toFixed(0)} ms`);
    };
    record('cold', await strataBuild(ts[i].token, cacheDir, ctx.dir, tag('cold')), await buildkitBuild(`large-cold-${i}:${i}`, ctx.dir));
    record('noop', await strataBuild(ts[i].token, cacheDir, ctx.dir, tag('noop')), await buildkitBuild(`large-cold-${i}:noop`, ctx.dir));
    writeFileSync(changed, `changed ${process.pid} ${i}\n`);
    execFileSync('touch', ['-d', `@${1700000000 + i + 1}`, changed]);
    record('one', await strataBuild(ts[i].token, cacheDir, ctx.dir, tag('one')), await buildkitBuild(`large-cold-${i}:one`, ctx.dir));
  }
  const label = { cold: '1 cold', noop: '2 no change', one: '3 one file changed' };
  for (const [k, c] of Object.entries(cases)) {
    result.rows.push({ case: `large context: ${label[k]}`, strataMs: median(c.s), buildkitMs: median(c.b), ratio: median(c.s) / median(c.b), strataRuns: c.s, buildkitRuns: c.b, strataSent: c.sent, strataTraces: c.traces });
  }
  if (FILES !== 50_000 || MIB !== 1024) result.notes.push(`Smaller than the issue's 50,000 files / 1 GiB: ${FILES} files, ${MIB} MiB (BENCH_CTX_FILES, BENCH_CTX_MIB), to fit the time of this run.`);
  return 0;
}, cleanup, log);
reportAndExit(result, status);

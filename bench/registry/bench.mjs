// Registry benchmark (issue 6): push and pull with skopeo of (i) a ~100 MB single-layer image and
// (ii) an image of 50 small layers, against Strata's /v2 (its api as a separate node process, token
// auth with a Strata API token) and against docker-registry (CNCF Distribution 2.8, apt) storing in
// the same S3 server (s3rver on 127.0.0.1, its own bucket), side by side in one run.
// Caveat: Distribution 2.8's s3 driver resumes every chunked upload (each PATCH) with
// ListMultipartUploads, which s3rver answers 501 NotImplemented; every skopeo push then fails with a
// 500. So against s3rver the peer stores on the local filesystem (BENCH_PEER_STORAGE=filesystem, the
// default); BENCH_PEER_STORAGE=s3 keeps the S3 configuration for an S3 server that implements it.
// Every iteration uses images salted for that iteration, so neither registry (nor the shared S3) has
// any of their blobs yet: pushes are cold. Pulls go to a fresh `dir:` destination.
// Started by infra/local/bench.mjs, which provides the service environment (DATABASE_URL, S3_*, ...).
// Writes its results as JSON to $BENCH_OUT. Nothing listens or connects beyond 127.0.0.1.
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { installSignalHandlers, median, portOpen, reportAndExit, run, runAsync, runBench, startProcess, stopAll, waitFor } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
// A 100 MiB pull's wall time swings by about 10% from one run to the next on this machine, so the
// registry takes at least 11 runs (each is a second or two) whatever BENCH_RUNS says;
// BENCH_REGISTRY_RUNS sets it outright.
const RUNS = Number(process.env.BENCH_REGISTRY_RUNS ?? Math.max(Number(process.env.BENCH_RUNS ?? 5), 11));
const API_PORT = Number(process.env.BENCH_REGISTRY_API_PORT ?? 38231);
// A second Strata api on the same database, storing on the filesystem (STRATA_STORAGE_DIR): the fair
// pair for docker-registry's filesystem driver.
const API_FS_PORT = Number(process.env.BENCH_REGISTRY_API_FS_PORT ?? 38232);
const REGISTRY_PORT = Number(process.env.BENCH_DOCKER_REGISTRY_PORT ?? 5001);
const BIG_MB = Number(process.env.BENCH_BIG_MB ?? 100);
const SMALL_LAYERS = Number(process.env.BENCH_SMALL_LAYERS ?? 50);
const KEEP = process.env.BENCH_KEEP === '1';
const S3_ENDPOINT = process.env.S3_ENDPOINT ?? 'http://127.0.0.1:45690';
const PEER_BUCKET = process.env.BENCH_REGISTRY_BUCKET ?? 'strata-bench-docker-registry';
const PEER_STORAGE = process.env.BENCH_PEER_STORAGE ?? 'filesystem';
if (!['s3', 'filesystem'].includes(PEER_STORAGE)) throw new Error('BENCH_PEER_STORAGE takes s3 or filesystem');

const log = (m) => process.stderr.write(`[bench:registry] ${m}\n`);
const work = mkdtempSync(path.join(tmpdir(), 'sbr-'));
const resultsDir = path.join(root, 'bench/results');
mkdirSync(resultsDir, { recursive: true });
const strataHost = `127.0.0.1:${API_PORT}`;
const strataFsHost = `127.0.0.1:${API_FS_PORT}`;
const peerHost = `127.0.0.1:${REGISTRY_PORT}`;
const sha = (buf) => createHash('sha256').update(buf).digest('hex');
/** Each registry's server process, for the CPU time it spends per case (wall time is at the mercy of the machine's load). */
const serverPids = {};
/** User + system CPU time of a process so far, in ms (Linux /proc; clock ticks of 10 ms). */
function cpuMs(pid) {
  if (pid === undefined) return NaN;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

// ---------------------------------------------------------------- fixtures
/** ~BIG_MB of files, half random bytes and half repetitive text (random-ish), made once. */
function makeBigTree() {
  const dir = path.join(work, 'big');
  mkdirSync(path.join(dir, 'data'), { recursive: true });
  const files = BIG_MB; // 1 MiB each
  for (let i = 0; i < files; i++) {
    const buf = i % 2 === 0 ? randomBytes(1024 * 1024) : Buffer.from(`line ${i} `.repeat(1024 * 1024 / 8).slice(0, 1024 * 1024));
    writeFileSync(path.join(dir, 'data', `f-${String(i).padStart(4, '0')}.bin`), buf);
  }
  return dir;
}

/**
 * An OCI image layout with one tag `t`: layers are uncompressed tars (media type
 * application/vnd.oci.image.layer.v1.tar), so what is measured is the registries and skopeo, not gzip.
 */
function writeLayout(layoutDir, layerTars) {
  const blobs = path.join(layoutDir, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const put = (buf) => {
    const h = sha(buf);
    writeFileSync(path.join(blobs, h), buf);
    return { digest: `sha256:${h}`, size: buf.length };
  };
  const layers = layerTars.map((t) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...put(t) }));
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
  }));
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(config) }, layers,
  }));
  const m = put(manifest);
  writeFileSync(path.join(layoutDir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(path.join(layoutDir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': 't' } }],
  }));
  return { bytes: layers.reduce((a, l) => a + l.size, 0), layers: layers.length };
}

const tarDir = (dir) => run('tar', ['-cf', '-', '--numeric-owner', '--mtime=2020-01-01', '-C', dir, '.'], { encoding: 'buffer' });

/** The big image, salted per iteration (one small file) so its layer digest is new everywhere. */
function bigImage(bigTree, salt) {
  writeFileSync(path.join(bigTree, 'salt'), salt);
  const layout = path.join(work, `img-big-${salt}`);
  return { layout, ...writeLayout(layout, [tarDir(bigTree)]) };
}

/** SMALL_LAYERS layers of a few KiB each, salted per iteration. */
function smallImage(salt) {
  const tars = [];
  for (let i = 0; i < SMALL_LAYERS; i++) {
    const d = mkdtempSync(path.join(work, 'l-'));
    mkdirSync(path.join(d, `layer${i}`));
    writeFileSync(path.join(d, `layer${i}`, 'file.txt'), `${salt} ${i}\n${randomBytes(2048).toString('base64')}\n`);
    tars.push(tarDir(d));
    rmSync(d, { recursive: true, force: true });
  }
  const layout = path.join(work, `img-small-${salt}`);
  return { layout, ...writeLayout(layout, tars) };
}

// ---------------------------------------------------------------- services
async function startPeer() {
  if (await portOpen(REGISTRY_PORT)) throw new Error(`127.0.0.1:${REGISTRY_PORT} is taken; set BENCH_DOCKER_REGISTRY_PORT`);
  const cfg = path.join(work, 'registry.yml');
  if (PEER_STORAGE === 'filesystem') {
    writeFileSync(cfg, [
      'version: 0.1',
      'log: { level: error }',
      `storage: { filesystem: { rootdirectory: ${path.join(work, 'peer-store')} }, delete: { enabled: true } }`,
      `http: { addr: "${peerHost}" }`,
      '',
    ].join('\n'));
  } else {
    await writeS3Config(cfg);
  }
  const reg = startProcess('docker-registry', '/usr/bin/docker-registry', ['serve', cfg], {
    env: { PATH: process.env.PATH }, logFile: path.join(work, 'registry.log'),
  });
  serverPids.peer = reg.child.pid;
  await waitFor('docker-registry', () => portOpen(REGISTRY_PORT), 30000, reg);
  await waitFor('docker-registry /v2/', async () => {
    try { return (await fetch(`http://${peerHost}/v2/`)).ok; } catch { return false; }
  }, 30000, reg);
}

async function writeS3Config(cfg) {
  const s3 = new S3Client({
    endpoint: S3_ENDPOINT, region: 'us-east-1', forcePathStyle: true,
    credentials: { accessKeyId: process.env.S3_ACCESS_KEY_ID ?? 'S3RVER', secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? 'S3RVER' },
  });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: PEER_BUCKET }));
  } catch (e) {
    if (!/BucketAlready/.test(e.name ?? '')) throw e;
  }
  s3.destroy();
  writeFileSync(cfg, [
    'version: 0.1',
    'log: { level: error }',
    'storage:',
    '  s3:',
    `    accesskey: ${process.env.S3_ACCESS_KEY_ID ?? 'S3RVER'}`,
    `    secretkey: ${process.env.S3_SECRET_ACCESS_KEY ?? 'S3RVER'}`,
    '    region: us-east-1',
    `    regionendpoint: ${S3_ENDPOINT}`,
    `    bucket: ${PEER_BUCKET}`,
    `    rootdirectory: /run-${process.pid}`,
    '    secure: false',
    '    v4auth: true',
    '  delete: { enabled: true }',
    '  redirect: { disable: true }',
    `http: { addr: "${peerHost}" }`,
    '',
  ].join('\n'));
}

async function startStrata({ who, port, storageDir, logName, cwd = root }) {
  if (await portOpen(port)) throw new Error(`127.0.0.1:${port} is taken; set BENCH_REGISTRY_API_PORT / BENCH_REGISTRY_API_FS_PORT`);
  const host = `127.0.0.1:${port}`;
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    PUBLIC_URL: `http://${host}`,
    STRATA_DATA_DIR: path.join(work, `strata-data-${port}`),
    STRATA_QUEUE_PREFIX: `strata-bench-registry-${process.pid}`,
    STRATA_GC_INTERVAL_MS: '0',
    NODE_NO_WARNINGS: '1',
    ...(storageDir ? { STRATA_STORAGE_DIR: storageDir } : {}),
  };
  // BENCH_API_CPU_PROF=<dir>: each api writes V8 CPU profiles there when the bench stops it (one per
  // thread: the main thread's is the largest; the loader's hooks thread writes one too).
  const prof = process.env.BENCH_API_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_API_CPU_PROF}`, '--import', './bench/support/exit-on-sigterm.mjs'] : [];
  // BENCH_API_NODE_ARGS: more node flags for the apis (e.g. --trace-gc; NODE_OPTIONS refuses some).
  prof.push(...(process.env.BENCH_API_NODE_ARGS ?? '').split(' ').filter(Boolean));
  const api = startProcess(logName, process.execPath, [...prof, '--import', './bench/support/register-ts.mjs', 'apps/api/src/main.ts'], {
    env, cwd, logFile: path.join(work, `${logName}.log`),
  });
  serverPids[who] = api.child.pid;
  await waitFor(logName, async () => {
    try { return (await fetch(`http://${host}/healthz`)).ok; } catch { return false; }
  }, 60000, api);
}

function tenant(name) {
  const out = run(process.execPath, ['--import', './bench/support/register-ts.mjs', 'bench/support/tenant.ts', name], { cwd: root, env: process.env });
  return JSON.parse(out.trim().split('\n').pop())[0];
}

// ---------------------------------------------------------------- cases
const skopeo = (args) => runAsync('skopeo', args, { env: { PATH: process.env.PATH, HOME: work } });
/** [first quartile, median, third quartile] of xs (linear interpolation between ranks). */
function quartiles(xs) {
  const sorted = [...xs].sort((a, b) => a - b);
  const at = (q) => {
    const rank = (sorted.length - 1) * q;
    const lo = Math.floor(rank);
    return sorted[lo] + (sorted[Math.min(lo + 1, sorted.length - 1)] - sorted[lo]) * (rank - lo);
  };
  return [at(0.25), at(0.5), at(0.75)];
}
async function timed(fn) {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}
/** Runs fn, adding to `cpu` the CPU time the server process `who` spent meanwhile. */
async function serverCpu(who, cpu, fn) {
  const before = cpuMs(serverPids[who]);
  const result = await fn();
  cpu.push(cpuMs(serverPids[who]) - before);
  return result;
}

const WHO = { strata: 'Strata (S3)', strataFs: 'Strata (filesystem)', peer: 'docker-registry (filesystem)', baseFs: 'Strata baseline (filesystem)' };
// BENCH_REGISTRY_BASELINE=<checkout of another commit>: a third Strata api on the filesystem driver
// runs from there, in the same rotation, so a change is compared with its baseline interleaved.
const BASELINE = process.env.BENCH_REGISTRY_BASELINE ?? null;
const API_BASE_PORT = Number(process.env.BENCH_REGISTRY_API_BASE_PORT ?? API_FS_PORT + 1);

async function measure(label, make, t) {
  const targets = {
    strata: { push: [], pull: [], pushCpu: [], pullCpu: [], ref: (repo) => `docker://${strataHost}/${t.name}/${repo}`, dest: ['--dest-creds', `x:${t.token}`], src: ['--src-creds', `x:${t.token}`] },
    strataFs: { push: [], pull: [], pushCpu: [], pullCpu: [], ref: (repo) => `docker://${strataFsHost}/${t.name}/fs-${repo}`, dest: ['--dest-creds', `x:${t.token}`], src: ['--src-creds', `x:${t.token}`] },
    peer: { push: [], pull: [], pushCpu: [], pullCpu: [], ref: (repo) => `docker://${peerHost}/bench/${repo}`, dest: [], src: [] },
  };
  if (BASELINE) targets.baseFs = { push: [], pull: [], pushCpu: [], pullCpu: [], ref: (repo) => `docker://127.0.0.1:${API_BASE_PORT}/${t.name}/base-${repo}`, dest: ['--dest-creds', `x:${t.token}`], src: ['--src-creds', `x:${t.token}`] };
  const names = Object.keys(targets);
  let info = null;
  // The machine's load (1-minute average) as the case starts and ends: the wall times mean little without it.
  const loadAtStart = loadavg()[0];
  for (let i = 0; i < RUNS; i++) {
    const salt = `${process.pid}-${label}-${i}-${randomBytes(4).toString('hex')}`;
    // Each registry gets an image of its own (salted apart): the two Strata apis share one database,
    // and a blob one of them holds must not spare the other its upload.
    const imgs = Object.fromEntries(names.map((who) => [who, make(`${salt}-${who}`)]));
    info = imgs.peer;
    // Rotate which registry goes first, so drift (S3 warm-up, page cache) hits all.
    const order = names.map((_, k) => names[(k + i) % names.length]);
    for (const who of order) {
      const tg = targets[who];
      const ref = tg.ref(`${label}-${i}:1`);
      tg.push.push(await serverCpu(who, tg.pushCpu, () => timed(() => skopeo(['copy', '-q', '--dest-tls-verify=false', ...tg.dest, `oci:${imgs[who].layout}:t`, ref]))));
    }
    for (const who of order) {
      const tg = targets[who];
      const dest = path.join(work, `pull-${who}-${label}-${i}`);
      tg.pull.push(await serverCpu(who, tg.pullCpu, () => timed(() => skopeo(['copy', '-q', '--src-tls-verify=false', ...tg.src, tg.ref(`${label}-${i}:1`), `dir:${dest}`]))));
      rmSync(dest, { recursive: true, force: true });
    }
    for (const img of Object.values(imgs)) rmSync(img.layout, { recursive: true, force: true });
    log(`${label} #${i + 1}: push ${names.map((w) => `${w} ${targets[w].push.at(-1).toFixed(0)}`).join(' / ')} ms; pull ${names.map((w) => `${w} ${targets[w].pull.at(-1).toFixed(0)}`).join(' / ')} ms`);
  }
  const loadAtEnd = loadavg()[0];
  const row = (op) => {
    const s = median(targets.strata[op]);
    const f = median(targets.strataFs[op]);
    const p = median(targets.peer[op]);
    return {
      case: `${label} ${op}`, bytes: info.bytes, layers: info.layers,
      strataMs: s, strataFsMs: f, peerMs: p, ratio: s / p, ratioFs: f / p,
      // Each run's own ratio (the two ran back to back in it, so a load swing between runs cancels):
      // its median and quartiles, beside the ratio of the medians above.
      pairedRatioFs: quartiles(targets.strataFs[op].map((x, k) => x / targets.peer[op][k])),
      strataRuns: targets.strata[op], strataFsRuns: targets.strataFs[op], peerRuns: targets.peer[op],
      // CPU time of the server process during the case (medians, ms): robust to the machine's load where wall time is not.
      strataCpuMs: median(targets.strata[`${op}Cpu`]), strataFsCpuMs: median(targets.strataFs[`${op}Cpu`]), peerCpuMs: median(targets.peer[`${op}Cpu`]),
      strataCpuRuns: targets.strata[`${op}Cpu`], strataFsCpuRuns: targets.strataFs[`${op}Cpu`], peerCpuRuns: targets.peer[`${op}Cpu`],
      load: [Math.round(loadAtStart * 10) / 10, Math.round(loadAtEnd * 10) / 10],
      ...(BASELINE ? { baseFsMs: median(targets.baseFs[op]), baseFsRuns: targets.baseFs[op], baseFsCpuMs: median(targets.baseFs[`${op}Cpu`]), baseFsCpuRuns: targets.baseFs[`${op}Cpu`], ratioBaseFs: median(targets.baseFs[op]) / p } : {}),
    };
  };
  return [row('push'), row('pull')];
}

// ---------------------------------------------------------------- main
async function cleanup() {
  await stopAll();
  for (const f of ['registry.log', 'strata-api.log', 'strata-api-fs.log']) {
    if (existsSync(path.join(work, f))) cpSync(path.join(work, f), path.join(resultsDir, `registry-${f}`));
  }
  if (!KEEP) rmSync(work, { recursive: true, force: true });
}

installSignalHandlers(cleanup);
const result = { runs: RUNS, peerStorage: PEER_STORAGE, rows: [], notes: [] };
if (PEER_STORAGE === 'filesystem') {
  result.notes.push('docker-registry stores on the local filesystem, not S3: its s3 driver needs ListMultipartUploads, which s3rver answers 501 NotImplemented (every push fails). The fair pair is Strata on its filesystem driver (STRATA_STORAGE_DIR) against it; Strata on s3rver is shown as well.');
}
const status = await runBench(result, async () => {
  log(`work dir ${work}; starting docker-registry (${PEER_STORAGE === 's3' ? `S3 ${S3_ENDPOINT}, bucket ${PEER_BUCKET}` : 'filesystem'}) and Strata's api`);
  await Promise.all([
    startPeer(),
    startStrata({ who: 'strata', port: API_PORT, logName: 'strata-api' }),
    startStrata({ who: 'strataFs', port: API_FS_PORT, storageDir: path.join(work, 'strata-store'), logName: 'strata-api-fs' }),
    ...(BASELINE ? [startStrata({ who: 'baseFs', port: API_BASE_PORT, storageDir: path.join(work, 'strata-store-base'), logName: 'strata-api-base-fs', cwd: BASELINE })] : []),
  ]);
  result.peerVersion = run('/usr/bin/docker-registry', ['--version']).trim();
  result.skopeoVersion = run('skopeo', ['--version']).trim();
  const t = tenant(`bench-registry-${process.pid}`);
  log(`making the ${BIG_MB} MiB tree`);
  const bigTree = makeBigTree();
  // One warm-up round each (connections, token path, S3 buckets), not counted.
  {
    const w = smallImage(`warmup-${process.pid}`);
    await skopeo(['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `x:${t.token}`, `oci:${w.layout}:t`, `docker://${strataHost}/${t.name}/warmup:1`]);
    const wf = smallImage(`warmup-fs-${process.pid}`);
    await skopeo(['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `x:${t.token}`, `oci:${wf.layout}:t`, `docker://${strataFsHost}/${t.name}/warmup-fs:1`]);
    await skopeo(['copy', '-q', '--dest-tls-verify=false', `oci:${w.layout}:t`, `docker://${peerHost}/bench/warmup:1`]);
    if (BASELINE) {
      const wb = smallImage(`warmup-base-${process.pid}`);
      await skopeo(['copy', '-q', '--dest-tls-verify=false', '--dest-creds', `x:${t.token}`, `oci:${wb.layout}:t`, `docker://127.0.0.1:${API_BASE_PORT}/${t.name}/warmup-base:1`]);
    }
  }
  // BENCH_REGISTRY_CASES=big (or small50) runs only that case (profiling one case).
  const cases = (process.env.BENCH_REGISTRY_CASES ?? 'big,small50').split(',');
  if (cases.includes('big')) result.rows.push(...(await measure('big', (salt) => bigImage(bigTree, salt), t)));
  if (cases.includes('small50')) result.rows.push(...(await measure('small50', (salt) => smallImage(salt), t)));
}, cleanup, log);
reportAndExit(result, status);

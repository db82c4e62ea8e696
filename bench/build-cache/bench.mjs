// Build-cache benchmark: the same Dockerfiles, base images (busybox from busybox-static; Debian
// minbase from debootstrap) and contexts built by Strata (through its HTTP API, api and worker as two
// node processes) and by BuildKit (`docker build` in dockerd 20.10 plus `docker push` to a local
// docker-registry) and by buildah (`buildah bud --layers --isolation chroot` on vfs storage plus
// `buildah push` to the same registry), side by side in one run.
// BENCH_BUILDAH=0 leaves buildah out; BENCH_DEBIAN=0 leaves the Debian cases out. The Debian base
// (`debootstrap --variant=minbase bookworm` from the mirror apt uses, about 30 s) is cached as
// .strata/bench/debian-minbase-bookworm.tar and made again only when that file is missing.
// Started by infra/local/bench.mjs, which provides the service environment (DATABASE_URL, ...).
// Writes its results as JSON to $BENCH_OUT. Nothing listens or connects beyond 127.0.0.1.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { debianBaseTar } from '../support/debian-base.mjs';
import { buildkitBuild as buildkitBuildAt, busyboxBaseTar, dockerClient, startDockerPeers, startStrataPair, strataApi as strataApiAt, tenants, waitForStrataBuild } from '../support/peers.mjs';
import { cleanUpWork, installSignalHandlers, median, reportAndExit, run, runAsync, runBench } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const API_PORT = Number(process.env.BENCH_API_PORT ?? 38230);
const REGISTRY_PORT = Number(process.env.BENCH_REGISTRY_PORT ?? 5000);
const SRC_FILES = Number(process.env.BENCH_SRC_FILES ?? 1000);
const KEEP = process.env.BENCH_KEEP === '1';
const BUILDAH = '/usr/bin/buildah';
const WITH_BUILDAH = process.env.BENCH_BUILDAH !== '0' && existsSync(BUILDAH);
const WITH_DEBIAN = process.env.BENCH_DEBIAN !== '0';
const DEBIAN_CACHE = path.join(root, '.strata/bench'); // git-ignored

const log = (m) => process.stderr.write(`[bench:build-cache] ${m}\n`);
// Short path: dockerd's unix sockets must fit in 108 bytes.
const work = mkdtempSync(path.join(tmpdir(), 'sb-'));
const resultsDir = path.join(root, 'bench/results');
mkdirSync(resultsDir, { recursive: true });

const docker = dockerClient(work);
const regHost = `127.0.0.1:${REGISTRY_PORT}`;

// ---------------------------------------------------------------- fixtures
/**
 * A base image as every side gets it, untimed: Strata `POST /v1/repositories/<repo>/import?tag=<tag>`,
 * `docker import <tar> <repo>:<tag>`, and in each buildah store `localhost/<repo>:<tag>`.
 */
const baseImage = (repo, tag, tar, cmd) => ({ repo, tag, ref: `${repo}:${tag}`, tar, cmd });

function writeFiles(dir, prefix, n, salt = '') {
  mkdirSync(dir, { recursive: true });
  for (let i = 0; i < n; i++) {
    const name = `${prefix}-${String(i).padStart(4, '0')}.txt`;
    writeFileSync(path.join(dir, name), `${name} ${salt}\n${'x'.repeat(200 + (i % 50))}\n`);
  }
}

const dockerfiles = {
  // COPY-only: works with today's worker.
  'app-copy': [
    'FROM base:1',
    'WORKDIR /app',
    'COPY deps/ /app/deps/',
    'COPY src/ /app/src/',
    'ENV APP_MODE=prod',
    'CMD ["/bin/sh"]',
  ],
  'multi-copy': [
    'FROM base:1 AS a',
    'COPY a/ /out/',
    'FROM base:1 AS b',
    'COPY b/ /out/',
    'FROM base:1',
    'COPY --from=a /out/ /app/a/',
    'COPY --from=b /out/ /app/b/',
    'CMD ["/bin/sh"]',
  ],
  // With RUN (the STACK-NOTES peer measurement: RUN, COPY of 1,000 files, RUN).
  'app-run': [
    'FROM base:1',
    'RUN mkdir -p /app/deps && echo installed > /app/deps/marker',
    'COPY src/ /app/src/',
    'RUN find /app/src -type f | wc -l > /app/file-count',
    'CMD ["/bin/sh"]',
  ],
  'multi-run': [
    'FROM base:1 AS a',
    'COPY a/ /out/',
    'RUN cat /out/* | wc -c > /out/size-a',
    'FROM base:1 AS b',
    'COPY b/ /out/',
    'RUN cat /out/* | wc -c > /out/size-b',
    'FROM base:1',
    'COPY --from=a /out/ /app/a/',
    'COPY --from=b /out/ /app/b/',
    'CMD ["/bin/sh"]',
  ],
  // On the Debian minbase base (debian:minbase): the same shapes with Debian's own tools in RUN
  // (useradd from passwd, dpkg), all without network (RUN gets --network none).
  'debian-run': [
    'FROM debian:minbase',
    'RUN useradd -m app && mkdir -p /app && chown app /app',
    'COPY src/ /app/src/',
    'RUN find /app/src -type f | wc -l > /app/count && dpkg -l > /app/packages',
    'CMD ["/bin/bash"]',
  ],
  'debian-multi-run': [
    'FROM debian:minbase AS a',
    'COPY a/ /out/',
    'RUN sha256sum /out/*.txt > /out/sums-a && dpkg-query -W > /out/packages-a',
    'FROM debian:minbase AS b',
    'COPY b/ /out/',
    'RUN sha256sum /out/*.txt > /out/sums-b && dpkg-query -W > /out/packages-b',
    'FROM debian:minbase',
    'COPY --from=a /out/ /app/a/',
    'COPY --from=b /out/ /app/b/',
    'CMD ["/bin/bash"]',
  ],
};

/** A context directory for one of the Dockerfiles; `salt` makes every file (so every layer) new. */
function makeContext(kind, salt) {
  const dir = mkdtempSync(path.join(work, `ctx-${kind}-`));
  writeFileSync(path.join(dir, 'Dockerfile'), `${dockerfiles[kind].join('\n')}\n`);
  if (!kind.includes('multi')) {
    if (kind.startsWith('app')) writeFiles(path.join(dir, 'deps'), 'dep', 200, salt); // debian-run has src/ only
    writeFiles(path.join(dir, 'src'), 'file', SRC_FILES, salt);
  } else {
    writeFiles(path.join(dir, 'a'), 'a', SRC_FILES / 2, salt);
    writeFiles(path.join(dir, 'b'), 'b', SRC_FILES / 2, salt);
  }
  return dir;
}

/**
 * Untimed, before every timed build on every side: flush dirty pages, so no tool pays for the
 * writeback of the one before it (buildah on vfs writes a whole rootfs per layer: hundreds of MB
 * with the Debian base, which the next build would otherwise wait on).
 */
function settleDisk() {
  run('sync', []);
}

// ---------------------------------------------------------------- Strata
let apiUrl = '';

const strataApi = (token, method, pathAndQuery, body, contentType) => strataApiAt(apiUrl, token, method, pathAndQuery, body, contentType);

const tarBytes = new Map();
async function importBase(token, base) {
  if (!tarBytes.has(base.tar)) tarBytes.set(base.tar, readFileSync(base.tar));
  const res = await strataApi(token, 'POST', `/v1/repositories/${base.repo}/import?tag=${base.tag}`, tarBytes.get(base.tar), 'application/x-tar');
  if (res.status !== 201) throw new Error(`${base.ref} import answered ${res.status}: ${res.text}`);
}

const tarOf = (dir) => run('tar', ['-cf', '-', '-C', dir, '.'], { encoding: 'buffer' });

/**
 * How the client learns that the build ended: `follow` (the default) reads the build's event stream
 * (GET /v1/builds/{id}/logs as text/event-stream) until its `end` event and then GETs the build once,
 * which is what `strata build` does before it exits; `poll` (BENCH_STRATA_WAIT=poll) GETs the build
 * every 20 ms, as this benchmark did before 2026-12-01.
 */
const STRATA_WAIT = process.env.BENCH_STRATA_WAIT ?? 'follow';

/** Reads the build's SSE log until its `end` event; false when the stream closed without one. */
async function followToEnd(token, id) {
  const res = await fetch(`${apiUrl}/v1/builds/${id}/logs`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
  if (!res.ok || !res.body) return false;
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    if (/(^|\n)event: end\n/.test(buf)) {
      await res.body.cancel().catch(() => undefined);
      return true;
    }
  }
  return false;
}

/** POST until the client knows the build succeeded (see STRATA_WAIT); returns { ms, build }. The context tar is made before the clock starts. */
async function strataBuild(token, repo, tag, ctxDir) {
  const body = tarOf(ctxDir);
  settleDisk();
  const t0 = performance.now();
  const res = await strataApi(token, 'POST', `/v1/builds?repository=${encodeURIComponent(repo)}&tag=${tag}`, body, 'application/x-tar');
  if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${res.text}`);
  // A stream that ends without `end` (a dropped connection) falls back to polling.
  if (STRATA_WAIT === 'follow') await followToEnd(token, res.json.id);
  const build = await waitForStrataBuild(apiUrl, token, res.json.id, { pollMs: 20, timeoutMs: 300_000, since: t0 });
  return { ms: performance.now() - t0, build };
}

// ---------------------------------------------------------------- BuildKit
/** `docker build` + `docker push`, the whole of it timed (the bench sets STRATA_RUN_NETWORK=none, the peer builds with --network none). */
const buildkitBuild = (image, ctxDir) => buildkitBuildAt(docker, regHost, image, ctxDir);

async function buildkitCold() {
  await docker(['builder', 'prune', '-af']);
  // containerd removes the pruned snapshots after the prune answers: let that end before anyone builds.
  settleDisk();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  settleDisk();
}

// ---------------------------------------------------------------- buildah
// Each buildah store (--root/--runroot) is its own cache: the warm cases share one store, every cold
// iteration gets a fresh one with only the case's base in it (made untimed, from the same rootfs tar).
const buildahEnv = () => ({ PATH: process.env.PATH, HOME: work, TMPDIR: work });
const buildahAt = (store, args) => runAsync(BUILDAH, ['--storage-driver', 'vfs', '--root', path.join(store, 'root'), '--runroot', path.join(store, 'run'), ...args], { env: buildahEnv() });
let storeSeq = 0;

/** A fresh store holding localhost/<base> (`buildah from scratch` + `add` of the rootfs tar + `commit`), untimed. */
async function buildahStore(name, base) {
  const store = path.join(work, 'bh', `${name}-${storeSeq++}`);
  mkdirSync(store, { recursive: true });
  const c = (await buildahAt(store, ['from', 'scratch'])).trim().split('\n').pop();
  await buildahAt(store, ['add', '--quiet', c, base.tar, '/']);
  await buildahAt(store, ['config', '--cmd', base.cmd, c]);
  await buildahAt(store, ['commit', '--quiet', c, `localhost/${base.ref}`]);
  await buildahAt(store, ['rm', c]);
  return store;
}

/**
 * `buildah bud` + `buildah push` to the local registry, the whole of it timed. No --network none:
 * buildah refuses any network mode but host with --isolation chroot (the RUN steps here use none).
 */
async function buildahBuild(store, image, ctxDir) {
  const local = `localhost/${image}`;
  settleDisk();
  const t0 = performance.now();
  await buildahAt(store, ['bud', '--layers', '--isolation', 'chroot', '--pull-never', '-q', '-f', path.join(ctxDir, 'Dockerfile'), '-t', local, ctxDir]);
  await buildahAt(store, ['push', '--quiet', '--tls-verify=false', local, `docker://${regHost}/${image}`]);
  return { ms: performance.now() - t0 };
}

// ---------------------------------------------------------------- services
async function startPeers(base) {
  const dockerVersion = await startDockerPeers({ work, registryPort: REGISTRY_PORT, regHost, docker });
  await docker(['import', base.tar, base.ref]);
  return { dockerVersion };
}

async function startStrata() {
  apiUrl = await startStrataPair({
    work,
    port: API_PORT,
    // Like for like with BuildKit's --network none below (Strata's default is the bridge: docs/adr/0024).
    env: { STRATA_QUEUE_PREFIX: `strata-bench-${process.pid}`, STRATA_RUN_NETWORK: 'none' },
  });
}

// ---------------------------------------------------------------- cases
/**
 * For each case, N iterations, Strata and BuildKit (in turn: Strata first in even iterations, BuildKit in odd ones) then buildah in each (interleaved, so drift hits all).
 * cold: fresh tenant (Strata's cache is per tenant) / `docker builder prune -af` / a fresh buildah store,
 * and a context salted per iteration so no layer exists anywhere yet (registry and S3 included).
 * `base` is the one base image the Dockerfiles of `kind` and `multiKind` are FROM: only it is imported
 * into the tenants made here and into the buildah stores. Rows are pushed onto `rows` as each case
 * ends, so a failure keeps the cases measured before it.
 * `warmup` (Dockerfile lines on `base`; its context holds warmup.txt and src/ of SRC_FILES files), when given, is built once untimed before the cold case, on
 * Strata (in the warm tenant) and BuildKit (build + push): the first use of a big base has one-off costs
 * the later cold iterations do not pay (Strata's worker fetches the base layer from S3 and unpacks it
 * into its layer store, shared by all tenants; `docker push` uploads the base layer to the registry,
 * later pushes mount it; a COPY onto the base makes Strata index the base layer once). Without it only
 * cold iteration 1 would carry them. Their times go to the notes.
 * buildah needs none: every cold iteration gets a fresh store anyway.
 */
async function runCases(kind, multiKind, base, rows = [], { warmup = null } = {}) {
  const names = [];
  for (let i = 0; i < RUNS; i++) names.push(`bench-${kind}-cold-${process.pid}-${i}`, `bench-${multiKind}-multi-${process.pid}-${i}`);
  names.push(`bench-${kind}-warm-${process.pid}`);
  log(`creating ${names.length} tenants and importing ${base.ref} into each`);
  const ts = tenants(names);
  // One at a time: concurrent imports of the same blobs race on the Blob row (a 500 from the api; reported).
  const ti = performance.now();
  for (const t of ts) await importBase(t.token, base);
  log(`${base.ref} imported into ${ts.length} tenants in ${((performance.now() - ti) / 1000).toFixed(1)} s (untimed)`);
  const token = (n) => ts.find((t) => t.name === n).token;

  const measure = async (label, prepare, strata, buildkit, buildah) => {
    const s = [];
    const b = [];
    const bh = [];
    let buildahError = WITH_BUILDAH ? null : 'buildah left out (BENCH_BUILDAH=0 or /usr/bin/buildah missing)';
    const worker = [];
    const queued = [];
    const inSteps = [];
    let hits = '';
    for (let i = 0; i < RUNS; i++) {
      const ctx = await prepare(i);
      // Who builds first after the prepare alternates, so neither always meets what it left behind
      // (a cold case's prune: containerd deletes the pruned snapshots in the background).
      const buildkitFirst = i % 2 === 1 ? await buildkit(i, ctx) : null;
      const r = await strata(i, ctx);
      s.push(r.ms);
      worker.push(r.build.durationMs);
      queued.push(Date.parse(r.build.startedAt) - Date.parse(r.build.createdAt));
      inSteps.push(r.build.steps.reduce((t, st) => t + (st.durationMs ?? 0), 0));
      hits = `${r.build.steps.filter((st) => st.cached).length}/${r.build.steps.length}`;
      b.push((buildkitFirst ?? (await buildkit(i, ctx))).ms);
      if (!buildahError) {
        try { bh.push((await buildah(i, ctx)).ms); } catch (e) { buildahError = `buildah failed: ${e.message.split('\n').slice(0, 3).join(' ').slice(0, 400)}`; log(`${label}: ${buildahError}`); }
      }
      log(`${label} #${i + 1}: Strata ${s.at(-1).toFixed(0)} ms, BuildKit ${b.at(-1).toFixed(0)} ms, buildah ${buildahError ? '-' : `${bh.at(-1).toFixed(0)} ms`}`);
    }
    const bhMs = buildahError ? null : median(bh);
    rows.push({
      case: label, strataMs: median(s), buildkitMs: median(b), ratio: median(s) / median(b),
      buildahMs: bhMs, ratioBuildah: bhMs == null ? null : median(s) / bhMs, buildahError, buildahRuns: bh,
      strataWorkerMs: median(worker), strataQueuedMs: median(queued), strataStepsMs: median(inSteps), strataHits: hits,
      strataRuns: s, buildkitRuns: b,
    });
  };

  const tagOf = (i) => `r${i}`;
  const warm = token(`bench-${kind}-warm-${process.pid}`);
  if (warmup) {
    const dir = mkdtempSync(path.join(work, `warmup-${kind}-`));
    writeFileSync(path.join(dir, 'Dockerfile'), `${warmup.join('\n')}\n`);
    writeFileSync(path.join(dir, 'warmup.txt'), `warm-up ${process.pid}\n`);
    writeFiles(path.join(dir, 'src'), 'warm', SRC_FILES, `warm-up ${process.pid}`);
    const sw = await strataBuild(warm, `bench/${kind}-warmup`, '1', dir);
    const bw = await buildkitBuild(`bench/${kind}-warmup:1`, dir);
    const note = `first use of ${base.ref} (${warmup.slice(1).join('; ')}), untimed warm-up before ${kind}: 1 cold: Strata ${sw.ms.toFixed(0)} ms, BuildKit ${bw.ms.toFixed(0)} ms`;
    log(note);
    result.notes.push(note.charAt(0).toUpperCase() + note.slice(1));
  }
  // 1. cold
  await measure(`${kind}: 1 cold`, async (i) => { await buildkitCold(); return makeContext(kind, `cold-${process.pid}-${i}`); },
    (i, ctx) => strataBuild(token(`bench-${kind}-cold-${process.pid}-${i}`), `bench/${kind}-cold`, tagOf(i), ctx),
    (i, ctx) => buildkitBuild(`bench/${kind}-cold-${i}:${tagOf(i)}`, ctx),
    async (i, ctx) => buildahBuild(await buildahStore(`${kind}-cold`, base), `buildah/${kind}-cold-${i}:${tagOf(i)}`, ctx));

  // 2. unchanged rebuild (after one untimed priming build on each side)
  const warmCtx = makeContext(kind, `warm-${process.pid}`);
  await strataBuild(warm, `bench/${kind}`, 'prime', warmCtx);
  await buildkitBuild(`bench/${kind}:prime`, warmCtx);
  let bhWarm = null;
  if (WITH_BUILDAH) {
    try {
      bhWarm = await buildahStore(`${kind}-warm`, base);
      await buildahBuild(bhWarm, `buildah/${kind}:prime`, warmCtx);
    } catch (e) { log(`buildah priming build failed: ${e.message}`); }
  }
  const bhWarmBuild = (image) => {
    if (!bhWarm) throw new Error('the untimed priming build under buildah failed');
    return buildahBuild(bhWarm, image, warmCtx);
  };
  await measure(`${kind}: 2 no change`, async () => warmCtx,
    (i) => strataBuild(warm, `bench/${kind}`, tagOf(i), warmCtx),
    (i) => buildkitBuild(`bench/${kind}:${tagOf(i)}`, warmCtx),
    (i) => bhWarmBuild(`buildah/${kind}:${tagOf(i)}`));

  // 3. one source file changed (a new content every iteration, so each is a real miss from that COPY on)
  const changed = path.join(warmCtx, 'src', `file-${String(Math.floor(SRC_FILES / 2)).padStart(4, '0')}.txt`);
  await measure(`${kind}: 3 one file changed`, async (i) => { writeFileSync(changed, `changed ${process.pid} ${i}\n`); return warmCtx; },
    (i) => strataBuild(warm, `bench/${kind}`, `c${i}`, warmCtx),
    (i) => buildkitBuild(`bench/${kind}:c${i}`, warmCtx),
    (i) => bhWarmBuild(`buildah/${kind}:c${i}`));

  // 4. two independent stages, cold
  await measure(`${multiKind}: 4 two-stage cold`, async (i) => { await buildkitCold(); return makeContext(multiKind, `multi-${process.pid}-${i}`); },
    (i, ctx) => strataBuild(token(`bench-${multiKind}-multi-${process.pid}-${i}`), `bench/${multiKind}`, tagOf(i), ctx),
    (i, ctx) => buildkitBuild(`bench/${multiKind}-${i}:${tagOf(i)}`, ctx),
    async (i, ctx) => buildahBuild(await buildahStore(`${multiKind}-cold`, base), `buildah/${multiKind}-${i}:${tagOf(i)}`, ctx));
  return rows;
}

/**
 * Issue 4's RUN benchmark: ten RUN steps on the busybox base, cold (a per-iteration salt in the
 * first RUN makes every step a miss on both sides). Also reports Strata's median RUN step time
 * (container start, snapshot mount, diff of a small change and layer upload, per the step durations).
 */
async function runTenRun(base) {
  const names = Array.from({ length: RUNS }, (_, i) => `bench-run10-${process.pid}-${i}`);
  const ts = tenants(names);
  for (const t of ts) await importBase(t.token, base);
  const s = [];
  const b = [];
  const perRun = [];
  const bh = [];
  let buildahError = WITH_BUILDAH ? null : 'buildah left out (BENCH_BUILDAH=0 or /usr/bin/buildah missing)';
  for (let i = 0; i < RUNS; i++) {
    await buildkitCold();
    const dir = mkdtempSync(path.join(work, 'ctx-run10-'));
    const lines = ['FROM base:1', `RUN echo ${process.pid}-${i} > /salt`];
    for (let k = 1; k < 10; k++) lines.push(`RUN mkdir -p /work/s${k} && echo step ${k} > /work/s${k}/out && ls /work > /dev/null`);
    writeFileSync(path.join(dir, 'Dockerfile'), `${lines.join('\n')}\n`);
    const r = await strataBuild(ts[i].token, 'bench/run10', `r${i}`, dir);
    s.push(r.ms);
    perRun.push(median(r.build.steps.filter((st) => st.instruction.startsWith('RUN')).map((st) => st.durationMs ?? 0)));
    b.push((await buildkitBuild(`bench/run10-${i}:r${i}`, dir)).ms);
    if (!buildahError) {
      try { bh.push((await buildahBuild(await buildahStore('run10', base), `buildah/run10-${i}:r${i}`, dir)).ms); } catch (e) { buildahError = `buildah failed: ${e.message.split('\n').slice(0, 3).join(' ').slice(0, 400)}`; log(`run10: ${buildahError}`); }
    }
    log(`run10: 5 ten RUN steps cold #${i + 1}: Strata ${s.at(-1).toFixed(0)} ms (median RUN step ${perRun.at(-1)} ms), BuildKit ${b.at(-1).toFixed(0)} ms, buildah ${buildahError ? '-' : `${bh.at(-1).toFixed(0)} ms`}`);
  }
  const bhMs = buildahError ? null : median(bh);
  return {
    case: 'run10: 5 ten RUN steps, cold', strataMs: median(s), buildkitMs: median(b), ratio: median(s) / median(b),
    buildahMs: bhMs, ratioBuildah: bhMs == null ? null : median(s) / bhMs, buildahError, buildahRuns: bh,
    strataRunStepMs: median(perRun), strataRuns: s, buildkitRuns: b, strataHits: '0/10',
  };
}

/** Does this worker run RUN steps yet? One tiny build tells. */
async function strataHasRun(base) {
  const [t] = tenants([`bench-probe-${process.pid}`]);
  await importBase(t.token, base);
  const dir = mkdtempSync(path.join(work, 'probe-'));
  writeFileSync(path.join(dir, 'Dockerfile'), 'FROM base:1\nRUN echo ok > /probe\n');
  try {
    await strataBuild(t.token, 'bench/probe', '1', dir);
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: e.build?.error ? JSON.stringify(e.build.error) : e.message };
  }
}

// ---------------------------------------------------------------- three-peer table
/** Strata vs BuildKit vs buildah, markdown; "-" where buildah could not run a case, with the reason below. */
function threePeerTable(r) {
  const ms = (x) => (x == null ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${x.toFixed(0)} ms`);
  const ratio = (x) => (x == null ? '-' : `**${x.toFixed(2)}**`);
  const out = [
    `Build cache, three peers: Strata (POST /v1/builds to succeeded) vs BuildKit (dockerd ${r.dockerVersion ?? '?'}: docker build + docker push) vs buildah (${r.buildahVersion ?? 'not run'}: buildah bud --layers --isolation chroot, vfs storage, + buildah push), to the same local registry; median of ${r.runs} runs`,
    '',
    '| case | Strata | BuildKit | buildah | ratio Strata/BuildKit | ratio Strata/buildah |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  const why = [];
  for (const row of r.rows) {
    out.push(`| ${row.case} | ${ms(row.strataMs)} | ${ms(row.buildkitMs)} | ${ms(row.buildahMs)} | ${ratio(row.ratio)} | ${ratio(row.ratioBuildah)} |`);
    if (row.buildahError) why.push(`- ${row.case}: buildah "-" because ${row.buildahError}`);
  }
  if (why.length) out.push('', ...why);
  return out.join('\n');
}

// ---------------------------------------------------------------- main
const cleanup = () => cleanUpWork({ work, resultsDir, prefix: 'build-cache', keep: KEEP });

/** The Debian minbase cases: debian:minbase into dockerd (untimed), then the four cases through runCases. */
async function runDebianCases(debian) {
  const t0 = performance.now();
  await docker(['import', debian.tar, debian.ref]);
  log(`docker import ${debian.ref}: ${((performance.now() - t0) / 1000).toFixed(1)} s (untimed)`);
  try {
    await runCases('debian-run', 'debian-multi-run', debian, result.rows, { warmup: ['FROM debian:minbase', 'COPY warmup.txt /tmp/warmup.txt', 'RUN true'] });
  } catch (e) {
    // Reported, not worked around: the rows measured so far stay, the build's error goes to the notes and a file.
    status = 1;
    const failure = { message: e.message, build: e.build ?? null };
    result.debianError = failure;
    writeFileSync(path.join(resultsDir, 'build-cache-debian-failure.json'), `${JSON.stringify(failure, null, 2)}\n`);
    result.notes.push(`Debian cases stopped by a failure (details in bench/results/build-cache-debian-failure.json and build-cache-worker.log): ${e.message.split('\n')[0].slice(0, 1500)}`);
    log(`Debian cases failed: ${e.message}`);
  }
}

installSignalHandlers(cleanup);
const result = { runs: RUNS, srcFiles: SRC_FILES, strataWait: STRATA_WAIT, rows: [], notes: [] };
result.notes.push(STRATA_WAIT === 'follow'
  ? 'Strata time ends when the client has read the end event of the build\'s event stream (GET /v1/builds/{id}/logs, as `strata build` follows it) and then GET the build (BENCH_STRATA_WAIT=poll: GET every 20 ms instead)'
  : 'Strata time ends at the first GET /v1/builds/{id} (polled every 20 ms, BENCH_STRATA_WAIT=poll) that says succeeded');
const benchStarted = performance.now();
const status = await runBench(result, async () => {
  let status = 0;
  const busybox = baseImage('base', '1', busyboxBaseTar(work), '/bin/sh');
  let debian = null;
  if (WITH_DEBIAN) {
    try {
      const d = debianBaseTar(DEBIAN_CACHE, { log });
      debian = baseImage('debian', 'minbase', d.tar, '/bin/bash');
      result.debianBase = { tar: path.relative(root, d.tar), bytes: d.bytes, cached: d.cached, made: d.made, mirror: d.mirror, debootstrapSeconds: d.debootstrapSeconds };
      result.notes.push(`Debian base (debian:minbase): debootstrap --variant=minbase ${d.suite ?? 'bookworm'} from ${d.mirror ?? '?'}, apt caches and lists removed, ${(d.bytes / 1024 ** 2).toFixed(0)} MiB tar; debootstrap took ${d.debootstrapSeconds ?? '?'} s ${d.cached ? `when the cached ${path.relative(root, d.tar)} was made (${d.made ?? '?'})` : 'in this run'}. Imported untimed on every side, only into the tenants and buildah stores of the Debian cases.`);
    } catch (e) {
      status = 1;
      result.debianError = { message: e.message };
      result.notes.push(`Debian cases skipped: the Debian base could not be made: ${e.message.split('\n')[0]}`);
      log(`Debian base failed: ${e.message}`);
    }
  } else result.notes.push('Debian cases left out (BENCH_DEBIAN=0)');
  log(`work dir ${work}; starting docker-registry, dockerd, Strata api and worker`);
  const [{ dockerVersion }] = await Promise.all([startPeers(busybox), startStrata()]);
  result.dockerVersion = dockerVersion;
  if (WITH_BUILDAH) result.buildahVersion = run(BUILDAH, ['--version']).trim().replace(/^buildah version /, '');
  await runCases('app-copy', 'multi-copy', busybox, result.rows);
  const probe = await strataHasRun(busybox);
  result.runSupported = probe.ok;
  if (probe.ok) {
    // Both sides build this shape once, untimed, before its cold iterations: the first RUN over a
    // COPY of many files in a process's life (Strata's unpack path, BuildKit's snapshotter) is a
    // cold process, not a cold cache, which is what the cold rows measure.
    await runCases('app-run', 'multi-run', busybox, result.rows, { warmup: ['FROM base:1', 'RUN true', 'COPY src/ /warm/', 'RUN find /warm -type f | wc -l > /warm-count'] });
    result.rows.push(await runTenRun(busybox));
    if (debian) await runDebianCases(debian);
  }
  else {
    result.notes.push(`RUN cases skipped: Strata's worker refused RUN (${probe.reason})`);
    if (debian) result.notes.push('Debian cases skipped: their Dockerfiles need RUN');
    log(`RUN cases skipped: ${probe.reason}`);
  }
  return status;
}, cleanup, log);
result.seconds = Number(((performance.now() - benchStarted) / 1000).toFixed(1));
log(`build-cache benchmark took ${result.seconds} s`);
if (result.rows.length > 0) {
  const table = threePeerTable(result);
  writeFileSync(path.join(resultsDir, 'build-cache-three-peers.md'), `${table}\n`);
  process.stderr.write(`\n${table}\n\n`);
  result.notes.push('The Strata / BuildKit / buildah columns alone are in bench/results/build-cache-three-peers.md, printed above by the build-cache benchmark');
}
reportAndExit(result, status);

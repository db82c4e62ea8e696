// What the benchmarks that build start side by side: a docker-registry and a dockerd 20.10 (the
// BuildKit peer, its own data and exec roots and socket under `work`), and Strata's api and worker
// from source; plus tenants made as an operator would, and the ways each side is driven (Strata's
// HTTP API, `strata build`, `docker build` + `docker push`). Everything listens on 127.0.0.1 or a socket.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { portOpen, run, runAsync, startProcess, waitFor } from './procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const loader = ['--import', './bench/support/register-ts.mjs'];

/**
 * Starts docker-registry on `regHost` (filesystem storage under `work`) and dockerd with its socket
 * at `${work}/d/docker.sock`; `docker(args)` runs the client against it. Answers dockerd's version.
 */
export async function startDockerPeers({ work, registryPort, regHost, docker }) {
  if (await portOpen(registryPort)) throw new Error(`127.0.0.1:${registryPort} is taken; set BENCH_REGISTRY_PORT`);
  const regDir = path.join(work, 'registry');
  mkdirSync(regDir, { recursive: true });
  writeFileSync(path.join(work, 'registry.yml'), [
    'version: 0.1',
    'log: { level: error }',
    `storage: { filesystem: { rootdirectory: ${regDir} }, delete: { enabled: true } }`,
    `http: { addr: "${regHost}" }`,
    '',
  ].join('\n'));
  const reg = startProcess('docker-registry', '/usr/bin/docker-registry', ['serve', path.join(work, 'registry.yml')], {
    env: { PATH: process.env.PATH }, logFile: path.join(work, 'registry.log'),
  });
  const d = path.join(work, 'd');
  mkdirSync(d, { recursive: true });
  const dockerd = startProcess('dockerd', '/usr/sbin/dockerd', [
    '--storage-driver', 'overlay2', '--data-root', path.join(d, 'data'), '--exec-root', path.join(d, 'exec'),
    '--pidfile', path.join(d, 'docker.pid'), '-H', `unix://${d}/docker.sock`,
    '--iptables=false', '--ip-forward=false', '--ip-masq=false', '--bridge=none',
  ], { env: { PATH: process.env.PATH }, logFile: path.join(work, 'dockerd.log') });
  await waitFor('docker-registry', () => portOpen(registryPort), 30000, reg);
  await waitFor('dockerd', async () => {
    try { await docker(['version', '--format', '{{.Server.Version}}']); return true; } catch { return false; }
  }, 60000, dockerd);
  return (await docker(['version', '--format', '{{.Server.Version}}'])).trim();
}

/** Starts Strata's api and one worker from source on `port` with the service env and `env` on top; answers the api's URL once it is healthy. */
export async function startStrataPair({ work, port, env }) {
  return (await startStrataProcesses({ work, port, env })).url;
}

/** startStrataPair, answering the two processes' pids too (bench/memory reads their /proc status). */
export async function startStrataProcesses({ work, port, env }) {
  if (await portOpen(port)) throw new Error(`127.0.0.1:${port} is taken; set BENCH_API_PORT`);
  const all = { ...process.env, PORT: String(port), HOST: '127.0.0.1', STRATA_DATA_DIR: path.join(work, 'strata-worker'), NODE_NO_WARNINGS: '1', ...env };
  const api = startProcess('strata-api', process.execPath, [...loader, 'apps/api/src/main.ts'], { env: all, cwd: root, logFile: path.join(work, 'api.log') });
  // BENCH_WORKER_NODE_ARGS (say `--cpu-prof --cpu-prof-dir=/tmp/prof`, which NODE_OPTIONS refuses): node flags for the worker alone, to profile it.
  const workerArgs = (process.env.BENCH_WORKER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const worker = startProcess('strata-worker', process.execPath, [...workerArgs, ...loader, 'apps/worker/src/bin.ts'], { env: all, cwd: root, logFile: path.join(work, 'worker.log') });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('strata api', async () => {
    try { return (await fetch(`${url}/healthz`)).ok; } catch { return false; }
  }, 60000, api);
  return { url, apiPid: api.child.pid, workerPid: worker.child.pid };
}

/** Tenants with an admin token each, made as an operator would: [{ name, token }]. */
export function tenants(names) {
  const out = run(process.execPath, [...loader, 'bench/support/tenant.ts', ...names], { cwd: root, env: process.env });
  return JSON.parse(out.trim().split('\n').pop());
}

// ---------------------------------------------------------------- driving each side

/** The docker CLI against the dockerd startDockerPeers starts in `work`: `docker(args)` resolves with its stdout. */
export function dockerClient(work) {
  // 20.10 with BuildKit built in; the `docker` first on PATH lacks buildx.
  const env = { PATH: process.env.PATH, HOME: work, DOCKER_HOST: `unix://${work}/d/docker.sock`, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: path.join(work, 'docker-config'), DOCKER_CLI_HINTS: 'false' };
  return (args) => runAsync('/usr/bin/docker', args, { env });
}

/**
 * `docker build` + `docker push` to the local registry, the whole of it timed, after a `sync` (no
 * side pays for the writeback of the one before). --network none: what Strata's RUN gets in the
 * benchmarks; dockerd runs with --bridge=none.
 */
export async function buildkitBuild(docker, regHost, image, dir) {
  run('sync', []);
  const t0 = performance.now();
  await docker(['build', '-q', '--network', 'none', '-t', `${regHost}/${image}`, dir]);
  await docker(['push', '-q', `${regHost}/${image}`]);
  return { ms: performance.now() - t0 };
}

/** One request to Strata's HTTP API; a web stream body is sent as it is read. Answers { status, json, text }. */
export async function strataApi(apiUrl, token, method, pathAndQuery, body, contentType) {
  const headers = { authorization: `Bearer ${token}` };
  if (contentType) headers['content-type'] = contentType;
  const res = await fetch(`${apiUrl}${pathAndQuery}`, { method, headers, body, ...(body instanceof ReadableStream ? { duplex: 'half' } : {}) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

/**
 * Polls the build every `pollMs` until it succeeded (answers its JSON); throws when it failed or was
 * cancelled (the error's `build` holds the JSON) or is still going `timeoutMs` after `since`.
 */
export async function waitForStrataBuild(apiUrl, token, id, { pollMs = 100, timeoutMs = Infinity, since = performance.now() } = {}) {
  for (;;) {
    const b = await strataApi(apiUrl, token, 'GET', `/v1/builds/${id}`);
    if (b.json?.status === 'succeeded') return b.json;
    if (['failed', 'cancelled'].includes(b.json?.status)) {
      const err = new Error(`Strata build ${id} ${b.json.status}: ${JSON.stringify(b.json.error)}`);
      err.build = b.json;
      throw err;
    }
    if (performance.now() - since > timeoutMs) throw new Error(`Strata build ${id} still ${b.json?.status} after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Compiles apps/cli to apps/cli/dist, which strataCliBuild runs. */
export function buildCli() {
  execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-b', 'apps/cli/tsconfig.json'], { cwd: root, stdio: 'inherit' });
}

/**
 * `strata build DIR -t REF` (apps/cli/dist) with its own cache directory, timed from its start to
 * its exit; `onStart(pid)` once it is spawned. Answers { ms, stderr }; rejects when it fails.
 */
export function strataCliBuild({ apiUrl, token, cacheDir, dir, ref, trace = false, onStart }) {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(root, 'apps/cli/dist/bin.js'), 'build', dir, '-t', ref], {
      env: { PATH: process.env.PATH, STRATA_URL: apiUrl, STRATA_TOKEN: token, STRATA_CACHE_DIR: cacheDir, ...(trace ? { STRATA_TRACE: '1' } : {}) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    onStart?.(child.pid);
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0) return reject(new Error(`strata build exited ${code}: ${stderr.slice(-2000)}`));
      resolve({ ms, stderr });
    });
  });
}

/** A busybox-static rootfs (STACK-NOTES) with root and nobody, tarred into `work`: the benchmarks' small base image. */
export function busyboxBaseTar(work) {
  const dir = path.join(work, 'rootfs');
  for (const d of ['bin', 'etc', 'tmp', 'root', 'usr/bin', 'usr/sbin', 'sbin']) mkdirSync(path.join(dir, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  run('chmod', ['755', path.join(dir, 'bin/busybox')]);
  run('chroot', [dir, '/bin/busybox', '--install', '-s']);
  writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(path.join(dir, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  const tar = path.join(work, 'base.tar');
  run('tar', ['-cf', tar, '--numeric-owner', '-C', dir, '.']);
  return tar;
}

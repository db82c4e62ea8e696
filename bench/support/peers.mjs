// What the benchmarks that build start side by side: a docker-registry and a dockerd 20.10 (the
// BuildKit peer, its own data and exec roots and socket under `work`), and Strata's api and worker
// from source; plus tenants made as an operator would. Everything listens on 127.0.0.1 or a socket.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { portOpen, run, startProcess, waitFor } from './procs.mjs';

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
  const worker = startProcess('strata-worker', process.execPath, [...loader, 'apps/worker/src/bin.ts'], { env: all, cwd: root, logFile: path.join(work, 'worker.log') });
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

// Child processes the benchmark starts, and their teardown: every one is stopped by its own pid
// (SIGTERM, then SIGKILL after a grace period), on success, on failure and on Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

const started = [];

/** Starts a long-running process with its output in a log file; remembered for stopAll(). */
export function startProcess(name, cmd, args, { env, cwd, logFile }) {
  const out = openSync(logFile, 'a');
  const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', out, out] });
  const entry = { name, child, exited: false, logFile };
  child.once('exit', () => { entry.exited = true; });
  started.push(entry);
  return entry;
}

function waitExit(entry, ms) {
  if (entry.exited) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    entry.child.once('exit', () => { clearTimeout(t); resolve(true); });
  });
}

/** Stops every started process, newest first. */
export async function stopAll() {
  while (started.length > 0) {
    const entry = started.pop();
    if (entry.exited) continue;
    try { process.kill(entry.child.pid, 'SIGTERM'); } catch { continue; }
    if (!(await waitExit(entry, 15000))) {
      try { process.kill(entry.child.pid, 'SIGKILL'); } catch { /* gone */ }
      await waitExit(entry, 5000);
    }
  }
}

let handlersInstalled = false;
/** Ctrl-C / SIGTERM: stop what we started, then exit. */
export function installSignalHandlers(cleanup) {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      process.stderr.write(`\n[bench] ${sig}: stopping what the benchmark started\n`);
      Promise.resolve(cleanup()).finally(() => process.exit(130));
    });
  }
}

export function portOpen(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export async function waitFor(what, check, ms = 60000, entry = null) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return;
    if (entry?.exited) throw new Error(`${what} exited during start-up; see ${entry.logFile}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} not ready within ${ms / 1000}s${entry ? `; see ${entry.logFile}` : ''}`);
}

/** Runs a command to completion; throws with its output on failure. */
export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1024 ** 3, ...opts });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout || r.error?.message || '').toString().slice(-2000)}`);
  }
  return r.stdout;
}

/** Runs a command asynchronously (so timers keep running); resolves with stdout, rejects on failure. */
export function runAsync(cmd, args, opts = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.once('error', reject);
    child.once('exit', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${(err || out).slice(-2000)}`));
    });
  });
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Runs a benchmark's body (it fills `result` and may return an exit status): a failure is recorded
 * as `result.error` and makes the status 1; `cleanup` runs either way. Resolves with the status.
 */
export async function runBench(result, body, cleanup, log) {
  try {
    return (await body()) ?? 0;
  } catch (e) {
    result.error = e.stack ?? String(e);
    log(`failed: ${result.error}`);
    return 1;
  } finally {
    await cleanup();
  }
}

/** Writes the result as JSON to $BENCH_OUT (stdout without it) and exits with the status. */
export function reportAndExit(result, status) {
  if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(result, null, 2));
  else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.exit(status);
}

/**
 * The end of a benchmark that worked in `work`: stops what it started, unmounts what dockerd left
 * mounted under `work` (a leftover mount would make rm fail), copies the services' logs to
 * `resultsDir` as `<prefix>-<log>` and removes `work` unless `keep`.
 */
export async function cleanUpWork({ work, resultsDir, prefix, keep }) {
  await stopAll();
  if (existsSync(path.join(work, 'd'))) run('sh', ['-c', `grep -o " ${work}/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; true`]);
  for (const f of ['dockerd.log', 'registry.log', 'api.log', 'worker.log']) {
    if (existsSync(path.join(work, f))) cpSync(path.join(work, f), path.join(resultsDir, `${prefix}-${f}`));
  }
  if (!keep) rmSync(work, { recursive: true, force: true });
}

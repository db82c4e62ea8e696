// Console: a build whose log has 100,000 lines, opened in Chromium. Measures the time from opening
// the build's page (navigation start) to its last log line on screen, the page's JS heap then (CDP
// Performance metrics, before and after a forced GC), and a search across the whole log.
// Targets (issue 13): under 2 s and under 200 MB. Run by `npm run bench -- --only console`.
// Starts Strata's api and worker itself (as processes, stopped at the end); the console must be
// built (npm run bench builds it first).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { installSignalHandlers, median, portOpen, reportAndExit, run, runBench, startProcess, stopAll, waitFor } from '../support/procs.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const runs = Number(process.env.BENCH_RUNS ?? 5);
const LINES = 100_000;
const TARGET_MS = 2000;
const TARGET_HEAP_MB = 200;
const port = Number(process.env.BENCH_CONSOLE_PORT ?? 20000 + Math.floor(Math.random() * 20000));
const log = (m) => process.stderr.write(`[bench:console] ${m}\n`);
const work = mkdtempSync(path.join(tmpdir(), 'strata-bench-console-'));
const result = { lines: LINES, runs, targetMs: TARGET_MS, targetHeapMB: TARGET_HEAP_MB, notes: [] };
let context = null;

async function cleanup() {
  await context?.close().catch(() => undefined);
  await stopAll();
  await rm(work, { recursive: true, force: true }).catch(() => undefined);
}
installSignalHandlers(cleanup);

/** A busybox root filesystem (Debian's busybox-static), as the tests import it. */
function busyboxTar() {
  const dir = path.join(work, 'rootfs');
  mkdirSync(path.join(dir, 'bin'), { recursive: true });
  for (const d of ['sbin', 'usr/bin', 'usr/sbin', 'tmp', 'etc']) mkdirSync(path.join(dir, d), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'));
  chmodSync(path.join(dir, 'bin/busybox'), 0o755);
  execFileSync('chroot', [dir, '/bin/busybox', '--install', '-s']);
  writeFileSync(path.join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  const tar = path.join(work, 'busybox.tar');
  execFileSync('tar', ['-cf', tar, '-C', dir, '.']);
  return tar;
}

const status = await runBench(
  result,
  async () => {
    if (!existsSync(path.join(root, 'apps/console/dist/index.html'))) throw new Error('apps/console/dist is missing: build the console first (npm run bench does)');
    const env = {
      ...process.env,
      PORT: String(port),
      HOST: '127.0.0.1',
      STRATA_DATA_DIR: path.join(work, 'worker'),
      STRATA_QUEUE_PREFIX: `strata-bench-console-${process.pid}`,
      // 100,000 lines of about 60 bytes: above the default 4 MiB per step.
      STRATA_LOG_STEP_MAX_BYTES: String(64 * 1024 ** 2),
      NODE_NO_WARNINGS: '1',
    };
    if (await portOpen(port)) throw new Error(`127.0.0.1:${port} is taken; set BENCH_CONSOLE_PORT`);
    const loader = ['--import', './bench/support/register-ts.mjs'];
    const api = startProcess('strata-api', process.execPath, [...loader, 'apps/api/src/main.ts'], { env, cwd: root, logFile: path.join(work, 'api.log') });
    startProcess('strata-worker', process.execPath, [...loader, 'apps/worker/src/bin.ts'], { env, cwd: root, logFile: path.join(work, 'worker.log') });
    const url = `http://127.0.0.1:${port}`;
    await waitFor('strata api', async () => {
      try {
        return (await fetch(`${url}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 60000, api);

    const [{ token }] = JSON.parse(run(process.execPath, [...loader, 'bench/support/tenant.ts', `bench-console-${process.pid}-${Date.now()}`], { cwd: root, env }));
    const auth = { authorization: `Bearer ${token}` };
    const imported = await fetch(`${url}/v1/repositories/busybox/import?tag=1`, { method: 'POST', headers: { ...auth, 'content-type': 'application/x-tar' }, body: execFileSync('cat', [busyboxTar()], { maxBuffer: 64 * 1024 ** 2 }) });
    if (imported.status !== 201) throw new Error(`importing busybox answered ${imported.status}: ${await imported.text()}`);

    // One RUN step printing 100,000 lines, a green ANSI label on each, like a compiler's progress.
    const ctx = path.join(work, 'ctx');
    mkdirSync(ctx);
    writeFileSync(
      path.join(ctx, 'Dockerfile'),
      `FROM busybox:1\nRUN awk 'BEGIN { for (i = 1; i <= ${LINES}; i++) printf "\\033[32mINFO\\033[0m [%06d] compiling src/module_%d.ts (%d of ${LINES})\\n", i, i, i }'\n`,
    );
    const submitted = await fetch(`${url}/v1/builds?repository=bench-console`, { method: 'POST', headers: { ...auth, 'content-type': 'application/x-tar' }, body: execFileSync('tar', ['-cf', '-', '-C', ctx, '.']) });
    if (submitted.status !== 202) throw new Error(`submitting the build answered ${submitted.status}: ${await submitted.text()}`);
    const { id } = await submitted.json();
    let build;
    await waitFor('the 100,000-line build', async () => {
      build = await (await fetch(`${url}/v1/builds/${id}`, { headers: auth })).json();
      return ['succeeded', 'failed', 'cancelled'].includes(build.status);
    }, 300000);
    if (build.status !== 'succeeded') throw new Error(`the build ${build.status}: ${build.error?.message}`);
    const text = await (await fetch(`${url}/v1/builds/${id}/logs`, { headers: auth })).text();
    const total = text.split('\n').filter(Boolean).length;
    const outputLines = text.split('\n').filter((l) => /\[\d{6}\] compiling src\/module_/.test(l)).length;
    if (outputLines !== LINES) throw new Error(`the log holds ${outputLines} output lines, not ${LINES}`);
    result.logLines = total;
    result.logBytes = Buffer.byteLength(text);
    log(`build ${id}: ${total} log lines (${(result.logBytes / 1024 ** 2).toFixed(1)} MiB as text)`);

    // The server's share: the whole log as the page asks for it (SSE), read by Node and dropped.
    const sseSamples = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      const res = await fetch(`${url}/v1/builds/${id}/logs`, { headers: { ...auth, accept: 'text/event-stream' } });
      let bytes = 0;
      for await (const chunk of res.body) bytes += chunk.length;
      sseSamples.push(performance.now() - t0);
      result.sseBytes = bytes;
    }
    result.sseMs = median(sseSamples);
    log(`SSE of the whole log: ${result.sseMs.toFixed(0)} ms median (${(result.sseBytes / 1024 ** 2).toFixed(1)} MiB)`);

    const profile = path.join(work, 'chromium');
    context = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      headless: true,
      viewport: { width: 1280, height: 900 },
    });
    const samples = [];
    for (let i = 0; i < runs; i++) {
      const page = await context.newPage();
      // Signed in the way the console keeps a token: in this tab's sessionStorage.
      await page.goto(`${url}/`);
      await page.evaluate((t) => sessionStorage.setItem('strata.token', t), token);
      const cdp = await context.newCDPSession(page);
      await cdp.send('Performance.enable');
      const wallStart = Date.now();
      await page.goto(`${url}/builds/${id}`);
      // The last line of the log is on screen (follow mode keeps the end in view).
      await page.waitForFunction((n) => {
        const el = document.querySelector(`.log-line[data-n="${n}"]`);
        if (!el) return false;
        const box = el.getBoundingClientRect();
        const frame = document.querySelector('.log-scroll').getBoundingClientRect();
        return box.bottom <= frame.bottom + 1 && box.top >= frame.top - 1;
      }, total, { polling: 'raf', timeout: 60000 });
      const sinceNavigation = await page.evaluate(() => performance.now());
      const wallMs = Date.now() - wallStart;
      const metrics = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
      await cdp.send('HeapProfiler.collectGarbage');
      const afterGc = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
      // Search across the whole log: the count of matches for a line near the start.
      const searchStart = Date.now();
      await page.getByLabel('Search the log').fill('module_4242.ts');
      await page.waitForFunction(() => document.querySelector('[data-testid="match-count"]')?.textContent?.includes('of 1'), null, { polling: 'raf' });
      const searchMs = Date.now() - searchStart;
      samples.push({
        lastLineMs: sinceNavigation,
        wallMs,
        heapUsedMB: metrics.JSHeapUsedSize / 1024 ** 2,
        heapTotalMB: metrics.JSHeapTotalSize / 1024 ** 2,
        heapAfterGcMB: afterGc.JSHeapUsedSize / 1024 ** 2,
        domNodes: metrics.Nodes,
        searchMs,
      });
      log(`run ${i + 1}: last line after ${sinceNavigation.toFixed(0)} ms from navigation (${wallMs} ms wall), heap ${(metrics.JSHeapUsedSize / 1024 ** 2).toFixed(1)} MB used (${(afterGc.JSHeapUsedSize / 1024 ** 2).toFixed(1)} MB after GC), ${metrics.Nodes} DOM nodes, search ${searchMs} ms`);
      await cdp.detach();
      await page.close();
    }
    const pick = (k) => median(samples.map((s) => s[k]));
    Object.assign(result, {
      lastLineMs: pick('lastLineMs'),
      wallMs: pick('wallMs'),
      heapUsedMB: pick('heapUsedMB'),
      heapTotalMB: pick('heapTotalMB'),
      heapAfterGcMB: pick('heapAfterGcMB'),
      domNodes: pick('domNodes'),
      searchMs: pick('searchMs'),
      maxLastLineMs: Math.max(...samples.map((s) => s.lastLineMs)),
      maxHeapUsedMB: Math.max(...samples.map((s) => s.heapUsedMB)),
      samples,
      chromium: context.browser()?.version() ?? execFileSync('/usr/bin/chromium', ['--version'], { encoding: 'utf8' }).trim(),
    });
    log(`median: last line ${result.lastLineMs.toFixed(0)} ms (target ${TARGET_MS}), heap ${result.heapUsedMB.toFixed(1)} MB (target ${TARGET_HEAP_MB})`);
    return 0;
  },
  cleanup,
  log,
);
reportAndExit(result, status);

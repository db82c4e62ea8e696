// Per-RUN cost of user namespaces (ADR 0022, STRATA_RUN_USERNS) through the worker's own path
// (BuildRuntime.run: snapshot, mounts, runc, the owner shift, the diff), with and without:
//   true          `RUN true`: what a user namespace adds to every step (range claim, rootfs bind, maps)
//   files-1000    a step that writes 1,000 files and chowns them: the owner shift after the step
// Round robin (a busy moment on a shared machine costs both alike), one warm-up round, medians.
// Run as root: node --import ./bench/support/register-ts.mjs bench/run-sandbox/userns.ts [runs]
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Descriptor, Digest } from '../../libs/oci/src/index.js';
import { BuildRuntime } from '../../libs/runtime/src/build-runtime.js';
import { shellStep } from '../support/shell-step.js';

const RUNS = Number(process.argv[2] ?? process.env.BENCH_RUNS ?? 15);
const work = mkdtempSync(path.join(tmpdir(), 'strata-bench-userns-'));

function busyboxTar(): Buffer {
  const dir = path.join(work, 'busybox');
  for (const sub of ['bin', 'etc', 'tmp', 'root']) mkdirSync(path.join(dir, sub), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin', 'busybox'));
  chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  execFileSync('chroot', [dir, '/bin/busybox', '--install', '-s', '/bin']);
  writeFileSync(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\n');
  return execFileSync('tar', ['--numeric-owner', '-cf', '-', '-C', dir, '.'], { maxBuffer: 64 * 1024 ** 2 });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const runtimes: BuildRuntime[] = [];
try {
  const tar = busyboxTar();
  const make = async (userns: 'on' | 'off') => {
    const runtime = new BuildRuntime({
      dataDir: path.join(work, `data-${userns}`),
      step: { network: 'none', memoryBytes: 512 * 1024 ** 2, pids: 512, cpus: 0, stepTimeoutMs: 60_000, allowInsecure: false, userns },
      layerBlob: async () => Readable.from(tar),
      cacheArchives: { get: async () => null, put: async (_k, body) => void body.resume() },
    });
    await runtime.init();
    runtimes.push(runtime);
    return runtime;
  };
  const variants = { off: await make('off'), on: await make('on') };
  if (!variants.on.usesUserNamespaces) throw new Error('user namespaces did not start on this worker');
  const { createHash } = await import('node:crypto');
  const diffId = `sha256:${createHash('sha256').update(tar).digest('hex')}` as Digest;
  const layer = { descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: diffId, size: tar.length } as Descriptor, diffId };
  const steps: Record<string, string> = {
    true: 'true',
    'files-1000': 'mkdir /d && cd /d && for i in $(seq 1000); do echo $i > f$i; done && chown -R 1000:1000 /d',
  };
  const times = new Map<string, number[]>();
  for (let i = 0; i <= RUNS; i++) {
    for (const [step, script] of Object.entries(steps)) {
      for (const [name, runtime] of Object.entries(variants)) {
        const started = performance.now();
        const outcome = await runtime.run('bench', shellStep([layer], script));
        const ms = performance.now() - started;
        await outcome.release();
        if (outcome.exitCode !== 0) throw new Error(`${step} with userns ${name} exited ${outcome.exitCode}`);
        if (step === 'files-1000' && outcome.entries.find((e) => e.path === 'd/f1' && 'uid' in e && e.uid === 1000) === undefined) {
          throw new Error(`${step} with userns ${name}: d/f1 is not recorded as uid 1000`);
        }
        if (i > 0) times.set(`${step} userns-${name}`, [...(times.get(`${step} userns-${name}`) ?? []), ms]);
      }
    }
  }
  const results: Record<string, { medianMs: number; minMs: number; maxMs: number }> = {};
  const round = (x: number): number => Math.round(x * 10) / 10;
  for (const [name, ts] of times) {
    results[name] = { medianMs: round(median(ts)), minMs: round(Math.min(...ts)), maxMs: round(Math.max(...ts)) };
    console.log(`${name.padEnd(22)} median ${results[name].medianMs} ms (min ${results[name].minMs}, max ${results[name].maxMs}; ${RUNS} runs)`);
  }
  const load = readFileSync('/proc/loadavg', 'utf8').trim();
  console.log(`load average after: ${load}`);
  const out = process.env.BENCH_OUT ?? path.join(import.meta.dirname, '..', 'results', `run-userns-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ runs: RUNS, load, results }, null, 2));
} finally {
  for (const runtime of runtimes) await runtime.close().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
}

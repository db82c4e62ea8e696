// Per-RUN step cost of the worker's own work around the container, and of the container runtime
// (ADR 0026). Round robin over the variants, so a busy moment on a shared machine costs each alike;
// run 0 of each warms caches and is not counted. Prints medians of wall time and CPU time (this
// process and its reaped children; CPU is steadier than wall time on a busy machine).
//   op:mount-process / op:mount-native         the snapshot's overlay mount: mount(8) against @strata/native
//   op:umount-process / op:umount-native       its unmount: umount(8) against @strata/native
//   op:umount-volatile                         the unmount of an overlay mounted `volatile` (no sync of the upper fs)
//   op:xattrs-getfattr / op:xattrs-native      reading the xattrs of an upper dir of 200 names (5 with
//                                              xattrs): one `getfattr -R -d` against llistxattr per name
//   cycle:runc / cycle:crun                    a whole `RUN true`: LayerStore.prepare (mount), the
//                                              executor's run, diffUpperDir, release (unmount, rm)
//   cycle:crun-compiling                       cycle:crun without the executor's seccomp filter cache:
//                                              crun compiles the profile at every start (ADR 0038)
//   cycle:runc-prepared                        the same with the snapshot mounted before the step's
//                                              clock starts (what preparing the next snapshot during
//                                              the previous step's diff and upload could save at most)
//                                              (BENCH_CYCLE_KEEP=1: the upper dir kept as a layer instead of released)
//   cycle:runc-before                          with BENCH_BEFORE=<a checkout of an earlier commit>: cycle:runc
//                                              with that checkout's libs/runtime (before ADR 0026: processes)
//   worker:true-userns-off / -on              `RUN true` through BuildRuntime.run (snapshot, runc, diff) without and
//                                              with a user namespace (range claim, idmapped view, rootfs bind, owner shift)
//   worker:mknod100-userns-off / -on           a step that makes 100 character devices: with the namespace each
//                                              mknod is a round trip through the mknod agent (seccomp user notification)
//   worker:*-crun                              the same steps with crun as the runtime
// crun runs as the worker runs it (ADR 0038: no wrapper; a hybrid host's cgroup2 controllers bound
// to v1 first, as npm run bench does); its variants are left out, with the reason printed, where
// it cannot run (crunUnusableReason).
// BENCH_RUN_STEP_ONLY=worker runs only the worker: variants.
// BENCH_RUN_STEP_ONLY=spawn (ADR 0039) runs cycle:runc and worker:true-userns-off/-on each twice:
// as they are (runc and the runtime's other tools started by the addon's posix_spawn) and as
// `...-fork` (STRATA_NATIVE_SPAWN=0: node's child_process, which forks the worker), alternating.
// BENCH_BALLAST_MB=N first grows this process's RSS to N MB (a worker mid-build sits at a few
// hundred MB; fork's cost grows with it).
// Run as root: node --import ./bench/support/register-ts.mjs bench/run-step/bench.ts [runs]
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { lgetxattrs, lsetxattr, mount, umount } from '../../libs/native/src/index.js';
import { diffUpperDir } from '../../libs/runtime/src/diff.js';
import { busyboxLayer } from '../../libs/runtime/src/fixtures.test.js';
import { LayerStore } from '../../libs/runtime/src/layer-store.js';
import { ContainerExecutor } from '../../libs/runtime/src/container-executor.js';
import { crunUnusableReason, type OciRuntime } from '../../libs/runtime/src/runtime-choice.js';
import { BuildRuntime } from '../../libs/runtime/src/build-runtime.js';
import { shellStep } from '../support/shell-step.js';
import type { Digest } from '../../libs/oci/src/index.js';

const RUNS = Number(process.argv[2] ?? process.env.BENCH_RUNS ?? 15);
const run = promisify(execFile);
const work = mkdtempSync(path.join(tmpdir(), 'strata-bench-run-step-'));
chmodSync(work, 0o711);

/** Processes that live across runs whose CPU counts too: the worker runtimes' mknod agents (and the children they reap). */
const agentPids = new Set<number>();

/** CPU ms of this process plus its reaped children (cutime + cstime, 10 ms ticks), plus the mknod agents'. */
function cpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  const usage = process.cpuUsage();
  let agents = 0;
  for (const pid of agentPids) {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    // utime, stime, cutime, cstime (fields 14-17 of stat)
    agents += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 10;
  }
  return (Number(fields[13]) + Number(fields[14])) * 10 + (usage.user + usage.system) / 1000 + agents;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Variant {
  name: string;
  /** Untimed set-up before each timed call (a fresh overlay to unmount, ...). */
  before?: () => Promise<void>;
  timed: () => Promise<void>;
  after?: () => Promise<void>;
}

let overlayCount = 0;
function overlayDirs(): { dir: string; options: string } {
  const dir = path.join(work, `ov-${overlayCount++}`);
  for (const sub of ['lower', 'upper', 'work', 'rootfs']) mkdirSync(path.join(dir, sub), { recursive: true });
  writeFileSync(path.join(dir, 'lower', 'f'), 'x');
  return { dir, options: 'index=off,redirect_dir=off,metacopy=off,lowerdir=lower,upperdir=upper,workdir=work' };
}

function opVariants(): Variant[] {
  let current = overlayDirs();
  const fresh = async () => {
    current = overlayDirs();
  };
  const mountedWith = (extra: string) => async () => {
    current = overlayDirs();
    await mount('overlay', 'rootfs', 'overlay', 0, `${current.options}${extra}`, { cwd: current.dir });
    writeFileSync(path.join(current.dir, 'rootfs', 'written'), 'y');
  };
  const mounted = mountedWith('');
  const cleanup = async () => {
    await umount(path.join(current.dir, 'rootfs')).catch(() => undefined);
    rmSync(current.dir, { recursive: true, force: true });
  };

  // An upper dir as a step leaves it: 200 names, 5 of them with xattrs.
  const upper = path.join(work, 'xattr-upper');
  for (let d = 0; d < 10; d++) {
    mkdirSync(path.join(upper, `d${d}`), { recursive: true });
    for (let f = 0; f < 19; f++) writeFileSync(path.join(upper, `d${d}`, `f${f}`), 'x');
  }
  for (let i = 0; i < 5; i++) lsetxattr(path.join(upper, `d${i}`, 'f0'), 'user.note', Buffer.from([0, 255, i]));
  lsetxattr(path.join(upper, 'd9'), 'trusted.overlay.opaque', 'y');
  const names: string[] = [];
  for (const d of readdirSync(upper)) {
    names.push(path.join(upper, d));
    for (const f of readdirSync(path.join(upper, d))) names.push(path.join(upper, d, f));
  }

  return [
    { name: 'op:mount-process', before: fresh, timed: async () => void (await run('mount', ['-t', 'overlay', 'overlay', '-o', current.options, 'rootfs'], { cwd: current.dir })), after: cleanup },
    { name: 'op:mount-native', before: fresh, timed: () => mount('overlay', 'rootfs', 'overlay', 0, current.options, { cwd: current.dir }), after: cleanup },
    { name: 'op:umount-process', before: mounted, timed: async () => void (await run('umount', [path.join(current.dir, 'rootfs')])), after: cleanup },
    { name: 'op:umount-native', before: mounted, timed: () => umount(path.join(current.dir, 'rootfs')), after: cleanup },
    // overlayfs syncs its whole upper filesystem at unmount unless mounted `volatile`.
    { name: 'op:umount-volatile', before: mountedWith(',volatile'), timed: () => umount(path.join(current.dir, 'rootfs')), after: cleanup },
    {
      name: 'op:xattrs-getfattr',
      timed: async () => void (await run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '.'], { cwd: upper, env: { ...process.env, LC_ALL: 'C' }, maxBuffer: 1 << 26 })),
    },
    {
      name: 'op:xattrs-native',
      timed: async () => {
        for (const name of names) lgetxattrs(name);
      },
    },
  ];
}

interface Runtime {
  LayerStore: typeof LayerStore;
  ContainerExecutor: typeof ContainerExecutor;
  diffUpperDir: typeof diffUpperDir;
}

async function cycleVariants(): Promise<{ variants: Variant[]; notes: string[] }> {
  const base = busyboxLayer();
  const source = async () => Readable.from([base.tar]);
  const notes: string[] = [];
  const make = (name: string, oci: OciRuntime, prepared: boolean, runtime: Runtime = { LayerStore, ContainerExecutor, diffUpperDir }, crunSeccompCache = true): Variant => {
    const { LayerStore, ContainerExecutor, diffUpperDir } = runtime;
    const dataDir = path.join(work, `data-${name.replace(/[^a-z-]/g, '-')}`);
    const store = new LayerStore({ dataDir });
    const executor = new ContainerExecutor({ dataDir, resolvConf: '', ...(oci === 'runc' ? {} : { runtime: oci, crunSeccompCache }) });
    let next: Awaited<ReturnType<LayerStore['prepare']>> | undefined;
    const step = async () => {
      const snapshot = next ?? (await store.prepare([base.diffId], source));
      next = undefined;
      const result = await executor.run({ args: ['/bin/true'], env: [], network: 'none' }, { rootfs: snapshot.rootfs, onOutput: () => undefined });
      if (result.exitCode !== 0) throw new Error(`${name}: RUN true exited ${result.exitCode}: ${result.outputTail?.join('\n') ?? ''}`);
      await diffUpperDir(snapshot.upperDir, { lowerDirs: snapshot.lowerDirs });
      // BENCH_CYCLE_KEEP=1: the upper dir is kept as a layer (unmount, rename) as every RUN that changes files is, run10's shape.
      if (process.env.BENCH_CYCLE_KEEP === '1') await snapshot.keepAsLayer(`sha256:${randomBytes(32).toString('hex')}`, 0);
      else await snapshot.release();
    };
    return {
      name,
      before: prepared
        ? async () => {
            next = await store.prepare([base.diffId], source);
          }
        : undefined,
      timed: step,
    };
  };
  const variants = [make('cycle:runc', 'runc', false), make('cycle:runc-prepared', 'runc', true)];
  const before = process.env.BENCH_BEFORE;
  if (before) {
    const load = async (file: string) => import(pathToFileURL(path.resolve(before, 'libs/runtime/src', file)).href);
    // A tree from before the executor's rename (it ran only runc then) has runc-executor.ts and RuncExecutor.
    const executor = await load('container-executor.ts').catch(async () => {
      const old = await load('runc-executor.ts');
      return { ContainerExecutor: old.RuncExecutor };
    });
    const runtime = { ...(await load('layer-store.ts')), ...executor, ...(await load('diff.ts')) } as Runtime;
    variants.push(make('cycle:runc-before', 'runc', false, runtime));
  }
  const crun = await crunUnusableReason();
  if (crun !== undefined) notes.push(`crun left out: ${crun}`);
  else {
    for (const candidate of [make('cycle:crun', 'crun', false), make('cycle:crun-compiling', 'crun', false, undefined, false)]) {
      try {
        await candidate.timed();
        variants.push(candidate);
      } catch (error) {
        notes.push(`${candidate.name} left out: ${(error as Error).message.slice(0, 300)}`);
      }
    }
  }
  return { variants, notes };
}

/** Steps through the worker's own path, with and without a user namespace (ADR 0022). */
async function workerVariants(runtimes: BuildRuntime[]): Promise<Variant[]> {
  const base = busyboxLayer();
  const layer = {
    descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: base.diffId as Digest, size: base.tar.length },
    diffId: base.diffId as Digest,
  };
  const make = async (userns: 'on' | 'off', oci: OciRuntime) => {
    const runtime = new BuildRuntime({
      dataDir: path.join(work, `worker-${userns}-${oci}`),
      step: { network: 'none', memoryBytes: 512 * 1024 ** 2, pids: 512, cpus: 0, stepTimeoutMs: 60_000, allowInsecure: false, userns, runtime: oci },
      layerBlob: async () => Readable.from([base.tar]),
      cacheArchives: { get: async () => null, put: async (_k, body) => void body.resume() },
      secretsDir: path.join('/dev/shm', `strata-bench-run-step-${process.pid}-${userns}-${oci}`),
    });
    await runtime.init();
    runtimes.push(runtime);
    if (userns === 'on' && !runtime.usesUserNamespaces) throw new Error('user namespaces did not start on this worker');
    if (runtime.mknodSupervisor?.pid !== undefined) agentPids.add(runtime.mknodSupervisor.pid);
    return runtime;
  };
  const runtimes_: Record<string, BuildRuntime> = { off: await make('off', 'runc'), on: await make('on', 'runc') };
  if ((await crunUnusableReason()) === undefined) Object.assign(runtimes_, { 'off-crun': await make('off', 'crun'), 'on-crun': await make('on', 'crun') });
  const steps: Record<string, string> = {
    true: 'true',
    mknod100: 'i=0; while [ $i -lt 100 ]; do mknod /n$i c 1 3 || exit 1; i=$((i+1)); done',
  };
  const variants: Variant[] = [];
  for (const [step, script] of Object.entries(steps)) {
    for (const [name, runtime] of Object.entries(runtimes_)) {
      variants.push({
        name: `worker:${step}-userns-${name}`,
        timed: async () => {
          const outcome = await runtime.run('bench', shellStep([layer], script));
          await outcome.release();
          if (outcome.exitCode !== 0) throw new Error(`worker:${step} with userns ${name} exited ${outcome.exitCode}`);
          if (step === 'mknod100' && outcome.entries.filter((e) => e.type === 'char-device').length !== 100) throw new Error(`worker:${step}: not 100 devices in the layer`);
        },
      });
    }
  }
  return variants;
}

/** The variant with children started by node's child_process (fork) instead of the addon (ADR 0039). */
function forked(variant: Variant): Variant {
  return {
    ...variant,
    name: `${variant.name}-fork`,
    timed: async () => {
      process.env.STRATA_NATIVE_SPAWN = '0';
      try {
        await variant.timed();
      } finally {
        delete process.env.STRATA_NATIVE_SPAWN;
      }
    },
  };
}

const ballast: Buffer[] = [];
const ballastMb = Number(process.env.BENCH_BALLAST_MB ?? 0);
while (process.memoryUsage().rss < ballastMb * 1024 ** 2) ballast.push(Buffer.alloc(8 * 1024 ** 2, 1));

const runtimes: BuildRuntime[] = [];
try {
  const only = process.env.BENCH_RUN_STEP_ONLY;
  let variants: Variant[];
  let notes: string[] = [];
  if (only === 'spawn') {
    const cycle = (await cycleVariants()).variants.find((v) => v.name === 'cycle:runc')!;
    const workers = (await workerVariants(runtimes)).filter((v) => v.name.startsWith('worker:true-'));
    variants = [cycle, forked(cycle), ...workers.flatMap((v) => [v, forked(v)])];
  } else {
    const ops = only === 'worker' ? [] : opVariants();
    const cycles = only === 'worker' ? { variants: [], notes: [] as string[] } : await cycleVariants();
    notes = cycles.notes;
    variants = [...ops, ...cycles.variants, ...(await workerVariants(runtimes))];
  }
  const times = new Map<string, { wallMs: number; cpuMs: number }[]>(variants.map((v) => [v.name, []]));
  for (let i = 0; i <= RUNS; i++) {
    for (const variant of variants) {
      await variant.before?.();
      const cpu = cpuMs();
      const started = performance.now();
      await variant.timed();
      const wallMs = performance.now() - started;
      const spent = cpuMs() - cpu;
      await variant.after?.();
      if (i > 0) times.get(variant.name)!.push({ wallMs, cpuMs: spent });
    }
  }
  const round = (x: number): number => Math.round(x * 100) / 100;
  const results: Record<string, { medianMs: number; minMs: number; cpuMsPerRun: number }> = {};
  for (const [name, ts] of times) {
    const wall = ts.map((t) => t.wallMs);
    results[name] = { medianMs: round(median(wall)), minMs: round(Math.min(...wall)), cpuMsPerRun: round(ts.reduce((sum, t) => sum + t.cpuMs, 0) / ts.length) };
    const r = results[name];
    console.log(`${name.padEnd(28)} median ${String(r.medianMs).padStart(8)} ms  (min ${r.minMs}; CPU ${r.cpuMsPerRun} ms per run; ${RUNS} runs)`);
  }
  for (const note of notes) console.log(note);
  const load = readFileSync('/proc/loadavg', 'utf8').trim();
  console.log(`load: ${load}; rss ${Math.round(process.memoryUsage().rss / 1024 ** 2)} MB (ballast ${ballast.length * 8} MB)`);
  const out = process.env.BENCH_OUT ?? path.join(import.meta.dirname, '..', 'results', `run-step-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ runs: RUNS, load, rssMb: Math.round(process.memoryUsage().rss / 1024 ** 2), results, notes }, null, 2));
} finally {
  for (const runtime of runtimes) await runtime.close().catch(() => undefined);
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line.split(' ')[4];
    if (point?.startsWith(work)) spawnSync('umount', ['-l', point]);
  }
  rmSync(work, { recursive: true, force: true });
}

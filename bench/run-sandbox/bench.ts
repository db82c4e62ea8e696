// Per-RUN cost of the RUN sandbox (ADR 0022): `true` run N times in one container runtime setup
// each, on the same busybox root filesystem, the median of the wall times of `<runtime> run`.
//   runc-plain       the config before ADR 0022 (no seccomp filter, no no-new-privileges)
//   runc-sandbox     Strata's default now: seccomp profile, no-new-privileges, masked paths
//   runc-userns      the same plus a user namespace (root -> host 100000..165535) on an overlay of an
//                    idmapped lower layer (the design ADR 0022 measured; not a deployment setting yet)
//   runsc-ptrace     gVisor (STRATA_RUN_RUNTIME=runsc) on its ptrace platform
// Only the container run is timed: the overlay mount, the diff and the layer are the same for all.
// Run as root: `npm run bench -- --only run-sandbox`, or alone:
// node --import ./bench/support/register-ts.mjs bench/run-sandbox/bench.ts [runs]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildRuntimeSpec } from '../../libs/runtime/src/runtime-spec.js';

const RUNS = Number(process.argv[2] ?? process.env.BENCH_RUNS ?? 15);
const USERNS_BASE = 100000;
const USERNS_SIZE = 65536;
const work = mkdtempSync(path.join(tmpdir(), 'strata-bench-sandbox-'));
chmodSync(work, 0o711);
const mounts: string[] = [];

function busyboxRootfs(dir: string): void {
  for (const sub of ['bin', 'etc', 'tmp', 'proc', 'dev', 'sys', 'root']) mkdirSync(path.join(dir, sub), { recursive: true });
  copyFileSync('/bin/busybox', path.join(dir, 'bin', 'busybox'));
  chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  execFileSync('ln', ['-s', 'busybox', path.join(dir, 'bin', 'true')]);
  writeFileSync(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\n');
}

function specFor(rootfs: string, variant: string): Record<string, unknown> {
  writeFileSync(path.join(work, 'hosts'), '127.0.0.1 localhost\n');
  writeFileSync(path.join(work, 'resolv.conf'), '');
  const spec = buildRuntimeSpec({
    rootfs, args: ['/bin/true'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [], home: '/root' }, hostname: 'bench',
    netns: { kind: 'new' }, hostsFile: path.join(work, 'hosts'), resolvConfFile: path.join(work, 'resolv.conf'), mounts: [],
    cgroupsPath: `strata-bench-sandbox/${variant}`, noFile: { soft: 1024, hard: 1024 },
  }) as { process: Record<string, unknown>; linux: Record<string, unknown> };
  if (variant === 'runc-plain') {
    delete spec.linux.seccomp;
    spec.process.noNewPrivileges = false;
  }
  if (variant === 'runc-userns') {
    (spec.linux.namespaces as unknown[]).push({ type: 'user' });
    spec.linux.uidMappings = [{ containerID: 0, hostID: USERNS_BASE, size: USERNS_SIZE }];
    spec.linux.gidMappings = [{ containerID: 0, hostID: USERNS_BASE, size: USERNS_SIZE }];
    // Only groups mapped in the step's user namespace can be named.
    spec.linux.sysctl = { 'net.ipv4.ping_group_range': `0 ${USERNS_SIZE - 1}` };
  }
  return spec;
}

/** An overlay whose one lower layer is `lower` seen through an idmapped mount (disk 0 -> host USERNS_BASE). */
async function idmappedOverlay(lower: string): Promise<string> {
  const holder = spawn('unshare', ['-U', 'sleep', '600'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 200));
  try {
    writeFileSync(`/proc/${holder.pid}/uid_map`, `0 ${USERNS_BASE} ${USERNS_SIZE}\n`);
    writeFileSync(`/proc/${holder.pid}/gid_map`, `0 ${USERNS_BASE} ${USERNS_SIZE}\n`);
    const view = path.join(work, 'lower-view');
    mkdirSync(view);
    execFileSync('perl', [path.join(import.meta.dirname, 'idmap.pl'), `/proc/${holder.pid}/ns/user`, lower, view]);
    mounts.push(view);
    for (const d of ['upper', 'work', 'merged']) mkdirSync(path.join(work, d));
    const merged = path.join(work, 'merged');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `index=off,redirect_dir=off,metacopy=off,lowerdir=${view},upperdir=${path.join(work, 'upper')},workdir=${path.join(work, 'work')}`, merged]);
    mounts.unshift(merged);
    return merged;
  } finally {
    holder.kill('SIGKILL');
  }
}

interface Variant { name: string; binary: string; global: string[]; bundle: string }

function prepare(name: string, rootfs: string): Variant {
  const bundle = path.join(work, `bundle-${name}`);
  mkdirSync(bundle);
  writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(specFor(rootfs, name)));
  const runsc = name.startsWith('runsc');
  const binary = runsc ? 'runsc' : 'runc';
  const global = ['--root', path.join(work, `state-${binary}`), ...(runsc ? ['--platform=ptrace', '--network=none', '--oci-seccomp'] : [])];
  return { name, binary, global, bundle };
}

/** CPU time of this process's reaped children (cutime + cstime of /proc/self/stat), in ms; the clock tick is 10 ms. */
function childrenCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

function timeOne(variant: Variant, i: number): { wallMs: number; cpuMs: number } {
  const cpu = childrenCpuMs();
  const started = performance.now();
  const result = spawnSync(variant.binary, [...variant.global, 'run', '--bundle', variant.bundle, `bench-${variant.name}-${i}`], { encoding: 'utf8' });
  const wallMs = performance.now() - started;
  if (result.status !== 0) throw new Error(`${variant.name}: ${variant.binary} run exited ${result.status}: ${result.stderr}`);
  return { wallMs, cpuMs: childrenCpuMs() - cpu };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

try {
  const lower = path.join(work, 'rootfs');
  busyboxRootfs(lower);
  const usernsRoot = await idmappedOverlay(lower);
  const variants = [prepare('runc-plain', lower), prepare('runc-sandbox', lower), prepare('runc-userns', usernsRoot), prepare('runsc-ptrace', lower)];
  const times = new Map<string, { wallMs: number; cpuMs: number }[]>(variants.map((v) => [v.name, []]));
  // Round robin, so a busy moment on a shared machine costs every variant alike; run 0 warms caches.
  for (let i = 0; i <= RUNS; i++) for (const variant of variants) {
    const t = timeOne(variant, i);
    if (i > 0) times.get(variant.name)!.push(t);
  }
  const round = (x: number): number => Math.round(x * 10) / 10;
  const results: Record<string, { medianMs: number; minMs: number; maxMs: number; cpuMsPerRun: number }> = {};
  for (const [name, ts] of times) {
    const wall = ts.map((t) => t.wallMs);
    // CPU time (runtime and container together) is steadier than wall time on a busy machine.
    const cpuMsPerRun = round(ts.reduce((sum, t) => sum + t.cpuMs, 0) / ts.length);
    results[name] = { medianMs: round(median(wall)), minMs: round(Math.min(...wall)), maxMs: round(Math.max(...wall)), cpuMsPerRun };
    const r = results[name];
    console.log(`${name.padEnd(14)} median ${r.medianMs} ms  (min ${r.minMs}, max ${r.maxMs}; CPU ${r.cpuMsPerRun} ms per run; ${RUNS} runs)`);
  }
  // infra/local/bench.mjs names the file (BENCH_OUT); run alone, it goes to bench/results/.
  const out = process.env.BENCH_OUT ?? path.join(import.meta.dirname, '..', 'results', `run-sandbox-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ runs: RUNS, results }, null, 2));
} finally {
  for (const mount of mounts) spawnSync('umount', [mount]);
  rmSync(work, { recursive: true, force: true });
  // runc and runsc remove their own cgroups; the parent they were nested in stays in each hierarchy.
  for (const hierarchy of readdirSync('/sys/fs/cgroup')) {
    const parent = path.join('/sys/fs/cgroup', hierarchy, 'strata-bench-sandbox');
    if (!existsSync(parent)) continue;
    for (const child of readdirSync(parent, { withFileTypes: true })) if (child.isDirectory()) spawnSync('rmdir', [path.join(parent, child.name)]);
    spawnSync('rmdir', [parent]);
  }
}

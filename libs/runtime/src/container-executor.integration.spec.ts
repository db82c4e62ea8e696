import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { LayerWriter, type LayerEntry } from '@strata/oci';
import { diffUpperDir } from './diff.js';
import { busyboxLayer, layerSource, tempDir, TEST_RUNTIMES, type TestLayer } from './fixtures.test.js';
import { LayerStore, type Snapshot } from './layer-store.js';
import { ContainerCgroup } from './cgroup.js';
import { ContainerStartError, ContainerExecutor } from './container-executor.js';
import { crunUnusableReason } from './runtime-choice.js';
import { CrunSeccompCache } from './crun-seccomp.js';
import { DEFAULT_CAPABILITIES } from './runtime-spec.js';
import { seccompProfile } from './seccomp-profile.js';
import type { RunResult, RunSpec } from './types.js';
import { UserResolutionError } from './user.js';

import { jest } from '@jest/globals';

jest.setTimeout(60_000);

describe.each(TEST_RUNTIMES)('ContainerExecutor on overlay snapshots, with %s', (runtime) => {
  let dataDir: string;
  let store: LayerStore;
  let executor: ContainerExecutor;
  let base: TestLayer;
  const snapshots: Snapshot[] = [];

  beforeAll(async () => {
    // Installed but unable to run here (a hybrid host not prepared): say why rather than fail every test.
    if (runtime === 'crun') expect(await crunUnusableReason()).toBeUndefined();
    base = busyboxLayer();
  });
  beforeEach(() => {
    dataDir = tempDir('runtime');
    store = new LayerStore({ dataDir });
    executor = new ContainerExecutor({ dataDir, resolvConf: '', runtime });
  });
  afterEach(async () => {
    await executor.close();
    for (const snapshot of snapshots.splice(0)) await snapshot.release();
    rmSync(dataDir, { recursive: true, force: true });
  });

  async function snapshotOf(layers: TestLayer[] = [base]): Promise<Snapshot> {
    const snapshot = await store.prepare(
      layers.map((layer) => layer.diffId),
      layerSource(layers).source,
    );
    snapshots.push(snapshot);
    return snapshot;
  }

  async function sh(script: string, extra: Partial<RunSpec> = {}, snapshot?: Snapshot): Promise<RunResult & { lines: string[]; snapshot: Snapshot }> {
    const snap = snapshot ?? (await snapshotOf());
    const lines: string[] = [];
    const result = await executor.run(
      { args: ['/bin/sh', '-c', script], env: [], network: 'none', ...extra },
      { rootfs: snap.rootfs, onOutput: (_stream, line) => lines.push(line) },
    );
    return { ...result, lines, snapshot: snap };
  }

  /** Runs a step and packs its diff into a layer, which the next snapshot stacks on. */
  async function layerFromStep(snapshot: Snapshot): Promise<TestLayer> {
    const packed = new LayerWriter({ compression: 'none' }).pack(await diffUpperDir(snapshot.upperDir, { lowerDirs: snapshot.lowerDirs }));
    const chunks: Buffer[] = [];
    for await (const chunk of packed.stream) chunks.push(chunk as Buffer);
    return { diffId: (await packed.result).diffId, tar: Buffer.concat(chunks) };
  }

  const byPath = (entries: LayerEntry[]): Record<string, LayerEntry> => Object.fromEntries(entries.map((entry) => [entry.path, entry]));
  /** The parked runtimes' shells of this test's executors (their runtime arguments name its bundles). */
  const parkedShells = (): string[] => processesNaming(join(dataDir, 'bundles')).filter((line) => line.includes('strata-parked-runtime'));

  it('turns a written file into a layer entry with its owner, mode and mtime', async () => {
    const run = await sh('mkdir -p /opt/app && echo hello > /opt/app/greeting && chown 1000:50 /opt/app/greeting && chmod 640 /opt/app/greeting && touch -d "2021-01-02 03:04:05" /opt/app/greeting');
    expect(run.exitCode).toBe(0);
    const entries = await diffUpperDir(run.snapshot.upperDir, { lowerDirs: run.snapshot.lowerDirs });
    expect(entries.map((entry) => `${entry.type} ${entry.path}`)).toEqual(['directory opt', 'directory opt/app', 'file opt/app/greeting']);
    const greeting = byPath(entries)['opt/app/greeting'] as LayerEntry & { type: 'file'; content: { path: string } };
    expect([greeting.uid, greeting.gid, greeting.mode]).toEqual([1000, 50, 0o640]);
    expect((greeting.mtime as Date).getTime()).toBe(new Date('2021-01-02T03:04:05').getTime());
    expect(readFileSync(greeting.content.path, 'utf8')).toBe('hello\n');
  });

  it('gives no entries for a step that changed nothing, also FROM scratch', async () => {
    const run = await sh('true');
    expect(await diffUpperDir(run.snapshot.upperDir, { lowerDirs: run.snapshot.lowerDirs })).toEqual([]);
    // FROM scratch has no shell: bind busybox in and check runc's mount points leave no trace.
    const scratch = await snapshotOf([]);
    const result = await executor.run(
      { args: ['/busybox', 'true'], env: [], mounts: [{ type: 'bind', source: '/bin/busybox', destination: '/busybox', readonly: true }] },
      { rootfs: scratch.rootfs },
    );
    expect(result.exitCode).toBe(0);
    expect(await diffUpperDir(scratch.upperDir, { lowerDirs: scratch.lowerDirs })).toEqual([]);
  });

  it('turns deleted lower files into whiteouts and a recreated directory into an opaque one', async () => {
    const first = await sh('mkdir -p /data/sub && echo 1 > /data/sub/a && echo 2 > /data/b && echo 3 > /etc/motd');
    const layer1 = await layerFromStep(first.snapshot);
    const second = await sh('rm /etc/motd && rm -rf /data && mkdir /data && echo new > /data/c', {}, await snapshotOf([base, layer1]));
    expect(second.exitCode).toBe(0);
    const entries = await diffUpperDir(second.snapshot.upperDir, { lowerDirs: second.snapshot.lowerDirs });
    expect(entries.map((entry) => `${entry.type} ${entry.path}`)).toEqual([
      'directory data',
      'opaque data',
      'file data/c',
      'directory etc',
      'whiteout etc/motd',
    ]);
    // Stacked again, the layers give what the container saw.
    const layer2 = await layerFromStep(second.snapshot);
    const third = await snapshotOf([base, layer1, layer2]);
    expect(existsSync(join(third.rootfs, 'etc/motd'))).toBe(false);
    expect(existsSync(join(third.rootfs, 'data/sub'))).toBe(false);
    expect(readFileSync(join(third.rootfs, 'data/c'), 'utf8')).toBe('new\n');
  });

  it('keeps hard links as hard links and never links whiteouts together', async () => {
    const first = await sh('echo 1 > /etc/x && echo 2 > /etc/y');
    const layer1 = await layerFromStep(first.snapshot);
    const run = await sh('echo data > /srv && ln /srv /srv-link && rm /etc/x /etc/y', {}, await snapshotOf([base, layer1]));
    const entries = byPath(await diffUpperDir(run.snapshot.upperDir, { lowerDirs: run.snapshot.lowerDirs }));
    expect(entries['srv']?.type).toBe('file');
    expect(entries['srv-link']).toEqual({ type: 'hardlink', path: 'srv-link', target: 'srv' });
    expect(entries['etc/x']?.type).toBe('whiteout');
    expect(entries['etc/y']?.type).toBe('whiteout');
  });

  it('reports a non-zero exit code with the last lines of output', async () => {
    // One stream only: stdout and stderr are separate pipes, so their relative order is not fixed.
    const run = await sh('for i in $(seq 1 30); do echo "line $i"; done; echo "something broke"; exit 3');
    expect(run.exitCode).toBe(3);
    expect(run.outputTail).toHaveLength(20);
    expect(run.outputTail).toEqual(expect.arrayContaining(['line 30', 'something broke']));
    expect(run.outputTail).not.toContain('line 1');
  });

  it('streams output while the step still runs', async () => {
    const snapshot = await snapshotOf();
    const arrivals: { line: string; at: number }[] = [];
    const started = Date.now();
    const result = await executor.run(
      { args: ['/bin/sh', '-c', 'echo a; sleep 1; echo b'], env: [] },
      { rootfs: snapshot.rootfs, onOutput: (_stream, line) => arrivals.push({ line, at: Date.now() - started }) },
    );
    expect(arrivals.map((arrival) => arrival.line)).toEqual(['a', 'b']);
    expect(arrivals[1]!.at - arrivals[0]!.at).toBeGreaterThanOrEqual(800);
    expect(result.durationMs).toBeGreaterThanOrEqual(1000);
  });

  it('reads no more output while the consumer is behind: the step waits on its pipe, then goes on with nothing lost', async () => {
    const snapshot = await snapshotOf();
    const lines: string[] = [];
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let firstSeen!: () => void;
    const first = new Promise<void>((resolve) => (firstSeen = resolve));
    const running = executor.run(
      { args: ['/bin/sh', '-c', 'seq 1 200000; touch /finished'], env: [], network: 'none' },
      {
        rootfs: snapshot.rootfs,
        onOutput: (_stream, line) => {
          lines.push(line);
          if (lines.length > 1) return undefined;
          firstSeen();
          return gate;
        },
      },
    );
    await first;
    await new Promise((resolve) => setTimeout(resolve, 500));
    // 1.3 MB of output: held back, the step cannot have finished; one read of the pipe (64 KiB, some 10,000 lines) came in.
    expect(lines.length).toBeLessThan(20_000);
    expect(existsSync(join(snapshot.upperDir, 'finished'))).toBe(false);
    open();
    const result = await running;
    expect(result.exitCode).toBe(0);
    expect(lines).toHaveLength(200_000);
    expect(lines.every((line, i) => line === String(i + 1))).toBe(true);
    expect(existsSync(join(snapshot.upperDir, 'finished'))).toBe(true);
  });

  it('kills a step that passes its memory limit and reports it out of memory', async () => {
    const run = await sh('x=$(head -c 200000000 /dev/zero | tr "\\000" a); echo survived ${#x}', { limits: { memoryBytes: 32 * 1024 * 1024 } });
    expect(run.oomKilled).toBe(true);
    expect(run.exitCode).not.toBe(0);
    expect(run.lines).not.toContain(expect.stringContaining('survived'));
  });

  it("runs the step in the cgroup carrying its limits, under the worker's own cgroup in every hierarchy", async () => {
    const own = new Map(
      readFileSync('/proc/self/cgroup', 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => [line.split(':')[1]!, line.split(':')[2]!]),
    );
    const run = await sh('cat /proc/self/cgroup; cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || true', { limits: { memoryBytes: 64 * 1024 * 1024, pids: 64 } });
    expect(run.exitCode).toBe(0);
    const inside = new Map(run.lines.filter((line) => /^\d+:/.test(line)).map((line) => [line.split(':')[1]!, line.split(':')[2]!]));
    for (const controller of ['memory', 'pids']) {
      const path = inside.get(controller) ?? inside.get('');
      expect(path).toMatch(/\/strata-runtime\/strata-[0-9a-f]{16}\/ctr$/);
      const ownPath = own.get(controller) ?? own.get('') ?? '/';
      expect(path!.startsWith(ownPath === '/' ? '/' : `${ownPath}/`)).toBe(true);
    }
  });

  it('gives the step its CPU quota and refuses it the host\'s devices (the device cgroup), whoever places the cgroups', async () => {
    const run = await sh('cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; mknod /tmp/disk b 8 0 && head -c 1 /tmp/disk; echo "open: $?"', { limits: { cpus: 0.5 } });
    expect(run.lines[0]).toBe('50000');
    expect(run.lines).toContainEqual(expect.stringMatching(/Operation not permitted/));
    expect(run.lines.at(-1)).toBe('open: 1');
  });

  it('keeps the next step\'s cgroups and runtime parked while a step runs (crun on cgroup v1), and lets them go on close', async () => {
    if (runtime !== 'crun' || !(await ContainerCgroup.isV1())) return;
    const ahead = new ContainerExecutor({ dataDir, resolvConf: '', runtime, parkAhead: true });
    const memoryPath = (lines: string[]): string => lines.find((line) => /^\d+:memory:/.test(line))!.split(':')[2]!;
    const step = async (): Promise<string[]> => {
      const lines: string[] = [];
      const result = await ahead.run({ args: ['/bin/sh', '-c', 'cat /proc/self/cgroup'], env: [] }, { rootfs: (await snapshotOf()).rootfs, onOutput: (_s, line) => lines.push(line) });
      expect(result.exitCode).toBe(0);
      return lines;
    };
    let parkedId = '';
    try {
      const first = await step();
      // A stopped shell waits in the next step's cgroups (joined once the first step's container exited),
      // its runtime's arguments naming that step's container.
      const cgroupOf = (line: string): string => memoryPath(readFileSync(`/proc/${line.split(' ')[0]}/cgroup`, 'utf8').split('\n'));
      await waitUntil(() => parkedShells().some((line) => /\/strata-runtime\/strata-[0-9a-f]{16}\/ctr$/.test(cgroupOf(line))));
      const parked = parkedShells();
      expect(parked).toHaveLength(1);
      const pid = parked[0]!.split(' ')[0]!;
      expect(/^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]).toBe('T');
      parkedId = /strata-[0-9a-f]{16}$/.exec(parked[0]!.trim())![0];
      expect(cgroupOf(parked[0]!)).toMatch(new RegExp(`/strata-runtime/${parkedId}/ctr$`));
      expect(memoryPath(first)).not.toContain(parkedId);
      // The next step runs in exactly those cgroups.
      expect(memoryPath(await step())).toMatch(new RegExp(`/strata-runtime/${parkedId}/ctr$`));
      // A step that fails before its container starts lets its parked runtime go; one is kept for the next.
      await expect(ahead.run({ args: ['id'], env: [], user: 'nobody-here' }, { rootfs: (await snapshotOf()).rootfs })).rejects.toThrow(UserResolutionError);
      await ahead.settled();
      await waitUntil(() => parkedShells().length === 1);
      // A parked runtime that died meanwhile is replaced, not started.
      process.kill(Number(parkedShells()[0]!.split(' ')[0]), 'SIGKILL');
      await waitUntil(() => parkedShells().length === 0);
      expect((await step()).length).toBeGreaterThan(0);
    } finally {
      await ahead.close();
    }
    expect(parkedShells()).toEqual([]);
    expect(existsSync(memoryCgroupOf(parkedId))).toBe(false);
  });

  it('clears the parked runtime a killed worker left, with its cgroups, when the next one starts', async () => {
    if (runtime !== 'crun' || !(await ContainerCgroup.isV1())) return;
    // The killed worker: a step ran, the next one's runtime is parked, and nobody closes it.
    const killed = new ContainerExecutor({ dataDir, resolvConf: '', runtime, parkAhead: true });
    const result = await killed.run({ args: ['/bin/true'], env: [] }, { rootfs: (await snapshotOf()).rootfs });
    expect(result.exitCode).toBe(0);
    await waitUntil(() => parkedShells().length === 1);
    const parkedId = /strata-[0-9a-f]{16}$/.exec(parkedShells()[0]!.trim())![0];
    const parkedCgroup = memoryCgroupOf(parkedId);
    expect(existsSync(parkedCgroup)).toBe(true);
    // An executor on another data directory leaves this one's parked runtime alone.
    const otherDir = tempDir('other');
    expect(await new ContainerExecutor({ dataDir: otherDir, resolvConf: '', runtime }).clearLeftovers()).toEqual([]);
    rmSync(otherDir, { recursive: true, force: true });
    expect(await new ContainerExecutor({ dataDir, resolvConf: '', runtime }).clearLeftovers()).toEqual([parkedId]);
    expect(parkedShells()).toEqual([]);
    expect(existsSync(parkedCgroup)).toBe(false);
    await killed.close();
  });

  it('names why a container could not start (the runtime\'s own error, read from its JSON log)', async () => {
    const snapshot = await snapshotOf();
    const error = await executor.run({ args: ['/no/such/program'], env: [] }, { rootfs: snapshot.rootfs }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ContainerStartError);
    expect((error as Error).message).toMatch(/^the container for "\/no\/such\/program" could not start: .*\/no\/such\/program/);
  });

  it('runs a privileged step with the worker\'s capabilities and a writable /sys, the next one sandboxed again', async () => {
    const privileged = await sh('grep CapEff /proc/self/status; mount -o remount,rw /sys && echo sys-rw', { privileged: true });
    const own = /^CapEff:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1];
    expect(privileged.lines[0]).toBe(`CapEff:\t${own}`);
    expect(privileged.lines).toContain('sys-rw');
    const sandboxed = await sh('grep CapEff /proc/self/status; mount -o remount,rw /sys && echo sys-rw');
    expect(sandboxed.lines[0]).not.toBe(`CapEff:\t${own}`);
    expect(sandboxed.lines).not.toContain('sys-rw');
  });

  it('runs every step under the seccomp profile, also those given a filter compiled before (crun)', async () => {
    for (let i = 0; i < 3; i++) {
      const run = await sh('grep -E "^(Seccomp|Seccomp_filters|NoNewPrivs):" /proc/self/status');
      expect(run.lines).toEqual(['NoNewPrivs:\t1', 'Seccomp:\t2', 'Seccomp_filters:\t1']);
    }
    if (runtime !== 'crun') return;
    // A probe a killed worker left (created, never started) is deleted before the first probe.
    const probes = join(dataDir, 'seccomp-test');
    const left = join(probes, 'bundles', 'left');
    mkdirSync(join(left, 'rootfs', 'dev'), { recursive: true });
    writeFileSync(join(left, 'rootfs', 'never-runs'), '', { mode: 0o755 });
    writeFileSync(join(left, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', process: { args: ['/never-runs'], cwd: '/', user: { uid: 0, gid: 0 } }, root: { path: 'rootfs' }, mounts: [], linux: { namespaces: [{ type: 'mount' }] } }));
    execFileSync('crun', ['--root', join(probes, 'state'), '--cgroup-manager=disabled', 'create', '--bundle', left, 'strata-seccomp-left'], { stdio: 'ignore' });
    expect(existsSync(join(probes, 'state', 'strata-seccomp-left'))).toBe(true);
    // The filter crun compiles, once per profile: whole BPF instructions (8 bytes each), the same bytes again.
    const cache = new CrunSeccompCache('crun', probes);
    const profile = seccompProfile({ capabilities: DEFAULT_CAPABILITIES }) as unknown as Record<string, unknown>;
    const filter = await cache.filterFor(profile);
    expect(filter).toBeDefined();
    expect(Buffer.from(filter!, 'base64').length % 8).toBe(0);
    expect(Buffer.from(filter!, 'base64').length).toBeGreaterThan(800);
    expect(await cache.filterFor({ ...profile, listenerPath: '/elsewhere.sock' })).toBe(filter);
    expect(await cache.filterFor({ ...profile, defaultErrnoRet: 38 })).not.toBe(filter);
    expect(existsSync(join(probes, 'state', 'strata-seccomp-left'))).toBe(false);
    expect(readdirSync(join(probes, 'state'))).toEqual([]);
    // No probe's process is left behind, the killed worker's one included (each would wait on crun's exec FIFO for good).
    expect(processesNaming(probes)).toEqual([]);
  });

  it('stops a fork bomb at the pids limit', async () => {
    const run = await sh('bomb() { bomb | bomb & }; bomb; sleep 2; echo done', { limits: { pids: 32, timeoutMs: 8000 } });
    expect(run.pidsLimitHit).toBe(true);
  });

  it('kills a step that passes its time limit', async () => {
    const run = await sh('echo start; sleep 30', { limits: { timeoutMs: 1000 } });
    expect(run.timedOut).toBe(true);
    expect(run.exitCode).toBe(137);
    expect(run.lines).toEqual(['start']);
    expect(run.durationMs).toBeLessThan(10_000);
  });

  it('kills a step when the build is cancelled', async () => {
    const snapshot = await snapshotOf();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 500);
    const result = await executor.run({ args: ['/bin/sleep', '30'], env: [] }, { rootfs: snapshot.rootfs, signal: controller.signal });
    expect(result.cancelled).toBe(true);
    expect(result.durationMs).toBeLessThan(10_000);
  });

  it('kills a step whose build is cancelled while its container is still being set up', async () => {
    const snapshot = await snapshotOf();
    const controller = new AbortController();
    const running = executor.run({ args: ['/bin/sleep', '30'], env: [], limits: { timeoutMs: 8000 } }, { rootfs: snapshot.rootfs, signal: controller.signal });
    // run() has started (user, bundle, cgroups) and not yet spawned runc.
    controller.abort();
    const result = await running;
    expect(result.cancelled).toBe(true);
    expect(result.timedOut).toBe(false);
  });

  it('resolves USER by name, uid and uid:gid through the image files, and refuses unknown names', async () => {
    expect((await sh('id', { user: 'app' })).lines).toEqual(['uid=1000(app) gid=1000(app) groups=50(staff)']);
    expect((await sh('id -u; id -g', { user: '1000' })).lines).toEqual(['1000', '1000']);
    expect((await sh('id -u; id -g', { user: '4242:50' })).lines).toEqual(['4242', '50']);
    expect((await sh('id -u; id -g', { user: 'app:root' })).lines).toEqual(['1000', '0']);
    await expect(sh('id', { user: 'nobody-here' })).rejects.toThrow(UserResolutionError);
    await expect(sh('id', { user: 'nobody-here' })).rejects.toThrow(/unable to find user nobody-here/);
  });

  it('creates a missing working directory owned by the user', async () => {
    const run = await sh('pwd; touch mine', { user: 'app', cwd: '/srv/app/work' });
    expect(run.lines).toEqual(['/srv/app/work']);
    const entries = byPath(await diffUpperDir(run.snapshot.upperDir, { lowerDirs: run.snapshot.lowerDirs }));
    expect(entries['srv/app/work']).toMatchObject({ type: 'directory', uid: 1000, gid: 1000 });
    expect(entries['srv/app/work/mine']).toMatchObject({ type: 'file', uid: 1000, gid: 1000 });
  });

  it('passes env, hostname and a default PATH, with generated /etc/hosts and resolv.conf kept out of the layer', async () => {
    const run = await sh('echo $GREETING $HOME $PATH; hostname; grep -c localhost /etc/hosts', { env: ['GREETING=hi'], hostname: 'builder' });
    expect(run.lines).toEqual(['hi /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'builder', '2']);
    expect(await diffUpperDir(run.snapshot.upperDir, { lowerDirs: run.snapshot.lowerDirs })).toEqual([]);
  });

  describe('isolation', () => {
    let server: Server;
    let port: number;
    let connections = 0;
    beforeAll(async () => {
      server = createServer((socket) => {
        connections++;
        socket.end('host secret\n');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('cannot read host files outside the rootfs', async () => {
      const secretDir = tempDir('secret');
      writeFileSync(join(secretDir, 'secret'), 'host secret');
      const run = await sh(`cat ${secretDir}/secret; cat /proc/1/root${secretDir}/secret; ls /proc/1/root${secretDir}`);
      expect(run.lines.join('\n')).not.toContain('host secret');
      expect(run.exitCode).not.toBe(0);
      rmSync(secretDir, { recursive: true });
    });

    it("cannot write the worker's data directory", async () => {
      const run = await sh(`mkdir -p ${dataDir}/layers && echo pwned > ${dataDir}/layers/pwned; echo pwned > /proc/1/root${dataDir}/pwned`);
      expect(existsSync(join(dataDir, 'layers', 'pwned'))).toBe(false);
      expect(existsSync(join(dataDir, 'pwned'))).toBe(false);
      // The same path inside the container is the container's own: the write lands in its layer.
      expect(existsSync(join(run.snapshot.upperDir, dataDir, 'layers', 'pwned'))).toBe(true);
    });

    it("cannot connect to a service on the host's 127.0.0.1 with network none", async () => {
      const before = connections;
      const run = await sh(`nc -w 2 127.0.0.1 ${port} </dev/null; echo "nc exit $?"; ip -o link show | cut -d: -f2`, { network: 'none' });
      expect(run.lines.join('\n')).not.toContain('host secret');
      expect(run.lines).toContain('nc exit 1');
      expect(run.lines.map((line) => line.trim()).filter((line) => !line.startsWith('nc'))).toEqual(['lo']);
      expect(connections).toBe(before);
    });
  });
});

/** Where this worker's executors put container `id`'s parent cgroup in the memory hierarchy. */
function memoryCgroupOf(id: string): string {
  const own = /^\d+:memory:(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/';
  return join('/sys/fs/cgroup/memory', own, 'strata-runtime', id);
}

async function waitUntil(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The processes whose command line names `path` (a probe's `crun create` init keeps crun's command line). */
function processesNaming(path: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    } catch {
      continue; // gone meanwhile
    }
    const state = (() => {
      try {
        return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      } catch {
        return undefined;
      }
    })();
    // A zombie is gone but for its parent's wait: killed, as it should be.
    if (cmdline.includes(path) && state !== 'Z') found.push(`${pid} ${cmdline.trim()}`);
  }
  return found;
}

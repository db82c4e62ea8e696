import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chooseRuntime, mountPointsUnder, parkedRuntimesUnder, readMountsSync } from '@strata/runtime';
import { startWorker } from '../../apps/worker/src/main.js';
import { importBusybox } from '../support/images.js';
import { startPrivateRedis } from '../support/redis-server.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';
import { startWorkerProcess, type WorkerProcess } from '../support/worker-process.js';
import { FAST_RECONCILE, until } from './reconcile-helpers.js';

jest.setTimeout(240_000);

const logText = async (stack: Stack, token: string, id: string) => (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;

/** The whole SSE stream of a build's log from its start; the api ends it after the `end` event. */
async function followLog(stack: Stack, token: string, id: string): Promise<string> {
  const res = await fetch(`${stack.url}/v1/builds/${id}/logs`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: AbortSignal.timeout(30_000) });
  return res.text();
}

/** The RUN containers under a worker's data directory, whichever runtime it ran them with (runc or crun). */
const runcContainers = (dataDir: string): string[] =>
  ['runc', 'crun'].flatMap((runtime) => {
    try {
      return execFileSync(runtime, ['--root', path.join(dataDir, 'runtime', runtime), 'list', '-q'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    } catch {
      return [];
    }
  });
/** The memory cgroup directory a worker's RUN container `id` runs in (read from its init process). */
function memoryCgroupOfContainer(dataDir: string, id: string): string {
  for (const runtime of ['runc', 'crun']) {
    const state = (() => {
      try {
        return JSON.parse(execFileSync(runtime, ['--root', path.join(dataDir, 'runtime', runtime), 'state', id], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as { pid: number };
      } catch {
        return undefined;
      }
    })();
    if (!state) continue;
    const lines = readFileSync(`/proc/${state.pid}/cgroup`, 'utf8').split('\n');
    const v1 = lines.find((line) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(line));
    return v1 ? path.join('/sys/fs/cgroup/memory', v1.split(':')[2]!) : path.join('/sys/fs/cgroup', lines.find((line) => line.startsWith('0::'))!.slice(3));
  }
  throw new Error(`no RUN container ${id} under ${dataDir}`);
}
/** The next step's runtime a worker keeps parked (crun on a cgroup v1 host; docs/adr/0042). */
const parkedUnder = (dataDir: string) => parkedRuntimesUnder(path.join(dataDir, 'runtime', 'bundles'));
const parksRuntimes = async (stack: Stack): Promise<boolean> => (await chooseRuntime(stack.config.run.runtime)).runtime === 'crun' && !existsSync('/sys/fs/cgroup/cgroup.controllers');
const mountsUnder = (dir: string): string[] => mountPointsUnder(readMountsSync(), dir).filter((point) => point !== dir);

describe('the build table is the truth: no accepted build is lost when Redis loses its data or a worker dies', () => {
  const processes: WorkerProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
  });
  const workerProcess = (stack: Stack, opts: { dataDir?: string } = {}) => {
    const p = startWorkerProcess(stack.config, opts);
    processes.push(p);
    return p;
  };
  const inProcessWorker = (stack: Stack) => startWorker({ ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-worker-')) });

  it('finishes every build that was queued when Redis restarted without its data', async () => {
    const redis = await startPrivateRedis({ appendonly: false });
    const stack = await startStack({ worker: false, env: { ...FAST_RECONCILE, REDIS_URL: redis.url } });
    try {
      const { token } = await stack.tenant('redis-loss');
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        const ctx = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: `build ${i}\n` }));
        const res = await api(stack, token, 'POST', `/v1/builds?repository=lost&tag=v${i}`, ctx, 'application/x-tar');
        expect(res.status).toBe(202);
        ids.push(res.json.id);
      }
      await redis.restart();
      const worker = await inProcessWorker(stack);
      try {
        const done = await Promise.all(ids.map((id) => waitForBuild(stack, token, id, 60_000)));
        expect(done.map((b) => b.status)).toEqual(['succeeded', 'succeeded', 'succeeded']);
        for (let i = 0; i < 3; i++) {
          const archive = await fetch(`${stack.url}/v1/repositories/lost/tags/v${i}/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
          expect(archive.status).toBe(200);
          expect((await archive.arrayBuffer()).byteLength).toBeGreaterThan(0);
        }
      } finally {
        await worker.close();
      }
    } finally {
      await stack.close();
      await redis.stop();
    }
  });

  it('hands the build of a SIGKILLed worker to another worker, which finishes it; the log says so and ends once', async () => {
    const stack = await startStack({ worker: false, env: FAST_RECONCILE });
    try {
      const { token } = await stack.tenant('crash');
      await importBusybox(stack, token);
      const first = workerProcess(stack);
      await first.ready();
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 3 && echo slept > /slept\n' }));
      const res = await api(stack, token, 'POST', '/v1/builds?repository=crash&tag=1', ctx, 'application/x-tar');
      expect(res.status).toBe(202);
      const id = res.json.id as string;
      await until('the RUN step runs on the first worker', async () => {
        const b = await stack.prisma.build.findUniqueOrThrow({ where: { id } });
        return b.status === 'running' && b.workerId === first.workerId && (await logText(stack, token, id)).includes('RUN sleep 3');
      });
      if (await parksRuntimes(stack)) await until('the next step\'s runtime is parked', async () => (await parkedUnder(first.dataDir)).length === 1);
      await first.kill();
      // The parked shell (stopped until a step would start it) dies with its worker, not left stopped for good.
      await until('the parked runtime is gone with its worker', async () => (await parkedUnder(first.dataDir)).length === 0, 10_000);
      const second = await inProcessWorker(stack);
      try {
        const done = await waitForBuild(stack, token, id, 90_000);
        expect(done.status).toBe('succeeded');
        expect((await stack.prisma.build.findUniqueOrThrow({ where: { id } })).workerId).not.toBe(first.workerId);
        const text = await logText(stack, token, id);
        expect(text).toContain(`worker ${first.workerId} stopped responding (no heartbeat for 3 s); the build goes back to the queue`);
        expect(text.match(/build succeeded/g)).toHaveLength(1);
        const events = await followLog(stack, token, id);
        expect(events.match(/^event: end$/gm)).toHaveLength(1);
        expect(events).toMatch(/event: end\ndata: \{"status":"succeeded","imageDigest":"sha256:[0-9a-f]{64}"\}/);
      } finally {
        await second.close();
      }
    } finally {
      await stack.close();
    }
  });

  it('fails a build whose workers keep dying, with a message and an ended log, instead of retrying it forever', async () => {
    const stack = await startStack({ worker: false, env: { ...FAST_RECONCILE, STRATA_BUILD_MAX_ATTEMPTS: '1' } });
    try {
      const { token } = await stack.tenant('crashloop');
      await importBusybox(stack, token);
      const first = workerProcess(stack);
      await first.ready();
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 30\n' }));
      const res = await api(stack, token, 'POST', '/v1/builds?repository=crashloop', ctx, 'application/x-tar');
      const id = res.json.id as string;
      await until('the RUN step runs', async () => (await logText(stack, token, id)).includes('RUN sleep 30'));
      await first.kill();
      const second = await inProcessWorker(stack);
      try {
        const done = await waitForBuild(stack, token, id, 60_000);
        expect(done.status).toBe('failed');
        expect(done.error.message).toBe(
          `the build was stopped 1 times because its worker went away (last: worker ${first.workerId} stopped responding (no heartbeat for 3 s)); it is not retried again`,
        );
        expect(await followLog(stack, token, id)).toMatch(/event: end\ndata: \{"status":"failed"\}/);
      } finally {
        await second.close();
      }
    } finally {
      await stack.close();
    }
  });

  it('a worker started on a killed worker’s data directory kills the RUN container it left and unmounts its snapshots', async () => {
    const stack = await startStack({ worker: false, env: FAST_RECONCILE });
    try {
      const { token } = await stack.tenant('leftovers');
      await importBusybox(stack, token);
      const first = workerProcess(stack);
      await first.ready();
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 300\n' }));
      const res = await api(stack, token, 'POST', '/v1/builds?repository=leftovers', ctx, 'application/x-tar');
      const id = res.json.id as string;
      await until('the RUN container runs', async () => runcContainers(first.dataDir).length === 1);
      await first.kill();
      // The container outlives its worker: the step goes on, and its overlay stays mounted.
      const left = runcContainers(first.dataDir);
      expect(left).toHaveLength(1);
      const leftCgroup = memoryCgroupOfContainer(first.dataDir, left[0]!);
      expect(existsSync(leftCgroup)).toBe(true);
      const leftMounts = mountsUnder(first.dataDir);
      expect(leftMounts.length).toBeGreaterThan(0);

      const restarted = workerProcess(stack, { dataDir: first.dataDir });
      await restarted.ready();
      expect(runcContainers(first.dataDir)).not.toContain(left[0]);
      expect(existsSync(leftCgroup)).toBe(false);
      expect(mountsUnder(first.dataDir).filter((m) => leftMounts.includes(m))).toEqual([]);
      expect(restarted.output()).toContain('cleared what a killed worker left');
      // The build itself was handed back to the queue and runs again on the restarted worker.
      await until('the build runs again', async () => (await stack.prisma.build.findUniqueOrThrow({ where: { id } })).workerId === restarted.workerId);
      await restarted.stop();
    } finally {
      await stack.close();
    }
  });

  it('SIGTERM hands a build still running after the grace period back to the queue, and another worker finishes it', async () => {
    const stack = await startStack({ worker: false, env: { ...FAST_RECONCILE, STRATA_WORKER_DRAIN_MS: '1000' } });
    try {
      const { token } = await stack.tenant('drain');
      await importBusybox(stack, token);
      const first = workerProcess(stack);
      await first.ready();
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 6 && echo ok > /ok\n' }));
      const res = await api(stack, token, 'POST', '/v1/builds?repository=drain', ctx, 'application/x-tar');
      const id = res.json.id as string;
      await until('the RUN step runs', async () => (await logText(stack, token, id)).includes('RUN sleep 6'));
      // Within the 1 s grace the 6 s step cannot finish: the worker exits on its own, handing the build back.
      await first.stop(15_000);
      expect(first.exitStatus()).toBe('exited with code 0');
      const after = await stack.prisma.build.findUniqueOrThrow({ where: { id } });
      expect({ status: after.status, workerId: after.workerId }).toEqual({ status: 'queued', workerId: null });
      expect(await logText(stack, token, id)).toContain(`worker ${first.workerId} is shutting down; the build goes back to the queue`);
      const second = await inProcessWorker(stack);
      try {
        expect((await waitForBuild(stack, token, id, 60_000)).status).toBe('succeeded');
      } finally {
        await second.close();
      }
    } finally {
      await stack.close();
    }
  });

  it('SIGTERM lets a build that ends within the grace period finish on the stopping worker', async () => {
    const stack = await startStack({ worker: false, env: { ...FAST_RECONCILE, STRATA_WORKER_DRAIN_MS: '30000' } });
    try {
      const { token } = await stack.tenant('drain-ok');
      await importBusybox(stack, token);
      const first = workerProcess(stack);
      await first.ready();
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 2 && echo ok > /ok\n' }));
      const res = await api(stack, token, 'POST', '/v1/builds?repository=drainok', ctx, 'application/x-tar');
      const id = res.json.id as string;
      await until('the RUN step runs', async () => (await logText(stack, token, id)).includes('RUN sleep 2'));
      await first.stop(30_000);
      expect(first.exitStatus()).toBe('exited with code 0');
      const after = await stack.prisma.build.findUniqueOrThrow({ where: { id } });
      expect({ status: after.status, workerId: after.workerId }).toEqual({ status: 'succeeded', workerId: first.workerId });
    } finally {
      await stack.close();
    }
  });
});

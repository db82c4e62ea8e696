import { jest } from '@jest/globals';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

jest.setTimeout(300_000);

/** A quick build: FROM scratch and one COPY, a file unique per build. */
const quick = (n: string) => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: `${n}\n` }));

async function submit(stack: Stack, token: string, tag: string): Promise<string> {
  const res = await api(stack, token, 'POST', `/v1/builds?repository=fair&tag=${tag}`, quick(tag), 'application/x-tar');
  if (res.status !== 202) throw new Error(`build ${tag} was refused: ${res.status} ${res.text}`);
  return res.json.id as string;
}

/** Build ids in the order a worker started them. */
async function startOrder(stack: Stack, ids: string[]): Promise<string[]> {
  const rows = await stack.prisma.build.findMany({ where: { id: { in: ids } }, select: { id: true, startedAt: true }, orderBy: { startedAt: 'asc' } });
  return rows.map((r) => r.id);
}

/** Every build succeeded, and each was claimed by a worker exactly once. */
async function expectEachRanOnce(stack: Stack, token: string, ids: string[]): Promise<void> {
  const done = await Promise.all(ids.map((id) => waitForBuild(stack, token, id, 240_000)));
  expect(done.filter((b) => b.status !== 'succeeded').map((b) => `${b.id}: ${b.status}`)).toEqual([]);
  const attempts = await stack.prisma.build.findMany({ where: { id: { in: ids } }, select: { attempts: true } });
  expect(attempts.map((a) => a.attempts)).toEqual(ids.map(() => 1));
}

describe('fair scheduling: a tenant with a backlog never starves another (docs/adr/0023)', () => {
  const processes: WorkerProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
  });
  /** One worker process with one build slot (so a slot frees once per build), or `slots`. */
  const oneSlotWorker = async (stack: Stack, slots = 1) => {
    const p = startWorkerProcess({ ...stack.config, workerConcurrency: slots });
    processes.push(p);
    await p.ready();
    return p;
  };

  it('starts a quiet tenant’s build within the next two slot frees behind another tenant’s 30 queued builds; each build runs once', async () => {
    const stack = await startStack({ worker: false });
    try {
      const busy = await stack.tenant('busy');
      const quiet = await stack.tenant('quiet');
      const backlog: string[] = [];
      for (let n = 0; n < 30; n++) backlog.push(await submit(stack, busy.token, `busy-${n}`));
      const first = await submit(stack, quiet.token, 'quiet-1');
      const worker = await oneSlotWorker(stack);

      // 1. Everything queued before any slot: the quiet build is the first or second to start.
      await worker.whileRunning(waitForBuild(stack, quiet.token, first, 120_000));
      const order1 = await startOrder(stack, [...backlog, first]);
      expect(order1.indexOf(first)).toBeLessThanOrEqual(1);

      // 2. Half way through the backlog: the worker is frozen, so nothing starts while the quiet build
      // is submitted; the backlog still queued then gets at most two starts before it (the one the
      // worker may have taken but not yet recorded, and one whose start tag ties and was queued first).
      await worker.whileRunning(
        (async () => {
          for (;;) {
            const finished = await stack.prisma.build.count({ where: { id: { in: backlog }, status: 'succeeded' } });
            if (finished >= 8) return;
            await new Promise((r) => setTimeout(r, 100));
          }
        })(),
      );
      process.kill(worker.pid, 'SIGSTOP');
      let second: string;
      let stillQueued: string[];
      try {
        stillQueued = (await stack.prisma.build.findMany({ where: { id: { in: backlog }, status: 'queued' }, select: { id: true } })).map((b) => b.id);
        second = await submit(stack, quiet.token, 'quiet-2');
      } finally {
        process.kill(worker.pid, 'SIGCONT');
      }
      expect(stillQueued.length).toBeGreaterThanOrEqual(15);
      await worker.whileRunning(expectEachRanOnce(stack, busy.token, backlog));
      await expectEachRanOnce(stack, quiet.token, [first, second]);
      const order2 = await startOrder(stack, [...stillQueued, second]);
      process.stdout.write(`quiet build started ${order1.indexOf(first) + 1}. of ${order1.length}, then ${order2.indexOf(second) + 1}. of the ${order2.length} still queued when it was submitted\n`);
      expect(order2.indexOf(second)).toBeLessThanOrEqual(2);
    } finally {
      await stack.close();
    }
  });

  it('keeps a tenant at its concurrency quota to one build at a time while the other slot runs the quiet tenant’s build', async () => {
    const stack = await startStack({ worker: false });
    try {
      const busy = await stack.tenant('busy-quota');
      const quiet = await stack.tenant('quiet-quota');
      const patched = await api(stack, stack.operatorToken, 'PATCH', `/v1/admin/tenants/${busy.name}`, JSON.stringify({ maxConcurrentBuilds: 1 }), 'application/json');
      expect(patched.status).toBe(200);
      const backlog: string[] = [];
      for (let n = 0; n < 8; n++) backlog.push(await submit(stack, busy.token, `busy-${n}`));
      const late = await submit(stack, quiet.token, 'quiet-1');
      // Two slots: the busy tenant's held jobs come back every second and are taken again by both.
      const worker = await oneSlotWorker(stack, 2);
      await worker.whileRunning(expectEachRanOnce(stack, busy.token, backlog));
      await expectEachRanOnce(stack, quiet.token, [late]);
      expect((await startOrder(stack, [...backlog, late])).indexOf(late)).toBeLessThanOrEqual(1);
      const runs = await stack.prisma.build.findMany({ where: { id: { in: backlog } }, select: { startedAt: true, finishedAt: true }, orderBy: { startedAt: 'asc' } });
      // Never two at once: each of the busy tenant's builds started after the one before it had finished.
      const overlaps = runs.slice(1).filter((r, i) => r.startedAt!.getTime() < runs[i]!.finishedAt!.getTime());
      expect(overlaps).toEqual([]);
    } finally {
      await stack.close();
    }
  });

  it('with STRATA_SCHEDULING=fifo the same quiet build waits for the whole backlog (the control)', async () => {
    const stack = await startStack({ worker: false, env: { STRATA_SCHEDULING: 'fifo' } });
    try {
      const busy = await stack.tenant('busy-fifo');
      const quiet = await stack.tenant('quiet-fifo');
      const backlog: string[] = [];
      for (let n = 0; n < 10; n++) backlog.push(await submit(stack, busy.token, `busy-${n}`));
      const late = await submit(stack, quiet.token, 'quiet-1');
      const worker = await oneSlotWorker(stack);
      await worker.whileRunning(expectEachRanOnce(stack, busy.token, backlog));
      await expectEachRanOnce(stack, quiet.token, [late]);
      expect((await startOrder(stack, [...backlog, late])).indexOf(late)).toBe(10);
    } finally {
      await stack.close();
    }
  });
});

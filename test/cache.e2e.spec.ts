import { startWorker } from '../apps/worker/src/main.js';
import path from 'node:path';
import { hostname, tmpdir } from 'node:os';
import { mkdtempSync } from 'node:fs';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

type Step = { instruction: string; cached: boolean; missReason: string | null; layerDigest: string | null };
const byInstruction = (b: { steps: Step[] }, prefix: string): Step => {
  const s = b.steps.find((x) => x.instruction.startsWith(prefix));
  if (!s) throw new Error(`no step starting with ${prefix}: ${b.steps.map((x) => x.instruction).join(' | ')}`);
  return s;
};

describe('the shared layer cache', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  /** Worker processes a test started; stopped here too, in case a test timed out before its own finally ran. */
  const processes: WorkerProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    await stack.close();
  });

  /** A worker of its own (own data directory): it shares only Postgres, Redis and S3 with others. */
  async function withWorker<T>(fn: () => Promise<T>): Promise<T> {
    const config = { ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-worker-')) };
    const worker = await startWorker(config);
    try {
      return await fn();
    } finally {
      await worker.close();
    }
  }

  const project = (app: string) =>
    makeDir({
      Dockerfile: 'FROM scratch\nARG VERSION=1\nCOPY go.mod /src/\nCOPY src/ /src/\nLABEL version=$VERSION\nCMD ["/src/app"]\n',
      'go.mod': 'module x\n',
      'src/app.ts': app,
      'src/util.ts': 'export const u = 1;\n',
    });

  it('hits every step when a second worker process rebuilds what the first built', async () => {
    const { token } = await stack.tenant('cache');
    const ctx = tarOf(project('one'));
    // Layers are the same either way; the image config's timestamps equal only with SOURCE_DATE_EPOCH
    // (otherwise they are each build's wall-clock time), so it is set for the image digests to compare.
    const query = 'repository=shared&buildArg=SOURCE_DATE_EPOCH=1700000000';
    // The first build runs on a worker in this process, closed before the rebuild is submitted: no one
    // else consumes this stack's queue prefix, so only the worker process below can take the rebuild.
    const first = await withWorker(() => build(stack, token, query, ctx));
    expect(first.status).toBe('succeeded');
    expect(first.steps.every((s: Step) => !s.cached)).toBe(true);
    const workerOf = async (id: string) => (await stack.prisma.build.findUniqueOrThrow({ where: { id }, select: { workerId: true } })).workerId;
    expect(await workerOf(first.id)).toBe(`${hostname()}:${process.pid}`);

    // The second worker is an OS process of its own, with a data directory of its own: it shares only
    // Postgres, Redis and S3 (and the queue prefix) with the first.
    const child = startWorkerProcess(stack.config);
    processes.push(child);
    try {
      await child.ready();
      const submitted = await api(stack, token, 'POST', `/v1/builds?${query}`, ctx, 'application/x-tar');
      expect(submitted.status).toBe(202);
      const second = await child.whileRunning(waitForBuild(stack, token, submitted.json.id, 120_000));
      expect(second.status).toBe('succeeded');
      expect(await workerOf(second.id)).toBe(child.workerId);
      expect(second.steps.length).toBe(first.steps.length);
      expect(second.steps.filter((s: Step) => !s.cached)).toEqual([]);
      expect(second.steps.map((s: Step) => s.layerDigest)).toEqual(first.steps.map((s: Step) => s.layerDigest));
      expect(second.imageDigest).toBe(first.imageDigest);
    } catch (e) {
      if (e instanceof Error && !e.message.includes('its output:')) e.message += `\n\nworker process ${child.pid} output:\n${child.output() || '(none)'}`;
      throw e;
    } finally {
      await child.stop();
    }
  }, 300_000);

  it('never serves one tenant from another tenant’s cache', async () => {
    const a = await stack.tenant('cache-a');
    const b = await stack.tenant('cache-b');
    const ctx = tarOf(project(`tenant ${Date.now()}`));
    await withWorker(async () => {
      expect((await build(stack, a.token, 'repository=app', ctx)).status).toBe('succeeded');
      const other = await build(stack, b.token, 'repository=app', ctx);
      expect(other.steps.every((s: Step) => !s.cached)).toBe(true);
      expect(other.steps[0].missReason).toBe('no earlier build of this repository and target ran this step');
    });
  });

  it('explains misses: a changed file, a changed build arg, a changed base image', async () => {
    const { token } = await stack.tenant('explain');
    await withWorker(async () => {
      await build(stack, token, 'repository=explain', tarOf(project('v1')));
      const changedFile = await build(stack, token, 'repository=explain', tarOf(project('v2')));
      expect(byInstruction(changedFile, 'COPY go.mod')).toMatchObject({ cached: true, missReason: null });
      expect(byInstruction(changedFile, 'COPY src/')).toMatchObject({ cached: false, missReason: 'COPY src/ changed: src/app.ts' });

      const changedArg = await build(stack, token, 'repository=explain&buildArg=VERSION=2', tarOf(project('v2')));
      expect(byInstruction(changedArg, 'COPY src/').cached).toBe(true);
      expect(byInstruction(changedArg, 'LABEL')).toMatchObject({ cached: false, missReason: 'build arg VERSION changed' });

      const base = (content: string) => tarOf(makeDir({ 'etc/os-release': content }));
      await api(stack, token, 'POST', '/v1/repositories/base/import?tag=1', base('one'), 'application/x-tar');
      const ctx = tarOf(makeDir({ Dockerfile: 'FROM base:1\nCOPY a /a\n', a: 'a' }));
      await build(stack, token, 'repository=onbase', ctx);
      const imported = await api(stack, token, 'POST', '/v1/repositories/base/import?tag=1', base('two'), 'application/x-tar');
      const rebased = await build(stack, token, 'repository=onbase', ctx);
      expect(rebased.steps[0]).toMatchObject({
        cached: false,
        missReason: expect.stringContaining(`base image base:1 now resolves to ${imported.json.digest}`),
      });
    });
  });

  it('gives identical image digests for builds at different times with SOURCE_DATE_EPOCH', async () => {
    const { token } = await stack.tenant('repro');
    await withWorker(async () => {
      const q = 'repository=repro&noCache=true&buildArg=SOURCE_DATE_EPOCH=1700000000';
      const first = await build(stack, token, q, tarOf(project('same')));
      await new Promise((r) => setTimeout(r, 1100));
      const second = await build(stack, token, q, tarOf(project('same')));
      expect(second.steps.some((s: Step) => s.cached)).toBe(false);
      expect(second.imageDigest).toBe(first.imageDigest);
    });
  });

  it('gives the same image digest when a later rebuild takes every step from the cache, as BuildKit does', async () => {
    const { token } = await stack.tenant('same-digest');
    await withWorker(async () => {
      const first = await build(stack, token, 'repository=same&tag=1', tarOf(project('same-digest')));
      await new Promise((r) => setTimeout(r, 1100));
      const again = await build(stack, token, 'repository=same&tag=2', tarOf(project('same-digest')));
      expect(again.steps.every((s: Step) => s.cached)).toBe(true);
      expect(again.imageDigest).toBe(first.imageDigest);
      // A change makes a new image, made when its changed steps ran.
      const changed = await build(stack, token, 'repository=same&tag=3', tarOf(project('changed')));
      expect(changed.imageDigest).not.toBe(first.imageDigest);
    });
  });
});

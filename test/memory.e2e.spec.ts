import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { encodeTarHeader, tarEndOfArchive, tarPadding } from '@strata/oci';
import { freePort, startApiProcess, type ApiProcess } from './support/api-process.js';
import { importBusybox } from './support/images.js';
import { residentMemory, watchPeakGrowth } from './support/peak-memory.js';
import { makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
/** Incompressible bytes pushed through each case: well above the bound, so one buffer of them fails it. */
const DATA_MIB = Number(process.env.STRATA_TEST_MEMORY_MIB ?? 384);
/**
 * How far above its idle resident memory the api or the worker may go while the data passes: half
 * the data. Streams hold a few MiB per stage (S3 parts of 5 MiB, four in flight; 64 KiB to 1 MiB
 * chunks); the rest is garbage the collector has not taken yet (up to about 95 MiB measured on a
 * loaded 2-core machine). Data held whole would add all of DATA_MIB.
 */
const BOUND_MIB = DATA_MIB / 2;

/**
 * A tar of `files` files adding up to DATA_MIB MiB, made while it is sent: 1 MiB random blocks, each
 * with its own number in front, so neither gzip (32 KiB window) nor a content store can shrink it.
 */
function bigContextTar(files: number): ReadableStream<Uint8Array> {
  const block = randomBytes(MiB);
  const perFile = DATA_MIB / files;
  let n = 0;
  async function* chunks(): AsyncGenerator<Buffer> {
    yield encodeTarHeader({ name: 'Dockerfile', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 27, mtime: 0 });
    yield Buffer.concat([Buffer.from('FROM scratch\nCOPY . /app/\n\n'), tarPadding(27)]);
    for (let f = 0; f < files; f++) {
      yield encodeTarHeader({ name: `data/f${f}.bin`, type: 'file', mode: 0o644, uid: 0, gid: 0, size: perFile * MiB, mtime: 0 });
      for (let i = 0; i < perFile; i++) {
        const chunk = Buffer.from(block);
        chunk.writeUInt32BE(n++, 0);
        yield chunk;
      }
    }
    yield tarEndOfArchive();
  }
  // Pulled only as fetch sends (Readable.toWeb would read ahead, without bound, into this process).
  const it = chunks();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const { value, done } = await it.next();
        if (done) controller.close();
        else controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
      },
    },
    { highWaterMark: 0 },
  );
}

describe('api and worker memory stays bounded while large contexts and layers stream through them', () => {
  let stack: Stack;
  let apiProc: ApiProcess;
  let worker: WorkerProcess;
  let tenant: { name: string; token: string };
  /** Each process's resident size once warmed up: every case's growth is counted from it. */
  const idle = { api: 0, worker: 0 };

  const post = async (query: string, body: ReadableStream<Uint8Array> | Buffer) => {
    const res = await fetch(`${apiProc.url}/v1/builds?${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/x-tar' },
      body,
      duplex: 'half',
    } as RequestInit);
    const text = await res.text();
    if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${text}`);
    const built = await apiProc.whileRunning(worker.whileRunning(waitForBuild(stack, tenant.token, JSON.parse(text).id, 800_000)));
    if (built.status !== 'succeeded') throw new Error(`the build ${built.status}: ${JSON.stringify(built.error)}`);
    return built as { steps: Array<{ instruction: string; layerDigest: string | null }> };
  };

  /** Reads a blob from /v2 to its end without keeping it; answers its length. */
  const pull = async (repo: string, digest: string) => {
    const res = await fetch(`${apiProc.url}/v2/${tenant.name}/${repo}/blobs/${digest}`, {
      headers: { authorization: `Basic ${Buffer.from(`x:${tenant.token}`).toString('base64')}` },
    });
    if (res.status !== 200 || !res.body) throw new Error(`GET blob answered ${res.status}`);
    let bytes = 0;
    for await (const chunk of res.body) bytes += (chunk as Uint8Array).byteLength;
    return bytes;
  };

  beforeAll(async () => {
    // Max context above the data; everything else as the tests' stack has it.
    stack = await startStack({ worker: false, env: { STRATA_MAX_CONTEXT_BYTES: String(4 * DATA_MIB * MiB) } });
    apiProc = startApiProcess(stack.config, await freePort());
    worker = startWorkerProcess(stack.config);
    await Promise.all([apiProc.ready(), worker.ready()]);
    tenant = await stack.tenant('memory');
    await importBusybox(stack, tenant.token);
    // One small build first: what loads once (modules, clients, pools) is not what a large build costs.
    await post('repository=warmup', tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN echo warm > /w\nCOPY . /app/\n' })));
    idle.api = residentMemory(apiProc.pid).rss;
    idle.worker = residentMemory(worker.pid).rss;
  });
  afterAll(async () => {
    await Promise.all([apiProc?.stop(), worker?.stop()]);
    await stack?.close();
  });

  it(`takes a ${DATA_MIB} MiB tar context in, builds it into a layer and serves that layer from /v2, each process staying within ${BOUND_MIB} MiB of its idle size`, async () => {
    const apiPeak = watchPeakGrowth(apiProc.pid, idle.api);
    const workerPeak = watchPeakGrowth(worker.pid, idle.worker);
    const built = await post('repository=big-context&tag=1', bigContextTar(4));
    const inBuild = { api: apiPeak(), worker: workerPeak() };

    const layer = built.steps.find((s) => s.instruction.startsWith('COPY'))?.layerDigest;
    expect(layer).toMatch(/^sha256:/);
    const apiPullPeak = watchPeakGrowth(apiProc.pid, idle.api);
    expect(await pull('big-context', layer!)).toBeGreaterThan(DATA_MIB * MiB);
    const inPull = apiPullPeak();

    // Printed so a failure (and a pass) says how far each went.
    process.stdout.write(`memory (MiB, peak / idle): build api ${inBuild.api.peakMiB.toFixed(0)} / ${inBuild.api.baselineMiB.toFixed(0)}, worker ${inBuild.worker.peakMiB.toFixed(0)} / ${inBuild.worker.baselineMiB.toFixed(0)}; pull api ${inPull.peakMiB.toFixed(0)} / ${inPull.baselineMiB.toFixed(0)}\n`);
    expect({ api: inBuild.api.growthMiB < BOUND_MIB, worker: inBuild.worker.growthMiB < BOUND_MIB, pull: inPull.growthMiB < BOUND_MIB }).toEqual({ api: true, worker: true, pull: true });
  });

  it(`turns a RUN step that writes ${DATA_MIB} MiB of random bytes into a layer, the worker staying within ${BOUND_MIB} MiB of its idle size`, async () => {
    const workerPeak = watchPeakGrowth(worker.pid, idle.worker);
    const apiPeak = watchPeakGrowth(apiProc.pid, idle.api);
    const built = await post(
      'repository=big-run&tag=1',
      tarOf(makeDir({ Dockerfile: `FROM busybox:1\nRUN --network=none dd if=/dev/urandom of=/big bs=1048576 count=${DATA_MIB} 2>/dev/null\n` })),
    );
    const w = workerPeak();
    const a = apiPeak();
    const layer = built.steps.find((s) => s.instruction.startsWith('RUN'))?.layerDigest;
    expect(layer).toMatch(/^sha256:/);
    process.stdout.write(`memory (MiB, peak / idle): RUN layer worker ${w.peakMiB.toFixed(0)} / ${w.baselineMiB.toFixed(0)}, api ${a.peakMiB.toFixed(0)} / ${a.baselineMiB.toFixed(0)}\n`);
    expect({ worker: w.growthMiB < BOUND_MIB, api: a.growthMiB < BOUND_MIB }).toEqual({ worker: true, api: true });
  });
});

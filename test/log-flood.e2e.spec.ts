import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { freePort, startApiProcess, type ApiProcess } from './support/api-process.js';
import { importBusybox } from './support/images.js';
import { residentMemory, watchPeakGrowth } from './support/peak-memory.js';
import { makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';
import { startWorkerProcess, type WorkerProcess } from './support/worker-process.js';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;
/** Lines the flood step prints: `seq 1 N`, 22.9 MB at 3 million, five times the step's log limit. */
const LINES = Number(process.env.STRATA_TEST_FLOOD_LINES ?? 3_000_000);
/**
 * How far above its idle resident memory the worker may go while the step floods its log. Without
 * backpressure (one XADD in flight per line) it grew by about 2 GiB; what the writer holds now is
 * bounded by its high-water mark (1 MiB) and one pipe read, and the rest is collector slack.
 */
const BOUND_MIB = 128;

/** CPU seconds (user + system) a live process has used, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface SseLog {
  id: string;
  step: number | null;
  stream: string;
  line: string;
}

/** Follows the build's SSE log to its end, keeping only the log events (as a user's console would show them). */
async function followLog(url: string, token: string): Promise<{ lines: SseLog[]; end: string | null }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
  if (res.status !== 200 || !res.body) throw new Error(`the log answered ${res.status}`);
  const lines: SseLog[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let at = 0;
    for (let sep = buf.indexOf('\n\n'); sep >= 0; sep = buf.indexOf('\n\n', at)) {
      const block = buf.slice(at, sep);
      at = sep + 2;
      if (block.startsWith(':')) continue;
      const [idLine, eventLine, dataLine] = block.split('\n');
      const event = eventLine.slice('event: '.length);
      const data = JSON.parse(dataLine.slice('data: '.length));
      if (event === 'end') return { lines, end: data.status };
      if (event === 'log') lines.push({ id: idLine.slice('id: '.length), step: data.step, stream: data.stream, line: data.line });
    }
    buf = buf.slice(at);
  }
  return { lines, end: null };
}

describe('a RUN step that floods its log', () => {
  let stack: Stack;
  let apiProc: ApiProcess;
  let worker: WorkerProcess;
  let tenant: { name: string; token: string };
  let idleWorker = 0;

  const submit = async (dockerfile: string, repository: string): Promise<string> => {
    const res = await fetch(`${apiProc.url}/v1/builds?repository=${repository}&tag=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/x-tar' },
      body: tarOf(makeDir({ Dockerfile: dockerfile })),
    });
    const text = await res.text();
    if (res.status !== 202) throw new Error(`build submission answered ${res.status}: ${text}`);
    return JSON.parse(text).id as string;
  };

  beforeAll(async () => {
    // The default log limits (4 MiB a step): what a user gets.
    stack = await startStack({ worker: false });
    apiProc = startApiProcess(stack.config, await freePort());
    worker = startWorkerProcess(stack.config);
    await Promise.all([apiProc.ready(), worker.ready()]);
    tenant = await stack.tenant('flood');
    await importBusybox(stack, tenant.token);
    const warm = await submit('FROM busybox:1\nRUN seq 1 1000\n', 'warmup');
    expect((await apiProc.whileRunning(worker.whileRunning(waitForBuild(stack, tenant.token, warm, 300_000)))).status).toBe('succeeded');
    idleWorker = residentMemory(worker.pid).rss;
  });
  afterAll(async () => {
    await Promise.all([apiProc?.stop(), worker?.stop()]);
    await stack?.close();
  });

  it(`keeps the worker within ${BOUND_MIB} MiB of its idle size; live and stored logs show the first 4 MiB in order, where it was clipped, and the build going on`, async () => {
    const workerPeak = watchPeakGrowth(worker.pid, idleWorker);
    const cpuBefore = cpuSeconds(worker.pid);
    const started = performance.now();
    const id = await submit(`FROM busybox:1\nRUN seq 1 ${LINES}\nRUN echo after the flood\n`, 'flood');
    const logsUrl = `${apiProc.url}/v1/builds/${id}/logs`;
    const live = followLog(logsUrl, tenant.token);
    const built = await apiProc.whileRunning(worker.whileRunning(waitForBuild(stack, tenant.token, id, 800_000)));
    const peak = workerPeak();
    const cpu = cpuSeconds(worker.pid) - cpuBefore;
    const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    process.stdout.write(
      `memory (MiB, peak / idle): flood of ${LINES} lines, worker ${peak.peakMiB.toFixed(0)} / ${peak.baselineMiB.toFixed(0)}; worker CPU ${cpu.toFixed(1)} s in ${((performance.now() - started) / 1000).toFixed(1)} s; load ${load}\n`,
    );
    expect(built.status).toBe('succeeded');
    expect(peak.growthMiB).toBeLessThan(BOUND_MIB);

    // The stored log, as `strata logs` or the console's text view reads it.
    const res = await fetch(logsUrl, { headers: { authorization: `Bearer ${tenant.token}` } });
    const text = await res.text();
    const lines = text.split('\n');
    const output = lines.filter((l) => /^#0 \d+$/.test(l)).map((l) => Number(l.slice(3)));
    // Every line up to the limit, in order: 1, 2, 3, ... with none missing.
    expect(output.length).toBeGreaterThan(400_000);
    expect(output.every((n, i) => n === i + 1)).toBe(true);
    const keptBytes = output.reduce((sum, n) => sum + String(n).length + 1, 0);
    expect(keptBytes).toBeLessThanOrEqual(4 * MiB);
    expect(keptBytes + String(output.length + 1).length + 1).toBeGreaterThan(4 * MiB);
    const clipped = lines.indexOf("#0 [strata] this step's output passed the 4.0 MiB limit for one step; the rest is dropped and counted");
    expect(clipped).toBe(lines.indexOf(`#0 ${output.length}`) + 1);
    const dropped = LINES - output.length;
    const droppedBytes = Array.from({ length: dropped }, (_, i) => String(output.length + 1 + i).length + 1).reduce((a, b) => a + b, 0);
    expect(lines.slice(clipped + 1, clipped + 4)).toEqual([
      `#0 [strata] dropped ${dropped} lines (${(droppedBytes / MiB).toFixed(1)} MiB) of this step's output past the 4.0 MiB limit for one step`,
      expect.stringMatching(/^#0 \[strata\] done in /),
      '#1 [strata] RUN echo after the flood',
    ]);
    expect(lines).toContain('#1 after the flood');
    expect(lines[lines.length - 2]).toMatch(/^#build \[strata\] build succeeded: image sha256:/);

    // What a follower saw while the build ran: the same lines in the same order, each id after the last.
    const seen = await live;
    expect(seen.end).toBe('succeeded');
    const seenText = seen.lines.map((l) => `#${l.step ?? 'build'} ${l.stream === 'stdout' ? '' : `[${l.stream === 'system' ? 'strata' : 'stderr'}] `}${l.line}`);
    expect(seenText).toEqual(lines.slice(0, -1));
    expect(new Set(seen.lines.map((l) => l.id)).size).toBe(seen.lines.length);
  });
});

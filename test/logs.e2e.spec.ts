import { Redis } from 'ioredis';
import { createApiApp } from '../apps/api/src/app.js';
import { BuildLog, type BuildLogLimits } from '@strata/queue';
import { storageFromConfig, type Storage } from '@strata/blobstore';
import { buildLogStreamKey, compareStreamIds, redisConnection } from '@strata/queue';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

interface SseEvent {
  id: string | null;
  event: string;
  data: any;
}

/** Reads SSE events from the logs endpoint, handing each to `onEvent`; stops at `end`, when onEvent returns false, or on `stop`. */
async function follow(
  url: string,
  token: string,
  opts: { lastEventId?: string; onEvent?: (e: SseEvent) => boolean | void; signal?: AbortSignal } = {},
): Promise<{ status: number; events: SseEvent[]; body?: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'text/event-stream' };
  if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId;
  const ac = new AbortController();
  opts.signal?.addEventListener('abort', () => ac.abort());
  const res = await fetch(url, { headers, signal: ac.signal });
  if (res.status !== 200) return { status: res.status, events: [], body: await res.json() };
  expect(res.headers.get('content-type')).toContain('text/event-stream');
  const events: SseEvent[] = [];
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let sep: number;
      while ((sep = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, sep);
        buf = buf.slice(sep + 2);
        const e: SseEvent = { id: null, event: 'message', data: null };
        let data: string | null = null;
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = line.slice(0, colon);
          const value = line.slice(colon + 1).replace(/^ /, '');
          if (field === 'id') e.id = value;
          else if (field === 'event') e.event = value;
          else if (field === 'data') data = data === null ? value : `${data}\n${value}`;
        }
        if (data === null) continue;
        e.data = JSON.parse(data);
        events.push(e);
        if (opts.onEvent?.(e) === false || e.event === 'end') {
          ac.abort();
          return { status: 200, events };
        }
      }
    }
  } catch (err) {
    if (!ac.signal.aborted) throw err;
  }
  return { status: 200, events };
}

describe('build logs: GET /v1/builds/{id}/logs', () => {
  let stack: Stack;
  let token: string;
  let tenantId: string;
  let redis: Redis;
  let storage: Storage;

  beforeAll(async () => {
    stack = await startStack();
    ({ token, tenantId } = await stack.tenant('logs'));
    redis = new Redis({ ...redisConnection(stack.config.redisUrl), protocol: 2 });
    storage = await storageFromConfig(stack.config.s3);
  });
  afterAll(async () => {
    await redis.quit();
    await stack.close();
  });

  /** A build row no worker will pick up, whose log the test writes itself through the worker's BuildLog. */
  async function fakeBuild(limits?: Partial<BuildLogLimits>, secrets: string[] = []): Promise<{ id: string; log: BuildLog }> {
    const repository = await stack.prisma.repository.upsert({
      where: { tenantId_name: { tenantId, name: 'fake/logs' } },
      update: {},
      create: { tenantId, name: 'fake/logs' },
    });
    const row = await stack.prisma.build.create({ data: { tenantId, repositoryId: repository.id, status: 'running', tags: [] } });
    const log = new BuildLog({
      redis,
      objects: storage.objects,
      queuePrefix: stack.config.queuePrefix,
      buildId: row.id,
      limits: { ...stack.config.log, ...limits },
      streamTtlSeconds: 60,
      secrets,
    });
    return { id: row.id, log };
  }
  const logsUrl = (id: string, s: Stack = stack) => `${s.url}/v1/builds/${id}/logs`;
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

  const dockerfile = ['FROM scratch', 'COPY a.txt /a.txt', 'COPY b.txt /b.txt', 'ENV MODE=prod', 'COPY c/ /c/', 'CMD ["/a"]', ''].join('\n');
  const files = { Dockerfile: dockerfile, 'a.txt': 'a\n', 'b.txt': 'b\n', 'c/d.txt': 'd\n' };

  it('follows a real build over SSE: step events in order, Strata lines, then end', async () => {
    const submitted = await api(stack, token, 'POST', '/v1/builds?repository=logs/app&tag=1', tarOf(makeDir(files)), 'application/x-tar');
    expect(submitted.status).toBe(202);
    const { events } = await follow(logsUrl(submitted.json.id), token);
    const end = events[events.length - 1];
    expect(end).toMatchObject({ event: 'end', data: { status: 'succeeded' } });
    // The end event names the image the build's view names: a follower needs nothing else.
    const view = await api(stack, token, 'GET', `/v1/builds/${submitted.json.id}`);
    expect(end.data.imageDigest).toBe(view.json.imageDigest);
    expect(end.data.imageDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    const ids = events.map((e) => e.id!);
    expect([...ids].sort(compareStreamIds)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    const steps = events.filter((e) => e.event === 'step').map((e) => `${e.data.index}:${e.data.status}`);
    expect(steps).toEqual(['0:running', '0:done', '1:running', '1:done', '2:running', '2:done', '3:running', '3:done', '4:running', '4:done']);
    expect(events.find((e) => e.event === 'step' && e.data.status === 'done')!.data).toEqual({
      index: 0,
      stage: 0,
      instruction: 'COPY a.txt /a.txt',
      status: 'done',
      cached: false,
      durationMs: expect.any(Number),
    });
    const lines = events.filter((e) => e.event === 'log').map((e) => e.data);
    expect(lines[0]).toEqual({ stage: null, step: null, stream: 'system', line: expect.stringMatching(/^build .* started on worker /), time: expect.any(String) });
    expect(lines.some((l) => l.step === 0 && /^layer pushed sha256:[0-9a-f]{64} \(\d+ B\)$/.test(l.line))).toBe(true);
    expect(lines.some((l) => l.step === 4 && /^done in \d+ ms$/.test(l.line))).toBe(true);
    expect(lines[lines.length - 1].line).toMatch(/^build succeeded: image sha256:/);
    // Several followers see the same stream.
    const again = await follow(logsUrl(submitted.json.id), token);
    expect(again.events).toEqual(events);
  });

  it('delivers each line to a follower while the build is still writing', async () => {
    const { id, log } = await fakeBuild();
    log.started('test');
    const seenAt: number[] = [];
    let written = 0;
    const following = follow(logsUrl(id), token, { onEvent: (e) => void (e.event === 'log' && seenAt.push(written)) });
    await wait(300);
    for (written = 1; written <= 5; written++) {
      log.line({ stage: 0, index: 0 }, 'stdout', `tick ${written}`);
      await wait(150);
    }
    await log.finish('succeeded');
    const { events } = await following;
    const ticks = events.filter((e) => e.event === 'log' && e.data.line.startsWith('tick'));
    expect(ticks.map((e) => e.data.line)).toEqual(['tick 1', 'tick 2', 'tick 3', 'tick 4', 'tick 5']);
    // Line n arrived before line n+1 was written: the follower was not waiting for the end.
    expect(seenAt.slice(1, 6)).toEqual([1, 2, 3, 4, 5]);
  });

  it('resumes with Last-Event-ID in the middle, losing and repeating nothing', async () => {
    const { id, log } = await fakeBuild();
    for (let i = 0; i < 40; i++) log.line({ stage: 0, index: 0 }, 'stdout', `first ${i}`);
    await log.flush();
    const firstPart = await follow(logsUrl(id), token, { onEvent: (e) => e.data.line !== 'first 24' });
    expect(firstPart.events).toHaveLength(25);
    const lastId = firstPart.events[24].id!;
    const resumed = follow(logsUrl(id), token, { lastEventId: lastId });
    await wait(200);
    for (let i = 0; i < 30; i++) log.line({ stage: 0, index: 1 }, 'stderr', `second ${i}`);
    await log.finish('failed', 'exit 1');
    const rest = (await resumed).events;
    const all = [...firstPart.events, ...rest];
    const expected = [...Array.from({ length: 40 }, (_, i) => `first ${i}`), ...Array.from({ length: 30 }, (_, i) => `second ${i}`), 'build failed: exit 1'];
    expect(all.filter((e) => e.event === 'log').map((e) => e.data.line)).toEqual(expected);
    expect(rest[rest.length - 1]).toMatchObject({ event: 'end', data: { status: 'failed' } });
    // The same resume works from the archive once the stream is gone.
    await redis.del(buildLogStreamKey(stack.config.queuePrefix, id));
    const fromArchive = await follow(logsUrl(id), token, { lastEventId: lastId });
    expect(fromArchive.events).toEqual(rest);
  });

  it('serves the archived log after the build ends, after the stream is gone and after the api restarts', async () => {
    // Fresh content, so its layers are pushed rather than found in the cache.
    const result = await build(stack, token, 'repository=logs/archived&tag=1', tarOf(makeDir({ ...files, 'a.txt': `${Date.now()}\n` })));
    expect(result.status).toBe('succeeded');
    const live = await api(stack, token, 'GET', `/v1/builds/${result.id}/logs`);
    expect(live.status).toBe(200);
    expect(live.headers.get('content-type')).toContain('text/plain');
    expect(live.text).toMatch(/^#build \[strata\] build .* started on worker /);
    expect(live.text).toContain('#0 [strata] COPY a.txt /a.txt\n');
    expect(live.text).toMatch(/#0 \[strata\] layer pushed sha256:[0-9a-f]{64} \(\d+ B\)\n/);
    expect(live.text).toMatch(/#build \[strata\] build succeeded: image sha256:[0-9a-f]{64}\n$/);
    const liveEvents = (await follow(logsUrl(result.id), token)).events;

    const key = buildLogStreamKey(stack.config.queuePrefix, result.id);
    // The archive is written just after the build reads as finished; then the stream gets its short expiry.
    let ttl = await redis.ttl(key);
    for (let i = 0; i < 50 && ttl > stack.config.log.streamTtlSeconds; i++) {
      await new Promise((r) => setTimeout(r, 100));
      ttl = await redis.ttl(key);
    }
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(stack.config.log.streamTtlSeconds);
    await redis.del(key);
    expect((await api(stack, token, 'GET', `/v1/builds/${result.id}/logs`)).text).toBe(live.text);
    expect((await follow(logsUrl(result.id), token)).events).toEqual(liveEvents);

    const restarted = await createApiApp(stack.config, { logger: false });
    await restarted.listen(0, '127.0.0.1');
    try {
      const url = `http://127.0.0.1:${(restarted.getHttpServer().address() as { port: number }).port}`;
      const text = await fetch(`${url}/v1/builds/${result.id}/logs`, { headers: { authorization: `Bearer ${token}` } });
      expect(await text.text()).toBe(live.text);
      expect((await follow(`${url}/v1/builds/${result.id}/logs`, token)).events).toEqual(liveEvents);
    } finally {
      await restarted.close();
    }
  });

  it('shows the truncation line when a step floods past the per-step cap', async () => {
    const { id, log } = await fakeBuild({ stepMaxBytes: 10 * 1024 });
    log.event({ type: 'step-start', stage: 0, index: 2, instruction: 'RUN yes | head -n 5000', line: 3 });
    for (let i = 0; i < 5000; i++) log.line({ stage: 0, index: 2 }, 'stdout', 'y'.repeat(99));
    log.event({ type: 'step-done', stage: 0, stageName: null, index: 2, line: 3, instruction: 'RUN yes | head -n 5000', cacheKey: 'k', cached: false, missReason: null, fingerprint: { kind: 'RUN', line: 2, definition: 'd', args: {}, parent: 'p' }, startedAt: new Date(), durationMs: 80, layerDigest: null });
    await log.finish('succeeded');
    const text = (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;
    expect(text.match(/^#2 y+$/gm)).toHaveLength(102); // 102 lines of 100 bytes fit in 10 KiB
    expect(text).toContain("#2 [strata] this step's output passed the 10.0 KiB limit for one step; the rest is dropped and counted\n");
    expect(text).toContain("#2 [strata] dropped 4898 lines (478.3 KiB) of this step's output past the 10.0 KiB limit for one step\n");
  });

  it('finds no secret anywhere in the log, live or archived', async () => {
    const secret = 'S3cr3t-t0ken-value';
    const { id, log } = await fakeBuild({}, [secret]);
    log.event({ type: 'step-start', stage: 0, index: 0, instruction: `RUN echo ${secret}`, line: 2 });
    log.line({ stage: 0, index: 0 }, 'stdout', `token is ${secret}!`);
    const live = (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;
    expect(live).toContain('#0 token is ***!');
    await log.finish('failed', `curl -H "Authorization: ${secret}" exited with 22`);
    const sse = await follow(logsUrl(id), token);
    await redis.del(buildLogStreamKey(stack.config.queuePrefix, id));
    const archived = (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;
    for (const body of [live, JSON.stringify(sse.events), archived]) expect(body).not.toContain(secret);
    expect(archived).toContain('#build [strata] build failed: curl -H "Authorization: ***" exited with 22');
  });

  it("answers 404 for another tenant's build, an unknown id and a malformed id, 400 for a malformed Last-Event-ID", async () => {
    const { id, log } = await fakeBuild();
    log.line(null, 'system', 'hello');
    await log.finish('succeeded');
    const other = await stack.tenant('logs-other');
    for (const path of [`/v1/builds/${id}/logs`]) {
      const res = await api(stack, other.token, 'GET', path);
      expect(res.status).toBe(404);
      expect(res.json.message).toBe(`Build "${id}" does not exist.`);
      expect((await follow(`${stack.url}${path}`, other.token)).status).toBe(404);
    }
    expect((await api(stack, token, 'GET', '/v1/builds/00000000-0000-4000-8000-000000000000/logs')).status).toBe(404);
    expect((await api(stack, token, 'GET', '/v1/builds/not-a-build/logs')).json).toMatchObject({ statusCode: 404, message: 'Build "not-a-build" does not exist.' });
    const bad = await follow(logsUrl(id), token, { lastEventId: 'banana' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^Last-Event-ID "banana" is not an id this log sent/);
    expect((await api(stack, null, 'GET', `/v1/builds/${id}/logs`)).status).toBe(401);
  });

  it('does not buffer without bound for a follower that never reads', async () => {
    const { id, log } = await fakeBuild();
    for (let i = 0; i < 40_000; i++) log.line({ stage: 0, index: i % 20 }, 'stdout', `${i} ${'z'.repeat(1000)}`);
    await log.finish('succeeded');
    // ~40 MB of events; a client that reads nothing must leave the api holding only socket buffers and one batch.
    const before = process.memoryUsage().rss;
    const ac = new AbortController();
    const res = await fetch(logsUrl(id), { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal: ac.signal });
    expect(res.status).toBe(200);
    await wait(1500);
    const grown = process.memoryUsage().rss - before;
    ac.abort();
    expect(grown).toBeLessThan(20 * 1024 * 1024);
  }, 60_000);
});

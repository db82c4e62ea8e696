import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { Redis } from 'ioredis';
import { FilesystemDriver } from '@strata/blobstore';
import { BUILD_LOG_BATCH_FIELD, type BuildLogEntry, compareStreamIds, decodeStreamEntries } from './build-log.js';
import { BuildLog, type BuildLogLimits } from './build-log-writer.js';
import { redisConnection } from './index.js';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/1';
const prefix = `${process.env.STRATA_QUEUE_PREFIX ?? 'strata-unit'}-buildlog`;

describe('BuildLog', () => {
  let redis: Redis;
  let objects: FilesystemDriver;

  beforeAll(() => {
    redis = new Redis({ ...redisConnection(redisUrl), protocol: 2 });
    objects = new FilesystemDriver(mkdtempSync(path.join(tmpdir(), 'strata-buildlog-')));
  });
  afterAll(async () => {
    await redis.quit();
  });

  const generous: BuildLogLimits = { stepMaxBytes: 1024 ** 2, buildMaxBytes: 8 * 1024 ** 2, lineMaxBytes: 16 * 1024 };

  function open(limits: BuildLogLimits = generous, extra: Partial<ConstructorParameters<typeof BuildLog>[0]> = {}) {
    const buildId = randomUUID();
    return new BuildLog({ redis, objects, queuePrefix: prefix, buildId, limits, streamTtlSeconds: 60, ...extra });
  }

  async function entries(log: BuildLog): Promise<BuildLogEntry[]> {
    const raw = (await redis.xrange(log.key, '-', '+')) as Array<[string, string[]]>;
    return raw.flatMap(([id, f]) => decodeStreamEntries(id, f));
  }
  const lines = (es: BuildLogEntry[]) => es.flatMap((e) => (e.type === 'log' ? [e.line] : []));

  it('appends each line to the stream as it is written, before the step or build ends', async () => {
    const log = open();
    log.started('w1');
    log.event({ type: 'step-start', stage: 0, index: 0, instruction: 'RUN make', line: 2 });
    log.event({ type: 'log', stage: 0, index: 0, stream: 'stdout', line: 'compiling' });
    await log.flush();
    const es = await entries(log);
    expect(es.map((e) => e.type)).toEqual(['log', 'step', 'log', 'log']);
    expect(es[1]).toMatchObject({ type: 'step', index: 0, stage: 0, instruction: 'RUN make', status: 'running', cached: false, durationMs: null });
    expect(es[3]).toMatchObject({ type: 'log', stage: 0, step: 0, stream: 'stdout', line: 'compiling', time: expect.stringMatching(/^\d{4}-/) });
    expect(await redis.ttl(log.key)).toBeGreaterThan(3600); // a dead worker's stream still goes away
  });

  it('keeps the order of events even while a layer size is looked up', async () => {
    let release!: (n: number) => void;
    const log = open(generous, { layerSize: () => new Promise<number>((r) => (release = r)) });
    log.event({ type: 'step-start', stage: 0, index: 0, instruction: 'COPY a /a', line: 2 });
    log.event({ type: 'step-done', stage: 0, stageName: null, index: 0, line: 2, instruction: 'COPY a /a', cacheKey: 'k', cached: false, missReason: null, fingerprint: { kind: 'RUN', line: 2, definition: 'd', args: {}, parent: 'p' }, startedAt: new Date(), durationMs: 12, layerDigest: 'sha256:abc' });
    log.event({ type: 'step-start', stage: 0, index: 1, instruction: 'ENV A=1', line: 3 });
    await new Promise((r) => setTimeout(r, 20));
    release(2048);
    await log.finish('succeeded', undefined, { imageDigest: 'sha256:feed' });
    const es = await entries(log);
    expect(lines(es)).toEqual(['COPY a /a', 'layer pushed sha256:abc (2.0 KiB)', 'done in 12 ms', 'ENV A=1', 'build succeeded']);
    expect(es.filter((e) => e.type === 'step').map((e) => e.type === 'step' && `${e.index}:${e.status}`)).toEqual(['0:running', '0:done', '1:running']);
    // The end event names the image, so a client following the log needs no request after it.
    expect(es[es.length - 1]).toMatchObject({ type: 'end', status: 'succeeded', imageDigest: 'sha256:feed' });
  });

  it('says how much of a flooding step was dropped past the per-step cap, and keeps the rest of the build', async () => {
    const log = open({ stepMaxBytes: 1024, buildMaxBytes: 1024 ** 2, lineMaxBytes: 256 });
    for (let i = 0; i < 100; i++) log.line({ stage: 0, index: 0 }, 'stdout', `line ${String(i).padStart(3, '0')} ${'x'.repeat(90)}`);
    log.event({ type: 'step-done', stage: 0, stageName: null, index: 0, line: 2, instruction: 'RUN flood', cacheKey: 'k', cached: false, missReason: null, fingerprint: { kind: 'RUN', line: 2, definition: 'd', args: {}, parent: 'p' }, startedAt: new Date(), durationMs: 5, layerDigest: null });
    log.line({ stage: 0, index: 1 }, 'stdout', 'next step still logs');
    await log.finish('succeeded');
    const text = lines(await entries(log));
    // 100 bytes a line (with its newline): 10 lines fit in 1024 bytes, 90 are dropped.
    expect(text.filter((l) => l.startsWith('line '))).toHaveLength(10);
    expect(text).toContain("this step's output passed the 1.0 KiB limit for one step; the rest is dropped and counted");
    expect(text).toContain("dropped 90 lines (8.8 KiB) of this step's output past the 1.0 KiB limit for one step");
    expect(text).toContain('next step still logs');
  });

  it('says how much was dropped past the per-build cap', async () => {
    const log = open({ stepMaxBytes: 1024 ** 2, buildMaxBytes: 1024, lineMaxBytes: 256 });
    for (let i = 0; i < 20; i++) log.line({ stage: 0, index: i }, 'stderr', 'y'.repeat(99));
    await log.finish('failed', 'boom');
    const text = lines(await entries(log));
    expect(text.filter((l) => l.startsWith('yyy'))).toHaveLength(10);
    expect(text).toContain('dropped 10 lines (1000 B) of output past the 1.0 KiB limit for one build');
    expect(text[text.length - 1]).toBe('build failed: boom');
  });

  it('cuts over-long lines with a marker saying how much was cut', async () => {
    const log = open({ stepMaxBytes: 1024 ** 2, buildMaxBytes: 1024 ** 2, lineMaxBytes: 256 });
    log.line({ stage: 0, index: 0 }, 'stdout', 'é'.repeat(200)); // 400 bytes
    await log.flush();
    const [line] = lines(await entries(log));
    expect(line).toBe(`${'é'.repeat(128)} [line cut: 144 more bytes]`);
  });

  it('replaces every secret with *** in lines, instructions and the result', async () => {
    const log = open(generous, { secrets: ['hunter2', 'tok-ABC', 'line-one\nline-two'] });
    log.event({ type: 'step-start', stage: 0, index: 0, instruction: 'RUN echo hunter2', line: 2 });
    log.line({ stage: 0, index: 0 }, 'stdout', 'password=hunter2 token=tok-ABC tok-ABChunter2');
    log.line({ stage: 0, index: 0 }, 'stderr', 'line-two');
    await log.finish('failed', 'exit 1 after printing hunter2');
    const raw = JSON.stringify(await entries(log));
    for (const s of ['hunter2', 'tok-ABC', 'line-two']) expect(raw).not.toContain(s);
    expect(lines(await entries(log))).toContain('password=*** token=*** ******');
  });

  it('archives the whole stream with its ids to S3 as gzip JSON lines, then lets the stream expire', async () => {
    const log = open();
    log.started('w1');
    for (let i = 0; i < 2500; i++) log.line({ stage: 0, index: 0 }, 'stdout', `n${i}`);
    await log.finish('succeeded');
    const inRedis = await entries(log);
    const stream = await objects.get(`logs/${log.key.split(':log:')[1]}`);
    const chunks: Buffer[] = [];
    for await (const c of stream as Readable) chunks.push(c as Buffer);
    const archived = gunzipSync(Buffer.concat(chunks)).toString('utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(archived).toEqual(inRedis);
    expect(archived).toHaveLength(2503);
    const ttl = await redis.ttl(log.key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(60);
  });
  it('puts the lines that arrive together into one entry, each with a stream id of its own, consecutive and in order', async () => {
    const log = open();
    log.started('w1');
    await log.flush();
    for (let i = 0; i < 1000; i++) log.line({ stage: 0, index: 0 }, 'stdout', `n${i}`);
    await log.finish('succeeded');
    const raw = (await redis.xrange(log.key, '-', '+')) as Array<[string, string[]]>;
    // 1000 lines of about 100 bytes as events: a few entries of up to 32 KiB, not 1000.
    expect(raw.length).toBeLessThan(10);
    expect(raw.some(([, f]) => f[0] === BUILD_LOG_BATCH_FIELD)).toBe(true);
    const es = await entries(log);
    expect(lines(es)).toEqual(['build ' + log.key.split(':log:')[1] + ' started on worker w1', ...Array.from({ length: 1000 }, (_, i) => `n${i}`), 'build succeeded']);
    const ids = es.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort(compareStreamIds)).toEqual(ids);
    // Resuming after an id inside an entry gives exactly the events after it.
    const [entryId, fields] = raw.find(([, f]) => f[0] === BUILD_LOG_BATCH_FIELD)!;
    const inside = decodeStreamEntries(entryId, fields);
    expect(decodeStreamEntries(entryId, fields, inside[4].id)).toEqual(inside.slice(5));
    expect(decodeStreamEntries(entryId, fields, entryId)).toEqual([]);
  });

  it('asks its producer to wait while it holds more than the high-water mark, and lets it go once caught up', async () => {
    const log = open(generous, { batching: { highWaterBytes: 64 * 1024, lowWaterBytes: 16 * 1024 } });
    let waits: Promise<void> | undefined;
    let n = 0;
    while (waits === undefined) waits = log.line({ stage: 0, index: 0 }, 'stdout', `line ${n++}`);
    // Some 600 lines of about 100 bytes as events before the writer is behind, none of them lost.
    expect(n).toBeGreaterThan(500);
    expect(n).toBeLessThan(1000);
    await waits;
    for (let i = 0; i < 10; i++) log.line({ stage: 0, index: 0 }, 'stdout', `after ${i}`);
    await log.finish('succeeded');
    const text = lines(await entries(log));
    expect(text).toEqual([...Array.from({ length: n }, (_, i) => `line ${i}`), ...Array.from({ length: 10 }, (_, i) => `after ${i}`), 'build succeeded']);
  });
  it('carries on after entries another writer added to the stream (a build taken over), losing nothing', async () => {
    const log = open();
    log.line({ stage: 0, index: 0 }, 'stdout', 'before');
    await log.flush();
    // Another writer's entry, with an id ahead of anything this writer would pick.
    await redis.xadd(log.key, `${Date.now() + 60_000}-0`, 'e', JSON.stringify({ type: 'log', stage: null, step: null, stream: 'system', line: 'from elsewhere', time: new Date().toISOString() }));
    for (let i = 0; i < 3; i++) log.line({ stage: 0, index: 0 }, 'stdout', `after ${i}`);
    await log.finish('succeeded');
    const es = await entries(log);
    expect(lines(es)).toEqual(['before', 'from elsewhere', 'after 0', 'after 1', 'after 2', 'build succeeded']);
    const ids = es.map((e) => e.id);
    expect([...ids].sort(compareStreamIds)).toEqual(ids);
  });
});

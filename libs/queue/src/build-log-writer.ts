import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import type { Storage, StorageDriver } from '@strata/blobstore';
import type { BuildEvent } from '@strata/build-engine';
import type { StrataConfig } from '@strata/config';
import type { Digest } from '@strata/oci';
import { BUILD_LOG_BATCH_FIELD, BUILD_LOG_FIELD, buildLogArchiveKey, type BuildLogEvent, buildLogStreamKey, decodeStreamEntries, type EndEvent } from './build-log.js';

export type BuildLogLimits = Pick<StrataConfig['log'], 'stepMaxBytes' | 'buildMaxBytes' | 'lineMaxBytes'>;

export interface BuildLogOptions {
  redis: Redis;
  /** Where the finished log is archived. */
  objects: StorageDriver;
  queuePrefix: string;
  buildId: string;
  limits: BuildLogLimits;
  /** How long the stream lingers after the archive is written. */
  streamTtlSeconds: number;
  /** Strings replaced by `***` in every line and instruction. */
  secrets?: readonly string[];
  /** The stored size of a layer, for the "layer pushed" line. */
  layerSize?: (digest: string) => Promise<number | null>;
  now?: () => Date;
  /** How events are grouped into stream entries and how much the writer holds before it asks its producer to wait. */
  batching?: Partial<BuildLogBatching>;
}

export interface BuildLogBatching {
  /** Most bytes of event JSON in one stream entry (one XADD). */
  entryMaxBytes: number;
  /** How long an event may wait for others to share its entry while no XADD is in flight; 0: it goes at once. */
  lingerMs: number;
  /** Bytes held (waiting, batched and in flight) above which line() and event() answer a promise: stop producing until it settles. */
  highWaterBytes: number;
  /** That promise settles once the bytes held fall to this. */
  lowWaterBytes: number;
}

/**
 * 32 KiB entries keep a follower's read (32 entries, logs.service) and a reader's page near 1 MiB.
 * No linger: an event written to an idle writer goes at once, and what arrives during that XADD's
 * round trip shares the next entry, so a line waits at most one round trip (as Nagle's algorithm
 * batches a TCP stream) and a flood still packs its entries full. 1 MiB held is what a flooding
 * step can cost the worker beyond one pipe read (64 KiB of output, some 800 KiB as events).
 */
export const DEFAULT_BATCHING: BuildLogBatching = { entryMaxBytes: 32 * 1024, lingerMs: 0, highWaterBytes: 1024 * 1024, lowWaterBytes: 256 * 1024 };

/** A running build's stream lives this long if the worker dies before archiving it. */
const ABANDONED_STREAM_TTL_SECONDS = 7 * 24 * 3600;
/** Stream entries per XRANGE while archiving: each holds up to entryMaxBytes of events. */
const ARCHIVE_BATCH = 32;

interface StepUsage {
  bytes: number;
  droppedLines: number;
  droppedBytes: number;
}

type Where = { stage: number; index: number } | null;

/**
 * The writer of one build's log: each line and step event, redacted and with the size caps applied,
 * goes into the build's Redis stream as soon as it can: one XADD at a time, and the events that
 * arrive while one is in flight (and within `lingerMs` of an idle writer, if set) share the next entry, up to
 * `entryMaxBytes`. The writer picks each entry's id so that every event in it has a stream id of its
 * own (BUILD_LOG_BATCH_FIELD). While it holds more than `highWaterBytes`, `line` and `event` answer
 * a promise, and a producer that waits for it (a RUN step's output pipe) cannot outrun Redis.
 * `finish` writes the result and `end`, archives the stream to S3 as gzip JSON lines, and only
 * then lets the stream expire. Writing never throws into the build; failures surface in `finish`.
 */
export class BuildLog {
  readonly key: string;
  private readonly secrets: string[];
  private readonly steps = new Map<string, StepUsage>();
  private buildBytes = 0;
  private buildDropped = { lines: 0, bytes: 0 };
  /** Set while an event waits for something asynchronous (a layer's size); later events queue behind it. */
  private chain: Promise<void> | null = null;
  private lastWrite: Promise<unknown> = Promise.resolve();
  private writeError: Error | null = null;
  private finished = false;
  private readonly batching: BuildLogBatching;
  /** Event JSON not yet sent, oldest first, and its bytes (each with the newline that joins it). */
  private batch: string[] = [];
  private batchBytes = 0;
  /** Bytes of lines handed over while the chain waits: not yet events. */
  private queuedBytes = 0;
  private inFlightBytes = 0;
  /** The loop sending the batch, one XADD at a time; null while idle. */
  private sending: Promise<void> | null = null;
  private linger: NodeJS.Timeout | null = null;
  /** The id of the last entry written; null until the first (whose id Redis picks). */
  private lastId: { ms: number; seq: number } | null = null;
  private drain: { promise: Promise<void>; resolve: () => void } | null = null;

  constructor(private readonly opts: BuildLogOptions) {
    this.key = buildLogStreamKey(opts.queuePrefix, opts.buildId);
    this.secrets = secretPatterns(opts.secrets ?? []);
    this.batching = { ...DEFAULT_BATCHING, ...opts.batching };
  }

  /** The first line. The first write also bounds the stream's life in case this worker dies mid-build. */
  started(workerId: string): void {
    this.enqueue(() => this.system(null, `build ${this.opts.buildId} started on worker ${workerId}`));
  }

  /**
   * One line of output (RUN stdout/stderr) or one of Strata's own lines. Answers a promise while the
   * writer is behind: a producer that can wait (a pipe) should read no more until it settles.
   */
  line(where: Where, stream: 'stdout' | 'stderr' | 'system', text: string): Promise<void> | undefined {
    this.enqueue(() => this.appendLine(where, stream, text), text.length);
    return this.pressure();
  }

  /** Translates the engine's events into step events and Strata's own lines; answers as `line` does. */
  event(e: BuildEvent): Promise<void> | undefined {
    if (e.type === 'log') return this.line(e, e.stream, e.line);
    this.eventOther(e);
    return this.pressure();
  }

  private eventOther(e: Exclude<BuildEvent, { type: 'log' }>): void {
    if (e.type === 'step-start') {
      this.enqueue(() => {
        this.append({ type: 'step', stage: e.stage, index: e.index, instruction: this.redact(e.instruction), status: 'running', cached: false, durationMs: null });
        this.system(e, `${this.redact(e.instruction)}`);
      });
      return;
    }
    this.enqueue(async () => {
      const size = e.layerSize ?? (e.layerDigest && !e.cached && this.opts.layerSize ? await this.opts.layerSize(e.layerDigest).catch(() => null) : null);
      if (e.cached) this.system(e, e.layerDigest ? `cache hit: reusing layer ${e.layerDigest}` : 'cache hit');
      else if (e.layerDigest) this.system(e, `layer pushed ${e.layerDigest}${size === null ? '' : ` (${formatBytes(size)})`}`);
      this.reportStepDrops(e);
      this.system(e, `done in ${formatDuration(e.durationMs)}`);
      this.append({ type: 'step', stage: e.stage, index: e.index, instruction: this.redact(e.instruction), status: 'done', cached: e.cached, durationMs: e.durationMs });
    });
  }

  /**
   * Writes the result line and `end`, waits for every write, archives the log to S3 and sets the
   * stream's expiry. Never throws: a log that cannot be archived stays in Redis (with its long TTL).
   */
  async finish(status: EndEvent['status'], detail?: string, result?: { imageDigest?: string }): Promise<void> {
    if (this.finished) return;
    this.enqueue(() => {
      for (const [k, usage] of this.steps) {
        if (usage.droppedLines > 0) {
          const [stage, index] = k.split('.').map(Number);
          this.reportStepDrops({ stage, index });
        }
      }
      if (this.buildDropped.lines > 0) {
        this.system(
          null,
          `dropped ${this.buildDropped.lines} lines (${formatBytes(this.buildDropped.bytes)}) of output past the ${formatBytes(this.opts.limits.buildMaxBytes)} limit for one build`,
        );
      }
      this.system(null, `build ${status}${detail ? `: ${this.redact(detail)}` : ''}`);
      this.append({ type: 'end', status, ...(status === 'succeeded' && result?.imageDigest ? { imageDigest: result.imageDigest } : {}) });
      this.finished = true;
    });
    try {
      await this.flush();
      if (this.writeError) throw this.writeError;
      await this.archive();
      await this.opts.redis.expire(this.key, this.opts.streamTtlSeconds);
    } catch (e) {
      process.stderr.write(`build ${this.opts.buildId}: the log could not be archived: ${(e as Error).message}\n`);
    }
  }

  /** Resolves once every event handed over so far is in Redis. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.chain) await this.chain;
      else if (this.sending) await this.sending;
      else if (this.batch.length > 0) this.send();
      else break;
    }
    await this.lastWrite;
  }

  /** Runs `task` now, or after the tasks waiting before it; `bytes` counts as held while it waits. */
  private enqueue(task: () => void | Promise<void>, bytes = 0): void {
    if (this.finished) return;
    if (this.chain === null) {
      const r = task();
      if (r instanceof Promise) this.setChain(r);
      return;
    }
    this.queuedBytes += bytes;
    this.setChain(
      this.chain.then(() => {
        this.queuedBytes -= bytes;
        this.release();
        return task();
      }),
    );
  }

  /** A promise to wait for while more than the high-water mark is held. */
  private pressure(): Promise<void> | undefined {
    if (this.held() <= this.batching.highWaterBytes) return undefined;
    if (this.drain === null) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.drain = { promise, resolve };
    }
    // Behind: no lingering, what is batched goes now.
    if (this.batch.length > 0) this.send();
    return this.drain.promise;
  }

  private held(): number {
    return this.queuedBytes + this.batchBytes + this.inFlightBytes;
  }

  /** Lets a waiting producer go on once the writer has caught up to the low-water mark. */
  private release(): void {
    if (this.drain !== null && this.held() <= this.batching.lowWaterBytes) {
      this.drain.resolve();
      this.drain = null;
    }
  }

  private setChain(p: Promise<void>): void {
    const settled: Promise<void> = p
      .catch((e: Error) => {
        this.writeError ??= e;
      })
      .then(() => {
        if (this.chain === settled) this.chain = null;
      });
    this.chain = settled;
  }

  private appendLine(where: Where, stream: 'stdout' | 'stderr' | 'system', raw: string): void {
    const line = this.capLength(this.redact(raw));
    if (stream !== 'system') {
      // Strata's own lines are small and always kept, so the result and the drop notices show.
      const bytes = Buffer.byteLength(line) + 1;
      const usage = where ? this.usage(where) : null;
      if (usage && usage.bytes + bytes > this.opts.limits.stepMaxBytes) {
        if (usage.droppedLines === 0) {
          this.system(where, `this step's output passed the ${formatBytes(this.opts.limits.stepMaxBytes)} limit for one step; the rest is dropped and counted`);
        }
        usage.droppedLines++;
        usage.droppedBytes += bytes;
        return;
      }
      if (this.buildBytes + bytes > this.opts.limits.buildMaxBytes) {
        if (this.buildDropped.lines === 0) {
          this.system(where, `the build's output passed the ${formatBytes(this.opts.limits.buildMaxBytes)} limit for one build; the rest is dropped and counted`);
        }
        this.buildDropped.lines++;
        this.buildDropped.bytes += bytes;
        return;
      }
      if (usage) usage.bytes += bytes;
      this.buildBytes += bytes;
    }
    this.append({ type: 'log', stage: where?.stage ?? null, step: where?.index ?? null, stream, line, time: (this.opts.now?.() ?? new Date()).toISOString() });
  }

  private system(where: Where, text: string): void {
    this.appendLine(where, 'system', text);
  }

  private reportStepDrops(where: { stage: number; index: number }): void {
    const usage = this.steps.get(`${where.stage}.${where.index}`);
    if (!usage || usage.droppedLines === 0) return;
    this.system(
      where,
      `dropped ${usage.droppedLines} lines (${formatBytes(usage.droppedBytes)}) of this step's output past the ${formatBytes(this.opts.limits.stepMaxBytes)} limit for one step`,
    );
    usage.droppedLines = 0;
    usage.droppedBytes = 0;
    usage.bytes = Number.POSITIVE_INFINITY; // still over the cap: later lines keep being dropped, and counted anew
  }

  private usage(where: { stage: number; index: number }): StepUsage {
    const k = `${where.stage}.${where.index}`;
    let u = this.steps.get(k);
    if (!u) {
      u = { bytes: 0, droppedLines: 0, droppedBytes: 0 };
      this.steps.set(k, u);
    }
    return u;
  }

  private append(e: BuildLogEvent): void {
    const json = JSON.stringify(e);
    this.batch.push(json);
    this.batchBytes += json.length + 1;
    if (this.sending) return; // taken when the XADD in flight is answered
    if (this.batchBytes >= this.batching.entryMaxBytes || this.batching.lingerMs <= 0) this.send();
    else this.linger ??= setTimeout(() => this.send(), this.batching.lingerMs);
  }

  /** Starts the sending loop unless it runs or there is nothing to send. */
  private send(): void {
    if (this.linger) clearTimeout(this.linger);
    this.linger = null;
    if (this.sending || this.batch.length === 0) return;
    this.sending = this.sendAll();
  }

  /** Writes the batch as entries of up to entryMaxBytes, one XADD at a time, until it is empty. */
  private async sendAll(): Promise<void> {
    do {
      let n = 0;
      let bytes = 0;
      while (n < this.batch.length && (n === 0 || bytes + this.batch[n].length + 1 <= this.batching.entryMaxBytes)) bytes += this.batch[n++].length + 1;
      const events = this.batch.splice(0, n);
      this.batchBytes -= bytes;
      this.inFlightBytes += bytes;
      try {
        await this.xadd(events);
      } catch (e) {
        this.writeError ??= e as Error;
      } finally {
        this.inFlightBytes -= bytes;
        this.release();
      }
    } while (this.batch.length > 0);
    // Cleared in the same turn as the last check: an event appended after it starts a new loop.
    this.sending = null;
  }

  /**
   * One entry. The writer's first is a single event with the id Redis picks; after it the writer
   * picks the ids (it is the stream's only writer): the entry's id is its last event's, its events
   * taking the sequence numbers before it, each entry after the last one written.
   */
  private async xadd(events: string[], retried = false): Promise<void> {
    const { redis } = this.opts;
    if (this.lastId === null) {
      const id = (await redis.xadd(this.key, '*', BUILD_LOG_FIELD, events[0]))!;
      this.lastId = parseId(id);
      // Bounds the stream's life in case this worker dies mid-build; finish sets the short expiry.
      this.track(redis.expire(this.key, ABANDONED_STREAM_TTL_SECONDS));
      if (events.length > 1) await this.xadd(events.slice(1));
      return;
    }
    const ms = Math.max(Date.now(), this.lastId.ms);
    const seq = (ms === this.lastId.ms ? this.lastId.seq + 1 : 0) + events.length - 1;
    try {
      if (events.length === 1) await redis.xadd(this.key, `${ms}-${seq}`, BUILD_LOG_FIELD, events[0]);
      else await redis.xadd(this.key, `${ms}-${seq}`, BUILD_LOG_BATCH_FIELD, events.join('\n'));
    } catch (e) {
      // Another writer got ahead (a build taken over by a second worker): carry on after its entries.
      if (retried || !/equal or smaller/.test((e as Error).message)) throw e;
      this.lastId = null;
      return this.xadd(events, true);
    }
    this.lastId = { ms, seq };
  }

  /** Replies come back in command order, so waiting for the last one waits for them all. */
  private track(p: Promise<unknown>): void {
    this.lastWrite = p.catch((e: Error) => {
      this.writeError ??= e;
    });
  }

  private redact(s: string): string {
    let out = s;
    for (const secret of this.secrets) if (out.includes(secret)) out = out.split(secret).join('***');
    return out;
  }

  private capLength(line: string): string {
    const max = this.opts.limits.lineMaxBytes;
    if (line.length <= max / 4) return line; // cheap: at most 4 bytes per character
    const bytes = Buffer.from(line);
    if (bytes.length <= max) return line;
    const kept = bytes.subarray(0, max).toString('utf8').replace(/\uFFFD$/, '');
    return `${kept} [line cut: ${bytes.length - Buffer.byteLength(kept)} more bytes]`;
  }

  /** Streams the whole Redis stream, in id order, through gzip into `logs/<buildId>`. */
  private async archive(): Promise<void> {
    const { redis, objects } = this.opts;
    const key = this.key;
    async function* lines(): AsyncGenerator<string> {
      let start = '-';
      for (;;) {
        const batch = (await redis.xrange(key, start, '+', 'COUNT', ARCHIVE_BATCH)) as Array<[string, string[]]>;
        for (const [id, fields] of batch) {
          for (const entry of decodeStreamEntries(id, fields)) yield `${JSON.stringify(entry)}\n`;
        }
        if (batch.length < ARCHIVE_BATCH) return;
        start = `(${batch[batch.length - 1][0]}`;
      }
    }
    const gzip = createGzip();
    const source = Readable.from(lines());
    source.on('error', (e) => gzip.destroy(e));
    source.pipe(gzip);
    await objects.put(buildLogArchiveKey(this.opts.buildId), gzip);
  }
}

function parseId(id: string): { ms: number; seq: number } {
  const dash = id.indexOf('-');
  return { ms: Number(id.slice(0, dash)), seq: Number(id.slice(dash + 1)) };
}

/** Secrets as matched: longest first (so a secret containing another is hidden whole), and each line of a multi-line secret. */
function secretPatterns(secrets: readonly string[]): string[] {
  const all = new Set<string>();
  for (const s of secrets) {
    if (s.length === 0) continue;
    all.add(s);
    if (s.includes('\n')) for (const part of s.split(/\r?\n/)) if (part.trim().length >= 4) all.add(part);
  }
  return [...all].sort((a, b) => b.length - a.length);
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

function formatDuration(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

/** Opens a BuildLog per build on the worker's shared Redis connection. */
export class BuildLogs {
  constructor(private readonly deps: { redis: Redis; storage: Storage; config: StrataConfig }) {}

  open(buildId: string, secrets: readonly string[] = []): BuildLog {
    const { redis, storage, config } = this.deps;
    return new BuildLog({
      redis,
      objects: storage.objects,
      queuePrefix: config.queuePrefix,
      buildId,
      limits: config.log,
      streamTtlSeconds: config.log.streamTtlSeconds,
      secrets,
      layerSize: async (digest) => (await storage.blobs.stat(digest as Digest))?.size ?? null,
    });
  }
}

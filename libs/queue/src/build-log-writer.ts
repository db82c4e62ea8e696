import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import type { Storage, StorageDriver } from '@strata/blobstore';
import type { BuildEvent } from '@strata/build-engine';
import type { StrataConfig } from '@strata/config';
import type { Digest } from '@strata/oci';
import { BUILD_LOG_FIELD, buildLogArchiveKey, type BuildLogEvent, buildLogStreamKey, decodeStreamEntry, type EndEvent } from './build-log.js';

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
}

/** A running build's stream lives this long if the worker dies before archiving it. */
const ABANDONED_STREAM_TTL_SECONDS = 7 * 24 * 3600;
const ARCHIVE_BATCH = 1000;

interface StepUsage {
  bytes: number;
  droppedLines: number;
  droppedBytes: number;
}

type Where = { stage: number; index: number } | null;

/**
 * The writer of one build's log: each line and step event is appended to the build's Redis stream
 * the moment it is handed over (no per-step buffering), with redaction and size caps applied first.
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

  constructor(private readonly opts: BuildLogOptions) {
    this.key = buildLogStreamKey(opts.queuePrefix, opts.buildId);
    this.secrets = secretPatterns(opts.secrets ?? []);
  }

  /** The first line; also bounds the stream's life in case this worker dies mid-build. */
  started(workerId: string): void {
    this.enqueue(() => {
      this.system(null, `build ${this.opts.buildId} started on worker ${workerId}`);
      this.track(this.opts.redis.expire(this.key, ABANDONED_STREAM_TTL_SECONDS));
    });
  }

  /** One line of output (RUN stdout/stderr) or one of Strata's own lines. */
  line(where: Where, stream: 'stdout' | 'stderr' | 'system', text: string): void {
    this.enqueue(() => this.appendLine(where, stream, text));
  }

  /** Translates the engine's events into step events and Strata's own lines. */
  event(e: BuildEvent): void {
    if (e.type === 'log') {
      this.line(e, e.stream, e.line);
      return;
    }
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
  async finish(status: EndEvent['status'], detail?: string): Promise<void> {
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
      this.append({ type: 'end', status });
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
    while (this.chain) await this.chain;
    await this.lastWrite;
  }

  private enqueue(task: () => void | Promise<void>): void {
    if (this.finished) return;
    if (this.chain === null) {
      const r = task();
      if (r instanceof Promise) this.setChain(r);
      return;
    }
    this.setChain(this.chain.then(task));
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
    this.track(this.opts.redis.xadd(this.key, '*', BUILD_LOG_FIELD, JSON.stringify(e)));
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
          const entry = decodeStreamEntry(id, fields);
          if (entry) yield `${JSON.stringify(entry)}\n`;
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

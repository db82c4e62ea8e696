import { StringDecoder } from 'node:string_decoder';
import { createGunzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import { NotFoundError, type StorageDriver } from '@strata/blobstore';
import { buildLogArchiveKey, type BuildLogEntry, buildLogStreamKey, compareStreamIds, decodeStreamEntries } from '@strata/queue';

/** Stream entries per XRANGE: an entry holds up to 32 KiB of events (BuildLog's batching), so a page about 1 MiB. */
const PAGE = 32;

/**
 * Reads a build's log from wherever it is now: the Redis stream while it exists, else the S3
 * archive the worker wrote when the build ended. Both carry the same ids, so `after` (a
 * Last-Event-ID) works across the switch.
 */
export class BuildLogReader {
  constructor(
    private readonly redis: Redis,
    private readonly objects: StorageDriver,
    private readonly queuePrefix: string,
  ) {}

  streamKey(buildId: string): string {
    return buildLogStreamKey(this.queuePrefix, buildId);
  }

  async streamExists(buildId: string): Promise<boolean> {
    return (await this.redis.exists(this.streamKey(buildId))) === 1;
  }

  /** Everything stored so far after `after` (exclusive), oldest first. */
  async *stored(buildId: string, after: string | null): AsyncGenerator<BuildLogEntry> {
    let last = after;
    let ended = false;
    if (await this.streamExists(buildId)) {
      for (;;) {
        const page = (await this.redis.xrange(this.streamKey(buildId), last ? `(${last}` : '-', '+', 'COUNT', PAGE)) as Array<[string, string[]]>;
        for (const [id, fields] of page) {
          // `after` may fall inside the first entry; an entry's id is its last event's.
          const entries = decodeStreamEntries(id, fields, last);
          last = id;
          for (const entry of entries) {
            ended ||= entry.type === 'end';
            yield entry;
          }
        }
        if (page.length < PAGE) break;
      }
      // The stream expired while we read it: the archive holds the rest.
      if (ended || (await this.streamExists(buildId))) return;
    }
    yield* this.archived(buildId, last);
  }

  /** The S3 archive's entries after `after`; nothing when there is no archive (yet). */
  async *archived(buildId: string, after: string | null): AsyncGenerator<BuildLogEntry> {
    for await (const line of this.archiveLines(buildId)) {
      const entry = JSON.parse(line) as BuildLogEntry;
      if (after && compareStreamIds(entry.id, after) <= 0) continue;
      yield entry;
    }
  }

  /**
   * The archive after `after` as SSE messages, made from its JSON lines without parsing them (see
   * sseFromStored); what a page opening a finished build's long log reads.
   */
  async *archivedMessages(buildId: string, after: string | null): AsyncGenerator<string> {
    for await (const line of this.archiveLines(buildId)) {
      const fast = sseFromArchived(line);
      const id = fast ? fast.id : (JSON.parse(line) as BuildLogEntry).id;
      if (after && compareStreamIds(id, after) <= 0) continue;
      yield fast ? fast.message : sseMessage(JSON.parse(line) as BuildLogEntry);
    }
  }

  /** The archive's lines (gzip JSON lines), split as they are unzipped. */
  private async *archiveLines(buildId: string): AsyncGenerator<string> {
    let body;
    try {
      body = await this.objects.get(buildLogArchiveKey(buildId));
    } catch (e) {
      if (e instanceof NotFoundError) return;
      throw e;
    }
    const gunzip = createGunzip();
    body.on('error', (e) => gunzip.destroy(e));
    body.pipe(gunzip);
    const decoder = new StringDecoder('utf8');
    let rest = '';
    for await (const chunk of gunzip) {
      const text = rest + decoder.write(chunk as Buffer);
      let at = 0;
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', at)) {
        if (nl > at) yield text.slice(at, nl);
        at = nl + 1;
      }
      rest = text.slice(at);
    }
    rest += decoder.end();
    if (rest) yield rest;
  }

  async archiveExists(buildId: string): Promise<boolean> {
    return (await this.objects.stat(buildLogArchiveKey(buildId))) !== null;
  }
}

/** One SSE message: the entry's id, its type as the event name, its fields (without id and type) as JSON data. */
export function sseMessage(entry: BuildLogEntry): string {
  const { id, type, ...data } = entry;
  return `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

const TYPE_PREFIX = '{"type":"';

/**
 * The SSE message of a stream entry straight from its stored JSON, which the worker writes with
 * `type` first: the data is that JSON without its type, the same text sseMessage would give, with no
 * parse and re-serialise per line (most of the api's time when a page opens a long log). Null when
 * the entry has another shape; then decode it and use sseMessage.
 */
export function sseFromStored(id: string, json: string): { type: string; message: string } | null {
  if (!json.startsWith(TYPE_PREFIX)) return null;
  const close = json.indexOf('"', TYPE_PREFIX.length);
  if (close < 0) return null;
  const type = json.slice(TYPE_PREFIX.length, close);
  if (!/^[a-z]+$/.test(type)) return null;
  const next = json[close + 1];
  const data = next === ',' ? `{${json.slice(close + 2)}` : next === '}' ? '{}' : null;
  if (data === null) return null;
  return { type, message: `id: ${id}\nevent: ${type}\ndata: ${data}\n\n` };
}

/** An archive line is the entry's JSON with its id last: the same fast path, once the id is taken off. */
export function sseFromArchived(line: string): { id: string; type: string; message: string } | null {
  const m = /,"id":"(\d{1,20}-\d{1,20})"\}$/.exec(line);
  if (!m) return null;
  const stored = sseFromStored(m[1], `${line.slice(0, m.index)}}`);
  return stored ? { id: m[1], ...stored } : null;
}

/** One line of the text log, or null for events that have no text form (step, end). */
export function textLine(entry: BuildLogEntry): string | null {
  if (entry.type !== 'log') return null;
  const label = entry.step === null ? 'build' : entry.stage ? `${entry.stage}.${entry.step}` : `${entry.step}`;
  const tag = entry.stream === 'stdout' ? '' : `[${entry.stream === 'system' ? 'strata' : 'stderr'}] `;
  return `#${label} ${tag}${entry.line}\n`;
}

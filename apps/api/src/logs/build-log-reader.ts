import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { Redis } from 'ioredis';
import { NotFoundError, type StorageDriver } from '@strata/blobstore';
import { buildLogArchiveKey, type BuildLogEntry, buildLogStreamKey, compareStreamIds, decodeStreamEntry } from '@strata/queue';

const PAGE = 500;

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
          const entry = decodeStreamEntry(id, fields);
          last = id;
          if (!entry) continue;
          ended ||= entry.type === 'end';
          yield entry;
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
    let body;
    try {
      body = await this.objects.get(buildLogArchiveKey(buildId));
    } catch (e) {
      if (e instanceof NotFoundError) return;
      throw e;
    }
    const gunzip = createGunzip();
    body.on('error', (e) => gunzip.destroy(e));
    const lines = createInterface({ input: body.pipe(gunzip), crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line) continue;
      const entry = JSON.parse(line) as BuildLogEntry;
      if (after && compareStreamIds(entry.id, after) <= 0) continue;
      yield entry;
    }
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

/** One line of the text log, or null for events that have no text form (step, end). */
export function textLine(entry: BuildLogEntry): string | null {
  if (entry.type !== 'log') return null;
  const label = entry.step === null ? 'build' : entry.stage ? `${entry.stage}.${entry.step}` : `${entry.step}`;
  const tag = entry.stream === 'stdout' ? '' : `[${entry.stream === 'system' ? 'strata' : 'stderr'}] `;
  return `#${label} ${tag}${entry.line}\n`;
}

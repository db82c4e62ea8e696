import { buildsVisibleTo } from '../builds/visible-builds.js';
import { once } from 'node:events';
import { Inject, Injectable, NotFoundException, type OnModuleDestroy } from '@nestjs/common';
import type { Response } from 'express';
import { Redis } from 'ioredis';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { type BuildLogEntry, redisConnection, storedEvents } from '@strata/queue';
import { STORAGE, type Storage } from '../storage/storage.provider.js';
import { BuildLogReader, sseFromStored, sseMessage, textLine } from './build-log-reader.js';

const HEARTBEAT_MS = 15_000;
/**
 * Entries per XREAD: bounds what one follower holds in memory between writes (an entry holds up to
 * 32 KiB of events, so about 1 MiB), while a reader catching up on a long log needs few round trips.
 */
const FOLLOW_BATCH = 32;
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * Serves build logs: the stored log as text, or SSE that follows the live stream. Each follower
 * blocks on its own Redis connection and reads no more until its response has drained, so a
 * client that never reads holds at most one batch in the api.
 */
@Injectable()
export class LogsService implements OnModuleDestroy {
  private readonly redis: Redis;
  private readonly reader: BuildLogReader;
  private readonly followers = new Set<{ conn: Redis; res: Response }>();

  constructor(
    private readonly prisma: PrismaService,
    @Inject(STRATA_CONFIG) config: StrataConfig,
    @Inject(STORAGE) storage: Storage,
  ) {
    this.redis = new Redis({ ...redisConnection(config.redisUrl), protocol: 2 });
    this.reader = new BuildLogReader(this.redis, storage.objects, config.queuePrefix);
  }

  /** The build, if it exists and belongs to the tenant; 404 otherwise (also for malformed ids). */
  async build(tenantId: string, id: string, repositories: readonly string[] = []): Promise<{ id: string; status: string }> {
    const build = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id)
      ? await this.prisma.build.findFirst({ where: { id, tenantId, ...buildsVisibleTo(repositories) }, select: { id: true, status: true } })
      : null;
    if (!build) throw new NotFoundException(`Build "${id}" does not exist.`);
    return build;
  }

  /** The whole log so far as text, written as it is read. */
  async text(buildId: string, res: Response): Promise<void> {
    res.status(200).setHeader('content-type', 'text/plain; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    for await (const entry of this.reader.stored(buildId, null)) {
      const line = textLine(entry);
      if (line !== null && !res.write(line)) {
        if (!(await drained(res))) return;
      }
    }
    res.end();
  }

  /** Server-Sent Events from after `after` until the build's `end`. */
  async follow(buildId: string, after: string | null, res: Response): Promise<void> {
    res.status(200);
    res.setHeader('content-type', 'text/event-stream; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.setHeader('x-accel-buffering', 'no');
    res.flushHeaders();
    res.write(': following the build log\n\n');
    let last = after;

    // A finished build is served from its archive: complete once written (after `end`), and one
    // gunzipped object is far cheaper to send than thousands of stream entries.
    if (await this.reader.archiveExists(buildId)) {
      await this.writeAll(this.reader.archivedMessages(buildId, last), res);
      res.end();
      return;
    }

    const conn = this.redis.duplicate();
    const follower = { conn, res };
    this.followers.add(follower);
    let closed = false;
    res.on('close', () => {
      closed = true;
      conn.disconnect();
    });
    try {
      const key = this.reader.streamKey(buildId);
      while (!closed) {
        if (res.writableNeedDrain && !(await drained(res))) return;
        const reply = (await conn.xread('COUNT', FOLLOW_BATCH, 'BLOCK', HEARTBEAT_MS, 'STREAMS', key, last ?? '0-0')) as Array<[string, Array<[string, string[]]>]> | null;
        if (closed) return;
        if (!reply) {
          res.write(': heartbeat\n\n');
          if (await this.gone(buildId, last, res)) return;
          continue;
        }
        let out = '';
        let ended = false;
        for (const [id, fields] of reply[0][1]) {
          // A Last-Event-ID may fall inside the first entry; an entry's id is its last event's.
          for (const [eventId, json] of storedEvents(id, fields, last)) {
            const stored = sseFromStored(eventId, json);
            const type = stored ? stored.type : (JSON.parse(json) as BuildLogEntry).type;
            out += stored ? stored.message : sseMessage({ ...(JSON.parse(json) as BuildLogEntry), id: eventId });
            ended ||= type === 'end';
          }
          last = id;
        }
        res.write(out);
        if (ended) break;
      }
      res.end();
    } catch (e) {
      if (!closed) throw e;
    } finally {
      this.followers.delete(follower);
      conn.disconnect();
    }
  }

  /**
   * Whether an idle follow is over: the stream expired (then the archive has the rest) or the
   * build finished without ever writing a log (cancelled while queued).
   */
  private async gone(buildId: string, last: string | null, res: Response): Promise<boolean> {
    if (await this.reader.streamExists(buildId)) return false;
    if (await this.reader.archiveExists(buildId)) {
      await this.writeAll(this.reader.archivedMessages(buildId, last), res);
      res.end();
      return true;
    }
    const build = await this.prisma.build.findUnique({ where: { id: buildId }, select: { status: true } });
    if (build && TERMINAL.has(build.status)) {
      res.end(`event: end\ndata: ${JSON.stringify({ status: build.status })}\n\n`);
      return true;
    }
    return false;
  }

  /** Writes SSE messages in chunks of about 64 KiB, waiting while the client is behind. */
  private async writeAll(messages: AsyncIterable<string>, res: Response): Promise<void> {
    let out = '';
    for await (const message of messages) {
      out += message;
      if (out.length < 65536) continue;
      const more = res.write(out);
      out = '';
      if (!more && !(await drained(res))) return;
    }
    if (out) res.write(out);
  }

  async onModuleDestroy(): Promise<void> {
    for (const { conn, res } of this.followers) {
      conn.disconnect();
      res.end();
    }
    await this.redis.quit();
  }
}

/** Waits until the response can take more; false when the client went away instead. */
async function drained(res: Response): Promise<boolean> {
  if (res.destroyed) return false;
  const ac = new AbortController();
  try {
    const which = await Promise.race([once(res, 'drain', { signal: ac.signal }).then(() => true), once(res, 'close', { signal: ac.signal }).then(() => false)]);
    return which;
  } finally {
    ac.abort();
  }
}

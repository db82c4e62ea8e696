/**
 * The build log as worker (writer) and api (reader) share it: one Redis stream per build whose
 * entries hold one JSON field, and the gzip JSON-lines archive the worker leaves in S3 when the
 * build ends. Archive lines keep the stream ids, so a reader resumes across the switch.
 */

/** The Redis stream of a build's log lines and step events. */
export function buildLogStreamKey(queuePrefix: string, buildId: string): string {
  return `${queuePrefix}:log:${buildId}`;
}

/** Where a finished build's log is archived (gzip, one JSON object per line). */
export function buildLogArchiveKey(buildId: string): string {
  return `logs/${buildId}`;
}

/** The field of a stream entry that holds one event (its JSON). */
export const BUILD_LOG_FIELD = 'e';

/**
 * The field of a stream entry that holds several events: their JSON, one a line (JSON has no raw
 * newline). The events' ids are consecutive: the last one is the entry's id, and each before it is
 * one less in the sequence part (`1700000000000-7` holding three events: `-5`, `-6`, `-7`). The
 * worker picks ids so (docs/architecture.md, "Build logs"), which keeps every event's id a stream id
 * that `Last-Event-ID` and the archive carry as before.
 */
export const BUILD_LOG_BATCH_FIELD = 'b';

/** `step` and `stage` are null for lines about the whole build. */
export interface LogLineEvent {
  type: 'log';
  stage: number | null;
  step: number | null;
  stream: 'stdout' | 'stderr' | 'system';
  line: string;
  time: string;
}

export interface StepEvent {
  type: 'step';
  stage: number;
  index: number;
  instruction: string;
  status: 'running' | 'done';
  cached: boolean;
  durationMs: number | null;
}

export interface EndEvent {
  type: 'end';
  status: 'succeeded' | 'failed' | 'cancelled';
  /**
   * The image's manifest digest when the build succeeded: a client that follows the log (strata
   * build) has its answer here and needs no GET of the build after it. Written after the build's
   * row says succeeded; absent from logs of older workers and of builds that ended without a log.
   */
  imageDigest?: string;
}

export type BuildLogEvent = LogLineEvent | StepEvent | EndEvent;

/** An event with its stream id (`<ms>-<seq>`). */
export type BuildLogEntry = BuildLogEvent & { id: string };

const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;

export function isStreamId(id: string): boolean {
  return STREAM_ID.test(id);
}

/** Orders Redis stream ids: negative when a comes first. */
export function compareStreamIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

/**
 * The events a stream entry holds, each as its id and its stored JSON (not parsed), oldest first;
 * those at or before `after` are left out (a Last-Event-ID may fall inside an entry). Unknown fields
 * are ignored.
 */
export function storedEvents(id: string, fields: string[], after: string | null = null): Array<[id: string, json: string]> {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === BUILD_LOG_FIELD) return after !== null && compareStreamIds(id, after) <= 0 ? [] : [[id, fields[i + 1]]];
    if (fields[i] !== BUILD_LOG_BATCH_FIELD) continue;
    const events = fields[i + 1].split('\n');
    const dash = id.indexOf('-');
    const ms = id.slice(0, dash);
    // The worker numbers a batch's events from 0 within a millisecond: far below 2^53.
    const first = Number(id.slice(dash + 1)) - (events.length - 1);
    let skip = 0;
    if (after !== null && compareStreamIds(`${ms}-${first}`, after) <= 0) {
      const [afterMs, afterSeq] = after.split('-');
      skip = afterMs === ms ? Math.min(events.length, Number(afterSeq) - first + 1) : events.length;
    }
    const out: Array<[string, string]> = [];
    for (let k = skip; k < events.length; k++) out.push([`${ms}-${first + k}`, events[k]]);
    return out;
  }
  return [];
}

/** Decodes the events of one stream entry (see storedEvents). */
export function decodeStreamEntries(id: string, fields: string[], after: string | null = null): BuildLogEntry[] {
  return storedEvents(id, fields, after).map(([eventId, json]) => ({ ...(JSON.parse(json) as BuildLogEvent), id: eventId }));
}

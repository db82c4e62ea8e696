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

/** The one field of each stream entry. */
export const BUILD_LOG_FIELD = 'e';

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

/** Decodes one stream entry's field list; unknown fields are ignored. */
export function decodeStreamEntry(id: string, fields: string[]): BuildLogEntry | null {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === BUILD_LOG_FIELD) return { ...(JSON.parse(fields[i + 1]) as BuildLogEvent), id };
  }
  return null;
}

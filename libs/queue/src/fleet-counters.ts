/**
 * Counters that api and worker processes add to and any api replica serves on /metrics: one Redis
 * hash per queue prefix, a field per series (`name` plus sorted labels). Fleet-wide totals, so a
 * scrape of any replica shows the same numbers; a Redis that lost its data restarts them from zero,
 * which Prometheus reads as a counter reset.
 */
export function fleetCountersKey(queuePrefix: string): string {
  return `${queuePrefix}:metrics:counters`;
}

/** The counters, with their help text. */
export const FLEET_COUNTERS = {
  strata_s3_request_errors_total: 'S3 request attempts that failed (each retry counts), by process, operation and reason',
  strata_reconciler_actions_total: 'Builds the reconciler re-enqueued, handed back or failed, by action',
} as const;

export type FleetCounter = keyof typeof FLEET_COUNTERS;

export function fleetCounterField(name: FleetCounter, labels: Record<string, string>): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}=${encodeURIComponent(labels[k]!)}`);
  return `${name}|${parts.join(',')}`;
}

export function parseFleetCounterField(field: string): { name: string; labels: Record<string, string> } {
  const [name, rest = ''] = field.split('|');
  const labels: Record<string, string> = {};
  for (const part of rest.split(',').filter(Boolean)) {
    const eq = part.indexOf('=');
    labels[part.slice(0, eq)] = decodeURIComponent(part.slice(eq + 1));
  }
  return { name: name!, labels };
}

/** The one Redis command adding to a counter needs (an ioredis client has it). */
export interface CounterWriter {
  hincrby(key: string, field: string, increment: number): Promise<unknown>;
}

/** Adds to a fleet counter without waiting: metrics never slow down or fail the work they count. */
export function addToFleetCounter(redis: CounterWriter, queuePrefix: string, name: FleetCounter, labels: Record<string, string>, by = 1): void {
  redis.hincrby(fleetCountersKey(queuePrefix), fleetCounterField(name, labels), by).catch(() => undefined);
}

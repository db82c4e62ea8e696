import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Counter, Registry } from 'prom-client';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { FLEET_COUNTERS, fleetCountersKey, parseFleetCounterField } from '@strata/queue';
import { BUILDS_QUEUE_TOKEN, type BuildsQueue } from '../queue.provider.js';
import { FLEET_REDIS } from './fleet-redis.provider.js';

/** Buckets, in seconds: builds take seconds to an hour, steps milliseconds to minutes. */
const BUILD_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600];
const STEP_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300];

type Labels = Record<string, string>;
interface HistogramRow {
  labels: Labels;
  /** Cumulative counts, one per bucket. */
  buckets: number[];
  count: number;
  sum: number;
}

/**
 * /metrics in Prometheus text format. This process's own series (registry requests, Node) come
 * from prom-client; what describes the whole fleet is read at scrape time from where it is true:
 * queue depth, build and step durations and cache hits from Postgres (every replica shows the same
 * numbers, and nothing is lost when a worker dies), S3 errors and reconciler actions from the
 * fleet counters in Redis.
 */
@Injectable()
export class MetricsService {
  readonly registry = new Registry();
  readonly registryRequests: Counter<'method' | 'status'>;

  constructor(
    private readonly prisma: PrismaService,
    @Inject(BUILDS_QUEUE_TOKEN) private readonly queue: BuildsQueue,
    @Inject(FLEET_REDIS) private readonly redis: Redis,
    @Inject(STRATA_CONFIG) private readonly config: StrataConfig,
  ) {
    collectDefaultMetrics({ register: this.registry, prefix: 'strata_api_' });
    this.registryRequests = new Counter({
      name: 'strata_registry_requests_total',
      help: 'Requests to the OCI registry at /v2 served by this api process, by method and status',
      labelNames: ['method', 'status'],
      registers: [this.registry],
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  async render(): Promise<string> {
    const [own, depth, jobs, builds, steps, fleet] = await Promise.all([
      this.registry.metrics(),
      this.queueDepth(),
      this.queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed'),
      this.durations(
        `SELECT status::text AS outcome, EXTRACT(EPOCH FROM ("finishedAt" - "startedAt"))::float8 AS d FROM "Build" WHERE "finishedAt" IS NOT NULL AND "startedAt" IS NOT NULL AND status IN ('succeeded', 'failed', 'cancelled')`,
        'outcome',
        BUILD_BUCKETS,
      ),
      this.durations(`SELECT CASE WHEN cached THEN 'hit' ELSE 'miss' END AS cache, ("durationMs" / 1000.0)::float8 AS d FROM "BuildStep" WHERE "durationMs" IS NOT NULL`, 'cache', STEP_BUCKETS),
      this.fleetCounters(),
    ]);
    const out = [own.trimEnd()];
    out.push(gauge('strata_builds', 'Builds waiting for or holding a worker, by tenant and status (queued: the queue depth)', depth));
    out.push(gauge('strata_queue_jobs', 'Jobs in the builds queue in Redis, by state', Object.entries(jobs).map(([state, n]) => ({ labels: { state }, value: n }))));
    out.push(histogram('strata_build_duration_seconds', 'Time from a worker taking a build to its end, by outcome', BUILD_BUCKETS, builds));
    out.push(histogram('strata_step_duration_seconds', 'Time a build step took, by whether the cache served it (hit) or it ran (miss)', STEP_BUCKETS, steps));
    const hits = steps.find((s) => s.labels.cache === 'hit')?.count ?? 0;
    const all = steps.reduce((n, s) => n + s.count, 0);
    out.push(counter('strata_build_steps_total', 'Build steps finished, by cache hit or miss', steps.map((s) => ({ labels: s.labels, value: s.count }))));
    out.push(gauge('strata_cache_hit_ratio', 'Share of all build steps served from the cache', [{ labels: {}, value: all === 0 ? 0 : hits / all }]));
    for (const [name, help] of Object.entries(FLEET_COUNTERS)) out.push(counter(name, help, fleet.get(name) ?? []));
    return `${out.join('\n')}\n`;
  }

  private async queueDepth(): Promise<Array<{ labels: Labels; value: number }>> {
    const rows = await this.prisma.$queryRaw<Array<{ tenant: string; status: string; n: bigint }>>`
      SELECT t.name AS tenant, b.status::text AS status, count(*) AS n
      FROM "Build" b JOIN "Tenant" t ON t.id = b."tenantId"
      WHERE b.status IN ('queued', 'running')
      GROUP BY t.name, b.status`;
    return rows.map((r) => ({ labels: { tenant: r.tenant, status: r.status }, value: Number(r.n) }));
  }

  /** A cumulative histogram over every row of `source` (columns: the label, and d in seconds), counted in SQL. */
  private async durations(source: string, label: string, les: number[]): Promise<HistogramRow[]> {
    const columns = les.map((le, i) => `count(*) FILTER (WHERE d <= ${le}) AS b${i}`).join(', ');
    const rows = await this.prisma.$queryRawUnsafe<Array<Record<string, unknown>>>(
      `SELECT ${label} AS label, ${columns}, count(*) AS n, coalesce(sum(d), 0)::float8 AS s FROM (${source}) x GROUP BY ${label}`,
    );
    return rows.map((r) => ({ labels: { [label]: String(r.label) }, buckets: les.map((_, i) => Number(r[`b${i}`])), count: Number(r.n), sum: Number(r.s) }));
  }

  private async fleetCounters(): Promise<Map<string, Array<{ labels: Labels; value: number }>>> {
    const byName = new Map<string, Array<{ labels: Labels; value: number }>>();
    const fields = await this.redis.hgetall(fleetCountersKey(this.config.queuePrefix));
    for (const [field, value] of Object.entries(fields)) {
      const { name, labels } = parseFleetCounterField(field);
      const list = byName.get(name) ?? [];
      list.push({ labels, value: Number(value) });
      byName.set(name, list);
    }
    return byName;
  }
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function series(name: string, help: string, type: string, rows: Array<{ labels: Labels; value: number }>): string {
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, ...rows.map((r) => `${name}${labelText(r.labels)} ${r.value}`)].join('\n');
}

const gauge = (name: string, help: string, rows: Array<{ labels: Labels; value: number }>) => series(name, help, 'gauge', rows);
const counter = (name: string, help: string, rows: Array<{ labels: Labels; value: number }>) => series(name, help, 'counter', rows);

function histogram(name: string, help: string, les: number[], rows: HistogramRow[]): string {
  const lines = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
  for (const r of rows) {
    les.forEach((le, i) => lines.push(`${name}_bucket${labelText({ ...r.labels, le: String(le) })} ${r.buckets[i]}`));
    lines.push(`${name}_bucket${labelText({ ...r.labels, le: '+Inf' })} ${r.count}`);
    lines.push(`${name}_sum${labelText(r.labels)} ${r.sum}`);
    lines.push(`${name}_count${labelText(r.labels)} ${r.count}`);
  }
  return lines.join('\n');
}

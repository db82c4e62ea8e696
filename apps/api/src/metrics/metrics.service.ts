import { Inject, Injectable } from '@nestjs/common';
import type { Redis } from 'ioredis';
import { collectDefaultMetrics, Counter, Registry } from 'prom-client';
import { STRATA_CONFIG, type StrataConfig } from '@strata/config';
import { PrismaService } from '@strata/db';
import { FLEET_COUNTERS, fleetCountersKey, parseFleetCounterField } from '@strata/queue';
import { BUILDS_QUEUE_TOKEN, type BuildsQueue } from '../queue.provider.js';
import { FLEET_REDIS } from './fleet-redis.provider.js';

/**
 * Buckets, in seconds: builds take seconds to an hour, steps milliseconds to minutes. The triggers of
 * migration 20261212000000_metrics_indexes count observations into these bounds: change both together.
 */
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
 * queue depth (builds queued or running, read on the status index), build and step durations and
 * cache hits (histograms the database keeps up to date by trigger: a few rows, whatever the number of
 * builds ever run) from Postgres (every replica shows the same numbers, nothing is lost when a worker
 * dies, and the counters never go down when old builds are deleted), S3 errors and reconciler actions from the
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
      this.histogram('build', 'outcome', BUILD_BUCKETS),
      this.histogram('step', 'cache', STEP_BUCKETS),
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

  /**
   * A cumulative histogram kept by the triggers of migration 20261212000000_metrics_indexes: one row
   * per label and bucket, so a scrape costs the same whatever the number of builds ever run.
   */
  private async histogram(metric: 'build' | 'step', label: string, les: number[]): Promise<HistogramRow[]> {
    const rows = await this.prisma.durationHistogram.findMany({ where: { metric } });
    const byLabel = new Map<string, HistogramRow>();
    for (const r of rows) {
      const row = byLabel.get(r.label) ?? { labels: { [label]: r.label }, buckets: les.map(() => 0), count: 0, sum: 0 };
      byLabel.set(r.label, row);
      if (r.le === Infinity) {
        row.count = Number(r.count);
        row.sum = r.sum;
      } else {
        const i = les.indexOf(r.le);
        if (i >= 0) row.buckets[i] = Number(r.count);
      }
    }
    return [...byLabel.values()].sort((a, b) => (a.labels[label]! < b.labels[label]! ? -1 : 1));
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

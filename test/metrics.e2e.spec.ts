import { jest } from '@jest/globals';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '@strata/config';
import { startWorker } from '../apps/worker/src/main.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(180_000);

/** `name{labels}` → value, from Prometheus text; fails on a line that is not the text format. */
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ') || line.startsWith('# TYPE ')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?(?:[0-9.e+-]+|\+Inf|NaN))$/.exec(line);
    if (!m) throw new Error(`not Prometheus text format: ${JSON.stringify(line)}`);
    values.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return values;
}

async function scrape(stack: Stack): Promise<Map<string, number>> {
  // Per-tenant series name tenants: only the operator's token reads them.
  expect((await fetch(`${stack.url}/metrics`)).status).toBe(401);
  const res = await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${stack.operatorToken}` } });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return parseMetrics(await res.text());
}

const ctx = (n: string) => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\nCOPY b /b\n', a: 'same\n', b: `${n}\n` }));

describe('/metrics in Prometheus text format', () => {
  it('shows the queue depth per tenant, build and step durations by outcome, cache hits and registry requests', async () => {
    const stack = await startStack({ worker: false });
    try {
      const t = await stack.tenant('metrics');
      const queued = await api(stack, t.token, 'POST', '/v1/builds?repository=m', ctx('one'), 'application/x-tar');
      expect(queued.status).toBe(202);
      const before = await scrape(stack);
      expect(before.get(`strata_builds{tenant="${t.name}",status="queued"}`)).toBe(1);

      const worker = await startWorker({ ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-worker-')) });
      try {
        expect((await waitForBuild(stack, t.token, queued.json.id)).status).toBe('succeeded');
        expect((await build(stack, t.token, 'repository=m', ctx('two'))).status).toBe('succeeded');
      } finally {
        await worker.close();
      }
      await fetch(`${stack.url}/v2/`);
      const after = await scrape(stack);
      expect(after.get(`strata_builds{tenant="${t.name}",status="queued"}`)).toBeUndefined();
      // Durations come from the build table: every suite's builds count, so these only grow by at least ours.
      const delta = (key: string) => (after.get(key) ?? 0) - (before.get(key) ?? 0);
      expect(delta('strata_build_duration_seconds_count{outcome="succeeded"}')).toBeGreaterThanOrEqual(2);
      expect(after.get('strata_build_duration_seconds_bucket{outcome="succeeded",le="+Inf"}')).toBe(after.get('strata_build_duration_seconds_count{outcome="succeeded"}'));
      // The second build took "COPY a" from the cache and ran "COPY b".
      expect(delta('strata_build_steps_total{cache="hit"}')).toBeGreaterThanOrEqual(1);
      expect(delta('strata_build_steps_total{cache="miss"}')).toBeGreaterThanOrEqual(3);
      const ratio = after.get('strata_cache_hit_ratio')!;
      expect(ratio).toBeGreaterThan(0);
      expect(ratio).toBeLessThan(1);
      // This api process answered exactly one /v2 request: the anonymous ping, with a 401 challenge.
      expect(after.get('strata_registry_requests_total{method="GET",status="401"}')).toBe(1);
      expect(after.get('strata_api_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    } finally {
      await stack.close();
    }
  });

  it('counts S3 request errors of api and workers, and the reconciler’s actions, across processes', async () => {
    const proxy = await startFaultProxy(loadConfig().s3.endpoint!);
    const stack = await startStack({ worker: false, env: { S3_ENDPOINT: proxy.url, STRATA_RECONCILE_INTERVAL_MS: '500' } });
    try {
      const t = await stack.tenant('metrics-faults');
      // The api's upload of the context and the worker's download of it each fail once, then succeed on retry.
      proxy.setRules([
        { kind: '503', method: 'PUT', path: /\/contexts\//, times: 1 },
        { kind: '503', method: 'GET', path: /\/contexts\//, times: 1 },
      ]);
      const queued = await api(stack, t.token, 'POST', '/v1/builds?repository=f', ctx('faults'), 'application/x-tar');
      expect(queued.status).toBe(202);
      // Redis loses the job; the reconciler of the worker started next queues the build again.
      const redis = (await import('ioredis')).Redis;
      const conn = new redis(stack.config.redisUrl);
      const keys = await conn.keys(`${stack.config.queuePrefix}:builds:*`);
      if (keys.length > 0) await conn.del(...keys);
      await conn.quit();
      const worker = await startWorker({ ...stack.config, dataDir: mkdtempSync(path.join(tmpdir(), 'strata-worker-')) });
      try {
        expect((await waitForBuild(stack, t.token, queued.json.id, 60_000)).status).toBe('succeeded');
      } finally {
        await worker.close();
        proxy.setRules([]);
      }
      const m = await scrape(stack);
      expect(proxy.injected['503']).toBe(2);
      // Series come in the order the counters were first written, which two processes race for.
      expect([...m].filter(([k]) => k.startsWith('strata_s3_request_errors_total{')).sort(([a], [b]) => a.localeCompare(b))).toEqual([
        ['strata_s3_request_errors_total{operation="GetObjectCommand",process="worker",reason="503"}', 1],
        ['strata_s3_request_errors_total{operation="PutObjectCommand",process="api",reason="503"}', 1],
      ]);
      expect(m.get('strata_reconciler_actions_total{action="requeued"}')).toBe(1);
    } finally {
      await stack.close();
      await proxy.close();
    }
  });
});

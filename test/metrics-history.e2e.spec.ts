import { jest } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { type Stack, startStack } from './support/stack.js';

jest.setTimeout(120_000);

/** `name{labels}` → value, from Prometheus text. */
async function scrape(stack: Stack): Promise<Map<string, number>> {
  const res = await fetch(`${stack.url}/metrics`, { headers: { authorization: `Bearer ${stack.operatorToken}` } });
  expect(res.status).toBe(200);
  const values = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m) values.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return values;
}

/**
 * The duration histograms come from rows the database keeps as builds and steps finish, not from a
 * scan of every build ever run: each observation lands in its buckets once, and deleting old builds
 * (here: their tenant) does not take counts back, as a Prometheus counter must not go down.
 * Durations of 50 min and 200 s are used because no other suite's build or step takes that long, so
 * the bucket deltas are exact even while other suites finish builds.
 */
describe('/metrics duration histograms', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  });
  afterAll(async () => {
    await stack.close();
  });

  it('counts each finished build and step once, in the right buckets, and keeps them when the builds are deleted', async () => {
    const t = await stack.tenant('metrics-history');
    const repo = await stack.prisma.repository.create({ data: { tenantId: t.tenantId, name: 'history' } });
    const before = await scrape(stack);
    const started = new Date(Date.now() - 3000 * 1000);
    const id = randomUUID();
    await stack.prisma.build.create({ data: { id, tenantId: t.tenantId, repositoryId: repo.id, dockerfilePath: 'Dockerfile', tags: ['x'], queue: stack.config.queuePrefix } });
    await stack.prisma.build.update({ where: { id }, data: { status: 'running', startedAt: started } });
    await stack.prisma.buildStep.create({ data: { buildId: id, tenantId: t.tenantId, stage: 0, index: 0, instruction: 'RUN long', cached: true, durationMs: 200_000 } });
    await stack.prisma.build.update({ where: { id }, data: { status: 'cancelled', finishedAt: new Date(started.getTime() + 3000 * 1000) } });
    // A second status write of the same outcome is not a second observation.
    await stack.prisma.build.update({ where: { id }, data: { status: 'cancelled' } });

    const band = (m: Map<string, number>, metric: string, label: string, low: string, high: string) =>
      (m.get(`${metric}_bucket{${label},le="${high}"}`) ?? 0) - (m.get(`${metric}_bucket{${label},le="${low}"}`) ?? 0);
    const after = await scrape(stack);
    expect(band(after, 'strata_build_duration_seconds', 'outcome="cancelled"', '1800', '3600') - band(before, 'strata_build_duration_seconds', 'outcome="cancelled"', '1800', '3600')).toBe(1);
    expect(band(after, 'strata_step_duration_seconds', 'cache="hit"', '60', '300') - band(before, 'strata_step_duration_seconds', 'cache="hit"', '60', '300')).toBe(1);
    expect(after.get('strata_build_duration_seconds_sum{outcome="cancelled"}')! - (before.get('strata_build_duration_seconds_sum{outcome="cancelled"}') ?? 0)).toBeGreaterThanOrEqual(3000);
    expect(after.get('strata_build_duration_seconds_bucket{outcome="cancelled",le="+Inf"}')).toBe(after.get('strata_build_duration_seconds_count{outcome="cancelled"}'));

    await stack.prisma.tenant.delete({ where: { id: t.tenantId } });
    const pruned = await scrape(stack);
    expect(band(pruned, 'strata_build_duration_seconds', 'outcome="cancelled"', '1800', '3600')).toBe(band(after, 'strata_build_duration_seconds', 'outcome="cancelled"', '1800', '3600'));
    expect(band(pruned, 'strata_step_duration_seconds', 'cache="hit"', '60', '300')).toBe(band(after, 'strata_step_duration_seconds', 'cache="hit"', '60', '300'));
    expect(pruned.get('strata_build_steps_total{cache="hit"}')!).toBeGreaterThanOrEqual(after.get('strata_build_steps_total{cache="hit"}')!);
  });
});

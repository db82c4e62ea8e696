import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { importBusybox } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

type Step = { stage: number; instruction: string; startedAt: string; durationMs: number; cached: boolean };

describe('multi-stage solving', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('stages'));
    await importBusybox(stack, token);
  }, 60_000);
  afterAll(async () => {
    await stack.close();
  });

  it('runs independent stages at the same time and skips stages the target does not need', async () => {
    const dockerfile = [
      'FROM busybox:1 AS left',
      'RUN sleep 1.5 && echo left > /left',
      'FROM busybox:1 AS right',
      'RUN sleep 1.5 && echo right > /right',
      'FROM busybox:1 AS unused',
      'RUN echo never > /unused',
      'FROM scratch',
      'COPY --from=left /left /left',
      'COPY --from=right /right /right',
      '',
    ].join('\n');
    const result = await build(stack, token, 'repository=parallel', tarOf(makeDir({ Dockerfile: dockerfile, nonce: String(Date.now()) })));
    expect(result.status).toBe('succeeded');
    const steps: Step[] = result.steps;
    expect(steps.map((s) => s.stage).sort()).toEqual([0, 1, 3, 3]);
    const interval = (stage: number) => {
      const s = steps.find((x) => x.stage === stage)!;
      const start = Date.parse(s.startedAt);
      return [start, start + s.durationMs];
    };
    const [l0, l1] = interval(0);
    const [r0, r1] = interval(1);
    // The two sleeps overlap: each started before the other ended.
    expect(l0).toBeLessThan(r1);
    expect(r0).toBeLessThan(l1);
  });

  it('stops the other stages when one fails, and reports the failing one', async () => {
    const dockerfile = [
      'FROM busybox:1 AS slow',
      'RUN sleep 600',
      'FROM busybox:1 AS broken',
      'RUN sleep 0.5 && exit 7',
      'FROM scratch',
      'COPY --from=slow /etc/passwd /a',
      'COPY --from=broken /etc/passwd /b',
      '',
    ].join('\n');
    // The build only ends once every stage has stopped, so it ends at all only if the sleep was killed.
    const result = await build(stack, token, 'repository=failfast', tarOf(makeDir({ Dockerfile: dockerfile, nonce: String(Date.now()) })));
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(4);
    expect(result.error.message).toMatch(/exited with code 7/);
    expect(result.steps.some((s: Step) => s.instruction === 'RUN sleep 600')).toBe(false);
  });
});

describe('a check and a build of the same Dockerfile', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('agree'));
    await importBusybox(stack, token);
  }, 60_000);
  afterAll(async () => {
    await stack.close();
  });

  it('evaluate ARG and ENV as BuildKit does, and the later stage of a repeated name wins', async () => {
    const dockerfile = [
      'FROM busybox:1 AS base',
      'ARG X=1',
      'ENV A=1',
      'ENV A=2 B=$A',
      'ENV PATH=/opt/bin:$PATH',
      'FROM base AS base',
      // Each RUN fails the build unless it sees what BuildKit's RUN sees.
      'RUN test "$X" = 1 && test "$A" = 2 && test "$B" = 1 && test "${PATH%%:*}" = /opt/bin',
      'EXPOSE 80 53/UDP',
      '',
    ].join('\n');
    const check = await api(stack, token, 'POST', '/v1/dockerfile/check', dockerfile, 'text/plain');
    expect(check.status).toBe(200);
    expect(check.json.neededStages).toEqual([0, 1]);
    expect(check.json.warnings).toContainEqual(expect.objectContaining({ rule: 'DuplicateStageName', line: 6 }));
    expect(check.json.stages[1].instructions[0].env).toEqual(expect.arrayContaining(['X=1', 'A=2', 'B=1']));

    const result = await build(stack, token, 'repository=agree&tag=1', tarOf(makeDir({ Dockerfile: dockerfile })));
    expect(result.status).toBe('succeeded');
    const res = await fetch(`${stack.url}/v1/repositories/agree/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    const archive = path.join(mkdtempSync(path.join(tmpdir(), 'strata-agree-')), 'image.tar');
    writeFileSync(archive, Buffer.from(await res.arrayBuffer()));
    const config = JSON.parse(execFileSync('skopeo', ['inspect', '--config', `oci-archive:${archive}:1`], { encoding: 'utf8' })).config;
    expect(config.Env[0]).toMatch(/^PATH=\/opt\/bin:/);
    expect(config.Env).toEqual(expect.arrayContaining(['A=2', 'B=1']));
    expect(Object.keys(config.ExposedPorts).sort()).toEqual(['53/udp', '80/tcp']);
  });

  it('refuse what the operator does not allow, with the same line and sentence', async () => {
    const dockerfile = 'FROM busybox:1\n\nRUN --network=host true\n';
    const check = await api(stack, token, 'POST', '/v1/dockerfile/check', dockerfile, 'text/plain');
    expect(check.status).toBe(422);
    expect(check.json.errors).toEqual([expect.objectContaining({ line: 3, message: 'RUN --network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host); use the default network or --network=none' })]);
    const result = await build(stack, token, 'repository=refused', tarOf(makeDir({ Dockerfile: dockerfile, 'a.txt': 'a' })));
    expect(result.status).toBe('failed');
    expect(result.error).toMatchObject({ line: 3, message: `Dockerfile:3: ${check.json.errors[0].message}` });
  });
});

describe('the build time limit', () => {
  it('stops a build past its time limit and says so', async () => {
    const stack = await startStack({ env: { STRATA_BUILD_TIMEOUT_MS: '3000' } });
    try {
      const { token } = await stack.tenant('deadline');
      await importBusybox(stack, token);
      // The build only ends if the limit stopped the sleep: it would otherwise run for 10 minutes.
      const result = await build(stack, token, 'repository=slow&tag=1', tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN sleep 600\n' })));
      expect(result.status).toBe('failed');
      expect(result.error.message).toBe('the build took longer than its time limit of 3 s and was stopped');
      expect((await api(stack, token, 'GET', '/v1/repositories/slow/tags')).json.tags).toEqual([]);
    } finally {
      await stack.close();
    }
  }, 60_000);
});

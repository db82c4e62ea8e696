import { jest } from '@jest/globals';
import { loadConfig } from '@strata/config';
import { freePort, startApiProcess } from './support/api-process.js';
import { startFaultProxy } from './support/fault-proxy.js';
import { makeDir, startStack, tarOf } from './support/stack.js';

jest.setTimeout(120_000);

describe('the api process logs JSON only', () => {
  it('prints every line, Nest’s bootstrap and route mapping included, as one JSON object, with the tenant and build where known', async () => {
    const proxy = await startFaultProxy(loadConfig().s3.endpoint!);
    const stack = await startStack({ worker: false });
    const apiProc = startApiProcess(stack.config, await freePort(), { STRATA_LOG_LEVEL: 'debug', S3_ENDPOINT: proxy.url });
    try {
      await apiProc.ready();
      const { tenantId, token } = await stack.tenant('json-logs');
      const auth = { authorization: `Bearer ${token}` };
      // A request S3 fails (past its retries): a warning that names the tenant.
      proxy.setRules([{ kind: '503', method: 'PUT', path: /\/contexts\// }]);
      const refused = await fetch(`${apiProc.url}/v1/builds?repository=logs`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/x-tar' },
        body: tarOf(makeDir({ Dockerfile: 'FROM scratch\n' })),
      });
      proxy.setRules([]);
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('5');
      // Some ordinary traffic: a build that does not exist, the registry, the docs.
      expect((await fetch(`${apiProc.url}/v1/builds/00000000-0000-4000-8000-000000000000`, { headers: auth })).status).toBe(404);
      expect((await fetch(`${apiProc.url}/v2/`)).status).toBe(401);
      await apiProc.stop();

      const lines = apiProc.output().split('\n').filter((l) => l !== '');
      const parsed = lines.map((line) => {
        try {
          return JSON.parse(line) as Record<string, unknown>;
        } catch {
          throw new Error(`a line the api printed is not JSON: ${JSON.stringify(line)}`);
        }
      });
      for (const p of parsed) {
        expect(typeof p.time).toBe('string');
        expect(['debug', 'info', 'warn', 'error']).toContain(p.level);
        expect(typeof p.msg).toBe('string');
      }
      // Nest's own: the modules it loaded, the routes it mapped, its start.
      expect(parsed).toContainEqual(expect.objectContaining({ context: 'InstanceLoader', level: 'info' }));
      expect(parsed).toContainEqual(expect.objectContaining({ context: 'RouterExplorer', msg: expect.stringContaining('/v1/builds, POST') }));
      expect(parsed).toContainEqual(expect.objectContaining({ context: 'NestApplication', msg: expect.stringContaining('started') }));
      expect(parsed).toContainEqual(expect.objectContaining({ msg: expect.stringContaining('Strata api listening on') }));
      expect(parsed).toContainEqual(
        expect.objectContaining({ level: 'warn', msg: 'storage (S3) failed a request', tenantId, method: 'POST', path: '/v1/builds', error: expect.stringContaining('HTTP 503') }),
      );
    } finally {
      await apiProc.stop();
      await stack.close();
      await proxy.close();
    }
  });
});

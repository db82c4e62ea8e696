import { jest } from '@jest/globals';
import { createServer, type Server, type Socket } from 'node:net';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';

jest.setTimeout(120_000);

describe('upstream registries that hang', () => {
  let stack: Stack;
  let hung: Server;
  const sockets: Socket[] = [];
  let port: number;
  beforeAll(async () => {
    // Accepts connections and never answers a byte: a registry stuck behind a dead load balancer.
    hung = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    port = (hung.address() as { port: number }).port;
    stack = await startStack({ env: { STRATA_PULL_TIMEOUT_MS: '1500' } });
  });
  afterAll(async () => {
    await stack.close();
    for (const s of sockets) s.destroy();
    await new Promise((r) => hung.close(r));
  });

  it('fails a build FROM a registry that never answers in bounded time, naming the registry and the line', async () => {
    const { token } = await stack.tenant('hung');
    const ctx = tarOf(makeDir({ Dockerfile: `# base\nFROM 127.0.0.1:${port}/library/app:1\nCOPY a /a\n`, a: 'a' }));
    const res = await api(stack, token, 'POST', '/v1/builds?repository=hung', ctx, 'application/x-tar');
    const done = await waitForBuild(stack, token, res.json.id, 60_000);
    expect(done.status).toBe('failed');
    expect(done.error.line).toBe(2);
    expect(done.error.message).toContain(`127.0.0.1:${port} did not answer GET /v2/`);
    expect(done.error.message).toContain('within 1.5 s');
    // It did connect: the failure is the timeout, not a refused connection.
    expect(sockets.length).toBeGreaterThan(0);
  });
});

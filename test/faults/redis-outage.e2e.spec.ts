import { startPrivateRedis } from '../support/redis-server.js';
import { startStack } from '../support/stack.js';

// Redis holds the queue, the logs' streams and the rate limits; while it is down an api must still
// answer what needs none of them, and answer at once rather than hang.
describe('an api whose Redis is down', () => {
  it('answers authenticated reads and token revocations at once, without counting them, and counts again once Redis is back', async () => {
    const redis = await startPrivateRedis({ appendonly: false });
    const stack = await startStack({ worker: false, env: { REDIS_URL: redis.url } });
    try {
      const { token } = await stack.tenant('outage');
      // A request that hangs fails here, not at jest's timeout.
      const call = (method: string, p: string, bearer = token, body?: string) =>
        fetch(`${stack.url}${p}`, {
          method,
          headers: { authorization: `Bearer ${bearer}`, ...(body ? { 'content-type': 'application/json' } : {}) },
          body,
          signal: AbortSignal.timeout(5_000),
        });
      const before = await call('GET', '/v1/builds');
      expect(before.status).toBe(200);
      expect(before.headers.get('ratelimit')).toMatch(/^"token";r=\d+;t=\d+/);
      const minted = (await (await call('POST', '/v1/tokens', token, JSON.stringify({ name: 'revoked in the outage', scopes: ['builds:read'] }))).json()) as { id: string; token: string };
      expect((await call('GET', '/v1/whoami', minted.token)).status).toBe(200);

      await redis.down();
      const during = await call('GET', '/v1/builds');
      expect(during.status).toBe(200);
      expect(during.headers.get('ratelimit')).toBeNull();
      expect((await call('DELETE', `/v1/tokens/${minted.id}`)).status).toBe(200);
      expect((await call('GET', '/v1/whoami', minted.token)).status).toBe(401);

      await redis.up();
      let counted: string | null = null;
      for (let i = 0; i < 100 && counted === null; i++) {
        counted = (await call('GET', '/v1/builds')).headers.get('ratelimit');
        if (counted === null) await new Promise((r) => setTimeout(r, 100));
      }
      expect(counted).toMatch(/^"token";r=\d+;t=\d+/);
    } finally {
      await redis.up().catch(() => undefined);
      await stack.close();
      await redis.stop();
    }
  });
});

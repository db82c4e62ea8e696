import { jest } from '@jest/globals';
import { startWorker } from '../apps/worker/src/main.js';
import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(120_000);

describe('cancelling builds', () => {
  let stack: Stack;
  let token: string;
  let worker: { close(): Promise<void> } | null = null;

  const submit = async (repo: string, dockerfile: string): Promise<string> => {
    const res = await api(stack, token, 'POST', `/v1/builds?repository=${repo}&tag=1`, tarOf(makeDir({ Dockerfile: dockerfile })), 'application/x-tar');
    expect(res.status).toBe(202);
    return res.json.id as string;
  };

  beforeAll(async () => {
    // No worker at first: submitted builds stay queued.
    stack = await startStack({ worker: false });
    ({ token } = await stack.tenant('cancel'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await worker?.close();
    await stack.close();
  });

  it('cancels a queued build, which a worker started later never runs, and erases its sealed secrets', async () => {
    const value = 'queued-secret-value-1234';
    const submitted = await fetch(`${stack.url}/v1/builds?repository=cancel/queued&tag=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar', 'strata-build-secret': `id=tok,src=${Buffer.from(value).toString('base64')}` },
      body: tarOf(makeDir({ Dockerfile: 'FROM busybox:1\nRUN --mount=type=secret,id=tok touch /ran\n' })),
    });
    expect(submitted.status).toBe(202);
    const { id } = (await submitted.json()) as { id: string };
    // Queued: the row holds the sealed secret, never the plaintext.
    const sealed = (await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed;
    expect(sealed).not.toBeNull();
    expect(Buffer.from(sealed!).includes(Buffer.from(value))).toBe(false);
    expect(Buffer.from(sealed!).includes(Buffer.from(Buffer.from(value).toString('base64')))).toBe(false);
    const other = await stack.tenant('cancel-other');
    expect((await api(stack, other.token, 'POST', `/v1/builds/${id}/cancel`)).status).toBe(404);
    expect((await api(stack, token, 'POST', '/v1/builds/00000000-0000-0000-0000-000000000000/cancel')).status).toBe(404);
    const res = await api(stack, token, 'POST', `/v1/builds/${id}/cancel`);
    expect(res.status).toBe(202);
    expect(res.json.status).toBe('cancelled');
    expect((await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed).toBeNull();
    const again = await api(stack, token, 'POST', `/v1/builds/${id}/cancel`);
    expect(again.status).toBe(409);
    expect(again.json.message).toContain('already finished (cancelled)');

    worker = await startWorker(stack.config);
    await new Promise((r) => setTimeout(r, 2000));
    const after = (await api(stack, token, 'GET', `/v1/builds/${id}`)).json;
    expect(after.status).toBe('cancelled');
    expect(after.startedAt).toBeNull();
    expect(after.steps).toEqual([]);
  });

  it('cancels a running build: its container is killed, it ends cancelled and moves no tag', async () => {
    worker ??= await startWorker(stack.config);
    const id = await submit('cancel/running', 'FROM busybox:1\nRUN echo started && sleep 30 && touch /done\n');
    const until = Date.now() + 60_000;
    while (!(await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text.match(/^#0 started$/m)) {
      if (Date.now() > until) throw new Error('the RUN step never started');
      await new Promise((r) => setTimeout(r, 100));
    }
    const asked = Date.now();
    const res = await api(stack, token, 'POST', `/v1/builds/${id}/cancel`);
    expect(res.status).toBe(202);
    const result = await waitForBuild(stack, token, id, 10_000);
    const took = Date.now() - asked;
    process.stdout.write(`running build cancelled in ${took} ms\n`);
    expect(result.status).toBe('cancelled');
    expect(took).toBeLessThan(5000);
    expect(result.imageDigest).toBeNull();
    expect((await api(stack, token, 'GET', '/v1/repositories/cancel/running/tags/1/oci-archive')).status).toBe(404);
    expect((await api(stack, token, 'POST', `/v1/builds/${id}/cancel`)).status).toBe(409);
  });
});

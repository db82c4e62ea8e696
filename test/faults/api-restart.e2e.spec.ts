import { jest } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { type Storage, storageFromConfig } from '@strata/blobstore';
import { loadConfig } from '@strata/config';
import { type ApiProcess, freePort, startApiProcess } from '../support/api-process.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { makeDir, type Stack, startStack, tarOf, waitForBuild } from '../support/stack.js';
import { FAST_RECONCILE } from './reconcile-helpers.js';

jest.setTimeout(240_000);

const MiB = 1024 * 1024;
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * An api process killed (SIGKILL) in the middle of `POST /v1/builds` leaves no half-made build: the
 * client sees its request fail, no Build row appears, what reached S3 is removed by the reconciler
 * of another api process, and the same request sent again to a restarted api builds.
 */
describe('an api killed in the middle of a context upload', () => {
  let proxy: FaultProxy;
  let stack: Stack;
  let storage: Storage;
  const apis: ApiProcess[] = [];
  beforeAll(async () => {
    const direct = loadConfig();
    proxy = await startFaultProxy(direct.s3.endpoint!);
    // The stack's api (in this process) is the survivor whose reconciler sweeps; its worker runs the retried builds.
    stack = await startStack({ env: { ...FAST_RECONCILE, S3_ENDPOINT: proxy.url } });
    storage = await storageFromConfig(direct.s3);
  });
  afterAll(async () => {
    await Promise.all(apis.map((a) => a.stop()));
    await stack?.close();
    await proxy?.close();
  });
  const startApi = async () => {
    const a = startApiProcess(stack.config, await freePort());
    apis.push(a);
    await a.ready();
    return a;
  };
  const submit = (url: string, token: string, body: Buffer | ReadableStream<Uint8Array>) =>
    fetch(`${url}/v1/builds?repository=upload&tag=1`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/x-tar' },
      body,
      ...(body instanceof Buffer ? {} : { duplex: 'half' }),
    } as RequestInit);
  const bigContext = () => tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\n', 'big.bin': randomBytes(12 * MiB).toString('latin1') }));

  /** After the crash: no Build row, the upload's row swept, nothing under its key in S3; then a retry on a restarted api builds. */
  const expectNothingLeftThenRetry = async (tenantId: string, token: string, context: Buffer) => {
    const rows = await stack.prisma.contextUpload.findMany({ where: { tenantId } });
    expect(rows).toHaveLength(1);
    const [{ id, key }] = rows;
    expect(await stack.prisma.build.count({ where: { tenantId } })).toBe(0);
    // The reconciler claims the row (deletes it) first, then deletes the object: wait for both.
    await until('the reconciler removes the abandoned upload and its object', async () => (await stack.prisma.contextUpload.count({ where: { id } })) === 0 && (await storage.objects.stat(key)) === null, 30_000);
    expect(await stack.prisma.contextUpload.count({ where: { id } })).toBe(0);
    expect(await storage.objects.stat(key)).toBeNull();
    expect(await stack.prisma.build.count({ where: { tenantId } })).toBe(0);

    const restarted = await startApi();
    const retried = await submit(restarted.url, token, context);
    expect(retried.status).toBe(202);
    const build = (await retried.json()) as { id: string };
    expect((await waitForBuild(stack, token, build.id, 90_000)).status).toBe('succeeded');
    expect(await stack.prisma.build.count({ where: { tenantId } })).toBe(1);
    expect(await stack.prisma.contextUpload.count({ where: { tenantId } })).toBe(0);
  };

  it('while the context streams in: the client gets an error, nothing is left, and the retry builds', async () => {
    const { tenantId, token } = await stack.tenant('api-kill');
    const context = bigContext();
    const first = await startApi();
    // 7 MiB go out (more than one 5 MiB multipart part), then the client waits: the api is killed mid-stream.
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (sent >= 7 * MiB) return new Promise<void>(() => undefined);
        const chunk = context.subarray(sent, sent + 256 * 1024);
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const request = submit(first.url, token, body).then(
      (res) => ({ status: res.status }),
      (err: Error) => ({ error: err.message }),
    );
    await until('the api streams the context', async () => sent >= 7 * MiB && (await stack.prisma.contextUpload.count({ where: { tenantId } })) === 1);
    await new Promise((r) => setTimeout(r, 500));
    await first.kill();
    const answer = await request;
    expect(answer).not.toHaveProperty('status', 202);
    expect('error' in answer || (answer as { status: number }).status >= 500).toBe(true);
    await expectNothingLeftThenRetry(tenantId, token, context);
  });

  it('after S3 stored the context but before the build was recorded: the stored context is removed, and the retry builds', async () => {
    const { tenantId, token } = await stack.tenant('api-kill-stored');
    const context = tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'stored before the crash\n' }));
    const first = await startApi();
    // S3 stores the context, but its answer is held back: the api dies not knowing.
    proxy.setRules([{ kind: 'hold', method: 'PUT', path: /\/contexts\//, delayMs: 60_000 }]);
    try {
      const request = submit(first.url, token, context).then(
        (res) => ({ status: res.status }),
        (err: Error) => ({ error: err.message }),
      );
      await until('S3 holds the context', async () => {
        const row = await stack.prisma.contextUpload.findFirst({ where: { tenantId } });
        return row !== null && (await storage.objects.stat(row.key)) !== null;
      });
      await first.kill();
      expect(await request).toHaveProperty('error');
    } finally {
      proxy.setRules([]);
    }
    await expectNothingLeftThenRetry(tenantId, token, context);
  });
});

import { startWorker } from '../apps/worker/src/main.js';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

// A small tar context's Dockerfile is read by the api at upload and the worker starts its steps on
// it while the context is fetched (docs/adr/0041). Once the context is in, the worker checks that
// the Dockerfile it ran is the context's own.
describe('a build started on the Dockerfile read at upload', () => {
  let stack: Stack;
  let worker: Awaited<ReturnType<typeof startWorker>> | null = null;
  let token: string;
  let tenantId: string;
  beforeAll(async () => {
    // No worker yet: each test changes the queued build's row before one takes it.
    stack = await startStack({ worker: false });
    ({ token, tenantId } = await stack.tenant('early'));
  });
  afterAll(async () => {
    await worker?.close();
    await stack.close();
  });

  it('fails, naming the Dockerfile, when the one it started on is not the context\'s, and tags nothing', async () => {
    const context = makeDir({ Dockerfile: 'FROM scratch\nCOPY a.txt /a.txt\n', 'a.txt': 'a\n', 'b.txt': 'b\n' });
    const submitted = await api(stack, token, 'POST', '/v1/builds?repository=early/mismatch&tag=1', tarOf(context), 'application/x-tar');
    expect(submitted.status).toBe(202);
    const row = await stack.prisma.build.findUniqueOrThrow({ where: { id: submitted.json.id }, select: { dockerfileText: true } });
    expect(row.dockerfileText).toBe('FROM scratch\nCOPY a.txt /a.txt\n');
    // What an api of another version, or a row changed behind Strata's back, would hand the worker.
    await stack.prisma.build.update({ where: { id: submitted.json.id }, data: { dockerfileText: 'FROM scratch\nCOPY b.txt /b.txt\n' } });
    worker = await startWorker(stack.config);
    const result = await waitForBuild(stack, token, submitted.json.id);
    expect(result.status).toBe('failed');
    expect(result.error).toEqual({ line: null, message: 'Dockerfile in the build context is not the Dockerfile read from it at upload' });
    expect(await stack.prisma.tag.count({ where: { tenantId, repository: { name: 'early/mismatch' } } })).toBe(0);
    expect((await stack.prisma.build.findUniqueOrThrow({ where: { id: submitted.json.id }, select: { imageDigest: true } })).imageDigest).toBeNull();
  });

  it('reads it from a plain tar too large to hold whole as the tar streams to storage; a tar.gz that large is left to the worker', async () => {
    const dockerfile = 'FROM scratch\nCOPY big.bin /big.bin\nCOPY small.txt /small.txt\n';
    const context = makeDir({ Dockerfile: dockerfile, 'small.txt': 'small\n' });
    // Random bytes: the gzip of it stays above the 4 MiB the api holds whole, too.
    writeFileSync(path.join(context, 'big.bin'), randomBytes(6 * 1024 * 1024));
    worker ??= await startWorker(stack.config);
    for (const [gzip, captured] of [[false, dockerfile], [true, null]] as const) {
      const submitted = await api(stack, token, 'POST', `/v1/builds?repository=early/large&tag=${gzip ? 'gz' : 'tar'}`, tarOf(context, gzip), gzip ? 'application/gzip' : 'application/x-tar');
      expect(submitted.status).toBe(202);
      const result = await waitForBuild(stack, token, submitted.json.id);
      expect([gzip, result.status]).toEqual([gzip, 'succeeded']);
      const row = await stack.prisma.build.findUniqueOrThrow({ where: { id: submitted.json.id }, select: { dockerfileText: true } });
      expect([gzip, row.dockerfileText]).toEqual([gzip, captured]);
    }
  });
});

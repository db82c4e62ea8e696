import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

type Step = { instruction: string; cached: boolean };

/**
 * Issue 17's no-op rebuild (docs/adr/0033): an unchanged tar context is not stored again, the
 * previous build's cache entries are read in one query, and an image that is already stored is not
 * written again; the rebuild still gives the same image, moves its tags, records their history and
 * streams its log. One tenant's stored context is never another's.
 */
describe('a rebuild with nothing changed', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack.close();
  });

  const project = (salt: string) =>
    makeDir({
      Dockerfile: 'FROM scratch\nWORKDIR /app\nCOPY deps/ /app/deps/\nCOPY src/ /app/src/\nENV MODE=prod\nCMD ["/app/src/main"]\n',
      'deps/a.txt': `dep a ${salt}\n`,
      'src/main': `main ${salt}\n`,
      'src/util.txt': 'util\n',
    });
  const contextKeyOf = async (id: string) => (await stack.prisma.build.findUniqueOrThrow({ where: { id }, select: { contextKey: true } })).contextKey;
  const tagOf = async (tenantId: string, repository: string, name: string) =>
    stack.prisma.tag.findFirst({ where: { tenantId, name, repository: { name: repository } }, include: { history: { orderBy: { createdAt: 'asc' } } } });

  it('reuses the stored context and gives the same image and tag, with history and a log', async () => {
    const t = await stack.tenant('noop');
    const ctx = tarOf(project(`noop ${Date.now()}`));
    const first = await build(stack, t.token, 'repository=app&tag=latest&tag=v1', ctx);
    expect(first.status).toBe('succeeded');
    const again = await build(stack, t.token, 'repository=app&tag=latest&tag=v1', ctx);
    expect(again.status).toBe('succeeded');
    expect(again.steps.map((s: Step) => s.cached)).toEqual(first.steps.map(() => true));
    expect(again.imageDigest).toBe(first.imageDigest);

    // The same bytes from the same tenant: the first build's stored context, nothing stored anew.
    expect(await contextKeyOf(again.id)).toBe(await contextKeyOf(first.id));
    expect(await stack.prisma.contextUpload.count({ where: { tenantId: t.tenantId } })).toBe(0);

    // Both tags point at the image, and each has both builds in its history.
    for (const name of ['latest', 'v1']) {
      const tag = await tagOf(t.tenantId, 'app', name);
      expect(tag?.manifestDigest).toBe(first.imageDigest);
      expect(tag?.history.map((h) => h.buildId)).toEqual([first.id, again.id]);
    }
    // The image is whole: its manifest and config are stored and served.
    const manifest = await stack.prisma.manifest.findFirstOrThrow({ where: { tenantId: t.tenantId, digest: again.imageDigest } });
    expect(await stack.prisma.blob.count({ where: { digest: { in: [manifest.digest, manifest.configDigest!] } } })).toBe(2);

    // The rebuild's own log says what it reused (its end is written just after the build reads as succeeded).
    let log = await api(stack, t.token, 'GET', `/v1/builds/${again.id}/logs`);
    for (let i = 0; i < 100 && !log.text.includes('build succeeded'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      log = await api(stack, t.token, 'GET', `/v1/builds/${again.id}/logs`);
    }
    expect(log.status).toBe(200);
    expect(log.text).toContain('cache hit');
    expect(log.text).toContain(`image ${again.imageDigest}`);

    // A changed context is stored as its own.
    const changed = await build(stack, t.token, 'repository=app&tag=latest', tarOf(project(`changed ${Date.now()}`)));
    expect(changed.status).toBe('succeeded');
    expect(await contextKeyOf(changed.id)).toBe(`contexts/${changed.id}`);
    expect(changed.imageDigest).not.toBe(first.imageDigest);
    expect((await tagOf(t.tenantId, 'app', 'latest'))?.manifestDigest).toBe(changed.imageDigest);
  });

  it('marks the cache entries it took as used', async () => {
    const t = await stack.tenant('noop-used');
    const ctx = tarOf(project(`used ${Date.now()}`));
    const first = await build(stack, t.token, 'repository=app', ctx);
    expect(first.status).toBe('succeeded');
    const before = new Date();
    await new Promise((r) => setTimeout(r, 20));
    const again = await build(stack, t.token, 'repository=app', ctx);
    expect(again.steps.every((s: Step) => s.cached)).toBe(true);
    const entries = await stack.prisma.cacheEntry.findMany({ where: { tenantId: t.tenantId } });
    expect(entries.length).toBeGreaterThan(0);
    for (const e of entries) expect(e.lastUsedAt.getTime()).toBeGreaterThan(before.getTime());
  });

  it('never reuses another tenant’s stored context', async () => {
    const a = await stack.tenant('noop-a');
    const b = await stack.tenant('noop-b');
    const ctx = tarOf(project(`shared ${Date.now()}`));
    const fromA = await build(stack, a.token, 'repository=app', ctx);
    expect(fromA.status).toBe('succeeded');
    const fromB = await build(stack, b.token, 'repository=app', ctx);
    expect(fromB.status).toBe('succeeded');
    // B's identical bytes are stored under B's own build, and its steps come from no one's cache.
    expect(await contextKeyOf(fromB.id)).toBe(`contexts/${fromB.id}`);
    expect(fromB.steps.every((s: Step) => !s.cached)).toBe(true);
    // And B's own rebuild reuses B's context, not A's.
    const againB = await build(stack, b.token, 'repository=app', ctx);
    expect(await contextKeyOf(againB.id)).toBe(`contexts/${fromB.id}`);
    expect(againB.steps.every((s: Step) => s.cached)).toBe(true);
  });
});

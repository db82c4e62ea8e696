import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(120_000);

describe('build secrets: RUN --mount=type=secret', () => {
  let stack: Stack;
  let token: string;
  const secret = `//registry.npmjs.org/:_authToken=npm_${randomBytes(12).toString('hex')}`;

  const submit = (repo: string, dockerfile: string, secrets: string[]) =>
    fetch(`${stack.url}/v1/builds?repository=${repo}&tag=1`, {
      method: 'POST',
      headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/x-tar'], ...secrets.map((s): [string, string] => ['strata-build-secret', s])],
      body: tarOf(makeDir({ Dockerfile: dockerfile })),
    });
  const header = (id: string, value: string) => `id=${id},src=${Buffer.from(value).toString('base64')}`;

  /** Every blob of the image's OCI archive, layers decompressed, keyed by digest; plus the layer digests. */
  const archiveBlobs = async (repo: string): Promise<{ blobs: Map<string, Buffer>; layers: string[]; config: string }> => {
    const res = await fetch(`${stack.url}/v1/repositories/${repo}/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const work = mkdtempSync(path.join(tmpdir(), 'strata-secrets-'));
    writeFileSync(path.join(work, 'image.tar'), Buffer.from(await res.arrayBuffer()));
    execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', work]);
    const blobs = new Map<string, Buffer>();
    for (const name of execFileSync('ls', [path.join(work, 'blobs/sha256')], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
      const raw = readFileSync(path.join(work, 'blobs/sha256', name));
      blobs.set(`sha256:${name}`, raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw);
    }
    const index = JSON.parse(readFileSync(path.join(work, 'index.json'), 'utf8'));
    const manifest = JSON.parse(blobs.get(index.manifests[0].digest)!.toString('utf8'));
    return { blobs, layers: manifest.layers.map((l: { digest: string }) => l.digest), config: manifest.config.digest };
  };

  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('secrets'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  const dockerfile = [
    'FROM busybox:1',
    'ENV NPM_TOKEN=placeholder',
    "RUN --mount=type=secret,id=npmrc sha256sum /run/secrets/npmrc | cut -d' ' -f1 > /npmrc.sha256 && stat -c 'mode %a uid %u' /run/secrets/npmrc && cat /run/secrets/npmrc",
    'RUN --mount=type=secret,id=npmrc,env=NPM_TOKEN test ! -e /run/secrets/npmrc && printf %s "$NPM_TOKEN" | sha256sum | cut -d" " -f1 > /env.sha256 && echo "token: $NPM_TOKEN"',
    'RUN --mount=type=secret,id=not-sent test ! -e /run/secrets/not-sent && touch /optional-skipped',
    'CMD ["cat", "/npmrc.sha256"]',
    '',
  ].join('\n');

  it('mounts the secret for the step and keeps it out of layers, config, API, log and database', async () => {
    const res = await submit('sec/app', dockerfile, [header('npmrc', secret)]);
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    // While it waits or runs, the row holds only ciphertext.
    const sealed = (await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed;
    if (sealed) expect(Buffer.from(sealed).includes(Buffer.from(secret))).toBe(false);
    const result = await waitForBuild(stack, token, id);
    expect(result.error).toBeNull();
    expect(result.status).toBe('succeeded');

    const expectedHash = createHash('sha256').update(secret).digest('hex');
    const { blobs, layers, config } = await archiveBlobs('sec/app');
    for (const blob of blobs.values()) expect(blob.includes(Buffer.from(secret))).toBe(false);
    const layerText = layers.map((d) => blobs.get(d)!.toString('latin1'));
    expect(layerText.filter((t) => t.includes(`${expectedHash}\n`))).toHaveLength(2); // /npmrc.sha256 and /env.sha256
    expect(layerText.some((t) => t.includes('optional-skipped'))).toBe(true);
    // runc's mount points for the secret (/run, /run/secrets/npmrc) are not in any layer.
    for (const t of layerText) expect(t).not.toMatch(/(^|\0|\.\/)run\/(secrets)?/);
    expect(blobs.get(config)!.toString('utf8')).not.toContain(secret);

    const view = await api(stack, token, 'GET', `/v1/builds/${id}`);
    expect(view.text).not.toContain(secret);
    expect(view.text).not.toContain('secretsSealed');
    const log = (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;
    expect(log).not.toContain(secret);
    expect(log).toContain('mode 400 uid 0');
    expect(log).toMatch(/^#1 \*\*\*$/m);
    expect(log).toContain('token: ***');
    expect((await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed).toBeNull();
  });

  it('keys the cache on the secret id, never its value', async () => {
    const res = await submit('sec/app', dockerfile, [header('npmrc', `${secret}-rotated`)]);
    const result = await waitForBuild(stack, token, ((await res.json()) as { id: string }).id);
    expect(result.status).toBe('succeeded');
    expect(result.steps.slice(0, 3).map((s: { cached: boolean }) => s.cached)).toEqual([true, true, true]);
  });

  it('documents the secret header and the cancel endpoint in the OpenAPI document', async () => {
    const doc = (await (await fetch(`${stack.url}/docs-json`)).json()) as { paths: Record<string, Record<string, { parameters?: Array<{ name: string; in: string }> }>> };
    expect(doc.paths['/v1/builds'].post.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'Strata-Build-Secret', in: 'header' })]));
    expect(doc.paths['/v1/builds/{id}/cancel'].post).toBeDefined();
  });

  it('fails on a missing required secret, naming the line', async () => {
    const res = await submit('sec/missing', 'FROM busybox:1\nRUN true\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token\n', []);
    const result = await waitForBuild(stack, token, ((await res.json()) as { id: string }).id);
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(3);
    expect(result.error.message).toContain('the secret "token" is required but was not sent with the build');
  });

  it('refuses malformed secret headers with a 400 that does not echo the value', async () => {
    const cases: Array<[string, string]> = [
      ['id=bad/id,src=YWJj', 'invalid id "bad/id"'],
      ['id=ok', 'needs both fields'],
      ['id=ok,src=%%%notbase64', 'not valid base64'],
      ['id=ok,src=', 'is empty'],
      ['id=ok,src=YWJj,mode=400', 'unknown field "mode"'],
    ];
    for (const [value, message] of cases) {
      const res = await submit('sec/bad', 'FROM busybox:1\n', [value]);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toContain(message);
    }
    // fetch joins repeated headers with ", ": both forms are understood.
    const two = await submit('sec/two', 'FROM busybox:1\nRUN --mount=type=secret,id=a,required --mount=type=secret,id=b,required cat /run/secrets/a /run/secrets/b\n', [
      header('a', 'first-secret-value'),
      header('b', 'second-secret-value'),
    ]);
    expect(two.status).toBe(202);
    const twoResult = await waitForBuild(stack, token, ((await two.json()) as { id: string }).id);
    expect(twoResult.status).toBe('succeeded');
    const twoLog = (await api(stack, token, 'GET', `/v1/builds/${twoResult.id}/logs`)).text;
    expect(twoLog).toContain('#0 ******');
    const dup = await submit('sec/bad', 'FROM busybox:1\n', [header('a', 'x'), header('a', 'y')]);
    expect(dup.status).toBe(400);
    expect(await dup.text()).toContain('given more than once');
  });
});

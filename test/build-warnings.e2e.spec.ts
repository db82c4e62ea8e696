import { jest } from '@jest/globals';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { importBusybox } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(120_000);
const run = promisify(execFile);

/** An OCI image layout holding one image whose config says linux/arm64, as a tenant could push it. */
function arm64Layout(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-arm64-'));
  const blob = (data: Buffer) => {
    const hex = createHash('sha256').update(data).digest('hex');
    mkdirSync(path.join(dir, 'blobs/sha256'), { recursive: true });
    writeFileSync(path.join(dir, 'blobs/sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const tar = tarOf(makeDir({ 'etc/arch': 'arm64\n' }));
  const layer = blob(gzipSync(tar));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'arm64',
        variant: 'v8',
        os: 'linux',
        config: { Env: ['PATH=/usr/bin:/bin', 'APP_HOME=/srv'] },
        rootfs: { type: 'layers', diff_ids: [`sha256:${createHash('sha256').update(tar).digest('hex')}`] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
      }),
    ),
  );
  writeFileSync(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': '1' } }],
    }),
  );
  return dir;
}

describe("a build's lint warnings", () => {
  let stack: Stack;
  let token: string;
  let tenant: string;
  beforeAll(async () => {
    stack = await startStack();
    ({ token, name: tenant } = await stack.tenant('warn'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  const logOf = async (id: string) => (await api(stack, token, 'GET', `/v1/builds/${id}/logs`)).text;

  it('names a COPY source .dockerignore excludes (CopyIgnoredFile), in the build and its log, when the build then fails on it', async () => {
    const ctx = makeDir({ Dockerfile: 'FROM scratch\nCOPY app.txt /\nCOPY ./secrets/token.txt /token\n', 'app.txt': 'app', 'secrets/token.txt': 't', '.dockerignore': 'secrets\n' });
    const result = await build(stack, token, 'repository=warn/ignored&tag=1', tarOf(ctx));
    expect(result.status).toBe('failed');
    expect(result.error.line).toBe(3);
    expect(result.warnings).toEqual([
      { line: 3, column: 1, rule: 'CopyIgnoredFile', message: 'Attempting to Copy file "secrets/token.txt" that is excluded by .dockerignore' },
    ]);
    expect(await logOf(result.id)).toContain('warning: CopyIgnoredFile: Attempting to Copy file "secrets/token.txt" that is excluded by .dockerignore (line 3)');
  });

  it('fails the build on it with # check=error=true, naming the line', async () => {
    const ctx = makeDir({ Dockerfile: '# check=error=true\nFROM scratch\nCOPY tmp/ /x/\n', 'tmp/a': 'a', '.dockerignore': 'tmp\n' });
    const result = await build(stack, token, 'repository=warn/strict&tag=1', tarOf(ctx));
    expect(result.status).toBe('failed');
    expect(result.error).toEqual({ line: 3, message: 'Dockerfile:3: Attempting to Copy file "tmp" that is excluded by .dockerignore' });
  });

  it('keeps the Dockerfile’s own findings and, once FROM is resolved, UndefinedVar against the image’s env', async () => {
    const ctx = makeDir({ Dockerfile: 'FROM busybox:1\nENV TOOLS=/opt/tools\nWORKDIR $TOOLS/$VERSOIN\nCMD echo hi\n' });
    const result = await build(stack, token, 'repository=warn/vars&tag=1', tarOf(ctx));
    expect(result.status).toBe('succeeded');
    expect(result.warnings).toEqual([
      { line: 3, column: 1, rule: 'UndefinedVar', message: "Usage of undefined variable '$VERSOIN'" },
      { line: 4, column: 1, rule: 'JSONArgsRecommended', message: 'JSON arguments recommended for CMD to prevent unintended behavior related to OS signals' },
    ]);
  });

  it('reports a base image built for another platform (InvalidBaseImagePlatform) at its FROM', async () => {
    const host = new URL(stack.url).host;
    await run('skopeo', ['copy', '--dest-tls-verify=false', '--dest-creds', `x:${token}`, `oci:${arm64Layout()}:1`, `docker://${host}/${tenant}/armbase:1`], { env: { ...process.env, HOME: tmpdir() } });
    const ctx = makeDir({ Dockerfile: 'FROM busybox:1 AS tools\nFROM armbase:1\nCOPY --from=tools /bin/busybox $APP_HOME/\nCOPY $APP_HOEM/x /y\n', x: 'x' });
    const result = await build(stack, token, 'repository=warn/arm&tag=1', tarOf(ctx));
    expect(result.warnings).toEqual([
      { line: 2, column: 1, rule: 'InvalidBaseImagePlatform', message: 'Base image armbase:1 was pulled with platform "linux/arm64/v8", expected "linux/amd64" for current build' },
      { line: 4, column: 1, rule: 'UndefinedVar', message: "Usage of undefined variable '$APP_HOEM' (did you mean $APP_HOME?)" },
    ]);
    expect(await logOf(result.id)).toContain('warning: InvalidBaseImagePlatform: Base image armbase:1 was pulled with platform "linux/arm64/v8"');
    // A Dockerfile without findings has none.
    const clean = await build(stack, token, 'repository=warn/clean&tag=1', tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a' })));
    expect(clean.warnings).toEqual([]);
  });
});

import { api, type Stack, startStack } from './support/stack.js';

describe('POST /v1/dockerfile/check', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
    ({ token } = await stack.tenant('check'));
  });
  afterAll(async () => {
    await stack.close();
  });

  it('describes stages, the stages a target needs, and lint warnings with positions', async () => {
    const text = [
      'ARG BASE=alpine',
      'FROM ${BASE} as deps',
      'RUN echo deps',
      'FROM scratch AS tools',
      'COPY x /x',
      'FROM deps AS final',
      'ENV MODE prod',
      'COPY --from=deps /a /a',
      '',
    ].join('\n');
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check?target=final&buildArg=BASE=busybox', text, 'text/plain');
    expect(res.status).toBe(200);
    expect(res.json.globalArgs).toEqual(['BASE']);
    expect(res.json.stages).toEqual([
      // Needed stages list the variables each step sees (a base image's own ENV is not known to a check).
      { name: 'deps', from: '${BASE}', instructions: [{ keyword: 'RUN', line: 3, env: [] }], dependsOn: [] },
      { name: 'tools', from: 'scratch', instructions: [{ keyword: 'COPY', line: 5 }], dependsOn: [] },
      { name: 'final', from: 'deps', instructions: [{ keyword: 'ENV', line: 7, env: [] }, { keyword: 'COPY', line: 8, env: ['MODE=prod'] }], dependsOn: [0] },
    ]);
    expect(res.json.neededStages).toEqual([0, 2]);
    expect(res.json.errors).toEqual([]);
    const rules = res.json.warnings.map((w: { rule: string; line: number }) => [w.rule, w.line]);
    expect(rules).toEqual(expect.arrayContaining([['FromAsCasing', 2], ['LegacyKeyValueFormat', 7]]));
  });

  it('answers 422 with positioned errors when the Dockerfile does not parse', async () => {
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check', 'FROM scratch\nCOPY a /a\nRUNN x\n', 'text/plain');
    expect(res.status).toBe(422);
    expect(res.json.errors).toEqual([expect.objectContaining({ line: 3, column: 1, message: expect.stringContaining('unknown instruction "RUNN"') })]);
  });

  it('reports UndefinedVar where the stage env is known, with its position', async () => {
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check', 'FROM scratch\nARG VERSION\nCOPY app-$VERSOIN.tar /\n', 'text/plain');
    expect(res.status).toBe(200);
    expect(res.json.warnings).toContainEqual({ line: 3, column: 1, severity: 'warning', rule: 'UndefinedVar', message: "Usage of undefined variable '$VERSOIN' (did you mean $VERSION?)" });
  });

  it('reports COPY and ADD sources the .dockerignore sent in Strata-Dockerignore excludes', async () => {
    const check = (dockerfile: string, dockerignore: string, query = '') =>
      fetch(`${stack.url}/v1/dockerfile/check${query}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain', 'strata-dockerignore': Buffer.from(dockerignore).toString('base64') },
        body: dockerfile,
      });
    const dockerfile = 'FROM scratch\nARG DIR=dist\nCOPY ./tmp/helloworld.txt /helloworld.txt\nCOPY forever/helloworld.txt /\nADD $DIR /app\n';
    const res = await check(dockerfile, '# build output\n*/tmp/*\ntmp\ndist/\n');
    expect(res.status).toBe(200);
    const body = (await res.json()) as { warnings: Array<{ rule: string }>; errors: unknown[] };
    expect(body.errors).toEqual([]);
    expect(body.warnings.filter((w) => w.rule === 'CopyIgnoredFile')).toEqual([
      { line: 3, column: 1, severity: 'warning', rule: 'CopyIgnoredFile', message: 'Attempting to Copy file "tmp/helloworld.txt" that is excluded by .dockerignore' },
      { line: 5, column: 1, severity: 'warning', rule: 'CopyIgnoredFile', message: 'Attempting to Add file "dist" that is excluded by .dockerignore' },
    ]);
    // A build arg changes what the source names.
    const other = (await (await check(dockerfile, 'dist\n', '?buildArg=DIR=src')).json()) as { warnings: Array<{ rule: string }> };
    expect(other.warnings.filter((w) => w.rule === 'CopyIgnoredFile')).toEqual([]);
    // Without the header nothing is known of .dockerignore; with check=error=true the finding fails the check.
    const plain = await api(stack, token, 'POST', '/v1/dockerfile/check', dockerfile, 'text/plain');
    expect(plain.json.warnings.filter((w: { rule: string }) => w.rule === 'CopyIgnoredFile')).toEqual([]);
    const strict = await check(`# check=error=true\n${dockerfile}`, 'tmp\n');
    expect(strict.status).toBe(422);
    expect(((await strict.json()) as { errors: unknown[] }).errors).toContainEqual(expect.objectContaining({ line: 4, rule: 'CopyIgnoredFile', severity: 'error' }));
    const bad = await fetch(`${stack.url}/v1/dockerfile/check`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain', 'strata-dockerignore': 'not base64!' },
      body: dockerfile,
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { message: string }).message).toBe('Strata-Dockerignore must be the .dockerignore text encoded in base64.');
  });

  it('answers 422 for what Strata refuses, naming each line, and only warns about a duplicate stage name', async () => {
    const text = [
      'FROM scratch AS a',
      'ADD https://example.test/r.git?bogus=1 /x',
      'FROM scratch AS a',
      'ADD --keep-git-dir git@example.test:o/r.git#main:sub /y',
      'ADD https://example.test/r.git?bogus=1 /z',
      'RUN --network=host true',
      '',
    ].join('\n');
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check', text, 'text/plain');
    expect(res.status).toBe(422);
    // The target is the later stage "a": the earlier one is not needed, so its bad git source is not reported; a git source BuildKit would reject is.
    expect(res.json.neededStages).toEqual([1]);
    expect(res.json.errors.map((e: { line: number; message: string }) => [e.line, e.message])).toEqual([
      [5, 'ADD: invalid git source "https://example.test/r.git?bogus=1": unexpected query "bogus" (supported: ref, tag, branch, subdir, commit, checksum, keep-git-dir, submodules, mtime)'],
      [6, 'RUN --network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host); use the default network or --network=none'],
    ]);
    expect(res.json.warnings).toContainEqual(expect.objectContaining({ rule: 'DuplicateStageName', line: 3 }));
  });

  it('answers 422 for a target that is not a stage', async () => {
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check?target=nope', 'FROM scratch AS a\n', 'text/plain');
    expect(res.status).toBe(422);
    expect(res.json.errors[0].message).toMatch(/nope/);
  });
});

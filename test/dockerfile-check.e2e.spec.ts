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
      { name: 'deps', from: '${BASE}', instructions: [{ keyword: 'RUN', line: 3 }] },
      { name: 'tools', from: 'scratch', instructions: [{ keyword: 'COPY', line: 5 }] },
      { name: 'final', from: 'deps', instructions: [{ keyword: 'ENV', line: 7 }, { keyword: 'COPY', line: 8 }] },
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

  it('answers 422 for a target that is not a stage', async () => {
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check?target=nope', 'FROM scratch AS a\n', 'text/plain');
    expect(res.status).toBe(422);
    expect(res.json.errors[0].message).toMatch(/nope/);
  });
});

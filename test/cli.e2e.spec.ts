import { run } from '../apps/cli/src/cli.js';
import { makeDir, type Stack, startStack } from './support/stack.js';

function capture(env: Record<string, string>) {
  const io = { stdout: '', stderr: '', out: (t: string) => void (io.stdout += t), err: (t: string) => void (io.stderr += t), env };
  return io;
}

describe('the strata CLI', () => {
  let stack: Stack;
  let token: string;
  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('cli'));
  });
  afterAll(async () => {
    await stack.close();
  });

  it('builds a directory, follows the log live and exits 0 with the image digest', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY hello.txt /\nCMD ["/hello"]\n', 'hello.txt': 'hi' });
    const io = capture({ STRATA_URL: stack.url, STRATA_TOKEN: token });
    const code = await run(['build', dir, '-t', 'cli/app:v1', '-t', 'cli/app:latest'], io);
    expect(io.stderr).toMatch(/built cli\/app:v1,latest sha256:[0-9a-f]{64}/);
    expect(code).toBe(0);
    expect(io.stdout).toContain('COPY hello.txt /');
  });

  it('exits 1 with the error and its Dockerfile line when the build fails', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY nothere /x\n' });
    const io = capture({ STRATA_URL: stack.url, STRATA_TOKEN: token });
    expect(await run(['build', dir, '-t', 'cli/bad'], io)).toBe(1);
    expect(io.stderr).toMatch(/build failed: Dockerfile:2: COPY: "nothere" not found/);
  });

  it('exits 2 with usage for bad arguments and 1 for a bad token', async () => {
    const io = capture({ STRATA_URL: stack.url, STRATA_TOKEN: token });
    expect(await run(['build', '.'], io)).toBe(2);
    expect(io.stderr).toMatch(/-t REPO\[:TAG\] is required/);
    const bad = capture({ STRATA_URL: stack.url, STRATA_TOKEN: 'nope' });
    expect(await run(['status', '00000000-0000-0000-0000-000000000000'], bad)).toBe(1);
    expect(bad.stderr).toMatch(/401 The API token is not valid/);
  });
});

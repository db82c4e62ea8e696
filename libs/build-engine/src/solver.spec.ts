import { DEFAULT_PATH } from '@strata/dockerfile';
import { buildFailure as failure, buildWith as build, fakeImages, recordingExecutor } from './fakes.test.js';

describe('solver: what a Dockerfile means, as BuildKit builds it', () => {
  it('gives every pair of one ENV the values from before it, keeping a replaced variable in place', async () => {
    const { out } = await build('FROM scratch\nENV A=1\nENV A=2 B=$A\nENV PATH=/x:$PATH\n');
    expect(out.image.config.config?.Env).toEqual([`PATH=/x:${DEFAULT_PATH}`, 'A=2', 'B=1']);
    expect(out.image.config.history?.map((h) => h.created_by)).toEqual(['ENV A=1', 'ENV A=2 B=1', `ENV PATH=/x:${DEFAULT_PATH}`]);
  });

  it('adds the default PATH after the env of a base image that sets none', async () => {
    const { out, ran } = await build('FROM base\nRUN true\n', { images: fakeImages({ base: { Env: ['FOO=1'] } }) });
    expect(out.image.config.config?.Env).toEqual(['FOO=1', `PATH=${DEFAULT_PATH}`]);
    expect(ran(2)?.env).toEqual(['FOO=1', `PATH=${DEFAULT_PATH}`]);
  });

  it('carries the ARGs and ENV of a stage into a stage built FROM it', async () => {
    const { ran } = await build('FROM scratch AS a\nARG X=1\nENV E=e\nFROM a\nRUN echo $X\n');
    expect(ran(5)?.env).toEqual(expect.arrayContaining(['X=1', 'E=e']));
  });

  it('lets the later of an ARG and an ENV of one name win', async () => {
    const { ran } = await build('FROM scratch\nENV P=env\nARG P=arg\nRUN a\nARG Q=arg\nENV Q=env\nRUN b\n');
    expect(ran(4)?.env).toContain('P=arg');
    expect(ran(7)?.env).toContain('Q=env');
  });

  it('builds the later stage of a repeated name: FROM takes the last one before it, COPY --from and the target the last one', async () => {
    const dockerfile = [
      'FROM scratch AS base', 'ENV WHICH=first',
      'FROM base AS mid', 'RUN mid',
      'FROM scratch AS base', 'ENV WHICH=second', 'COPY a.txt /a.txt',
      'FROM scratch AS final', 'COPY --from=base /a.txt /a.txt', 'RUN final',
      '',
    ].join('\n');
    const mid = await build(dockerfile, {}, { target: 'mid' });
    expect(mid.ran(4)?.env).toContain('WHICH=first');
    expect(new Set(mid.events.filter((e) => e.type === 'step-done').map((e) => e.stage))).toEqual(new Set([0, 1]));
    // Only the second "base" has /a.txt: the copy works because it reads that one.
    const final = await build(dockerfile);
    expect(new Set(final.events.filter((e) => e.type === 'step-done').map((e) => e.stage))).toEqual(new Set([2, 3]));
    const base = await build(dockerfile, {}, { target: 'base' });
    expect(base.out.image.index).toBe(2);
    expect(base.out.image.config.config?.Env).toContain('WHICH=second');
    expect(base.out.warnings).toContainEqual({ line: 5, message: 'Duplicate stage name "base", stage names should be unique' });
  });

  it('builds only the stages the target needs, independent ones side by side within maxParallelStages', async () => {
    let running = 0;
    let most = 0;
    const executor = recordingExecutor();
    const slow = {
      runs: executor.runs,
      async run(req: Parameters<typeof executor.run>[0]) {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        return executor.run(req);
      },
    };
    const stages = ['a', 'b', 'c', 'unused'].map((n) => `FROM scratch AS ${n}\nCOPY a.txt /${n}\nRUN ${n}`).join('\n');
    const { deps } = await build(`${stages}\nFROM scratch\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n`, { executor: slow, maxParallelStages: 2 });
    expect(deps.executor.runs.map((r) => r.args.at(-1)).sort()).toEqual(['a', 'b', 'c']);
    expect(most).toBe(2);
  });

  it('runs the ONBUILD triggers of the base image first and clears them', async () => {
    const { out, ran } = await build('FROM base\nRUN after\n', { images: fakeImages({ base: { Env: ['PATH=/bin'], OnBuild: ['ENV T=1', 'RUN trig'] } }) });
    expect(ran(1)?.args.at(-1)).toBe('trig');
    expect(ran(2)?.env).toContain('T=1');
    expect(out.image.config.config?.OnBuild).toBeNull();
  });

  it('refuses an ONBUILD trigger that uses what the operator does not allow, naming the FROM line', async () => {
    const f = await failure('FROM scratch\nFROM base\n', { images: fakeImages({ base: { OnBuild: ['RUN --network=host true'] } }) });
    expect(f.line).toBe(2);
    expect(f.message).toBe('the ONBUILD trigger "RUN --network=host true" of the base image cannot be built: RUN --network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host); use the default network or --network=none');
  });

  it('fails with the check\'s error and line for what the check refuses', async () => {
    const f = await failure('FROM scratch\n\nADD https://example.test/r.git?bogus=1 /src\n');
    expect(f.line).toBe(3);
    expect(f.message).toBe('Dockerfile:3: ADD: invalid git source "https://example.test/r.git?bogus=1": unexpected query "bogus" (supported: ref, tag, branch, subdir, commit, checksum, keep-git-dir, submodules, mtime)');
  });

  it('runs RUN --network=host only where the operator allows it', async () => {
    expect((await failure('FROM scratch\nRUN --network=host true\n')).message).toMatch(/Dockerfile:2: RUN --network=host is not allowed on this deployment/);
    const { ran } = await build('FROM scratch\nRUN --network=host true\n', { allowHostNetwork: true });
    expect(ran(2)?.network).toBe('host');
  });

  it('names the stages there are when the target is not one of them', async () => {
    const f = await failure('FROM scratch AS a\nFROM scratch AS b\n', {}, { target: 'c' });
    expect(f.message).toBe('Dockerfile:1: target stage "c" could not be found; the named stages are a, b');
  });

  it('stops the stages beside a failing one and reports the first failure', async () => {
    const executor = recordingExecutor((req) => ({ exitCode: req.args.at(-1) === 'bad' ? 3 : 0 }));
    const f = await failure('FROM scratch AS a\nRUN bad\nFROM scratch AS b\nRUN good\nFROM scratch\nCOPY --from=a /x /x\nCOPY --from=b /y /y\n', { executor });
    expect(f.line).toBe(2);
    expect(f.message).toContain('"/bin/sh -c bad" exited with code 3');
  });
});

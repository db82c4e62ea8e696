import { DockerfileError, parseDockerfile, resolveBuild, stageReference, type ResolveOptions } from './index.js';

function plan(text: string, opts: ResolveOptions = {}) {
  return resolveBuild(parseDockerfile(text), opts);
}

function planError(text: string, opts: ResolveOptions = {}) {
  try {
    plan(text, opts);
  } catch (e) {
    if (e instanceof DockerfileError) return e.diagnostics[0];
    throw e;
  }
  throw new Error('expected a DockerfileError');
}

describe('resolveBuild', () => {
  it('expands FROM with global ARGs, build args and predefined platform ARGs', () => {
    const p = plan('ARG REG=example.test\nARG TAG\nFROM ${REG}/base:${TAG:-1.0} AS base\nFROM --platform=$BUILDPLATFORM $REG/tools', {
      buildArgs: { TAG: '2.0' }, platform: { os: 'linux', architecture: 'arm64' }, buildPlatform: { os: 'linux', architecture: 'amd64' },
    });
    expect(p.stages[0].base).toEqual({ kind: 'image', ref: 'example.test/base:2.0' });
    expect(p.stages[0].usedBuildArgs).toEqual(['TAG']);
    expect(p.stages[1]).toMatchObject({ base: { kind: 'image', ref: 'example.test/tools' }, platform: { os: 'linux', architecture: 'amd64' } });
    expect(p.globalArgs.find((a) => a.name === 'TARGETPLATFORM')?.value).toBe('linux/arm64');
  });

  it('resolves bases to scratch, earlier stages (any case) and images', () => {
    const p = plan('FROM scratch AS a\nFROM A AS b\nFROM later\nFROM busybox AS later');
    expect(p.stages.map((s) => s.base)).toEqual([
      { kind: 'scratch' }, { kind: 'stage', index: 0 }, { kind: 'image', ref: 'later' }, { kind: 'image', ref: 'busybox' },
    ]);
  });

  it('links COPY --from by name, by index and to images, and RUN --mount=from', () => {
    const p = plan('FROM busybox AS a\nFROM busybox AS b\nFROM busybox\nCOPY --from=A /x /x\nCOPY --from=1 /y /y\nCOPY --from=example.test/tools:1 /t /t\nRUN --mount=from=b,target=/m true');
    expect(p.stages[2].dependencies.map((d) => [d.stage, d.via, d.line])).toEqual([[0, 'copy', 4], [1, 'copy', 5], [1, 'mount', 7]]);
    expect(p.stages[2].dependsOn).toEqual([0, 1]);
    expect(p.stages[2].images).toEqual([expect.objectContaining({ ref: 'example.test/tools:1', via: 'copy', line: 6 })]);
  });

  it('builds only the stages the target needs, in parallel levels', () => {
    const text = 'FROM busybox AS a\nFROM busybox AS b\nFROM busybox AS unused\nFROM a AS c\nCOPY --from=b /b /b\nFROM busybox\nCOPY --from=c /a /a';
    const p = plan(text);
    expect(p.target).toBe(4);
    expect(p.neededStages).toEqual([0, 1, 3, 4]);
    expect(p.buildLevels).toEqual([[0, 1], [3], [4]]);
    expect(plan(text, { target: 'B' }).neededStages).toEqual([1]);
  });

  it('reports build args that no needed stage declares', () => {
    expect(plan('ARG A\nFROM x\nARG B', { buildArgs: { A: '1', B: '2', C: '3', HTTP_PROXY: 'p' } }).unusedBuildArgs).toEqual(['C']);
  });

  it.each<[string, ResolveOptions, string, number]>([
    ['FROM x AS a\nFROM x', { target: 'nope' }, 'target stage "nope" could not be found; the named stages are a', 1],
    ['FROM x AS a\nCOPY --from=a /x /x', {}, 'stage "a" refers to itself with COPY --from', 2],
    ['FROM x AS a\nRUN --mount=from=a true', {}, 'refers to itself with RUN --mount=from', 2],
    ['FROM x AS a\nCOPY --from=b /x /x\nFROM x AS b\nCOPY --from=a /y /y', {}, 'circular dependency between stages: "a" → "b" → "a"', 2],
    ['FROM x\nCOPY --from=3 /x /x', {}, 'COPY --from=3 names no stage: stage indexes run from 0 to 0', 2],
    ['ARG S=a\nFROM x\nCOPY --from=$S /x /x', {}, 'COPY --from does not support variables', 3],
    ['ARG EMPTY\nFROM ${EMPTY}', {}, 'expands to an empty name', 2],
    ['FROM --platform=linux/amd64/v3/x y', {}, 'invalid platform', 1],
    ['FROM Not_Valid!', {}, 'is not a valid image reference', 1],
  ])('%j fails: %s', (text, opts, message, line) => {
    const d = planError(text, opts);
    expect(d.message).toContain(message);
    expect(d.line).toBe(line);
  });

  it('does not fail on a bad image in a stage the target does not need', () => {
    expect(plan('FROM Not_Valid! AS bad\nFROM busybox').neededStages).toEqual([1]);
  });

  it('fails on lint warnings when # check=error=true', () => {
    expect(planError('# check=error=true\nFROM x\nMAINTAINER me').rule).toBe('MaintainerDeprecated');
  });
});

describe('repeated stage names, as BuildKit resolves them', () => {
  const text = 'FROM scratch AS base\nFROM base AS mid\nFROM scratch AS base\nFROM busybox AS final\nCOPY --from=base /a /a\nRUN --mount=from=1,target=/m true';

  it('gives FROM the last earlier stage of the name, COPY --from and the target the last one', () => {
    const p = plan(text);
    expect(p.stages[1].base).toEqual({ kind: 'stage', index: 0 });
    expect(p.stages[3].dependsOn).toEqual([1, 2]);
    expect(plan(text, { target: 'base' }).target).toBe(2);
  });

  it('finds a stage by name or index', () => {
    const df = parseDockerfile(text);
    expect([stageReference(df.stages, 'BASE'), stageReference(df.stages, '1'), stageReference(df.stages, '9'), stageReference(df.stages, 'busybox')]).toEqual([2, 1, null, null]);
  });
});

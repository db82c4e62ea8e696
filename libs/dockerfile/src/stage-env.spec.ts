import {
  StageEnv, classifyAddSource, exposedPortKeys, parseDockerfile, resolveBuild, resolveWorkdir,
  type EvaluatedStep, type ResolveOptions,
} from './index.js';

/** Walks the target stage; without `baseEnv` the base image's env is unknown (as to a check). */
function walk(text: string, opts: ResolveOptions = {}, baseEnv?: string[]): { steps: EvaluatedStep[]; env: StageEnv } {
  const p = resolveBuild(parseDockerfile(text), opts);
  const env = new StageEnv(p, baseEnv ? { baseEnv } : {});
  const steps = p.dockerfile.stages[p.target].instructions.map((i) => env.step(i));
  return { steps, env };
}

describe('StageEnv', () => {
  it('expands ENV pairs against the environment before the instruction', () => {
    const { steps, env } = walk('FROM x\nENV A=1\nENV A=2 B=$A C="${A} q"');
    expect(steps[1].instruction).toMatchObject({ pairs: [{ key: 'A', value: '2' }, { key: 'B', value: '1' }, { key: 'C', value: '1 q' }] });
    expect(env.imageEnv).toEqual(['A=2', 'B=1', 'C=1 q']);
  });

  it('scopes ARGs: defaults, build-arg overrides, global values only when redeclared', () => {
    const text = 'ARG V=global\nARG ONLYGLOBAL=g\nFROM x\nARG V\nARG D=def\nARG O=o\nRUN true';
    const { steps } = walk(text, { buildArgs: { O: 'override' } });
    expect(steps[3].env).toEqual(['V=global', 'D=def', 'O=override']);
    expect(steps[3].usedBuildArgs).toEqual(['O']);
  });

  it('makes predefined platform ARGs visible only when declared', () => {
    const { steps } = walk('FROM x\nRUN a\nARG TARGETARCH\nRUN b', { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    expect(steps[0].env).toEqual([]);
    expect(steps[2].env).toEqual(['TARGETARCH=arm64']);
  });

  it('lets the later of ARG and ENV win, starting from the base image env', () => {
    const { steps } = walk('FROM x\nARG P=arg\nENV P=env\nRUN one\nARG Q\nENV Q=env-q\nRUN two', { buildArgs: { Q: 'ba' } }, ['PATH=/bin', 'P=image']);
    expect(steps[2].env).toEqual(['PATH=/bin', 'P=env']);
    expect(steps[5].env).toEqual(['PATH=/bin', 'P=env', 'Q=env-q']);
  });

  it('tracks which build args each step saw, for cache keys', () => {
    const { steps } = walk('FROM x\nARG A\nARG B\nCOPY $A /dst\nLABEL l=$B\nUSER root\nRUN make', { buildArgs: { A: 'a', B: 'b' } });
    expect(steps.map((s) => s.usedBuildArgs)).toEqual([['A'], ['B'], ['A'], ['B'], [], ['A', 'B']]);
  });

  it('expands ADD, COPY, EXPOSE, USER, VOLUME, STOPSIGNAL, WORKDIR and RUN mounts', () => {
    const { steps, env } = walk(
      'FROM x\nARG N=app\nCOPY --chown=$N:$N src/$N /opt/$N/\nEXPOSE ${PORT:-8080} 53/udp\nUSER ${N}\nVOLUME /data/$N\nSTOPSIGNAL SIG${S:-TERM}\n' +
      'WORKDIR /srv\nWORKDIR $N/bin\nRUN --mount=type=cache,id=c-$N,target=/c true\nCOPY <<EOF /e\nname=$N\nEOF\nCOPY <<"EOF" /f\nname=$N\nEOF',
    );
    expect(steps[1].instruction).toMatchObject({ chown: 'app:app', sources: ['src/app'], dest: '/opt/app/' });
    expect(steps[2].instruction).toMatchObject({ ports: ['8080', '53/udp'] });
    expect(steps[3].instruction).toMatchObject({ user: 'app' });
    expect(steps[4].instruction).toMatchObject({ paths: ['/data/app'] });
    expect(steps[5].instruction).toMatchObject({ signal: 'SIGTERM' });
    expect(steps[7].workdir).toBe('/srv/app/bin');
    expect(steps[8].instruction).toMatchObject({ mounts: [expect.objectContaining({ id: 'c-app', target: '/c' })] });
    expect(steps[9].instruction).toMatchObject({ heredocs: [{ content: 'name=app\n' }] });
    expect(steps[10].instruction).toMatchObject({ heredocs: [{ content: 'name=$N\n' }] });
    expect(env.user).toBe('app');
  });

  it('leaves RUN, CMD and ENTRYPOINT text to the shell', () => {
    const { steps } = walk('FROM x\nARG A=1\nRUN echo $A\nCMD echo $A');
    expect(steps[1].instruction).toMatchObject({ cmd: { command: 'echo $A' } });
    expect(steps[2].instruction).toMatchObject({ cmd: { command: 'echo $A' } });
  });

  it('gives RUN the proxy build args without counting them for the cache key', () => {
    const { steps } = walk('FROM x\nRUN curl x', { buildArgs: { HTTPS_PROXY: 'http://proxy:3128' } });
    expect(steps[0]).toMatchObject({ proxyEnv: { HTTPS_PROXY: 'http://proxy:3128' }, usedBuildArgs: [], env: [] });
  });

  it('fails with the instruction position on ${x:?message}', () => {
    expect(() => walk('FROM x\nWORKDIR ${DIR:?set DIR}')).toThrow('line 2, column 1: failed to expand "${DIR:?set DIR}": DIR: set DIR');
  });

  it('carries state over from a parent stage', () => {
    const p = resolveBuild(parseDockerfile('FROM x AS a\nENV A=1\nWORKDIR /w\nFROM a\nRUN true'));
    const parent = new StageEnv(p);
    for (const i of p.dockerfile.stages[0].instructions) parent.step(i);
    const child = new StageEnv(p, { parent });
    expect(child.step(p.dockerfile.stages[1].instructions[0])).toMatchObject({ env: ['A=1'], workdir: '/w' });
  });
});

describe('helpers', () => {
  it.each([
    ['/', 'app', '/app'],
    ['/app', 'bin', '/app/bin'],
    ['/app', '/srv', '/srv'],
    ['', 'x/../y/.', '/y'],
    ['/a', '', '/a'],
    ['/a/b', '../..', '/'],
  ])('resolveWorkdir(%j, %j) = %j', (cur, p, want) => {
    expect(resolveWorkdir(cur, p)).toBe(want);
  });

  it('classifies ADD sources', () => {
    expect(classifyAddSource('https://example.test/tool.tar.gz')).toEqual({ kind: 'url', url: 'https://example.test/tool.tar.gz' });
    expect(classifyAddSource('https://example.test/repo.git#v1.2.3:sub')).toMatchObject({ kind: 'git', remote: 'https://example.test/repo.git', ref: 'v1.2.3', subdir: 'sub', problem: null });
    expect(classifyAddSource('git@github.com:o/r.git')).toMatchObject({ kind: 'git', ref: null });
    expect(classifyAddSource('vendor.tar.gz')).toEqual({ kind: 'local', path: 'vendor.tar.gz' });
  });

  it('lists exposed ports with ranges and protocols', () => {
    expect(exposedPortKeys(['80', '53/udp', '8000-8002'])).toEqual(['80/tcp', '53/udp', '8000/tcp', '8001/tcp', '8002/tcp']);
  });
});

describe('StageEnv as BuildKit evaluates a stage', () => {
  it('appends the default PATH to a known base env without one, and keeps a replaced variable in place', () => {
    const { env } = walk('FROM x\nENV PATH=/x:$PATH A=1\nENV FOO=2', {}, ['FOO=1']);
    expect(env.imageEnv).toEqual(['FOO=2', 'PATH=/x:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'A=1']);
  });

  it('leaves the env alone when the base is unknown (a check that has not fetched it)', () => {
    expect(walk('FROM x\nENV A=1').env.imageEnv).toEqual(['A=1']);
  });

  it('refuses an EXPOSE protocol other than tcp, udp or sctp, and an empty VOLUME, at the line', () => {
    expect(() => walk('FROM x\nEXPOSE 80/http')).toThrow('line 2, column 1: EXPOSE: invalid protocol "http" in "80/http": use tcp, udp or sctp');
    expect(() => walk('FROM x\nARG V\nVOLUME ["$V"]')).toThrow('line 3, column 1: VOLUME: a volume path is empty');
    expect(exposedPortKeys(['127.0.0.1:8080:80/UDP', '90-91/sctp'])).toEqual(['80/udp', '90/sctp', '91/sctp']);
  });
});

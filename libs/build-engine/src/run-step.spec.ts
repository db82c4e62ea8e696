import { parseDockerfile, type StageInstruction } from '@strata/dockerfile';
import { buildFailure, buildWith, recordingExecutor } from './fakes.test.js';
import { runArgs } from './run-step.js';

function run(text: string): Extract<StageInstruction, { keyword: 'RUN' }> {
  return parseDockerfile(`FROM scratch\n${text}\n`).stages[0].instructions[0] as Extract<StageInstruction, { keyword: 'RUN' }>;
}
const never = (m: string): never => {
  throw new Error(m);
};

describe('run step', () => {
  it('runs exec form as written, shell form and heredocs through the shell, #! shell scripts with -c', () => {
    const shell = ['/bin/sh', '-c'];
    expect(runArgs(run('RUN ["echo", "a b"]'), shell, never)).toEqual(['echo', 'a b']);
    expect(runArgs(run('RUN echo $HOME'), shell, never)).toEqual(['/bin/sh', '-c', 'echo $HOME']);
    expect(runArgs(run('RUN <<EOF\necho one\nEOF'), shell, never)).toEqual(['/bin/sh', '-c', 'echo one\n']);
    expect(runArgs(run('RUN <<EOF\n#!/usr/bin/env bash\necho two\nEOF'), shell, never)).toEqual(['/bin/bash', '-c', '#!/usr/bin/env bash\necho two\n']);
  });

  it('gives the process the stage variables, its user, directory and network', async () => {
    const { ran } = await buildWith('FROM scratch\nARG V=1\nENV E=$V\nUSER app\nWORKDIR /w\nRUN --network=none make\n');
    expect(ran(6)).toMatchObject({ args: ['/bin/sh', '-c', 'make'], user: 'app', cwd: '/w', network: 'none' });
    expect(ran(6)?.env).toEqual(expect.arrayContaining(['V=1', 'E=1', expect.stringMatching(/^PATH=/)]));
  });

  it('passes proxy build args to the process without an ARG, and keeps them out of the cache key', async () => {
    const first = await buildWith('FROM scratch\nRUN fetch\n', {}, { buildArgs: { HTTPS_PROXY: 'http://proxy.test:3128' } });
    expect(first.ran(2)?.env).toContain('HTTPS_PROXY=http://proxy.test:3128');
    const key = (r: typeof first) => r.events.flatMap((e) => (e.type === 'step-done' ? [e.cacheKey] : []))[0];
    const second = await buildWith('FROM scratch\nRUN fetch\n', {}, { buildArgs: { HTTPS_PROXY: 'http://other.test:3128' } });
    expect(key(second)).toBe(key(first));
  });

  it('names a secret in the cache key, never its value', async () => {
    const dockerfile = 'FROM scratch\nRUN --mount=type=secret,id=token,env=TOKEN use\n';
    const a = await buildWith(dockerfile, {}, { secrets: new Map([['token', Buffer.from('s3cr3t')]]) });
    const b = await buildWith(dockerfile, {}, { secrets: new Map([['token', Buffer.from('other')]]) });
    const keys = [a, b].map((r) => r.events.flatMap((e) => (e.type === 'step-done' ? [e.cacheKey] : []))[0]);
    expect(keys[0]).toBe(keys[1]);
    expect(a.ran(2)?.mounts).toEqual([{ type: 'secret', id: 'token', target: null, env: 'TOKEN', value: Buffer.from('s3cr3t'), uid: 0, gid: 0, mode: 0o400 }]);
  });

  it('resolves cache and tmpfs mounts against the working directory', async () => {
    const { ran } = await buildWith('FROM scratch\nWORKDIR /src\nRUN --mount=type=cache,target=.cache,sharing=locked --mount=type=tmpfs,target=/tmp,size=1m build\n');
    expect(ran(3)?.mounts).toEqual([
      { type: 'cache', target: '/src/.cache', id: '/src/.cache', sharing: 'locked', readOnly: false, uid: 0, gid: 0, mode: 0o755 },
      { type: 'tmpfs', target: '/tmp', sizeBytes: 1024 * 1024 },
    ]);
  });

  it('fails with the exit code and the last lines of output, at the RUN line', async () => {
    const executor = recordingExecutor((req) => {
      for (let i = 1; i <= 12; i++) req.onOutput('stdout', `line ${i}`);
      return { exitCode: 2 };
    });
    const f = await buildFailure('FROM scratch\n\nRUN make\n', { executor });
    expect(f.line).toBe(3);
    expect(f.message).toBe(`Dockerfile:3: RUN: "/bin/sh -c make" exited with code 2; last output:\n${Array.from({ length: 10 }, (_, i) => `line ${i + 3}`).join('\n')}`);
  });

  it('stores what a RUN changed as a layer, and nothing when it changed nothing', async () => {
    const executor = recordingExecutor((req) => ({ entries: req.args.at(-1) === 'write' ? [{ type: 'file', path: 'out', mode: 0o644, content: Buffer.from('x') }] : [] }));
    const { out } = await buildWith('FROM scratch\nRUN write\nRUN nothing\n', { executor });
    expect(out.image.layers).toHaveLength(1);
    expect(out.image.config.history?.map((h) => h.empty_layer ?? false)).toEqual([false, true]);
  });
});

import { parseDockerfile, type StageInstruction } from '@strata/dockerfile';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildFailure, buildWith, fakeImages, recordingExecutor } from './fakes.test.js';
import type { RootfsProvider } from './interfaces.js';
import { runArgs } from './run-step.js';

function run(text: string): Extract<StageInstruction, { keyword: 'RUN' }> {
  return parseDockerfile(`FROM scratch\n${text}\n`).stages[0].instructions[0] as Extract<StageInstruction, { keyword: 'RUN' }>;
}
const never = (m: string): never => {
  throw new Error(m);
};

describe('run step', () => {
  it('runs exec form as written, shell form and heredocs through the shell, a lone #! heredoc as a file in /dev/pipes', () => {
    const shell = ['/bin/sh', '-c'];
    expect(runArgs(run('RUN ["echo", "a b"]'), shell, never)).toEqual({ args: ['echo', 'a b'] });
    expect(runArgs(run('RUN echo $HOME'), shell, never)).toEqual({ args: ['/bin/sh', '-c', 'echo $HOME'] });
    expect(runArgs(run('RUN <<EOF\necho one\nEOF'), shell, never)).toEqual({ args: ['/bin/sh', '-c', 'echo one\n'] });
    // A program named after the heredoc reads it on stdin, through the shell (as BuildKit).
    expect(runArgs(run('RUN <<EOF python3\nprint(1)\nEOF'), shell, never)).toEqual({ args: ['/bin/sh', '-c', '<<EOF python3\nprint(1)\nEOF'] });
    expect(runArgs(run('RUN python3 <<EOF > /out\nprint(1)\nEOF'), shell, never)).toEqual({ args: ['/bin/sh', '-c', 'python3 <<EOF > /out\nprint(1)\nEOF'] });
    expect(runArgs(run('RUN <<-SCRIPT\n\t#!/usr/bin/env python3\n\tprint(2)\n\tSCRIPT'), shell, never)).toEqual({
      args: ['/dev/pipes/SCRIPT'],
      script: { type: 'file', target: '/dev/pipes/SCRIPT', content: Buffer.from('#!/usr/bin/env python3\nprint(2)\n'), mode: 0o755 },
    });
  });

  it('mounts a #! heredoc script for the step, its content in the cache key', async () => {
    const a = await buildWith('FROM scratch\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print 1 }\nEOF\n');
    expect(a.ran(2)).toMatchObject({ args: ['/dev/pipes/EOF'], mounts: [{ type: 'file', target: '/dev/pipes/EOF', content: Buffer.from('#!/bin/awk -f\nBEGIN { print 1 }\n'), mode: 0o755 }] });
    expect(a.out.image.config.history?.at(-1)?.created_by).toBe('RUN /dev/pipes/EOF # buildkit');
    const b = await buildWith('FROM scratch\nRUN <<EOF\n#!/bin/awk -f\nBEGIN { print 2 }\nEOF\n');
    const key = (r: typeof a) => r.events.flatMap((e) => (e.type === 'step-done' ? [e.cacheKey] : []))[0];
    expect(key(b)).not.toBe(key(a));
  });

  it('gives the process the stage variables, its user, directory and network', async () => {
    const { ran } = await buildWith('FROM scratch\nARG V=1\nENV E=$V\nUSER app\nWORKDIR /w\nRUN --network=none make\n');
    expect(ran(6)).toMatchObject({ args: ['/bin/sh', '-c', 'make'], user: 'app', cwd: '/w', network: 'none' });
    expect(ran(6)?.env).toEqual(expect.arrayContaining(['V=1', 'E=1', expect.stringMatching(/^PATH=/)]));
  });

  it('passes proxy build args to the process without an ARG, and keeps them out of the cache key', async () => {
    const first = await buildWith('FROM scratch\nRUN fetch\n', {}, { buildArgs: { HTTPS_PROXY: 'http://proxy.test:3128', no_proxy: 'internal.test' } });
    expect(first.ran(2)?.env).toEqual(expect.arrayContaining(['HTTPS_PROXY=http://proxy.test:3128', 'no_proxy=internal.test']));
    // Nor in the image: its history and its config.
    expect(JSON.stringify(first.out.image.config)).not.toMatch(/proxy\.test|internal\.test/);
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

  it('binds a directory of an image named by reference, resolved like FROM', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'engine-view-'));
    const opened: string[][] = [];
    const rootfs: RootfsProvider = { open: async (layers) => (opened.push(layers.map((l) => l.diffId)), { root, release: async () => undefined }) };
    const { ran } = await buildWith('FROM scratch\nRUN --mount=from=example.test/tools:1,source=/usr,target=/t ls /t\n', { rootfs, images: fakeImages({ 'example.test/tools:1': {} }) });
    expect(opened).toEqual([[]]);
    expect(ran(2)?.mounts).toEqual([{ type: 'bind', target: '/t', source: path.join(root, 'usr'), readOnly: true }]);
    const f = await buildFailure('FROM scratch\nRUN --mount=from=nowhere,target=/t ls /t\n', { rootfs });
    expect(f.message).toBe('Dockerfile:2: RUN: --mount=from=nowhere,target=/t: no image "nowhere" here');
  });

  it('gives ssh mounts the keys sent with the build, SSH_AUTH_SOCK naming the first, the keys never in the cache key', async () => {
    const dockerfile = 'FROM scratch\nRUN --mount=type=ssh --mount=type=ssh,id=deploy,target=/tmp/deploy.sock,uid=1000,mode=0660 --mount=type=ssh,id=absent git fetch\n';
    const keyA = Buffer.from('-----BEGIN OPENSSH PRIVATE KEY-----\nA\n');
    const keyB = Buffer.from('-----BEGIN OPENSSH PRIVATE KEY-----\nB\n');
    const a = await buildWith(dockerfile, {}, { sshKeys: new Map([['default', [keyA]], ['deploy', [keyA, keyB]]]) });
    expect(a.ran(2)?.mounts).toEqual([
      { type: 'ssh', id: 'default', target: '/run/buildkit/ssh_agent.0', keys: [keyA], uid: 0, gid: 0, mode: 0o600 },
      { type: 'ssh', id: 'deploy', target: '/tmp/deploy.sock', keys: [keyA, keyB], uid: 1000, gid: 0, mode: 0o660 },
    ]);
    expect(a.ran(2)?.env).toContain('SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0');
    const b = await buildWith(dockerfile, {}, { sshKeys: new Map([['default', [keyB]], ['deploy', [keyB]]]) });
    const key = (r: typeof a) => r.events.flatMap((e) => (e.type === 'step-done' ? [e.cacheKey] : []))[0];
    expect(key(b)).toBe(key(a));
    const f = await buildFailure('FROM scratch\nRUN --mount=type=ssh,id=deploy,required git fetch\n');
    expect(f.message).toBe('Dockerfile:2: RUN: --mount=type=ssh,id=deploy,required: the SSH key "deploy" is required but was not sent with the build (strata build --ssh deploy=<private key file>)');
  });

  it('asks for a privileged container for --security=insecure only where the operator allows it', async () => {
    const { ran } = await buildWith('FROM scratch\nRUN --security=insecure mount -t tmpfs none /mnt\nRUN true\n', { allowInsecure: true });
    expect(ran(2)?.security).toBe('insecure');
    expect(ran(3)?.security).toBeUndefined();
    expect((await buildFailure('FROM scratch\nRUN --security=insecure true\n')).message).toMatch(/^Dockerfile:2: RUN --security=insecure is not allowed on this deployment/);
  });

  it('keeps a step\'s upper dir as its layer while the next step runs, and returns the image only once every keep is done', async () => {
    let finish!: () => void;
    const slow = new Promise<void>((resolve) => (finish = resolve));
    const order: string[] = [];
    const executor = recordingExecutor((req) => ({
      entries: [{ type: 'file', path: `out-${req.line}`, content: Buffer.from(`${req.line}`) }],
      keep: async () => {
        order.push(`keep ${req.line}`);
        if (req.line === 2) await slow;
        order.push(`kept ${req.line}`);
      },
    }));
    let returned = false;
    const building = buildWith('FROM scratch\nRUN first\nRUN second\n', { executor }).then((r) => {
      returned = true;
      return r;
    });
    for (let i = 0; i < 1000 && executor.runs.length < 2; i++) await new Promise((resolve) => setImmediate(resolve));
    // The second RUN ran while the first one's layer was still being kept; the build has not returned.
    expect(executor.runs.map((r) => r.line)).toEqual([2, 3]);
    expect(order).toEqual(['keep 2']);
    expect(returned).toBe(false);
    finish();
    const { out } = await building;
    expect([...order].sort()).toEqual(['keep 2', 'keep 3', 'kept 2', 'kept 3']);
    expect(out.image.layers).toHaveLength(2);
  });

  it('releases the snapshot when keeping it fails (the layer is stored all the same), and fails the build when releasing fails too', async () => {
    const released: number[] = [];
    const keepFails = recordingExecutor((req) => ({
      entries: [{ type: 'file', path: 'out', content: Buffer.from('x') }],
      keep: async () => {
        throw new Error('EBUSY: the overlay is busy');
      },
      release: async () => void released.push(req.line),
    }));
    const { out } = await buildWith('FROM scratch\nRUN make\n', { executor: keepFails });
    expect(out.image.layers).toHaveLength(1);
    expect(released).toEqual([2]);
    const releaseFails = recordingExecutor(() => ({
      entries: [],
      release: async () => {
        throw new Error('cannot unmount the snapshot');
      },
    }));
    await expect(buildWith('FROM scratch\nRUN true\n', { executor: releaseFails })).rejects.toThrow('cannot unmount the snapshot');
  });
});

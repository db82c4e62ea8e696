// The addon's process start (posix_spawn + pidfd, docs/adr/0039) against real children: what a
// caller of node's child_process.spawn would see.
import { spawn as nodeSpawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeSpawnAvailable, spawn, type SpawnedProcess } from '@strata/native';

interface Outcome {
  stdout: string;
  stderr: string;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function collect(child: SpawnedProcess): Promise<Outcome> {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) =>
      resolve({ stdout: Buffer.concat(stdout).toString(), stderr: Buffer.concat(stderr).toString(), code, signal }),
    );
  });
}

describe('@strata/native spawn', () => {
  it('is built into the addon and usable on this kernel (pidfd_open, Linux 5.3+)', () => {
    expect(nativeSpawnAvailable).toBe(true);
  });

  it('pipes stdout and stderr apart and reports the exit code', async () => {
    const result = await collect(spawn('sh', ['-c', 'echo out; echo err >&2; exit 3']));
    expect(result).toEqual({ stdout: 'out\n', stderr: 'err\n', code: 3, signal: null });
    expect((await collect(spawn('true', []))).code).toBe(0);
  });

  it('emits exit, then close once both pipes have ended, with pid and exitCode set', async () => {
    const child = spawn('sh', ['-c', 'exit 0']);
    expect(child.pid).toBeGreaterThan(0);
    const events: string[] = [];
    child.on('spawn', () => events.push('spawn'));
    child.on('exit', () => events.push('exit'));
    child.stdout.on('close', () => events.push('stdout'));
    child.stderr.on('close', () => events.push('stderr'));
    child.stdout.resume();
    child.stderr.resume();
    await new Promise((resolve) => child.once('close', resolve));
    events.push('close');
    expect(events[0]).toBe('spawn');
    expect(events.at(-1)).toBe('close');
    expect(events.sort()).toEqual(['close', 'exit', 'spawn', 'stderr', 'stdout']);
    expect(child.exitCode).toBe(0);
  });

  it('delivers output larger than a pipe buffer to a slow consumer, in order and complete', async () => {
    // 4 MiB on stdout and 1 MiB on stderr (a pipe holds 64 KiB): the child blocks while the reader is paused.
    const child = spawn('sh', ['-c', 'head -c 4194304 /dev/zero | tr "\\0" a; head -c 1048576 /dev/zero | tr "\\0" b >&2']);
    let stdout = 0;
    let stderr = 0;
    let wrong = 0;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.length;
      if (chunk.some((byte) => byte !== 0x61)) wrong += 1;
      child.stdout.pause();
      setTimeout(() => child.stdout.resume(), 1);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.length;
      if (chunk.some((byte) => byte !== 0x62)) wrong += 1;
    });
    const code = await new Promise((resolve) => child.once('close', resolve));
    expect({ code, stdout, stderr, wrong }).toEqual({ code: 0, stdout: 4194304, stderr: 1048576, wrong: 0 });
  });

  it('reports a child killed by a signal, and kill() after exit answers false', async () => {
    const child = spawn('sleep', ['30']);
    const done = collect(child);
    await new Promise((resolve) => child.once('spawn', resolve));
    expect(child.kill('SIGKILL')).toBe(true);
    const result = await done;
    expect(result.code).toBeNull();
    expect(result.signal).toBe('SIGKILL');
    expect(child.signalCode).toBe('SIGKILL');
    expect(child.killed).toBe(true);
    expect(child.kill('SIGTERM')).toBe(false);
    const term = spawn('sh', ['-c', 'kill -TERM $$']);
    expect((await collect(term)).signal).toBe('SIGTERM');
  });

  it('reports a missing or non-executable program as an error event, as child_process does', async () => {
    const missing = spawn('strata-no-such-program', ['x'], { env: { PATH: '/usr/bin:/bin' } });
    const error = await new Promise<NodeJS.ErrnoException>((resolve) => missing.once('error', resolve));
    expect(error).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'spawn strata-no-such-program', path: 'strata-no-such-program' });
    expect(error.message).toBe('spawn strata-no-such-program ENOENT');
    expect(missing.pid).toBeUndefined();
    expect(missing.kill()).toBe(false);

    const absent = await new Promise<NodeJS.ErrnoException>((resolve) => spawn('/nonexistent/bin/x', []).once('error', resolve));
    expect(absent.code).toBe('ENOENT');
    const dir = mkdtempSync(join(tmpdir(), 'strata-spawn-'));
    try {
      writeFileSync(join(dir, 'tool'), '#!/bin/sh\necho hi\n', { mode: 0o644 });
      const notExecutable = await new Promise<NodeJS.ErrnoException>((resolve) => spawn(join(dir, 'tool'), []).once('error', resolve));
      expect(notExecutable.code).toBe('EACCES');
      // Found on PATH but not executable: EACCES too, as execvp says.
      const onPath = await new Promise<NodeJS.ErrnoException>((resolve) => spawn('tool', [], { env: { PATH: dir } }).once('error', resolve));
      expect(onPath.code).toBe('EACCES');
      chmodSync(join(dir, 'tool'), 0o755);
      expect((await collect(spawn('tool', [], { env: { PATH: `/nonexistent:${dir}` } }))).stdout).toBe('hi\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('passes exactly the given environment, and PATH in it is where the program is found', async () => {
    const result = await collect(spawn('sh', ['-c', 'env | sort'], { env: { PATH: '/usr/bin:/bin', STRATA_A: 'one two', STRATA_B: '' } }));
    const lines = result.stdout.split('\n').filter((line) => line && !line.startsWith('PWD=') && !line.startsWith('SHLVL=') && !line.startsWith('_='));
    expect(lines).toEqual(['PATH=/usr/bin:/bin', 'STRATA_A=one two', 'STRATA_B=']);
    const nowhere = spawn('sh', ['-c', 'true'], { env: { PATH: '/nonexistent' } });
    expect((await new Promise<NodeJS.ErrnoException>((resolve) => nowhere.once('error', resolve))).code).toBe('ENOENT');
  });

  it('starts the child in the given working directory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'strata-spawn-'));
    try {
      expect((await collect(spawn('pwd', [], { cwd: dir }))).stdout).toBe(`${dir}\n`);
      const gone = spawn('pwd', [], { cwd: join(dir, 'missing') });
      expect((await new Promise<NodeJS.ErrnoException>((resolve) => gone.once('error', resolve))).code).toBe('ENOENT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives the child only stdin (/dev/null), stdout and stderr, even where the worker holds a descriptor without O_CLOEXEC', async () => {
    // Node opens its own descriptors close-on-exec; one it inherited (here fd 3 of a node process
    // started with a fourth stdio pipe) is not. That process starts `ls -l /proc/self/fd/` through the addon.
    const addon = new URL('../build/Release/strata_native.node', import.meta.url).pathname;
    const script = `
      const fs = require('node:fs');
      const fd3 = fs.readlinkSync('/proc/self/fd/3');
      const started = require(${JSON.stringify(addon)}).spawn('sh', ['sh', '-c', 'exec ls -l /proc/self/fd/'], ['PATH=/usr/bin:/bin'], null, () => {});
      process.stdout.write(fd3 + '\\n' + fs.readFileSync(started.stdout, 'utf8'));`;
    const parent = nodeSpawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit', 'pipe'] });
    const chunks: Buffer[] = [];
    parent.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
    await new Promise((resolve) => parent.once('close', resolve));
    const [inherited, ...listing] = Buffer.concat(chunks).toString().split('\n');
    expect(inherited).toMatch(/^(pipe|socket):/);
    const fds = listing.flatMap((line) => {
      const match = /\s(\d+) -> (.*)$/.exec(line);
      return match ? [{ fd: Number(match[1]), target: match[2] }] : [];
    });
    expect(fds.filter(({ fd }) => fd <= 2).map(({ target }) => target.replace(/\[\d+\]/, ''))).toEqual(['/dev/null', 'pipe:', 'pipe:']);
    // Beyond 0-2 only the directory ls opened to list /proc/self/fd: not the inherited fd 3.
    expect(fds.filter(({ fd }) => fd > 2).map(({ target }) => target)).toEqual([expect.stringMatching(/^\/proc\/\d+\/fd$/)]);
  });

  it('resets signal dispositions: SIGPIPE (which node ignores) ends a pipeline writer in the child', async () => {
    // With SIGPIPE ignored, `yes` would get EPIPE and exit 1 with a "write error" (coreutils); by
    // default it dies of the signal and the pipeline ends quietly.
    const result = await collect(spawn('sh', ['-c', 'yes | head -1; trap']));
    expect(result).toEqual({ stdout: 'y\n', stderr: '', code: 0, signal: null });
    const mask = await collect(spawn('sh', ['-c', 'grep -E "^(SigBlk|SigIgn)" /proc/self/status']));
    expect(mask.stdout).toBe('SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n');
  });

  it("hands an exception thrown by an 'exit' listener to process 'uncaughtException', as node does for its own callbacks", async () => {
    const addon = new URL('../build/Release/strata_native.node', import.meta.url).pathname;
    const script = `
      process.on('uncaughtException', (error) => { console.log('caught: ' + error.message); });
      require(${JSON.stringify(addon)}).spawn('true', ['true'], ['PATH=/usr/bin:/bin'], null, () => { throw new Error('from exit'); });
      setTimeout(() => console.log('still running'), 200);`;
    const parent = nodeSpawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    parent.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
    parent.stderr!.resume();
    const code = await new Promise((resolve) => parent.once('close', resolve));
    expect({ code, output: Buffer.concat(chunks).toString() }).toEqual({ code: 0, output: 'caught: from exit\nstill running\n' });
  });

  it('leaves the exits of child_process children to node, and node leaves its own to it', async () => {
    // Both mechanisms reap only their own pids: interleaved children all report their own codes.
    const nodeChild = (code: number) =>
      new Promise((resolve) => nodeSpawn('sh', ['-c', `exit ${code}`], { stdio: 'ignore' }).once('exit', (exit) => resolve(exit)));
    const results = await Promise.all([
      nodeChild(4),
      collect(spawn('sh', ['-c', 'exit 5'])).then((outcome) => outcome.code),
      nodeChild(6),
      collect(spawn('sh', ['-c', 'sleep 0.05; exit 7'])).then((outcome) => outcome.code),
    ]);
    expect(results).toEqual([4, 5, 6, 7]);
  });
});

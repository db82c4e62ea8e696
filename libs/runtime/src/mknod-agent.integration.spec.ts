import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { LayerEntry } from '@strata/oci';
import type { Digest } from '@strata/oci';
import { RunStepError, type RunOutcome } from '@strata/build-engine';
import { BuildRuntime } from './build-runtime.js';
import { MknodAgent } from './mknod-agent.js';
import { busyboxLayer, tarDirectory, tempDir, TEST_RUNTIMES, type TestLayer } from './fixtures.test.js';
import { USERNS_RANGE_SIZE } from './userns.js';

import { jest } from '@jest/globals';

jest.setTimeout(120_000);

/**
 * A static x86-64 program that makes nodes through the other ABIs a step may use: mknodat with a
 * directory descriptor, i386's mknod and mknodat (int 0x80) and x32's mknod. Built with the gcc that
 * builds @strata/native.
 */
const ABI_PROGRAM = `#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
static long i386_call(long nr, long a, long b, long c, long d) {
  long ret;
  __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d) : "memory");
  return ret;
}
static void report(const char *what, long ret) { printf("%s=%s\\n", what, ret == 0 ? "ok" : strerror(-ret)); }
static char p1[] = "i386-mknod", p2[] = "i386-mknodat", p3[] = "x32-mknod", p4[] = "dirfd-mknodat";
int main(int argc, char **argv) {
  (void)argc;
  if (chdir(argv[1]) != 0) return 2;
  int dir = open(argv[2], O_DIRECTORY | O_RDONLY);
  report("dirfd", mknodat(dir, p4, S_IFCHR | 0600, makedev(1, 8)) == 0 ? 0 : -errno);
  report("i386-mknod", i386_call(14, (long)p1, S_IFCHR | 0600, (1 << 8) | 9, 0));
  report("i386-mknodat", i386_call(297, AT_FDCWD, (long)p2, S_IFBLK | 0600, (7 << 8) | 1));
  report("x32-mknod", syscall(133 | 0x40000000, p3, S_IFCHR | 0600, (1 << 8) | 3) == 0 ? 0 : -errno);
  if (argc > 3) {
    /* Not devices: the agent lets the kernel make them. */
    report("regular", mknod("regular", S_IFREG | 0640, 0) == 0 ? 0 : -errno);
    report("socket", mknod("socket", S_IFSOCK | 0600, 0) == 0 ? 0 : -errno);
  }
  return 0;
}
`;

function abiLayer(): TestLayer {
  const dir = tempDir('mknod-abi');
  mkdirSync(join(dir, 'usr', 'local', 'bin'), { recursive: true });
  writeFileSync(join(dir, 'abi.c'), ABI_PROGRAM);
  execFileSync('gcc', ['-static', '-O1', '-o', join(dir, 'usr', 'local', 'bin', 'abi'), join(dir, 'abi.c')]);
  rmSync(join(dir, 'abi.c'));
  const layer = tarDirectory(dir);
  rmSync(dir, { recursive: true, force: true });
  return layer;
}

/** Device nodes made in user-namespaced runc steps by the mknod supervisor (real runc, real kernel). */
describe.each(TEST_RUNTIMES)('the mknod agent (user-namespaced RUN steps), with %s', (ociRuntime) => {
  let dir: string;
  let runtime: BuildRuntime;
  let base: TestLayer;
  let abi: TestLayer;
  const outcomes: RunOutcome[] = [];

  beforeAll(async () => {
    base = busyboxLayer();
    abi = abiLayer();
    dir = tempDir('mknod');
    // runc enters the step's directory under the state directory as the range's unprivileged root.
    chmodSync(dir, 0o711);
    runtime = new BuildRuntime({
      dataDir: dir,
      step: {
        network: 'none',
        memoryBytes: 256 * 1024 * 1024,
        pids: 256,
        cpus: 0,
        stepTimeoutMs: 60_000,
        allowInsecure: false,
        runtime: ociRuntime,
        userns: 'on',
        // A pool of its own, so the ranges never meet another test's.
        usernsBase: 2 ** 30 + 200 * USERNS_RANGE_SIZE,
        usernsRanges: 8,
        usernsStateDir: `${dir}/userns-state`,
      },
      layerBlob: () => Promise.reject(new Error('no registry in this test')),
      cacheArchives: { get: () => Promise.resolve(null), put: () => Promise.reject(new Error('no cache archives in this test')) },
      secretsDir: `/dev/shm/strata-mknod-test-${process.pid}-${ociRuntime}`,
    });
    await runtime.init();
    expect(runtime.runRuntime).toBe(ociRuntime);
  });
  afterEach(async () => {
    for (const outcome of outcomes.splice(0)) await outcome.release();
  });
  afterAll(async () => {
    await runtime?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const layerRef = (layer: TestLayer) => ({
    descriptor: { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer.diffId as Digest, size: layer.tar.length },
    diffId: layer.diffId as Digest,
    open: () => Readable.from([layer.tar]),
  });

  async function sh(script: string, user = ''): Promise<{ exitCode: number; output: string[]; entries: Record<string, LayerEntry> }> {
    const output: string[] = [];
    const outcome = await runtime.run('tenant', {
      layers: [layerRef(base), layerRef(abi)],
      args: ['/bin/sh', '-c', script],
      env: [],
      user,
      cwd: '/',
      network: 'default',
      line: 1,
      onOutput: (_stream, line) => output.push(line),
      signal: new AbortController().signal,
    });
    outcomes.push(outcome);
    return { exitCode: outcome.exitCode, output, entries: Object.fromEntries(outcome.entries.map((e) => [e.path, e])) };
  }

  it('runs steps in a user namespace with the agent listening', () => {
    expect(runtime.usesUserNamespaces).toBe(true);
    expect(runtime.mknodSupervisor?.pid).toBeGreaterThan(0);
  });

  it('makes character and block devices with the mode (less the umask), rdev and owner the step asked for', async () => {
    const step = await sh(
      'set -e; cat /proc/self/uid_map; mkdir /d; cd /d; umask 027; mknod null c 1 3; mknod -m 640 loop9 b 7 9; ' +
        'chown 1000:50 loop9; mknod big c 300 70000; ls -ln /d',
    );
    expect(step.exitCode).toBe(0);
    // The namespace's root is a range of the pool, not host root.
    const [inside, host, size] = step.output[0]!.trim().split(/\s+/).map(Number);
    expect([inside, size]).toEqual([0, USERNS_RANGE_SIZE]);
    expect(host! >= 2 ** 30 + 200 * USERNS_RANGE_SIZE && host! < 2 ** 30 + 208 * USERNS_RANGE_SIZE).toBe(true);
    const nul = step.entries['d/null']!;
    expect(nul).toMatchObject({ type: 'char-device', mode: 0o640, uid: 0, gid: 0, devmajor: 1, devminor: 3 });
    expect(step.entries['d/loop9']).toMatchObject({ type: 'block-device', mode: 0o640, uid: 1000, gid: 50, devmajor: 7, devminor: 9 });
    // Large device numbers survive the kernel's encoding.
    expect(step.entries['d/big']).toMatchObject({ type: 'char-device', devmajor: 300, devminor: 70000 });
  });

  it('makes nodes with mknodat relative to a directory descriptor and to the cwd, and answers EEXIST and ENOENT', async () => {
    const step = await sh(
      'cd /tmp && mknod rel c 1 5 && mknod rel c 1 5; echo "again=$?"; mknod /nope/x c 1 3; echo "missing=$?"; ' +
        // busybox mknod calls mknodat(AT_FDCWD): a subshell in another directory checks a relative path resolves in the cwd.
        'mkdir -p /tmp/sub && (cd /tmp/sub && mknod ../rel2 c 1 7) && echo ok',
    );
    expect(step.exitCode).toBe(0);
    expect(step.output).toEqual(expect.arrayContaining(['again=1', 'missing=1', 'ok']));
    expect(step.output.join('\n')).toMatch(/File exists/);
    expect(step.output.join('\n')).toMatch(/No such file or directory/);
    expect(step.entries['tmp/rel']).toMatchObject({ type: 'char-device', devmajor: 1, devminor: 5 });
    expect(step.entries['tmp/rel2']).toMatchObject({ type: 'char-device', devmajor: 1, devminor: 7 });
  });

  it('serves mknodat with a directory descriptor and the i386 and x32 syscalls a 64-bit step can make', async () => {
    const step = await sh('mkdir /a /b && abi /a /b');
    expect(step.output).toEqual(['dirfd=ok', 'i386-mknod=ok', 'i386-mknodat=ok', 'x32-mknod=ok']);
    expect(step.entries['b/dirfd-mknodat']).toMatchObject({ type: 'char-device', mode: 0o600, devmajor: 1, devminor: 8 });
    expect(step.entries['a/i386-mknod']).toMatchObject({ type: 'char-device', devmajor: 1, devminor: 9 });
    expect(step.entries['a/i386-mknodat']).toMatchObject({ type: 'block-device', devmajor: 7, devminor: 1 });
    // x32 goes to the agent whether or not this kernel serves x32 (seccomp sees the call first).
    expect(step.entries['a/x32-mknod']).toMatchObject({ type: 'char-device', devmajor: 1, devminor: 3 });
  });

  it('lets FIFOs, regular files and sockets through to the kernel, and gives a setgid directory its group', async () => {
    const step = await sh('set -e; mkfifo /fifo; mknod /fifo2 p; mkdir -m 2775 /g; chown 0:50 /g; mknod /g/dev c 1 3; mkdir /a /b; abi /a /b other');
    expect(step.exitCode).toBe(0);
    expect(step.output.slice(-2)).toEqual(['regular=ok', 'socket=ok']);
    expect(step.entries['a/regular']).toMatchObject({ type: 'file', mode: 0o640, uid: 0 });
    expect(step.entries['fifo']).toMatchObject({ type: 'fifo', uid: 0, gid: 0 });
    expect(step.entries['fifo2']).toMatchObject({ type: 'fifo' });
    expect(step.entries['g/dev']).toMatchObject({ type: 'char-device', uid: 0, gid: 50 });
  });

  it('refuses a step running as a non-root USER (no CAP_MKNOD) with EPERM, as Docker does', async () => {
    const step = await sh('mknod /tmp/n c 1 3; echo "rc=$?"; mkfifo /tmp/f && echo fifo-ok', 'app');
    expect(step.output).toContain('rc=1');
    expect(step.output.join('\n')).toMatch(/Operation not permitted/);
    expect(step.output).toContain('fifo-ok');
    expect(step.entries['tmp/n']).toBeUndefined();
  });

  it('resolves symlinks and .. inside the step root: nothing lands on the host', async () => {
    const marker = `strata-mknod-escape-${process.pid}`;
    const step = await sh(
      `ln -s / /x; mknod /x/tmp/${marker}-a c 1 3; ` +
        `ln -s ../../../../../../../tmp /tmp/up; mknod /tmp/up/${marker}-b c 1 3; ` +
        `cd /tmp && mknod ../../../../../tmp/${marker}-c c 1 3; ` +
        `mknod /proc/1/root/tmp/${marker}-d c 1 3; echo "magic=$?"; ls -l /tmp`,
    );
    expect(step.exitCode).toBe(0);
    for (const name of ['a', 'b', 'c']) expect(step.entries[`tmp/${marker}-${name}`]).toMatchObject({ type: 'char-device', devmajor: 1, devminor: 3 });
    // /proc's magic links are not followed by the agent.
    expect(step.output).toContain('magic=1');
    expect(step.entries[`tmp/${marker}-d`]).toBeUndefined();
    for (const name of ['a', 'b', 'c', 'd']) expect(() => readFileSync(`/tmp/${marker}-${name}`)).toThrow(/ENOENT/);
    expect(execFileSync('sh', ['-c', `ls / /tmp | grep -c ${marker} || true`], { encoding: 'utf8' }).trim()).toBe('0');
  });

  it('makes the host disk device node, which the device cgroup does not let the step open', async () => {
    const step = await sh('mknod /disk b 8 0 && echo made; head -c1 /disk > /dev/null; echo "open=$?"');
    expect(step.output).toContain('made');
    expect(step.output).toContain('open=1');
    expect(step.output.join('\n')).toMatch(/Operation not permitted/);
    expect(step.entries['disk']).toMatchObject({ type: 'block-device', devmajor: 8, devminor: 0 });
  });

  it("lets go of each step's listener once the step is gone (the agent holds only its socket)", async () => {
    expect((await sh('mknod /n c 1 3 && echo ok')).output).toContain('ok');
    const fds = () => readdirSync(`/proc/${runtime.mknodSupervisor!.pid}/fd`).map(Number).sort((a, b) => a - b);
    // The hang-up wakes the agent's poll as the step's last process exits: give it the moment it takes.
    for (let i = 0; i < 100 && fds().length > 4; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(fds()).toEqual([0, 1, 2, 3]);
  });

  it('restarts an agent that died, and fails a step clearly when no agent listens', async () => {
    const agent = runtime.mknodSupervisor!;
    const pid = agent.pid!;
    process.kill(pid, 'SIGKILL');
    while (agent.pid === undefined || agent.pid === pid) await new Promise((resolve) => setTimeout(resolve, 50));
    expect(agent.restartCount).toBe(1);
    expect((await sh('mknod /after-restart c 1 3 && echo ok')).output).toContain('ok');

    await agent.close();
    const failed = sh('mknod /n c 1 3');
    await expect(failed).rejects.toThrow(RunStepError);
    await expect(failed).rejects.toThrow(/seccomp (agent|receiver).*mknod agent, which serves user-namespaced steps, is not running/);
    await agent.start();
    expect((await sh('mknod /again c 1 3 && echo ok')).output).toContain('ok');
  });

  it('listens on a short path when the data directory is too deep for a unix socket', async () => {
    const deep = join(dir, 'd'.repeat(120));
    const agent = new MknodAgent({ dir: deep });
    expect(agent.socketPath).toMatch(/^\/run\/strata-mknod-agent\/[0-9a-f]{16}\/agent\.sock$/);
    await agent.start();
    try {
      expect(lstatSync(agent.socketPath).isSocket()).toBe(true);
      expect(lstatSync(join(agent.socketPath, '..')).mode & 0o777).toBe(0o700);
    } finally {
      await agent.close();
    }
  });
});

import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startWorker } from '../../apps/worker/src/main.js';
import { build, makeDir, type Stack, startStack, tarOf } from '../support/stack.js';

jest.setTimeout(180_000);

const MiB = 1024 * 1024;

describe('a worker whose disk is full', () => {
  let stack: Stack;
  let mountPoint: string;
  let worker: Awaited<ReturnType<typeof startWorker>>;
  const freeBytes = () => {
    const s = statfsSync(mountPoint);
    return s.bavail * s.bsize;
  };
  beforeAll(async () => {
    // The worker's data directory on a 24 MiB tmpfs: a 32 MiB context cannot fit.
    mountPoint = mkdtempSync(path.join(tmpdir(), 'strata-small-disk-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mountPoint]);
    stack = await startStack({ worker: false });
    worker = await startWorker({ ...stack.config, dataDir: path.join(mountPoint, 'worker') });
  });
  afterAll(async () => {
    await worker?.close();
    await stack?.close();
    execFileSync('umount', ['-l', mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('fails the build saying the disk is full, cleans up, and keeps taking builds', async () => {
    const { token } = await stack.tenant('disk-full');
    const before = freeBytes();
    const big = makeDir({ Dockerfile: 'FROM scratch\nCOPY big.bin /big.bin\n', 'big.bin': randomBytes(32 * MiB).toString('latin1') });
    const failed = await build(stack, token, 'repository=big', tarOf(big));
    expect(failed.status).toBe('failed');
    expect(failed.error.message).toMatch(/^the worker ran out of disk space/);
    expect(failed.error.message).not.toMatch(/internal error/);
    // What the failed build wrote is gone again (a few KiB of directories may stay).
    expect(before - freeBytes()).toBeLessThan(MiB);
    const small = await build(stack, token, 'repository=small&tag=1', tarOf(makeDir({ Dockerfile: 'FROM scratch\nCOPY a /a\n', a: 'a\n' })));
    expect(small.status).toBe('succeeded');
  });
});

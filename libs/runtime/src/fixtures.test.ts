// Test fixtures shared by the runtime specs (not a spec itself: jest runs *.spec.ts only).
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';

export interface TestLayer {
  diffId: string;
  tar: Buffer;
}

/** A tar of `dir` as GNU tar writes it (numeric owners), with its diff ID. */
export function tarDirectory(dir: string, gzip = false): TestLayer {
  const tar = execFileSync('tar', ['-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-cf', '-', '.'], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return { diffId: `sha256:${createHash('sha256').update(tar).digest('hex')}`, tar: gzip ? gzipSync(tar) : tar };
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `strata-${prefix}-`));
}

/**
 * A busybox root filesystem as a layer: /bin/busybox from Debian's busybox-static with its applet
 * links, root and an `app` user (1000), and a group `staff` (50) that `app` belongs to.
 */
export function busyboxLayer(): TestLayer {
  const dir = tempDir('busybox');
  for (const sub of ['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin']) mkdirSync(join(dir, sub));
  copyFileSync('/bin/busybox', join(dir, 'bin', 'busybox'));
  chmodSync(join(dir, 'bin', 'busybox'), 0o755);
  execFileSync('chroot', [dir, '/bin/busybox', '--install', '-s']);
  for (const sub of ['etc', 'root', 'home', 'var']) mkdirSync(join(dir, sub), { mode: 0o755 });
  mkdirSync(join(dir, 'tmp'));
  chmodSync(join(dir, 'tmp'), 0o1777);
  mkdirSync(join(dir, 'home', 'app'));
  chownSync(join(dir, 'home', 'app'), 1000, 1000);
  writeFileSync(join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n');
  writeFileSync(join(dir, 'etc', 'group'), 'root:x:0:\nstaff:x:50:app\napp:x:1000:\n');
  return tarDirectory(dir);
}

/** A layer source over in-memory layers, counting how often each was asked for. */
export function layerSource(layers: TestLayer[]): { source: (diffId: string) => Promise<Readable>; calls: Map<string, number> } {
  const byId = new Map(layers.map((layer) => [layer.diffId, layer]));
  const calls = new Map<string, number>();
  return {
    calls,
    source: async (diffId) => {
      calls.set(diffId, (calls.get(diffId) ?? 0) + 1);
      const layer = byId.get(diffId);
      if (!layer) throw new Error(`no test layer ${diffId}`);
      return Readable.from([layer.tar]);
    },
  };
}

/**
 * The OCI runtimes the runtime's suites run under: runc, and crun where it is installed (CI
 * installs both; `npm test` also prepares a hybrid host's cgroups for crun, docs/adr/0038).
 * STRATA_TEST_RUNTIMES (comma-separated) narrows the list.
 */
export const TEST_RUNTIMES: ('runc' | 'crun')[] = (['runc', 'crun'] as const).filter(
  (runtime) =>
    (process.env.STRATA_TEST_RUNTIMES === undefined || process.env.STRATA_TEST_RUNTIMES.split(',').includes(runtime)) &&
    spawnSync(runtime, ['--version'], { stdio: 'ignore' }).status === 0,
);

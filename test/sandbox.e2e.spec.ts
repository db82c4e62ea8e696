import { jest } from '@jest/globals';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { importBusybox } from './support/images.js';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(240_000);

// What a hostile tenant's RUN step tries against the worker and the other tenants on it (ADR 0022).
// test/support/hostile.c makes each attempt and prints its outcome; the step's output becomes a file
// of the image, read back through the API as a user would.

/** What each attempt must end with in a sandboxed runc step: the errno name, or "empty" for a masked file. */
const REFUSED_IN_RUNC: Record<string, string> = {
  'mount-tmpfs': 'EPERM',
  'mount-proc': 'EPERM',
  'mount-cgroup': 'EPERM',
  init_module: 'EPERM',
  finit_module: 'EPERM',
  // The worker is not in the step's pid namespace: there is nothing to attach to or signal.
  'ptrace-worker': 'ESRCH',
  'kill-worker': 'ESRCH',
  // /proc/1 is the step's own first process, whose root is the step's root.
  'host-marker-via-proc-1-root': 'ENOENT',
  'cgroupfs-write-procs': 'EROFS',
  'cgroupfs-write-limit': 'EROFS',
  keyctl: 'EPERM',
  add_key: 'EPERM',
  bpf: 'EPERM',
  'unshare-user': 'EPERM',
  'unshare-mount': 'EPERM',
  'clone-newuser': 'EPERM',
  setns: 'EPERM',
  'socket-raw-icmp': 'EPERM',
  'socket-packet': 'EPERM',
  // Making the node is allowed (as in Docker); opening it is not: the device cgroup refuses.
  'mknod-host-disk': 'ok',
  'open-host-disk': 'EPERM',
  // Read-only in the step; a kernel built without the file (this one may be) gives ENOENT, never a write.
  'sysrq-trigger': existsSync('/proc/sysrq-trigger') ? 'EROFS' : 'ENOENT',
  'proc-sys-write': 'EROFS',
  'read-kcore': existsSync('/proc/kcore') ? 'empty' : 'ENOENT',
  'read-proc-keys': 'empty',
  reboot: 'EPERM',
  open_by_handle_at: 'EPERM',
  settimeofday: 'EPERM',
  // What ordinary programs need still works.
  // Without CAP_NET_RAW an ICMP echo still goes out over a datagram socket (ping_group_range).
  'ping-icmp-datagram': 'ok',
  fork: 'ok',
  chroot: 'ok',
};

const ORDINARY = new Set(['ping-icmp-datagram', 'fork', 'chroot']);

function outcomes(text: string): Record<string, string> {
  return Object.fromEntries(
    text
      .trim()
      .split('\n')
      .map((line) => line.split(' ') as [string, string]),
  );
}

/**
 * In a user namespace the worker's mknod agent makes the device node (the kernel alone would refuse:
 * no CAP_MKNOD over the host), and the device cgroup still refuses to open it, as without one.
 */
const REFUSED_IN_RUNC_USERNS: Record<string, string> = {
  ...REFUSED_IN_RUNC,
  // Host root's files (cgroupfs, /proc/sys) are nobody's in the namespace: refused before the read-only mount is even asked.
  'cgroupfs-write-procs': 'EACCES',
  'cgroupfs-write-limit': 'EACCES',
  'proc-sys-write': 'EACCES',
};

/** crun runs the same sandbox as runc (the same spec, seccomp profile and capabilities): the same answers (docs/adr/0038). */
const CRUN = spawnSync('crun', ['--version'], { stdio: 'ignore' }).status === 0;

describe.each<{ runtime: string; env: Record<string, string> }>([
  { runtime: 'runc', env: { STRATA_RUN_RUNTIME: 'runc', STRATA_RUN_USERNS: '0' } },
  { runtime: 'runc-userns', env: { STRATA_RUN_RUNTIME: 'runc', STRATA_RUN_USERNS: '1' } },
  ...(CRUN
    ? [
        { runtime: 'crun', env: { STRATA_RUN_RUNTIME: 'crun', STRATA_RUN_USERNS: '0' } },
        { runtime: 'crun-userns', env: { STRATA_RUN_RUNTIME: 'crun', STRATA_RUN_USERNS: '1' } },
      ]
    : []),
  { runtime: 'runsc', env: { STRATA_RUN_RUNTIME: 'runsc' } },
])('a hostile RUN step in $runtime', ({ runtime, env }) => {
  let stack: Stack;
  let token: string;
  let work: string;
  const marker = path.join(tmpdir(), `strata-host-marker-${process.pid}-${runtime}`);

  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_RUN_ALLOW_INSECURE: 'true', ...env } });
    ({ token } = await stack.tenant(`sandbox-${runtime}`));
    await importBusybox(stack, token);
    work = mkdtempSync(path.join(tmpdir(), 'strata-sandbox-'));
    writeFileSync(marker, 'the worker host\n');
  });
  afterAll(async () => {
    await stack.close();
    rmSync(work, { recursive: true, force: true });
    rmSync(marker, { force: true });
  });

  /** The image's root filesystem, unpacked by umoci from the OCI archive the API serves. */
  async function rootfsOf(repo: string): Promise<string> {
    const res = await fetch(`${stack.url}/v1/repositories/${repo}/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const dir = mkdtempSync(path.join(work, 'image-'));
    writeFileSync(path.join(dir, 'image.tar'), Buffer.from(await res.arrayBuffer()));
    mkdirSync(path.join(dir, 'layout'));
    execFileSync('tar', ['-xf', path.join(dir, 'image.tar'), '-C', path.join(dir, 'layout')]);
    execFileSync('umoci', ['unpack', '--image', `${path.join(dir, 'layout')}:1`, path.join(dir, 'bundle')], { stdio: 'pipe' });
    return path.join(dir, 'bundle', 'rootfs');
  }

  it('is refused each escape and each shared-kernel operation, while ordinary operations work', async () => {
    const context = makeDir({
      Dockerfile: [
        'FROM busybox:1',
        // The worker runs in this process: its pid is the one a step would attack.
        `RUN --mount=type=bind,source=hostile,target=/hostile /hostile all ${process.pid} ${marker} > /hostile-results`,
        'RUN grep -E "^(Seccomp|NoNewPrivs|CapEff):" /proc/self/status > /status-sandboxed',
        'RUN --security=insecure grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status > /status-insecure',
        '',
      ].join('\n'),
    });
    execFileSync('gcc', ['-static', '-O2', '-o', path.join(context, 'hostile'), path.join(import.meta.dirname, 'support/hostile.c')]);

    const result = await build(stack, token, 'repository=hostile&tag=1', tarOf(context));
    expect(result.error).toBeNull();
    const root = await rootfsOf('hostile');
    const seen = outcomes(readFileSync(path.join(root, 'hostile-results'), 'utf8'));
    expect(Object.keys(seen).sort()).toEqual(Object.keys(REFUSED_IN_RUNC).sort());
    if (runtime !== 'runsc') {
      expect(seen).toEqual(runtime.endsWith('-userns') ? REFUSED_IN_RUNC_USERNS : REFUSED_IN_RUNC);
      expect(readFileSync(path.join(root, 'status-sandboxed'), 'utf8')).toBe('CapEff:\t00000000a80405fb\nNoNewPrivs:\t1\nSeccomp:\t2\n');
      // `RUN --security=insecure` runs unconfined, as BuildKit runs it.
      expect(readFileSync(path.join(root, 'status-insecure'), 'utf8')).toBe('NoNewPrivs:\t0\nSeccomp:\t0\n');
    } else {
      // gVisor answers from its own kernel: the errno may differ, but nothing reaches the host's.
      for (const [name, outcome] of Object.entries(seen)) {
        if (ORDINARY.has(name)) expect(`${name} ${outcome}`).toBe(`${name} ok`);
        else if (name === 'mknod-host-disk') continue;
        else expect(`${name} ${outcome}`).not.toBe(`${name} ok`);
      }
    }
    // The host's disk, the worker and the marker are untouched.
    expect(readFileSync(marker, 'utf8')).toBe('the worker host\n');
  });

  it('still runs the ordinary operations of a build: users, chown, setuid binaries, device nodes', async () => {
    const context = makeDir({
      Dockerfile: [
        'FROM busybox:1',
        'RUN echo "bob:x:2000:2000::/home/bob:/bin/sh" >> /etc/passwd && echo "bob:x:2000:" >> /etc/group && mkdir /data && echo x > /data/file && chown -R bob:bob /data && chmod 640 /data/file',
        // busybox picks its applet by name: this `id` is busybox, setuid root.
        'RUN mkdir -p /opt/suid && cp /bin/busybox /opt/suid/id && chmod 4755 /opt/suid/id',
        // gVisor makes no device nodes (a runtime difference ADR 0022 records); in a user namespace the mknod agent makes them.
        runtime === 'runsc' ? 'RUN ! mknod /dev-null-copy c 1 3' : 'RUN mknod /dev-null-copy c 1 3',
        // root may become anyone; the setuid bit cannot raise bob back to root (no-new-privileges).
        'RUN su bob -c "id -u; /opt/suid/id -u" > /su-out',
        '',
      ].join('\n'),
    });
    const result = await build(stack, token, 'repository=ordinary&tag=1', tarOf(context));
    expect(result.error).toBeNull();
    const root = await rootfsOf('ordinary');
    const data = statSync(path.join(root, 'data', 'file'));
    expect([data.uid, data.gid, data.mode & 0o7777]).toEqual([2000, 2000, 0o640]);
    expect(statSync(path.join(root, 'opt', 'suid', 'id')).mode & 0o7777).toBe(0o4755);
    if (runtime !== 'runsc') {
      const node = statSync(path.join(root, 'dev-null-copy'));
      expect([node.isCharacterDevice(), node.rdev, node.uid, node.gid]).toEqual([true, statSync('/dev/null').rdev, 0, 0]);
    }
    expect(readFileSync(path.join(root, 'su-out'), 'utf8')).toBe('2000\n2000\n');
  });
});

describe('a RUN step in a user namespace (runc, STRATA_RUN_USERNS=1)', () => {
  let stack: Stack;
  let tokens: string[];
  const base = 2 ** 30;

  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_RUN_USERNS: '1', STRATA_USERNS_BASE: String(base) } });
    tokens = [];
    for (const name of ['userns-a', 'userns-b']) {
      const { token } = await stack.tenant(name);
      await importBusybox(stack, token);
      tokens.push(token);
    }
  });
  afterAll(async () => {
    await stack.close();
  });

  async function fileOf(token: string, repo: string, file: string): Promise<string> {
    const res = await fetch(`${stack.url}/v1/repositories/${repo}/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const dir = mkdtempSync(path.join(tmpdir(), 'strata-userns-'));
    try {
      writeFileSync(path.join(dir, 'image.tar'), Buffer.from(await res.arrayBuffer()));
      mkdirSync(path.join(dir, 'layout'));
      execFileSync('tar', ['-xf', path.join(dir, 'image.tar'), '-C', path.join(dir, 'layout')]);
      execFileSync('umoci', ['unpack', '--image', `${path.join(dir, 'layout')}:1`, path.join(dir, 'bundle')], { stdio: 'pipe' });
      const target = path.join(dir, 'bundle', 'rootfs', file);
      const stats = statSync(target);
      return `${stats.uid}:${stats.gid} ${(stats.mode & 0o7777).toString(8)} ${readFileSync(target, 'utf8')}`;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  /** The host's view of a process whose command line holds `tag`: its real, effective, saved and fs uids. */
  function hostUidsOf(tag: string): string | undefined {
    for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      try {
        if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(tag)) continue;
        return /^Uid:\s*(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]?.split(/\s+/).join(' ');
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  }

  it("is root inside and an unprivileged host range outside, while the layer keeps the owners the step wrote", async () => {
    const tag = `7.${process.pid}`;
    const context = makeDir({
      Dockerfile: [
        'FROM busybox:1',
        // One step: every step claims its own range.
        `RUN cat /proc/self/uid_map /proc/self/gid_map > /maps && id -u > /id && sleep ${tag}`,
        'RUN echo mine > /mine && echo bob > /bob && chown 1000:1000 /bob && chmod 4750 /bob',
        // The base image's files are root's in the step, and root may change them (copy-up through the idmapped layer).
        'RUN echo "bob:x:1000:1000::/:/bin/sh" >> /etc/passwd',
        '',
      ].join('\n'),
    });
    const submitted = api(stack, tokens[0]!, 'POST', '/v1/builds?repository=userns&tag=1', tarOf(context), 'application/x-tar');
    let seenFromHost: string | undefined;
    for (const until = Date.now() + 60_000; seenFromHost === undefined && Date.now() < until; ) {
      seenFromHost = hostUidsOf(tag);
      await new Promise((r) => setTimeout(r, 50));
    }
    const res = await submitted;
    const result = await waitForBuild(stack, tokens[0]!, res.json.id);
    expect(result.error).toBeNull();

    const [uidMap, gidMap] = (await fileOf(tokens[0]!, 'userns', 'maps')).replace(/^\S+ \S+ /, '').trim().split('\n').map((l) => l.trim().split(/\s+/).map(Number));
    expect(uidMap![0]).toBe(0);
    expect(uidMap![1]! >= base && (uidMap![1]! - base) % 65536 === 0).toBe(true);
    expect(uidMap![2]).toBe(65536);
    expect(gidMap).toEqual(uidMap);
    expect(await fileOf(tokens[0]!, 'userns', 'id')).toBe('0:0 644 0\n');
    // The step's root, seen from the host while it runs: uid hostId in every slot, not 0.
    const host = uidMap![1]!;
    expect(seenFromHost).toBe(`${host} ${host} ${host} ${host}`);
    expect(await fileOf(tokens[0]!, 'userns', 'mine')).toBe('0:0 644 mine\n');
    expect(await fileOf(tokens[0]!, 'userns', 'bob')).toBe('1000:1000 4750 bob\n');
    expect(await fileOf(tokens[0]!, 'userns', 'etc/passwd')).toMatch(/^0:0 644 root:x:0:0:[\s\S]*bob:x:1000:1000::\/:\/bin\/sh\n$/);
  });

  it('gives two builds that run at once, on two workers of the host, disjoint host ranges', async () => {
    // A second worker (its own stack) with the same pool: ranges are claimed host-wide.
    const other = await startStack({ env: { STRATA_RUN_USERNS: '1', STRATA_USERNS_BASE: String(base) } });
    try {
      const { token } = await other.tenant('userns-c');
      await importBusybox(other, token);
      const tags = [`9.${process.pid}1`, `9.${process.pid}2`];
      const submit = (s: Stack, t: string, tag: string) =>
        api(s, t, 'POST', '/v1/builds?repository=both&tag=1', tarOf(makeDir({ Dockerfile: `FROM busybox:1\nRUN sleep ${tag}\n` })), 'application/x-tar');
      const submitted = [submit(stack, tokens[1]!, tags[0]!), submit(other, token, tags[1]!)];
      // Seen from the host while both steps run: each one's uids.
      let both: Array<string | undefined> = [];
      for (const until = Date.now() + 60_000; Date.now() < until; ) {
        both = tags.map(hostUidsOf);
        if (both.every((uids) => uids !== undefined)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      const ids = await Promise.all(submitted);
      const results = await Promise.all([waitForBuild(stack, tokens[1]!, ids[0]!.json.id), waitForBuild(other, token, ids[1]!.json.id)]);
      expect(results.map((r) => r.error)).toEqual([null, null]);
      expect(both.every((uids) => uids !== undefined)).toBe(true);
      const hosts = both.map((uids) => Number(uids!.split(' ')[0]));
      for (const h of hosts) expect(h >= base && (h - base) % 65536 === 0).toBe(true);
      expect(Math.abs(hosts[0]! - hosts[1]!)).toBeGreaterThanOrEqual(65536);
    } finally {
      await other.close();
    }
  });
});

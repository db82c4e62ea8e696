import { jest } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { importBusybox } from './support/images.js';
import { build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(180_000);

// RUN as BuildKit runs it beyond the plain command: heredocs run by any interpreter, binds of
// images named by reference, read-write context binds whose writes are thrown away.
describe('RUN flags in runc containers', () => {
  let stack: Stack;
  let token: string;

  const buildDir = (repo: string, files: Parameters<typeof makeDir>[0]) => build(stack, token, `repository=${repo}&tag=1`, tarOf(makeDir(files)));
  /** The image's root filesystem, unpacked by umoci from the OCI archive the API serves. */
  const rootfsOf = async (repo: string): Promise<string> => {
    const res = await fetch(`${stack.url}/v1/repositories/${repo}/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const work = mkdtempSync(path.join(tmpdir(), 'strata-run-flags-'));
    writeFileSync(path.join(work, 'image.tar'), Buffer.from(await res.arrayBuffer()));
    mkdirSync(path.join(work, 'layout'));
    execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', path.join(work, 'layout')]);
    execFileSync('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:1`, path.join(work, 'bundle')], { stdio: 'pipe' });
    return path.join(work, 'bundle', 'rootfs');
  };

  beforeAll(async () => {
    stack = await startStack();
    ({ token } = await stack.tenant('runflags'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  it('runs heredocs with the interpreter the #! line names, and feeds heredocs to programs', async () => {
    const dockerfile = [
      'FROM busybox:1',
      // A non-shell interpreter of our own: the kernel runs it with the script's path.
      "RUN printf '#!/bin/sh\\ntr a-z A-Z < \"$1\" > /by-upper\\n' > /usr/local-upper && chmod 755 /usr/local-upper",
      'RUN <<EOF',
      '#!/usr/bin/awk -f',
      'BEGIN { print "awk ran" > "/by-awk" }',
      'EOF',
      'RUN <<SCRIPT',
      '#!/usr/local-upper',
      'shouted text',
      'SCRIPT',
      'RUN <<EOF awk \'{ print "stdin: " $0 }\' > /by-stdin',
      'one',
      'EOF',
      'RUN sh <<EOF > /by-sh',
      'echo "sh read $((6 * 7))"',
      'EOF',
      'RUN ls -A /dev/pipes > /pipes-seen 2>&1 || echo none > /pipes-seen',
      '',
    ].join('\n');
    const result = await buildDir('runflags/heredocs', { Dockerfile: dockerfile });
    expect(result.error).toBeNull();
    const root = await rootfsOf('runflags/heredocs');
    expect(readFileSync(path.join(root, 'by-awk'), 'utf8')).toBe('awk ran\n');
    // The script is the file itself: its first line is passed to the interpreter too.
    expect(readFileSync(path.join(root, 'by-upper'), 'utf8')).toBe('#!/USR/LOCAL-UPPER\nSHOUTED TEXT\n');
    expect(readFileSync(path.join(root, 'by-stdin'), 'utf8')).toBe('stdin: one\n');
    expect(readFileSync(path.join(root, 'by-sh'), 'utf8')).toBe('sh read 42\n');
    // The script files were mounted for their steps only: none is in the image.
    expect(readFileSync(path.join(root, 'pipes-seen'), 'utf8')).toBe('none\n');
    expect(existsSync(path.join(root, 'dev/pipes'))).toBe(false);
  });

  it('copies and binds files from an image named like FROM (a short name is the tenant repository)', async () => {
    const tools = await buildDir('tools', { Dockerfile: 'FROM busybox:1\nRUN mkdir -p /opt/tool && echo "tool v1" > /opt/tool/VERSION\n' });
    expect(tools.error).toBeNull();
    const dockerfile = [
      'FROM busybox:1',
      'COPY --from=tools:1 /opt/tool/VERSION /copied',
      'RUN --mount=type=bind,from=tools:1,source=/opt/tool,target=/mnt/tool cat /mnt/tool/VERSION > /bound',
      '',
    ].join('\n');
    const result = await buildDir('runflags/from-image', { Dockerfile: dockerfile });
    expect(result.error).toBeNull();
    const root = await rootfsOf('runflags/from-image');
    expect(readFileSync(path.join(root, 'copied'), 'utf8')).toBe('tool v1\n');
    expect(readFileSync(path.join(root, 'bound'), 'utf8')).toBe('tool v1\n');
    expect(existsSync(path.join(root, 'mnt/tool/VERSION'))).toBe(false);

    const missing = await buildDir('runflags/from-missing', { Dockerfile: 'FROM busybox:1\n\nCOPY --from=no-such-tools:1 /x /x\n' });
    expect(missing.status).toBe('failed');
    expect(missing.error).toEqual({ line: 3, message: expect.stringMatching(/^Dockerfile:3: COPY: --from=no-such-tools:1: repository "no-such-tools" does not exist/) });
  });

  it('lets a command write to a read-write context bind, and throws the writes away', async () => {
    const dockerfile = [
      'FROM busybox:1',
      'RUN --mount=type=bind,source=data,target=/d,rw echo changed > /d/file.txt && echo new > /d/new.txt && cat /d/file.txt /d/new.txt > /seen-rw',
      'RUN --mount=type=bind,source=data,target=/d cat /d/file.txt > /seen-after && ls /d > /listed-after',
      '',
    ].join('\n');
    const result = await buildDir('runflags/rw', { Dockerfile: dockerfile, 'data/file.txt': 'original\n' });
    expect(result.error).toBeNull();
    const root = await rootfsOf('runflags/rw');
    expect(readFileSync(path.join(root, 'seen-rw'), 'utf8')).toBe('changed\nnew\n');
    expect(readFileSync(path.join(root, 'seen-after'), 'utf8')).toBe('original\n');
    expect(readFileSync(path.join(root, 'listed-after'), 'utf8')).toBe('file.txt\n');
    expect(existsSync(path.join(root, 'd'))).toBe(false);
  });

  describe('RUN --mount=type=ssh', () => {
    const work = mkdtempSync(path.join(tmpdir(), 'strata-ssh-'));
    const keyFile = path.join(work, 'id_ed25519');
    const submit = (repo: string, dir: string, keys: Array<[string, Buffer]>) =>
      fetch(`${stack.url}/v1/builds?repository=${repo}&tag=1`, {
        method: 'POST',
        headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/x-tar'], ...keys.map(([id, key]): [string, string] => ['strata-build-ssh', `id=${id},src=${key.toString('base64')}`])],
        body: tarOf(dir),
      });
    /** A context with the worker's own ssh-add and the libraries it loads, run through their loader (busybox has no ssh client). */
    const contextWithSshAdd = (dockerfile: string): string => {
      const dir = makeDir({ Dockerfile: dockerfile });
      mkdirSync(path.join(dir, 'sshtools'));
      const libs = execFileSync('ldd', ['/usr/bin/ssh-add'], { encoding: 'utf8' }).split('\n').flatMap((l) => /(\/\S+\.so[.\d]*)/.exec(l)?.[1] ?? []);
      for (const file of ['/usr/bin/ssh-add', ...libs]) copyFileSync(file, path.join(dir, 'sshtools', path.basename(file)));
      return dir;
    };

    beforeAll(() => {
      execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'deploy@strata-test', '-f', keyFile]);
    });

    it('gives the step an agent holding the keys sent with the build, and keeps them out of the image and the database', async () => {
      const fingerprint = execFileSync('ssh-keygen', ['-l', '-f', `${keyFile}.pub`], { encoding: 'utf8' }).trim();
      const dockerfile = [
        'FROM busybox:1',
        'RUN --mount=type=ssh --mount=type=bind,source=sshtools,target=/opt/ssh /opt/ssh/ld-linux-x86-64.so.2 --library-path /opt/ssh /opt/ssh/ssh-add -l > /agent-keys && echo "$SSH_AUTH_SOCK" > /agent-sock',
        'RUN --mount=type=ssh,id=deploy,target=/tmp/deploy.sock,mode=0666 stat -c "%a %u" /tmp/deploy.sock > /deploy-sock && test ! -e /run/buildkit',
        '',
      ].join('\n');
      const key = readFileSync(keyFile);
      const res = await submit('runflags/ssh', contextWithSshAdd(dockerfile), [['default', key], ['deploy', key]]);
      expect(res.status).toBe(202);
      const { id } = (await res.json()) as { id: string };
      const sealed = (await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed;
      if (sealed) expect(Buffer.from(sealed).includes(key)).toBe(false);
      const result = await waitForBuild(stack, token, id);
      expect(result.error).toBeNull();
      expect((await stack.prisma.build.findUniqueOrThrow({ where: { id } })).secretsSealed).toBeNull();
      const root = await rootfsOf('runflags/ssh');
      expect(readFileSync(path.join(root, 'agent-keys'), 'utf8').trim()).toBe(fingerprint);
      expect(readFileSync(path.join(root, 'agent-sock'), 'utf8')).toBe('/run/buildkit/ssh_agent.0\n');
      expect(readFileSync(path.join(root, 'deploy-sock'), 'utf8')).toBe('666 0\n');
      expect(existsSync(path.join(root, 'run/buildkit'))).toBe(false);
      const keyBody = key.toString('utf8').split('\n')[1];
      expect(execFileSync('sh', ['-c', 'grep -rlF -e "$0" "$1" || true', keyBody, root], { encoding: 'utf8' })).toBe('');
    });

    it('fails the build at the line of a required key that was not sent, and refuses a header that is no key', async () => {
      const res = await submit('runflags/ssh-missing', makeDir({ Dockerfile: 'FROM busybox:1\n\nRUN --mount=type=ssh,id=deploy,required true\n' }), [['default', readFileSync(keyFile)]]);
      expect(res.status).toBe(202);
      const result = await waitForBuild(stack, token, ((await res.json()) as { id: string }).id);
      expect(result.status).toBe('failed');
      expect(result.error).toEqual({
        line: 3,
        message: 'Dockerfile:3: RUN: --mount=type=ssh,id=deploy,required: the SSH key "deploy" is required but was not sent with the build (strata build --ssh deploy=<private key file>)',
      });

      const bad = await submit('runflags/ssh-bad', makeDir({ Dockerfile: 'FROM busybox:1\n' }), [['default', Buffer.from('not a key')]]);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { message: string }).message).toBe('Strata-Build-SSH: the key "default" is not a PEM or OpenSSH private key.');
    });
  });

  it('refuses RUN --security=insecure at its line on a deployment that does not allow it', async () => {
    const result = await buildDir('runflags/insecure-refused', { Dockerfile: 'FROM busybox:1\n\nRUN --security=insecure true\n' });
    expect(result.status).toBe('failed');
    expect(result.error).toEqual({
      line: 3,
      message: 'Dockerfile:3: RUN --security=insecure is not allowed on this deployment (STRATA_RUN_ALLOW_INSECURE is not true); remove the flag or ask the operator to allow privileged steps',
    });
  });
});

describe('RUN --security=insecure where the operator allows it (STRATA_RUN_ALLOW_INSECURE=true)', () => {
  let stack: Stack;
  let token: string;

  beforeAll(async () => {
    stack = await startStack({ env: { STRATA_RUN_ALLOW_INSECURE: 'true' } });
    ({ token } = await stack.tenant('insecure'));
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  it('runs the step privileged (the worker\'s capabilities, /sys writable) and the next one sandboxed again', async () => {
    const dockerfile = [
      'FROM busybox:1',
      'RUN --security=insecure grep CapEff /proc/self/status > /caps-insecure && grep " /sys " /proc/mounts > /sys-insecure',
      'RUN grep CapEff /proc/self/status > /caps-sandbox && grep " /sys " /proc/mounts > /sys-sandbox',
      // A step the sandbox forbids: mounting a filesystem needs CAP_SYS_ADMIN.
      'RUN --security=insecure mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && umount /mnt/t && echo mounted > /mount-insecure',
      '',
    ].join('\n');
    const result = await build(stack, token, 'repository=insecure/app&tag=1', tarOf(makeDir({ Dockerfile: dockerfile })));
    expect(result.error).toBeNull();
    const res = await fetch(`${stack.url}/v1/repositories/insecure/app/tags/1/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    const work = mkdtempSync(path.join(tmpdir(), 'strata-insecure-'));
    writeFileSync(path.join(work, 'image.tar'), Buffer.from(await res.arrayBuffer()));
    mkdirSync(path.join(work, 'layout'));
    execFileSync('tar', ['-xf', path.join(work, 'image.tar'), '-C', path.join(work, 'layout')]);
    execFileSync('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:1`, path.join(work, 'bundle')], { stdio: 'pipe' });
    const root = path.join(work, 'bundle', 'rootfs');
    const workerCaps = /CapBnd:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1];
    expect(readFileSync(path.join(root, 'caps-insecure'), 'utf8').trim()).toBe(`CapEff:\t${workerCaps}`);
    // Docker's default set (0x00000000a80425fb) without CAP_NET_RAW (ADR 0022).
    expect(readFileSync(path.join(root, 'caps-sandbox'), 'utf8').trim()).toBe('CapEff:\t00000000a80405fb');
    expect(readFileSync(path.join(root, 'sys-insecure'), 'utf8')).toMatch(/ sysfs rw,/);
    expect(readFileSync(path.join(root, 'sys-sandbox'), 'utf8')).toMatch(/ sysfs ro,/);
    expect(readFileSync(path.join(root, 'mount-insecure'), 'utf8')).toBe('mounted\n');
  });
});

// ADD <git repository> (issue 12): repositories served by a git host the test starts on 127.0.0.1
// (git http-backend): the default branch, a branch, an annotated tag, a commit, a subdirectory,
// --keep-git-dir, --chown/--chmod, a private repository with the GIT_AUTH_TOKEN secret, the cache
// keyed by the commit a ref resolves to, and clear failures naming the Dockerfile line.
import { jest } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type GitServer, startGitServer, WorkingCopy } from './support/git-server.js';
import { type ImageFile, imageFiles } from './support/image-files.js';
import { startSshGitServer } from './support/ssh-git-server.js';
import { closedPort, portOpen } from './support/ports.js';
import { api, build, makeDir, type Stack, startStack, tarOf, waitForBuild } from './support/stack.js';

jest.setTimeout(180_000);

const context = (dockerfile: string) => tarOf(makeDir({ Dockerfile: dockerfile }));
const commitTime = (work: WorkingCopy, rev: string) => Number(work.git('log', '-1', '--format=%ct', rev));

/** Writes the files of `prefix/` in the image into a directory, so git can look at a kept repository. */
function materialize(files: Map<string, ImageFile>, prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'strata-kept-'));
  for (const [p, f] of [...files].filter(([p]) => p.startsWith(`${prefix}/`)).sort(([a], [b]) => a.localeCompare(b))) {
    const at = path.join(dir, p.slice(prefix.length + 1));
    if (f.type === 'directory') mkdirSync(at, { recursive: true });
    else if (f.type === 'symlink') symlinkSync(f.linkname!, at);
    else {
      mkdirSync(path.dirname(at), { recursive: true });
      writeFileSync(at, f.content!);
      chmodSync(at, f.mode);
    }
  }
  return dir;
}

describe('ADD from git repositories, private sources allowed for 127.0.0.0/8', () => {
  let stack: Stack;
  let token: string;
  let git: GitServer;
  let privateGit: GitServer;
  let work: WorkingCopy;
  const gitToken = `glpat-${'k3y'.repeat(8)}`;
  const shas: Record<string, string> = {};

  beforeAll(async () => {
    git = await startGitServer();
    privateGit = await startGitServer({ auth: { username: 'x-access-token', password: gitToken } });
    stack = await startStack({ env: { STRATA_ALLOW_PRIVATE_SOURCES: '127.0.0.0/8', STRATA_ADD_URL_MAX_BYTES: String(1024 * 1024) } });
    ({ token } = await stack.tenant('addgit'));

    git.createRepo('lib');
    work = new WorkingCopy(git.pushUrl('lib'));
    shas.v1 = work.commit({ 'README.md': 'v1\n', 'bin/tool.sh': '#!/bin/sh\necho tool\n', 'docs/guide.md': 'guide v1\n' }, 'first');
    chmodSync(path.join(work.dir, 'bin/tool.sh'), 0o755);
    symlinkSync('README.md', path.join(work.dir, 'link'));
    shas.v1 = work.commit({}, 'executable tool and a link');
    work.git('tag', '-a', 'v1', '-m', 'release v1');
    work.git('checkout', '-q', '-b', 'feature');
    shas.feature = work.commit({ 'docs/guide.md': 'guide of the feature\n', 'feature.txt': 'feature\n' }, 'feature');
    work.git('checkout', '-q', 'main');
    shas.v2 = work.commit({ 'README.md': 'v2\n' }, 'second');
    await work.push('main');
    await work.push('feature');
    await work.push('v1');

    git.createRepo('big');
    const big = new WorkingCopy(git.pushUrl('big'));
    big.commit({ 'big.txt': 'x'.repeat(2 * 1024 * 1024) }, 'too big');
    await big.push('main');
    big.close();

    privateGit.createRepo('private');
    const priv = new WorkingCopy(privateGit.pushUrl('private'));
    shas.private = priv.commit({ 'secret-code.txt': 'private code\n' }, 'private');
    await priv.push('main');
    priv.close();
  });
  afterAll(async () => {
    work?.close();
    await stack?.close();
    await git?.close();
    await privateGit?.close();
  });

  it('adds the default branch, a branch, an annotated tag, a commit and a subdirectory as BuildKit does: root-owned, modes from git, the commit time as mtime, no .git', async () => {
    const url = git.url('lib');
    const dockerfile = [
      'FROM scratch',
      `ADD ${url} /default/`,
      `ADD ${url}#v1 /tag`,
      `ADD ${url}#${shas.v1} /sha`,
      `ADD ${url}#feature:docs /sub`,
      `ADD --chown=10:20 --chmod=640 ${url}?branch=feature /owned`,
      '',
    ].join('\n');
    const result = await build(stack, token, 'repository=addgit&tag=latest', context(dockerfile));
    expect([result.status, result.error]).toEqual(['succeeded', null]);
    const image = await imageFiles(stack, token, 'addgit');
    const t2 = commitTime(work, shas.v2);
    expect(image.get('default/README.md')).toMatchObject({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t2 });
    expect(image.get('default/README.md')?.content?.toString()).toBe('v2\n');
    expect(image.get('default/bin/tool.sh')).toMatchObject({ type: 'file', mode: 0o755, mtime: t2 });
    expect(image.get('default/bin')).toMatchObject({ type: 'directory', mode: 0o755, uid: 0 });
    expect(image.get('default/link')).toMatchObject({ type: 'symlink', linkname: 'README.md' });
    expect([...image.keys()].filter((p) => p.includes('.git'))).toEqual([]);
    expect(image.get('tag/README.md')?.content?.toString()).toBe('v1\n');
    expect(image.get('tag/README.md')?.mtime).toBe(commitTime(work, shas.v1));
    expect(image.get('sha/README.md')?.content?.toString()).toBe('v1\n');
    expect(image.get('sub/guide.md')?.content?.toString()).toBe('guide of the feature\n');
    expect([...image.keys()].filter((p) => p.startsWith('sub/'))).toEqual(['sub/guide.md']);
    expect(image.get('owned/feature.txt')).toMatchObject({ type: 'file', mode: 0o640, uid: 10, gid: 20 });
  });

  it('keeps .git with --keep-git-dir: a clean checkout of the commit, the origin without credentials', async () => {
    const url = git.url('lib');
    const result = await build(stack, token, 'repository=addgit-kept&tag=latest', context(`FROM scratch\nADD --keep-git-dir=true ${url}#main /kept\n`));
    expect([result.status, result.error]).toEqual(['succeeded', null]);
    const dir = materialize(await imageFiles(stack, token, 'addgit-kept'), 'kept');
    const inRepo = (...args: string[]) => execFileSync('git', ['-c', 'safe.directory=*', '-C', dir, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, GIT_CONFIG_NOSYSTEM: '1' } }).trim();
    expect(inRepo('rev-parse', 'HEAD')).toBe(shas.v2);
    expect(inRepo('rev-parse', 'refs/heads/main')).toBe(shas.v2);
    expect(inRepo('status', '--porcelain')).toBe('');
    expect(inRepo('remote', 'get-url', 'origin')).toBe(url);
  });

  it('is a cache hit while the ref names the same commit, and a miss once the branch moved', async () => {
    const dockerfile = `FROM scratch\nADD ${git.url('lib')}#main /src\n`;
    const first = await build(stack, token, 'repository=addgit-cache&tag=latest', context(dockerfile));
    expect(first.status).toBe('succeeded');
    const again = await build(stack, token, 'repository=addgit-cache&tag=latest', context(dockerfile));
    expect(again.steps.map((s: { cached: boolean }) => s.cached)).toEqual([true]);
    expect(again.imageDigest).toBe(first.imageDigest);

    const v3 = work.commit({ 'README.md': 'v3\n' }, 'third');
    await work.push('main');
    const moved = await build(stack, token, 'repository=addgit-cache&tag=latest', context(dockerfile));
    expect(moved.status).toBe('succeeded');
    expect(moved.steps.map((s: { cached: boolean }) => s.cached)).toEqual([false]);
    expect(moved.steps[0].missReason).toBe(`ADD ${git.url('lib')}#main changed: ${git.url('lib')}#main`);
    expect((await imageFiles(stack, token, 'addgit-cache')).get('src/README.md')?.content?.toString()).toBe('v3\n');
    // A branch that is not the one that moved still hits.
    const pinned = `FROM scratch\nADD ${git.url('lib')}#v1 /src\n`;
    await build(stack, token, 'repository=addgit-cache2&tag=latest', context(pinned));
    expect((await build(stack, token, 'repository=addgit-cache2&tag=latest', context(pinned))).steps[0].cached).toBe(true);
    shas.v3 = v3;
  });

  const submit = async (repo: string, dockerfile: string, secrets: Array<[string, string]>) => {
    const res = await fetch(`${stack.url}/v1/builds?repository=${repo}&tag=latest`, {
      method: 'POST',
      headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/x-tar'], ...secrets.map(([id, v]): [string, string] => ['strata-build-secret', `id=${id},src=${Buffer.from(v).toString('base64')}`])],
      body: context(dockerfile),
    });
    expect(res.status).toBe(202);
    return waitForBuild(stack, token, ((await res.json()) as { id: string }).id);
  };

  it('fetches a private repository with the GIT_AUTH_TOKEN secret, which appears nowhere in the log, the build or the image', async () => {
    const src = `${privateGit.url('private')}#main`;
    const dockerfile = `FROM scratch\nADD ${src} /p/\n`;
    const port = new URL(privateGit.url('private')).port;

    const none = await submit('addgit-private', dockerfile, []);
    expect([none.status, none.error]).toEqual(['failed', { line: 2, message: `Dockerfile:2: ADD: ${src}: authentication to 127.0.0.1:${port} failed while fetching ${privateGit.url('private')}: send a token as the secret GIT_AUTH_TOKEN (or GIT_AUTH_TOKEN.<host>)` }]);

    const wrong = await submit('addgit-private', dockerfile, [['GIT_AUTH_TOKEN', 'not-the-token']]);
    expect([wrong.status, wrong.error]).toEqual(['failed', { line: 2, message: `Dockerfile:2: ADD: ${src}: authentication to 127.0.0.1:${port} failed while fetching ${privateGit.url('private')}: check the GIT_AUTH_TOKEN or GIT_AUTH_HEADER secret sent with the build` }]);

    const ok = await submit('addgit-private', dockerfile, [['GIT_AUTH_TOKEN.127.0.0.1', gitToken]]);
    expect([ok.status, ok.error]).toEqual(['succeeded', null]);
    expect((await imageFiles(stack, token, 'addgit-private')).get('p/secret-code.txt')?.content?.toString()).toBe('private code\n');
    const log = await api(stack, token, 'GET', `/v1/builds/${ok.id}/logs`);
    expect(log.status).toBe(200);
    expect(log.text).not.toContain(gitToken);
    expect(log.text).toContain(`${privateGit.url('private')}: main is commit ${shas.private}`);
    expect(JSON.stringify(ok)).not.toContain(gitToken);
    const archive = await fetch(`${stack.url}/v1/repositories/addgit-private/tags/latest/oci-archive`, { headers: { authorization: `Bearer ${token}` } });
    const bytes = Buffer.from(await archive.arrayBuffer());
    expect(bytes.includes(Buffer.from(gitToken))).toBe(false);
    expect(bytes.includes(Buffer.from(Buffer.from(`x-access-token:${gitToken}`).toString('base64')))).toBe(false);
    // The whole Authorization value works as GIT_AUTH_HEADER, as in BuildKit.
    const header = await submit('addgit-private2', dockerfile, [['GIT_AUTH_HEADER', `Basic ${Buffer.from(`x-access-token:${gitToken}`).toString('base64')}`]]);
    expect([header.status, header.error]).toEqual(['succeeded', null]);
  });

  it('fetches over ssh with the key sent as --ssh default (held by an agent), and says so when no key was sent', async () => {
    const sshd = await startSshGitServer();
    try {
      const src = `${sshd.url(git.repoPath('lib'))}#v1:docs`;
      const dockerfile = `FROM scratch\nADD ${src} /docs\n`;
      const submitSsh = async (keys: Buffer[]) => {
        const res = await fetch(`${stack.url}/v1/builds?repository=addgit-ssh&tag=latest`, {
          method: 'POST',
          headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/x-tar'], ...keys.map((k): [string, string] => ['strata-build-ssh', `id=default,src=${k.toString('base64')}`])],
          body: context(dockerfile),
        });
        expect(res.status).toBe(202);
        return waitForBuild(stack, token, ((await res.json()) as { id: string }).id);
      };
      const ok = await submitSsh([sshd.clientKey]);
      expect([ok.status, ok.error]).toEqual(['succeeded', null]);
      expect((await imageFiles(stack, token, 'addgit-ssh')).get('docs/guide.md')?.content?.toString()).toBe('guide v1\n');
      const denied = await submitSsh([]);
      expect([denied.status, denied.error]).toEqual(['failed', {
        line: 2,
        message: `Dockerfile:2: ADD: ${src}: authentication to 127.0.0.1:${sshd.port} failed while fetching ${sshd.url(git.repoPath('lib'))}: send an SSH key with --ssh default=… (Strata-Build-SSH id=default)`,
      }]);
    } finally {
      await sshd.close();
    }
  });

  it('fetches over git:// (git daemon on 127.0.0.1), git given the checked address', async () => {
    const port = await closedPort();
    const daemon = spawn('git', ['daemon', '--listen=127.0.0.1', `--port=${port}`, '--export-all', `--base-path=${path.dirname(git.repoPath('lib'))}`, path.dirname(git.repoPath('lib'))], { stdio: 'ignore' });
    try {
      for (let waited = 0; !(await portOpen(port)); waited += 50) {
        if (daemon.exitCode !== null || waited > 10_000) throw new Error('git daemon did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
      const result = await build(stack, token, 'repository=addgit-daemon&tag=latest', context(`FROM scratch\nADD git://127.0.0.1:${port}/lib.git#v1 /src\n`));
      expect([result.status, result.error]).toEqual(['succeeded', null]);
      expect((await imageFiles(stack, token, 'addgit-daemon')).get('src/README.md')?.content?.toString()).toBe('v1\n');
    } finally {
      daemon.kill('SIGTERM');
    }
  });

  it('fails naming the line for an unknown ref, an unknown commit, an unreachable host, a wrong --checksum, a missing subdirectory and a checkout over the size limit', async () => {
    const url = git.url('lib');
    const fail = async (add: string) => {
      const r = await build(stack, token, 'repository=addgit-fail&tag=latest', context(`FROM scratch\n\n${add}\n`));
      expect([r.status, r.error.line]).toEqual(['failed', 3]);
      return r.error.message as string;
    };
    expect(await fail(`ADD ${url}#nope /x`)).toBe(`Dockerfile:3: ADD: ${url}#nope: ${url} has no branch or tag "nope" (a commit must be given as its full id)`);
    const unknown = 'd'.repeat(40);
    expect(await fail(`ADD ${url}#${unknown} /x`)).toBe(`Dockerfile:3: ADD: ${url}#${unknown}: commit ${unknown} was not found in ${url}`);
    const closed = await closedPort();
    expect(await fail(`ADD http://127.0.0.1:${closed}/lib.git /x`)).toMatch(
      new RegExp(`^Dockerfile:3: ADD: http://127\\.0\\.0\\.1:${closed}/lib\\.git: 127\\.0\\.0\\.1:${closed} could not be reached to fetch http://127\\.0\\.0\\.1:${closed}/lib\\.git: `),
    );
    expect(await fail(`ADD --checksum=${shas.v1.slice(0, 10)} ${url}#main /x`)).toMatch(new RegExp(`^Dockerfile:3: ADD: --checksum: ${url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}#main resolved to commit [0-9a-f]{40}, which does not start with the ${shas.v1.slice(0, 10)} given$`));
    expect(await fail(`ADD ${git.url('big')} /x`)).toMatch(new RegExp(`^Dockerfile:3: ADD: ${git.url('big').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the checkout of commit [0-9a-f]{40} holds \\d+ bytes, more than the 1048576 allowed$`));
    expect(await fail(`ADD ${url}#main:nodir /x`)).toMatch(/^Dockerfile:3: ADD: .*: "nodir" is not a directory in commit [0-9a-f]{40} of /);
  });

  it('builds with a --checksum that the commit starts with, and the check accepts git sources and --keep-git-dir', async () => {
    const url = git.url('lib');
    const ok = await build(stack, token, 'repository=addgit-sum&tag=latest', context(`FROM scratch\nADD --checksum=${shas.v1.slice(0, 12)} ${url}#${shas.v1} /x\n`));
    expect([ok.status, ok.error]).toEqual(['succeeded', null]);
    const res = await api(stack, token, 'POST', '/v1/dockerfile/check', `FROM scratch\nADD --keep-git-dir ${url}#main:docs /d\nADD git@example.test:o/r.git /r\n`, 'text/plain');
    expect([res.status, res.json.errors]).toEqual([200, []]);
  });
});

describe('ADD from git without the operator allowing private sources', () => {
  it('refuses a host that resolves to loopback (checked after DNS), naming the line, and connects to nothing', async () => {
    const git = await startGitServer();
    const stack = await startStack({ env: { STRATA_ALLOW_PRIVATE_SOURCES: '' } });
    try {
      git.createRepo('lib');
      const { token } = await stack.tenant('addgit-deny');
      const src = `http://localhost:${new URL(git.url('lib')).port}/lib.git#main`;
      const result = await build(stack, token, 'repository=deny&tag=latest', context(`FROM scratch\nADD ${src} /x\n`));
      expect(result.status).toBe('failed');
      expect(result.error.line).toBe(2);
      expect(result.error.message).toMatch(new RegExp(`^Dockerfile:2: ADD: ${src.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: the git source was refused: localhost resolves to (127\\.0\\.0\\.1|::1), a loopback address, which tenant-given URLs may not reach`));
      expect(git.requests).toEqual([]);
    } finally {
      await stack.close();
      await git.close();
    }
  });
});

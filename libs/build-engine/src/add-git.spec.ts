import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildFailure, buildWith, fakeDeps, layerFiles } from './fakes.test.js';
import type { GitCheckoutRequest, GitSourceFetcher, GitSourceRequest } from './interfaces.js';
import { BuildEngine } from './solver.js';
import { memoryContext } from './fakes.test.js';

const COMMIT_TIME = 1_700_000_000;

/** A git host in memory: refs name commits, a commit's tree is written on checkout; it records every call. */
function fakeGit(refs: Record<string, string>) {
  const calls: Array<{ op: 'resolve' | 'checkout'; req: GitSourceRequest | GitCheckoutRequest }> = [];
  const fetcher: GitSourceFetcher = {
    async resolve(req) {
      calls.push({ op: 'resolve', req });
      const commit = refs[req.ref ?? 'HEAD'];
      if (!commit) throw new Error(`${req.remote} has no branch or tag "${req.ref}"`);
      return { commit, tagObject: null, fullRef: req.ref === null ? 'refs/heads/main' : `refs/heads/${req.ref}` };
    },
    async checkout(req, dir) {
      calls.push({ op: 'checkout', req });
      const root = path.join(dir, 'repo');
      mkdirSync(path.join(root, 'sub/deep'), { recursive: true });
      writeFileSync(path.join(root, 'README.md'), `readme at ${req.commit}\n`);
      writeFileSync(path.join(root, 'sub/run.sh'), '#!/bin/sh\n');
      chmodSync(path.join(root, 'sub/run.sh'), 0o755);
      writeFileSync(path.join(root, 'sub/deep/x.txt'), 'x\n');
      symlinkSync('run.sh', path.join(root, 'sub/link'));
      return { root: req.subdir ? path.join(root, req.subdir) : root, commitTime: COMMIT_TIME };
    },
  };
  return { fetcher, calls };
}

describe('ADD <git repository> in the engine', () => {
  it('copies the checked-out tree into the destination: owner from --chown, git modes, the commit time, the subdirectory asked for', async () => {
    const git = fakeGit({ main: 'a'.repeat(40) });
    const secrets = new Map([['GIT_AUTH_TOKEN', Buffer.from('t0ken')]]);
    const { out, deps } = await buildWith('FROM scratch\nADD --chown=7:8 https://example.test/r.git#main:sub /dst\n', { git: git.fetcher }, { secrets, sshKeys: new Map([['default', [Buffer.from('KEY')]]]) });
    const files = await layerFiles(deps.layers, out.image.layers[0].descriptor.digest);
    expect(files.map((f) => [f.path, f.type, f.mode & 0o7777, f.uid, f.gid])).toEqual([
      ['dst', 'directory', 0o755, 7, 8],
      ['dst/deep', 'directory', 0o755, 7, 8],
      ['dst/deep/x.txt', 'file', 0o644, 7, 8],
      ['dst/link', 'symlink', 0o777, 7, 8],
      ['dst/run.sh', 'file', 0o755, 7, 8],
    ]);
    const checkout = git.calls.find((c) => c.op === 'checkout')!.req as GitCheckoutRequest;
    expect(checkout).toMatchObject({ remote: 'https://example.test/r.git', ref: 'main', commit: 'a'.repeat(40), subdir: 'sub', keepGitDir: false, submodules: true });
    expect(checkout.secrets.get('GIT_AUTH_TOKEN')?.toString()).toBe('t0ken');
    expect(checkout.sshKeys.map(String)).toEqual(['KEY']);
    expect(out.image.config.history?.[0].created_by).toBe('ADD https://example.test/r.git#main:sub /dst # buildkit');
  });

  it('keys the step by the commit the ref resolves to: a hit without a checkout while it stays, a miss once it moved; credentials never in the key', async () => {
    const refs = { main: 'a'.repeat(40) };
    const git = fakeGit(refs);
    const deps = fakeDeps({ git: git.fetcher });
    const run = async (token: string) => {
      const keys: string[] = [];
      deps.onEvent = (e) => (e.type === 'step-done' ? keys.push(`${e.cached}:${e.cacheKey}`) : undefined);
      await new BuildEngine(deps).build({ dockerfile: 'FROM scratch\nADD https://example.test/r.git#main /src\n', dockerfilePath: 'Dockerfile', context: await memoryContext(), buildArgs: {}, secrets: new Map([['GIT_AUTH_TOKEN', Buffer.from(token)]]) });
      return keys[0];
    };
    const first = await run('one');
    const second = await run('two');
    expect(second).toBe(first.replace(/^false/, 'true'));
    expect(git.calls.filter((c) => c.op === 'checkout')).toHaveLength(1);
    refs.main = 'b'.repeat(40);
    const moved = await run('two');
    expect(moved.startsWith('false:')).toBe(true);
    expect(git.calls.filter((c) => c.op === 'checkout')).toHaveLength(2);
  });

  it('fails at the line for an unknown ref, a --checksum the commit does not start with, and contradicting keep-git-dir settings', async () => {
    const git = fakeGit({ main: 'a'.repeat(40) });
    expect((await buildFailure('FROM scratch\nADD https://example.test/r.git#nope /x\n', { git: git.fetcher })).message).toBe('Dockerfile:2: ADD: https://example.test/r.git#nope: https://example.test/r.git has no branch or tag "nope"');
    expect((await buildFailure('FROM scratch\nADD --checksum=aaab https://example.test/r.git#main /x\n', { git: git.fetcher })).message).toBe(
      `Dockerfile:2: ADD: --checksum: https://example.test/r.git#main resolved to commit ${'a'.repeat(40)}, which does not start with the aaab given`,
    );
    expect((await buildFailure('FROM scratch\nADD --checksum=sha256:00 https://example.test/r.git#main /x\n', { git: git.fetcher })).message).toMatch(/is not a commit id for a git source/);
    expect((await buildFailure('FROM scratch\nADD --keep-git-dir=false https://example.test/r.git?keep-git-dir=true /x\n', { git: git.fetcher })).message).toBe(
      'Dockerfile:2: ADD: --keep-git-dir=false contradicts keep-git-dir=true in "https://example.test/r.git?keep-git-dir=true"',
    );
    expect((await buildFailure('FROM scratch\nADD https://example.test/r.git /x\n')).message).toBe('Dockerfile:2: ADD: https://example.test/r.git: this worker cannot fetch git repositories');
  });
});

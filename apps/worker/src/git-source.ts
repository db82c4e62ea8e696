// The commit a push named, fetched with the git CLI: exactly that sha, shallow, into a fresh
// directory, with the connection pinned to an address the egress policy checked (docs/adr/0009).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { EgressPolicy } from '@strata/egress';
import { GitFetchError, GitRemote } from './git-remote.js';

export { GitFetchError };

export interface GitCredentials {
  token?: string;
  username?: string;
  deployKey?: string;
}

export interface CommitRequest {
  provider: string;
  cloneUrl: string;
  sha: string;
  /** The build context: a directory of the checkout. */
  context: string;
  submodules: boolean;
  credentials: GitCredentials | null;
}

/** The user name a forge expects with a token over HTTPS basic auth. */
const TOKEN_USER: Record<string, string> = { github: 'x-access-token', gitlab: 'oauth2', gitea: 'strata', bitbucket: 'x-token-auth' };

/** The key of the worker's context cache for a commit's context: the same commit and directory reuse it. */
export function gitContextDigest(req: CommitRequest): string {
  return `sha256:${createHash('sha256').update(JSON.stringify(['git', req.cloneUrl, req.sha, req.context, req.submodules])).digest('hex')}`;
}

export class GitCommitSource {
  private readonly policy: EgressPolicy;

  constructor(allowPrivateSources: readonly string[], private readonly timeoutMs = 10 * 60 * 1000) {
    this.policy = new EgressPolicy(allowPrivateSources);
  }

  /**
   * Fetches the commit into `dir` and returns its context directory as a tar stream (without .git
   * directories), for the worker's context cache; .dockerignore is applied by the build as for uploads.
   */
  async contextTar(req: CommitRequest, dir: string, signal?: AbortSignal): Promise<Readable> {
    const checkout = path.join(dir, 'checkout');
    await this.fetch(req, checkout, path.join(dir, 'git-home'), signal);
    const root = await realpath(checkout);
    const contextDir = await realpath(path.join(root, req.context)).catch(() => null);
    if (!contextDir || (contextDir !== root && !contextDir.startsWith(`${root}/`)) || !(await stat(contextDir)).isDirectory()) {
      throw new GitFetchError(`the context directory "${req.context}" does not exist in commit ${req.sha}`);
    }
    const tar = spawn('tar', ['--exclude=.git', '-C', contextDir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    tar.stderr.on('data', (c: Buffer) => (err += c.toString()));
    tar.on('close', (code) => {
      if (code !== 0) tar.stdout.destroy(new GitFetchError(`packing the checkout failed: ${err.trim().split('\n').pop()}`));
    });
    return tar.stdout;
  }

  private async fetch(req: CommitRequest, checkout: string, home: string, signal?: AbortSignal): Promise<void> {
    if (!/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(req.sha)) throw new GitFetchError(`"${req.sha}" is not a full commit id`);
    await mkdir(checkout, { recursive: true });
    const creds = req.credentials;
    const user = creds?.username ?? TOKEN_USER[req.provider] ?? 'git';
    const remote = await GitRemote.open(this.policy, req.cloneUrl, {
      home,
      timeoutMs: this.timeoutMs,
      signal,
      authHint: "check the trigger's credentials",
      refusedAs: 'the clone URL',
      auth: {
        ...(creds?.token ? { authorization: `Basic ${Buffer.from(`${user}:${creds.token}`).toString('base64')}` } : {}),
        ...(creds?.deployKey ? { sshKeys: [Buffer.from(creds.deployKey.endsWith('\n') ? creds.deployKey : `${creds.deployKey}\n`)] } : {}),
      },
    });
    try {
      const notFound = `commit ${req.sha} was not found in ${req.cloneUrl} (was it force-pushed away or never pushed?)`;
      await remote.git(checkout, ['init', '-q', '.'], 'init');
      await remote.git(checkout, ['fetch', '--depth', '1', '--no-tags', '--no-recurse-submodules', remote.target, req.sha], 'fetch', notFound);
      await remote.git(checkout, ['checkout', '-q', '--detach', req.sha], 'checkout', notFound);
      if (req.submodules) {
        await remote.pinSubmodules(checkout);
        await remote.git(checkout, ['submodule', 'update', '--init', '--recursive', '--depth', '1'], 'submodule update');
      }
    } finally {
      await remote.close();
    }
  }
}

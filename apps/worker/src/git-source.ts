// The commit a push named, fetched with the git CLI: exactly that sha, shallow, into a fresh
// directory, with the connection pinned to an address the egress policy checked (docs/adr/0009).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, realpath, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { EgressPolicy, EgressRefusedError } from '@strata/egress';

/** A fetch that failed; the message says which way (auth, unknown commit, host unreachable, refused). */
export class GitFetchError extends Error {
  override readonly name = 'GitFetchError';
}

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

interface Remote {
  /** What git is given. */
  url: string;
  host: string;
  port: number;
  ssh: boolean;
}

function parseRemote(url: string): Remote {
  const scp = /^([A-Za-z0-9._-]+)@([A-Za-z0-9.-]+):(?!\/\/)(.+)$/.exec(url);
  if (scp) return { url, host: scp[2], port: 22, ssh: true };
  const u = new URL(url);
  const ssh = u.protocol === 'ssh:';
  return { url, host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port ? Number(u.port) : ssh ? 22 : u.protocol === 'https:' ? 443 : 80, ssh };
}

/** A submodule URL relative to its superproject's (`../lib.git`), made absolute. */
function absoluteSubmoduleUrl(base: string, rel: string): string {
  if (!rel.startsWith('./') && !rel.startsWith('../')) return rel;
  const scp = /^([^@]+@[^:]+:)(.*)$/.exec(base);
  if (scp && !base.includes('://')) return scp[1] + path.posix.normalize(path.posix.join(scp[2], rel));
  const u = new URL(base);
  u.pathname = path.posix.normalize(path.posix.join(u.pathname, rel));
  return u.toString();
}

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
    const remote = parseRemote(req.cloneUrl);
    await mkdir(checkout, { recursive: true });
    await mkdir(home, { recursive: true, mode: 0o700 });
    const config: Array<[string, string]> = [
      // Only the transports we pin; no file://, ext:: or others, also in submodules.
      ['protocol.allow', 'never'],
      ['protocol.https.allow', 'always'],
      ['protocol.http.allow', 'always'],
      ['protocol.ssh.allow', remote.ssh ? 'always' : 'never'],
      // A redirect would go to a host nobody checked.
      ['http.followRedirects', 'false'],
      ['credential.helper', ''],
      ['core.hooksPath', '/dev/null'],
      ['advice.detachedHead', 'false'],
    ];
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: home,
      GIT_TERMINAL_PROMPT: '0',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_ASKPASS: '/bin/false',
      SSH_ASKPASS: '/bin/false',
    };
    const hosts = new Map<string, string>();
    const pin = async (r: Remote) => {
      const key = `${r.host}:${r.port}`;
      if (hosts.has(key)) return hosts.get(key)!;
      let address: string;
      try {
        [{ address }] = await this.policy.resolve(r.host);
      } catch (e) {
        if (e instanceof EgressRefusedError) throw new GitFetchError(`the clone URL was refused: ${e.message}`);
        throw e;
      }
      hosts.set(key, address);
      if (!r.ssh) config.push(['http.curloptResolve', `${r.host}:${r.port}:${address.includes(':') ? `[${address}]` : address}`]);
      return address;
    };
    const address = await pin(remote);
    const creds = req.credentials;
    if (creds?.token && !remote.ssh) {
      const user = creds.username ?? TOKEN_USER[req.provider] ?? 'git';
      const origin = new URL(remote.url).origin;
      // Scoped to the clone URL's origin: never sent to a submodule's host.
      config.push([`http.${origin}/.extraHeader`, `Authorization: Basic ${Buffer.from(`${user}:${creds.token}`).toString('base64')}`]);
    }
    if (remote.ssh) {
      const known = path.join(home, 'known_hosts');
      const parts = ['ssh', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${known}`, '-o', 'StrictHostKeyChecking=accept-new', '-o', `HostName=${address}`, '-o', `HostKeyAlias=${remote.host}`];
      if (creds?.deployKey) {
        const keyFile = path.join(home, 'deploy_key');
        await writeFile(keyFile, creds.deployKey.endsWith('\n') ? creds.deployKey : `${creds.deployKey}\n`, { mode: 0o600 });
        await chmod(keyFile, 0o600);
        parts.push('-i', keyFile, '-o', 'IdentitiesOnly=yes');
      }
      env.GIT_SSH_COMMAND = parts.map((p) => `'${p.replace(/'/g, `'\\''`)}'`).join(' ');
    }
    const git = (args: string[], what: string) => this.git(checkout, args, env, config, what, remote, req, signal);
    await git(['init', '-q', '.'], 'init');
    await git(['fetch', '--depth', '1', '--no-tags', '--no-recurse-submodules', remote.url, req.sha], 'fetch');
    await git(['checkout', '-q', '--detach', req.sha], 'checkout');
    if (req.submodules) {
      const listed = await this.git(checkout, ['config', '-f', '.gitmodules', '--get-regexp', '^submodule\\..*\\.url$'], env, config, 'submodules', remote, req, signal).catch(() => '');
      for (const line of listed.split('\n').filter(Boolean)) {
        const url = absoluteSubmoduleUrl(remote.url, line.slice(line.indexOf(' ') + 1).trim());
        let sub: Remote;
        try {
          sub = parseRemote(url);
        } catch {
          throw new GitFetchError(`the submodule URL "${url}" is not a URL git may fetch from`);
        }
        if (sub.ssh !== remote.ssh && sub.ssh) throw new GitFetchError(`the submodule URL "${url}" uses ssh while the repository is fetched over https`);
        await pin(sub);
      }
      await git(['submodule', 'update', '--init', '--recursive', '--depth', '1'], 'submodule update');
    }
  }

  private git(cwd: string, args: string[], env: Record<string, string>, config: Array<[string, string]>, what: string, remote: Remote, req: CommitRequest, signal?: AbortSignal): Promise<string> {
    const configEnv: Record<string, string> = { GIT_CONFIG_COUNT: String(config.length) };
    config.forEach(([k, v], i) => {
      configEnv[`GIT_CONFIG_KEY_${i}`] = k;
      configEnv[`GIT_CONFIG_VALUE_${i}`] = v;
    });
    return new Promise((resolve, reject) => {
      const child = spawn('git', args, { cwd, env: { ...env, ...configEnv }, stdio: ['ignore', 'pipe', 'pipe'], signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) : AbortSignal.timeout(this.timeoutMs) });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-8192)));
      child.on('error', (e) => reject(new GitFetchError(`git ${what} could not run: ${e.message}`)));
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(explainGitFailure(what, err, remote, req))));
    });
  }
}

/** Turns git's stderr into one sentence saying which way the fetch failed. */
function explainGitFailure(what: string, stderr: string, remote: Remote, req: CommitRequest): GitFetchError {
  const last = stderr.trim().split('\n').filter(Boolean).pop() ?? '';
  const where = `${remote.host}${remote.port ? `:${remote.port}` : ''}`;
  if (/Authentication failed|could not read (Username|Password)|The requested URL returned error: (401|403)|Permission denied \(publickey|HTTP Basic: Access denied/i.test(stderr)) {
    return new GitFetchError(`authentication to ${where} failed while fetching ${req.cloneUrl}: check the trigger's credentials`);
  }
  if (/not our ref|couldn't find remote ref|unadvertised object|no such remote ref|did not send all necessary objects|reference is not a tree|unable to read tree|did not match any file/i.test(stderr)) {
    return new GitFetchError(`commit ${req.sha} was not found in ${req.cloneUrl} (was it force-pushed away or never pushed?)`);
  }
  if (/repository '.*' not found|The requested URL returned error: 404|does not appear to be a git repository/i.test(stderr)) {
    return new GitFetchError(`no git repository was found at ${req.cloneUrl}`);
  }
  if (/Could not resolve host|Failed to connect|Connection refused|Connection timed out|Operation timed out|Couldn't connect|Network is unreachable|No route to host|Connection reset|Empty reply/i.test(stderr)) {
    return new GitFetchError(`${where} could not be reached to fetch ${req.cloneUrl}: ${last.replace(/^fatal: /, '')}`);
  }
  return new GitFetchError(`git ${what} of ${req.cloneUrl} failed: ${last.replace(/^fatal: /, '') || 'no message'}`);
}

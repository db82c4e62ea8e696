// Talking to a tenant-given git remote with the git CLI: one place for builds on push
// (git-source.ts) and ADD <git> (git-add-source.ts). Every host is resolved and checked by the
// egress policy and the connection pinned to that address (docs/adr/0009); credentials reach git
// through its environment (an Authorization header) or an ssh-agent holding the keys, never a file.
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { EgressPolicy, EgressRefusedError } from '@strata/egress';
import { startSshAgent, type SshAgent } from '@strata/runtime';

/** A fetch that failed; the message says which way (auth, unknown commit or ref, host unreachable, refused). */
export class GitFetchError extends Error {
  override readonly name = 'GitFetchError';
}

export interface GitRemoteAuth {
  /** The whole value of the Authorization header for the remote's origin (https), e.g. `Basic …`. */
  authorization?: string;
  /** Private keys for an ssh remote, loaded into an ssh-agent (from stdin) for the fetch's duration. */
  sshKeys?: readonly Buffer[];
}

export interface GitRemoteOptions {
  /** A directory of this fetch alone: git's HOME (known_hosts), the agent's socket. */
  home: string;
  auth?: GitRemoteAuth;
  timeoutMs: number;
  signal?: AbortSignal;
  /** How failures name what was fetched and how to fix credentials, e.g. "check the trigger's credentials". */
  authHint: string;
  /** What a refused address is called in its message ("the clone URL", "the git source"). */
  refusedAs: string;
}

export interface Remote {
  /** What git is given. */
  url: string;
  host: string;
  port: number;
  ssh: boolean;
}

export function parseRemote(url: string): Remote {
  const scp = /^([A-Za-z0-9._-]+)@([A-Za-z0-9.-]+):(?!\/\/)(.+)$/.exec(url);
  if (scp) return { url, host: scp[2], port: 22, ssh: true };
  const u = new URL(url);
  const ssh = u.protocol === 'ssh:';
  const port = u.port ? Number(u.port) : ssh ? 22 : u.protocol === 'https:' ? 443 : u.protocol === 'git:' ? 9418 : 80;
  return { url, host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port, ssh };
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

const quote = (p: string) => `'${p.replace(/'/g, `'\\''`)}'`;

/**
 * One remote, checked and pinned, with the configuration and environment every git command on it
 * runs with. Open it with `GitRemote.open`, run commands, and `close()` it (stops the ssh-agent).
 */
export class GitRemote {
  private readonly config: Array<[string, string]>;
  private readonly env: Record<string, string>;
  private readonly pinned = new Map<string, string>();
  private agent: SshAgent | null = null;
  /**
   * The URL to give git. For git:// (git's own TCP, which no setting pins) the checked address
   * replaces the host name, so git cannot resolve the name again; otherwise the remote's URL.
   */
  target: string;

  private constructor(
    private readonly policy: EgressPolicy,
    readonly remote: Remote,
    private readonly opts: GitRemoteOptions,
  ) {
    this.target = remote.url;
    this.config = [
      // Only the transports we pin; no file://, ext:: or others, also in submodules.
      ['protocol.allow', 'never'],
      ['protocol.https.allow', 'always'],
      ['protocol.http.allow', 'always'],
      ['protocol.git.allow', remote.url.startsWith('git://') ? 'always' : 'never'],
      ['protocol.ssh.allow', remote.ssh ? 'always' : 'never'],
      // A redirect would go to a host nobody checked.
      ['http.followRedirects', 'false'],
      ['credential.helper', ''],
      ['core.hooksPath', '/dev/null'],
      ['advice.detachedHead', 'false'],
      ['init.defaultBranch', 'master'],
    ];
    this.env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: opts.home,
      GIT_TERMINAL_PROMPT: '0',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_ASKPASS: '/bin/false',
      SSH_ASKPASS: '/bin/false',
    };
  }

  /** Checks the remote's host (after DNS) and prepares its credentials; throws GitFetchError when refused. */
  static async open(allowPrivateSources: readonly string[] | EgressPolicy, url: string, opts: GitRemoteOptions): Promise<GitRemote> {
    const policy = allowPrivateSources instanceof EgressPolicy ? allowPrivateSources : new EgressPolicy(allowPrivateSources);
    let remote: Remote;
    try {
      remote = parseRemote(url);
    } catch {
      throw new GitFetchError(`"${url}" is not a URL git may fetch from`);
    }
    await mkdir(opts.home, { recursive: true, mode: 0o700 });
    const r = new GitRemote(policy, remote, opts);
    try {
      const address = await r.pin(remote);
      if (/^git:\/\//i.test(remote.url)) {
        const u = new URL(remote.url);
        u.hostname = address.includes(':') ? `[${address}]` : address;
        r.target = u.toString();
      }
      if (opts.auth?.authorization && !remote.ssh) {
        // Scoped to the remote's origin: never sent to a submodule's host.
        r.config.push([`http.${new URL(remote.url).origin}/.extraHeader`, `Authorization: ${opts.auth.authorization}`]);
      }
      if (remote.ssh) {
        const known = path.join(opts.home, 'known_hosts');
        // No config file and no identity file of the worker's own user: only the agent's keys are offered.
        const parts = ['ssh', '-F', '/dev/null', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${known}`, '-o', 'StrictHostKeyChecking=accept-new', '-o', `HostName=${address}`, '-o', `HostKeyAlias=${remote.host}`, '-o', 'IdentityFile=/dev/null'];
        if (opts.auth?.sshKeys && opts.auth.sshKeys.length > 0) {
          try {
            r.agent = await startSshAgent(opts.home, opts.auth.sshKeys);
          } catch (e) {
            throw new GitFetchError(`the SSH key for ${remote.host} could not be used: ${(e as Error).message}`);
          }
          r.env.SSH_AUTH_SOCK = r.agent.socket;
        }
        r.env.GIT_SSH_COMMAND = parts.map(quote).join(' ');
      }
      return r;
    } catch (e) {
      await r.close();
      throw e;
    }
  }

  private async pin(r: Remote): Promise<string> {
    const key = `${r.host}:${r.port}`;
    const known = this.pinned.get(key);
    if (known) return known;
    let address: string;
    try {
      [{ address }] = await this.policy.resolve(r.host);
    } catch (e) {
      if (e instanceof EgressRefusedError) throw new GitFetchError(`${this.opts.refusedAs} was refused: ${e.message}`);
      throw e;
    }
    this.pinned.set(key, address);
    if (!r.ssh) this.config.push(['http.curloptResolve', `${r.host}:${r.port}:${address.includes(':') ? `[${address}]` : address}`]);
    return address;
  }

  /**
   * Every submodule URL of the checkout in `cwd` (relative ones made absolute), checked and pinned
   * like the remote before `git submodule update` may connect to it.
   */
  async pinSubmodules(cwd: string): Promise<boolean> {
    const listed = await this.git(cwd, ['config', '-f', '.gitmodules', '--get-regexp', '^submodule\\..*\\.url$'], 'submodules').catch(() => '');
    const lines = listed.split('\n').filter(Boolean);
    for (const line of lines) {
      const url = absoluteSubmoduleUrl(this.remote.url, line.slice(line.indexOf(' ') + 1).trim());
      let sub: Remote;
      try {
        sub = parseRemote(url);
      } catch {
        throw new GitFetchError(`the submodule URL "${url}" is not a URL git may fetch from`);
      }
      if (sub.ssh && !this.remote.ssh) throw new GitFetchError(`the submodule URL "${url}" uses ssh while the repository is fetched over https`);
      if (/^git:\/\//i.test(url)) throw new GitFetchError(`the submodule URL "${url}" uses git://, whose connections Strata cannot pin to a checked address; use https`);
      await this.pin(sub);
    }
    return lines.length > 0;
  }

  /** Runs git in `cwd` (umask 022, so a checkout's files are 0644 or 0755 as BuildKit's); resolves with its stdout. */
  git(cwd: string, args: string[], what: string, notFound?: string): Promise<string> {
    const configEnv: Record<string, string> = { GIT_CONFIG_COUNT: String(this.config.length) };
    this.config.forEach(([k, v], i) => {
      configEnv[`GIT_CONFIG_KEY_${i}`] = k;
      configEnv[`GIT_CONFIG_VALUE_${i}`] = v;
    });
    const timeout = AbortSignal.timeout(this.opts.timeoutMs);
    const signal = this.opts.signal ? AbortSignal.any([this.opts.signal, timeout]) : timeout;
    return new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', 'umask 022 && exec git "$@"', 'git', ...args], { cwd, env: { ...this.env, ...configEnv }, stdio: ['ignore', 'pipe', 'pipe'], signal });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-8192)));
      child.on('error', (e) => reject(new GitFetchError(timeout.aborted ? `git ${what} of ${this.remote.url} took longer than ${Math.round(this.opts.timeoutMs / 1000)} s` : `git ${what} could not run: ${e.message}`)));
      child.on('close', (code) => (code === 0 ? resolve(out) : reject(this.explain(what, err, notFound))));
    });
  }

  /**
   * Turns git's stderr into one sentence saying which way the command failed (never echoing a
   * credential: git prints none); `notFound` is the sentence for a commit or ref the remote lacks.
   */
  private explain(what: string, stderr: string, notFound?: string): GitFetchError {
    const last = stderr.trim().split('\n').filter(Boolean).pop() ?? '';
    const where = `${this.remote.host}:${this.remote.port}`;
    const url = this.remote.url;
    if (/Authentication failed|could not read (Username|Password)|The requested URL returned error: (401|403)|Permission denied \(publickey|HTTP Basic: Access denied/i.test(stderr)) {
      return new GitFetchError(`authentication to ${where} failed while fetching ${url}: ${this.opts.authHint}`);
    }
    if (notFound && /not our ref|couldn't find remote ref|unadvertised object|no such remote ref|did not send all necessary objects|reference is not a tree|unable to read tree|did not match any file/i.test(stderr)) {
      return new GitFetchError(notFound);
    }
    if (/repository '.*' not found|The requested URL returned error: 404|does not appear to be a git repository/i.test(stderr)) {
      return new GitFetchError(`no git repository was found at ${url}`);
    }
    if (/Could not resolve host|Failed to connect|Connection refused|Connection timed out|Operation timed out|Couldn't connect|Network is unreachable|No route to host|Connection reset|Empty reply|Could not read from remote repository/i.test(stderr)) {
      return new GitFetchError(`${where} could not be reached to fetch ${url}: ${last.replace(/^fatal: /, '')}`);
    }
    return new GitFetchError(`git ${what} of ${url} failed: ${last.replace(/^fatal: /, '') || 'no message'}`);
  }

  async close(): Promise<void> {
    await this.agent?.stop();
    this.agent = null;
  }
}

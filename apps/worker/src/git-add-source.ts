// ADD <git repository> on the worker: refs resolved with `git ls-remote`, commits fetched shallow
// (exactly one) and checked out with the git CLI, through the same pinned, egress-checked remote as
// builds on push (git-remote.ts). Credentials are the build's sealed secrets GIT_AUTH_TOKEN[.host]
// and GIT_AUTH_HEADER[.host] (as BuildKit reads them) and its `default` SSH keys, held by an agent.
import { mkdtemp, lstat, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { GitCheckout, GitCheckoutRequest, GitSourceFetcher, GitSourceRequest, ResolvedGitRef } from '@strata/build-engine';
import { EgressPolicy } from '@strata/egress';
import { GitFetchError, GitRemote, type GitRemoteAuth, parseRemote } from './git-remote.js';

const COMMIT = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/**
 * The Authorization header BuildKit's git source sends for `remote`: the first of the secrets
 * GIT_AUTH_HEADER.<host>, GIT_AUTH_TOKEN.<host>, GIT_AUTH_HEADER, GIT_AUTH_TOKEN the build has (host
 * with its port, then without). A header secret is the whole value (`Bearer …`, `Basic …`); a
 * token becomes `Basic` with the user x-access-token. Only for http(s) remotes.
 */
export function gitAuthorization(remote: string, secrets: ReadonlyMap<string, Buffer>): string | null {
  if (!/^https?:\/\//i.test(remote)) return null;
  const u = new URL(remote);
  const hosts = [...new Set([u.host, u.hostname])];
  const names: Array<[string, boolean]> = [...hosts.flatMap((h): Array<[string, boolean]> => [[`GIT_AUTH_HEADER.${h}`, false], [`GIT_AUTH_TOKEN.${h}`, true]]), ['GIT_AUTH_HEADER', false], ['GIT_AUTH_TOKEN', true]];
  for (const [name, token] of names) {
    const v = secrets.get(name);
    if (!v) continue;
    const value = v.toString('utf8').trim();
    // One header line: a line break would let the value add headers of its own.
    if (/[\r\n]/.test(value)) throw new GitFetchError(`the secret ${name} holds a line break; send one line`);
    return token ? `Basic ${Buffer.from(`x-access-token:${value}`).toString('base64')}` : value;
  }
  return null;
}

/**
 * Which of `ls-remote`'s lines a ref names, as BuildKit picks: an exact `refs/…` name, then a
 * branch, then a tag (an annotated tag's commit is the peeled `^{}` line). Null: no such ref.
 */
export function pickRef(ref: string, lsRemote: string): ResolvedGitRef | null {
  const under = (prefix: string) => prefix + (ref.startsWith(prefix) ? ref.slice(prefix.length) : ref);
  const partial = under('refs/');
  const head = under('refs/heads/');
  const tag = under('refs/tags/');
  const found = new Map<string, string>();
  for (const line of lsRemote.split('\n')) {
    const [sha, name] = line.split('\t');
    if (sha && name) found.set(name.trim(), sha.trim());
  }
  if (partial !== head && partial !== tag && found.has(partial)) return { commit: found.get(partial)!, tagObject: null, fullRef: partial };
  if (found.has(head)) return { commit: found.get(head)!, tagObject: null, fullRef: head };
  const tagged = found.get(tag);
  if (!tagged) return null;
  const peeled = found.get(`${tag}^{}`);
  return peeled ? { commit: peeled, tagObject: tagged, fullRef: tag } : { commit: tagged, tagObject: null, fullRef: tag };
}

export class GitAddSourceFetcher implements GitSourceFetcher {
  private readonly policy: EgressPolicy;

  private readonly timeoutMs: number;

  /** `limits`: STRATA_ADD_URL_MAX_BYTES for what a checkout may hold, STRATA_ADD_URL_TIMEOUT_MS per git command. */
  constructor(allowPrivateSources: readonly string[], private readonly limits: { maxBytes: number; timeoutMs: number }) {
    this.policy = new EgressPolicy(allowPrivateSources);
    this.timeoutMs = limits.timeoutMs;
  }

  private auth(req: GitSourceRequest): GitRemoteAuth {
    const authorization = gitAuthorization(req.remote, req.secrets);
    const ssh = (() => {
      try {
        return parseRemote(req.remote).ssh;
      } catch {
        return false;
      }
    })();
    return { ...(authorization ? { authorization } : {}), ...(ssh && req.sshKeys.length > 0 ? { sshKeys: req.sshKeys } : {}) };
  }

  private async open(req: GitSourceRequest, home: string): Promise<GitRemote> {
    const auth = this.auth(req);
    const ssh = parseRemote(req.remote).ssh;
    const hint = ssh
      ? auth.sshKeys ? 'check the SSH key sent with --ssh default=…' : 'send an SSH key with --ssh default=… (Strata-Build-SSH id=default)'
      : auth.authorization ? 'check the GIT_AUTH_TOKEN or GIT_AUTH_HEADER secret sent with the build' : 'send a token as the secret GIT_AUTH_TOKEN (or GIT_AUTH_TOKEN.<host>)';
    return GitRemote.open(this.policy, req.remote, { home, auth, timeoutMs: this.timeoutMs, ...(req.signal ? { signal: req.signal } : {}), authHint: hint, refusedAs: 'the git source' });
  }

  async resolve(req: GitSourceRequest): Promise<ResolvedGitRef> {
    const home = await mkdtemp(path.join(tmpdir(), 'strata-git-ls-'));
    try {
      const remote = await this.open(req, home);
      try {
        // A full commit id names itself (BuildKit does not ask the remote either).
        if (req.ref !== null && COMMIT.test(req.ref)) return { commit: req.ref, tagObject: null, fullRef: null };
        if (req.ref === null) {
          const out = await remote.git(home, ['ls-remote', '--symref', '--', remote.target, 'HEAD'], 'ls-remote');
          const sym = /^ref: (\S+)\tHEAD$/m.exec(out);
          const sha = /^([0-9a-f]{40,64})\tHEAD$/m.exec(out);
          if (!sha) throw new GitFetchError(`${req.remote} has no default branch (HEAD names no commit)`);
          return { commit: sha[1], tagObject: null, fullRef: sym ? sym[1] : null };
        }
        const out = await remote.git(home, ['ls-remote', '--', remote.target, req.ref, `${req.ref}^{}`], 'ls-remote');
        const picked = pickRef(req.ref, out);
        if (!picked) throw new GitFetchError(`${req.remote} has no branch or tag "${req.ref}" (a commit must be given as its full id)`);
        return picked;
      } finally {
        await remote.close();
      }
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }

  async checkout(req: GitCheckoutRequest, dir: string): Promise<GitCheckout> {
    const home = path.join(dir, 'home');
    const repo = path.join(dir, 'repo');
    const remote = await this.open(req, home);
    try {
      const notFound = `commit ${req.commit} was not found in ${req.remote}`;
      await remote.git(dir, ['init', '-q', repo], 'init');
      const fetch = (what: string) => remote.git(repo, ['fetch', '-q', '--depth', '1', '--no-tags', '--no-recurse-submodules', '--', remote.target, what], 'fetch', notFound);
      // By the ref that resolved to the commit when there is one: servers speaking git's protocol v0
      // (ssh without GIT_PROTOCOL) hand out only advertised refs. By commit when it moved since.
      let fetched = false;
      if (req.fullRef !== null) {
        await fetch(req.fullRef);
        fetched = (await remote.git(repo, ['rev-parse', 'FETCH_HEAD^{commit}'], 'rev-parse')).trim() === req.commit;
      }
      if (!fetched) await fetch(req.commit);
      await remote.git(repo, ['checkout', '-q', '--detach', req.commit], 'checkout', notFound);
      if (req.submodules && (await remote.pinSubmodules(repo))) {
        await remote.git(repo, ['submodule', 'update', '--init', '--recursive', '--depth', '1'], 'submodule update');
      }
      const commitTime = Number((await remote.git(repo, ['log', '-1', '--format=%ct', req.commit], 'log')).trim());
      const subdir = path.posix.join('/', req.subdir ?? '/').slice(1);
      if (req.keepGitDir && subdir === '') {
        // The kept repository names the commit as the ref did, its origin is the remote (without
        // credentials, which never were in it), and it remembers nothing of the fetch.
        if (req.fullRef) await remote.git(repo, ['update-ref', '--no-deref', req.fullRef, req.commit], 'update-ref');
        await remote.git(repo, ['remote', 'add', 'origin', withoutPassword(req.remote)], 'remote add');
        await remote.git(repo, ['reflog', 'expire', '--all', '--expire=now'], 'reflog expire');
        await rm(path.join(repo, '.git', 'FETCH_HEAD'), { force: true });
      } else {
        await removeGitDirs(repo);
      }
      const size = await treeBytes(repo);
      if (size > this.limits.maxBytes) throw new GitFetchError(`the checkout of commit ${req.commit} holds ${size} bytes, more than the ${this.limits.maxBytes} allowed`);
      if (subdir === '') return { root: repo, commitTime };
      // As BuildKit: every component of the subdirectory is a directory of the commit, not a link.
      let at = repo;
      for (const part of subdir.split('/')) {
        at = path.join(at, part);
        const st = await lstat(at).catch(() => null);
        if (!st || !st.isDirectory()) throw new GitFetchError(`"${req.subdir}" is not a directory in commit ${req.commit} of ${req.remote}`);
      }
      return { root: at, commitTime };
    } finally {
      await remote.close();
      await rm(home, { recursive: true, force: true });
    }
  }
}

function withoutPassword(url: string): string {
  if (!/^[a-z0-9]+:\/\//i.test(url)) return url;
  const u = new URL(url);
  u.password = '';
  return u.toString();
}

/** The bytes of the regular files below `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(p);
    else if (e.isFile()) total += (await lstat(p)).size;
  }
  return total;
}

/** Removes `.git` (the repository, and submodules' `.git` files) everywhere below `dir`. */
async function removeGitDirs(dir: string): Promise<void> {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.name === '.git') await rm(p, { recursive: true, force: true });
    else if (e.isDirectory()) await removeGitDirs(p);
  }
}

import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * A git host on 127.0.0.1: git's smart HTTP (`git-http-backend` as CGI) behind a small Node server
 * that passes the body through and turns the CGI `Status:` header into the response code. With
 * `auth`, every request needs that basic-auth user and password, as a private repository does.
 */
export interface GitServer {
  url(repo: string): string;
  /** The URL with the user and password in it, for pushing from the test. */
  pushUrl(repo: string): string;
  createRepo(repo: string): void;
  /** The bare repository's directory on disk. */
  repoPath(repo: string): string;
  /** Requests served so far: method, path and status. */
  requests: Array<{ method: string; path: string; status: number }>;
  close(): Promise<void>;
}

export async function startGitServer(opts: { auth?: { username: string; password: string } } = {}): Promise<GitServer> {
  const root = mkdtempSync(path.join(tmpdir(), 'strata-git-'));
  const requests: GitServer['requests'] = [];
  const expected = opts.auth ? `Basic ${Buffer.from(`${opts.auth.username}:${opts.auth.password}`).toString('base64')}` : null;
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://git');
    const record = (status: number) => requests.push({ method: req.method ?? '', path: u.pathname, status });
    if (expected && req.headers.authorization !== expected) {
      record(401);
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end('authentication required\n');
      req.resume();
      return;
    }
    const child = spawn('/usr/lib/git-core/git-http-backend', [], {
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        // As root the repositories' owner differs from the CGI's view; pushes need receive-pack on.
        GIT_CONFIG_COUNT: '2',
        GIT_CONFIG_KEY_0: 'safe.directory',
        GIT_CONFIG_VALUE_0: '*',
        GIT_CONFIG_KEY_1: 'http.receivepack',
        GIT_CONFIG_VALUE_1: 'true',
        REQUEST_METHOD: req.method ?? 'GET',
        PATH_INFO: decodeURIComponent(u.pathname),
        QUERY_STRING: u.search.slice(1),
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        REMOTE_ADDR: '127.0.0.1',
        REMOTE_USER: opts.auth?.username ?? '',
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    req.pipe(child.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    child.stdout.on('data', (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
        else res.setHeader(name, value);
      }
      record(status);
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    child.stdout.on('end', () => {
      if (!headersDone) {
        record(500);
        res.writeHead(500);
      }
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const base = `http://127.0.0.1:${port}`;
  return {
    url: (repo) => `${base}/${repo}.git`,
    pushUrl: (repo) => (opts.auth ? `http://${opts.auth.username}:${opts.auth.password}@127.0.0.1:${port}/${repo}.git` : `${base}/${repo}.git`),
    repoPath: (repo) => path.join(root, `${repo}.git`),
    createRepo(repo) {
      execFileSync('git', ['init', '-q', '--bare', '-b', 'main', path.join(root, `${repo}.git`)]);
    },
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A working copy that commits files and pushes them with the git CLI, as a developer would. */
export class WorkingCopy {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'strata-work-'));

  constructor(remote: string) {
    this.git('init', '-q', '-b', 'main');
    this.git('remote', 'add', 'origin', remote);
  }

  private env(): NodeJS.ProcessEnv {
    return {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: this.dir,
        GIT_CONFIG_NOSYSTEM: '1',
        GIT_AUTHOR_NAME: 'Ada Lovelace',
        GIT_AUTHOR_EMAIL: 'ada@example.com',
        GIT_COMMITTER_NAME: 'Ada Lovelace',
        GIT_COMMITTER_EMAIL: 'ada@example.com',
        GIT_TERMINAL_PROMPT: '0',
    };
  }

  git(...args: string[]): string {
    return execFileSync('git', args, { cwd: this.dir, encoding: 'utf8', env: this.env() }).trim();
  }

  /** Writes the files (null removes one), commits them with `message` and returns the commit's sha. */
  commit(files: Record<string, string | null>, message: string, amend = false): string {
    for (const [rel, content] of Object.entries(files)) {
      const abs = path.join(this.dir, rel);
      if (content === null) rmSync(abs, { force: true });
      else {
        mkdirSync(path.dirname(abs), { recursive: true });
        writeFileSync(abs, content);
      }
    }
    this.git('add', '-A');
    this.git('commit', '-q', ...(amend ? ['--amend'] : []), '-m', message);
    return this.git('rev-parse', 'HEAD');
  }

  /** A git command that talks to the server, without blocking the event loop: the server may run in this very process. */
  async gitAsync(...args: string[]): Promise<string> {
    const { stdout } = await promisify(execFile)('git', args, { cwd: this.dir, env: this.env() });
    return stdout.trim();
  }

  /** Pushes without blocking the event loop: the git server may run in this very process. */
  async push(refspec: string, force = false): Promise<void> {
    await promisify(execFile)('git', ['push', '-q', ...(force ? ['--force'] : []), 'origin', refspec], { cwd: this.dir, env: this.env() });
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

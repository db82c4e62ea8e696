import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

/**
 * `strata`: the command-line client CI pipelines use. It talks to the api over HTTP only.
 *
 *   strata build [DIR] -t REPO[:TAG] [-t ...] [-f Dockerfile] [--target STAGE] [--build-arg K=V]
 *                [--no-cache] [--no-follow]
 *   strata logs BUILD_ID
 *   strata status BUILD_ID
 *
 * STRATA_URL (default http://127.0.0.1:3000) and STRATA_TOKEN configure the server.
 */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
}

const USAGE = `usage:
  strata build [DIR] -t REPO[:TAG] [-t REPO:TAG2] [-f PATH] [--target STAGE] [--build-arg K=V] [--no-cache] [--no-follow]
  strata logs BUILD_ID
  strata status BUILD_ID
environment: STRATA_URL (default http://127.0.0.1:3000), STRATA_TOKEN (required)
`;

class UsageError extends Error {}

interface BuildOptions {
  dir: string;
  repository: string;
  tags: string[];
  dockerfile?: string;
  target?: string;
  buildArgs: string[];
  noCache: boolean;
  follow: boolean;
}

export function parseBuildArgs(argv: string[]): BuildOptions {
  const o: BuildOptions = { dir: '.', repository: '', tags: [], buildArgs: [], noCache: false, follow: true };
  const value = (i: number, flag: string): string => {
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('-')) throw new UsageError(`${flag} needs a value`);
    return v;
  };
  let dirSet = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-t' || a === '--tag') {
      const ref = value(i++, a);
      const colon = ref.lastIndexOf(':');
      const repo = colon > ref.lastIndexOf('/') ? ref.slice(0, colon) : ref;
      const tag = colon > ref.lastIndexOf('/') ? ref.slice(colon + 1) : 'latest';
      if (o.repository && o.repository !== repo) throw new UsageError(`all -t values must name one repository (got ${o.repository} and ${repo})`);
      o.repository = repo;
      o.tags.push(tag);
    } else if (a === '-f' || a === '--file') o.dockerfile = value(i++, a);
    else if (a === '--target') o.target = value(i++, a);
    else if (a === '--build-arg') o.buildArgs.push(value(i++, a));
    else if (a === '--no-cache') o.noCache = true;
    else if (a === '--no-follow') o.follow = false;
    else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else if (!dirSet) {
      o.dir = a;
      dirSet = true;
    } else throw new UsageError(`unexpected argument ${a}`);
  }
  if (!o.repository) throw new UsageError('-t REPO[:TAG] is required');
  return o;
}

function client(io: CliIo) {
  const base = (io.env.STRATA_URL ?? 'http://127.0.0.1:3000').replace(/\/$/, '');
  const token = io.env.STRATA_TOKEN;
  if (!token) throw new UsageError('STRATA_TOKEN is not set');
  const headers = { authorization: `Bearer ${token}` };
  return {
    base,
    async json(method: string, p: string, body?: RequestInit['body'], extra: Record<string, string> = {}) {
      const res = await fetch(`${base}${p}`, { method, headers: { ...headers, ...extra }, body, duplex: 'half' } as RequestInit);
      const text = await res.text();
      let data: unknown = null;
      try {
        data = JSON.parse(text);
      } catch {
        data = { message: text };
      }
      if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${(data as { message?: string }).message ?? text}`);
      return data as Record<string, unknown>;
    },
    stream(p: string, accept: string) {
      return fetch(`${base}${p}`, { headers: { ...headers, accept } });
    },
  };
}

/** The context as a tar stream, made by GNU tar (the server applies .dockerignore). */
function tarStream(dir: string): ReadableStream<Uint8Array> {
  const child = spawn('tar', ['-cf', '-', '-C', dir, '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new ReadableStream({
    start(controller) {
      child.stdout.on('data', (c: Buffer) => controller.enqueue(new Uint8Array(c)));
      child.stdout.on('end', () => controller.close());
      child.on('error', (e) => controller.error(e));
    },
  });
}

/** Prints a build's events as they come; resolves with the final status. */
async function follow(io: CliIo, c: ReturnType<typeof client>, id: string): Promise<string> {
  let last: string | null = null;
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await fetch(`${c.base}/v1/builds/${id}/logs`, {
      headers: { authorization: `Bearer ${io.env.STRATA_TOKEN}`, accept: 'text/event-stream', ...(last ? { 'last-event-id': last } : {}) },
    });
    if (!res.ok || !res.body) throw new Error(`following the log failed: ${res.status}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let sep: number;
      while ((sep = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, sep);
        buf = buf.slice(sep + 2);
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
          else if (line.startsWith('id: ')) last = line.slice(4);
        }
        if (!data) continue;
        const d = JSON.parse(data) as Record<string, unknown>;
        if (event === 'log') io.out(`#${d.step ?? '-'} ${String(d.line)}\n`);
        else if (event === 'end') return String(d.status);
      }
    }
    // The connection dropped before the end: resume where it stopped.
  }
  const b = await c.json('GET', `/v1/builds/${id}`);
  return String(b.status);
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === 'build') {
      const o = parseBuildArgs(rest);
      if (!existsSync(o.dir)) throw new UsageError(`${o.dir} does not exist`);
      const dockerfile = path.join(o.dir, o.dockerfile ?? 'Dockerfile');
      if (!existsSync(dockerfile)) throw new UsageError(`no Dockerfile at ${dockerfile}`);
      readFileSync(dockerfile);
      const c = client(io);
      const q = new URLSearchParams({ repository: o.repository });
      for (const t of o.tags) q.append('tag', t);
      if (o.dockerfile) q.set('dockerfile', o.dockerfile);
      if (o.target) q.set('target', o.target);
      for (const a of o.buildArgs) q.append('buildArg', a);
      if (o.noCache) q.set('noCache', 'true');
      const created = await c.json('POST', `/v1/builds?${q}`, tarStream(o.dir) as unknown as RequestInit['body'], { 'content-type': 'application/x-tar' });
      const id = String(created.id);
      io.err(`build ${id} queued\n`);
      if (!o.follow) {
        io.out(`${id}\n`);
        return 0;
      }
      const status = await follow(io, c, id);
      const b = await c.json('GET', `/v1/builds/${id}`);
      if (status === 'succeeded') {
        io.err(`built ${o.repository}:${o.tags.join(',')} ${String(b.imageDigest)}\n`);
        return 0;
      }
      const error = b.error as { message?: string } | null;
      io.err(`build ${status}: ${error?.message ?? 'no message'}\n`);
      return 1;
    }
    if (command === 'logs' && rest.length === 1) {
      const c = client(io);
      const res = await c.stream(`/v1/builds/${rest[0]}/logs`, 'text/plain');
      if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
      io.out(await res.text());
      return 0;
    }
    if (command === 'status' && rest.length === 1) {
      io.out(`${JSON.stringify(await client(io).json('GET', `/v1/builds/${rest[0]}`), null, 2)}\n`);
      return 0;
    }
    throw new UsageError(command ? `unknown command "${argv.join(' ')}"` : 'no command given');
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`strata: ${e.message}\n${USAGE}`);
      return 2;
    }
    io.err(`strata: ${(e as Error).message}\n`);
    return 1;
  }
}

import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { scanContext, walkContext } from './context-scan.js';
import { MANIFEST_TYPE, manifestBody, uploadContents } from './context-upload.js';
import { cacheDirOf, StatCache } from './stat-cache.js';
import { openRequest, readText } from './http.js';
import { ciIdToken, exchangeIdToken, type OidcSettings, OidcSetupError } from './oidc.js';

/**
 * `strata`: the command-line client CI pipelines use. It talks to the api over HTTP only. `build`
 * takes the flags of `docker buildx build` that go with a build, spelled the same way.
 *
 * STRATA_URL (default http://127.0.0.1:3000) and STRATA_TOKEN configure the server.
 */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
  /** The directory relative paths (-f, src=) are read from; the process's by default. */
  cwd?: string;
}

const USAGE = `usage:
  strata build [OPTIONS] [DIR]    build DIR (default .) and follow its log
  strata logs BUILD_ID            print a build's log
  strata status BUILD_ID          print a build as JSON
  strata trigger create OPTIONS   build a forge repository's pushes (prints the payload URL)
  strata trigger list             print the tenant's triggers as JSON
  strata help                     this text

build options (as docker buildx build spells them):
  -t, --tag REPO[:TAG]            name and tag the image (repeatable; one repository)
  -f, --file PATH                 the Dockerfile, relative to the current directory
                                  (default DIR/Dockerfile); it must lie inside DIR
      --target STAGE              build up to this stage
      --build-arg K=V             set a build argument (repeatable); --build-arg K takes
                                  K's value from the environment, and is skipped if unset
      --secret id=ID,src=FILE     send a secret for RUN --mount=type=secret (repeatable);
      --secret id=ID,env=VAR        the value from a file or an environment variable
                                  (id=ID alone: the variable ID if set, else the file ID)
      --ssh ID=KEYFILE[,KEYFILE]  send private keys for RUN --mount=type=ssh (repeatable);
                                  ID alone or "default" uses $SSH_AUTH_SOCK, which cannot
                                  be forwarded to a remote server: give a key file
      --no-cache                  do not use the cache for any step
      --no-cache-filter STAGE     do not use the cache for this stage's steps (repeatable)
      --no-follow                 print the build id and exit without following the log
      --oidc                      sign in with the CI's OIDC token instead of STRATA_TOKEN:
                                  GitHub Actions (permissions: id-token: write) or
      --oidc-token-env VAR          an ID token in VAR (GitLab CI's id_tokens)
      --oidc-audience AUD         the audience asked of GitHub Actions (default STRATA_URL)
      --oidc-tenant NAME          the tenant, when several tenants' trust policies match
  -h, --help                      this text

trigger create options:
      --repository REPO           the image repository builds go to (required)
      --provider NAME             github, gitlab, gitea or bitbucket (required)
      --clone-url URL             https://host/owner/repo.git or git@host:owner/repo.git (required)
      --rule 'REGEX=TAG[,TAG]'    a ref pattern and its tag templates: {branch} {tag} {sha}
                                  {short_sha} {1}..{9} (repeatable; the first match builds)
  -f, --file PATH                 the Dockerfile inside the context (default Dockerfile)
      --context DIR               the context directory inside the repository (default .)
      --target STAGE, --build-arg K=V, --submodules
      --include PATTERN, --exclude PATTERN   path filters on the pushed files (repeatable)
      --api-url URL               the forge's API for commit statuses (self-hosted forges)
  the webhook secret is STRATA_TRIGGER_SECRET, or made up and printed once; clone and
  status credentials come from STRATA_GIT_TOKEN (and STRATA_GIT_USERNAME), never from flags

environment: STRATA_URL (default http://127.0.0.1:3000), STRATA_TOKEN (required unless --oidc),
  STRATA_CONTEXT_UPLOAD (manifest, the default: send the context's manifest and only the
  files the server lacks; tar: send the whole context as a tar), STRATA_CACHE_DIR (the stat
  cache; default $XDG_CACHE_HOME/strata or ~/.cache/strata)
exit codes: 0 built, 1 the build or a request failed, 2 bad usage
`;

class UsageError extends Error {}

const BUILD_OPTIONS = {
  tag: { type: 'string', short: 't', multiple: true },
  file: { type: 'string', short: 'f' },
  target: { type: 'string' },
  'build-arg': { type: 'string', multiple: true },
  secret: { type: 'string', multiple: true },
  ssh: { type: 'string', multiple: true },
  'no-cache': { type: 'boolean' },
  'no-cache-filter': { type: 'string', multiple: true },
  'no-follow': { type: 'boolean' },
  oidc: { type: 'boolean' },
  'oidc-audience': { type: 'string' },
  'oidc-token-env': { type: 'string' },
  'oidc-tenant': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

/** A secret read on this machine, sent as `Strata-Build-Secret: id=<id>,src=<base64 value>`. */
export interface BuildSecret {
  id: string;
  value: Buffer;
}

export interface BuildOptions {
  dir: string;
  repository: string;
  tags: string[];
  /** The Dockerfile's path inside the context, when not `Dockerfile`. */
  dockerfile?: string;
  target?: string;
  buildArgs: string[];
  secrets: BuildSecret[];
  /** Private keys for RUN --mount=type=ssh, sent as `Strata-Build-SSH: id=<id>,src=<base64 key>`. */
  sshKeys: BuildSecret[];
  noCache: boolean;
  noCacheFilter: string[];
  follow: boolean;
  /** Sign in with the CI's OIDC token (--oidc); null: with STRATA_TOKEN. */
  oidc: OidcSettings | null;
  help: boolean;
}

/** Turns node:util parseArgs' errors into one sentence naming the flag. */
function parseOrExplain<T extends ParseArgsConfig>(config: T, command: string) {
  try {
    return parseArgs(config);
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      const flag = /'([^']+)'/.exec(err.message)?.[1] ?? err.message;
      throw new UsageError(`unknown flag ${flag} for "strata ${command}"`);
    }
    if (err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const flag = (/Option '([^']+)'/.exec(err.message)?.[1] ?? '').replace(/ <value>$/, '');
      if (/argument missing|ambiguous/.test(err.message)) throw new UsageError(`${flag} needs a value`);
      throw new UsageError(`${flag} takes no value`);
    }
    if (err.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw new UsageError(`"strata ${command}" takes no argument ${/'([^']+)'/.exec(err.message)?.[1] ?? ''}`.trimEnd());
    throw new UsageError(err.message);
  }
}

/** `k=v,k=v` fields of --secret and --ssh, as buildx reads them. */
function fields(spec: string, flag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`${flag} "${spec}": expected key=value fields separated by commas`);
    out.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
  }
  return out;
}

const SECRET_ID = /^[A-Za-z0-9._-]{1,128}$/;

function readSecret(spec: string, io: CliIo, cwd: string): BuildSecret {
  const f = fields(spec, '--secret');
  for (const key of f.keys()) {
    if (!['id', 'src', 'source', 'env', 'type'].includes(key)) throw new UsageError(`--secret "${spec}": unknown field "${key}"; use id=ID,src=FILE or id=ID,env=VAR`);
  }
  const id = f.get('id');
  if (!id) throw new UsageError(`--secret "${spec}": id= is required`);
  if (!SECRET_ID.test(id)) throw new UsageError(`--secret: invalid id "${id}"; use letters, digits, ".", "_" or "-"`);
  const src = f.get('src') ?? f.get('source');
  // As buildx: with neither src= nor env=, an environment variable named by the id is used when set, else a file.
  const type = f.get('type') ?? (f.has('env') || (src === undefined && io.env[id] !== undefined) ? 'env' : 'file');
  if (type !== 'file' && type !== 'env') throw new UsageError(`--secret "${spec}": type must be file or env, not "${type}"`);
  if (type === 'env') {
    if (src !== undefined) throw new UsageError(`--secret "${spec}": give either src= or env=, not both`);
    // As buildx: the variable is named by env=, else by the id.
    const name = f.get('env') ?? id;
    const value = io.env[name];
    if (value === undefined) throw new UsageError(`--secret id=${id}: the environment variable ${name} is not set`);
    return { id, value: Buffer.from(value) };
  }
  // As buildx: the file is named by src=, else by the id.
  const file = path.resolve(cwd, src ?? id);
  let value: Buffer;
  try {
    value = readFileSync(file);
  } catch (e) {
    throw new UsageError(`--secret id=${id}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return { id, value };
}

/** `--ssh default`, `--ssh default=$SSH_AUTH_SOCK`, `--ssh ID=KEY[,KEY]`: one entry per private key. */
function readSshKeys(spec: string, io: CliIo, cwd: string): BuildSecret[] {
  const eq = spec.indexOf('=');
  const id = eq < 0 ? spec : spec.slice(0, eq);
  if (!SECRET_ID.test(id)) throw new UsageError(`--ssh: invalid id "${id}"; use letters, digits, ".", "_" or "-" (e.g. --ssh default=~/.ssh/id_ed25519)`);
  const paths = eq < 0 ? [io.env.SSH_AUTH_SOCK ?? ''] : spec.slice(eq + 1).split(',');
  return paths.map((p) => {
    if (p === '') throw new UsageError(`--ssh ${id}: SSH_AUTH_SOCK is not set; give a private key file: --ssh ${id}=PATH`);
    const file = path.resolve(cwd, p.replace(/^~(?=\/)/, io.env.HOME ?? '~'));
    let st;
    try {
      st = statSync(file);
    } catch (e) {
      throw new UsageError(`--ssh ${id}: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (st.isSocket()) {
      // An agent signs but never hands out its keys, and the build runs on another machine.
      throw new UsageError(`--ssh ${id}: ${file} is an SSH agent socket, which cannot be forwarded to a remote build server; give a private key file instead: --ssh ${id}=~/.ssh/id_ed25519`);
    }
    const key = readFileSync(file);
    if (!key.includes('PRIVATE KEY-----')) throw new UsageError(`--ssh ${id}: ${file} is not a PEM or OpenSSH private key`);
    return { id, value: key };
  });
}

/** `--build-arg K=V` as given, `--build-arg K` with K's value from the environment (skipped when unset, as docker does). */
function buildArg(spec: string, io: CliIo): string | null {
  const eq = spec.indexOf('=');
  const name = eq < 0 ? spec : spec.slice(0, eq);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`--build-arg "${spec}": expected NAME=VALUE or NAME`);
  if (eq >= 0) return spec;
  const value = io.env[name];
  return value === undefined ? null : `${name}=${value}`;
}

export function parseBuildArgs(argv: string[], io: CliIo = { out: () => undefined, err: () => undefined, env: {} }): BuildOptions {
  const { values, positionals } = parseOrExplain({ args: argv, options: BUILD_OPTIONS, allowPositionals: true, strict: true }, 'build');
  const o: BuildOptions = {
    dir: '.',
    repository: '',
    tags: [],
    buildArgs: [],
    secrets: [],
    sshKeys: [],
    noCache: values['no-cache'] ?? false,
    noCacheFilter: values['no-cache-filter'] ?? [],
    follow: !(values['no-follow'] ?? false),
    oidc: null,
    help: values.help ?? false,
  };
  if (o.help) return o;
  const cwd = io.cwd ?? process.cwd();
  if (positionals.length > 1) throw new UsageError(`"strata build" takes one directory, got ${positionals.map((p) => `"${p}"`).join(' ')}`);
  o.dir = positionals[0] ?? '.';
  for (const ref of values.tag ?? []) {
    const colon = ref.lastIndexOf(':');
    const hasTag = colon > ref.lastIndexOf('/');
    const repo = hasTag ? ref.slice(0, colon) : ref;
    if (o.repository && o.repository !== repo) throw new UsageError(`all -t values must name one repository (got ${o.repository} and ${repo})`);
    o.repository = repo;
    o.tags.push(hasTag ? ref.slice(colon + 1) : 'latest');
  }
  if (!o.repository) throw new UsageError('-t REPO[:TAG] is required');
  if (values.file !== undefined) {
    // As docker: -f is relative to the current directory, not to the context.
    const contextDir = path.resolve(cwd, o.dir);
    const rel = path.relative(contextDir, path.resolve(cwd, values.file));
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new UsageError(`-f ${values.file}: the Dockerfile must be inside the build context ${o.dir}`);
    }
    o.dockerfile = rel.split(path.sep).join('/');
  }
  o.target = values.target;
  o.buildArgs = (values['build-arg'] ?? []).map((a) => buildArg(a, io)).filter((a): a is string => a !== null);
  o.secrets = (values.secret ?? []).map((s) => readSecret(s, io, cwd));
  const seen = new Set<string>();
  for (const s of o.secrets) {
    if (seen.has(s.id)) throw new UsageError(`--secret id=${s.id} is given more than once`);
    seen.add(s.id);
  }
  o.sshKeys = (values.ssh ?? []).flatMap((s) => readSshKeys(s, io, cwd));
  const oidcFlags = (['oidc-audience', 'oidc-token-env', 'oidc-tenant'] as const).filter((f) => values[f] !== undefined);
  if (!values.oidc && oidcFlags.length > 0) throw new UsageError(`--${oidcFlags[0]} goes with --oidc`);
  if (values.oidc) {
    const tokenEnv = values['oidc-token-env'];
    if (tokenEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(tokenEnv)) throw new UsageError(`--oidc-token-env "${tokenEnv}": give an environment variable name`);
    o.oidc = { audience: values['oidc-audience'] ?? serverUrl(io), tokenEnv, tenant: values['oidc-tenant'] };
  }
  return o;
}

const TRIGGER_OPTIONS = {
  repository: { type: 'string' },
  provider: { type: 'string' },
  'clone-url': { type: 'string' },
  'api-url': { type: 'string' },
  rule: { type: 'string', multiple: true },
  file: { type: 'string', short: 'f' },
  context: { type: 'string' },
  target: { type: 'string' },
  'build-arg': { type: 'string', multiple: true },
  include: { type: 'string', multiple: true },
  exclude: { type: 'string', multiple: true },
  submodules: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

/** `strata trigger create` flags as the POST /v1/triggers body (without the secret and credentials). */
export function parseTriggerArgs(argv: string[]): Record<string, unknown> {
  const { values: v } = parseOrExplain({ args: argv, options: TRIGGER_OPTIONS, strict: true, allowPositionals: false }, 'trigger create');
  for (const flag of ['repository', 'provider', 'clone-url'] as const) if (!v[flag]) throw new UsageError(`--${flag} is required`);
  if (!v.rule?.length) throw new UsageError('at least one --rule is required');
  const body: Record<string, unknown> = {
    repository: v.repository,
    provider: v.provider,
    cloneUrl: v['clone-url'],
    // The tag templates never hold "=", the ref pattern may: split at the last one.
    rules: v.rule.map((r) => {
      const eq = r.lastIndexOf('=');
      if (eq <= 0) throw new UsageError(`--rule ${r}: expected REF_REGEX=TAG[,TAG...]`);
      return { ref: r.slice(0, eq), tags: r.slice(eq + 1).split(',').filter(Boolean) };
    }),
  };
  if (v['api-url']) body.apiUrl = v['api-url'];
  if (v.file) body.dockerfile = v.file;
  if (v.context) body.context = v.context;
  if (v.target) body.target = v.target;
  if (v.submodules) body.submodules = true;
  if (v['build-arg']?.length) {
    body.buildArgs = Object.fromEntries(
      v['build-arg'].map((kv) => {
        const eq = kv.indexOf('=');
        if (eq <= 0) throw new UsageError(`--build-arg ${kv}: expected NAME=VALUE`);
        return [kv.slice(0, eq), kv.slice(eq + 1)];
      }),
    );
  }
  if (v.include?.length || v.exclude?.length) body.paths = { ...(v.include?.length ? { include: v.include } : {}), ...(v.exclude?.length ? { exclude: v.exclude } : {}) };
  return body;
}

/** Creates a trigger; prints its payload URL, and the secret once when this command made it up. */
async function createTrigger(argv: string[], io: CliIo): Promise<number> {
  const body = parseTriggerArgs(argv);
  const given = io.env.STRATA_TRIGGER_SECRET;
  const secret = given || randomBytes(24).toString('base64url');
  body.secret = secret;
  if (io.env.STRATA_GIT_TOKEN) body.credentials = { token: io.env.STRATA_GIT_TOKEN, ...(io.env.STRATA_GIT_USERNAME ? { username: io.env.STRATA_GIT_USERNAME } : {}) };
  const c = client(io);
  const created = await c.json('POST', '/v1/triggers', JSON.stringify(body), [['content-type', 'application/json']]);
  io.out(`trigger ${String(created.id)}\npayload URL: ${c.base}${String(created.hookUrl)}\ncontent type: application/json\n`);
  // Shown once: it is stored sealed and never returned.
  if (!given) io.out(`secret: ${secret}\n`);
  return 0;
}

function serverUrl(io: CliIo): string {
  return (io.env.STRATA_URL ?? 'http://127.0.0.1:3000').replace(/\/$/, '');
}

function client(io: CliIo) {
  const base = serverUrl(io);
  const token = io.env.STRATA_TOKEN;
  if (!token) throw new UsageError('STRATA_TOKEN is not set');
  const auth: [string, string] = ['authorization', `Bearer ${token}`];
  return {
    base,
    async json(method: string, p: string, body?: RequestInit['body'], extra: Array<[string, string]> = []) {
      let status: number;
      let text: string;
      if (body === undefined || body === null || typeof body === 'string' || body instanceof Uint8Array) {
        // A body in hand (or none): node:http, no undici to load (./http.ts).
        const res = await openRequest(`${base}${p}`, { method, headers: [auth, ...extra], ...(body != null ? { body } : {}) });
        status = res.statusCode ?? 0;
        text = await readText(res);
      } else {
        const res = await fetch(`${base}${p}`, { method, headers: [auth, ...extra], body, duplex: 'half' } as RequestInit);
        status = res.status;
        text = await res.text();
      }
      let data: unknown = null;
      try {
        data = JSON.parse(text);
      } catch {
        data = { message: text };
      }
      if (status < 200 || status > 299) throw new RequestError(method, p, status, (data as { message?: string }).message ?? text, data);
      return data as Record<string, unknown>;
    },
    stream(p: string, accept: string) {
      return fetch(`${base}${p}`, { headers: [auth, ['accept', accept]] });
    },
  };
}

class RequestError extends Error {
  constructor(
    method: string,
    p: string,
    readonly status: number,
    readonly serverMessage: string,
    /** The answer's JSON body. */
    readonly data: unknown = null,
  ) {
    super(`${method} ${p.split('?')[0]}: ${status} ${serverMessage}`);
  }
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

/**
 * Starts the build from the context's manifest (docs/adr/0025). The build is sent first: when the
 * tenant's store holds every content (an unchanged rebuild) that one request is all; otherwise the
 * api answers which contents it lacks (keeping the manifest), only those are uploaded, and the build
 * is sent again by the manifest's digest: the manifest crosses the wire once.
 * Resolves with the created build, or null when the server predates manifests (the caller sends a tar).
 */
async function buildFromManifest(io: CliIo, c: ReturnType<typeof client>, dir: string, dockerfile: string, buildPath: string, extra: Array<[string, string]>, mark: (what: string) => void): Promise<Record<string, unknown> | null> {
  const cache = await StatCache.open(cacheDirOf(io.env), dir);
  const walked = walkContext(dir, { dockerfile });
  const byDigest = (digest: string) => c.json('POST', buildPath, '', [['content-type', MANIFEST_TYPE], ['strata-context-digest', digest], ...extra]);
  // A walk that saw the same stamps as the last one the server took makes the same manifest (docs/adr/0037):
  // its digest is sent without making the manifest, reading the per-file cache or hashing anything.
  const known = cache.knownWalk(walked.key);
  if (known) {
    mark('scanned');
    try {
      const created = await byDigest(known.digest);
      io.err(`context: ${known.files} files, ${known.bytes} bytes, 0 hashed; uploaded 0 contents (0 bytes) and the manifest (0 bytes) in 1 request (the server had it: sent by its digest; the walk was unchanged, no manifest made)\n`);
      return created;
    } catch (e) {
      // The server does not have it (another server, a token of another tenant): make the manifest.
      if (!(e instanceof RequestError) || e.status >= 500) throw e;
    }
  }
  const scan = await scanContext(dir, cache, { dockerfile }, walked);
  mark(known ? 'manifest made' : 'scanned');
  // One JSON text for the digest and, only when the server lacks the manifest, the gzip body.
  const json = JSON.stringify(scan.manifest);
  let body = null as Buffer | null;
  const send = () => c.json('POST', buildPath, (body ??= manifestBody(scan, json)), [['content-type', MANIFEST_TYPE], ['content-encoding', 'gzip'], ...extra]);
  let created: Record<string, unknown> | null = null;
  let uploaded = { bytes: 0, requests: 0, contents: 0 };
  // Requests made to start the build (the contents' batches are counted apart).
  let sends = known ? 1 : 0;
  // First by digest alone: a manifest this tenant built from before is not sent again.
  const digest = `sha256:${createHash('sha256').update(json).digest('hex')}`;
  cache.rememberWalk({ key: walked.key, digest, files: scan.files, bytes: scan.bytes }, walked.newestFileMtimeNs);
  if (known?.digest !== digest) {
    sends += 1;
    try {
      created = await byDigest(digest);
    } catch (e) {
      if (!(e instanceof RequestError) || e.status >= 500) throw e;
    }
  }
  if (created) {
    await cache.save(dir).catch((e: Error) => io.err(`strata: could not save the stat cache: ${e.message}\n`));
    io.err(`context: ${scan.files} files, ${scan.bytes} bytes, ${scan.hashed} hashed; uploaded 0 contents (0 bytes) and the manifest (0 bytes) in ${count(sends, 'request', 'requests')} (the server had it: sent by its digest)\n`);
    return created;
  }
  sends += 1;
  try {
    created = await send();
  } catch (e) {
    if (!(e instanceof RequestError)) throw e;
    if (e.status === 415 || e.status === 404) return null;
    const missing = e.status === 400 ? (e.data as { missing?: unknown } | null)?.missing : undefined;
    if (!Array.isArray(missing)) throw e;
    const up = await uploadContents({ post: (p, b, h) => c.json('POST', p, b, h) }, scan, missing as string[]);
    uploaded = { ...up, contents: missing.length };
    mark('contents uploaded');
    // The api kept the refused manifest (`pending`): name it by its digest rather than send it again.
    // It answers 409 when it no longer has it (an hour passed, another build took it): then send it.
    if ((e.data as { pending?: unknown } | null)?.pending === true) {
      sends += 1;
      try {
        created = await byDigest(digest);
      } catch (again) {
        if (!(again instanceof RequestError) || again.status !== 409) throw again;
      }
    }
    if (!created) {
      sends += 1;
      created = await send();
    }
  }
  // Kept only once the server took the contents: a failed upload is hashed again next time (cheap), never trusted wrongly.
  await cache.save(dir).catch((e: Error) => io.err(`strata: could not save the stat cache: ${e.message}\n`));
  io.err(
    `context: ${scan.files} files, ${scan.bytes} bytes, ${scan.hashed} hashed; uploaded ${count(uploaded.contents, 'content', 'contents')} (${uploaded.bytes} bytes) and the manifest (${body?.length ?? 0} bytes) in ${count(sends + uploaded.requests, 'request', 'requests')}\n`,
  );
  return created;
}

/** Prints a build's events as they come; resolves with the `end` event's status and image digest. */
async function follow(io: CliIo, c: ReturnType<typeof client>, id: string): Promise<{ status: string; imageDigest?: string }> {
  let last: string | null = null;
  for (let attempt = 0; attempt < 5; attempt++) {
    const res = await openRequest(`${c.base}/v1/builds/${id}/logs`, {
      method: 'GET',
      // The api sends a heartbeat every 15 s: four missed, and the stream is opened again.
      idleMs: 60_000,
      headers: [
        ['authorization', `Bearer ${io.env.STRATA_TOKEN}`],
        ['accept', 'text/event-stream'],
        ...(last ? ([['last-event-id', last]] as Array<[string, string]>) : []),
      ],
    });
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299) {
      res.resume();
      throw new Error(`following the log failed: ${status}`);
    }
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res as AsyncIterable<Uint8Array>) {
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
          else if (event === 'end') return { status: String(d.status), ...(typeof d.imageDigest === 'string' ? { imageDigest: d.imageDigest } : {}) };
        }
      }
    } catch (e) {
      // A connection reset mid-stream (an api restarting) resumes below; anything else is ours.
      if (!res.errored) throw e;
    }
    // The connection dropped before the end: resume where it stopped.
  }
  const b = await c.json('GET', `/v1/builds/${id}`);
  return { status: String(b.status) };
}

async function build(o: BuildOptions, io: CliIo): Promise<number> {
  // STRATA_TRACE=1: where the time went, on stderr (for benchmarks and slow CI runs).
  const t0 = performance.now();
  const marks: string[] = [];
  const mark = (what: string) => {
    // With the CLI's own CPU time so far (user + system, all its threads): whether the CLI or the server is the bottleneck.
    if (io.env.STRATA_TRACE) {
      const ru = process.resourceUsage();
      marks.push(`${what} ${Math.round(performance.now() - t0)} ms (cpu ${Math.round((ru.userCPUTime + ru.systemCPUTime) / 1000)} ms)`);
    }
  };
  const cwd = io.cwd ?? process.cwd();
  const dir = path.resolve(cwd, o.dir);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`the build context ${o.dir} is not a directory`);
  const dockerfile = path.join(dir, o.dockerfile ?? 'Dockerfile');
  if (!existsSync(dockerfile)) throw new UsageError(`no Dockerfile at ${path.relative(cwd, dockerfile) || dockerfile}`);
  const c = client(io);
  const q = new URLSearchParams({ repository: o.repository });
  for (const t of o.tags) q.append('tag', t);
  if (o.dockerfile) q.set('dockerfile', o.dockerfile);
  if (o.target) q.set('target', o.target);
  for (const a of o.buildArgs) q.append('buildArg', a);
  if (o.noCache) q.set('noCache', 'true');
  for (const s of o.noCacheFilter) q.append('noCacheFilter', s);
  const upload = (io.env.STRATA_CONTEXT_UPLOAD ?? 'manifest').toLowerCase();
  if (upload !== 'manifest' && upload !== 'tar') throw new UsageError(`STRATA_CONTEXT_UPLOAD must be "manifest" or "tar", not "${io.env.STRATA_CONTEXT_UPLOAD}"`);
  const extra: Array<[string, string]> = [];
  for (const s of o.secrets) extra.push(['strata-build-secret', `id=${s.id},src=${s.value.toString('base64')}`]);
  for (const k of o.sshKeys) extra.push(['strata-build-ssh', `id=${k.id},src=${k.value.toString('base64')}`]);
  let created: Record<string, unknown> | null = null;
  try {
    if (upload === 'manifest') created = await buildFromManifest(io, c, dir, o.dockerfile ?? 'Dockerfile', `/v1/builds?${q}`, extra, mark);
    created ??= await c.json('POST', `/v1/builds?${q}`, tarStream(dir) as unknown as RequestInit['body'], [['content-type', 'application/x-tar'], ...extra]);
  } catch (e) {
    // A server that cannot use SSH keys yet says so; the user learns which flag it was.
    if (o.sshKeys.length > 0 && e instanceof RequestError && e.status === 400 && /ssh/i.test(e.serverMessage)) {
      throw new Error(`--ssh is not supported by this server yet: ${e.serverMessage}`);
    }
    throw e;
  }
  const id = String(created.id);
  io.err(`build ${id} queued\n`);
  if (!o.follow) {
    io.out(`${id}\n`);
    return 0;
  }
  mark('build queued');
  const end = await follow(io, c, id);
  mark('log ended');
  // A succeeded build's end event names its image: no request after it (older servers: one GET).
  if (end.status === 'succeeded' && end.imageDigest) {
    if (marks.length > 0) io.err(`trace: ${marks.join(', ')}\n`);
    io.err(`built ${o.repository}:${o.tags.join(',')} ${end.imageDigest}\n`);
    return 0;
  }
  const status = end.status;
  const b = await c.json('GET', `/v1/builds/${id}`);
  if (marks.length > 0) io.err(`trace: ${marks.join(', ')}; the build's own times: queued ${String(b.createdAt)}, started ${String(b.startedAt)}, finished ${String(b.finishedAt)}\n`);
  if (status === 'succeeded') {
    io.err(`built ${o.repository}:${o.tags.join(',')} ${String(b.imageDigest)}\n`);
    return 0;
  }
  const error = b.error as { message?: string } | null;
  io.err(`build ${status}: ${error?.message ?? 'no message'}\n`);
  return 1;
}

/** `strata logs|status BUILD_ID`. */
function buildIdArgument(argv: string[], command: string): string | null {
  const { values, positionals } = parseOrExplain({ args: argv, options: { help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true }, command);
  if (values.help) return null;
  if (positionals.length !== 1) throw new UsageError(`"strata ${command}" takes one BUILD_ID`);
  return positionals[0];
}

export async function run(argv: string[], io: CliIo): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === undefined) throw new UsageError('no command given');
    if (command === 'help' || command === '--help' || command === '-h') {
      io.out(USAGE);
      return 0;
    }
    if (command === 'build') {
      const o = parseBuildArgs(rest, io);
      if (o.help) {
        io.out(USAGE);
        return 0;
      }
      if (o.oidc) {
        let idToken: string;
        try {
          idToken = await ciIdToken(io.env, o.oidc);
        } catch (e) {
          if (e instanceof OidcSetupError) throw new UsageError(e.message);
          throw e;
        }
        const signedIn = await exchangeIdToken(serverUrl(io), idToken, o.oidc.tenant);
        io.err(`signed in to tenant ${signedIn.tenant} with the CI's OIDC token (${signedIn.scopes.join(', ')}; until ${signedIn.expiresAt})\n`);
        return await build(o, { ...io, env: { ...io.env, STRATA_TOKEN: signedIn.token } });
      }
      return await build(o, io);
    }
    if (command === 'logs' || command === 'status') {
      const id = buildIdArgument(rest, command);
      if (id === null) {
        io.out(USAGE);
        return 0;
      }
      const c = client(io);
      if (command === 'status') {
        io.out(`${JSON.stringify(await c.json('GET', `/v1/builds/${id}`), null, 2)}\n`);
        return 0;
      }
      const res = await c.stream(`/v1/builds/${id}/logs`, 'text/plain');
      if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
      io.out(await res.text());
      return 0;
    }
    if (command === 'trigger' && rest[0] === 'create') return await createTrigger(rest.slice(1), io);
    if (command === 'trigger' && rest[0] === 'list' && rest.length === 1) {
      io.out(`${JSON.stringify(await client(io).json('GET', '/v1/triggers'), null, 2)}\n`);
      return 0;
    }
    throw new UsageError(command.startsWith('-') ? `unknown flag ${command}` : `unknown command "${command}"`);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`strata: ${e.message}\nRun "strata --help" for the usage.\n`);
      return 2;
    }
    // fetch says only "fetch failed"; what failed (a reset, a refused connection, a file read) is its cause.
    const cause = (e as Error).cause as Error | undefined;
    io.err(`strata: ${(e as Error).message}${cause?.message ? `: ${cause.message}` : ''}\n`);
    return 1;
  }
}

/** `1 request`, `4 requests`. */
function count(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

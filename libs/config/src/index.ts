import { createHash, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * Environment configuration, validated once at start-up. A bad setting stops the process with a
 * message naming the variable, rather than failing later somewhere far from the cause.
 */
export interface StrataConfig {
  port: number;
  host: string;
  /** The URL users reach the api at; used in printed URLs and registry auth challenges. */
  publicUrl: string;
  databaseUrl: string;
  redisUrl: string;
  s3: { endpoint?: string; region: string; bucket: string; accessKeyId?: string; secretAccessKey?: string; forcePathStyle: boolean };
  /** Where a worker keeps unpacked layers and build directories. */
  /**
   * STRATA_STORAGE_DIR: keep blobs, contexts and logs in this directory (the filesystem driver)
   * instead of S3. Only for one machine, where api and workers share the disk; S3 otherwise.
   */
  storageDir?: string;
  dataDir: string;
  /** Largest build context accepted, compressed upload and uncompressed alike. */
  maxContextBytes: number;
  /** Most files a build context may hold. */
  maxContextEntries: number;
  workerConcurrency: number;
  /** How workers pick the next build: `fair` across tenants (docs/adr/0023) or `fifo` (STRATA_SCHEDULING). */
  scheduling: 'fair' | 'fifo';
  /** How RUN steps execute on a worker (STRATA_RUN_*). */
  run: RunSettings;
  /** Prefix for BullMQ keys, so several deployments (or test runs) can share one Redis. */
  queuePrefix: string;
  /** HMAC key that signs registry bearer tokens; every api replica must share it. */
  registrySecret: string;
  /** AES-256-GCM key (32 bytes) that seals the secrets sent with a build until it ends; api and workers share it. */
  secretsKey: Buffer;
  /** Base images pulled from other registries (FROM). */
  pull: PullSettings;
  /**
   * CIDRs that tenant-given URLs (git clone URLs, forge APIs) may reach although they are loopback,
   * link-local or private (STRATA_ALLOW_PRIVATE_SOURCES, comma-separated); empty by default.
   */
  allowPrivateSources: string[];
  /** ADD <url>: the largest file fetched and the longest a fetch may take (STRATA_ADD_URL_MAX_BYTES, STRATA_ADD_URL_TIMEOUT_MS). */
  addUrl: { maxBytes: number; timeoutMs: number };
  /** sha256 (hex) of the operator's token, which alone reaches /v1/admin; null turns the admin API off. */
  operatorTokenHash: string | null;
  /** Requests per minute, counted in Redis so every api process shares the window. */
  rateLimit: {
    tokenPerMinute: number;
    tenantPerMinute: number;
    /** OIDC exchanges (POST /v1/auth/oidc, which takes no bearer token) per source address. */
    oidcPerMinute: number;
  };
  /** Build log limits: past a cap a line says how much was dropped; nothing is cut silently. */
  log: {
    /** Bytes of output one step may log. */
    stepMaxBytes: number;
    /** Bytes of output one build may log. */
    buildMaxBytes: number;
    /** Longest line kept; longer lines are cut with a marker. */
    lineMaxBytes: number;
    /** How long a finished build's Redis stream lingers once its log is archived to S3. */
    streamTtlSeconds: number;
  };
  /** Garbage collection, run by one worker at a time on a schedule. */
  gc: {
    /** How often; 0 turns the schedule off. */
    intervalMs: number;
    /** Blobs younger than this are never collected (a push or build may be about to reference them). */
    graceMs: number;
    /** Per-tenant budget for cached layers; least recently used entries beyond it are evicted. */
    cacheBudgetBytes: number;
    /** Cache entries unused this long are evicted. */
    cacheMaxIdleMs: number;
    /** Disk budget for the layers a worker keeps unpacked; least recently used unused ones go first. */
    workerLayersMaxBytes: number;
    /**
     * A tenant's context-store content no build has named for this long is collected (docs/adr/0032);
     * from three quarters of it on, the api already reports it missing, so a client uploads it again.
     */
    contextRetentionMs: number;
  };
  /** Keeping the queue true to the build table (docs/adr/0011): one reconciler at a time per queue. */
  reconcile: {
    /** How often a worker tries to reconcile; 0 turns it off. */
    intervalMs: number;
    /** A worker not heard from this long is gone: its running builds are handed back. */
    workerStaleMs: number;
    /** Claims a build gets before a dying worker fails it instead of handing it back again. */
    maxAttempts: number;
    /** How long SIGTERM waits for running builds before handing them back to the queue. */
    drainMs: number;
  };
}

/**
 * RUN step settings. `network` is what `RUN` without `--network` (or `--network=default`) gets:
 * `bridge` (the default, as docker build has: own netns, veth pair and NAT to the internet, never to
 * the worker, other steps, loopback, link-local or private ranges unless allowed by
 * STRATA_ALLOW_PRIVATE_SOURCES; docs/adr/0024), `none` (loopback only: no egress for the
 * deployment) or `host`. Limits apply per RUN container.
 */
export interface RunSettings {
  network: 'none' | 'bridge' | 'host';
  /** The bridge's containers' subnet (STRATA_RUN_SUBNET), a 10.N.0.0/16 carved into one /30 per step. */
  subnet: string;
  /** Memory limit per RUN (no swap on top). */
  memoryBytes: number;
  /** Processes and threads per RUN. */
  pids: number;
  /** CPU cores per RUN; 0 means no quota. */
  cpus: number;
  /** Wall-clock limit per RUN step. */
  stepTimeoutMs: number;
  /** Wall-clock limit for a whole build, from when a worker takes it. */
  buildTimeoutMs: number;
  /** `RUN --security=insecure` runs privileged (STRATA_RUN_ALLOW_INSECURE=true); refused otherwise. */
  allowInsecure: boolean;
  /**
   * The OCI runtime of RUN steps (STRATA_RUN_RUNTIME): `auto` (the default) is crun where it can run
   * on this host and runc elsewhere (the worker logs why at start), `crun` (the worker refuses to
   * start where it cannot run), `runc`, or gVisor's runsc for a kernel of its own per step
   * (docs/adr/0038).
   */
  runtime: 'auto' | 'runc' | 'crun' | 'runsc';
  /** runsc's platform (STRATA_RUN_RUNSC_PLATFORM): ptrace runs anywhere, kvm needs /dev/kvm. */
  runscPlatform: 'ptrace' | 'kvm' | 'systrap';
  /**
   * User namespaces for runc steps (STRATA_RUN_USERNS): `auto` (the default) uses them where this
   * kernel and filesystem allow (else logs a warning at start and runs steps as host root), `1` is
   * `on` (the worker refuses to start without them), `0` is `off` (docs/adr/0022). Device nodes are
   * made for user-namespaced steps by the mknod agent.
   */
  userns?: 'auto' | 'on' | 'off';
  /** First host uid/gid of the steps' ranges (STRATA_USERNS_BASE), a multiple of 65536; default 2^30. */
  usernsBase?: number;
  /** Ranges of 65536 ids from the base (STRATA_USERNS_RANGES): steps that may run at once on the host; default 256. */
  usernsRanges?: number;
  /**
   * The resolvers the worker's DNS forwarder asks for bridge steps (STRATA_RUN_DNS, comma-separated
   * `ip` or `ip:port`, IPv6 in brackets with a port); empty: the worker's /etc/resolv.conf.
   */
  dns: Array<{ address: string; port: number }>;
}

/**
 * Where FROM pulls from. `upstreamRegistry` is where a short name (`busybox:1`) goes when the tenant
 * has no repository of that name (Docker Hub style: `library/` for single-component names when it is
 * Docker Hub). `insecureRegistries` are hosts (optionally with port) spoken to over plain HTTP.
 */
export interface PullSettings {
  /** null when `STRATA_UPSTREAM_REGISTRY=none`: short names then resolve only to the tenant's repositories. */
  upstreamRegistry: string | null;
  insecureRegistries: string[];
  /** How long a registry may take to start answering a request before the pull fails (STRATA_PULL_TIMEOUT_MS). */
  responseTimeoutMs: number;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

function required(env: Env, name: string): string {
  const v = env[name];
  if (!v) throw new ConfigError(`${name} is not set`);
  return v;
}

/**
 * STRATA_CONTEXT_RETENTION_MS (default 14 days). The collector moves a content's last use forward at
 * most one gc interval after a build named it, and the api stops vouching for a content at three
 * quarters of the retention: the remaining quarter must hold several gc intervals.
 */
function contextRetention(env: Env): number {
  const retention = int(env, 'STRATA_CONTEXT_RETENTION_MS', 14 * 24 * 60 * 60 * 1000, 60_000);
  const interval = int(env, 'STRATA_GC_INTERVAL_MS', 60 * 60 * 1000);
  if (interval > 0 && interval * 4 > retention / 4) {
    throw new ConfigError(`STRATA_CONTEXT_RETENTION_MS (${retention}) must be at least 16 times STRATA_GC_INTERVAL_MS (${interval}), so a content a build named is marked used long before it could be collected`);
  }
  return retention;
}

/**
 * How long the api keeps a context manifest it refused for missing contents
 * (`context-pending/<tenant>/<digest>`), for the build by digest that follows their upload; the
 * collector deletes those left twice as long (docs/adr/0025).
 */
export const CONTEXT_PENDING_MANIFEST_MS = 60 * 60 * 1000;

/** From when (before `now`) the api treats a stored context content as missing: three quarters of the retention. */
export function contextStaleBefore(config: Pick<StrataConfig, 'gc'>, now = Date.now()): Date {
  return new Date(now - Math.floor((config.gc.contextRetentionMs * 3) / 4));
}

function int(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min) throw new ConfigError(`${name} must be an integer of at least ${min}, got "${raw}"`);
  return Number(raw);
}

function url(env: Env, name: string, protocols: string[]): string {
  const v = required(env, name);
  let parsed: URL;
  try {
    parsed = new URL(v);
  } catch {
    throw new ConfigError(`${name} is not a URL: "${v}"`);
  }
  if (!protocols.includes(parsed.protocol)) throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got "${parsed.protocol}"`);
  return v;
}

const MIN_SECRET_LENGTH = 32;

/**
 * STRATA_REGISTRY_SECRET, or in development a key generated once and kept in `.strata/registry-secret`
 * (so api replicas started from one checkout agree). Production must set it explicitly.
 */
function registrySecret(env: Env): string {
  const given = env.STRATA_REGISTRY_SECRET;
  if (given !== undefined && given !== '') {
    if (given.length < MIN_SECRET_LENGTH) throw new ConfigError(`STRATA_REGISTRY_SECRET must be at least ${MIN_SECRET_LENGTH} characters long, got ${given.length}`);
    return given;
  }
  if (env.NODE_ENV === 'production') throw new ConfigError('STRATA_REGISTRY_SECRET is not set');
  const { file, text } = developmentKey(env, 'registry-secret', 'base64url');
  const stored = text.trim();
  if (stored.length < MIN_SECRET_LENGTH) throw new ConfigError(`${file} holds a registry secret shorter than ${MIN_SECRET_LENGTH} characters`);
  return stored;
}

/**
 * STRATA_SECRETS_KEY (32 bytes, base64 or base64url), or in development a key generated once and kept
 * in `.strata/secrets-key`, like the registry secret. Production must set it explicitly.
 */
function secretsKey(env: Env): Buffer {
  const decode = (raw: string, where: string): Buffer => {
    const text = raw.trim();
    if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) throw new ConfigError(`${where} must be 32 bytes in base64, got characters that are not base64`);
    const key = Buffer.from(text.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    if (key.length !== 32) throw new ConfigError(`${where} must be 32 bytes in base64, got ${key.length} bytes`);
    return key;
  };
  const given = env.STRATA_SECRETS_KEY;
  if (given !== undefined && given !== '') return decode(given, 'STRATA_SECRETS_KEY');
  if (env.NODE_ENV === 'production') throw new ConfigError('STRATA_SECRETS_KEY is not set');
  const { file, text } = developmentKey(env, 'secrets-key', 'base64');
  return decode(text, file);
}

/**
 * STRATA_OPERATOR_TOKEN_SHA256 (the hex sha256 of the operator's token, so the secret itself sits in
 * no environment), or in development the token `npm start` writes to `.strata/operator-token`.
 */
function operatorTokenHash(env: Env): string | null {
  const given = env.STRATA_OPERATOR_TOKEN_SHA256;
  if (given !== undefined && given !== '') {
    if (!/^[0-9a-f]{64}$/.test(given)) throw new ConfigError('STRATA_OPERATOR_TOKEN_SHA256 must be 64 lowercase hex characters (sha256sum of the token)');
    return given;
  }
  if (env.NODE_ENV === 'production') return null;
  const file = path.join(env.STRATA_STATE_DIR ?? '.strata', 'operator-token');
  return existsSync(file) ? createHash('sha256').update(readFileSync(file, 'utf8').trim()).digest('hex') : null;
}

/**
 * A random 32-byte key kept in `.strata/<name>` for development, made on first use. Written with
 * 'wx', so a replica that loses the race to create it reads the winner's key.
 */
function developmentKey(env: Env, name: string, encoding: 'base64' | 'base64url'): { file: string; text: string } {
  const file = path.join(env.STRATA_STATE_DIR ?? '.strata', name);
  if (!existsSync(file)) {
    mkdirSync(path.dirname(file), { recursive: true });
    try {
      writeFileSync(file, randomBytes(32).toString(encoding), { flag: 'wx', mode: 0o600 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return { file, text: readFileSync(file, 'utf8') };
}

function runSettings(env: Env): RunSettings {
  const network = env.STRATA_RUN_NETWORK || 'bridge';
  const subnet = env.STRATA_RUN_SUBNET || '10.213.0.0/16';
  const octet = /^10\.(\d{1,3})\.0\.0\/16$/.exec(subnet);
  if (!octet || Number(octet[1]) > 255) throw new ConfigError(`STRATA_RUN_SUBNET must be a 10.N.0.0/16 range, got "${subnet}"`);
  if (network !== 'none' && network !== 'bridge' && network !== 'host') {
    throw new ConfigError(`STRATA_RUN_NETWORK must be none, bridge or host, got "${network}"`);
  }
  const insecure = env.STRATA_RUN_ALLOW_INSECURE || 'false';
  if (insecure !== 'true' && insecure !== 'false') throw new ConfigError(`STRATA_RUN_ALLOW_INSECURE must be true or false, got "${insecure}"`);
  const runtime = env.STRATA_RUN_RUNTIME || 'auto';
  if (runtime !== 'auto' && runtime !== 'runc' && runtime !== 'crun' && runtime !== 'runsc') {
    throw new ConfigError(`STRATA_RUN_RUNTIME must be auto, runc, crun or runsc, got "${runtime}"`);
  }
  const runscPlatform = env.STRATA_RUN_RUNSC_PLATFORM || 'ptrace';
  if (runscPlatform !== 'ptrace' && runscPlatform !== 'kvm' && runscPlatform !== 'systrap') {
    throw new ConfigError(`STRATA_RUN_RUNSC_PLATFORM must be ptrace, kvm or systrap, got "${runscPlatform}"`);
  }
  const usernsRaw = env.STRATA_RUN_USERNS ?? '';
  if (!['', '0', '1', 'auto'].includes(usernsRaw)) throw new ConfigError(`STRATA_RUN_USERNS must be 0, 1 or auto, got "${usernsRaw}"`);
  const usernsBase = int(env, 'STRATA_USERNS_BASE', 2 ** 30, 65536);
  if (usernsBase % 65536 !== 0) throw new ConfigError(`STRATA_USERNS_BASE must be a multiple of 65536, got "${usernsBase}"`);
  const usernsRanges = int(env, 'STRATA_USERNS_RANGES', 256, 1);
  if (usernsBase + usernsRanges * 65536 > 2 ** 32 - 1) {
    throw new ConfigError(`STRATA_USERNS_BASE + STRATA_USERNS_RANGES × 65536 must stay below 2^32 - 1, got ${usernsBase} + ${usernsRanges} × 65536`);
  }
  const cpusRaw = env.STRATA_RUN_CPUS ?? '';
  if (cpusRaw !== '' && !/^\d+(\.\d+)?$/.test(cpusRaw)) throw new ConfigError(`STRATA_RUN_CPUS must be a number of cores such as 1.5, got "${cpusRaw}"`);
  return {
    network,
    subnet,
    memoryBytes: int(env, 'STRATA_RUN_MEMORY_BYTES', 2 * 1024 ** 3, 4 * 1024 ** 2),
    pids: int(env, 'STRATA_RUN_PIDS', 4096, 8),
    cpus: cpusRaw === '' ? 0 : Number(cpusRaw),
    stepTimeoutMs: int(env, 'STRATA_RUN_STEP_TIMEOUT_MS', 60 * 60 * 1000, 100),
    buildTimeoutMs: int(env, 'STRATA_BUILD_TIMEOUT_MS', 2 * 60 * 60 * 1000, 100),
    allowInsecure: insecure === 'true',
    runtime,
    runscPlatform,
    userns: usernsRaw === '1' ? 'on' : usernsRaw === '0' ? 'off' : 'auto',
    usernsBase,
    usernsRanges,
    dns: resolverList(env, 'STRATA_RUN_DNS'),
  };
}

/** `10.0.0.2`, `10.0.0.2:5353`, `fd00::53` or `[fd00::53]:53`, comma-separated; port 53 unless given. */
function resolverList(env: Env, name: string): Array<{ address: string; port: number }> {
  return (env[name] ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '')
    .map((item) => {
      const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(item) ?? /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d+))?$/.exec(item) ?? (isIP(item) === 6 ? [item, item] : null);
      const port = m?.[2] === undefined ? 53 : Number(m[2]);
      if (!m || isIP(m[1]!) === 0 || port < 1 || port > 65535) {
        throw new ConfigError(`${name} must be comma-separated resolver addresses such as 10.0.0.2 or 10.0.0.2:5353 ([v6]:port for IPv6); "${item}" is not one`);
      }
      return { address: m[1]!, port };
    });
}

function pullSettings(env: Env): PullSettings {
  const upstream = (env.STRATA_UPSTREAM_REGISTRY || 'registry-1.docker.io').replace(/\/+$/, '');
  const insecureList = (env.STRATA_INSECURE_REGISTRIES ?? '127.0.0.1,localhost')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter((h) => h !== '');
  const responseTimeoutMs = int(env, 'STRATA_PULL_TIMEOUT_MS', 30_000, 100);
  if (upstream === 'none') return { upstreamRegistry: null, insecureRegistries: insecureList, responseTimeoutMs };
  if (!/^[A-Za-z0-9.-]+(:\d+)?$/.test(upstream)) throw new ConfigError(`STRATA_UPSTREAM_REGISTRY must be a host with an optional port, got "${upstream}"`);
  return { upstreamRegistry: upstream, insecureRegistries: insecureList, responseTimeoutMs };
}

/** `a.b.c.d/n` or `v6::/n`: the address must be one and the prefix fit its family. */
export function cidrProblem(cidr: string): string | null {
  const slash = cidr.indexOf('/');
  if (slash < 0) return 'it has no /prefix length';
  const address = cidr.slice(0, slash);
  const prefix = cidr.slice(slash + 1);
  const family = isIP(address);
  if (family === 0) return `"${address}" is not an IPv4 or IPv6 address`;
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return `the prefix length must be 0 to ${max}`;
  return null;
}

function cidrList(env: Env, name: string): string[] {
  const list = (env[name] ?? '').split(',').map((c) => c.trim()).filter((c) => c !== '');
  for (const cidr of list) {
    const problem = cidrProblem(cidr);
    if (problem) throw new ConfigError(`${name} must be comma-separated CIDRs such as 10.0.0.0/8; "${cidr}" is not one: ${problem}`);
  }
  return list;
}

function scheduling(env: Env): 'fair' | 'fifo' {
  const mode = env.STRATA_SCHEDULING || 'fair';
  if (mode !== 'fair' && mode !== 'fifo') throw new ConfigError(`STRATA_SCHEDULING must be fair or fifo, got "${mode}"`);
  return mode;
}

export function loadConfig(env: Env = process.env): StrataConfig {
  const port = int(env, 'PORT', 3000);
  const host = env.HOST ?? '127.0.0.1';
  const endpoint = env.S3_ENDPOINT ? url(env, 'S3_ENDPOINT', ['http:', 'https:']) : undefined;
  return {
    port,
    host,
    publicUrl: (env.PUBLIC_URL ?? `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`).replace(/\/$/, ''),
    databaseUrl: url(env, 'DATABASE_URL', ['postgresql:', 'postgres:']),
    redisUrl: url(env, 'REDIS_URL', ['redis:', 'rediss:']),
    s3: {
      endpoint,
      region: env.S3_REGION ?? 'us-east-1',
      bucket: env.STRATA_STORAGE_DIR ? (env.S3_BUCKET ?? '') : required(env, 'S3_BUCKET'),
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      forcePathStyle: env.S3_FORCE_PATH_STYLE ? env.S3_FORCE_PATH_STYLE === 'true' : endpoint !== undefined,
    },
    storageDir: env.STRATA_STORAGE_DIR || undefined,
    dataDir: env.STRATA_DATA_DIR ?? '.strata/worker',
    maxContextBytes: int(env, 'STRATA_MAX_CONTEXT_BYTES', 4 * 1024 ** 3, 1),
    maxContextEntries: int(env, 'STRATA_MAX_CONTEXT_ENTRIES', 1_000_000, 1),
    workerConcurrency: int(env, 'STRATA_WORKER_CONCURRENCY', 2, 1),
    scheduling: scheduling(env),
    run: runSettings(env),
    queuePrefix: env.STRATA_QUEUE_PREFIX ?? 'strata',
    registrySecret: registrySecret(env),
    secretsKey: secretsKey(env),
    operatorTokenHash: operatorTokenHash(env),
    rateLimit: {
      tokenPerMinute: int(env, 'STRATA_RATE_LIMIT_TOKEN_PER_MINUTE', 600, 1),
      tenantPerMinute: int(env, 'STRATA_RATE_LIMIT_TENANT_PER_MINUTE', 1200, 1),
      oidcPerMinute: int(env, 'STRATA_RATE_LIMIT_OIDC_PER_MINUTE', 60, 1),
    },
    pull: pullSettings(env),
    allowPrivateSources: cidrList(env, 'STRATA_ALLOW_PRIVATE_SOURCES'),
    addUrl: {
      maxBytes: int(env, 'STRATA_ADD_URL_MAX_BYTES', 2 * 1024 ** 3, 1),
      timeoutMs: int(env, 'STRATA_ADD_URL_TIMEOUT_MS', 10 * 60 * 1000, 100),
    },
    log: {
      stepMaxBytes: int(env, 'STRATA_LOG_STEP_MAX_BYTES', 4 * 1024 ** 2, 1024),
      buildMaxBytes: int(env, 'STRATA_LOG_BUILD_MAX_BYTES', 64 * 1024 ** 2, 1024),
      lineMaxBytes: int(env, 'STRATA_LOG_LINE_MAX_BYTES', 16 * 1024, 256),
      streamTtlSeconds: int(env, 'STRATA_LOG_STREAM_TTL_SECONDS', 3600, 1),
    },
    gc: {
      intervalMs: int(env, 'STRATA_GC_INTERVAL_MS', 60 * 60 * 1000),
      graceMs: int(env, 'STRATA_GC_GRACE_MS', 60 * 60 * 1000),
      cacheBudgetBytes: int(env, 'STRATA_CACHE_BUDGET_BYTES', 50 * 1024 ** 3),
      cacheMaxIdleMs: int(env, 'STRATA_CACHE_MAX_IDLE_MS', 14 * 24 * 60 * 60 * 1000),
      workerLayersMaxBytes: int(env, 'STRATA_WORKER_LAYERS_MAX_BYTES', 20 * 1024 ** 3),
      contextRetentionMs: contextRetention(env),
    },
    reconcile: {
      intervalMs: int(env, 'STRATA_RECONCILE_INTERVAL_MS', 10_000),
      workerStaleMs: int(env, 'STRATA_WORKER_STALE_MS', 30_000, 500),
      maxAttempts: int(env, 'STRATA_BUILD_MAX_ATTEMPTS', 3, 1),
      drainMs: int(env, 'STRATA_WORKER_DRAIN_MS', 5 * 60 * 1000),
    },
  };
}

export { openSecrets, sealSecrets, SealedSecretsError, SSH_KEY_PREFIX, triggerSealScope } from './sealed-secrets.js';

export const STRATA_CONFIG = Symbol('STRATA_CONFIG');

/** The Redis channel on which an api replica tells the others an API token was revoked (message: the token id; ADR 0034). */
export function tokenRevokedChannel(queuePrefix: string): string {
  return `${queuePrefix}:token-revoked`;
}

/** The Redis channel on which the api asks every worker to cancel a running build (message: the build id). */
export function buildCancelChannel(queuePrefix: string): string {
  return `${queuePrefix}:build-cancel`;
}

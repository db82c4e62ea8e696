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
  dataDir: string;
  /** Largest build context accepted, compressed upload and uncompressed alike. */
  maxContextBytes: number;
  /** Most files a build context may hold. */
  maxContextEntries: number;
  workerConcurrency: number;
  /** Prefix for BullMQ keys, so several deployments (or test runs) can share one Redis. */
  queuePrefix: string;
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
      bucket: required(env, 'S3_BUCKET'),
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      forcePathStyle: env.S3_FORCE_PATH_STYLE ? env.S3_FORCE_PATH_STYLE === 'true' : endpoint !== undefined,
    },
    dataDir: env.STRATA_DATA_DIR ?? '.strata/worker',
    maxContextBytes: int(env, 'STRATA_MAX_CONTEXT_BYTES', 4 * 1024 ** 3, 1),
    maxContextEntries: int(env, 'STRATA_MAX_CONTEXT_ENTRIES', 1_000_000, 1),
    workerConcurrency: int(env, 'STRATA_WORKER_CONCURRENCY', 2, 1),
    queuePrefix: env.STRATA_QUEUE_PREFIX ?? 'strata',
  };
}

export const STRATA_CONFIG = Symbol('STRATA_CONFIG');

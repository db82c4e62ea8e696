// Local services for development and tests, without Docker: PostgreSQL, Redis and an
// S3-protocol server, all on 127.0.0.1, data under .strata/. Each is reused when already
// running, and skipped when DATABASE_URL / REDIS_URL / S3_ENDPOINT point elsewhere.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync, chmodSync, openSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const stateDir = path.join(root, '.strata');

const PG_PORT = Number(process.env.STRATA_PG_PORT ?? 54329);
const REDIS_PORT = Number(process.env.STRATA_REDIS_PORT ?? 63790);
const S3_PORT = Number(process.env.STRATA_S3_PORT ?? 45690);

export function log(msg) {
  process.stderr.write(`[strata] ${msg}\n`);
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

let aptUpdated = false;
/** Installs Debian packages that are missing (we run as root on Debian/Ubuntu). */
export function ensurePackages(pkgs) {
  const missing = pkgs.filter(
    (p) => spawnSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8' }).stdout?.includes('install ok installed') !== true,
  );
  if (missing.length === 0) return;
  if (!have('apt-get')) throw new Error(`missing packages ${missing.join(', ')} and no apt-get to install them`);
  log(`installing ${missing.join(' ')} (apt)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) {
    execFileSync('apt-get', ['update', '-q'], { stdio: ['ignore', 'ignore', 'inherit'], env });
    aptUpdated = true;
  }
  execFileSync('apt-get', ['install', '-y', '-q', '--no-install-recommends', ...missing], { stdio: ['ignore', 'ignore', 'inherit'], env });
}

/**
 * crun (the default RUN runtime where it can run, docs/adr/0038) refuses a cgroup "hybrid" host
 * whose cgroup2 mount holds controllers ("cgroups in hybrid mode not supported, drop all
 * controllers from cgroupv2"). A controller that no v1 hierarchy has is bound to a v1 hierarchy of
 * its own at /sys/fs/cgroup/<controller> (what Debian's cgroupfs-mount does for every controller,
 * and the layout crun expects), which takes it off the cgroup2 mount. Kernel-global, idempotent,
 * harmless to runc (it uses any v1 hierarchy it finds). A pure v1 or pure v2 host is left as is.
 * Returns what it did, for the log; never throws (runc still works without it).
 */
export function prepareCgroups() {
  try {
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) => {
      const [before, after] = line.split(' - ');
      const [fstype] = after.split(' ');
      return { mountPoint: before.split(' ')[4], fstype };
    });
    const v2 = mounts.find((m) => m.fstype === 'cgroup2');
    if (!v2 || !mounts.some((m) => m.fstype === 'cgroup')) return [];
    const controllers = readFileSync(path.join(v2.mountPoint, 'cgroup.controllers'), 'utf8').trim().split(/\s+/).filter(Boolean);
    const bound = [];
    for (const controller of controllers) {
      const dir = `/sys/fs/cgroup/${controller}`;
      try {
        mkdirSync(dir, { recursive: true });
        execFileSync('mount', ['-t', 'cgroup', '-o', controller, 'cgroup', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
        bound.push(controller);
      } catch (error) {
        log(`cgroups: could not bind ${controller} to a v1 hierarchy at ${dir} (${String(error.stderr ?? error.message).trim()}); crun cannot run here, RUN steps use runc`);
      }
    }
    if (bound.length > 0) {
      log(`cgroups: hybrid host, bound ${bound.join(', ')} from the cgroup2 mount to v1 hierarchies under /sys/fs/cgroup so crun can run (docs/adr/0038)`);
    }
    return bound;
  } catch (error) {
    log(`cgroups: not prepared for crun (${error.message}); RUN steps use runc`);
    return [];
  }
}

export function portOpen(port, host = '127.0.0.1') {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

async function waitPort(port, what, ms = 30000) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await portOpen(port)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start listening on 127.0.0.1:${port} within ${ms / 1000}s`);
}

function pgBin() {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = execFileSync('ls', [base], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (existsSync(`${base}/${v}/bin/initdb`)) return `${base}/${v}/bin`;
  return null;
}

function asPostgres(args, opts = {}) {
  return execFileSync('runuser', ['-u', 'postgres', '--', ...args], { encoding: 'utf8', ...opts });
}

/** A private PostgreSQL cluster in .strata/postgres, owned by the postgres user. */
async function startPostgres() {
  ensurePackages(['postgresql']);
  const bin = pgBin();
  if (!bin) throw new Error('PostgreSQL binaries not found under /usr/lib/postgresql');
  const dataDir = path.join(stateDir, 'postgres');
  if (await portOpen(PG_PORT)) return null;
  // The postgres user must reach the data directory; a clone under a private home may not allow it.
  let usable = true;
  try {
    mkdirSync(dataDir, { recursive: true });
    execFileSync('chown', ['-R', 'postgres:postgres', dataDir]);
    chmodSync(dataDir, 0o700);
    asPostgres(['test', '-w', dataDir]);
  } catch {
    usable = false;
  }
  const dir = usable ? dataDir : '/var/lib/postgresql/strata-data';
  if (!usable) {
    log(`postgres cannot write ${dataDir}; keeping its data in ${dir}`);
    mkdirSync(dir, { recursive: true });
    execFileSync('chown', ['-R', 'postgres:postgres', dir]);
    chmodSync(dir, 0o700);
  }
  if (!existsSync(path.join(dir, 'PG_VERSION'))) {
    log('initialising PostgreSQL cluster');
    asPostgres([`${bin}/initdb`, '-D', dir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8'], { stdio: 'ignore' });
  }
  const logFile = usable ? path.join(dir, 'server.log') : '/var/lib/postgresql/strata-server.log';
  asPostgres([`${bin}/pg_ctl`, '-D', dir, '-l', logFile, '-w', '-t', '60', '-o',
    `-p ${PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp -c fsync=off -c max_connections=200`, 'start'],
  { stdio: 'ignore' });
  await waitPort(PG_PORT, 'PostgreSQL');
  return { name: 'PostgreSQL', stop: () => asPostgres([`${bin}/pg_ctl`, '-D', dir, '-m', 'fast', 'stop'], { stdio: 'ignore' }) };
}

async function ensureDatabase(name) {
  const out = execFileSync('psql', ['-h', '127.0.0.1', '-p', String(PG_PORT), '-U', 'postgres', '-tAc',
    `SELECT 1 FROM pg_database WHERE datname='${name}'`], { encoding: 'utf8' });
  if (out.trim() !== '1') {
    execFileSync('psql', ['-h', '127.0.0.1', '-p', String(PG_PORT), '-U', 'postgres', '-c', `CREATE DATABASE "${name}"`], { stdio: 'ignore' });
  }
}

async function startRedis() {
  ensurePackages(['redis-server']);
  if (await portOpen(REDIS_PORT)) return null;
  const dir = path.join(stateDir, 'redis');
  mkdirSync(dir, { recursive: true });
  execFileSync('redis-server', ['--daemonize', 'yes', '--port', String(REDIS_PORT), '--bind', '127.0.0.1',
    // An append-only file: a restarted Redis keeps its queue (the reconciler covers the loss anyway, see docs/adr/0011).
    '--save', '', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction', '--dir', dir, '--pidfile', path.join(dir, 'redis.pid'),
    '--logfile', path.join(dir, 'redis.log')], { stdio: 'ignore' });
  await waitPort(REDIS_PORT, 'Redis');
  return { name: 'Redis', stop: () => spawnSync('redis-cli', ['-p', String(REDIS_PORT), 'shutdown'], { stdio: 'ignore' }) };
}

async function startS3() {
  if (await portOpen(S3_PORT)) return null;
  const dir = path.join(stateDir, 's3');
  mkdirSync(dir, { recursive: true });
  const out = openSync(path.join(dir, 's3.log'), 'a');
  const child = spawn(process.execPath, [path.join(root, 'infra/local/s3-server.mjs'), String(S3_PORT), path.join(dir, 'data')], {
    detached: true, stdio: ['ignore', out, out],
  });
  child.unref();
  writeFileSync(path.join(dir, 's3.pid'), String(child.pid));
  await waitPort(S3_PORT, 'S3 server');
  return { name: 'S3 server', stop: () => { try { process.kill(child.pid, 'SIGTERM'); } catch { /* already gone */ } } };
}

/**
 * Starts (or reuses) every service and returns the environment the api, worker and tests use.
 * @param {{ database: string, bucket: string, redisDb: number }} names
 */
export async function ensureServices({ database, bucket, redisDb }) {
  mkdirSync(stateDir, { recursive: true });
  const env = {};
  const started = [];
  const tasks = [];
  if (process.env.DATABASE_URL) env.DATABASE_URL = process.env.DATABASE_URL;
  else {
    tasks.push(startPostgres().then((s) => { if (s) started.push(s); return ensureDatabase(database); }));
    env.DATABASE_URL = `postgresql://postgres@127.0.0.1:${PG_PORT}/${database}`;
  }
  if (process.env.REDIS_URL) env.REDIS_URL = process.env.REDIS_URL;
  else {
    tasks.push(startRedis().then((s) => { if (s) started.push(s); }));
    env.REDIS_URL = `redis://127.0.0.1:${REDIS_PORT}/${redisDb}`;
  }
  if (process.env.S3_ENDPOINT) {
    for (const k of ['S3_ENDPOINT', 'S3_BUCKET', 'S3_REGION', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY']) {
      if (process.env[k]) env[k] = process.env[k];
    }
  } else {
    tasks.push(startS3().then((s) => { if (s) started.push(s); }));
    Object.assign(env, {
      S3_ENDPOINT: `http://127.0.0.1:${S3_PORT}`, S3_BUCKET: bucket, S3_REGION: 'us-east-1',
      S3_ACCESS_KEY_ID: 'S3RVER', S3_SECRET_ACCESS_KEY: 'S3RVER',
    });
  }
  // Sequential apt installs: dpkg takes a lock, so install everything first, then start in parallel.
  ensurePackages(['postgresql', 'redis-server']);
  await Promise.all(tasks);
  Object.defineProperty(env, 'started', { value: started, enumerable: false });
  return env;
}

/** Applies the committed Prisma migrations and checks they really ran (STACK-NOTES: a broken engine can exit 0). */
export function migrate(env) {
  const dirs = readdirSync(path.join(root, 'prisma/migrations'), { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  const applied = spawnSync('psql', [env.DATABASE_URL, '-tAc', 'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL'], { encoding: 'utf8' });
  // prisma migrate deploy costs ~10 s even with nothing to do; skip it when every migration is in.
  if (applied.status === 0 && dirs.every((d) => applied.stdout.split('\n').includes(d))) return;
  execFileSync(path.join(root, 'node_modules/.bin/prisma'), ['migrate', 'deploy'], {
    cwd: root, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'],
  });
  const u = new URL(env.DATABASE_URL);
  const check = spawnSync('psql', [env.DATABASE_URL, '-tAc', 'SELECT count(*) FROM "_prisma_migrations" WHERE finished_at IS NOT NULL'], { encoding: 'utf8' });
  if (check.status !== 0 || Number(check.stdout.trim()) < 1) {
    throw new Error(`migrations did not apply to ${u.pathname.slice(1)}: ${check.stderr || check.stdout}`);
  }
}

/** Generates the Prisma client when the schema changed since the last generation. */
export function generatePrismaClient() {
  const schema = readFileSync(path.join(root, 'prisma/schema.prisma'), 'utf8');
  const stamp = path.join(root, 'libs/db/src/generated/.schema-stamp');
  if (existsSync(stamp) && readFileSync(stamp, 'utf8') === schema) return;
  // generate reads env("DATABASE_URL") but never connects; any well-formed URL will do.
  execFileSync(path.join(root, 'node_modules/.bin/prisma'), ['generate'], {
    cwd: root, stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DATABASE_URL: process.env.DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:54329/strata' },
  });
  writeFileSync(stamp, schema);
}

/** npm ci when node_modules is missing. */
export function ensureDependencies() {
  const lock = path.join(root, 'package-lock.json');
  // An install made from another package-lock (a pull that added a workspace or a dependency) is redone.
  const stamp = path.join(root, 'node_modules/.strata-lock-sha256');
  const want = existsSync(lock) ? createHash('sha256').update(readFileSync(lock)).digest('hex') : 'no-lock';
  const installed = existsSync(path.join(root, 'node_modules/.bin/jest')) && existsSync(stamp) ? readFileSync(stamp, 'utf8') : null;
  if (installed === want) return;
  log('installing npm dependencies');
  // playwright-core drives Debian's chromium; no browser is ever downloaded.
  execFileSync('npm', [existsSync(lock) ? 'ci' : 'install'], { cwd: root, stdio: 'inherit', env: { ...process.env, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: '1' } });
  writeFileSync(stamp, want);
}

/** Builds the web console (apps/console) with Vite into apps/console/dist, which the api serves at `/`. */
export function buildConsole() {
  log('building the console (vite)');
  execFileSync(path.join(root, 'node_modules/.bin/vite'), ['build', '--logLevel', 'warn', 'apps/console'], { cwd: root, stdio: 'inherit' });
}

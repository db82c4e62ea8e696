// `npm start`: installs what is missing, starts (or reuses) PostgreSQL, Redis and S3 on 127.0.0.1
// with data under .strata/, applies migrations, creates the dev tenant's token on first run, then
// runs the api and one worker in the foreground. Ctrl-C stops what this command started.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildConsole, ensureDependencies, ensurePackages, ensureServices, generatePrismaClient, log, migrate, prepareCgroups, root, stateDir } from './services.mjs';

ensureDependencies();
ensurePackages(['postgresql', 'redis-server', 'runc', 'crun', 'attr', 'iproute2', 'iptables', 'bzip2', 'xz-utils', 'openssh-client']);
// crun (STRATA_RUN_RUNTIME=auto's pick) needs a hybrid host's cgroup2 controllers on v1 (docs/adr/0038).
prepareCgroups();
const env = await ensureServices({ database: 'strata', bucket: 'strata', redisDb: 0 });
const started = env.started;
generatePrismaClient();
migrate(env);
log('compiling (tsc -b)');
execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-b', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
buildConsole();

const childEnv = { ...process.env, ...env, STRATA_DATA_DIR: process.env.STRATA_DATA_DIR ?? path.join(stateDir, 'worker') };
const tokenFile = path.join(stateDir, 'dev-token');
// A token file from another database (DATABASE_URL changed, data wiped) is replaced, not trusted.
const tokenKnown = () => {
  const token = readFileSync(tokenFile, 'utf8').trim();
  const hash = createHash('sha256').update(token).digest('hex');
  const out = spawnSync('psql', [env.DATABASE_URL, '-tAc', `SELECT 1 FROM "ApiToken" WHERE "tokenHash" = '${hash}' AND "revokedAt" IS NULL`], { encoding: 'utf8' });
  return out.status === 0 && out.stdout.trim() === '1';
};
if (!existsSync(tokenFile) || !tokenKnown()) {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `
    import { createPrismaClient, createTenantWithToken } from '@strata/db';
    const prisma = createPrismaClient(process.env.DATABASE_URL);
    const { token } = await createTenantWithToken(prisma, 'dev', { tokenName: 'admin' });
    await prisma.$disconnect();
    process.stdout.write(token);`], { cwd: root, env: childEnv, encoding: 'utf8' });
  writeFileSync(tokenFile, `${out}\n`, { mode: 0o600 });
  log(`created tenant "dev" and its admin token (saved in .strata/dev-token): ${out}`);
} else {
  log(`dev token: ${readFileSync(tokenFile, 'utf8').trim()} (from .strata/dev-token)`);
}

// The operator's token reaches /v1/admin (tenants and quotas); the api reads its hash from this file in development.
const operatorTokenFile = path.join(stateDir, 'operator-token');
if (!existsSync(operatorTokenFile)) {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `
    import { newTokenSecret } from '@strata/db';
    process.stdout.write(newTokenSecret('operator'));`], { cwd: root, env: childEnv, encoding: 'utf8' });
  writeFileSync(operatorTokenFile, `${out}\n`, { mode: 0o600 });
  log('created the operator token (saved in .strata/operator-token): it alone reaches /v1/admin');
}

const children = [
  ['api', path.join(root, 'apps/api/dist/main.js')],
  ['worker', path.join(root, 'apps/worker/dist/bin.js')],
].map(([name, file]) => {
  const child = spawn(process.execPath, [file], { cwd: root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream.on('data', (d) => {
      buf += d;
      const lines = buf.split('\n');
      buf = lines.pop();
      for (const l of lines) process.stdout.write(`${name.padEnd(6)} | ${l}\n`);
    });
  }
  child.on('exit', (code, signal) => {
    if (!stopping) {
      log(`${name} exited (${signal ?? code}); stopping`);
      void stop(1);
    }
  });
  return child;
});

let stopping = false;
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  for (const c of children) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode !== null ? null : new Promise((r) => c.once('exit', r)))));
  for (const s of started.reverse()) {
    log(`stopping ${s.name}`);
    s.stop();
  }
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
const port = process.env.PORT ?? '3000';
log(`Strata is starting at http://127.0.0.1:${port} (OpenAPI: http://127.0.0.1:${port}/docs). Ctrl-C stops it.`);

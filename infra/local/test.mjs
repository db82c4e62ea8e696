// `npm test`: installs what is missing, starts (or reuses) PostgreSQL, Redis and S3 on 127.0.0.1,
// applies migrations, checks the dependency rules and the types, then runs every unit and end-to-end test.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildConsole, ensureDependencies, ensurePackages, ensureServices, generatePrismaClient, log, migrate, prepareCgroups, root } from './services.mjs';

const started = Date.now();
ensureDependencies();
// Real clients and runtimes the end-to-end tests drive: skopeo and umoci read our images, runc and crun run RUN steps;
// gcc and libc6-dev build the static helper test/run-diff.e2e.spec.ts puts in a RUN step;
// bzip2 and xz-utils unpack ADD archives on the worker, as they do for Docker; debootstrap makes the
// Debian base the differential suite and the benchmarks build on; chromium runs the console's tests
// (through playwright-core); openssh-client is the worker's ssh-agent for RUN --mount=type=ssh and ADD git@…;
// openssh-server is the git-over-ssh host test/add-git.e2e.spec.ts starts on 127.0.0.1; iptables is the RUN network's firewall;
// runsc (gVisor) is the optional RUN runtime test/sandbox.e2e.spec.ts also runs its hostile steps in.
ensurePackages(['postgresql', 'redis-server', 'skopeo', 'umoci', 'runc', 'crun', 'busybox-static', 'attr', 'gcc', 'libc6-dev', 'iproute2', 'iptables', 'tar', 'gzip', 'docker-registry', 'docker.io', 'buildah', 'bzip2', 'xz-utils', 'git', 'debootstrap', 'chromium', 'openssh-client', 'openssh-server', 'runsc']);
// crun (STRATA_RUN_RUNTIME=auto's pick) needs a hybrid host's cgroup2 controllers on v1 (docs/adr/0038).
prepareCgroups();
const env = await ensureServices({ database: 'strata_test', bucket: 'strata-test', redisDb: 1 });
generatePrismaClient();
migrate(env);
log(`services ready in ${((Date.now() - started) / 1000).toFixed(1)}s`);

const run = (cmd, args, extraEnv = {}) =>
  spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env, ...extraEnv } }).status ?? 1;

// STRATA_TEST_FOCUS=1 (for a developer rerunning a few suites, e.g. `STRATA_TEST_FOCUS=1 npm test -- test/add-url`)
// skips lint, the type check and the console build; CI never sets it.
const focus = process.env.STRATA_TEST_FOCUS === '1';
log('lint (dependency direction and code rules)');
if (!focus && run(path.join(root, 'node_modules/.bin/eslint'), ['.']) !== 0) {
  log('lint failed');
  process.exit(1);
}

// jest compiles with swc, which drops types: the type check (unused locals included) is its own step.
// The console has its own settings (DOM, JSX) and is checked on its own.
log('type check');
for (const project of focus ? [] : ['tsconfig.json', 'apps/console/tsconfig.json']) {
  if (run(path.join(root, 'node_modules/.bin/tsc'), ['-p', project, '--noEmit']) !== 0) {
    log(`type check failed (${project})`);
    process.exit(1);
  }
}

// The console's end-to-end tests open what the api serves from apps/console/dist.
if (!focus) buildConsole();

const jestArgs = process.argv.slice(2);
// Every temporary directory the tests and the processes they start make goes under one directory of
// this run, removed at its end: a run leaves ~100,000 files there (contexts, layer stores, clones).
// Like /tmp itself (1777): RUN steps' unprivileged roots and other users' processes go through it.
const testTmp = mkdtempSync(path.join(tmpdir(), 'strata-test-'));
chmodSync(testTmp, 0o1777);
const status = run(
  process.execPath,
  ['--experimental-vm-modules', '--no-warnings', path.join(root, 'node_modules/jest/bin/jest.js'), '--ci', ...jestArgs],
  {
    // Tests never reach outside this machine: no Docker Hub fallback for short FROM names.
    STRATA_UPSTREAM_REGISTRY: 'none',
    // Scheduled garbage collection is off unless a test turns it on (test/gc.e2e.spec.ts does).
    STRATA_GC_INTERVAL_MS: '0',
    // Test git servers and forge stand-ins listen on loopback; tenant-given URLs may reach it only because this says so.
    STRATA_ALLOW_PRIVATE_SOURCES: '127.0.0.0/8',
    // The JSON event lines of api and workers: only warnings and errors, or they would drown jest's report.
    STRATA_LOG_LEVEL: process.env.STRATA_LOG_LEVEL ?? 'warn',
    STRATA_QUEUE_PREFIX: `strata-test-${randomBytes(4).toString('hex')}`,
    STRATA_DATA_DIR: path.join(root, '.strata/test-worker'),
    TMPDIR: testTmp,
  },
);
try {
  rmSync(testTmp, { recursive: true, force: true });
} catch (e) {
  log(`could not remove ${testTmp}: ${e.message}`);
}
process.exit(status);

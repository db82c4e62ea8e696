import { jest } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack } from './support/stack.js';

jest.setTimeout(180_000);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = path.join(root, 'apps/cli/dist/bin.js');

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI as a user would: its own process, an environment holding only what is given. */
function strata(args: string[], env: Record<string, string>, cwd = tmpdir()): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], { cwd, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const buildIdOf = (r: CliResult) => /build ([0-9a-f-]{36}) queued/.exec(r.stderr)?.[1] ?? '';

describe('the strata CLI, run as a built program', () => {
  let stack: Stack;
  let token: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    // The program a user runs: compiled from apps/cli as `npm start` does.
    execFileSync(path.join(root, 'node_modules/.bin/tsc'), ['-b', 'apps/cli/tsconfig.json'], { cwd: root, stdio: 'inherit' });
    stack = await startStack();
    ({ token } = await stack.tenant('cli'));
    env = { STRATA_URL: stack.url, STRATA_TOKEN: token };
    await importBusybox(stack, token);
  });
  afterAll(async () => {
    await stack.close();
  });

  it('builds a directory, follows the log live and exits 0 with the image digest', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY hello.txt /\nCMD ["/hello"]\n', 'hello.txt': 'hi' });
    const r = await strata(['build', dir, '-t', 'cli/app:v1', '--tag', 'cli/app:latest'], env);
    expect(r.stderr).toMatch(/built cli\/app:v1,latest sha256:[0-9a-f]{64}/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('COPY hello.txt /');
    const tags = await api(stack, token, 'GET', '/v1/repositories/cli/app/tags');
    expect(JSON.stringify(tags.json)).toMatch(/"v1"[\s\S]*"latest"|"latest"[\s\S]*"v1"/);
  });

  it('builds the current directory when none is given', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY here.txt /\n', 'here.txt': 'here' });
    const r = await strata(['build', '-t', 'cli/cwd'], env, dir);
    expect(r.stderr).toMatch(/built cli\/cwd:latest sha256:/);
    expect(r.code).toBe(0);
  });

  it('exits 1 with the error and its Dockerfile line when the build fails', async () => {
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY nothere /x\n' });
    const r = await strata(['build', dir, '-t', 'cli/bad'], env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/build failed: Dockerfile:2: COPY: "nothere" not found/);
  });

  it('prints the usage for --help, -h and help, listing every build flag, and exits 0', async () => {
    for (const args of [['--help'], ['-h'], ['help'], ['build', '--help'], ['build', '-h', '-t', 'x'], ['logs', '--help']]) {
      const r = await strata(args, {});
      expect(r.code).toBe(0);
      expect(r.stderr).toBe('');
      for (const flag of ['-t, --tag', '-f, --file', '--target', '--build-arg K=V', '--secret id=ID,src=FILE', '--secret id=ID,env=VAR', '--ssh', '--no-cache ', '--no-cache-filter STAGE', '-h, --help']) {
        expect(r.stdout).toContain(flag);
      }
    }
  });

  it('refuses unknown flags and bad usage with a message naming the problem and exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['build', '.', '-t', 'cli/x', '--platfrom', 'linux/amd64'], /unknown flag --platfrom for "strata build"/],
      [['build', '.', '-t', 'cli/x', '-q'], /unknown flag -q for "strata build"/],
      [['--verbose'], /unknown flag --verbose/],
      [['biuld', '.'], /unknown command "biuld"/],
      [['build', '.'], /-t REPO\[:TAG\] is required/],
      [['build', '.', '-t'], /-t, --tag needs a value/],
      [['build', '.', '-t', 'cli/x', '--no-cache=yes'], /--no-cache takes no value/],
      [['build', 'a', 'b', '-t', 'cli/x'], /takes one directory, got "a" "b"/],
      [['build', '.', '-t', 'one/x', '-t', 'two/y'], /all -t values must name one repository \(got one\/x and two\/y\)/],
      [['build', '.', '-t', 'cli/x', '--build-arg', '1BAD=x'], /--build-arg "1BAD=x": expected NAME=VALUE or NAME/],
      [['build', '.', '-t', 'cli/x', '--secret', 'src=/etc/hostname'], /--secret "src=\/etc\/hostname": id= is required/],
      [['build', '.', '-t', 'cli/x', '--secret', 'id=a,env=NOT_SET_ANYWHERE'], /--secret id=a: the environment variable NOT_SET_ANYWHERE is not set/],
      [['build', '.', '-t', 'cli/x', '--secret', 'id=a,src=/no/such/file'], /--secret id=a: cannot read \/no\/such\/file: ENOENT/],
      [['build', '.', '-t', 'cli/x', '--secret', 'id=a,mode=0400'], /unknown field "mode"/],
      [['build', '.', '-t', 'cli/x', '-f', '/etc/hostname'], /-f \/etc\/hostname: the Dockerfile must be inside the build context \./],
      [['logs'], /"strata logs" takes one BUILD_ID/],
    ];
    for (const [args, message] of cases) {
      const r = await strata(args, env);
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 2, stderr: expect.stringMatching(message) });
      expect(r.stderr).toContain('Run "strata --help" for the usage.');
    }
    const noToken = await strata(['build', makeDir({ Dockerfile: 'FROM scratch\n' }), '-t', 'cli/x'], { STRATA_URL: stack.url });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain('STRATA_TOKEN is not set');
  });

  it('exits 1 for a token the server refuses', async () => {
    const r = await strata(['status', '00000000-0000-0000-0000-000000000000'], { STRATA_URL: stack.url, STRATA_TOKEN: 'nope' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/401 The API token is not valid/);
  });

  it('exits 1 naming the request and why when the server cannot be reached', async () => {
    // A port nothing listens on: the connection is refused.
    const closed = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as AddressInfo;
        server.close(() => resolve(port));
      });
    });
    const dir = makeDir({ Dockerfile: 'FROM scratch\nCOPY a /\n', a: 'a' });
    const r = await strata(['build', dir, '-t', 'cli/unreachable'], { STRATA_URL: `http://127.0.0.1:${closed}`, STRATA_TOKEN: token });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`strata: POST http://127.0.0.1:${closed}/v1/builds failed: connect ECONNREFUSED 127.0.0.1:${closed}`);
  });

  it('passes --build-arg K=V, --build-arg=K=V and --build-arg K from the environment (skipped when unset)', async () => {
    const dir = makeDir({
      Dockerfile: 'FROM busybox:1\nARG A\nARG B\nARG C\nARG D=default\nRUN echo "args A=$A B=$B C=$C D=$D"\n',
    });
    const r = await strata(['build', dir, '-t', 'cli/args', '--build-arg', 'A=one two', '--build-arg=B=x=y', '--build-arg', 'C', '--build-arg', 'D'], { ...env, C: 'from-env' });
    expect(r.stderr).toMatch(/built cli\/args:latest/);
    expect(r.stdout).toContain('args A=one two B=x=y C=from-env D=default');
    const view = await api(stack, token, 'GET', `/v1/builds/${buildIdOf(r)}`);
    expect(view.json.buildArgs).toEqual({ A: 'one two', B: 'x=y', C: 'from-env' });
  });

  it('takes -f relative to the current directory and --target, building only the stages the target needs', async () => {
    const dir = makeDir({
      'docker/app.Dockerfile': 'FROM busybox:1 AS first\nRUN echo "stage first ran"\nFROM first AS second\nRUN echo "stage second ran"\n',
    });
    const r = await strata(['build', '.', '-f', 'docker/app.Dockerfile', '--target', 'first', '-t', 'cli/target'], env, dir);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('stage first ran');
    expect(r.stdout).not.toContain('stage second ran');
    const view = await api(stack, token, 'GET', `/v1/builds/${buildIdOf(r)}`);
    expect(view.json).toMatchObject({ dockerfile: 'docker/app.Dockerfile', target: 'first' });
    const missing = await strata(['build', dir, '-f', 'nope.Dockerfile', '-t', 'cli/target'], env, dir);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no Dockerfile at nope.Dockerfile');
  });

  it('sends --secret from a file and from an environment variable; the values reach RUN and stay out of the log', async () => {
    const fileSecret = `file-secret-${randomBytes(8).toString('hex')}`;
    const envSecret = `env-secret-${randomBytes(8).toString('hex')}`;
    const secretsDir = mkdtempSync(path.join(tmpdir(), 'strata-cli-secret-'));
    writeFileSync(path.join(secretsDir, 'npmrc'), fileSecret);
    const dir = makeDir({
      Dockerfile:
        'FROM busybox:1\n' +
        'RUN --mount=type=secret,id=npmrc,required --mount=type=secret,id=token,required --mount=type=secret,id=BARE,required sha256sum /run/secrets/npmrc /run/secrets/token /run/secrets/BARE && cat /run/secrets/token\n',
    });
    const r = await strata(['build', dir, '-t', 'cli/secret', '--secret', 'id=npmrc,src=npmrc', '--secret', 'id=token,env=MY_TOKEN', '--secret', 'id=BARE'], { ...env, MY_TOKEN: envSecret, BARE: 'bare-value' }, secretsDir);
    expect(r.stderr).toMatch(/built cli\/secret:latest/);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${sha256(fileSecret)}  /run/secrets/npmrc`);
    expect(r.stdout).toContain(`${sha256(envSecret)}  /run/secrets/token`);
    expect(r.stdout).toContain(`${sha256('bare-value')}  /run/secrets/BARE`);
    expect(r.stdout).toContain('***');
    expect(r.stdout + r.stderr).not.toContain(envSecret);
  });

  it('--no-cache and --no-cache-filter skip the cache for every step or for the named stage only', async () => {
    const dir = makeDir({ Dockerfile: 'FROM busybox:1 AS deps\nRUN echo deps > /deps\nFROM deps AS app\nRUN echo app > /app\n' });
    const steps = async (r: CliResult) => {
      expect(r.code).toBe(0);
      const view = await api(stack, token, 'GET', `/v1/builds/${buildIdOf(r)}`);
      return view.json.steps.map((s: { stageName: string; cached: boolean }) => `${s.stageName}:${s.cached}`);
    };
    expect(await steps(await strata(['build', dir, '-t', 'cli/cache'], env))).toEqual(['deps:false', 'app:false']);
    expect(await steps(await strata(['build', dir, '-t', 'cli/cache'], env))).toEqual(['deps:true', 'app:true']);
    expect(await steps(await strata(['build', dir, '-t', 'cli/cache', '--no-cache-filter', 'app'], env))).toEqual(['deps:true', 'app:false']);
    expect(await steps(await strata(['build', dir, '-t', 'cli/cache', '--no-cache'], env))).toEqual(['deps:false', 'app:false']);
  });

  it('sends --ssh keys in Strata-Build-SSH, which a required ssh mount then finds, without printing them', async () => {
    const keys = mkdtempSync(path.join(tmpdir(), 'strata-cli-ssh-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'strata-test', '-f', path.join(keys, 'id_ed25519')]);
    const dir = makeDir({ Dockerfile: 'FROM busybox:1\nRUN --mount=type=ssh,required test -S "$SSH_AUTH_SOCK"\n' });
    const r = await strata(['build', dir, '-t', 'cli/ssh', '--ssh', `default=${path.join(keys, 'id_ed25519')}`], env);
    expect(r.stderr).toBe(r.stderr.replace(readFileSync(path.join(keys, 'id_ed25519'), 'utf8').split('\n')[1], ''));
    expect(r.code).toBe(0);
    const after = await api(stack, token, 'GET', '/v1/builds?repository=cli/ssh');
    expect(after.json.builds.map((b: { status: string }) => b.status)).toEqual(['succeeded']);

    // An agent socket holds keys it never hands out: the CLI refuses it before sending anything.
    const sock = path.join(keys, 'agent.sock');
    const agent = createServer().listen(sock);
    await new Promise((resolve) => agent.once('listening', resolve));
    try {
      for (const args of [['--ssh', 'default'], ['--ssh', `default=${sock}`]]) {
        const viaAgent = await strata(['build', dir, '-t', 'cli/ssh', ...args], { ...env, SSH_AUTH_SOCK: sock });
        expect(viaAgent.code).toBe(2);
        expect(viaAgent.stderr).toContain(`--ssh default: ${sock} is an SSH agent socket, which cannot be forwarded to a remote build server; give a private key file instead`);
      }
    } finally {
      agent.close();
    }
    const noAgent = await strata(['build', dir, '-t', 'cli/ssh', '--ssh', 'default'], env);
    expect(noAgent.code).toBe(2);
    expect(noAgent.stderr).toContain('--ssh default: SSH_AUTH_SOCK is not set; give a private key file: --ssh default=PATH');
    const notAKey = await strata(['build', dir, '-t', 'cli/ssh', '--ssh', `default=${path.join(keys, 'id_ed25519.pub')}`], env);
    expect(notAKey.code).toBe(2);
    expect(notAKey.stderr).toContain('is not a PEM or OpenSSH private key');
  });
});

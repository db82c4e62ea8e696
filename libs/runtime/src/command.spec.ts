// runCommand and spawnPiped answer the same through the addon's posix_spawn (docs/adr/0039) and
// through node's child_process (STRATA_NATIVE_SPAWN=0), so the fallback is a drop-in.
import { CommandError, runCommand } from './command.js';
import { nativeSpawnEnabled, spawnPiped } from './spawn.js';

describe.each([
  ['the addon', undefined],
  ['child_process', '0'],
])('runCommand through %s', (_name, setting) => {
  const saved = process.env['STRATA_NATIVE_SPAWN'];
  beforeEach(() => {
    if (setting === undefined) delete process.env['STRATA_NATIVE_SPAWN'];
    else process.env['STRATA_NATIVE_SPAWN'] = setting;
  });
  afterAll(() => {
    if (saved === undefined) delete process.env['STRATA_NATIVE_SPAWN'];
    else process.env['STRATA_NATIVE_SPAWN'] = saved;
  });

  it('starts the child the way the setting says', () => {
    expect(nativeSpawnEnabled()).toBe(setting === undefined);
    const child = spawnPiped('true', []);
    expect(child.constructor.name).toBe(setting === undefined ? 'SpawnedProcess' : 'ChildProcess');
    child.stdout.resume();
    child.stderr.resume();
    return new Promise((resolve) => child.once('close', resolve));
  });

  it('returns stdout, in the given cwd', async () => {
    expect(await runCommand('sh', ['-c', 'pwd; echo "$0"', 'arg zero'], { cwd: '/tmp' })).toBe('/tmp\narg zero\n');
  });

  it('rejects with the exit code and stderr', async () => {
    const error = await runCommand('sh', ['-c', 'echo partial; echo broken >&2; exit 4']).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandError);
    expect(error).toMatchObject({ exitCode: 4, stderr: 'broken\n' });
    expect((error as Error).message).toBe('sh -c echo partial; echo broken >&2; exit 4 failed (exit 4): broken');
  });

  it('rejects a child killed by a signal with no exit code', async () => {
    const error = await runCommand('sh', ['-c', 'kill -KILL $$']).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CommandError', exitCode: null });
  });

  it('rejects a program that is not there, naming it', async () => {
    const error = await runCommand('strata-no-such-tool', ['x']).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'CommandError', exitCode: null });
    expect((error as CommandError).stderr).toContain('spawn strata-no-such-tool ENOENT');
  });

  it('feeds input on stdin (child_process either way)', async () => {
    expect(await runCommand('cat', [], { input: 'through stdin' })).toBe('through stdin');
  });
});

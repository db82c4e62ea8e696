import { commonBase } from './cgroup.js';
import { chooseRuntime } from './runtime-choice.js';

describe('the RUN runtime a worker picks (STRATA_RUN_RUNTIME)', () => {
  it('takes runc and runsc as named, without looking at crun', async () => {
    expect(await chooseRuntime('runc', '/nonexistent/crun')).toEqual({ runtime: 'runc' });
    expect(await chooseRuntime('runsc', '/nonexistent/crun')).toEqual({ runtime: 'runsc' });
  });

  it('falls back to runc under auto where crun cannot run, saying why', async () => {
    expect(await chooseRuntime('auto', '/nonexistent/crun')).toEqual({ runtime: 'runc', fallback: '/nonexistent/crun is not installed (apt-get install crun)' });
  });

  it('refuses to start with crun named where crun cannot run', async () => {
    await expect(chooseRuntime('crun', '/nonexistent/crun')).rejects.toThrow('STRATA_RUN_RUNTIME=crun: crun cannot run RUN steps on this host: /nonexistent/crun is not installed');
  });
});

describe("the cgroup path a step's cgroup goes under, the same in every v1 hierarchy", () => {
  it("is the worker's deepest own path when the others are its ancestors", () => {
    expect(commonBase([{ controllers: ['memory'], path: '/process_api/abc' }, { controllers: ['pids'], path: '/' }, { controllers: ['cpu', 'cpuacct'], path: '/' }])).toBe('/process_api/abc');
    expect(commonBase([{ controllers: ['memory'], path: '/a/b' }, { controllers: ['pids'], path: '/a' }])).toBe('/a/b');
    expect(commonBase([{ controllers: ['memory'], path: '/' }, { controllers: ['pids'], path: '/' }])).toBe('/');
  });

  it("is the memory hierarchy's own path when the worker's paths diverge", () => {
    expect(commonBase([{ controllers: ['pids'], path: '/x/y/z' }, { controllers: ['memory'], path: '/a' }])).toBe('/a');
    expect(commonBase([{ controllers: ['pids'], path: '/ab' }, { controllers: ['memory'], path: '/a' }])).toBe('/a');
  });
});

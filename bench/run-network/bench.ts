// Per-RUN cost of the bridge network (docs/adr/0024): RuncExecutor running /bin/true in a busybox
// rootfs with network 'none' and 'bridge', alternated, plus BridgeNetwork.attach + release alone.
// Medians after a warm-up. Run as root: `node --import ./bench/support/register-ts.mjs bench/run-network/bench.ts`.
// Uses a test-made namespace as the worker side, so the machine's own network is untouched.
// Writes JSON to $BENCH_OUT when set.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { busyboxLayer, layerSource, tempDir } from '../../libs/runtime/src/fixtures.test.js';
import { LayerStore } from '../../libs/runtime/src/layer-store.js';
import { BridgeNetwork } from '../../libs/runtime/src/network.js';
import { RuncExecutor } from '../../libs/runtime/src/runc-executor.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const hostNs = `strata-bn-${randomBytes(3).toString('hex')}`;
execFileSync('ip', ['netns', 'add', hostNs]);
execFileSync('ip', ['-n', hostNs, 'link', 'set', 'lo', 'up']);
const dataDir = tempDir('bench-net');
const stateDir = tempDir('bench-net-state');
const base = busyboxLayer();
const snapshot = await new LayerStore({ dataDir }).prepare([base.diffId], layerSource([base]).source);
const bridge = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.212', stateDir });
const executor = new RuncExecutor({ dataDir, resolvConf: '', bridge });
const times: Record<'none' | 'bridge' | 'attach', number[]> = { none: [], bridge: [], attach: [] };
try {
  await bridge.init();
  for (let i = -3; i < RUNS; i++) {
    for (const network of ['none', 'bridge'] as const) {
      const started = performance.now();
      const result = await executor.run({ args: ['/bin/true'], env: [], network }, { rootfs: snapshot.rootfs });
      if (result.exitCode !== 0) throw new Error(`true exited ${result.exitCode}`);
      if (i >= 0) times[network].push(performance.now() - started);
    }
    const started = performance.now();
    const attachment = await bridge.attach('bench');
    await attachment.release();
    if (i >= 0) times.attach.push(performance.now() - started);
  }
} finally {
  await snapshot.release();
  await bridge.close();
  execFileSync('ip', ['netns', 'del', hostNs]);
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(stateDir, { recursive: true, force: true });
}
const result = {
  runs: RUNS,
  medianMs: { none: median(times.none), bridge: median(times.bridge), attachAndRelease: median(times.attach) },
};
console.log(JSON.stringify(result, null, 2));
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(result, null, 2));

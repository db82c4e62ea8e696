// Per-RUN cost of the bridge network (docs/adr/0024): ContainerExecutor running /bin/true in a busybox
// rootfs with network 'none' and 'bridge', alternated, plus BridgeNetwork.attach alone and the
// teardown that runs after a step returns.
// Medians after a warm-up. Run as root: `node --import ./bench/support/register-ts.mjs bench/run-network/bench.ts`.
// The worker side is this machine's own network namespace, as in a deployment: the worker's rules
// are added for the run and removed after it; no step sends a packet.
// Writes JSON to $BENCH_OUT when set.
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { busyboxLayer, layerSource, tempDir } from '../../libs/runtime/src/fixtures.test.js';
import { LayerStore } from '../../libs/runtime/src/layer-store.js';
import { BridgeNetwork } from '../../libs/runtime/src/network.js';
import { ContainerExecutor } from '../../libs/runtime/src/container-executor.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const dataDir = tempDir('bench-net');
const base = busyboxLayer();
const snapshot = await new LayerStore({ dataDir }).prepare([base.diffId], layerSource([base]).source);
const bridge = new BridgeNetwork({ subnetPrefix: '10.212', owner: `bench-${randomBytes(4).toString('hex')}` });
const executor = new ContainerExecutor({ dataDir, resolvConf: '', bridge });
const times: Record<'none' | 'bridge' | 'attach' | 'teardown', number[]> = { none: [], bridge: [], attach: [], teardown: [] };
try {
  await bridge.init();
  for (let i = -3; i < RUNS; i++) {
    for (const network of ['none', 'bridge'] as const) {
      const started = performance.now();
      const result = await executor.run({ args: ['/bin/true'], env: [], network }, { rootfs: snapshot.rootfs });
      if (result.exitCode !== 0) throw new Error(`true exited ${result.exitCode}`);
      if (i >= 0) times[network].push(performance.now() - started);
      // The veth's deletion runs after the step returns; let it finish so runs do not overlap.
      await bridge.idle();
    }
    let started = performance.now();
    const attachment = await bridge.attach('bench');
    if (i >= 0) times.attach.push(performance.now() - started);
    started = performance.now();
    await attachment.release();
    await bridge.idle();
    if (i >= 0) times.teardown.push(performance.now() - started);
  }
} finally {
  await snapshot.release();
  await bridge.close();
  rmSync(dataDir, { recursive: true, force: true });
}
const result = {
  runs: RUNS,
  medianMs: { none: median(times.none), bridge: median(times.bridge), attach: median(times.attach), teardownInBackground: median(times.teardown) },
};
console.log(JSON.stringify(result, null, 2));
if (process.env.BENCH_OUT) writeFileSync(process.env.BENCH_OUT, JSON.stringify(result, null, 2));

// What starting a child costs the worker's main thread, against the worker's resident memory
// (ADR 0039): node's child_process.spawn (libuv: fork, whose page-table copy grows with RSS)
// against @strata/native's spawn (posix_spawn: clone(CLONE_VM|CLONE_VFORK), nothing copied).
// Plain JavaScript, so the smallest level is a bare node's RSS (no TypeScript loader): the addon is
// called as libs/native/src/index.ts calls it (environment as an array, the two pipes opened as
// net.Sockets). At each RSS level (Buffers allocated and touched until the process's RSS reaches
// it), the two alternate, N spawns of /bin/true each with stdio ['ignore', 'pipe', 'pipe']. Two
// times per spawn: the synchronous call (the main thread blocked: what every other build on the
// worker waits for) and until 'close' (exited, both pipes ended). Prints medians.
//   node bench/run-step/spawn-cost.mjs [spawnsPerLevel] [MB,MB,...]
import { spawn as nodeSpawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';

const COUNT = Number(process.argv[2] ?? 20);
const LEVELS = (process.argv[3] ?? '44,245,646').split(',').map(Number);
const binding = createRequire(import.meta.url)(new URL('../../libs/native/build/Release/strata_native.node', import.meta.url).pathname);
if (typeof binding.spawn !== 'function') throw new Error('the addon has no spawn: rebuild libs/native');

const rssMb = () => process.memoryUsage().rss / 1024 ** 2;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** child_process: resolves when 'close' fires. */
function viaChildProcess() {
  const child = nodeSpawn('/bin/true', [], { stdio: ['ignore', 'pipe', 'pipe'] });
  const called = performance.now(); // the call includes node's stdio sockets, as the native one's does
  child.stdout.resume();
  child.stderr.resume();
  return { called, done: new Promise((resolve) => child.once('close', resolve)) };
}

/** The addon, as SpawnedProcess uses it: 'close' once exited and both pipes closed. */
function viaNative() {
  const env = Object.entries(process.env).map(([name, value]) => `${name}=${value}`);
  let open = 3;
  let resolve;
  const done = new Promise((r) => (resolve = r));
  const step = () => --open === 0 && resolve();
  const started = binding.spawn('/bin/true', ['/bin/true'], env, null, step);
  const sockets = [started.stdout, started.stderr].map((fd) => new Socket({ fd, readable: true, writable: false }));
  const called = performance.now();
  for (const socket of sockets) socket.once('close', step).resume();
  return { called, done };
}

console.log(`load before: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
const ballast = [];
for (const level of LEVELS) {
  while (rssMb() < level - 4) ballast.push(Buffer.alloc(4 * 1024 ** 2, 1));
  const times = { child_process: { call: [], close: [] }, native: { call: [], close: [] } };
  for (let i = 0; i <= COUNT; i++) {
    for (const [name, start] of [['child_process', viaChildProcess], ['native', viaNative]]) {
      const began = performance.now();
      const { called, done } = start();
      await done;
      if (i === 0) continue; // warm-up
      times[name].call.push(called - began);
      times[name].close.push(performance.now() - began);
    }
  }
  const rss = Math.round(rssMb());
  for (const [name, t] of Object.entries(times)) {
    console.log(`rss ${String(rss).padStart(4)} MB  ${name.padEnd(13)} spawn() call median ${median(t.call).toFixed(2).padStart(6)} ms (max ${Math.max(...t.call).toFixed(2).padStart(6)})  to close median ${median(t.close).toFixed(2).padStart(6)} ms  (${COUNT} spawns)`);
  }
}
console.log(`load after: ${readFileSync('/proc/loadavg', 'utf8').trim()}`);

import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import path from 'node:path';

/**
 * Runs `fn` under the V8 CPU profiler and writes `<dir>/<name>.cpuprofile` (Chrome DevTools format)
 * when `dir` is set (STRATA_WORKER_CPU_PROFILE_DIR; benchmarks use it to see where one build's CPU
 * time goes, docs/adr/0037); otherwise just runs it. One profile at a time: a build that starts while
 * another is profiled runs unprofiled.
 */
let busy = false;
export async function profiled<T>(dir: string | undefined, name: string, fn: () => Promise<T>): Promise<T> {
  if (!dir || busy) return fn();
  busy = true;
  const session = new Session();
  session.connect();
  try {
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 200 });
    await session.post('Profiler.start');
    try {
      return await fn();
    } finally {
      const { profile } = await session.post('Profiler.stop');
      await writeFile(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile)).catch(() => undefined);
    }
  } finally {
    session.disconnect();
    busy = false;
  }
}

import { readFileSync, writeFileSync } from 'node:fs';

const MiB = 1024 * 1024;

/** VmRSS and VmHWM (its peak since start or the last reset) of a live process, in bytes. */
export function residentMemory(pid: number): { rss: number; hwm: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`/proc/${pid}/status has no ${field}`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/**
 * Resets a process's peak resident memory (VmHWM) to what it holds now (`5` to clear_refs, Linux
 * 4.0+); answers a function that tells, in MiB, how far above `baselineBytes` (by default what it
 * holds now) it went since. Give the idle size taken earlier when an earlier case may have left the
 * process larger than it should be: its growth then still counts.
 */
export function watchPeakGrowth(pid: number, baselineBytes?: number): () => { baselineMiB: number; peakMiB: number; growthMiB: number } {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const baseline = baselineBytes ?? residentMemory(pid).rss;
  return () => {
    const { hwm } = residentMemory(pid);
    return { baselineMiB: baseline / MiB, peakMiB: hwm / MiB, growthMiB: (hwm - baseline) / MiB };
  };
}

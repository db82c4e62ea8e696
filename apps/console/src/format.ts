// How times, durations and sizes read in the console.

export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  const rest = Math.round(s % 60);
  if (m < 60) return `${m}m ${rest.toString().padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h ${(m % 60).toString().padStart(2, '0')}m`;
}

const relative = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

export function formatRelative(iso: string | null, now = Date.now()): string {
  if (!iso) return '—';
  const diff = (new Date(iso).getTime() - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 10) return 'just now';
  if (abs < 60) return relative.format(Math.round(diff), 'second');
  if (abs < 3600) return relative.format(Math.round(diff / 60), 'minute');
  if (abs < 86400) return relative.format(Math.round(diff / 3600), 'hour');
  return relative.format(Math.round(diff / 86400), 'day');
}

/** The exact time, in the reader's zone and in UTC, for a tooltip and a <time> element. */
export function formatExact(iso: string | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  return `${d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' })} (${d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC')})`;
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '—';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function shortDigest(digest: string | null | undefined): string {
  if (!digest) return '—';
  const [algo, hex] = digest.split(':');
  return hex ? `${algo}:${hex.slice(0, 12)}` : digest;
}

/** The durations of a build still running count up to now. */
export function buildDuration(b: { startedAt: string | null; finishedAt: string | null; durationMs: number | null }, now = Date.now()): number | null {
  if (b.durationMs !== null) return b.durationMs;
  if (b.startedAt && !b.finishedAt) return now - new Date(b.startedAt).getTime();
  return null;
}

/** What started a build: an upload, or a push with its branch or tag and commit. */
export function sourceLabel(source: { type: string; ref?: string; sha?: string }): string {
  if (source.type !== 'git' || !source.sha) return 'upload';
  const ref = (source.ref ?? '').replace(/^refs\/(heads|tags)\//, '');
  return `push ${ref ? `${ref} ` : ''}@ ${source.sha.slice(0, 7)}`;
}

/**
 * The one log line format of api and worker processes: a JSON object per line with time, level,
 * message and the ids an operator filters by (buildId, tenantId, workerId), so a log pipeline can
 * follow one build or one tenant across processes.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface LogFields {
  buildId?: string;
  tenantId?: string;
  workerId?: string;
  [field: string]: unknown;
}

const RANK: Record<LogLevel | 'silent', number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

/** Lines below STRATA_LOG_LEVEL (debug, info, warn, error or silent; default info) are not written. */
export function logEvent(level: LogLevel, msg: string, fields: LogFields = {}): void {
  const threshold = RANK[(process.env.STRATA_LOG_LEVEL ?? 'info') as LogLevel] ?? RANK.info;
  if (RANK[level] < threshold) return;
  const line = `${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`;
  (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line);
}

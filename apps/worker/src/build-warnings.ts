import type { Diagnostic } from '@strata/dockerfile';

/** Where a build's warnings go: its row (every finding so far, each time) and its log (each new one, once). */
export interface WarningSinks {
  store(all: readonly Diagnostic[]): Promise<unknown>;
  line?(text: string): unknown;
}

/**
 * A build's lint findings, recorded as they are found: at the start (the Dockerfile's own), once its
 * context is in (a COPY of what .dockerignore excludes) and once its FROM images are resolved (a
 * wrong platform). The last two can be found at the same moment, a step failing while the context
 * check runs: each write of the row waits for the one before it and carries every finding so far,
 * so the row ends with all of them whichever database answer comes first. A finding already recorded
 * (the success and the failure path both ask about the FROM images) is not recorded again.
 */
export class BuildWarnings {
  private list: Diagnostic[] = [];
  private written: Promise<void> = Promise.resolve();

  constructor(private readonly sinks: WarningSinks) {}

  /** Every finding so far, by position in the Dockerfile. */
  get all(): readonly Diagnostic[] {
    return this.list;
  }

  /** Records the findings not recorded yet; resolves with them once the row holds them (a failed write rejects). */
  async add(found: readonly Diagnostic[]): Promise<Diagnostic[]> {
    const known = (d: Diagnostic, among: readonly Diagnostic[]) => among.some((w) => w.line === d.line && w.column === d.column && w.message === d.message);
    const fresh: Diagnostic[] = [];
    for (const d of found) if (!known(d, this.list) && !known(d, fresh)) fresh.push(d);
    fresh.sort(byPosition);
    if (fresh.length === 0) return [];
    this.list = [...this.list, ...fresh].sort(byPosition);
    const all = this.list;
    for (const w of fresh) this.sinks.line?.(`${w.severity === 'error' ? 'error' : 'warning'}: ${w.rule ? `${w.rule}: ` : ''}${w.message} (line ${w.line})`);
    const write = this.written.then(() => this.sinks.store(all));
    // The chain never rejects (a failed write is this add's error, not the next one's).
    this.written = write.then(
      () => undefined,
      () => undefined,
    );
    await write;
    return fresh;
  }

  /** Resolves once no write is pending (failed ones included). */
  settled(): Promise<void> {
    return this.written;
  }
}

/** Dockerfile order: by line, then column. */
export const byPosition = (a: Diagnostic, b: Diagnostic): number => a.line - b.line || a.column - b.column;

/** Build.warnings' JSON: one object per finding. */
export function warningsColumn(all: readonly Diagnostic[]): { line: number; column: number; rule: string | null; message: string; severity: Diagnostic['severity'] }[] {
  return all.map((w) => ({ line: w.line, column: w.column, rule: w.rule ?? null, message: w.message, severity: w.severity }));
}

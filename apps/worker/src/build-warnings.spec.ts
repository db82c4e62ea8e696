import type { Diagnostic } from '@strata/dockerfile';
import { BuildWarnings } from './build-warnings.js';

const finding = (line: number, message: string, severity: Diagnostic['severity'] = 'warning', rule = 'SomeRule'): Diagnostic =>
  ({ line, column: 1, message, severity, rule }) as Diagnostic;

/** A row whose writes are answered when the test says so, in any order. */
function slowRow() {
  const writes: { all: string[]; answer: () => void; fail: (e: Error) => void }[] = [];
  let row: string[] = [];
  return {
    writes,
    row: () => row,
    store: (all: readonly Diagnostic[]) =>
      new Promise<void>((resolve, reject) => {
        const snapshot = all.map((d) => d.message);
        writes.push({ all: snapshot, answer: () => ((row = snapshot), resolve()), fail: reject });
      }),
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('BuildWarnings', () => {
  it('ends with every finding in the row when two batches are found at once: the later write waits for the earlier', async () => {
    const db = slowRow();
    const lines: string[] = [];
    const warnings = new BuildWarnings({ store: db.store, line: (t) => lines.push(t) });
    const fromContext = warnings.add([finding(4, 'COPY of an ignored file')]);
    const fromImages = warnings.add([finding(1, 'wrong platform')]);
    await tick();
    // The second write waits for the first: only one is in flight.
    expect(db.writes).toHaveLength(1);
    db.writes[0].answer();
    await fromContext;
    await tick();
    expect(db.writes).toHaveLength(2);
    db.writes[1].answer();
    expect(await fromImages).toEqual([finding(1, 'wrong platform')]);
    expect(db.row()).toEqual(['wrong platform', 'COPY of an ignored file']);
    expect(lines).toEqual(['warning: SomeRule: COPY of an ignored file (line 4)', 'warning: SomeRule: wrong platform (line 1)']);
  });

  it('records a finding once, however often it is found, and writes nothing for nothing new', async () => {
    const stored: string[][] = [];
    const lines: string[] = [];
    const warnings = new BuildWarnings({ store: async (all) => stored.push(all.map((d) => d.message)), line: (t) => lines.push(t) });
    expect(await warnings.add([finding(3, 'b'), finding(2, 'a', 'error', ''), finding(3, 'b')])).toHaveLength(2);
    expect(await warnings.add([finding(2, 'a', 'error', '')])).toEqual([]);
    expect(await warnings.add([])).toEqual([]);
    expect(stored).toEqual([['a', 'b']]);
    expect(lines).toEqual(['error: a (line 2)', 'warning: SomeRule: b (line 3)']);
    expect(warnings.all.map((d) => d.line)).toEqual([2, 3]);
  });

  it('goes on after a write that failed: that add rejects, the next write carries its findings too', async () => {
    const db = slowRow();
    const warnings = new BuildWarnings({ store: db.store });
    const first = warnings.add([finding(1, 'a')]);
    await tick();
    db.writes[0].fail(new Error('connection lost'));
    await expect(first).rejects.toThrow('connection lost');
    const second = warnings.add([finding(2, 'b')]);
    await tick();
    db.writes[1].answer();
    await second;
    expect(db.row()).toEqual(['a', 'b']);
    await warnings.settled();
  });
});

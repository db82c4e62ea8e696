import { explainMiss, type StepFingerprint } from './miss-reason.js';

const base: StepFingerprint = { kind: 'COPY', line: 3, definition: 'd1', args: {}, files: { 'src/app.ts': 'h1', 'src/util.ts': 'h2' }, parent: 'p1' };

describe('explainMiss', () => {
  it('names the changed source files', () => {
    const cur = { ...base, definition: 'd2', files: { 'src/app.ts': 'h9', 'src/util.ts': 'h2' } };
    expect(explainMiss(cur, base, null, 'COPY src/')).toBe('COPY src/ changed: src/app.ts');
  });
  it('names added and removed files, and summarises long lists', () => {
    const cur = { ...base, definition: 'd2', files: { a: '1', b: '2', c: '3', d: '4' } };
    expect(explainMiss(cur, base, null, 'COPY . /app')).toBe('COPY . /app changed: a, b, c and 3 more');
  });
  it('names a changed build arg', () => {
    const prev = { ...base, kind: 'RUN', files: undefined, args: { VERSION: '1' } };
    expect(explainMiss({ ...prev, definition: 'd3', args: { VERSION: '2' } }, prev, null, 'RUN')).toBe('build arg VERSION changed');
  });
  it('names the base image digest it now resolves to', () => {
    const prev = { ...base, base: { ref: 'busybox:latest', digest: 'sha256:aaa' } };
    const cur = { ...prev, parent: 'p2', base: { ref: 'busybox:latest', digest: 'sha256:bbb' } };
    expect(explainMiss(cur, prev, null, 'COPY src/')).toBe('base image busybox:latest now resolves to sha256:bbb (was sha256:aaa)');
  });
  it('says the instruction changed when its text did', () => {
    const prev = { ...base, kind: 'RUN', files: undefined };
    expect(explainMiss({ ...prev, definition: 'other' }, prev, null, 'RUN')).toBe('instruction changed');
  });
  it('points at the earlier step when only the parent changed', () => {
    expect(explainMiss({ ...base, parent: 'p2' }, base, { line: 2, instruction: 'COPY go.mod .' }, 'COPY src/')).toBe(
      'an earlier step changed: line 2 (COPY go.mod .)',
    );
  });
  it('says when there is nothing to compare with', () => {
    expect(explainMiss(base, null, null, 'COPY src/')).toBe('no earlier build of this repository and target ran this step');
  });
});

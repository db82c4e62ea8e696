import fc from 'fast-check';
import { DockerfileError, checkDockerfile, expandWord, parseDockerfile, resolveBuild } from './index.js';

const fragments = [
  'FROM busybox', 'FROM busybox AS b', 'FROM b', 'ARG A=1', 'ARG B', 'RUN echo $A', 'RUN <<EOF', 'EOF', 'RUN <<-X cat',
  '\tX', 'COPY --from=b /a /b', 'COPY --from=0 x y', 'COPY <<EOF /x', 'ENV K V', 'ENV K=${A:-x}', 'LABEL "a"="b c"',
  '# comment', '# escape=`', '', '   ', '\\', '`', 'RUN a \\', 'HEALTHCHECK --interval=5s CMD true', 'ONBUILD RUN x',
  'EXPOSE 80/tcp', 'WORKDIR rel', 'RUN --mount=type=cache,target=/c true', 'RUN ["a", "b"]', 'SHELL ["sh"]', 'USER u',
  'VOLUME ["/v"]', 'STOPSIGNAL SIGTERM', 'MAINTAINER m', 'ADD https://x.test/a.git /s', 'run lower', 'FROM ${A}',
];

function assertPositioned(text: string): void {
  try {
    const df = parseDockerfile(text);
    for (const w of df.warnings) {
      expect(w.line).toBeGreaterThanOrEqual(1);
      expect(w.column).toBeGreaterThanOrEqual(1);
    }
    try {
      resolveBuild(df);
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
    }
  } catch (e) {
    if (!(e instanceof DockerfileError)) throw e;
    expect(e.diagnostics.length).toBeGreaterThan(0);
    for (const d of e.diagnostics) {
      expect(Number.isInteger(d.line) && d.line >= 1).toBe(true);
      expect(Number.isInteger(d.column) && d.column >= 1).toBe(true);
      expect(d.message.length).toBeGreaterThan(0);
    }
  }
}

describe('robustness', () => {
  it('never crashes on random text', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (text) => assertPositioned(text)), { numRuns: 500 });
  });

  it('never crashes on Dockerfile-shaped text', () => {
    const line = fc.oneof(fc.constantFrom(...fragments), fc.string({ maxLength: 40 }));
    fc.assert(fc.property(fc.array(line, { maxLength: 30 }), fc.constantFrom('\n', '\r\n'), (lines, nl) => assertPositioned(lines.join(nl))), { numRuns: 500 });
  });

  it('never crashes on mutated fixtures-like files', () => {
    const base = 'ARG V=1\nFROM busybox AS a\nRUN --mount=type=secret,id=t \\\n  echo ${V:-x}\nCOPY <<EOF /f\nhi\nEOF\nFROM a\nCOPY --from=a /f /g\nHEALTHCHECK CMD ["true"]\n';
    fc.assert(
      fc.property(fc.nat(base.length), fc.nat(base.length), fc.string({ maxLength: 6 }), (at, len, insert) => {
        const start = Math.min(at, base.length);
        assertPositioned(base.slice(0, start) + insert + base.slice(Math.min(base.length, start + (len % 8))));
      }),
      { numRuns: 800 },
    );
  });

  it('checkDockerfile never throws', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (text) => {
      const r = checkDockerfile(text, { target: 'x' });
      expect(Array.isArray(r.errors)).toBe(true);
    }), { numRuns: 300 });
  });

  it('expandWord either expands or throws a positioned DockerfileError', () => {
    const chars = fc.constantFrom('$', '{', '}', ':', '-', '+', '?', '#', '%', '/', '*', '\\', '"', "'", 'a', 'B', ' ', '<');
    fc.assert(fc.property(fc.array(chars, { maxLength: 30 }), (cs) => {
      try {
        expect(typeof expandWord(cs.join(''), { a: 'x y', B: '' })).toBe('string');
      } catch (e) {
        expect(e).toBeInstanceOf(DockerfileError);
      }
    }), { numRuns: 1000 });
  });
});

describe('scale', () => {
  it('parses a 2,000-line Dockerfile with long continuations and heredocs quickly', () => {
    const parts: string[] = ['ARG BASE=busybox'];
    for (let s = 0; s < 45; s++) {
      parts.push(`FROM \${BASE} AS s${s}`, `ENV A${s}=${s} B=$A${s}`, `COPY --from=${s === 0 ? 'busybox' : `s${s - 1}`} /a /a`);
      parts.push('RUN --mount=type=cache,target=/c set -e \\', ...Array.from({ length: 20 }, (_, i) => `    && echo ${i} \\`), '    && true');
      parts.push('RUN <<EOF', ...Array.from({ length: 20 }, (_, i) => `echo ${i}`), 'EOF');
    }
    const text = parts.join('\n');
    expect(text.split('\n').length).toBeGreaterThan(2000);
    const started = performance.now();
    const df = parseDockerfile(text);
    const plan = resolveBuild(df);
    const elapsed = performance.now() - started;
    expect(df.stages).toHaveLength(45);
    expect(plan.neededStages).toHaveLength(45);
    // Not a benchmark: a generous bound that only a super-linear parser would break.
    expect(elapsed).toBeLessThan(1000);
  });
});

import { useMutation } from '@tanstack/react-query';
import { useState } from 'react';
import { type CheckResult, type Diagnostic, request } from '../api';
import { EmptyState, ErrorNote } from '../components';

const EXAMPLE = `FROM busybox AS build
RUN echo building > /out.txt

FROM scratch
COPY --from=build /out.txt /
`;

async function check(text: string): Promise<CheckResult> {
  // 422 carries the same result, with its errors.
  const res = await request('/v1/dockerfile/check', { method: 'POST', body: text, headers: { 'content-type': 'text/plain' } }, [422]);
  return (await res.json()) as CheckResult;
}

const NODE_W = 168;
const NODE_H = 52;
const GAP_X = 64;
const GAP_Y = 20;

/** Stages laid out by depth: a stage sits one column right of the deepest stage it needs. */
function StageGraph({ result }: { result: CheckResult }) {
  const level: number[] = [];
  result.stages.forEach((s, i) => {
    level[i] = s.dependsOn.reduce((m, d) => Math.max(m, (level[d] ?? 0) + 1), 0);
  });
  const rowsPerLevel = new Map<number, number>();
  const pos = result.stages.map((_, i) => {
    const row = rowsPerLevel.get(level[i]) ?? 0;
    rowsPerLevel.set(level[i], row + 1);
    return { x: level[i] * (NODE_W + GAP_X) + 8, y: row * (NODE_H + GAP_Y) + 8 };
  });
  const width = Math.max(...pos.map((p) => p.x)) + NODE_W + 16;
  const height = Math.max(...pos.map((p) => p.y)) + NODE_H + 16;
  const needed = new Set(result.neededStages);
  return (
    <div className="graph-scroll">
      <svg className="stage-graph" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label="Stage graph">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" className="edge-head" />
          </marker>
        </defs>
        {result.stages.flatMap((s, i) =>
          s.dependsOn.map((d) => {
            const a = pos[d];
            const b = pos[i];
            const x1 = a.x + NODE_W;
            const y1 = a.y + NODE_H / 2;
            const x2 = b.x - 2;
            const y2 = b.y + NODE_H / 2;
            const mid = (x1 + x2) / 2;
            return <path key={`${d}-${i}`} className="edge" d={`M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`} markerEnd="url(#arrow)" />;
          }),
        )}
        {result.stages.map((s, i) => (
          <g key={i} transform={`translate(${pos[i].x},${pos[i].y})`} className={needed.has(i) ? 'node' : 'node node-skipped'}>
            <rect width={NODE_W} height={NODE_H} rx="8" />
            <text x="12" y="21" className="node-name">
              {s.name ?? `stage ${i}`}
            </text>
            <text x="12" y="39" className="node-from">
              {`FROM ${s.from}`.slice(0, 26)}
            </text>
          </g>
        ))}
      </svg>
      <p className="muted small">Stages the target needs are solid; the others would be skipped.</p>
    </div>
  );
}

export function DockerfileCheck() {
  const [text, setText] = useState(EXAMPLE);
  const run = useMutation({ mutationFn: check });
  const result = run.data;
  const lines = text.replace(/\n$/, '').split('\n');
  const byLine = new Map<number, Diagnostic[]>();
  for (const d of [...(result?.errors ?? []), ...(result?.warnings ?? [])]) byLine.set(d.line, [...(byLine.get(d.line) ?? []), d]);
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Dockerfile check</h1>
          <p className="muted">Paste a Dockerfile to see its stages and what a build would warn about, without building it.</p>
        </div>
      </div>
      <div className="check-grid">
        <form
          className="card check-input"
          onSubmit={(e) => {
            e.preventDefault();
            run.mutate(text);
          }}
        >
          <label htmlFor="dockerfile-text">Dockerfile</label>
          <textarea id="dockerfile-text" value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} rows={16} className="mono" />
          <div className="form-actions">
            <button className="btn btn-primary" type="submit" disabled={run.isPending}>
              {run.isPending ? 'Checking…' : 'Check'}
            </button>
          </div>
        </form>
        <div className="check-output">
          <ErrorNote error={run.error} />
          {!result ? (
            <div className="card">
              <EmptyState title="Nothing checked yet">Press Check to parse the Dockerfile on the left.</EmptyState>
            </div>
          ) : (
            <>
              <section className="card" aria-label="Result">
                <div className="section-head">
                  <h2>
                    {result.errors.length > 0 ? (
                      <span className="text-failed">{result.errors.length} error{result.errors.length === 1 ? '' : 's'}</span>
                    ) : (
                      <span className="text-succeeded">No errors</span>
                    )}
                    <span className="muted">
                      {' '}
                      · {result.warnings.length} warning{result.warnings.length === 1 ? '' : 's'} · {result.stages.length} stage{result.stages.length === 1 ? '' : 's'}
                    </span>
                  </h2>
                </div>
                {result.stages.length > 0 && <StageGraph result={result} />}
              </section>
              <section className="card" aria-label="Dockerfile with findings">
                <ol className="dockerfile-lines annotated">
                  {lines.map((l, i) => {
                    const ds = byLine.get(i + 1);
                    const sev = ds?.some((d) => d.severity === 'error') ? 'error' : ds ? 'warning' : '';
                    return (
                      <li key={i} className={`dockerfile-line ${sev ? `has-${sev}` : ''}`} data-line={i + 1}>
                        <span className="ln" aria-hidden="true">
                          {i + 1}
                        </span>
                        <code>{l || ' '}</code>
                        {ds?.map((d, j) => (
                          <div key={j} className={`diag diag-${d.severity}`} role="note">
                            <strong>
                              {d.severity} {d.line}:{d.column}
                            </strong>
                            {d.rule && <span className="rule">{d.rule}</span>} {d.message}
                          </div>
                        ))}
                      </li>
                    );
                  })}
                </ol>
              </section>
            </>
          )}
        </div>
      </div>
    </div>
  );
}

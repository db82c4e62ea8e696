import type { Build, BuildStep } from '../api';
import { formatDuration } from '../format';
import type { LogStore } from '../log-store';

interface Bar {
  key: string;
  stage: number;
  index: number;
  instruction: string;
  start: number;
  duration: number;
  cached: boolean;
  running: boolean;
  /** The step the build stopped in: started, never done, and the build failed. */
  failed: boolean;
  missReason: string | null;
  line: number | null;
}

/**
 * Stages as lanes, steps as bars placed by when they ran: parallel stages overlap in time and show
 * side by side. Finished steps come from the build; running ones from the live log's step events.
 */
export function Timeline({ build, store, now }: { build: Build; store: LogStore; now: number }) {
  const origin = new Date(build.startedAt ?? build.createdAt).getTime();
  const bars: Bar[] = build.steps.map((s: BuildStep) => {
    const start = s.startedAt ? new Date(s.startedAt).getTime() - origin : 0;
    return {
      key: `${s.stage}:${s.index}`,
      stage: s.stage,
      index: s.index,
      instruction: s.instruction,
      start: Math.max(0, start),
      duration: s.durationMs ?? 0,
      cached: s.cached,
      running: false,
      failed: false,
      missReason: s.missReason,
      line: s.line,
    };
  });
  const known = new Set(bars.map((b) => b.key));
  for (const key of store.order) {
    const sec = store.sections.get(key)!;
    if (sec.stage === null || sec.step === null || known.has(key) || sec.instruction === null) continue;
    const running = sec.status === 'running' && build.finishedAt === null;
    const failed = sec.status === 'running' && build.status === 'failed';
    const started = sec.seenRunningAt ?? (sec.lines.length > 0 ? new Date(store.lines[sec.lines[0]].time).getTime() : now);
    const stopped = build.finishedAt ? new Date(build.finishedAt).getTime() : now;
    bars.push({
      key,
      stage: sec.stage,
      index: sec.step,
      instruction: sec.instruction,
      start: Math.max(0, started - origin),
      duration: running ? Math.max(0, now - started) : failed ? Math.max(0, stopped - started) : (sec.durationMs ?? 0),
      cached: sec.cached,
      running,
      failed,
      missReason: null,
      line: null,
    });
  }
  bars.sort((a, b) => a.stage - b.stage || a.index - b.index);
  const names = new Map(build.steps.map((s) => [s.stage, s.stageName]));
  const lanes = [...new Set(bars.map((b) => b.stage))].map((stage) => ({ stage, name: names.get(stage) ?? null, bars: bars.filter((b) => b.stage === stage) }));
  const end = Math.max(1, ...bars.map((b) => b.start + b.duration), build.durationMs ?? 0);
  const cached = bars.filter((b) => b.cached).length;

  return (
    <section className="card timeline" aria-label="Step timeline">
      <div className="section-head">
        <h2>Steps</h2>
        <span className="muted">
          {bars.length === 0
            ? build.status === 'queued'
              ? 'waiting for a worker'
              : 'no steps recorded'
            : `${bars.length} step${bars.length === 1 ? '' : 's'}, ${cached} from cache · ${formatDuration(end)}`}
        </span>
      </div>
      {lanes.length > 0 && (
        <div className="lanes">
          {lanes.map((lane) => (
            <div className="lane" key={lane.stage} role="group" aria-label={`Stage ${lane.name ?? lane.stage}`}>
              <div className="lane-label">
                <span className="lane-index">stage {lane.stage}</span>
                {lane.name && <span className="lane-name">{lane.name}</span>}
              </div>
              <ol className="lane-steps">
                {lane.bars.map((bar) => (
                  <li
                    key={bar.key}
                    className={`step ${bar.cached ? 'step-cached' : ''} ${bar.running ? 'step-running' : ''} ${bar.failed ? 'step-failed' : ''}`}
                    data-step={bar.key}
                    data-cached={bar.cached ? 'true' : 'false'}
                  >
                    <div className="step-text">
                      <code className="step-instruction" title={bar.instruction}>
                        {bar.instruction}
                      </code>
                      <span className="step-why">
                        {bar.cached ? (
                          <span className="badge badge-cached">cached</span>
                        ) : bar.running ? (
                          <span className="badge badge-running">running</span>
                        ) : bar.failed ? (
                          <span className="badge badge-failed">failed</span>
                        ) : bar.missReason ? (
                          <span className="miss" title="Why the cache was not used">
                            {bar.missReason}
                          </span>
                        ) : null}
                      </span>
                    </div>
                    <div className="step-track" aria-hidden="true">
                      <span
                        className="step-bar"
                        style={{ left: `${(bar.start / end) * 100}%`, width: `max(3px, ${(bar.duration / end) * 100}%)` }}
                      />
                    </div>
                    <span className="step-duration mono">{bar.cached ? '—' : formatDuration(bar.duration)}</span>
                  </li>
                ))}
              </ol>
            </div>
          ))}
        </div>
      )}
    </section>
  );
}

import { useVirtualizer } from '@tanstack/react-virtual';
import { type ReactNode, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { type AnsiSegment, parseAnsi } from '../ansi';
import { request } from '../api';
import { formatDuration } from '../format';
import type { LogSection, LogStore } from '../log-store';

const ROW = 20;
/** Rows are line indexes (>= 0) or section headers (-1 - position in store.order). */
type Row = number;

function targetFromHash(): number | null {
  const m = /^#L(\d+)$/.exec(location.hash);
  return m ? Number(m[1]) : null;
}

function plural(n: number, word: string): string {
  return `${n.toLocaleString('en')} ${word}${n === 1 ? '' : 's'}`;
}

function sectionTitle(s: LogSection): string {
  if (s.stage === null) return 'Build';
  return s.instruction ?? `Stage ${s.stage}, step ${s.step}`;
}

/** Splits styled segments further where the search text occurs, so matches can be marked. */
function Highlighted({ segments, query, current }: { segments: AnsiSegment[]; query: string; current: boolean }) {
  const out: ReactNode[] = [];
  segments.forEach((seg, i) => {
    const cls = seg.style
      ? [
          seg.style.fg?.startsWith('c') ? `fg-${seg.style.fg}` : '',
          seg.style.bg?.startsWith('c') ? `bg-${seg.style.bg}` : '',
          seg.style.bold ? 'b' : '',
          seg.style.dim ? 'dim' : '',
          seg.style.italic ? 'i' : '',
          seg.style.underline ? 'u' : '',
          seg.style.inverse ? 'inv' : '',
        ]
          .filter(Boolean)
          .join(' ')
      : undefined;
    const style =
      seg.style && ((seg.style.fg && !seg.style.fg.startsWith('c')) || (seg.style.bg && !seg.style.bg.startsWith('c')))
        ? { color: seg.style.fg && !seg.style.fg.startsWith('c') ? seg.style.fg : undefined, background: seg.style.bg && !seg.style.bg.startsWith('c') ? seg.style.bg : undefined }
        : undefined;
    let parts: ReactNode = seg.text;
    if (query) {
      const lower = seg.text.toLowerCase();
      const pieces: ReactNode[] = [];
      let at = 0;
      for (let hit = lower.indexOf(query); hit >= 0; hit = lower.indexOf(query, at)) {
        if (hit > at) pieces.push(seg.text.slice(at, hit));
        pieces.push(
          <mark key={hit} className={current ? 'hit hit-current' : 'hit'}>
            {seg.text.slice(hit, hit + query.length)}
          </mark>,
        );
        at = hit + query.length;
      }
      if (pieces.length > 0) {
        if (at < seg.text.length) pieces.push(seg.text.slice(at));
        parts = pieces;
      }
    }
    out.push(cls || style ? <span key={i} className={cls} style={style}>{parts}</span> : <span key={i}>{parts}</span>);
  });
  return <>{out}</>;
}

export function LogView({ buildId, store }: { buildId: string; store: LogStore }) {
  const scrollRef = useRef<HTMLDivElement>(null);
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(() => new Set());
  const [target, setTarget] = useState<number | null>(targetFromHash);
  const [following, setFollowing] = useState(target === null);
  const [query, setQuery] = useState('');
  const [matchAt, setMatchAt] = useState(0);
  const [downloadError, setDownloadError] = useState<string | null>(null);
  const version = store.version;
  const q = query.toLowerCase();

  // Rows are laid out by section (a header, then its lines unless collapsed): a few offsets, not
  // an array of 100,000 rows rebuilt on every batch.
  const layout = useMemo(() => {
    const starts: number[] = [];
    let total = 0;
    for (const key of store.order) {
      starts.push(total);
      total += 1 + (collapsed.has(key) ? 0 : store.sections.get(key)!.lines.length);
    }
    return { starts, total };
    // The store mutates in place; `version` says when.
  }, [store, version, collapsed]);

  const rowAt = (i: number): Row => {
    const { starts } = layout;
    let lo = 0;
    let hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    const offset = i - starts[lo];
    return offset === 0 ? -1 - lo : store.sections.get(store.order[lo])!.lines[offset - 1];
  };

  /** The row showing line index `i`, or -1 while its section is collapsed. */
  const rowOfLine = (i: number): number => {
    const line = store.lines[i];
    if (!line || collapsed.has(line.section)) return -1;
    return layout.starts[store.order.indexOf(line.section)] + 1 + line.pos;
  };

  const matches = useMemo(() => (q ? store.search(q) : []), [store, version, q]);
  const currentMatch = matches.length > 0 ? matches[Math.min(matchAt, matches.length - 1)] : null;

  const virtualizer = useVirtualizer({
    count: layout.total,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW,
    overscan: 30,
  });

  // Follow: keep the newest line in view until the reader scrolls away from the end.
  useLayoutEffect(() => {
    const el = scrollRef.current;
    if (following && el) el.scrollTop = el.scrollHeight;
  }, [following, layout.total]);

  const onScroll = () => {
    const el = scrollRef.current;
    if (!el) return;
    const atEnd = el.scrollHeight - el.scrollTop - el.clientHeight < ROW;
    if (atEnd !== following) setFollowing(atEnd);
  };

  const [pendingReveal, setPendingReveal] = useState<number | null>(null);
  /** Shows line index `i`: opens its section and scrolls it to the middle. */
  const reveal = useCallback(
    (i: number) => {
      const line = store.lines[i];
      if (!line) return;
      setFollowing(false);
      if (collapsed.has(line.section)) {
        const next = new Set(collapsed);
        next.delete(line.section);
        setCollapsed(next);
      }
      // The rows change when a section opens: the effect below scrolls once they have.
      setPendingReveal(i);
    },
    [store, collapsed],
  );
  useEffect(() => {
    if (pendingReveal === null) return;
    // The store fills between renders: wait until the line is in the rows this render laid out.
    const at = rowOfLine(pendingReveal);
    if (at >= 0 && at < layout.total) {
      virtualizer.scrollToIndex(at, { align: 'center' });
      setPendingReveal(null);
    }
    // Runs again once the section has opened (layout changes).
  }, [pendingReveal, layout, virtualizer]);

  // A #L123 permalink: reveal the line as soon as it has arrived.
  useEffect(() => {
    if (target !== null && store.lines.length >= target) {
      reveal(target - 1);
    }
    // Only when the line arrives or the target changes.
  }, [target, target !== null && store.lines.length >= target]);
  useEffect(() => {
    const onHash = () => setTarget(targetFromHash());
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  const go = (delta: number) => {
    if (matches.length === 0) return;
    const next = (Math.min(matchAt, matches.length - 1) + delta + matches.length) % matches.length;
    setMatchAt(next);
    reveal(matches[next]);
  };

  const toggle = (key: string) => {
    const next = new Set(collapsed);
    if (next.has(key)) next.delete(key);
    else next.add(key);
    setCollapsed(next);
  };

  const download = async () => {
    setDownloadError(null);
    try {
      const res = await request(`/v1/builds/${encodeURIComponent(buildId)}/logs`, { headers: { accept: 'text/plain' } });
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = `build-${buildId}.log`;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setDownloadError((e as Error).message);
    }
  };

  const jumpToEnd = () => {
    setFollowing(true);
    const el = scrollRef.current;
    if (el) el.scrollTop = el.scrollHeight;
  };

  const status =
    store.error !== null
      ? store.error
      : store.connection === 'reconnecting'
        ? 'connection lost, reconnecting…'
        : store.ended !== null
          ? plural(store.lines.length, 'line')
          : store.connection === 'connecting'
            ? 'connecting…'
            : `live · ${plural(store.lines.length, 'line')}`;

  return (
    <section className="card log" aria-label="Build log">
      <div className="log-toolbar">
        <h2>Log</h2>
        <span className={`log-status ${store.ended === null && store.connection === 'live' ? 'is-live' : ''}`} data-testid="log-status" aria-live="polite">
          {status}
        </span>
        <div className="log-search" role="search">
          <input
            type="search"
            aria-label="Search the log"
            placeholder="Search log"
            value={query}
            onChange={(e) => {
              setQuery(e.target.value);
              setMatchAt(0);
            }}
            onKeyDown={(e) => {
              if (e.key === 'Enter') {
                e.preventDefault();
                go(e.shiftKey ? -1 : 1);
              }
            }}
          />
          <span className="match-count mono" aria-live="polite" data-testid="match-count">
            {q ? (matches.length === 0 ? 'no matches' : `${Math.min(matchAt, matches.length - 1) + 1} of ${matches.length.toLocaleString('en')}`) : ''}
          </span>
          <button type="button" className="btn btn-small" onClick={() => go(-1)} disabled={matches.length === 0} aria-label="Previous match">
            ↑
          </button>
          <button type="button" className="btn btn-small" onClick={() => go(1)} disabled={matches.length === 0} aria-label="Next match">
            ↓
          </button>
        </div>
        <div className="log-actions">
          <button type="button" className="btn btn-small" onClick={() => setCollapsed(new Set(store.order))}>
            Collapse all
          </button>
          <button type="button" className="btn btn-small" onClick={() => setCollapsed(new Set())}>
            Expand all
          </button>
          <button type="button" className="btn btn-small" onClick={download}>
            Download raw
          </button>
        </div>
      </div>
      {downloadError && (
        <div className="note note-error" role="alert">
          {downloadError}
        </div>
      )}
      <div className="log-frame">
        <div className="log-scroll" ref={scrollRef} onScroll={onScroll} style={{ height: `min(70vh, 720px, ${Math.max(layout.total * ROW + 24, 160)}px)` }} tabIndex={0} role="log" aria-label="Log lines" data-following={following ? 'true' : 'false'}>
          {layout.total === 0 ? (
            <div className="log-empty">{store.ended !== null || store.connection === 'closed' ? 'This build wrote no log.' : 'Waiting for the first line…'}</div>
          ) : (
            <div className="log-inner" style={{ height: virtualizer.getTotalSize() }}>
              {virtualizer.getVirtualItems().map((v) => {
                const row = rowAt(v.index);
                const style = { transform: `translateY(${v.start}px)` };
                if (row < 0) {
                  const key = store.order[-1 - row];
                  const s = store.sections.get(key)!;
                  const open = !collapsed.has(key);
                  return (
                    <div key={`s${key}`} className={`log-section ${s.cached ? 'is-cached' : ''}`} style={style} data-section={key}>
                      <button type="button" className="section-toggle" aria-expanded={open} onClick={() => toggle(key)}>
                        <span className="chevron" aria-hidden="true">
                          {open ? '▾' : '▸'}
                        </span>
                        <span className="section-title">{sectionTitle(s)}</span>
                      </button>
                      <span className="section-meta">
                        {s.cached && <span className="badge badge-cached">cached</span>}
                        {s.status === 'running' && store.ended === null && <span className="badge badge-running">running</span>}
                        {s.lines.length > 0 && <span className="muted">{plural(s.lines.length, 'line')}</span>}
                        {s.durationMs !== null && !s.cached && <span className="mono muted">{formatDuration(s.durationMs)}</span>}
                      </span>
                    </div>
                  );
                }
                const line = store.lines[row];
                const isCurrent = currentMatch === row;
                return (
                  <div
                    key={`l${row}`}
                    className={`log-line stream-${line.stream} ${target === line.n ? 'is-target' : ''} ${isCurrent ? 'is-match' : ''}`}
                    style={style}
                    data-n={line.n}
                    id={`L${line.n}`}
                  >
                    <a
                      className="ln"
                      href={`#L${line.n}`}
                      tabIndex={-1}
                      onClick={(e) => {
                        e.preventDefault();
                        history.replaceState(null, '', `#L${line.n}`);
                        setTarget(line.n);
                        setFollowing(false);
                      }}
                    >
                      {line.n}
                    </a>
                    <span className="lt">
                      <Highlighted segments={parseAnsi(line.raw)} query={q} current={isCurrent} />
                    </span>
                  </div>
                );
              })}
            </div>
          )}
        </div>
        {!following && layout.total > 0 && (
          <button type="button" className="btn btn-primary jump" onClick={jumpToEnd}>
            Jump to end ↓
          </button>
        )}
      </div>
    </section>
  );
}

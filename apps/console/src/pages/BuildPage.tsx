import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useMemo, useState, useSyncExternalStore } from 'react';
import { ApiError, type Build, getJson, postJson, TERMINAL, type Whoami } from '../api';
import { CopyButton, ErrorNote, StatusBadge, TagChips, Time, useNow } from '../components';
import { buildDuration, formatDuration, sourceLabel } from '../format';
import { LogStore } from '../log-store';
import { Link, navigate } from '../router';
import { LogView } from './LogView';
import { Timeline } from './Timeline';

function useLogStore(id: string, onStep: () => void): LogStore {
  const store = useMemo(() => new LogStore(), [id]);
  useEffect(() => {
    const ac = new AbortController();
    const off = store.onStepChange(onStep);
    void store.follow(id, ac.signal);
    return () => {
      off();
      ac.abort();
    };
    // onStep only invalidates the query of this id: a new closure per render changes nothing.
  }, [store, id]);
  useSyncExternalStore(store.subscribe, store.getVersion);
  return store;
}

export function BuildPage({ id }: { id: string }) {
  const client = useQueryClient();
  const now = useNow();
  const build = useQuery({
    queryKey: ['build', id],
    queryFn: () => getJson<Build>(`/v1/builds/${encodeURIComponent(id)}`),
    refetchInterval: (q) => (q.state.data && TERMINAL.has(q.state.data.status) ? false : 2000),
  });
  const whoami = useQuery({ queryKey: ['whoami'], queryFn: () => getJson<Whoami>('/v1/whoami'), staleTime: Infinity });
  const store = useLogStore(id, () => void client.invalidateQueries({ queryKey: ['build', id] }));
  const cancel = useMutation({
    mutationFn: () => postJson<Build>(`/v1/builds/${encodeURIComponent(id)}/cancel`),
    onSuccess: (b) => client.setQueryData(['build', id], b),
  });
  const rebuild = useMutation({
    mutationFn: () => postJson<Build>(`/v1/builds/${encodeURIComponent(id)}/rebuild`),
    onSuccess: (b) => navigate(`/builds/${b.id}`),
  });

  if (build.error) {
    return (
      <div className="page">
        <h1>Build</h1>
        <ErrorNote error={build.error} />
        {build.error instanceof ApiError && build.error.status === 404 && (
          <p>
            <Link to="/">Back to the builds</Link>
          </p>
        )}
      </div>
    );
  }
  const b = build.data;
  if (!b) {
    return (
      <div className="page">
        <div className="card skeleton" aria-busy="true">
          Loading build…
        </div>
      </div>
    );
  }
  const host = location.host;
  const pull = b.imageDigest && whoami.data ? `docker pull ${host}/${whoami.data.tenant}/${b.repository}@${b.imageDigest}` : null;
  const running = !TERMINAL.has(b.status);
  return (
    <div className="page build-page">
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/">Builds</Link> <span aria-hidden="true">/</span> <span className="mono">{b.id.slice(0, 8)}</span>
      </nav>
      <section className="card build-header" aria-label="Build summary">
        <div className="build-title">
          <StatusBadge status={b.status} />
          <h1>
            <Link to={`/repositories/${b.repository}`}>{b.repository}</Link>
          </h1>
          <TagChips tags={b.tags} />
          <div className="actions">
            {running && (
              <button type="button" className="btn btn-danger" onClick={() => cancel.mutate()} disabled={cancel.isPending}>
                {cancel.isPending ? 'Cancelling…' : 'Cancel'}
              </button>
            )}
            <button type="button" className="btn" onClick={() => rebuild.mutate()} disabled={rebuild.isPending}>
              {rebuild.isPending ? 'Starting…' : 'Rebuild'}
            </button>
          </div>
        </div>
        <ErrorNote error={cancel.error ?? rebuild.error} />
        <dl className="facts">
          <div>
            <dt>Duration</dt>
            <dd className="mono">{formatDuration(buildDuration(b, now))}</dd>
          </div>
          <div>
            <dt>Started</dt>
            <dd>
              <Time iso={b.startedAt ?? b.createdAt} now={now} />
            </dd>
          </div>
          <div>
            <dt>Source</dt>
            <dd>
              <span title={b.source.type === 'git' ? `${b.source.cloneUrl} ${b.source.sha}\n${b.source.message}` : undefined}>{sourceLabel(b.source)}</span> ·{' '}
              <span className="mono">{b.dockerfile}</span>
              {b.target && <span className="mono"> → {b.target}</span>}
            </dd>
          </div>
          {b.source.type === 'git' && (
            <div className="fact-wide">
              <dt>Commit</dt>
              <dd className="commit">
                <span className="mono">{b.source.ref}</span> · <code title={b.source.sha}>{b.source.sha.slice(0, 12)}</code> · <span className="commit-message">{b.source.message.split('\n')[0]}</span> ·{' '}
                <span className="muted">{b.source.author}</span>
              </dd>
            </div>
          )}
          <div>
            <dt>Base image</dt>
            <dd className="mono wrap">{b.baseImage ? <span title={b.baseImage.digest}>{b.baseImage.ref}</span> : <span className="muted">scratch or not yet known</span>}</dd>
          </div>
          <div className="fact-wide">
            <dt>Image</dt>
            <dd>
              {b.imageDigest ? (
                <span className="digest-row">
                  <code className="digest" title={b.imageDigest}>
                    {b.imageDigest}
                  </code>
                  <CopyButton text={b.imageDigest} label="Copy digest" />
                  {pull && <CopyButton text={pull} label="Copy docker pull" />}
                </span>
              ) : (
                <span className="muted">{running ? 'when the build succeeds' : 'no image'}</span>
              )}
            </dd>
          </div>
        </dl>
        {pull && (
          <pre className="code-block pull" aria-label="Pull command">
            {pull}
          </pre>
        )}
      </section>
      {b.status === 'failed' && b.error && <FailurePanel build={b} />}
      {b.status === 'cancelled' && b.error && <div className="note note-warn">{b.error.message}</div>}
      {b.warnings && b.warnings.length > 0 && (
        <section className="card warnings" aria-label="Dockerfile warnings">
          <div className="section-head">
            <h2>
              {b.warnings.length} Dockerfile warning{b.warnings.length === 1 ? '' : 's'}
            </h2>
            <Link to="/check" className="muted small">
              Check a Dockerfile
            </Link>
          </div>
          <ul className="warning-list">
            {b.warnings.map((w, i) => (
              <li key={i} data-line={w.line}>
                <span className="mono muted">
                  {b.dockerfile}:{w.line}:{w.column}
                </span>
                {w.rule && <span className="rule">{w.rule}</span>}
                <span>{w.message}</span>
              </li>
            ))}
          </ul>
        </section>
      )}
      <Timeline build={b} store={store} now={now} />
      <LogView buildId={b.id} store={store} />
    </div>
  );
}

function FailurePanel({ build }: { build: Build }) {
  const line = build.error?.line ?? null;
  const dockerfile = useQuery({
    queryKey: ['dockerfile', build.id],
    queryFn: () => getJson<{ path: string; text: string }>(`/v1/builds/${encodeURIComponent(build.id)}/dockerfile`),
    enabled: line !== null,
    staleTime: Infinity,
  });
  const lines = dockerfile.data?.text.replace(/\n$/, '').split('\n') ?? [];
  const from = line === null ? 0 : Math.max(1, line - 4);
  const to = line === null ? 0 : Math.min(lines.length, line + 4);
  const [open, setOpen] = useState(true);
  return (
    <section className="card failure" aria-label="Why the build failed">
      <div className="failure-head">
        <h2>Build failed{line !== null && <span className="muted"> at line {line}</span>}</h2>
        {line !== null && (
          <button type="button" className="btn btn-ghost btn-small" aria-expanded={open} onClick={() => setOpen(!open)}>
            {open ? 'Hide Dockerfile' : 'Show Dockerfile'}
          </button>
        )}
      </div>
      <p className="failure-message">{build.error?.message}</p>
      {line !== null && open && (
        <>
          <ErrorNote error={dockerfile.error} />
          {dockerfile.data && (
            <div className="dockerfile" role="region" aria-label={`${dockerfile.data.path} around line ${line}`}>
              <div className="dockerfile-name mono">{dockerfile.data.path}</div>
              <ol className="dockerfile-lines" start={from}>
                {lines.slice(from - 1, to).map((text, i) => {
                  const n = from + i;
                  return (
                    <li key={n} className={n === line ? 'dockerfile-line failing' : 'dockerfile-line'} data-line={n} aria-current={n === line ? 'true' : undefined}>
                      <span className="ln" aria-hidden="true">
                        {n}
                      </span>
                      <code>{text || ' '}</code>
                    </li>
                  );
                })}
              </ol>
            </div>
          )}
        </>
      )}
    </section>
  );
}

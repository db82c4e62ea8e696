import { keepPreviousData, useQuery } from '@tanstack/react-query';
import { type BuildPage, getJson, type Repository, TERMINAL } from '../api';
import { EmptyState, ErrorNote, StatusBadge, TagChips, Time, useNow } from '../components';
import { DataTable, ListStates } from '../data-table';
import { buildDuration, formatDuration, sourceLabel } from '../format';
import { Link, navigate, useLocation } from '../router';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const PAGE_SIZE = 20;

export function BuildsList() {
  const { search } = useLocation();
  const repository = search.get('repository') ?? '';
  const status = search.get('status') ?? '';
  // Cursors of the pages before this one, so "Newer" goes back without the server keeping state.
  const cursor = search.get('cursor') ?? '';
  const back = search.get('back')?.split(',').filter(Boolean) ?? [];
  const now = useNow();

  const setParams = (next: Record<string, string | null>) => {
    const p = new URLSearchParams(search);
    for (const [k, v] of Object.entries(next)) {
      if (v) p.set(k, v);
      else p.delete(k);
    }
    const q = p.toString();
    navigate(q ? `/?${q}` : '/', true);
  };

  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (repository) q.set('repository', repository);
  if (status) q.set('status', status);
  if (cursor) q.set('cursor', cursor);
  const builds = useQuery({
    queryKey: ['builds', repository, status, cursor],
    queryFn: () => getJson<BuildPage>(`/v1/builds?${q}`),
    placeholderData: keepPreviousData,
    // Live without reloading: quick while something runs, slower when all is settled.
    refetchInterval: (query) => (query.state.data?.builds.some((b) => !TERMINAL.has(b.status)) ? 1500 : 5000),
  });
  const repos = useQuery({ queryKey: ['repositories'], queryFn: () => getJson<{ repositories: Repository[] }>('/v1/repositories') });
  const rows = builds.data?.builds ?? [];
  const filtered = repository !== '' || status !== '';

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Builds</h1>
          <p className="muted">Newest first. Status updates live.</p>
        </div>
        <div className="filters" role="group" aria-label="Filters">
          <label>
            <span>Repository</span>
            <select value={repository} onChange={(e) => setParams({ repository: e.target.value || null, cursor: null, back: null })}>
              <option value="">All repositories</option>
              {(repos.data?.repositories ?? []).map((r) => (
                <option key={r.name} value={r.name}>
                  {r.name}
                </option>
              ))}
            </select>
          </label>
          <label>
            <span>Status</span>
            <select value={status} onChange={(e) => setParams({ status: e.target.value || null, cursor: null, back: null })}>
              <option value="">Any status</option>
              {STATUSES.map((s) => (
                <option key={s} value={s}>
                  {s[0].toUpperCase() + s.slice(1)}
                </option>
              ))}
            </select>
          </label>
        </div>
      </div>
      <ErrorNote error={builds.error} />
      <ListStates
        pending={builds.isPending}
        loading="Loading builds…"
        empty={
          rows.length === 0 ? (
            filtered ? (
              <EmptyState title="No builds match these filters">
                <button type="button" className="btn" onClick={() => navigate('/', true)}>
                  Clear filters
                </button>
              </EmptyState>
            ) : (
              <EmptyState title="No builds yet">
                Send a build context to the API to start one:
                <pre className="code-block">
                  {`tar -cf - . | curl -X POST -H "Authorization: Bearer $TOKEN" \\
  -H 'Content-Type: application/x-tar' --data-binary @- \\
  '${location.origin}/v1/builds?repository=demo&tag=latest'`}
                </pre>
              </EmptyState>
            )
          ) : null
        }
      >
        <DataTable
          className="builds-table"
          rows={rows}
          rowKey={(b) => b.id}
          rowAttrs={(b) => ({ 'data-build-id': b.id })}
          columns={[
            { id: 'status', header: 'Status', cell: (b) => <StatusBadge status={b.status} /> },
            {
              id: 'repository',
              header: 'Repository',
              cellClassName: 'cell-main',
              cell: (b) => (
                <>
                  <Link to={`/builds/${b.id}`} className="row-link">
                    <span className="repo-name">{b.repository}</span>
                    <TagChips tags={b.tags} />
                  </Link>
                  <div className="sub mono">{b.id.slice(0, 8)}</div>
                </>
              ),
            },
            {
              id: 'source',
              header: 'Source',
              headerClassName: 'hide-narrow',
              cell: (b) => (
                <>
                  <span className="source">{sourceLabel(b.source)}</span>
                  <div className="sub mono" title={b.source.type === 'git' ? b.source.message : undefined}>
                    {b.source.type === 'git' ? b.source.message.split('\n')[0] : b.dockerfile}
                  </div>
                </>
              ),
            },
            { id: 'started', header: 'Started', cell: (b) => <Time iso={b.startedAt ?? b.createdAt} now={now} /> },
            { id: 'duration', header: 'Duration', headerClassName: 'num', cellClassName: 'num mono', cell: (b) => formatDuration(buildDuration(b, now)) },
          ]}
        />
      </ListStates>
      {(back.length > 0 || cursor || builds.data?.nextCursor) && (
        <nav className="pager" aria-label="Pages">
          <button
            type="button"
            className="btn"
            disabled={!cursor}
            onClick={() => setParams({ cursor: back[back.length - 1] === '_' ? null : back[back.length - 1] || null, back: back.slice(0, -1).join(',') || null })}
          >
            ← Newer
          </button>
          <button
            type="button"
            className="btn"
            disabled={!builds.data?.nextCursor}
            onClick={() => setParams({ cursor: builds.data?.nextCursor ?? null, back: [...back, cursor || '_'].join(',') })}
          >
            Older →
          </button>
        </nav>
      )}
    </div>
  );
}

import { useQuery } from '@tanstack/react-query';
import { getJson, type Repository } from '../api';
import { EmptyState, ErrorNote, Time, useNow } from '../components';
import { DataTable, ListStates } from '../data-table';
import { Link } from '../router';

export function Repositories() {
  const now = useNow(10_000);
  const repos = useQuery({ queryKey: ['repositories'], queryFn: () => getJson<{ repositories: Repository[] }>('/v1/repositories') });
  const rows = repos.data?.repositories ?? [];
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Repositories</h1>
          <p className="muted">Images this tenant built or pushed, by repository.</p>
        </div>
      </div>
      <ErrorNote error={repos.error} />
      <ListStates
        pending={repos.isPending}
        loading="Loading repositories…"
        empty={
          rows.length === 0 ? (
            <EmptyState title="No repositories yet">
              A repository appears with its first build or push. Start a build with <code>POST /v1/builds?repository=NAME</code>.
            </EmptyState>
          ) : null
        }
      >
        <DataTable
          rows={rows}
          rowKey={(r) => r.name}
          columns={[
            {
              id: 'name',
              header: 'Name',
              cellClassName: 'cell-main',
              cell: (r) => (
                <>
                  <Link to={`/repositories/${r.name}`} className="row-link">
                    <span className="repo-name">{r.name}</span>
                  </Link>
                  {r.public && <span className="chip chip-public">public</span>}
                </>
              ),
            },
            { id: 'tags', header: 'Tags', headerClassName: 'num', cellClassName: 'num mono', cell: (r) => r.tags },
            {
              id: 'builds',
              header: 'Builds',
              headerClassName: 'num',
              cellClassName: 'num mono',
              cell: (r) => <Link to={`/?repository=${encodeURIComponent(r.name)}`}>{r.builds}</Link>,
            },
            { id: 'created', header: 'Created', headerClassName: 'hide-narrow', cell: (r) => <Time iso={r.createdAt} now={now} /> },
          ]}
        />
      </ListStates>
    </div>
  );
}

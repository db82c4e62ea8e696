import { useQuery } from '@tanstack/react-query';
import { getJson, type Repository } from '../api';
import { EmptyState, ErrorNote, Time, useNow } from '../components';
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
      {repos.isPending ? (
        <div className="card skeleton" aria-busy="true">
          Loading repositories…
        </div>
      ) : rows.length === 0 ? (
        <div className="card">
          <EmptyState title="No repositories yet">A repository appears with its first build or push. Start a build with <code>POST /v1/builds?repository=NAME</code>.</EmptyState>
        </div>
      ) : (
        <div className="card table-card">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col" className="num">
                  Tags
                </th>
                <th scope="col" className="num">
                  Builds
                </th>
                <th scope="col" className="hide-narrow">
                  Created
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((r) => (
                <tr key={r.name}>
                  <td className="cell-main">
                    <Link to={`/repositories/${r.name}`} className="row-link">
                      <span className="repo-name">{r.name}</span>
                    </Link>
                    {r.public && <span className="chip chip-public">public</span>}
                  </td>
                  <td className="num mono">{r.tags}</td>
                  <td className="num mono">
                    <Link to={`/?repository=${encodeURIComponent(r.name)}`}>{r.builds}</Link>
                  </td>
                  <td className="hide-narrow">
                    <Time iso={r.createdAt} now={now} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

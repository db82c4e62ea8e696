import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { encodeRepo, getJson, request, type Tag, type Whoami } from '../api';
import { CopyButton, EmptyState, ErrorNote, Time, useNow } from '../components';
import { formatBytes, shortDigest } from '../format';
import { Link } from '../router';

export function RepositoryTags({ name }: { name: string }) {
  const client = useQueryClient();
  const now = useNow(10_000);
  const tags = useQuery({ queryKey: ['tags', name], queryFn: () => getJson<{ repository: string; tags: Tag[] }>(`/v1/repositories/${encodeRepo(name)}/tags`) });
  const whoami = useQuery({ queryKey: ['whoami'], queryFn: () => getJson<Whoami>('/v1/whoami'), staleTime: Infinity });
  const [confirming, setConfirming] = useState<string | null>(null);
  const remove = useMutation({
    mutationFn: (tag: string) => request(`/v1/repositories/${encodeRepo(name)}/tags/${encodeURIComponent(tag)}`, { method: 'DELETE' }),
    onSuccess: () => {
      setConfirming(null);
      void client.invalidateQueries({ queryKey: ['tags', name] });
      void client.invalidateQueries({ queryKey: ['repositories'] });
    },
  });
  const rows = tags.data?.tags ?? [];
  const image = whoami.data ? `${location.host}/${whoami.data.tenant}/${name}` : null;
  return (
    <div className="page">
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/repositories">Repositories</Link> <span aria-hidden="true">/</span> <span>{name}</span>
      </nav>
      <div className="page-head">
        <div>
          <h1>{name}</h1>
          {image && <p className="muted mono">{image}</p>}
        </div>
        <Link to={`/?repository=${encodeURIComponent(name)}`} className="btn">
          Builds of {name}
        </Link>
      </div>
      <ErrorNote error={tags.error ?? remove.error} />
      {tags.isPending ? (
        <div className="card skeleton" aria-busy="true">
          Loading tags…
        </div>
      ) : rows.length === 0 && !tags.error ? (
        <div className="card">
          <EmptyState title="No tags">A successful build with <code>tag=NAME</code> or a push to this repository adds one.</EmptyState>
        </div>
      ) : (
        <div className="card table-card">
          <table className="table tags-table">
            <thead>
              <tr>
                <th scope="col">Tag</th>
                <th scope="col">Digest</th>
                <th scope="col" className="num">
                  Size
                </th>
                <th scope="col" className="hide-narrow">
                  Updated
                </th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((t) => {
                const pull = image ? `docker pull ${image}:${t.name}` : null;
                return (
                  <tr key={t.name} data-tag={t.name}>
                    <td className="cell-main">
                      <span className="chip">{t.name}</span>
                    </td>
                    <td>
                      <code title={t.digest}>{shortDigest(t.digest)}</code>
                    </td>
                    <td className="num mono">{formatBytes(t.size)}</td>
                    <td className="hide-narrow">
                      <Time iso={t.updatedAt} now={now} />
                    </td>
                    <td className="row-actions">
                      {pull && <CopyButton text={pull} label="Copy pull" />}
                      {confirming === t.name ? (
                        <>
                          <button type="button" className="btn btn-danger btn-small" onClick={() => remove.mutate(t.name)} disabled={remove.isPending}>
                            {remove.isPending ? 'Deleting…' : `Delete ${t.name}`}
                          </button>
                          <button type="button" className="btn btn-ghost btn-small" onClick={() => setConfirming(null)}>
                            Keep
                          </button>
                        </>
                      ) : (
                        <button type="button" className="btn btn-ghost btn-small" onClick={() => setConfirming(t.name)} aria-label={`Delete tag ${t.name}`}>
                          Delete
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}

import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { useState } from 'react';
import { encodeRepo, getJson, request, type Tag, type Whoami } from '../api';
import { CopyButton, EmptyState, ErrorNote, Time, useNow } from '../components';
import { DataTable, ListStates } from '../data-table';
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
      <ListStates
        pending={tags.isPending}
        loading="Loading tags…"
        empty={rows.length === 0 && !tags.error ? <EmptyState title="No tags">A successful build with <code>tag=NAME</code> or a push to this repository adds one.</EmptyState> : null}
      >
        <DataTable
          className="tags-table"
          rows={rows}
          rowKey={(t) => t.name}
          rowAttrs={(t) => ({ 'data-tag': t.name })}
          columns={[
            { id: 'tag', header: 'Tag', cellClassName: 'cell-main', cell: (t) => <span className="chip">{t.name}</span> },
            { id: 'digest', header: 'Digest', cell: (t) => <code title={t.digest}>{shortDigest(t.digest)}</code> },
            { id: 'size', header: 'Size', headerClassName: 'num', cellClassName: 'num mono', cell: (t) => formatBytes(t.size) },
            { id: 'updated', header: 'Updated', headerClassName: 'hide-narrow', cell: (t) => <Time iso={t.updatedAt} now={now} /> },
            {
              id: 'actions',
              header: <span className="sr-only">Actions</span>,
              cellClassName: 'row-actions',
              cell: (t) => (
                <>
                  {image && <CopyButton text={`docker pull ${image}:${t.name}`} label="Copy pull" />}
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
                </>
              ),
            },
          ]}
        />
      </ListStates>
    </div>
  );
}

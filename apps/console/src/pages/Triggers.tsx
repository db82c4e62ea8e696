import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type Delivery, getJson, postJson, type StatusReport, type Trigger } from '../api';
import { CopyButton, EmptyState, ErrorNote, Time, useNow } from '../components';
import { DataTable, ListStates } from '../data-table';
import { Link } from '../router';

function Rules({ rules }: { rules: Trigger['rules'] }) {
  return (
    <ul className="rules">
      {rules.map((r, i) => (
        <li key={i}>
          <code>{r.ref}</code> <span aria-hidden="true">→</span> {r.tags.map((t) => <span key={t} className="chip">{t}</span>)}
        </li>
      ))}
    </ul>
  );
}

export function Triggers() {
  const now = useNow(10_000);
  const triggers = useQuery({ queryKey: ['triggers'], queryFn: () => getJson<{ triggers: Trigger[] }>('/v1/triggers') });
  const rows = triggers.data?.triggers ?? [];
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Triggers</h1>
          <p className="muted">Forge repositories whose pushes build into an image repository.</p>
        </div>
      </div>
      <ErrorNote error={triggers.error} />
      <ListStates
        pending={triggers.isPending}
        loading="Loading triggers…"
        empty={
          rows.length === 0 ? (
            <EmptyState title="No triggers yet">
              Create one with the CLI, then paste its hook URL and secret into the forge's webhook settings:
              <pre className="code-block">strata trigger create --repository app --provider github --clone-url https://github.com/acme/app.git --rule '^refs/heads/main$=latest'</pre>
            </EmptyState>
          ) : null
        }
      >
        <DataTable
          rows={rows}
          rowKey={(t) => t.id}
          rowAttrs={(t) => ({ 'data-trigger': t.id })}
          columns={[
            {
              id: 'repository',
              header: 'Repository',
              cell: (t) => (
                <Link to={`/triggers/${t.id}`} className="row-link">
                  <span className="repo-name">{t.repository}</span>
                </Link>
              ),
            },
            { id: 'provider', header: 'Provider', cell: (t) => t.provider },
            { id: 'clone', header: 'Clone URL', cellClassName: 'mono nowrap', cell: (t) => t.cloneUrl },
            { id: 'rules', header: 'Rules', cell: (t) => <Rules rules={t.rules} /> },
            { id: 'hook', header: 'Hook URL', cell: (t) => <CopyButton text={t.hookPublicUrl} label="Copy hook URL" /> },
            { id: 'created', header: 'Created', headerClassName: 'hide-narrow', cell: (t) => <Time iso={t.createdAt} now={now} /> },
          ]}
        />
      </ListStates>
    </div>
  );
}

function Reports({ reports }: { reports: StatusReport[] }) {
  if (reports.length === 0) return <span className="muted">—</span>;
  return (
    <ul className="rules">
      {reports.map((r, i) => (
        <li key={i} title={r.error}>
          <span className={r.ok ? 'report-ok' : 'report-failed'}>{r.state}</span> {r.ok ? 'sent' : `not sent${r.error ? `: ${r.error}` : ''}`}
          {r.attempts > 1 && <span className="muted"> ({r.attempts} attempts)</span>}
        </li>
      ))}
    </ul>
  );
}

export function TriggerPage({ id }: { id: string }) {
  const now = useNow(10_000);
  const client = useQueryClient();
  const trigger = useQuery({ queryKey: ['trigger', id], queryFn: () => getJson<Trigger>(`/v1/triggers/${encodeURIComponent(id)}`) });
  const deliveries = useQuery({
    queryKey: ['deliveries', id],
    queryFn: () => getJson<{ deliveries: Delivery[] }>(`/v1/triggers/${encodeURIComponent(id)}/deliveries`),
    // Status reports arrive while builds run.
    refetchInterval: 5000,
  });
  const redeliver = useMutation({
    mutationFn: (rowId: string) => postJson<unknown>(`/v1/triggers/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(rowId)}/redeliver`),
    onSuccess: () => client.invalidateQueries({ queryKey: ['deliveries', id] }),
  });
  const t = trigger.data;
  const rows = deliveries.data?.deliveries ?? [];
  return (
    <div className="page">
      <nav className="crumbs" aria-label="Breadcrumb">
        <Link to="/triggers">Triggers</Link> <span aria-hidden="true">/</span> <span className="mono">{id.slice(0, 8)}</span>
      </nav>
      <ErrorNote error={trigger.error ?? deliveries.error} />
      {t && (
        <section className="card build-header" aria-label="Trigger summary">
          <div className="build-title">
            <h1>
              <Link to={`/repositories/${t.repository}`}>{t.repository}</Link>
            </h1>
            <span className="chip">{t.provider}</span>
          </div>
          <dl className="facts">
            <div className="fact-wide">
              <dt>Clone URL</dt>
              <dd className="mono wrap">{t.cloneUrl}</dd>
            </div>
            <div className="fact-wide">
              <dt>Hook URL</dt>
              <dd>
                <span className="digest-row">
                  <code className="digest">{t.hookPublicUrl}</code>
                  <CopyButton text={t.hookPublicUrl} label="Copy hook URL" />
                </span>
              </dd>
            </div>
            <div className="fact-wide">
              <dt>Rules</dt>
              <dd>
                <Rules rules={t.rules} />
              </dd>
            </div>
          </dl>
        </section>
      )}
      <h2>Deliveries</h2>
      <ErrorNote error={redeliver.error} />
      <ListStates
        pending={deliveries.isPending}
        loading="Loading deliveries…"
        empty={rows.length === 0 ? <EmptyState title="No deliveries yet">The forge's first webhook request (GitHub sends a ping when the hook is added) shows here.</EmptyState> : null}
      >
        <DataTable
          className="deliveries"
          rows={rows}
          rowKey={(d) => d.id}
          rowAttrs={(d) => ({ 'data-delivery': d.deliveryId })}
          columns={[
            { id: 'event', header: 'Event', cell: (d) => d.event },
            { id: 'ref', header: 'Ref', cellClassName: 'mono wrap', cell: (d) => d.ref ?? <span className="muted">—</span> },
            {
              id: 'commit',
              header: 'Commit',
              cellClassName: 'mono',
              cell: (d) => (d.sha ? <span title={d.sha}>{d.sha.slice(0, 7)}</span> : <span className="muted">—</span>),
            },
            {
              id: 'outcome',
              header: 'Outcome',
              cell: (d) => (
                <>
                  <span className={`chip outcome-${d.outcome}`}>{d.outcome}</span>
                  {d.reason && <div className="muted small">{d.reason}</div>}
                </>
              ),
            },
            {
              id: 'build',
              header: 'Build',
              cellClassName: 'mono',
              cell: (d) => (d.buildId ? <Link to={`/builds/${d.buildId}`}>{d.buildId.slice(0, 8)}</Link> : <span className="muted">—</span>),
            },
            { id: 'reports', header: 'Status reports', cell: (d) => <Reports reports={d.statusReports} /> },
            { id: 'received', header: 'Received', cell: (d) => <Time iso={d.createdAt} now={now} /> },
            {
              id: 'actions',
              header: <span className="sr-only">Actions</span>,
              cell: (d) =>
                d.sha &&
                d.event !== 'ping' && (
                  <button type="button" className="btn btn-small" onClick={() => redeliver.mutate(d.id)} disabled={redeliver.isPending} aria-label={`Redeliver ${d.deliveryId}`}>
                    Redeliver
                  </button>
                ),
            },
          ]}
        />
      </ListStates>
    </div>
  );
}

import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { type Delivery, getJson, postJson, type StatusReport, type Trigger } from '../api';
import { CopyButton, EmptyState, ErrorNote, Time, useNow } from '../components';
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
      {triggers.isPending ? (
        <div className="card skeleton" aria-busy="true">
          Loading triggers…
        </div>
      ) : rows.length === 0 ? (
        <div className="card">
          <EmptyState title="No triggers yet">
            Create one with the CLI, then paste its hook URL and secret into the forge's webhook settings:
            <pre className="code-block">strata trigger create --repository app --provider github --clone-url https://github.com/acme/app.git --rule '^refs/heads/main$=latest'</pre>
          </EmptyState>
        </div>
      ) : (
        <div className="card table-card">
          <table className="table">
            <thead>
              <tr>
                <th scope="col">Repository</th>
                <th scope="col">Provider</th>
                <th scope="col">Clone URL</th>
                <th scope="col">Rules</th>
                <th scope="col">Hook URL</th>
                <th scope="col" className="hide-narrow">
                  Created
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((t) => (
                <tr key={t.id} data-trigger={t.id}>
                  <td>
                    <Link to={`/triggers/${t.id}`} className="row-link">
                      <span className="repo-name">{t.repository}</span>
                    </Link>
                  </td>
                  <td>{t.provider}</td>
                  <td className="mono nowrap">{t.cloneUrl}</td>
                  <td>
                    <Rules rules={t.rules} />
                  </td>
                  <td>
                    <CopyButton text={t.hookPublicUrl} label="Copy hook URL" />
                  </td>
                  <td className="hide-narrow">
                    <Time iso={t.createdAt} now={now} />
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
      {deliveries.isPending ? (
        <div className="card skeleton" aria-busy="true">
          Loading deliveries…
        </div>
      ) : rows.length === 0 ? (
        <div className="card">
          <EmptyState title="No deliveries yet">The forge's first webhook request (GitHub sends a ping when the hook is added) shows here.</EmptyState>
        </div>
      ) : (
        <div className="card table-card">
          <table className="table deliveries">
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">Ref</th>
                <th scope="col">Commit</th>
                <th scope="col">Outcome</th>
                <th scope="col">Build</th>
                <th scope="col">Status reports</th>
                <th scope="col">Received</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((d) => (
                <tr key={d.id} data-delivery={d.deliveryId}>
                  <td>{d.event}</td>
                  <td className="mono wrap">{d.ref ?? <span className="muted">—</span>}</td>
                  <td className="mono" title={d.sha ?? undefined}>
                    {d.sha ? d.sha.slice(0, 7) : <span className="muted">—</span>}
                  </td>
                  <td>
                    <span className={`chip outcome-${d.outcome}`}>{d.outcome}</span>
                    {d.reason && <div className="muted small">{d.reason}</div>}
                  </td>
                  <td className="mono">{d.buildId ? <Link to={`/builds/${d.buildId}`}>{d.buildId.slice(0, 8)}</Link> : <span className="muted">—</span>}</td>
                  <td>
                    <Reports reports={d.statusReports} />
                  </td>
                  <td>
                    <Time iso={d.createdAt} now={now} />
                  </td>
                  <td>
                    {d.sha && d.event !== 'ping' && (
                      <button type="button" className="btn btn-small" onClick={() => redeliver.mutate(d.id)} disabled={redeliver.isPending} aria-label={`Redeliver ${d.deliveryId}`}>
                        Redeliver
                      </button>
                    )}
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

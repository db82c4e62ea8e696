import { type FormEvent, useState } from 'react';
import { ApiError, signIn, type Whoami } from '../api';

export function SignIn({ reason }: { reason: string | null }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const token = value.trim();
    if (!token) {
      setError('Paste an API token first.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      // Checked before it is kept: a wrong token never becomes the session's.
      const res = await fetch('/v1/whoami', { headers: { authorization: `Bearer ${token}` }, credentials: 'omit' });
      if (!res.ok) {
        const body = (await res.json().catch(() => ({}))) as { message?: string };
        throw new ApiError(res.status, body.message ?? `The server answered ${res.status}.`);
      }
      (await res.json()) as Whoami;
      signIn(token);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main className="signin" id="main">
      <form className="signin-card" onSubmit={submit}>
        <div className="brand brand-large">
          <span className="brand-mark" aria-hidden="true" />
          Strata
        </div>
        <h1>Sign in</h1>
        <p className="muted">Paste an API token. It is kept in this tab only and forgotten when you sign out or close it.</p>
        {reason && (
          <div className="note note-warn" role="status">
            {reason}
          </div>
        )}
        <label htmlFor="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          spellCheck={false}
          autoFocus
          value={value}
          onChange={(e) => setValue(e.target.value)}
          placeholder="stk_…"
        />
        {error && (
          <div className="note note-error" role="alert">
            {error}
          </div>
        )}
        <button className="btn btn-primary" type="submit" disabled={busy}>
          {busy ? 'Checking…' : 'Sign in'}
        </button>
        <p className="hint">
          Running locally? <code>npm start</code> prints the dev tenant's token and saves it in <code>.strata/dev-token</code>.
        </p>
      </form>
    </main>
  );
}

import { useQuery, useQueryClient } from '@tanstack/react-query';
import { useEffect, useState } from 'react';
import { currentToken, getJson, onAuthChange, signOut, type Whoami } from './api';
import { Link, useLocation } from './router';
import { BuildPage } from './pages/BuildPage';
import { BuildsList } from './pages/BuildsList';
import { DockerfileCheck } from './pages/DockerfileCheck';
import { Repositories } from './pages/Repositories';
import { RepositoryTags } from './pages/RepositoryTags';
import { SignIn } from './pages/SignIn';
import { TriggerPage, Triggers } from './pages/Triggers';
import { ThemeToggle } from './theme';

function useSignedIn(): { signedIn: boolean; reason: string | null } {
  const [state, setState] = useState({ signedIn: currentToken() !== null, reason: null as string | null });
  const client = useQueryClient();
  useEffect(
    () =>
      onAuthChange((reason) => {
        // Nothing one tenant saw stays in memory for the next token.
        client.clear();
        setState({ signedIn: currentToken() !== null, reason });
      }),
    [client],
  );
  return state;
}

function Page({ path }: { path: string }) {
  let m: RegExpMatchArray | null;
  if (path === '/' || path === '/builds') return <BuildsList />;
  if ((m = path.match(/^\/builds\/([^/]+)$/))) return <BuildPage id={decodeURIComponent(m[1])} />;
  if (path === '/repositories') return <Repositories />;
  if ((m = path.match(/^\/repositories\/(.+)$/))) return <RepositoryTags name={m[1].split('/').map(decodeURIComponent).join('/')} />;
  if (path === '/triggers') return <Triggers />;
  if ((m = path.match(/^\/triggers\/([^/]+)$/))) return <TriggerPage id={decodeURIComponent(m[1])} />;
  if (path === '/check') return <DockerfileCheck />;
  return (
    <div className="page">
      <h1>Not found</h1>
      <p>
        There is no page at <code>{path}</code>. <Link to="/">See the builds</Link>.
      </p>
    </div>
  );
}

export function App() {
  const { signedIn, reason } = useSignedIn();
  const { path } = useLocation();
  const whoami = useQuery({ queryKey: ['whoami'], queryFn: () => getJson<Whoami>('/v1/whoami'), enabled: signedIn, staleTime: Infinity });
  if (!signedIn) return <SignIn reason={reason} />;
  const section = path.startsWith('/repositories') ? 'repositories' : path.startsWith('/check') ? 'check' : path.startsWith('/triggers') ? 'triggers' : 'builds';
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <div className="topbar-inner">
          <Link to="/" className="brand" aria-label="Strata home">
            <span className="brand-mark" aria-hidden="true" />
            Strata
          </Link>
          <nav className="nav" aria-label="Main">
            <Link to="/" aria-current={section === 'builds' ? 'page' : undefined}>
              Builds
            </Link>
            <Link to="/repositories" aria-current={section === 'repositories' ? 'page' : undefined}>
              Repositories
            </Link>
            <Link to="/triggers" aria-current={section === 'triggers' ? 'page' : undefined}>
              Triggers
            </Link>
            <Link to="/check" aria-current={section === 'check' ? 'page' : undefined}>
              Dockerfile check
            </Link>
          </nav>
          <div className="topbar-right">
            {whoami.data && (
              <span className="tenant" title="Tenant of this token">
                {whoami.data.tenant}
              </span>
            )}
            <ThemeToggle />
            <button type="button" className="btn btn-ghost btn-small" onClick={() => signOut(null)}>
              Sign out
            </button>
          </div>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page path={path} />
      </main>
    </div>
  );
}

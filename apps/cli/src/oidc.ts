/**
 * `strata build --oidc`: sign in with the CI's own OIDC token instead of a stored STRATA_TOKEN.
 * GitHub Actions hands a job a URL and a bearer token to ask for an ID token with a chosen audience
 * (ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN, with `permissions: id-token: write`); GitLab CI puts one in
 * the variable an `id_tokens:` entry names. The ID token is exchanged at POST /v1/auth/oidc for a
 * short-lived Strata token (docs/adr/0021), which the rest of the command uses.
 */
export interface OidcSettings {
  /** The audience asked of GitHub Actions (GitLab's is set in the pipeline's id_tokens). */
  audience: string;
  /** The variable holding an ID token already issued (GitLab CI's id_tokens), if given. */
  tokenEnv?: string;
  /** The tenant to sign in to, when trust policies of several tenants match the token. */
  tenant?: string;
}

export class OidcSetupError extends Error {}

/** The CI's ID token: from the variable named by --oidc-token-env, or asked of GitHub Actions. */
export async function ciIdToken(env: Record<string, string | undefined>, s: OidcSettings): Promise<string> {
  if (s.tokenEnv !== undefined) {
    const value = env[s.tokenEnv];
    if (!value) {
      throw new OidcSetupError(
        `--oidc-token-env ${s.tokenEnv}: the variable is not set; in GitLab CI declare it under id_tokens: (${s.tokenEnv}: { aud: ${s.audience} })`,
      );
    }
    return value.trim();
  }
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    if (env.GITLAB_CI) throw new OidcSetupError('--oidc in GitLab CI: declare an ID token under id_tokens: and name its variable with --oidc-token-env VAR');
    throw new OidcSetupError(
      '--oidc needs GitHub Actions with "permissions: id-token: write" (ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set), or --oidc-token-env VAR naming a variable that holds an ID token',
    );
  }
  const url = new URL(requestUrl);
  url.searchParams.set('audience', s.audience);
  const res = await fetch(url, { headers: { authorization: `bearer ${requestToken}`, accept: 'application/json' } });
  const text = await res.text();
  if (!res.ok) throw new Error(`GitHub Actions refused an ID token (${res.status}): ${text.slice(0, 300)}`);
  let value: unknown;
  try {
    value = (JSON.parse(text) as { value?: unknown }).value;
  } catch {
    value = undefined;
  }
  if (typeof value !== 'string' || value === '') throw new Error('GitHub Actions answered without an ID token ("value")');
  return value;
}

/** Exchanges the ID token for a Strata token; the server's refusal (expired, no policy matched…) is the error. */
export async function exchangeIdToken(base: string, idToken: string, tenant?: string): Promise<{ token: string; tenant: string; expiresAt: string; scopes: string[] }> {
  const res = await fetch(`${base}/v1/auth/oidc`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: idToken, ...(tenant ? { tenant } : {}) }),
  });
  const text = await res.text();
  let data: Record<string, unknown> = {};
  try {
    data = JSON.parse(text) as Record<string, unknown>;
  } catch {
    data = { message: text };
  }
  if (!res.ok) throw new Error(`the OIDC exchange was refused (${res.status}${data.reason ? ` ${String(data.reason)}` : ''}): ${String(data.message ?? text)}`);
  return data as { token: string; tenant: string; expiresAt: string; scopes: string[] };
}

// GitHub webhook deliveries as GitHub sends them, shared by the webhook and console tests.
import { createHmac } from 'node:crypto';

export const ZERO = '0'.repeat(40);
export const AUTHOR = { name: 'Ada Lovelace', email: 'ada@example.com', username: 'ada' };

/** GitHub's X-Hub-Signature-256 digest of a body. */
export const hmacHex = (secret: string, body: string) => createHmac('sha256', secret).update(body).digest('hex');

export interface Change {
  added?: string[];
  modified?: string[];
  removed?: string[];
}

/** A push as GitHub sends it (Gitea sends the same shape). */
export function githubPush(o: { ref: string; before?: string; after: string; message?: string; files?: Change; forced?: boolean; repo?: string; cloneUrl?: string }) {
  const deleted = o.after === ZERO;
  const head = deleted
    ? null
    : {
        id: o.after,
        tree_id: 'f'.repeat(40),
        distinct: true,
        message: o.message ?? 'a change',
        timestamp: '2026-11-30T12:00:00Z',
        url: `https://github.com/acme/app/commit/${o.after}`,
        author: AUTHOR,
        committer: AUTHOR,
        added: o.files?.added ?? [],
        removed: o.files?.removed ?? [],
        modified: o.files?.modified ?? ['version.txt'],
      };
  return {
    ref: o.ref,
    before: o.before ?? ZERO,
    after: o.after,
    created: o.before === undefined,
    deleted,
    forced: o.forced ?? false,
    base_ref: null,
    compare: 'https://github.com/acme/app/compare/x...y',
    commits: head && !o.ref.startsWith('refs/tags/') ? [head] : [],
    head_commit: head,
    repository: { id: 1, name: 'app', full_name: o.repo ?? 'acme/app', private: false, clone_url: o.cloneUrl ?? 'https://github.com/acme/app.git', default_branch: 'main' },
    pusher: { name: 'ada', email: 'ada@example.com' },
    sender: { login: 'ada', id: 1 },
  };
}


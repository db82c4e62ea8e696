import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { Provider } from './signatures.js';

/** A push as every provider's payload is read into it. */
export interface Push {
  ref: string;
  /** The commit to build (for a tag: the commit it points at); null when the ref was deleted. */
  sha: string | null;
  deleted: boolean;
  forced: boolean;
  /** The head commit's message and author. */
  message: string;
  author: string;
  /** The files the pushed commits added, modified or removed; null when the provider does not say (Bitbucket). */
  files: string[] | null;
  /** The repository on the forge, as its status API names it: `owner/name` (GitLab: the project id). */
  forgeRepository: string;
}

export interface HookEvent {
  /** The provider's event name, as sent. */
  event: string;
  kind: 'push' | 'ping' | 'other';
  /** The provider's delivery id; a hash of the body when the provider sent none. */
  deliveryId: string;
  push: Push | null;
}

export class PayloadError extends Error {
  override readonly name = 'PayloadError';
}

const ZERO_SHA = /^0+$/;

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

/** The delivery id header of each provider (GitLab: Idempotency-Key, the same on its retries). */
function deliveryIdOf(provider: Provider, headers: IncomingHttpHeaders, body: Buffer): string {
  const given =
    provider === 'github'
      ? header(headers, 'x-github-delivery')
      : provider === 'gitea'
        ? header(headers, 'x-gitea-delivery') ?? header(headers, 'x-github-delivery')
        : provider === 'gitlab'
          ? header(headers, 'idempotency-key') ?? header(headers, 'webhook-id') ?? header(headers, 'x-gitlab-event-uuid')
          : header(headers, 'x-request-uuid');
  // Without an id, a retry is recognised by its identical body.
  return (given ?? `sha256:${createHash('sha256').update(body).digest('hex')}`).slice(0, 200);
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : {});
const str = (v: unknown): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : '');
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** Files added, modified or removed by a list of GitHub/Gitea/GitLab-shaped commits. */
function filesOf(commits: unknown[]): string[] {
  const files = new Set<string>();
  for (const c of commits) for (const k of ['added', 'modified', 'removed']) for (const f of list(obj(c)[k])) if (typeof f === 'string') files.add(f);
  return [...files];
}

function authorOf(a: unknown): string {
  const { name, email } = obj(a);
  return str(name) && str(email) ? `${str(name)} <${str(email)}>` : str(name) || str(email);
}

/** GitHub and Gitea send the same push shape. */
function githubPush(p: Json): Push {
  const after = str(p.after);
  const head = obj(p.head_commit);
  const deleted = p.deleted === true || ZERO_SHA.test(after);
  const commits = list(p.commits);
  return {
    ref: str(p.ref),
    sha: deleted ? null : str(head.id) || after,
    deleted,
    forced: p.forced === true,
    message: str(head.message),
    author: authorOf(head.author),
    files: filesOf(commits.length > 0 ? commits : Object.keys(head).length > 0 ? [head] : []),
    forgeRepository: str(obj(p.repository).full_name),
  };
}

function gitlabPush(p: Json): Push {
  const after = str(p.after);
  const deleted = ZERO_SHA.test(after) || after === '';
  // For an annotated tag `after` is the tag object; checkout_sha is the commit.
  const sha = deleted ? null : str(p.checkout_sha) || after;
  const commits = list(p.commits);
  const head = obj(commits.find((c) => str(obj(c).id) === sha) ?? commits[commits.length - 1]);
  return {
    ref: str(p.ref),
    sha,
    deleted,
    // GitLab does not say; a push whose before is not an ancestor looks like any other.
    forced: false,
    message: str(head.message),
    author: authorOf(head.author),
    files: filesOf(commits),
    forgeRepository: str(p.project_id) || str(obj(p.project).id),
  };
}

function bitbucketPush(p: Json): Push {
  // One push may carry several ref changes; the first is built (Bitbucket sends one per ref in practice).
  const change = obj(list(obj(p.push).changes)[0]);
  const next = change.new ? obj(change.new) : null;
  const old = change.old ? obj(change.old) : null;
  const ref = next ?? old ?? {};
  const prefix = str(ref.type) === 'tag' ? 'refs/tags/' : 'refs/heads/';
  const target = obj(next?.target);
  const author = obj(target.author);
  return {
    ref: `${prefix}${str(ref.name)}`,
    sha: next ? str(target.hash) : null,
    deleted: next === null || change.closed === true,
    forced: change.forced === true,
    message: str(target.message),
    author: str(author.raw) || str(obj(author.user).display_name),
    files: null,
    forgeRepository: str(obj(p.repository).full_name),
  };
}

/** Reads what a (signature-checked) webhook request is about. */
export function readHookEvent(provider: Provider, headers: IncomingHttpHeaders, body: Buffer, payload: unknown): HookEvent {
  const deliveryId = deliveryIdOf(provider, headers, body);
  const p = obj(payload);
  if (provider === 'github' || provider === 'gitea') {
    const event = (provider === 'gitea' ? header(headers, 'x-gitea-event') : undefined) ?? header(headers, 'x-github-event') ?? '';
    if (event === 'ping') return { event, kind: 'ping', deliveryId, push: null };
    if (event !== 'push') return { event: event || '(none)', kind: 'other', deliveryId, push: null };
    return { event, kind: 'push', deliveryId, push: githubPush(p) };
  }
  if (provider === 'gitlab') {
    const event = header(headers, 'x-gitlab-event') ?? '';
    const kind = str(p.object_kind);
    if (event !== 'Push Hook' && event !== 'Tag Push Hook') return { event: event || '(none)', kind: 'other', deliveryId, push: null };
    if (kind !== 'push' && kind !== 'tag_push') throw new PayloadError(`a GitLab "${event}" payload must have object_kind "push" or "tag_push", got "${kind}"`);
    return { event, kind: 'push', deliveryId, push: gitlabPush(p) };
  }
  const event = header(headers, 'x-event-key') ?? '';
  if (event === 'diagnostics:ping') return { event, kind: 'ping', deliveryId, push: null };
  if (event !== 'repo:push') return { event: event || '(none)', kind: 'other', deliveryId, push: null };
  if (list(obj(p.push).changes).length === 0) throw new PayloadError('a Bitbucket repo:push payload must list push.changes');
  return { event, kind: 'push', deliveryId, push: bitbucketPush(p) };
}

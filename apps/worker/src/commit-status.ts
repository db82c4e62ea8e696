// Commit statuses back to the forge a push came from: pending when the build starts, then success,
// failure or error. Reporting is best effort: retried with backoff, every outcome recorded on the
// delivery, and a failure to report never fails the build.
import type { PrismaClient } from '@strata/db';
import { EgressPolicy } from '@strata/egress';

export type CommitState = 'pending' | 'success' | 'failure' | 'error';

export interface StatusTarget {
  provider: string;
  /** The trigger's API base URL, or null for the provider's default (derived from the clone URL for self-hosted forges). */
  apiUrl: string | null;
  cloneUrl: string;
  /** `owner/name`; GitLab: the project id. */
  forgeRepository: string;
  sha: string;
  token: string | null;
  username: string | null;
  /** Shown by the forge: `strata/<image repository>`. */
  context: string;
  /** The build's console page. */
  targetUrl: string;
  triggerId: string;
  deliveryId: string;
}

export interface StatusReport {
  state: CommitState;
  ok: boolean;
  attempts: number;
  httpStatus?: number;
  error?: string;
  at: string;
}

function originOf(cloneUrl: string): string {
  const scp = /^[^@]+@([^:]+):/.exec(cloneUrl);
  if (scp && !cloneUrl.includes('://')) return `https://${scp[1]}`;
  const u = new URL(cloneUrl);
  return u.protocol === 'ssh:' ? `https://${u.hostname}` : u.origin;
}

/** The forge API base: GitHub.com and Bitbucket Cloud have fixed ones; GitHub Enterprise, GitLab and Gitea live under the clone URL's host. */
export function defaultApiUrl(provider: string, cloneUrl: string): string {
  const origin = originOf(cloneUrl);
  if (provider === 'github') return origin === 'https://github.com' ? 'https://api.github.com' : `${origin}/api/v3`;
  if (provider === 'gitlab') return `${origin}/api/v4`;
  if (provider === 'gitea') return `${origin}/api/v1`;
  return 'https://api.bitbucket.org/2.0';
}

const DESCRIPTION: Record<CommitState, string> = {
  pending: 'Strata is building the image',
  success: 'The image was built',
  failure: 'The build failed',
  error: 'The build was cancelled or could not run',
};

/** The request each forge's status API takes. */
export function statusRequest(t: StatusTarget, state: CommitState): { url: string; headers: Record<string, string>; body: Record<string, string> } {
  const base = (t.apiUrl ?? defaultApiUrl(t.provider, t.cloneUrl)).replace(/\/+$/, '');
  const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'strata-worker' };
  const description = DESCRIPTION[state];
  switch (t.provider) {
    case 'github':
      if (t.token) headers.authorization = `Bearer ${t.token}`;
      headers.accept = 'application/vnd.github+json';
      return { url: `${base}/repos/${t.forgeRepository}/statuses/${t.sha}`, headers, body: { state, target_url: t.targetUrl, description, context: t.context } };
    case 'gitea':
      if (t.token) headers.authorization = `token ${t.token}`;
      return { url: `${base}/repos/${t.forgeRepository}/statuses/${t.sha}`, headers, body: { state, target_url: t.targetUrl, description, context: t.context } };
    case 'gitlab': {
      if (t.token) headers['private-token'] = t.token;
      const gitlabState = { pending: 'pending', success: 'success', failure: 'failed', error: 'canceled' }[state];
      return { url: `${base}/projects/${encodeURIComponent(t.forgeRepository)}/statuses/${t.sha}`, headers, body: { state: gitlabState, target_url: t.targetUrl, description, name: t.context } };
    }
    default: {
      if (t.token) headers.authorization = t.username ? `Basic ${Buffer.from(`${t.username}:${t.token}`).toString('base64')}` : `Bearer ${t.token}`;
      const bitbucketState = { pending: 'INPROGRESS', success: 'SUCCESSFUL', failure: 'FAILED', error: 'STOPPED' }[state];
      // Bitbucket keys a status by `key` (at most 40 characters): one per Strata repository.
      const key = t.context.replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 40);
      return { url: `${base}/repositories/${t.forgeRepository}/commit/${t.sha}/statuses/build`, headers, body: { key, state: bitbucketState, name: t.context, url: t.targetUrl, description } };
    }
  }
}

export class CommitStatusReporter {
  private chain: Promise<void> = Promise.resolve();
  private readonly policy: EgressPolicy;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly target: StatusTarget,
    allowPrivateSources: readonly string[],
    private readonly retry = { attempts: 4, firstDelayMs: 500 },
  ) {
    this.policy = new EgressPolicy(allowPrivateSources);
  }

  /** Queues a status; statuses go out one after another, in the order reported. */
  report(state: CommitState): void {
    this.chain = this.chain.then(() => this.send(state)).catch(() => undefined);
  }

  /** Resolves once every queued status was sent or given up on. */
  settled(): Promise<void> {
    return this.chain;
  }

  private async send(state: CommitState): Promise<void> {
    const report: StatusReport = { state, ok: false, attempts: 0, at: '' };
    if (!this.target.token) {
      report.error = "the trigger has no credentials token, so no commit status can be sent";
    } else {
      const req = statusRequest(this.target, state);
      for (let attempt = 1; attempt <= this.retry.attempts; attempt++) {
        report.attempts = attempt;
        try {
          const res = await this.policy.request(req.url, { method: 'POST', headers: req.headers, body: JSON.stringify(req.body), timeoutMs: 10_000, maxBytes: 1024 * 1024 });
          report.httpStatus = res.status;
          if (res.status >= 200 && res.status < 300) {
            report.ok = true;
            delete report.error;
            break;
          }
          report.error = `the forge answered ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`;
          // A client error will not change by asking again (bad token, unknown commit); throttling and server errors may.
          if (res.status < 500 && res.status !== 429 && res.status !== 408) break;
        } catch (e) {
          report.error = (e as Error).message;
          if ((e as Error).name === 'EgressRefusedError') break;
        }
        if (attempt < this.retry.attempts) await new Promise((r) => setTimeout(r, this.retry.firstDelayMs * 2 ** (attempt - 1)));
      }
    }
    report.at = new Date().toISOString();
    // Appended in one statement, so reports from overlapping builds of one delivery never overwrite each other.
    await this.prisma.$executeRaw`UPDATE "WebhookDelivery" SET "statusReports" = "statusReports" || ${JSON.stringify([report])}::jsonb WHERE "triggerId" = ${this.target.triggerId}::uuid AND "deliveryId" = ${this.target.deliveryId}`.catch(() => undefined);
  }
}

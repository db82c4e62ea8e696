// ADD <url>: remote files fetched for the build engine through the egress guard (docs/adr/0009):
// the address checked after DNS and on every redirect, the body streamed to disk within the
// operator's size and time limits, conditional when the engine remembers the file's validators.

import type { FetchedSource, SourceFetcher } from '@strata/build-engine';
import { EgressPolicy } from '@strata/egress';

export class EgressSourceFetcher implements SourceFetcher {
  private readonly policy: EgressPolicy;

  constructor(
    allowPrivateSources: readonly string[],
    private readonly limits: { maxBytes: number; timeoutMs: number },
  ) {
    this.policy = new EgressPolicy(allowPrivateSources);
  }

  async fetch(url: string, file: string, validators?: { etag: string | null; lastModified: string | null }): Promise<FetchedSource> {
    const headers: Record<string, string> = { 'user-agent': 'strata-worker' };
    if (validators?.etag) headers['if-none-match'] = validators.etag;
    if (validators?.lastModified) headers['if-modified-since'] = validators.lastModified;
    const res = await this.policy.download(url, file, { headers, maxBytes: this.limits.maxBytes, timeoutMs: this.limits.timeoutMs });
    if (res.status === 304 && validators) return { notModified: true };
    if (res.sha256 === null) throw new Error(`the server answered ${res.status}${res.url !== url ? ` (at ${res.url})` : ''}`);
    const header = (name: string) => {
      const v = res.headers[name];
      return typeof v === 'string' ? v : null;
    };
    return { notModified: false, sha256: res.sha256, size: res.size, etag: header('etag'), lastModified: header('last-modified') };
  }
}

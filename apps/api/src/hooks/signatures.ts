import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export type Provider = 'github' | 'gitlab' | 'gitea' | 'bitbucket';
export const PROVIDERS: readonly Provider[] = ['github', 'gitlab', 'gitea', 'bitbucket'];

/** How far a signed GitLab request's webhook-timestamp may be from our clock (Standard Webhooks' usual 5 minutes). */
export const TIMESTAMP_TOLERANCE_SECONDS = 5 * 60;

/** Equal in time that depends only on the lengths of the digests, never on where they differ. */
function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A hex HMAC-SHA256 header value (optionally with a `sha256=` prefix) against the body. */
function hmacHexMatches(header: string | undefined, prefix: string, secret: Buffer, body: Buffer): boolean {
  if (!header || !header.startsWith(prefix)) return false;
  const hex = header.slice(prefix.length).trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
  return sameDigest(Buffer.from(hex, 'hex'), createHmac('sha256', secret).update(body).digest());
}

/** GitHub's X-Hub-Signature-256 (also Bitbucket's X-Hub-Signature): `sha256=<hex HMAC-SHA256 of the raw body>`. */
export function githubSignatureMatches(header: string | undefined, secret: string | Buffer, body: Buffer): boolean {
  return hmacHexMatches(header, 'sha256=', Buffer.from(secret), body);
}

/** The key of a Standard Webhooks signing secret: `whsec_<base64>` is that key; anything else is its own bytes. */
function signingKey(secret: Buffer): Buffer {
  const text = secret.toString('utf8');
  return text.startsWith('whsec_') ? Buffer.from(text.slice(6), 'base64') : secret;
}

/**
 * Whether a request is signed with the trigger's secret, the way its provider signs. The body is
 * the raw bytes received; nothing in it is read before this answers true.
 */
export function verifyHookSignature(provider: Provider, headers: IncomingHttpHeaders, body: Buffer, secret: Buffer, now = Date.now()): { ok: true } | { ok: false; why: string } {
  const h = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? undefined : v;
  };
  switch (provider) {
    case 'github':
      if (!h('x-hub-signature-256')) return { ok: false, why: 'the X-Hub-Signature-256 header is missing' };
      return githubSignatureMatches(h('x-hub-signature-256'), secret, body) ? { ok: true } : { ok: false, why: 'X-Hub-Signature-256 does not match the body and the trigger secret' };
    case 'gitea':
      if (!h('x-gitea-signature')) return { ok: false, why: 'the X-Gitea-Signature header is missing' };
      return hmacHexMatches(h('x-gitea-signature'), '', secret, body) ? { ok: true } : { ok: false, why: 'X-Gitea-Signature does not match the body and the trigger secret' };
    case 'bitbucket':
      if (!h('x-hub-signature')) return { ok: false, why: 'the X-Hub-Signature header is missing' };
      return hmacHexMatches(h('x-hub-signature'), 'sha256=', secret, body) ? { ok: true } : { ok: false, why: 'X-Hub-Signature does not match the body and the trigger secret' };
    case 'gitlab': {
      const signature = h('webhook-signature');
      if (signature !== undefined) {
        const id = h('webhook-id');
        const timestamp = h('webhook-timestamp');
        if (!id || !timestamp || !/^\d{1,12}$/.test(timestamp)) return { ok: false, why: 'a signed request needs webhook-id and a numeric webhook-timestamp' };
        if (Math.abs(now / 1000 - Number(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS) {
          return { ok: false, why: `webhook-timestamp is more than ${TIMESTAMP_TOLERANCE_SECONDS} seconds from the server's clock` };
        }
        const expected = createHmac('sha256', signingKey(secret)).update(`${id}.${timestamp}.`).update(body).digest();
        // The header may list several space-separated signatures (key rotation); one valid one is enough.
        const valid = signature
          .split(' ')
          .filter((s) => s.startsWith('v1,'))
          .some((s) => sameDigest(Buffer.from(s.slice(3), 'base64'), expected));
        return valid ? { ok: true } : { ok: false, why: 'webhook-signature does not match the body and the trigger secret' };
      }
      const token = h('x-gitlab-token');
      if (token === undefined) return { ok: false, why: 'neither X-Gitlab-Token nor webhook-signature is present' };
      // Hash both sides so the comparison takes the same time whatever the lengths.
      const same = sameDigest(createHash('sha256').update(token).digest(), createHash('sha256').update(secret).digest());
      return same ? { ok: true } : { ok: false, why: 'X-Gitlab-Token is not the trigger secret' };
    }
  }
}

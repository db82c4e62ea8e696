import { createHmac } from 'node:crypto';
import { githubSignatureMatches, verifyHookSignature } from './signatures.js';

describe('webhook signatures', () => {
  it("matches GitHub's published test vector for X-Hub-Signature-256", () => {
    const secret = "It's a Secret to Everybody";
    const body = Buffer.from('Hello, World!');
    const header = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
    expect(githubSignatureMatches(header, secret, body)).toBe(true);
    expect(githubSignatureMatches(header, secret, Buffer.from('Hello, World?'))).toBe(false);
    expect(githubSignatureMatches(header.replace('757', '758'), secret, body)).toBe(false);
    expect(githubSignatureMatches(header, 'another secret', body)).toBe(false);
    expect(verifyHookSignature('github', { 'x-hub-signature-256': header }, body, Buffer.from(secret))).toEqual({ ok: true });
  });

  it('takes Gitea hex, Bitbucket sha256= and GitLab tokens, and refuses each when wrong or absent', () => {
    const secret = Buffer.from('s3cret-s3cret');
    const body = Buffer.from('{"ref":"refs/heads/main"}');
    const hex = createHmac('sha256', secret).update(body).digest('hex');
    expect(verifyHookSignature('gitea', { 'x-gitea-signature': hex }, body, secret).ok).toBe(true);
    expect(verifyHookSignature('gitea', { 'x-gitea-signature': hex.replace(/^./, hex[0] === 'a' ? 'b' : 'a') }, body, secret).ok).toBe(false);
    expect(verifyHookSignature('gitea', {}, body, secret)).toEqual({ ok: false, why: 'the X-Gitea-Signature header is missing' });
    expect(verifyHookSignature('bitbucket', { 'x-hub-signature': `sha256=${hex}` }, body, secret).ok).toBe(true);
    expect(verifyHookSignature('bitbucket', { 'x-hub-signature': hex }, body, secret).ok).toBe(false);
    expect(verifyHookSignature('gitlab', { 'x-gitlab-token': 's3cret-s3cret' }, body, secret).ok).toBe(true);
    expect(verifyHookSignature('gitlab', { 'x-gitlab-token': 's3cret-s3creT' }, body, secret).ok).toBe(false);
    expect(verifyHookSignature('gitlab', {}, body, secret).ok).toBe(false);
  });

  it("checks GitLab's signed form (webhook-id.timestamp.body, v1,<base64>) within the timestamp tolerance", () => {
    const key = Buffer.alloc(32, 7);
    const secret = Buffer.from(`whsec_${key.toString('base64')}`);
    const body = Buffer.from('{"object_kind":"push"}');
    const now = 1_800_000_000_000;
    const ts = String(now / 1000);
    const sign = (id: string, t: string, k = key) => `v1,${createHmac('sha256', k).update(`${id}.${t}.`).update(body).digest('base64')}`;
    const headers = (id: string, t: string, sig: string) => ({ 'webhook-id': id, 'webhook-timestamp': t, 'webhook-signature': sig });
    expect(verifyHookSignature('gitlab', headers('msg_1', ts, sign('msg_1', ts)), body, secret, now).ok).toBe(true);
    expect(verifyHookSignature('gitlab', headers('msg_1', ts, `v1,AAAA ${sign('msg_1', ts)}`), body, secret, now).ok).toBe(true);
    expect(verifyHookSignature('gitlab', headers('msg_2', ts, sign('msg_1', ts)), body, secret, now).ok).toBe(false);
    expect(verifyHookSignature('gitlab', headers('msg_1', ts, sign('msg_1', ts, Buffer.alloc(32, 8))), body, secret, now).ok).toBe(false);
    const old = String(now / 1000 - 301);
    expect(verifyHookSignature('gitlab', headers('msg_1', old, sign('msg_1', old)), body, secret, now)).toEqual({
      ok: false,
      why: "webhook-timestamp is more than 300 seconds from the server's clock",
    });
  });
});

import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

/** How long a connection may stay silent by default (undici's headers and body timeouts). */
const IDLE_MS = 300_000;

/**
 * Requests through node:http(s), for the requests of an unchanged rebuild (the build named by its
 * manifest's digest, its log followed). The first `fetch` of a process loads undici: 40-50 ms here,
 * against 10-15 ms for `http.request` (a fresh process, a local server). On a no-op `strata build`
 * of a small context that load was an eighth of the command. Streamed bodies (a tar, content
 * batches) still go through `fetch`: they take far longer than its load.
 */
export function openRequest(
  url: string,
  init: { method: string; headers: Array<[string, string]>; body?: string | Uint8Array; idleMs?: number },
): Promise<IncomingMessage> {
  const target = new URL(url);
  const transport = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : null;
  if (transport === null) return Promise.reject(new Error(`STRATA_URL must be http:// or https://, not ${target.protocol}//`));
  // A name given more than once (one Strata-Build-Secret per secret) is sent once per value.
  const headers: Record<string, string[]> = {};
  for (const [name, value] of init.headers) (headers[name.toLowerCase()] ??= []).push(value);
  if (init.body !== undefined) headers['content-length'] = [String(Buffer.byteLength(init.body))];
  return new Promise((resolve, reject) => {
    const req = transport.request(target, { method: init.method, headers }, resolve);
    req.on('error', (e: Error) => reject(new Error(`${init.method} ${target.origin}${target.pathname} failed: ${e.message}`)));
    // A connection that goes silent (the answer, or a stream's heartbeats, stop coming) is ended
    // with an error rather than waited on for good: before the answer the request rejects, after
    // it the answer errors. Undici's default, which fetch had, is 300 s.
    const idleMs = init.idleMs ?? IDLE_MS;
    req.setTimeout(idleMs, () => req.destroy(new Error(`nothing received for ${idleMs / 1000} s`)));
    req.end(init.body);
  });
}

/** The whole answer as text. */
export async function readText(res: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

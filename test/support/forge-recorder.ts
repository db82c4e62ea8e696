import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request a forge's API received. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: any;
}

/**
 * Stands in for a forge's API on 127.0.0.1: records every request and answers 201, or `failWith`
 * while it is set (to show retries and recorded failures).
 */
export interface ForgeRecorder {
  url: string;
  requests: RecordedRequest[];
  failWith: number | null;
  /** Resolves when `n` requests whose path starts with `prefix` have arrived. */
  waitFor(prefix: string, n: number, timeoutMs?: number): Promise<RecordedRequest[]>;
  close(): Promise<void>;
}

export async function startForgeRecorder(): Promise<ForgeRecorder> {
  const rec: ForgeRecorder = {
    url: '',
    requests: [],
    failWith: null,
    async waitFor(prefix, n, timeoutMs = 60_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const got = rec.requests.filter((r) => r.path.startsWith(prefix));
        if (got.length >= n) return got;
        if (Date.now() > until) throw new Error(`the forge got ${got.length} of ${n} requests to ${prefix} within ${timeoutMs} ms: ${JSON.stringify(rec.requests.map((r) => r.path))}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    close: async () => undefined,
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        /* kept as text */
      }
      rec.requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      if (rec.failWith) res.writeHead(rec.failWith, { 'content-type': 'application/json' }).end('{"message":"forge is down"}');
      else res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  rec.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  rec.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return rec;
}

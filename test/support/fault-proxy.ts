import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/**
 * A fault one rule injects: a 503, a reset before any answer, the body cut after half, a delay before
 * forwarding, or `hold`: the request reaches S3 (which acts on it) but its answer is held back for
 * delayMs, the moment a crash loses what S3 already did.
 */
export type FaultKind = '503' | 'reset' | 'truncate' | 'slow' | 'hold';

export interface FaultRule {
  kind: FaultKind;
  /** Only requests with this method (GET, PUT, POST, HEAD, DELETE). */
  method?: string;
  /** Only requests whose path (with query) matches. */
  path?: RegExp;
  /** Injects on every nth matching request (1 = every one). */
  every?: number;
  /** Stops after this many injections. */
  times?: number;
  /** For `slow`: how long to wait before forwarding; for `hold`: how long to hold the answer back. */
  delayMs?: number;
}

export interface FaultProxy {
  url: string;
  /** Faults injected so far, by kind. */
  injected: Record<FaultKind, number>;
  /** Requests seen so far. */
  requests: number;
  setRules(rules: FaultRule[]): void;
  close(): Promise<void>;
}

/**
 * An HTTP proxy a test puts between Strata and its S3 server (both on 127.0.0.1) that breaks
 * requests on purpose, as a flaky network or an overloaded S3 would.
 */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  let rules: Array<FaultRule & { seen: number; done: number }> = [];
  const injected: Record<FaultKind, number> = { '503': 0, reset: 0, truncate: 0, slow: 0, hold: 0 };
  const state = { requests: 0 };
  const sockets = new Set<import('node:net').Socket>();

  const pick = (req: IncomingMessage): (FaultRule & { seen: number; done: number }) | null => {
    for (const rule of rules) {
      if (rule.method && rule.method !== req.method) continue;
      if (rule.path && !rule.path.test(req.url ?? '')) continue;
      if (rule.times !== undefined && rule.done >= rule.times) continue;
      rule.seen++;
      if (rule.seen % (rule.every ?? 1) !== 0) continue;
      rule.done++;
      injected[rule.kind]++;
      return rule;
    }
    return null;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, truncate: boolean, holdMs = 0) => {
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        if (holdMs > 0) {
          up.pause();
          setTimeout(() => {
            res.writeHead(up.statusCode ?? 502, up.headers);
            up.pipe(res);
          }, holdMs);
          return;
        }
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (!truncate) {
          up.pipe(res);
          return;
        }
        const length = Number(up.headers['content-length'] ?? 0);
        let sent = 0;
        up.on('data', (chunk: Buffer) => {
          const room = Math.floor(length / 2) - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += chunk.length;
          if (sent >= length / 2) {
            up.destroy();
            res.socket?.destroy();
          }
        });
        up.on('end', () => res.socket?.destroy());
      },
    );
    out.on('error', () => res.socket?.destroy());
    req.pipe(out);
  };

  const server: Server = createServer((req, res) => {
    state.requests++;
    const rule = pick(req);
    if (rule?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (rule?.kind === '503') {
      req.resume();
      req.on('end', () => {
        res.writeHead(503, { 'content-type': 'application/xml', connection: 'close' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      });
      return;
    }
    if (rule?.kind === 'slow') {
      setTimeout(() => forward(req, res, false), rule.delayMs ?? 2000);
      return;
    }
    forward(req, res, rule?.kind === 'truncate' && req.method === 'GET', rule?.kind === 'hold' ? (rule.delayMs ?? 2000) : 0);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    injected,
    get requests() {
      return state.requests;
    },
    setRules(next) {
      rules = next.map((r) => ({ ...r, seen: 0, done: 0 }));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

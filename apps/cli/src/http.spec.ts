import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { openRequest, readText } from './http.js';

describe('openRequest', () => {
  let server: Server;
  let url: string;
  const seen: Array<{ headers: Record<string, string | string[] | undefined>; body: string }> = [];
  beforeAll(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ headers: req.headers, body });
        if (req.url === '/silent') return; // never answers
        if (req.url === '/stalls') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('event: log\ndata: {}\n\n'); // then nothing more
          return;
        }
        res.end(JSON.stringify({ ok: true }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('sends the body with its length and a header given twice as two values', async () => {
    const res = await openRequest(`${url}/x`, { method: 'POST', headers: [['Strata-Build-Secret', 'id=a,src=YQ=='], ['strata-build-secret', 'id=b,src=Yg=='], ['content-type', 'application/json']], body: '{"a":1}' });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(await readText(res))).toEqual({ ok: true });
    const last = seen.at(-1)!;
    expect(last.body).toBe('{"a":1}');
    expect(last.headers['content-length']).toBe('7');
    // Node's server joins a repeated header as fetch sent it: one value, comma-separated.
    expect(last.headers['strata-build-secret']).toBe('id=a,src=YQ==, id=b,src=Yg==');
  });

  it('rejects, naming the request, when nothing answers within idleMs', async () => {
    await expect(openRequest(`${url}/silent`, { method: 'GET', headers: [], idleMs: 200 })).rejects.toThrow(`GET ${url}/silent failed: nothing received for 0.2 s`);
  });

  it('errors an answer whose stream goes silent, after what did arrive', async () => {
    const res = await openRequest(`${url}/stalls`, { method: 'GET', headers: [], idleMs: 300 });
    const got: string[] = [];
    await expect(
      (async () => {
        for await (const chunk of res) got.push(String(chunk));
      })(),
    ).rejects.toThrow();
    expect(got.join('')).toBe('event: log\ndata: {}\n\n');
    expect(res.errored).not.toBeNull();
  });

  it('names the refused connection', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await expect(openRequest(`http://127.0.0.1:${port}/v1/builds`, { method: 'POST', headers: [], body: '' })).rejects.toThrow(
      `POST http://127.0.0.1:${port}/v1/builds failed: connect ECONNREFUSED 127.0.0.1:${port}`,
    );
  });
});

import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ContextChangedError, uploadContents, type UploadClient } from './context-upload.js';
import type { ContextScan } from './context-scan.js';

/**
 * uploadContents against a real HTTP server on 127.0.0.1 through Node's fetch, as the CLI sends it:
 * what is sent again and what is not.
 */
describe('uploadContents', () => {
  let dir: string;
  let server: Server;
  let base: string;
  /** What the server does with each request, in order; then 200. */
  let answers: Array<(req: IncomingMessage) => number | 'drop'>;
  let received: Buffer[];

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'strata-upload-'));
    answers = [];
    received = [];
    server = createServer((req, res) => {
      const answer = answers.shift();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('error', () => undefined);
      req.on('end', () => {
        const status = answer ? answer(req) : 200;
        if (status === 'drop') {
          req.socket.destroy();
          return;
        }
        if (status === 200) received.push(Buffer.concat(chunks));
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(status === 200 ? { stored: 1 } : { error: 'unavailable' }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterEach(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  const client: UploadClient = {
    async post(p, body, headers) {
      const res = await fetch(`${base}${p}`, { method: 'POST', headers, body, duplex: 'half' } as RequestInit);
      const json = (await res.json()) as Record<string, unknown>;
      if (!res.ok) throw Object.assign(new Error(`HTTP ${res.status}`), { status: res.status });
      return json;
    },
  };

  const scanOf = (files: Record<string, string>): ContextScan => {
    const sources = new Map<string, { file: string; size: number }>();
    let i = 0;
    for (const [name, text] of Object.entries(files)) {
      const file = path.join(dir, name);
      writeFileSync(file, text);
      sources.set(`sha256:${String(++i).padStart(64, '0')}`, { file, size: Buffer.byteLength(text) });
    }
    return { manifest: { version: 1, entries: [] }, sources, files: sources.size, bytes: 0, hashed: 0 };
  };

  it('sends a batch again after a 5xx answer and reports what was stored', async () => {
    const scan = scanOf({ a: 'hello', b: 'world!' });
    answers = [() => 503];
    const up = await uploadContents(client, scan, [...scan.sources.keys()]);
    expect(up).toEqual({ bytes: 11, requests: 1 });
    expect(received).toHaveLength(1);
    expect(received[0].includes(Buffer.from('world!'))).toBe(true);
  }, 20_000);

  it('sends a batch again when the connection drops before the answer', async () => {
    const scan = scanOf({ a: 'hello' });
    answers = [() => 'drop'];
    await expect(uploadContents(client, scan, [...scan.sources.keys()])).resolves.toEqual({ bytes: 5, requests: 1 });
    expect(received).toHaveLength(1);
  }, 20_000);

  it('does not send again a batch the server refused with a 4xx', async () => {
    const scan = scanOf({ a: 'hello' });
    answers = [() => 400];
    await expect(uploadContents(client, scan, [...scan.sources.keys()])).rejects.toMatchObject({ status: 400 });
    expect(received).toHaveLength(0);
  });

  it('fails at once, naming the file, when a file shrank after it was hashed', async () => {
    const scan = scanOf({ big: 'x'.repeat(4096) });
    const [digest, src] = [...scan.sources.entries()][0];
    truncateSync(src.file, 10);
    let requests = 0;
    const counting: UploadClient = { post: (p, b, h) => (requests++, client.post(p, b, h)) };
    const failure = await uploadContents(counting, scan, [digest]).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ContextChangedError);
    expect((failure as Error).message).toContain(`${src.file} changed while the context was being uploaded`);
    expect(requests).toBe(1);
  });

  it('refuses a digest the context does not hold before sending anything', async () => {
    const scan = scanOf({ a: 'hello' });
    await expect(uploadContents(client, scan, ['sha256:feed'])).rejects.toThrow('the server asked for sha256:feed, which this context does not hold');
    expect(received).toHaveLength(0);
  });

  it('sends small files joined into chunks and a big one read in parts as one tar of every content, named by digest', async () => {
    const files: Record<string, string> = {};
    for (let i = 0; i < 700; i++) files[`s${i}`] = `small ${i} `.repeat(i % 97);
    files.big = 'B'.repeat(3 * 1024 * 1024 + 5);
    files.mid = 'M'.repeat(256 * 1024 + 1);
    const scan = scanOf(files);
    const up = await uploadContents(client, scan, [...scan.sources.keys()]);
    expect(up.requests).toBe(1);
    // The tar, entry by entry: a header naming the digest (without its prefix), the content, its padding.
    const tar = received[0];
    const got = new Map<string, string>();
    let at = 0;
    while (tar[at] !== 0) {
      const name = tar.subarray(at, at + 100).toString('ascii').replace(/\0.*$/s, '');
      const size = parseInt(tar.subarray(at + 124, at + 136).toString('ascii'), 8);
      got.set(`sha256:${name}`, tar.subarray(at + 512, at + 512 + size).toString());
      at += 512 + Math.ceil(size / 512) * 512;
    }
    expect(tar.length).toBe(at + 1024);
    expect(got.size).toBe(scan.sources.size);
    for (const [digest, src] of scan.sources) expect(got.get(digest)).toBe(files[path.basename(src.file)]);
  }, 20_000);
});

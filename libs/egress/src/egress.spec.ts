import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EgressPolicy, EgressRefusedError } from './index.js';

describe('EgressPolicy', () => {
  const none = new EgressPolicy([]);

  it('refuses loopback, link-local, private, unspecified and other special addresses, saying which', () => {
    const cases: Array<[string, string]> = [
      ['127.0.0.1', 'loopback'],
      ['169.254.169.254', 'link-local'],
      ['10.1.2.3', 'private'],
      ['172.16.0.1', 'private'],
      ['172.31.255.255', 'private'],
      ['192.168.1.1', 'private'],
      ['0.0.0.0', 'unspecified'],
      ['100.64.0.1', 'shared (carrier-grade NAT)'],
      ['224.0.0.1', 'multicast'],
      ['::1', 'loopback'],
      ['::', 'unspecified'],
      ['fe80::1', 'link-local'],
      ['fd12:3456::1', 'private (unique local)'],
      ['::ffff:127.0.0.1', 'loopback'],
      ['::ffff:7f00:1', 'loopback'],
      ['::ffff:169.254.169.254', 'link-local'],
    ];
    for (const [address, why] of cases) expect([address, none.refusal(address)]).toEqual([address, why]);
    expect(() => none.checkAddress('169.254.169.254', 'metadata.internal')).toThrow(
      new EgressRefusedError(
        'metadata.internal resolves to 169.254.169.254, a link-local address, which tenant-given URLs may not reach (an operator can allow it with STRATA_ALLOW_PRIVATE_SOURCES)',
      ),
    );
  });

  it('lets public addresses through, and private ones only inside the allowed CIDRs', () => {
    for (const address of ['8.8.8.8', '140.82.112.3', '172.32.0.1', '2606:4700::1111']) expect(none.refusal(address)).toBeNull();
    const allowLoopback = new EgressPolicy(['127.0.0.0/8']);
    expect(allowLoopback.refusal('127.0.0.1')).toBeNull();
    expect(allowLoopback.refusal('::ffff:127.0.0.1')).toBeNull();
    expect(allowLoopback.refusal('10.0.0.1')).toBe('private');
    expect(allowLoopback.refusal('::1')).toBe('loopback');
  });

  it('resolves a name and refuses it when any address is refused', async () => {
    await expect(none.resolve('localhost')).rejects.toThrow(/^localhost resolves to (127\.0\.0\.1|::1), a loopback address/);
    await expect(none.pin('http://127.0.0.1:9/x')).rejects.toThrow(EgressRefusedError);
    await expect(new EgressPolicy(['127.0.0.0/8']).pin('http://127.0.0.1:9/x')).resolves.toMatchObject({ host: '127.0.0.1', port: 9, address: '127.0.0.1' });
    await expect(none.pin('file:///etc/passwd')).rejects.toThrow('file: URLs are not fetched; use http or https');
  });

  describe('guarded GET', () => {
    let server: http.Server;
    let port: number;
    const hits: string[] = [];
    beforeAll(async () => {
      server = http.createServer((req, res) => {
        hits.push(req.url ?? '');
        if (req.url === '/to-metadata') res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' }).end();
        else if (req.url === '/to-other-loopback') res.writeHead(301, { location: `http://127.0.0.2:${port}/ok` }).end();
        else if (req.url === '/hop') res.writeHead(307, { location: '/ok' }).end();
        else if (req.url === '/chunked') {
          // No Content-Length: the limit must be enforced while streaming.
          res.writeHead(200);
          for (let i = 0; i < 10; i++) res.write(Buffer.alloc(100, i));
          res.end();
        } else if (req.url === '/slow') {
          res.writeHead(200);
          res.write('a');
          setTimeout(() => res.end('b'), 1500);
        } else if (req.url === '/missing') res.writeHead(404).end('nope');
        else res.end(`ok ${req.url}`);
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      port = (server.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((r) => server.close(() => r())));

    it('follows redirects, checking every hop before connecting', async () => {
      const policy = new EgressPolicy(['127.0.0.1/32']);
      const ok = await policy.get(`http://127.0.0.1:${port}/hop`);
      expect([ok.status, ok.body.toString(), ok.url]).toEqual([200, 'ok /ok', `http://127.0.0.1:${port}/ok`]);
      hits.length = 0;
      await expect(policy.get(`http://127.0.0.1:${port}/to-metadata`)).rejects.toThrow('169.254.169.254 resolves to 169.254.169.254, a link-local address');
      await expect(policy.get(`http://127.0.0.1:${port}/to-other-loopback`)).rejects.toThrow('127.0.0.2 resolves to 127.0.0.2, a loopback address');
      // Only the first hops reached a server: the refused targets were never connected to.
      expect(hits).toEqual(['/to-metadata', '/to-other-loopback']);
    });

    it('refuses the first hop when nothing is allowed', async () => {
      hits.length = 0;
      await expect(none.get(`http://127.0.0.1:${port}/ok`)).rejects.toThrow(`127.0.0.1 resolves to 127.0.0.1, a loopback address`);
      expect(hits).toEqual([]);
    });

    describe('download', () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'egress-download-'));
      const policy = new EgressPolicy(['127.0.0.1/32']);

      it('streams a 2xx body to the file after redirects, with its size and sha256', async () => {
        const file = path.join(dir, 'ok');
        const got = await policy.download(`http://127.0.0.1:${port}/hop`, file);
        expect(got).toMatchObject({ status: 200, size: 6, sha256: createHash('sha256').update('ok /ok').digest('hex'), url: `http://127.0.0.1:${port}/ok` });
        expect(readFileSync(file, 'utf8')).toBe('ok /ok');
      });

      it('stops past maxBytes even without a Content-Length, and past timeoutMs, saying which', async () => {
        await expect(policy.download(`http://127.0.0.1:${port}/chunked`, path.join(dir, 'big'), { maxBytes: 500 })).rejects.toThrow(`127.0.0.1:${port} sent more than the 500 bytes allowed`);
        await expect(policy.download(`http://127.0.0.1:${port}/slow`, path.join(dir, 'slow'), { timeoutMs: 300 })).rejects.toThrow(`127.0.0.1:${port} did not finish sending within 300 ms`);
      });

      it('writes nothing for another answer, and checks every hop like get', async () => {
        const file = path.join(dir, 'missing');
        expect(await policy.download(`http://127.0.0.1:${port}/missing`, file)).toMatchObject({ status: 404, sha256: null });
        expect(existsSync(file)).toBe(false);
        await expect(policy.download(`http://127.0.0.1:${port}/to-metadata`, file)).rejects.toThrow('169.254.169.254 resolves to 169.254.169.254, a link-local address');
      });
    });
  });
});

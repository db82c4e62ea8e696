import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server } from 'node:net';
import { DnsForwarder, type DnsListener, MAX_UDP_ANSWER_BYTES, resolvConfUpstreams } from './dns-forwarder.js';

/** A DNS query for an A record of `name`. */
function query(id: number, name: string, flags = 0x0100): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(flags, 2);
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** The answer a resolver gives: the question, then one A record per address (or `padding` bytes of TXT). */
function answer(q: Buffer, addresses: string[], padding = 0): Buffer {
  const out = Buffer.from(q);
  out.writeUInt16BE(0x8180, 2);
  out.writeUInt16BE(addresses.length + (padding > 0 ? 1 : 0), 6);
  const records = addresses.map((a) => Buffer.concat([Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]), Buffer.from(a.split('.').map(Number))]));
  if (padding > 0) {
    const rdata = Buffer.alloc(padding, 0x61);
    const head = Buffer.from([0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 60, 0, 0]);
    head.writeUInt16BE(padding, 10);
    records.push(Buffer.concat([head, rdata]));
  }
  return Buffer.concat([out, ...records]);
}

const rcode = (msg: Buffer): number => msg.readUInt16BE(2) & 0xf;
const aRecords = (msg: Buffer, q: Buffer): string[] => {
  const out: string[] = [];
  for (let at = q.length; at + 16 <= msg.length; at += 16) out.push([...msg.subarray(at + 12, at + 16)].join('.'));
  return out;
};

describe('DnsForwarder', () => {
  /** A stand-in resolver on 127.0.0.1: UDP and TCP, answering each name from `zone` (silent for others). */
  let upstream: UdpSocket;
  let upstreamTcp: Server;
  let upstreamPort: number;
  let silent: UdpSocket;
  let silentPort: number;
  let asked = 0;
  const zone: Record<string, { addresses: string[]; padding?: number }> = {
    'public.example.test': { addresses: ['203.0.113.10'] },
    'big.example.test': { addresses: [], padding: MAX_UDP_ANSWER_BYTES + 500 },
  };
  const listeners: DnsListener[] = [];

  const reply = (msg: Buffer): Buffer | undefined => {
    asked++;
    let at = 12;
    const labels: string[] = [];
    while (msg[at]) {
      labels.push(msg.subarray(at + 1, at + 1 + msg[at]!).toString());
      at += msg[at]! + 1;
    }
    const entry = zone[labels.join('.')];
    return entry ? answer(msg.subarray(0, at + 5), entry.addresses, entry.padding) : undefined;
  };

  beforeAll(async () => {
    upstream = createSocket('udp4');
    upstream.on('message', (msg, rinfo) => {
      const out = reply(msg);
      if (out) upstream.send(out, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => upstream.bind(0, '127.0.0.1', resolve));
    upstreamPort = upstream.address().port;
    upstreamTcp = createServer((socket) => {
      socket.once('data', (chunk: Buffer) => {
        const out = reply(chunk.subarray(2));
        if (!out) return;
        const head = Buffer.alloc(2);
        head.writeUInt16BE(out.length);
        socket.end(Buffer.concat([head, out]));
      });
    });
    await new Promise<void>((resolve) => upstreamTcp.listen(upstreamPort, '127.0.0.1', resolve));
    silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
    silentPort = silent.address().port;
  });

  afterAll(async () => {
    for (const l of listeners) await l.close();
    upstream.close();
    silent.close();
    await new Promise<void>((resolve) => upstreamTcp.close(() => resolve()));
  });

  async function listening(forwarder: DnsForwarder, client = '127.0.0.1'): Promise<DnsListener> {
    const listener = await forwarder.listen('127.0.0.1', client, 0);
    listeners.push(listener);
    return listener;
  }

  /** Sends a UDP query and answers what came back, or undefined after `waitMs`. */
  function askUdp(port: number, q: Buffer, waitMs = 2000): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const socket = createSocket('udp4');
      const timer = setTimeout(() => {
        socket.close();
        resolve(undefined);
      }, waitMs);
      socket.on('message', (msg) => {
        clearTimeout(timer);
        socket.close();
        resolve(msg);
      });
      socket.send(q, port, '127.0.0.1');
    });
  }

  function askTcp(port: number, q: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port });
      let got = Buffer.alloc(0);
      socket.on('connect', () => {
        const head = Buffer.alloc(2);
        head.writeUInt16BE(q.length);
        socket.write(Buffer.concat([head, q]));
      });
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
          socket.destroy();
          resolve(got.subarray(2, 2 + got.readUInt16BE(0)));
        }
      });
      socket.on('error', reject);
      socket.on('close', () => reject(new Error('closed without an answer')));
    });
  }

  it("relays a UDP query to the worker's resolver and its answer back", async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: upstreamPort }] });
    const { port } = await listening(forwarder);
    const q = query(0x1234, 'public.example.test');
    const got = await askUdp(port, q);
    expect(got!.readUInt16BE(0)).toBe(0x1234);
    expect(rcode(got!)).toBe(0);
    expect(aRecords(got!, q)).toEqual(['203.0.113.10']);
  });

  it('relays a TCP query over TCP', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: upstreamPort }] });
    const { port } = await listening(forwarder);
    const q = query(7, 'public.example.test');
    const got = await askTcp(port, q);
    expect(aRecords(got, q)).toEqual(['203.0.113.10']);
  });

  it('answers SERVFAIL, with the question, when no resolver answers in time', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: silentPort }], timeoutMs: 300, attemptMs: 100 });
    const { port } = await listening(forwarder);
    const q = query(99, 'public.example.test');
    const got = await askUdp(port, q);
    expect(rcode(got!)).toBe(2);
    expect(got!.readUInt16BE(0)).toBe(99);
    expect(got!.subarray(12)).toEqual(q.subarray(12));
    expect(forwarder.stats.servfail).toBe(1);
  });

  it('tries the next resolver when one is silent', async () => {
    const forwarder = new DnsForwarder({
      upstreams: [
        { address: '127.0.0.1', port: silentPort },
        { address: '127.0.0.1', port: upstreamPort },
      ],
      attemptMs: 200,
    });
    const { port } = await listening(forwarder);
    const q = query(5, 'public.example.test');
    expect(aRecords((await askUdp(port, q))!, q)).toEqual(['203.0.113.10']);
  });

  it('answers only its own step: queries from any other address get nothing and reach no resolver', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: upstreamPort }] });
    const { port } = await listening(forwarder, '10.213.0.2');
    const before = asked;
    expect(await askUdp(port, query(1, 'public.example.test'), 300)).toBeUndefined();
    await expect(askTcp(port, query(2, 'public.example.test'))).rejects.toThrow();
    expect(asked).toBe(before);
    expect(forwarder.stats.refusedClients).toBe(2);
  });

  it('relays nothing but queries: responses and oversized messages are dropped, other opcodes answered NOTIMP', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: upstreamPort }] });
    const { port } = await listening(forwarder);
    const before = asked;
    expect(await askUdp(port, answer(query(3, 'public.example.test'), ['1.2.3.4']), 300)).toBeUndefined();
    expect(await askUdp(port, Buffer.concat([query(4, 'public.example.test'), Buffer.alloc(1300)]), 300)).toBeUndefined();
    expect(await askUdp(port, Buffer.alloc(5), 300)).toBeUndefined();
    // Opcode 5 (UPDATE): not forwarded.
    const update = await askUdp(port, query(6, 'public.example.test', 5 << 11));
    expect(rcode(update!)).toBe(4);
    expect(asked).toBe(before);
  });

  it('answers SERVFAIL at once past its in-flight limit', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: silentPort }], maxInFlightPerStep: 1, timeoutMs: 1500, attemptMs: 1500 });
    const { port } = await listening(forwarder);
    const first = askUdp(port, query(10, 'public.example.test'), 3000);
    await new Promise((r) => setTimeout(r, 100));
    const second = await askUdp(port, query(11, 'public.example.test'), 1000);
    expect(second!.readUInt16BE(0)).toBe(11);
    expect(rcode(second!)).toBe(2);
    expect(rcode((await first)!)).toBe(2);
  });

  it('truncates an answer too large for UDP, which the step then gets whole over TCP', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: upstreamPort }] });
    const { port } = await listening(forwarder);
    const q = query(12, 'big.example.test');
    const overUdp = (await askUdp(port, q))!;
    expect(overUdp.readUInt16BE(2) & 0x0200).toBe(0x0200);
    expect(overUdp.length).toBe(q.length);
    const overTcp = await askTcp(port, q);
    expect(overTcp.length).toBeGreaterThan(MAX_UDP_ANSWER_BYTES);
  });

  it('drops an answer that comes back after its step has ended', async () => {
    const forwarder = new DnsForwarder({ upstreams: [{ address: '127.0.0.1', port: silentPort }], timeoutMs: 200, attemptMs: 200 });
    const listener = await forwarder.listen('127.0.0.1', '127.0.0.1', 0);
    const pending = askUdp(listener.port, query(13, 'public.example.test'), 600);
    await new Promise((r) => setTimeout(r, 50));
    await listener.close();
    expect(await pending).toBeUndefined();
    expect(forwarder.stats.servfail).toBe(1);
  });

  it("reads the worker's resolvers from its resolv.conf", () => {
    expect(resolvConfUpstreams('search x\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\n# nameserver 1.1.1.1\n')).toEqual([
      { address: '10.255.255.53', port: 53 },
      { address: 'fe80::1%eth0', port: 53 },
    ]);
  });
});

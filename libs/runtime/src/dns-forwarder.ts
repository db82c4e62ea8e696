import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';

/** A resolver the forwarder asks: the worker's own (resolv.conf) or STRATA_RUN_DNS's. */
export interface DnsUpstream {
  address: string;
  port: number;
}

export interface DnsForwarderOptions {
  upstreams: readonly DnsUpstream[];
  /** A query's whole budget across upstreams; past it the step gets SERVFAIL. Default 5 s. */
  timeoutMs?: number;
  /** One upstream's share of that budget before the next is tried. Default 2 s. */
  attemptMs?: number;
  /** Queries being forwarded for one step at a time; more are answered SERVFAIL. Default 64. */
  maxInFlightPerStep?: number;
  /** The same for the whole worker. Default 512. */
  maxInFlight?: number;
  /** TCP connections one step may hold open. Default 8. */
  maxTcpConnectionsPerStep?: number;
  /** A TCP connection with no query for this long is closed. Default 10 s. */
  tcpIdleMs?: number;
}

/** One step's listener: UDP and TCP on its gateway address. */
export interface DnsListener {
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Larger queries are not DNS a resolver library sends (a name is at most 255 bytes; EDNS options are small). */
export const MAX_QUERY_BYTES = 1232;
/** An answer larger than this over UDP goes back truncated (TC), and the step's resolver retries over TCP. */
export const MAX_UDP_ANSWER_BYTES = 4096;
const HEADER = 12;
const RCODE_FORMERR = 1;
const RCODE_SERVFAIL = 2;
const RCODE_NOTIMP = 4;

/**
 * The worker's DNS forwarder for bridge RUN steps, as Docker's embedded DNS: each step's
 * resolv.conf names its gateway (the host end of its veth), where this listens on port 53 for that
 * step alone, and relays well-formed queries to the worker's resolvers, which a step itself never
 * reaches (on clouds they are private or link-local: 169.254.169.253, the VPC's .2, GCP's metadata
 * server). Only DNS crosses, one question per query, answers only to the step that asked (the
 * listener accepts its step's address only), and the work is bounded: a per-query deadline then
 * SERVFAIL, queries in flight per step and per worker, message sizes, TCP connections. docs/adr/0024.
 */
export class DnsForwarder {
  readonly upstreams: readonly DnsUpstream[];
  private readonly timeoutMs: number;
  private readonly attemptMs: number;
  private readonly maxInFlightPerStep: number;
  private readonly maxInFlight: number;
  private readonly maxTcpPerStep: number;
  private readonly tcpIdleMs: number;
  private inFlight = 0;
  /** Counters for tests and the worker's log. */
  readonly stats = { forwarded: 0, servfail: 0, refusedClients: 0, dropped: 0 };

  constructor(options: DnsForwarderOptions) {
    this.upstreams = options.upstreams;
    this.timeoutMs = options.timeoutMs ?? 5000;
    this.attemptMs = options.attemptMs ?? 2000;
    this.maxInFlightPerStep = options.maxInFlightPerStep ?? 64;
    this.maxInFlight = options.maxInFlight ?? 512;
    this.maxTcpPerStep = options.maxTcpConnectionsPerStep ?? 8;
    this.tcpIdleMs = options.tcpIdleMs ?? 10_000;
  }

  /**
   * Listens on `address:port` (UDP and TCP) for queries from `client` only. Port 0 takes a free UDP
   * port and the same number for TCP, trying again with another when TCP finds that one taken.
   */
  async listen(address: string, client: string, port = 53): Promise<DnsListener> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listenOnce(address, client, port);
      } catch (error) {
        if (port !== 0 || attempt >= 5 || !/EADDRINUSE/.test((error as Error).message)) throw error;
      }
    }
  }

  private async listenOnce(address: string, client: string, port: number): Promise<DnsListener> {
    const family = isIP(address) === 6 ? 'udp6' : 'udp4';
    const udp = createSocket({ type: family });
    const tcp = createServer();
    const connections = new Set<Socket>();
    const step = { inFlight: 0 };
    udp.on('message', (msg, rinfo) => {
      if (rinfo.address !== client) {
        this.stats.refusedClients++;
        return;
      }
      void this.answer(msg, step, 'udp').then((reply) => {
        try {
          if (reply) udp.send(reply, rinfo.port, rinfo.address, () => undefined);
        } catch {
          // The step ended while its query was out: the listener is closed.
        }
      });
    });
    udp.on('error', () => undefined);
    tcp.on('connection', (socket) => {
      if (socket.remoteAddress !== client || connections.size >= this.maxTcpPerStep) {
        if (socket.remoteAddress !== client) this.stats.refusedClients++;
        socket.destroy();
        return;
      }
      connections.add(socket);
      socket.on('close', () => connections.delete(socket));
      this.serveTcp(socket, step);
    });
    tcp.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind({ address, port, exclusive: true }, () => {
          udp.off('error', reject);
          resolve();
        });
      });
      const bound = udp.address().port;
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: address, port: bound, exclusive: true }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      await closeAll(udp, tcp, connections);
      throw new Error(`DNS forwarder on ${address}:${port}: ${(error as Error).message}`);
    }
    return { address, port: udp.address().port, close: () => closeAll(udp, tcp, connections) };
  }

  /** Reads length-prefixed queries (RFC 7766) and answers each, in order of arrival. */
  private serveTcp(socket: Socket, step: { inFlight: number }): void {
    let buffered = Buffer.alloc(0);
    let chain = Promise.resolve();
    socket.setTimeout(this.tcpIdleMs, () => socket.destroy());
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const size = buffered.readUInt16BE(0);
        if (size > MAX_QUERY_BYTES) {
          this.stats.dropped++;
          socket.destroy();
          return;
        }
        if (buffered.length < 2 + size) break;
        const query = buffered.subarray(2, 2 + size);
        buffered = buffered.subarray(2 + size);
        chain = chain.then(async () => {
          const reply = await this.answer(query, step, 'tcp');
          if (!reply || socket.destroyed) return;
          const head = Buffer.alloc(2);
          head.writeUInt16BE(reply.length);
          socket.write(Buffer.concat([head, reply]));
        }).catch(() => void socket.destroy());
      }
      // A partial frame never grows past one query.
      if (buffered.length > 2 + MAX_QUERY_BYTES) socket.destroy();
    });
  }

  /** The answer to send back, or undefined to send nothing (not a query). */
  private async answer(query: Buffer, step: { inFlight: number }, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const question = parseQuery(query);
    if (question === undefined) {
      this.stats.dropped++;
      return undefined;
    }
    if (question.opcode !== 0 || question.end === 0) return errorReply(query, question.end, question.end === 0 ? RCODE_FORMERR : RCODE_NOTIMP);
    if (step.inFlight >= this.maxInFlightPerStep || this.inFlight >= this.maxInFlight || this.upstreams.length === 0) {
      this.stats.servfail++;
      return errorReply(query, question.end, RCODE_SERVFAIL);
    }
    step.inFlight++;
    this.inFlight++;
    try {
      const reply = await this.forward(query, question.end, transport);
      if (!reply) {
        this.stats.servfail++;
        return errorReply(query, question.end, RCODE_SERVFAIL);
      }
      this.stats.forwarded++;
      if (transport === 'udp' && reply.length > MAX_UDP_ANSWER_BYTES) return truncated(reply, question.end);
      return reply;
    } finally {
      step.inFlight--;
      this.inFlight--;
    }
  }

  /** Asks the upstreams in turn within the query's budget; the first matching answer wins. */
  private async forward(query: Buffer, questionEnd: number, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const deadline = Date.now() + this.timeoutMs;
    // Each upstream at most twice: one that refuses at once must not make the loop spin until the deadline.
    for (let i = 0; i < 2 * this.upstreams.length; i++) {
      const upstream = this.upstreams[i % this.upstreams.length]!;
      const left = deadline - Date.now();
      if (left <= 0) break;
      const reply = await (transport === 'udp' ? askUdp : askTcp)(upstream, query, Math.min(this.attemptMs, left)).catch(() => undefined);
      if (reply && matches(query, reply, questionEnd)) return reply;
    }
    return undefined;
  }
}

async function closeAll(udp: UdpSocket, tcp: Server, connections: Set<Socket>): Promise<void> {
  for (const socket of connections) socket.destroy();
  await new Promise<void>((resolve) => {
    try {
      udp.close(() => resolve());
    } catch {
      resolve();
    }
  });
  await new Promise<void>((resolve) => (tcp.listening ? tcp.close(() => resolve()) : resolve()));
}

function askUdp(upstream: DnsUpstream, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    // A fresh socket per query: a random source port, and only the upstream's answers (connect) count.
    const socket = createSocket(isIP(upstream.address) === 6 ? 'udp6' : 'udp4');
    const done = (reply: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.removeAllListeners('message');
      try {
        socket.close();
      } catch {
        // already closed
      }
      resolve(reply);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.on('error', () => done(undefined));
    socket.on('message', (msg) => {
      if (msg.length >= HEADER && msg.readUInt16BE(0) === query.readUInt16BE(0)) done(msg);
    });
    socket.connect(upstream.port, upstream.address, () => socket.send(query));
  });
}

function askTcp(upstream: DnsUpstream, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: upstream.address, port: upstream.port });
    let buffered = Buffer.alloc(0);
    const done = (reply: Buffer | undefined): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(reply);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.on('error', () => done(undefined));
    socket.on('close', () => done(undefined));
    socket.on('connect', () => {
      const head = Buffer.alloc(2);
      head.writeUInt16BE(query.length);
      socket.write(Buffer.concat([head, query]));
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) done(buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
    });
  });
}

/**
 * A query's opcode and where its one question ends (0: a question we cannot read), or undefined
 * when the message is no query at all (too short or long, a response, not one question).
 */
export function parseQuery(msg: Buffer): { opcode: number; end: number } | undefined {
  if (msg.length < HEADER || msg.length > MAX_QUERY_BYTES) return undefined;
  const flags = msg.readUInt16BE(2);
  if (flags & 0x8000) return undefined;
  if (msg.readUInt16BE(4) !== 1) return undefined;
  return { opcode: (flags >> 11) & 0xf, end: questionEnd(msg) };
}

/** End of the first question (its name in labels, uncompressed, then type and class), or 0. */
function questionEnd(msg: Buffer): number {
  let at = HEADER;
  for (let total = 0; at < msg.length; ) {
    const len = msg[at]!;
    if (len === 0) return at + 5 <= msg.length ? at + 5 : 0;
    if (len > 63) return 0;
    total += len + 1;
    if (total > 255) return 0;
    at += len + 1;
  }
  return 0;
}

/** An answer to this query: same id, a response, and the same question (names compared without case). */
function matches(query: Buffer, reply: Buffer, end: number): boolean {
  if (reply.length < end || reply.readUInt16BE(0) !== query.readUInt16BE(0)) return false;
  if (!(reply.readUInt16BE(2) & 0x8000) || reply.readUInt16BE(4) !== 1) return false;
  return query.subarray(HEADER, end).toString('latin1').toLowerCase() === reply.subarray(HEADER, end).toString('latin1').toLowerCase();
}

/** A reply with this rcode and the query's question (if readable), nothing else. */
function errorReply(query: Buffer, end: number, rcode: number): Buffer {
  const question = end > 0 ? query.subarray(HEADER, end) : Buffer.alloc(0);
  const reply = Buffer.alloc(HEADER + question.length);
  query.copy(reply, 0, 0, 2);
  const flags = query.readUInt16BE(2);
  // QR, the query's opcode and RD, RA, the rcode.
  reply.writeUInt16BE(0x8000 | (flags & 0x7900) | 0x0080 | rcode, 2);
  reply.writeUInt16BE(question.length > 0 ? 1 : 0, 4);
  question.copy(reply, HEADER);
  return reply;
}

/** The answer's header and question with TC set: the resolver asks again over TCP. */
function truncated(reply: Buffer, end: number): Buffer {
  const out = Buffer.from(reply.subarray(0, end));
  out.writeUInt16BE(reply.readUInt16BE(2) | 0x0200, 2);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(0, 10);
  return out;
}

/** The nameservers of a resolv.conf, on port 53. */
export function resolvConfUpstreams(text: string): DnsUpstream[] {
  return [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)]
    .map((m) => m[1]!)
    .filter((address) => isIP(address) !== 0)
    .map((address) => ({ address, port: 53 }));
}

// Where tenant-given URLs may go. Every connection to a URL a tenant gave us (a git clone URL, a
// forge's API, an ADD <url>) is made to an address this module checked: loopback, link-local,
// private and other special addresses are refused unless the operator allows them by CIDR
// (STRATA_ALLOW_PRIVATE_SOURCES), so a tenant cannot make a worker or the api reach the metadata
// service, the database or anything else behind them. See docs/adr/0009.
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';

/** A connection the policy refuses; the message says which host and address, and why. */
export class EgressRefusedError extends Error {
  override readonly name = 'EgressRefusedError';
}

/** Address ranges no tenant-given URL may reach unless allowed: not routable on the internet, or our own. */
const SPECIAL: Array<[string, number, 'ipv4' | 'ipv6', string]> = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'shared (carrier-grade NAT)'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.0.0.0', 24, 'ipv4', 'IETF protocol assignment'],
  ['192.0.2.0', 24, 'ipv4', 'documentation'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['198.18.0.0', 15, 'ipv4', 'benchmarking'],
  ['198.51.100.0', 24, 'ipv4', 'documentation'],
  ['203.0.113.0', 24, 'ipv4', 'documentation'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['64:ff9b:1::', 48, 'ipv6', 'local NAT64'],
  ['100::', 64, 'ipv6', 'discard-only'],
  ['2001:db8::', 32, 'ipv6', 'documentation'],
  ['fc00::', 7, 'ipv6', 'private (unique local)'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['fec0::', 10, 'ipv6', 'site-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];

/** The operator's exceptions: CIDRs as validated by libs/config (`STRATA_ALLOW_PRIVATE_SOURCES`). */
export class EgressPolicy {
  private readonly allowed = new BlockList();

  constructor(readonly allowCidrs: readonly string[] = []) {
    for (const cidr of allowCidrs) {
      const [address, prefix] = cidr.split('/');
      this.allowed.addSubnet(address, Number(prefix), isIP(address) === 6 ? 'ipv6' : 'ipv4');
    }
  }

  /** Why `address` may not be reached (e.g. "loopback"), or null when it may. */
  refusal(address: string): string | null {
    const family = isIP(address);
    if (family === 0) return 'not an IP address';
    let v4 = family === 4 ? address : null;
    // An IPv4 address written as IPv6 (::ffff:a.b.c.d, or NAT64's 64:ff9b::a.b.c.d) is that IPv4 address.
    const mapped = /^(?:::ffff:|64:ff9b::)(?:0:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address) ?? /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
    if (family === 6 && mapped) {
      v4 = mapped.length === 2 ? mapped[1] : hexPairToV4(mapped[1], mapped[2]);
    }
    if (v4 !== null) {
      if (this.allowed.check(v4, 'ipv4') || (family === 6 && this.allowed.check(address, 'ipv6'))) return null;
      return rangeOf(v4, 'ipv4');
    }
    if (this.allowed.check(address, 'ipv6')) return null;
    return rangeOf(address, 'ipv6');
  }

  /** Throws EgressRefusedError unless `address` may be reached; `host` names it in the message. */
  checkAddress(address: string, host = address): void {
    const why = this.refusal(address);
    if (why) {
      throw new EgressRefusedError(
        `${host} resolves to ${address}, a ${why} address, which tenant-given URLs may not reach (an operator can allow it with STRATA_ALLOW_PRIVATE_SOURCES)`,
      );
    }
  }

  /**
   * Resolves `host` and checks every address it has (one bad address refuses the host: a resolver
   * may answer differently next time). Returns the addresses to connect to, first preferred.
   */
  async resolve(host: string): Promise<Array<{ address: string; family: 4 | 6 }>> {
    const bare = host.replace(/^\[(.*)\]$/, '$1');
    if (isIP(bare)) {
      this.checkAddress(bare, host);
      return [{ address: bare, family: isIP(bare) as 4 | 6 }];
    }
    let found: Array<{ address: string; family: number }>;
    try {
      found = await lookup(bare, { all: true, verbatim: true });
    } catch (e) {
      throw new EgressRefusedError(`${host} could not be resolved: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (found.length === 0) throw new EgressRefusedError(`${host} could not be resolved: no addresses`);
    for (const a of found) this.checkAddress(a.address, host);
    return found.map((a) => ({ address: a.address, family: a.family as 4 | 6 }));
  }

  /**
   * The host, port and checked address a URL's connection must use: callers connect to exactly this
   * address (git through `http.curloptResolve`, HTTP through a pinned lookup), never resolving again.
   */
  async pin(url: string | URL): Promise<PinnedUrl> {
    const u = typeof url === 'string' ? parseUrl(url) : url;
    const port = u.port ? Number(u.port) : defaultPort(u.protocol);
    const [first] = await this.resolve(u.hostname);
    return { url: u, host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port, address: first.address, family: first.family };
  }

  /**
   * An HTTP request to a tenant-given URL, connected to the checked address only. GET follows up to
   * `maxRedirects` redirects, each hop checked again; other methods never follow one. The response
   * body is read up to `maxBytes`.
   */
  async request(url: string, opts: GuardedRequestOptions = {}): Promise<GuardedResponse> {
    const method = opts.method ?? 'GET';
    const maxRedirects = opts.maxRedirects ?? 5;
    let current = parseUrl(url);
    for (let hop = 0; ; hop++) {
      const pinned = await this.pin(current);
      const res = await send(pinned, method, opts);
      const location = res.headers.location;
      if (method === 'GET' && [301, 302, 303, 307, 308].includes(res.status) && typeof location === 'string') {
        if (hop >= maxRedirects) throw new EgressRefusedError(`${url} redirected more than ${maxRedirects} times`);
        current = parseUrl(new URL(location, current).toString());
        continue;
      }
      return { ...res, url: current.toString() };
    }
  }

  /**
   * A GET of a tenant-given URL streamed into `file` (a 2xx answer only), following redirects with
   * every hop checked like `get`; past `maxBytes` or `timeoutMs` (the whole transfer) it fails
   * saying which. Other answers (304 to a conditional request, errors) write nothing.
   */
  async download(url: string, file: string, opts: Omit<GuardedRequestOptions, 'method' | 'body'> = {}): Promise<GuardedDownload> {
    const maxRedirects = opts.maxRedirects ?? 5;
    const maxBytes = opts.maxBytes ?? 16 * 1024 ** 2;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const deadline = AbortSignal.timeout(timeoutMs);
    let current = parseUrl(url);
    for (let hop = 0; ; hop++) {
      const pinned = await this.pin(current);
      const res = await open(pinned, opts.headers, deadline, timeoutMs);
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(res.statusCode ?? 0) && typeof location === 'string') {
        res.resume();
        if (hop >= maxRedirects) throw new EgressRefusedError(`${url} redirected more than ${maxRedirects} times`);
        current = parseUrl(new URL(location, current).toString());
        continue;
      }
      const status = res.statusCode ?? 0;
      const base = { status, headers: res.headers, url: current.toString() };
      if (status < 200 || status > 299) {
        res.resume();
        return { ...base, size: 0, sha256: null };
      }
      const declared = Number(res.headers['content-length'] ?? NaN);
      if (declared > maxBytes) {
        res.destroy();
        throw new EgressRefusedError(`${current.host} answered with ${declared} bytes, more than the ${maxBytes} allowed`);
      }
      const hash = createHash('sha256');
      let size = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          size += chunk.length;
          if (size > maxBytes) return cb(new EgressRefusedError(`${current.host} sent more than the ${maxBytes} bytes allowed`));
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(res, count, createWriteStream(file), { signal: deadline });
      } catch (e) {
        if (deadline.aborted) throw new EgressRefusedError(`${current.host} did not finish sending within ${timeoutMs} ms`);
        throw e;
      }
      return { ...base, size, sha256: hash.digest('hex') };
    }
  }

  /** A GET of a tenant-given URL following redirects, every hop checked. */
  get(url: string, opts: Omit<GuardedRequestOptions, 'method' | 'body'> = {}): Promise<GuardedResponse> {
    return this.request(url, { ...opts, method: 'GET' });
  }
}

export interface GuardedDownload {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The URL that answered (after redirects). */
  url: string;
  size: number;
  /** Hex sha256 of what was written; null when nothing was (not a 2xx answer). */
  sha256: string | null;
}

export interface PinnedUrl {
  url: URL;
  host: string;
  port: number;
  address: string;
  family: 4 | 6;
}

export interface GuardedRequestOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  maxRedirects?: number;
  /** Largest response body read; past it the request fails. Default 16 MiB. */
  maxBytes?: number;
  timeoutMs?: number;
}

export interface GuardedResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The URL that answered (after redirects). */
  url: string;
}

function parseUrl(text: string): URL {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new EgressRefusedError(`"${text.slice(0, 200)}" is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new EgressRefusedError(`${u.protocol} URLs are not fetched; use http or https`);
  return u;
}

function defaultPort(protocol: string): number {
  return protocol === 'https:' ? 443 : protocol === 'http:' ? 80 : protocol === 'ssh:' ? 22 : 0;
}

function rangeOf(address: string, type: 'ipv4' | 'ipv6'): string | null {
  for (const [net, prefix, t, name] of SPECIAL) {
    if (t !== type) continue;
    const one = new BlockList();
    one.addSubnet(net, prefix, t);
    if (one.check(address, type)) return name;
  }
  return null;
}

function hexPairToV4(hi: string, lo: string): string {
  const a = parseInt(hi, 16);
  const b = parseInt(lo, 16);
  return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
}

/** Connects to the address that was checked, whatever DNS says now (no rebinding between check and use). */
function pinnedLookup(pinned: PinnedUrl): http.RequestOptions['lookup'] {
  return (_host, options, cb) => {
    if ((options as { all?: boolean }).all) (cb as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: pinned.address, family: pinned.family }]);
    else cb(null, pinned.address, pinned.family);
  };
}

/** Opens a GET to the pinned address and resolves with the response head; the body is the caller's to read. */
function open(pinned: PinnedUrl, headers: Record<string, string> | undefined, signal: AbortSignal, timeoutMs: number): Promise<http.IncomingMessage> {
  const client = pinned.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(pinned.url, {
      method: 'GET',
      headers,
      signal,
      lookup: pinnedLookup(pinned),
    }, resolve);
    req.on('error', (e) => reject(signal.aborted ? new EgressRefusedError(`${pinned.host} did not answer within ${timeoutMs} ms`) : e));
    req.end();
  });
}

function send(pinned: PinnedUrl, method: string, opts: GuardedRequestOptions): Promise<Omit<GuardedResponse, 'url'>> {
  const maxBytes = opts.maxBytes ?? 16 * 1024 ** 2;
  const client = pinned.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(
      pinned.url,
      {
        method,
        headers: opts.headers,
        timeout: opts.timeoutMs ?? 30_000,
        lookup: pinnedLookup(pinned),
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            req.destroy(new Error(`the response from ${pinned.host} is larger than ${maxBytes} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${pinned.host} did not answer within ${opts.timeoutMs ?? 30_000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

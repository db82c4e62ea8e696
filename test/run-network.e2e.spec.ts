import { jest } from '@jest/globals';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startStandInDns } from './support/dns-server.js';
import { importBusybox } from './support/images.js';
import { api, makeDir, type Stack, startStack, tarOf } from './support/stack.js';

jest.setTimeout(180_000);

const ip = (...args: string[]): string => execFileSync('ip', args).toString();

/**
 * The RUN network as a tenant meets it, through the api and a worker on this machine's own network
 * namespace. The test builds its own "internet": a namespace holding a public host (203.0.113.10),
 * a cloud metadata stand-in (169.254.169.254) and a private host (10.254.R.10), each serving HTTP,
 * linked to the worker by a veth pair, and a resolver on a private address (10.253.R.53, as a cloud
 * VPC's resolver is) that knows public.strata.test. Only packets from this suite's containers'
 * subnets are routed there (a routing rule for those sources, with a blackhole default), and the
 * worker reaches the resolver's /32 alone, so no packet leaves the machine and nothing else on the
 * machine is rerouted. Every deployment's DNS forwarder asks that resolver (STRATA_RUN_DNS).
 */
describe('RUN network: bridge with egress, never behind the worker', () => {
  const tag = randomBytes(3).toString('hex');
  const r = parseInt(tag.slice(0, 2), 16);
  // Two /16s for this suite's workers: 10.S (the default deployment) and 10.S+1 (the one that allows a private range).
  const s = 200 + (parseInt(tag.slice(2, 4), 16) % 24) * 2;
  const containers = `10.${s}.0.0/15`;
  const table = String(30_000 + (parseInt(tag, 16) % 10_000));
  const priority = String(1000 + (parseInt(tag, 16) % 1000));
  const inetNs = `strata-inet-${tag}`;
  const link = `sti${tag}`;
  const worker = `198.18.${r}.1`;
  const internet = `198.18.${r}.2`;
  const privateHost = `10.254.${r}.10`;
  const resolver = `10.253.${r}.53`;
  let dns: ReturnType<typeof startStandInDns>;
  const stands: Array<[string, string]> = [
    ['203.0.113.10', 'public'],
    ['169.254.169.254', 'metadata'],
    [privateHost, 'private'],
  ];
  const servers: ChildProcess[] = [];
  const dirs: string[] = [];
  const stacks: Stack[] = [];
  let workerService: Server;
  let workerServicePort: number;
  let workerServiceConnections = 0;
  const sockets: Socket[] = [];

  beforeAll(async () => {
    ip('netns', 'add', inetNs);
    ip('-n', inetNs, 'link', 'set', 'lo', 'up');
    ip('link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', inetNs);
    ip('addr', 'add', `${worker}/30`, 'dev', link);
    ip('link', 'set', link, 'up');
    ip('-n', inetNs, 'addr', 'add', `${internet}/30`, 'dev', 'eth0');
    ip('-n', inetNs, 'link', 'set', 'eth0', 'up');
    ip('-n', inetNs, 'route', 'add', 'default', 'via', worker);
    for (const [address, name] of stands) {
      ip('-n', inetNs, 'addr', 'add', `${address}/32`, 'dev', 'lo');
      const www = mkdtempSync(path.join(tmpdir(), `strata-inet-${name}-`));
      dirs.push(www);
      writeFileSync(path.join(www, 'hello'), `from ${name}\n`);
      servers.push(spawn('ip', ['netns', 'exec', inetNs, 'busybox', 'httpd', '-f', '-p', `${address}:80`, '-h', www], { stdio: 'ignore' }));
      ip('route', 'add', `${address}/32`, 'via', internet, 'dev', link, 'table', table);
    }
    ip('-n', inetNs, 'addr', 'add', `${resolver}/32`, 'dev', 'lo');
    dns = startStandInDns(inetNs, resolver, { 'public.strata.test': '203.0.113.10', 'metadata.strata.test': '169.254.169.254' });
    servers.push(dns.process);
    await dns.ready;
    // The worker's forwarder reaches the resolver; a step's packets to it are routed too, so what stops them is the policy.
    ip('route', 'add', `${resolver}/32`, 'via', internet, 'dev', link);
    ip('route', 'add', `${resolver}/32`, 'via', internet, 'dev', link, 'table', table);
    // Whatever else these containers send goes nowhere: not out of eth0, not anywhere off this machine.
    ip('route', 'add', 'blackhole', 'default', 'table', table);
    // Except to the containers themselves: the worker's forwarder answers a step from the step's gateway, an address in this range.
    ip('route', 'add', 'throw', containers, 'table', table);
    ip('rule', 'add', 'from', containers, 'lookup', table, 'priority', priority);
    // A service of the worker on an address of its own other than loopback (the api, S3 and the
    // databases bind 127.0.0.1; this one shows that binding elsewhere does not expose it either).
    workerService = createServer((socket) => {
      workerServiceConnections++;
      sockets.push(socket);
      socket.end('worker secret\n');
    });
    await new Promise<void>((resolve) => workerService.listen(0, worker, resolve));
    workerServicePort = (workerService.address() as { port: number }).port;
  });

  afterAll(async () => {
    // Each undo on its own: one failing (or a stack that will not close) must not leave the rest.
    const attempt = async (undo: () => unknown): Promise<void> => {
      try {
        await undo();
      } catch {
        // already gone
      }
    };
    for (const stack of stacks) await attempt(() => stack.close());
    for (const server of servers) server.kill('SIGKILL');
    // A connection whose container is gone would keep close() waiting forever.
    for (const socket of sockets) socket.destroy();
    await attempt(() => new Promise<void>((resolve) => (workerService ? workerService.close(() => resolve()) : resolve())));
    await attempt(() => execFileSync('ip', ['rule', 'del', 'from', containers, 'lookup', table, 'priority', priority], { stdio: 'ignore' }));
    await attempt(() => execFileSync('ip', ['route', 'flush', 'table', table], { stdio: 'ignore' }));
    await attempt(() => execFileSync('ip', ['route', 'del', `${resolver}/32`, 'via', internet, 'dev', link], { stdio: 'ignore' }));
    await attempt(() => execFileSync('ip', ['link', 'del', link], { stdio: 'ignore' }));
    await attempt(() => execFileSync('ip', ['netns', 'del', inetNs], { stdio: 'ignore' }));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  async function deployment(env: Record<string, string>): Promise<{ stack: Stack; token: string }> {
    const stack = await startStack({ env: { STRATA_RUN_DNS: resolver, ...env } });
    stacks.push(stack);
    const { token } = await stack.tenant('runnet');
    await importBusybox(stack, token);
    return { stack, token };
  }

  /** Builds a Dockerfile and answers its status and the lines its RUN steps printed, as the logs endpoint streams them. */
  async function buildLines(d: { stack: Stack; token: string }, dockerfile: string): Promise<{ status: string; lines: string[] }> {
    const submitted = await api(d.stack, d.token, 'POST', `/v1/builds?repository=runnet/app&tag=${randomBytes(3).toString('hex')}`, tarOf(makeDir({ Dockerfile: dockerfile })), 'application/x-tar');
    expect(submitted.status).toBe(202);
    const ac = new AbortController();
    const res = await fetch(`${d.stack.url}/v1/builds/${submitted.json.id}/logs`, { headers: { authorization: `Bearer ${d.token}`, accept: 'text/event-stream' }, signal: ac.signal });
    expect(res.status).toBe(200);
    let text = '';
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        text += decoder.decode(chunk, { stream: true });
        if (/^event: end$[\s\S]*?\n\n/m.test(text)) break;
      }
    } finally {
      ac.abort();
    }
    const events = text
      .split('\n\n')
      .map((block) => ({ event: /^event: (.*)$/m.exec(block)?.[1], data: /^data: (.*)$/m.exec(block)?.[1] }))
      .filter((e) => e.data !== undefined)
      .map((e) => ({ event: e.event, data: JSON.parse(e.data!) }));
    const end = events.find((e) => e.event === 'end');
    const lines = events.filter((e) => e.event === 'log' && e.data.stream === 'stdout').map((e) => e.data.line as string);
    return { status: end?.data.status, lines };
  }

  // Busybox-static's wget crashes in glibc's resolver; plain HTTP over nc does the job.
  const probe = [
    `get() { printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w 3 "$1" "$2" 2>/dev/null | tail -n 1 | grep . || echo "no answer"; }`,
    `gw=$(ip route | awk '/default/ {print $3}')`,
    `echo "public: $(get 203.0.113.10 80)"`,
    `echo "metadata: $(get 169.254.169.254 80)"`,
    `echo "private: $(get ${privateHost} 80)"`,
  ].join('; ');

  it('reaches a public host by default, never the metadata service, private hosts or the worker itself', async () => {
    const d = await deployment({ STRATA_RUN_SUBNET: `10.${s}.0.0/16` });
    const redisPort = new URL(d.stack.config.redisUrl).port || '6379';
    const dockerfile = [
      'FROM busybox:1',
      `RUN ${probe}; ` +
        `echo "address: $(ip -o -4 addr show eth0 | grep -o 'inet [0-9./]*')"; ` +
        `echo "redis via the gateway: $(printf 'PING\\r\\n' | nc -w 2 $gw ${redisPort} 2>/dev/null | grep . || echo 'no answer')"; ` +
        `echo "worker address: $(get ${worker} ${workerServicePort})"; ` +
        `echo "nameservers: $(awk '/^nameserver/ {print $2}' /etc/resolv.conf | tr '\\n' ' ')"; ` +
        `[ "$(awk '/^nameserver/ {print $2}' /etc/resolv.conf)" = "$gw" ] || echo "the nameserver is not the gateway"`,
      '',
    ].join('\n');
    const { status, lines } = await buildLines(d, dockerfile);
    expect(lines).toEqual([
      'public: from public',
      'metadata: no answer',
      'private: no answer',
      expect.stringMatching(new RegExp(`^address: inet 10\\.${s}\\.\\d+\\.\\d+/30$`)),
      'redis via the gateway: no answer',
      'worker address: no answer',
      // The worker's DNS forwarder on the step's gateway, and nothing else.
      expect.stringMatching(new RegExp(`^nameservers: 10\\.${s}\\.\\d+\\.\\d+ $`)),
    ]);
    expect(status).toBe('succeeded');
    expect(workerServiceConnections).toBe(0);
  });

  it('gives RUN --network=none loopback only, and --network=default the bridge', async () => {
    const d = await deployment({ STRATA_RUN_SUBNET: `10.${s}.0.0/16` });
    const dockerfile = [
      'FROM busybox:1',
      `RUN --network=none echo "none routes: $(ip route | wc -l)"; echo "none links: $(ip -o link show | cut -d: -f2 | tr -d ' ' | tr '\\n' ' ')"; ${probe}`,
      `RUN --network=default ${probe}`,
      '',
    ].join('\n');
    const { status, lines } = await buildLines(d, dockerfile);
    expect(lines).toEqual([
      'none routes: 0',
      'none links: lo ',
      'public: no answer',
      'metadata: no answer',
      'private: no answer',
      'public: from public',
      'metadata: no answer',
      'private: no answer',
    ]);
    expect(status).toBe('succeeded');
  });

  it('reaches a private range the operator allows, and still not the metadata service', async () => {
    const d = await deployment({ STRATA_RUN_SUBNET: `10.${s + 1}.0.0/16`, STRATA_ALLOW_PRIVATE_SOURCES: `10.254.${r}.0/24` });
    const { status, lines } = await buildLines(d, `FROM busybox:1\nRUN ${probe}\n`);
    expect(lines).toEqual(['public: from public', 'metadata: no answer', 'private: from private']);
    expect(status).toBe('succeeded');
  });

  it('turns egress off for a whole deployment with STRATA_RUN_NETWORK=none', async () => {
    const d = await deployment({ STRATA_RUN_NETWORK: 'none', STRATA_RUN_SUBNET: `10.${s}.0.0/16` });
    const { status, lines } = await buildLines(d, `FROM busybox:1\nRUN echo "routes: $(ip route | wc -l)"; ${probe}\n`);
    expect(lines).toEqual(['routes: 0', 'public: no answer', 'metadata: no answer', 'private: no answer']);
    expect(status).toBe('succeeded');
  });

  // Names through the step's resolv.conf (the forwarder), then the private resolver asked directly.
  const dnsProbe = [
    `resolve() { timeout 8 nslookup "$@" 2>&1 | awk '/^Name:/ {n=1} n && /^Address/ {print $NF; exit}'; }`,
    `addr=$(resolve public.strata.test)`,
    `echo "resolved: $addr"`,
    `echo "by name: $(get "$addr" 80)"`,
    `echo "unknown: $(timeout 8 nslookup nothing.strata.test 2>&1 | grep -o NXDOMAIN | head -n 1)"`,
    `echo "resolver direct: $(resolve public.strata.test ${resolver} | grep . || echo 'no answer')"`,
  ].join('; ');
  const dnsLines = ['resolved: 203.0.113.10', 'by name: from public', 'unknown: NXDOMAIN', 'resolver direct: no answer'];

  it("resolves names through the worker's DNS forwarder, though the resolver is private and out of the step's reach", async () => {
    const d = await deployment({ STRATA_RUN_SUBNET: `10.${s}.0.0/16` });
    dns.queries.length = 0;
    const { status, lines } = await buildLines(d, `FROM busybox:1\nRUN ${probe}; ${dnsProbe}\n`);
    expect(lines).toEqual(['public: from public', 'metadata: no answer', 'private: no answer', ...dnsLines]);
    expect(status).toBe('succeeded');
    // Every query the resolver saw came from the worker (its forwarder), none from a step's address.
    expect(dns.queries).toContain(`query public.strata.test from ${worker}`);
    expect(dns.queries).toContain(`query nothing.strata.test from ${worker}`);
    expect(dns.queries.filter((q) => !q.endsWith(` from ${worker}`))).toEqual([]);
  });

  it('gives gVisor (runsc) steps the same bridge: the public host by name, never the metadata service, private hosts or the resolver', async () => {
    const d = await deployment({ STRATA_RUN_RUNTIME: 'runsc', STRATA_RUN_SUBNET: `10.${s}.0.0/16` });
    dns.queries.length = 0;
    const { status, lines } = await buildLines(d, `FROM busybox:1\nRUN echo "address: $(ip -o -4 addr show eth0 | grep -o 'inet [0-9./]*')"; ${probe}; ${dnsProbe}\n`);
    expect(lines).toEqual([expect.stringMatching(new RegExp(`^address: inet 10\\.${s}\\.\\d+\\.\\d+/30$`)), 'public: from public', 'metadata: no answer', 'private: no answer', ...dnsLines]);
    expect(status).toBe('succeeded');
    expect(dns.queries.filter((q) => !q.endsWith(` from ${worker}`))).toEqual([]);
  });

  it('leaves no namespace, veth or firewall rule behind once its workers stop', async () => {
    // Every step is over; stopping the workers waits for the last veths to go and removes their rules.
    for (const stack of stacks.splice(0)) await stack.close();
    expect(ip('-o', '-4', 'addr', 'show')).not.toMatch(new RegExp(`inet 10\\.(${s}|${s + 1})\\.`));
    expect(execFileSync('iptables-save').toString()).not.toMatch(new RegExp(`10\\.(${s}|${s + 1})\\.`));
  });
});

import { jest } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { busyboxLayer, layerSource, tempDir, TEST_RUNTIMES, type TestLayer } from './fixtures.test.js';
import { LayerStore, type Snapshot } from './layer-store.js';
import { BridgeNetwork } from './network.js';
import { ContainerExecutor } from './container-executor.js';

jest.setTimeout(60_000);

const ip = (...args: string[]): string => execFileSync('ip', args).toString();

/**
 * network: 'bridge' without touching the machine's own network: the test makes a namespace that
 * plays the worker host (NAT, veth ends) and one that plays "the internet" (203.0.113.10), the
 * cloud metadata service (169.254.169.254) and a private host (10.99.0.10), each with an HTTP
 * server, linked by a veth pair on 10.214.0.0/30; the worker's default route goes there. No packet
 * leaves this machine.
 */
describe.each(TEST_RUNTIMES)('bridge network, with %s', (runtime) => {
  const tag = randomBytes(3).toString('hex');
  const hostNs = `strata-th-${tag}`;
  const outsideNs = `strata-to-${tag}`;
  let servers: ChildProcess[] = [];
  let localServer: Server;
  let localPort: number;
  let localConnections = 0;
  let dataDir: string;
  let stateDir: string;
  let base: TestLayer;
  let snapshot: Snapshot;
  let bridge: BridgeNetwork;
  let executor: ContainerExecutor;
  const extra: BridgeNetwork[] = [];

  const hostIptables = (): string => execFileSync('ip', ['netns', 'exec', hostNs, 'iptables-save']).toString();

  beforeAll(async () => {
    ip('netns', 'add', hostNs);
    ip('netns', 'add', outsideNs);
    ip('-n', hostNs, 'link', 'set', 'lo', 'up');
    ip('-n', outsideNs, 'link', 'set', 'lo', 'up');
    ip('-n', hostNs, 'link', 'add', `tw${tag}`, 'type', 'veth', 'peer', 'name', `to${tag}`);
    ip('-n', hostNs, 'link', 'set', `to${tag}`, 'netns', outsideNs);
    ip('-n', hostNs, 'addr', 'add', '10.214.0.1/30', 'dev', `tw${tag}`);
    ip('-n', hostNs, 'link', 'set', `tw${tag}`, 'up');
    ip('-n', hostNs, 'route', 'add', 'default', 'via', '10.214.0.2');
    ip('-n', outsideNs, 'addr', 'add', '10.214.0.2/30', 'dev', `to${tag}`);
    ip('-n', outsideNs, 'link', 'set', `to${tag}`, 'up');
    const stand: Array<[string, string]> = [
      ['203.0.113.10', 'public'],
      ['169.254.169.254', 'metadata'],
      ['10.99.0.10', 'private'],
    ];
    for (const [address, name] of stand) {
      ip('-n', outsideNs, 'addr', 'add', `${address}/32`, 'dev', 'lo');
      const www = tempDir(`www-${name}`);
      writeFileSync(join(www, 'hello'), `from ${name}\n`);
      servers.push(spawn('ip', ['netns', 'exec', outsideNs, 'busybox', 'httpd', '-f', '-p', `${address}:8080`, '-h', www], { stdio: 'ignore' }));
    }
    const www = tempDir('www-host');
    mkdirSync(join(www, 'sub'));
    writeFileSync(join(www, 'hello'), 'worker service\n');
    servers.push(spawn('ip', ['netns', 'exec', hostNs, 'busybox', 'httpd', '-f', '-p', '8081', '-h', www], { stdio: 'ignore' }));
    localServer = createServer((socket) => {
      localConnections++;
      socket.end('worker secret\n');
    });
    await new Promise<void>((resolve) => localServer.listen(0, '127.0.0.1', resolve));
    localPort = (localServer.address() as { port: number }).port;

    dataDir = tempDir('bridge');
    stateDir = tempDir('bridge-state');
    base = busyboxLayer();
    snapshot = await new LayerStore({ dataDir }).prepare([base.diffId], layerSource([base]).source);
    bridge = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213', stateDir, owner: 'worker-a' });
    executor = new ContainerExecutor({ dataDir, resolvConf: '', bridge, runtime });
    await new Promise((resolve) => setTimeout(resolve, 300));
  });

  afterAll(async () => {
    for (const server of servers) server.kill('SIGKILL');
    await snapshot?.release();
    await new Promise<void>((resolve) => localServer.close(() => resolve()));
    for (const b of [bridge, ...extra]) await b.close();
    for (const ns of [hostNs, outsideNs]) execFileSync('ip', ['netns', 'del', ns]);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  });

  // Busybox-static's wget crashes in glibc's resolver; plain HTTP over nc does the job.
  const get = (host: string, port: number, timeout: number): string =>
    `printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w ${timeout} ${host} ${port} 2>/dev/null | tail -n 1 | grep .`;

  async function sh(script: string, on: ContainerExecutor = executor): Promise<string[]> {
    const lines: string[] = [];
    await on.run({ args: ['/bin/sh', '-c', script], env: [], network: 'bridge' }, { rootfs: snapshot.rootfs, onOutput: (_s, line) => lines.push(line) });
    return lines;
  }

  it('reaches a public address through the veth pair and NAT', async () => {
    const lines = await sh('ip -o -4 addr show eth0 | grep -o "inet [0-9./]*"; ' + get('203.0.113.10', 8080, 5));
    expect(lines).toEqual([expect.stringMatching(/^inet 10\.213\.\d+\.\d+\/30$/), 'from public']);
  });

  it('refuses the metadata address, private ranges and the worker network, and gives no IPv6', async () => {
    const lines = await sh(
      `${get('169.254.169.254', 8080, 2)} || echo "metadata refused"; ${get('10.99.0.10', 8080, 2)} || echo "private refused"; ` +
        `${get('10.214.0.2', 8080, 2)} || echo "worker network refused"; ip -6 addr show dev eth0 scope global | grep -c inet6`,
    );
    expect(lines).toEqual(['metadata refused', 'private refused', 'worker network refused', '0']);
  });

  it("never reaches the worker host's own addresses or its 127.0.0.1", async () => {
    const lines = await sh(
      `gw=$(ip route | awk '/default/ {print $3}'); ${get('$gw', 8081, 2)} || echo "gateway refused"; ` +
        `${get('10.214.0.1', 8081, 2)} || echo "host address refused"; ` +
        `nc -w 2 127.0.0.1 ${localPort} </dev/null 2>/dev/null || echo "loopback refused"`,
    );
    expect(lines).toEqual(['gateway refused', 'host address refused', 'loopback refused']);
    expect(localConnections).toBe(0);
  });

  it('reaches an allowed private range, and still not the metadata address', async () => {
    const allowing = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213', stateDir, owner: 'worker-b', allowCidrs: ['10.99.0.0/24'] });
    extra.push(allowing);
    const lines = await sh(`${get('10.99.0.10', 8080, 5)}; ${get('169.254.169.254', 8080, 2)} || echo "metadata refused"`, new ContainerExecutor({ dataDir, resolvConf: '', bridge: allowing, runtime }));
    expect(lines).toEqual(['from private', 'metadata refused']);
  });

  it("one step never reaches another step's container, even with its range allowed", async () => {
    const allowing = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213', stateDir, owner: 'worker-c', allowCidrs: ['10.0.0.0/8'] });
    extra.push(allowing);
    const a = await bridge.attach('a');
    const b = await allowing.attach('b');
    const nsA = a.netnsPath.split('/').pop()!;
    const nsB = b.netnsPath.split('/').pop()!;
    const www = tempDir('www-a');
    writeFileSync(join(www, 'hello'), 'step a\n');
    const server = spawn('ip', ['netns', 'exec', nsA, 'busybox', 'httpd', '-f', '-p', '9000', '-h', www], { stdio: 'ignore' });
    try {
      const addressA = /inet (\S+)\//.exec(ip('-n', nsA, '-4', '-o', 'addr', 'show', 'eth0'))![1]!;
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Run from the host's busybox, in the steps' namespaces (no container needed to hold them).
      const hostGet = (host: string): string => get(host, 9000, 2).replace('| nc ', '| busybox nc ');
      expect(execFileSync('ip', ['netns', 'exec', nsA, 'sh', '-c', hostGet('127.0.0.1')]).toString()).toBe('step a\n');
      const fromB = execFileSync('ip', ['netns', 'exec', nsB, 'sh', '-c', `${hostGet(addressA)} || echo refused`]).toString();
      expect(fromB).toBe('refused\n');
    } finally {
      server.kill('SIGKILL');
      await a.release();
      await b.release();
    }
  });

  it('removes its namespace and veth after the run, and adds no firewall rule per step', async () => {
    const before = hostIptables().split('\n').filter((l) => l.startsWith('-A ')).length;
    await sh('true');
    await bridge.idle();
    // This bridge's namespaces only: other workers on the machine (other test runs) have their own.
    const key = (bridge as unknown as { key: string }).key;
    expect(key).toMatch(/^[0-9a-f]{4}$/);
    expect(ip('netns', 'list')).not.toMatch(new RegExp(`strata-${key}[0-9a-f]{6}\\b`));
    expect(ip('-n', hostNs, '-o', 'link', 'show')).not.toMatch(/\bstn[0-9a-f]{10}/);
    expect(hostIptables().split('\n').filter((l) => l.startsWith('-A ')).length).toBe(before);
  });

  it('clears what a killed worker left: its namespaces, veths, rules and chains', async () => {
    const killed = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213', stateDir, owner: 'worker-d' });
    const left = await killed.attach('left');
    const ns = left.netnsPath.split('/').pop()!;
    const oldKey = ns.slice('strata-'.length, 'strata-'.length + 4);
    expect(ip('netns', 'list')).toContain(ns);
    expect(hostIptables()).toContain(`-A FORWARD -i stn${oldKey}+ -m comment --comment strata-run-${oldKey} -j STRATA-OUT-`);
    // The same data directory, a new worker process: it takes over what the killed one held.
    const restarted = new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213', stateDir, owner: 'worker-d' });
    // (Same process in this test: make the claim look like a dead process's, as a killed worker's is.)
    const claims = join(stateDir, '10.213');
    for (const file of readdirSync(claims)) {
      const claim = JSON.parse(readFileSync(join(claims, file), 'utf8')) as { netns: string };
      if (claim.netns === ns) writeFileSync(join(claims, file), JSON.stringify({ ...claim, pid: 1, started: 'gone' }));
    }
    await restarted.init();
    expect(restarted.cleared.map((c) => c.netns)).toEqual([ns]);
    expect(ip('netns', 'list')).not.toContain(ns);
    expect(ip('-n', hostNs, '-o', 'link', 'show')).not.toContain(`stn${ns.slice('strata-'.length)}`);
    expect(hostIptables()).not.toContain(`strata-run-${oldKey}`);
    const chain = `STRATA-OUT-${createHash('sha256').update('worker-d').digest('hex').slice(0, 12)}`;
    expect(hostIptables()).toContain(`-j ${chain}`);
    await restarted.close();
    expect(hostIptables()).not.toContain(chain);
  });
});

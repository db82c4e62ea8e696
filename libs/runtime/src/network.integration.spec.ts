import { jest } from '@jest/globals';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { busyboxLayer, layerSource, tempDir, type TestLayer } from './fixtures.test.js';
import { LayerStore, type Snapshot } from './layer-store.js';
import { BridgeNetwork } from './network.js';
import { RuncExecutor } from './runc-executor.js';

jest.setTimeout(60_000);

const ip = (...args: string[]): string => execFileSync('ip', args).toString();

/**
 * network: 'bridge' without touching the machine's own network: the test makes a namespace that
 * plays the worker host (NAT, veth ends) and one that plays "the internet" with an HTTP server,
 * linked by a veth pair on 10.214.0.0/30. No packet leaves this machine.
 */
describe('bridge network', () => {
  const tag = randomBytes(3).toString('hex');
  const hostNs = `strata-th-${tag}`;
  const outsideNs = `strata-to-${tag}`;
  let servers: ChildProcess[] = [];
  let localServer: Server;
  let localPort: number;
  let localConnections = 0;
  let dataDir: string;
  let base: TestLayer;
  let snapshot: Snapshot;
  let executor: RuncExecutor;

  beforeAll(async () => {
    ip('netns', 'add', hostNs);
    ip('netns', 'add', outsideNs);
    ip('-n', hostNs, 'link', 'set', 'lo', 'up');
    ip('-n', outsideNs, 'link', 'set', 'lo', 'up');
    ip('-n', hostNs, 'link', 'add', `tw${tag}`, 'type', 'veth', 'peer', 'name', `to${tag}`);
    ip('-n', hostNs, 'link', 'set', `to${tag}`, 'netns', outsideNs);
    ip('-n', hostNs, 'addr', 'add', '10.214.0.1/30', 'dev', `tw${tag}`);
    ip('-n', hostNs, 'link', 'set', `tw${tag}`, 'up');
    ip('-n', outsideNs, 'addr', 'add', '10.214.0.2/30', 'dev', `to${tag}`);
    ip('-n', outsideNs, 'link', 'set', `to${tag}`, 'up');
    const www = tempDir('www');
    mkdirSync(join(www, 'sub'));
    writeFileSync(join(www, 'hello'), 'from outside\n');
    servers = [
      spawn('ip', ['netns', 'exec', outsideNs, 'busybox', 'httpd', '-f', '-p', '10.214.0.2:8080', '-h', www], { stdio: 'ignore' }),
      spawn('ip', ['netns', 'exec', hostNs, 'busybox', 'httpd', '-f', '-p', '8081', '-h', www], { stdio: 'ignore' }),
    ];
    localServer = createServer((socket) => {
      localConnections++;
      socket.end('worker secret\n');
    });
    await new Promise<void>((resolve) => localServer.listen(0, '127.0.0.1', resolve));
    localPort = (localServer.address() as { port: number }).port;

    dataDir = tempDir('bridge');
    base = busyboxLayer();
    snapshot = await new LayerStore({ dataDir }).prepare([base.diffId], layerSource([base]).source);
    executor = new RuncExecutor({ dataDir, resolvConf: '', bridge: new BridgeNetwork({ hostNetns: hostNs, subnetPrefix: '10.213' }) });
    await new Promise((resolve) => setTimeout(resolve, 300));
  });

  afterAll(async () => {
    for (const server of servers) server.kill('SIGKILL');
    await snapshot?.release();
    await new Promise<void>((resolve) => localServer.close(() => resolve()));
    for (const ns of [hostNs, outsideNs]) execFileSync('ip', ['netns', 'del', ns]);
    rmSync(dataDir, { recursive: true, force: true });
  });

  // Busybox-static's wget crashes in glibc's resolver; plain HTTP over nc does the job.
  const get = (host: string, port: number, timeout: number): string =>
    `printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w ${timeout} ${host} ${port} 2>/dev/null | tail -n 1 | grep .`;

  async function sh(script: string): Promise<string[]> {
    const lines: string[] = [];
    await executor.run({ args: ['/bin/sh', '-c', script], env: [], network: 'bridge' }, { rootfs: snapshot.rootfs, onOutput: (_s, line) => lines.push(line) });
    return lines;
  }

  it('reaches outside through the veth pair and NAT', async () => {
    const lines = await sh('ip -o -4 addr show eth0 | grep -o "inet [0-9./]*"; ' + get('10.214.0.2', 8080, 5));
    expect(lines).toEqual([expect.stringMatching(/^inet 10\.213\.\d+\.\d+\/30$/), 'from outside']);
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

  it('removes its namespace, veth and iptables rules after the run', async () => {
    await sh('true');
    expect(ip('netns', 'list')).not.toMatch(/strata-[0-9a-f]{8}/);
    expect(ip('-n', hostNs, '-o', 'link', 'show')).not.toMatch(/\bsh[0-9a-f]{8}/);
    expect(execFileSync('ip', ['netns', 'exec', hostNs, 'iptables-save']).toString()).not.toContain('10.213.');
  });
});

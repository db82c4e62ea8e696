import { randomBytes } from 'node:crypto';
import { runCommand } from './command.js';

export interface NetworkAttachment {
  /** Network namespace for the container (a path under /run/netns). */
  netnsPath: string;
  release(): Promise<void>;
}

export interface BridgeNetworkOptions {
  /**
   * Name (under /run/netns) of the namespace that plays the host side of the veth pairs and does
   * the NAT. Default: the worker's own network namespace. Tests pass a namespace they created.
   */
  hostNetns?: string;
  /** First two octets of the 10.x.0.0/16 range the /30 links are carved from. Default "10.213". */
  subnetPrefix?: string;
  /** Masquerade the containers' traffic out of the host side (needs iptables). Default true. */
  nat?: boolean;
}

/**
 * `network: 'bridge'`: each container gets its own network namespace with a veth pair to the host
 * side, a /30 link out of 10.x, a default route through it and (optionally) source NAT. Packets
 * from a container to the host side's own addresses are dropped, so the worker's services stay
 * out of reach even when they listen on more than 127.0.0.1 (which a foreign netns never reaches).
 */
export class BridgeNetwork {
  private readonly hostNetns: string | undefined;
  private readonly prefix: string;
  private readonly nat: boolean;
  private readonly used = new Set<number>();
  private next = 0;

  constructor(options: BridgeNetworkOptions = {}) {
    this.hostNetns = options.hostNetns;
    this.prefix = options.subnetPrefix ?? '10.213';
    if (!/^10\.\d{1,3}$/.test(this.prefix)) throw new Error(`bridge subnet prefix ${this.prefix} must be of the form 10.N`);
    this.nat = options.nat ?? true;
  }

  async attach(containerId: string): Promise<NetworkAttachment> {
    const index = this.allocate();
    const tag = randomBytes(4).toString('hex');
    const netns = `strata-${tag}`;
    const hostIf = `sh${tag}`;
    const peerIf = `sc${tag}`;
    const base = index * 4;
    const hostAddress = `${this.prefix}.${Math.floor(base / 256)}.${(base % 256) + 1}`;
    const containerAddress = `${this.prefix}.${Math.floor(base / 256)}.${(base % 256) + 2}`;
    const subnet = `${this.prefix}.${Math.floor(base / 256)}.${base % 256}/30`;
    const onHost = (args: string[]): Promise<string> =>
      this.hostNetns === undefined ? runCommand(args[0]!, args.slice(1)) : runCommand('ip', ['netns', 'exec', this.hostNetns, ...args]);
    const rules = [
      ['-t', 'nat', 'POSTROUTING', '-s', subnet, '!', '-o', hostIf, '-j', 'MASQUERADE'],
      ['-t', 'filter', 'FORWARD', '-i', hostIf, '-j', 'ACCEPT'],
      ['-t', 'filter', 'FORWARD', '-o', hostIf, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT'],
      ['-t', 'filter', 'INPUT', '-i', hostIf, '-j', 'DROP'],
    ];
    const applied: string[][] = [];
    const release = async (): Promise<void> => {
      for (const rule of applied.reverse()) await onHost(['iptables', '-t', rule[1]!, '-D', ...rule.slice(2)]).catch(() => undefined);
      await onHost(['ip', 'link', 'del', hostIf]).catch(() => undefined);
      await runCommand('ip', ['netns', 'del', netns]).catch(() => undefined);
      this.used.delete(index);
    };
    try {
      await runCommand('ip', ['netns', 'add', netns]);
      await onHost(['ip', 'link', 'add', hostIf, 'type', 'veth', 'peer', 'name', peerIf]);
      await onHost(['ip', 'link', 'set', peerIf, 'netns', netns]);
      await onHost(['ip', 'addr', 'add', `${hostAddress}/30`, 'dev', hostIf]);
      await onHost(['ip', 'link', 'set', hostIf, 'up']);
      await runCommand('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      await runCommand('ip', ['-n', netns, 'link', 'set', peerIf, 'name', 'eth0']);
      await runCommand('ip', ['-n', netns, 'addr', 'add', `${containerAddress}/30`, 'dev', 'eth0']);
      await runCommand('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      await runCommand('ip', ['-n', netns, 'route', 'add', 'default', 'via', hostAddress]);
      const input = rules[3]!;
      await onHost(['iptables', '-t', input[1]!, '-I', ...input.slice(2)]);
      applied.push(input);
      if (this.nat) {
        await onHost(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
        for (const rule of rules.slice(0, 3)) {
          await onHost(['iptables', '-t', rule[1]!, '-A', ...rule.slice(2)]);
          applied.push(rule);
        }
      }
    } catch (error) {
      await release();
      throw new Error(`bridge network for ${containerId}: ${(error as Error).message}`);
    }
    return { netnsPath: `/run/netns/${netns}`, release };
  }

  private allocate(): number {
    for (let i = 0; i < 16384; i++) {
      const index = (this.next + i) % 16384;
      if (!this.used.has(index)) {
        this.used.add(index);
        this.next = index + 1;
        return index;
      }
    }
    throw new Error('no free bridge subnet: 16384 containers are attached');
  }
}

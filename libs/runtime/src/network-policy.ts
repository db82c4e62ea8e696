import { BlockList, isIP } from 'node:net';

/**
 * IPv4 ranges a RUN step's bridge network never forwards to unless the operator allows them
 * (STRATA_ALLOW_PRIVATE_SOURCES): what sits behind the worker rather than on the internet. The
 * documentation and benchmarking ranges that libs/egress also refuses for tenant URLs are not here:
 * they are not anyone's private network, and the worker's own connected subnets (whatever range
 * they use) are added at start. RUN steps get no IPv6 at all (docs/adr/0024).
 */
export const RUN_BLOCKED_RANGES: ReadonlyArray<readonly [cidr: string, why: string]> = [
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared (carrier-grade NAT)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local (cloud metadata)'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'IETF protocol assignment'],
  ['192.168.0.0/16', 'private'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved and broadcast'],
];

const CIDR_V4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/;

/**
 * Where a RUN step on the bridge network may connect: anything but the blocked ranges, the worker's
 * own subnets and the containers' subnet, except the operator's allowed CIDRs (the containers'
 * subnet is never allowed: one step never reaches another's container).
 */
export class RunNetworkPolicy {
  readonly containerSubnet: string;
  readonly blocked: string[];
  readonly allowed: string[];
  private readonly blockList = new BlockList();
  private readonly allowList = new BlockList();
  private readonly containers = new BlockList();

  constructor(opts: { containerSubnet: string; allowCidrs?: readonly string[]; hostSubnets?: readonly string[] }) {
    this.blocked = [...RUN_BLOCKED_RANGES.map(([cidr]) => cidr), ...(opts.hostSubnets ?? []).filter((c) => CIDR_V4.test(c))];
    // IPv6 allowances do not matter: the veth carries IPv4 only. Loopback ones neither: 127/8 from a
    // veth is the worker itself (refused on INPUT), whatever tenant URLs may reach.
    this.allowed = (opts.allowCidrs ?? []).filter((c) => CIDR_V4.test(c) && !c.startsWith('127.'));
    for (const cidr of this.blocked) addCidr(this.blockList, cidr);
    for (const cidr of this.allowed) addCidr(this.allowList, cidr);
    addCidr(this.containers, opts.containerSubnet);
    this.containerSubnet = opts.containerSubnet;
  }

  /** Whether a step may open a connection to this IPv4 address. */
  reaches(address: string): boolean {
    if (isIP(address) !== 4) return false;
    if (this.containers.check(address, 'ipv4')) return false;
    if (this.allowList.check(address, 'ipv4')) return true;
    return !this.blockList.check(address, 'ipv4');
  }

  /**
   * iptables rules (without the `-A CHAIN` head) of the chain every packet from a step's veth goes
   * through: other containers first, then the allowances, then the blocked ranges, then egress.
   */
  forwardRules(vethPrefix: string): string[] {
    const reject = '-j REJECT --reject-with icmp-admin-prohibited';
    return [
      `-o ${vethPrefix}+ ${reject}`,
      `-d ${this.containerSubnet} ${reject}`,
      ...this.allowed.map((cidr) => `-d ${cidr} -j ACCEPT`),
      ...this.blocked.map((cidr) => `-d ${cidr} ${reject}`),
      '-j ACCEPT',
    ];
  }

  /**
   * The /etc/resolv.conf of a bridge step: the host's nameservers the step may reach (a loopback
   * resolver such as systemd-resolved's, or a private one the operator did not allow, would only be
   * refused); other lines (search, options) kept. No nameserver left: the file has none, and names
   * do not resolve until the operator allows the resolver or the step uses addresses.
   */
  resolvConf(host: string): string {
    const kept: string[] = [];
    const dropped: string[] = [];
    for (const line of host.split('\n')) {
      const ns = /^\s*nameserver\s+(\S+)/.exec(line);
      if (ns && !this.reaches(ns[1]!)) dropped.push(ns[1]!);
      else kept.push(line);
    }
    if (dropped.length > 0) kept.push(`# strata: nameservers the RUN network policy does not reach left out: ${dropped.join(' ')}`, '');
    return kept.join('\n');
  }
}

function addCidr(list: BlockList, cidr: string): void {
  const [address, prefix] = cidr.split('/');
  list.addSubnet(address!, Number(prefix), 'ipv4');
}

import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { runCommand } from './command.js';
import { DnsForwarder, type DnsForwarderOptions, type DnsListener, resolvConfUpstreams } from './dns-forwarder.js';
import { isAlive, processStart, type StepClaim, SubnetClaims } from './network-claims.js';
import { RunNetworkPolicy } from './network-policy.js';

export interface NetworkAttachment {
  /** Network namespace for the container (a path under /run/netns). */
  netnsPath: string;
  /** The step's /etc/resolv.conf, from the worker's (its search and options lines kept). */
  resolvConf(hostResolvConf: string): string;
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
  /** IPv4 CIDRs steps may reach although private (STRATA_ALLOW_PRIVATE_SOURCES). */
  allowCidrs?: readonly string[];
  /** Who this worker is across restarts (a key of its data directory): its leftovers are cleared at init. Default: random. */
  owner?: string;
  /** Where links are claimed, shared by every worker of the host. Default /run/strata/net. */
  stateDir?: string;
  /**
   * The DNS forwarder each step's resolv.conf names (on its gateway, port 53). Default: on, asking
   * the nameservers of the worker's /etc/resolv.conf; `upstreams` replaces them (STRATA_RUN_DNS).
   * `false`, or a `hostNetns` (the worker's process cannot listen there), gives the steps the
   * worker's nameservers the policy lets them reach instead.
   */
  dns?: false | (Partial<DnsForwarderOptions> & { resolvConfPath?: string });
}

/** Host ends of the veth pairs: `stn` + the worker's 4 hex digits + the step's 6 (the firewall matches `stn+`). */
export const VETH_PREFIX = 'stn';
const REJECT = '-j REJECT --reject-with icmp-admin-prohibited';

interface OwnerRecord {
  pid?: number;
  started?: string;
  key?: string;
  chains?: string[];
  hostNetns?: string;
}

/**
 * `network: 'bridge'`: each RUN container gets its own network namespace with a veth pair to the
 * worker, a /30 link out of 10.x (claimed host-wide, see SubnetClaims), a default route and source
 * NAT. Per worker, two iptables chains hold the policy (RunNetworkPolicy): from a step, nothing of
 * the worker itself (INPUT is refused on the veth), no other step, no private, loopback, link-local
 * or multicast range unless allowed; to a step, replies only. The worker's rules match its steps'
 * veths by name prefix, so a step touches no firewall rule. docs/adr/0024.
 */
export class BridgeNetwork {
  private readonly hostNetns: string | undefined;
  private readonly prefix: string;
  private readonly nat: boolean;
  private readonly owner: string;
  private readonly stateDir: string;
  private readonly claims: SubnetClaims;
  private readonly allowCidrs: readonly string[];
  private readonly outChain: string;
  private readonly inChain: string;
  private ready: Promise<RunNetworkPolicy> | undefined;
  /** 4 hex digits naming this worker's veths (`stn<key>…`) and rules; chosen at init, unique among live workers. */
  private key = '';
  private readonly teardowns = new Set<Promise<void>>();
  private readonly dnsOptions: (Partial<DnsForwarderOptions> & { resolvConfPath?: string }) | undefined;
  private dns: DnsForwarder | undefined;
  private policy: RunNetworkPolicy | undefined;

  constructor(options: BridgeNetworkOptions = {}) {
    this.hostNetns = options.hostNetns;
    if (options.dns && options.hostNetns !== undefined) throw new Error('the bridge DNS forwarder listens in the worker\'s own network namespace: no hostNetns with dns');
    this.dnsOptions = options.dns === false || (options.dns === undefined && options.hostNetns !== undefined) ? undefined : (options.dns ?? {});
    this.prefix = options.subnetPrefix ?? '10.213';
    if (!/^10\.\d{1,3}$/.test(this.prefix) || Number(this.prefix.split('.')[1]) > 255) {
      throw new Error(`bridge subnet prefix ${this.prefix} must be of the form 10.N`);
    }
    this.nat = options.nat ?? true;
    this.allowCidrs = options.allowCidrs ?? [];
    this.owner = options.owner ?? randomBytes(6).toString('hex');
    this.stateDir = options.stateDir ?? '/run/strata/net';
    this.claims = new SubnetClaims(path.join(this.stateDir, this.prefix));
    const key = createHash('sha256').update(this.owner).digest('hex').slice(0, 12);
    this.outChain = `STRATA-OUT-${key}`;
    this.inChain = `STRATA-IN-${key}`;
  }

  /** The containers' subnet, 10.N.0.0/16. */
  get subnet(): string {
    return `${this.prefix}.0.0/16`;
  }

  /**
   * Clears what a killed worker left (its steps' namespaces, veths and rules; the chains of workers
   * that are gone), turns on IPv4 forwarding and (re)writes this worker's chains. Idempotent;
   * `attach` calls it first. Returns the policy in force.
   */
  init(): Promise<RunNetworkPolicy> {
    this.ready ??= this.setUp().catch((e: unknown) => {
      this.ready = undefined;
      throw e;
    });
    return this.ready;
  }

  /** Whether steps resolve names through the worker's DNS forwarder on their gateway. */
  get forwardsDns(): boolean {
    return this.dnsOptions !== undefined;
  }

  /** The resolvers the forwarder asks (known once `init` has run), or undefined without a forwarder. */
  get dnsUpstreams(): readonly { address: string; port: number }[] | undefined {
    return this.dns?.upstreams;
  }

  /** Queries the worker's forwarder relayed, answered SERVFAIL, or refused (for the worker's log and tests). */
  get dnsStats(): DnsForwarder['stats'] | undefined {
    return this.dns?.stats;
  }

  /** Leftovers this init cleared (for the worker's start-up log). */
  cleared: StepClaim[] = [];

  private async setUp(): Promise<RunNetworkPolicy> {
    this.cleared = await this.claims.leftovers(this.owner);
    const ownersDir = path.join(this.stateDir, 'owners');
    await mkdir(ownersDir, { recursive: true, mode: 0o700 });
    const dead: OwnerRecord[] = [];
    const liveKeys = new Set<string>();
    for (const name of await readdir(ownersDir)) {
      const file = path.join(ownersDir, name);
      const record = JSON.parse(await readFile(file, 'utf8').catch(() => '{}')) as OwnerRecord;
      if (record.hostNetns !== this.hostNetns) continue;
      if (name === this.owner || !(await isAlive(record.pid ?? 0, record.started ?? ''))) {
        // A previous worker on this data directory had the same chains: they are rewritten below.
        dead.push(name === this.owner ? { ...record, chains: [] } : record);
        await rm(file, { force: true });
      } else if (record.key) liveKeys.add(record.key);
    }
    for (const claim of this.cleared) {
      // The pair first: deleting it is synchronous, a namespace's teardown is not.
      await this.onHost(['ip', 'link', 'del', claim.hostIf], claim.hostNetns).catch(() => undefined);
      await runCommand('ip', ['netns', 'del', claim.netns]).catch(() => undefined);
    }
    const deadKeys = dead.map((d) => d.key).filter((k): k is string => typeof k === 'string');
    const deadChains = dead.flatMap((d) => d.chains ?? []);
    // Another worker starting at the same time may be removing the same dead worker's rules: look again once.
    await this.removeRules(deadKeys, deadChains)
      .catch(() => this.removeRules(deadKeys, deadChains))
      .catch(() => undefined);
    for (const claim of this.cleared) await this.claims.release(claim.index, claim.netns);

    do this.key = randomBytes(2).toString('hex');
    while (liveKeys.has(this.key));
    const hostSubnets = (await this.onHost(['ip', '-4', '-o', 'route', 'show', 'table', 'main', 'scope', 'link']))
      .split('\n')
      .filter((line) => !new RegExp(`\\bdev ${VETH_PREFIX}[0-9a-f]+\\b`).test(line))
      .map((line) => line.split(' ')[0] ?? '')
      .filter((dest) => dest.includes('/'));
    const policy = new RunNetworkPolicy({ containerSubnet: this.subnet, allowCidrs: this.allowCidrs, hostSubnets });
    this.policy = policy;
    if (this.dnsOptions) {
      const { resolvConfPath, ...forwarder } = this.dnsOptions;
      const upstreams = forwarder.upstreams ?? resolvConfUpstreams(await readFile(resolvConfPath ?? '/etc/resolv.conf', 'utf8').catch(() => ''));
      this.dns = new DnsForwarder({ ...forwarder, upstreams });
    }
    if (this.nat) await this.onHost(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    // Recorded before the rules exist, so a worker killed in between still has them removed.
    const record: OwnerRecord = { pid: process.pid, started: await processStart(process.pid), key: this.key, chains: [this.outChain, this.inChain] };
    if (this.hostNetns !== undefined) record.hostNetns = this.hostNetns;
    await writeFile(path.join(ownersDir, this.owner), JSON.stringify(record), { mode: 0o600 });
    const mark = `-m comment --comment ${this.comment}`;
    const steps = `${VETH_PREFIX}${this.key}+`;
    const lines = [
      '*filter',
      `:${this.outChain} - [0:0]`,
      `:${this.inChain} - [0:0]`,
      ...policy.forwardRules(VETH_PREFIX).map((rule) => `-A ${this.outChain} ${rule}`),
      `-A ${this.inChain} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      `-A ${this.inChain} ${REJECT}`,
      // The worker's own services, on any of its addresses (the gateway included)...
      `-I INPUT -i ${steps} ${mark} ${REJECT}`,
      // ...but its DNS forwarder, on the gateways' port 53 (inserted above the rejection). Each
      // gateway's forwarder answers its own step only: another step's query there gets nothing.
      ...(this.dns ? ['udp', 'tcp'].map((proto) => `-I INPUT -i ${steps} -d ${this.subnet} -p ${proto} --dport 53 ${mark} -j ACCEPT`) : []),
      `-I FORWARD -i ${steps} ${mark} -j ${this.outChain}`,
      `-I FORWARD -o ${steps} ${mark} -j ${this.inChain}`,
      'COMMIT',
    ];
    if (this.nat) lines.push('*nat', `-A POSTROUTING -s ${this.subnet} ! -o ${VETH_PREFIX}+ ${mark} -j MASQUERADE`, 'COMMIT');
    await this.restore(lines);
    return policy;
  }

  async attach(containerId: string): Promise<NetworkAttachment> {
    await this.init();
    const tag = randomBytes(3).toString('hex');
    const netns = `strata-${this.key}${tag}`;
    // The worker's key in the name: its rules match its steps' veths by prefix, so a step adds none.
    const hostIf = `${VETH_PREFIX}${this.key}${tag}`;
    const claim = await this.claims.claim({
      owner: this.owner,
      netns,
      hostIf,
      ...(this.hostNetns !== undefined ? { hostNetns: this.hostNetns } : {}),
    });
    const hostAddress = this.address(claim.index, 1);
    const containerAddress = this.address(claim.index, 2);
    let dns: DnsListener | undefined;
    const teardown = async (): Promise<void> => {
      await dns?.close();
      // The pair first: deleting it is synchronous, a namespace's teardown is not.
      await this.onHost(['ip', 'link', 'del', hostIf]).catch(() => undefined);
      await runCommand('ip', ['netns', 'del', netns]).catch(() => undefined);
      await this.claims.release(claim.index);
    };
    try {
      const hostSide = [`link add ${hostIf} type veth peer name eth0 netns ${netns}`, `addr add ${hostAddress}/30 dev ${hostIf}`, `link set ${hostIf} up`];
      // `ip -batch` runs `netns add` and goes back to its own namespace for the next line.
      if (this.hostNetns === undefined) await this.ip([`netns add ${netns}`, ...hostSide], []);
      else {
        await runCommand('ip', ['netns', 'add', netns]);
        await this.ip(hostSide, ['-n', this.hostNetns]);
      }
      // IPv4 only: the kernel drops every IPv6 packet the host end receives.
      if (this.hostNetns === undefined) await writeFile(`/proc/sys/net/ipv6/conf/${hostIf}/disable_ipv6`, '1');
      else await this.onHost(['sysctl', '-q', '-w', `net.ipv6.conf.${hostIf}.disable_ipv6=1`]);
      await this.ip(['link set lo up', `addr add ${containerAddress}/30 dev eth0`, 'link set eth0 up', `route add default via ${hostAddress}`], ['-n', netns]);
      dns = await this.dns?.listen(hostAddress, containerAddress);
    } catch (error) {
      await teardown();
      throw new Error(`bridge network for ${containerId}: ${(error as Error).message}`);
    }
    let released: Promise<void> | undefined;
    const policy = this.policy!;
    return {
      netnsPath: `/run/netns/${netns}`,
      resolvConf: (host) => (dns ? forwarderResolvConf(host, hostAddress) : policy.resolvConf(host)),
      // Deleting a veth waits for the kernel's RCU grace period (tens of ms): the step does not wait
      // for it; the link stays claimed until it is gone, and close() waits for every teardown.
      release: async () => {
        if (released) return;
        released = teardown().finally(() => this.teardowns.delete(released!));
        this.teardowns.add(released);
      },
    };
  }

  /** Resolves when every released step's veth and namespace are gone. */
  async idle(): Promise<void> {
    await Promise.all([...this.teardowns]);
  }

  /** Removes this worker's rules and chains (nothing may use them any more: call it after the last step). */
  async close(): Promise<void> {
    if (!this.ready) return;
    await this.ready.catch(() => undefined);
    await Promise.all([...this.teardowns]);
    this.ready = undefined;
    await this.removeRules([this.key], [this.outChain, this.inChain]).catch(() => undefined);
    await rm(path.join(this.stateDir, 'owners', this.owner), { force: true });
  }

  /** Address `n` (1: the host end, 2: the container) of the /30 link `index`. */
  private address(index: number, n: 1 | 2): string {
    const base = index * 4;
    return `${this.prefix}.${Math.floor(base / 256)}.${(base % 256) + n}`;
  }

  private get comment(): string {
    return `strata-run-${this.key}`;
  }

  /**
   * Deletes the rules of the workers with these keys (marked with their comment) and the given
   * chains (with every jump to them), found in iptables-save, in one iptables-restore.
   */
  private async removeRules(keys: string[], chains: string[]): Promise<void> {
    if (keys.length === 0 && chains.length === 0) return;
    const lines: string[] = [];
    for (const table of ['filter', 'nat']) {
      const saved = await this.onHost(['iptables-save', '-t', table]);
      const existing = new Set(saved.split('\n').filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0]));
      const doomed = saved.split('\n').filter((line) => {
        if (!line.startsWith('-A ') || chains.some((c) => line.startsWith(`-A ${c} `))) return false;
        const words = ` ${line} `;
        return keys.some((k) => words.includes(` strata-run-${k} `)) || chains.some((c) => words.includes(` -j ${c} `));
      });
      const gone = chains.filter((c) => existing.has(c));
      if (doomed.length === 0 && gone.length === 0) continue;
      lines.push(`*${table}`, ...doomed.map((l) => l.replace(/^-A /, '-D ')));
      for (const c of gone) lines.push(`-F ${c}`, `-X ${c}`);
      lines.push('COMMIT');
    }
    if (lines.length > 0) await this.restore(lines);
  }

  /** iptables-restore --noflush of these lines: one atomic change per table. Retried: nft transactions of other workers may race. */
  private async restore(lines: string[]): Promise<void> {
    const args = this.hostNetns === undefined ? ['iptables-restore', '-w', '5', '-n'] : ['ip', 'netns', 'exec', this.hostNetns, 'iptables-restore', '-w', '5', '-n'];
    for (let attempt = 1; ; attempt++) {
      try {
        await runCommand(args[0]!, args.slice(1), { input: `${lines.join('\n')}\n` });
        return;
      } catch (e) {
        if (attempt >= 3) throw e;
        await new Promise((r) => setTimeout(r, 20 * attempt));
      }
    }
  }

  private ip(commands: string[], global: string[]): Promise<string> {
    if (commands.length === 0) return Promise.resolve('');
    return runCommand('ip', [...global, '-batch', '-'], { input: `${commands.join('\n')}\n` });
  }

  private onHost(args: string[], hostNetns = this.hostNetns): Promise<string> {
    return hostNetns === undefined ? runCommand(args[0]!, args.slice(1)) : runCommand('ip', ['netns', 'exec', hostNetns, ...args]);
  }
}

/**
 * A step's resolv.conf when the forwarder serves it: its gateway as the one nameserver, the worker's
 * search and options lines kept (its nameservers are what the forwarder asks).
 */
function forwarderResolvConf(host: string, gateway: string): string {
  const kept = host.split('\n').filter((line) => !/^\s*nameserver\s/.test(line) && line.trim() !== '' && !line.trimStart().startsWith('#'));
  return ['# strata: names resolve through the worker\'s DNS forwarder on this step\'s gateway (docs/adr/0024)', `nameserver ${gateway}`, ...kept, ''].join('\n');
}

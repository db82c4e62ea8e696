import { RunNetworkPolicy } from './network-policy.js';

describe('RunNetworkPolicy', () => {
  const policy = new RunNetworkPolicy({ containerSubnet: '10.213.0.0/16', hostSubnets: ['192.0.2.0/24'] });

  it.each([
    ['93.184.216.34', true],
    ['203.0.113.10', true],
    ['169.254.169.254', false],
    ['127.0.0.1', false],
    ['10.1.2.3', false],
    ['172.20.0.1', false],
    ['192.168.1.1', false],
    ['100.64.0.1', false],
    ['224.0.0.251', false],
    ['255.255.255.255', false],
    ['192.0.2.1', false],
    ['10.213.0.2', false],
    ['fd00::1', false],
    ['not-an-address', false],
  ])('%s is reachable: %s', (address, reachable) => {
    expect(policy.reaches(address)).toBe(reachable);
  });

  it('lets the operator allow a private range, never the containers of other steps', () => {
    const allowing = new RunNetworkPolicy({ containerSubnet: '10.213.0.0/16', allowCidrs: ['10.0.0.0/8', 'fd00::/8', '127.0.0.0/8'] });
    expect(allowing.reaches('10.1.2.3')).toBe(true);
    expect(allowing.reaches('10.213.4.6')).toBe(false);
    expect(allowing.reaches('169.254.169.254')).toBe(false);
    expect(allowing.reaches('127.0.0.1')).toBe(false);
    expect(allowing.allowed).toEqual(['10.0.0.0/8']);
  });

  it('writes the chain in the order that keeps those promises: other steps, allowances, blocked ranges, egress', () => {
    const rules = new RunNetworkPolicy({ containerSubnet: '10.213.0.0/16', allowCidrs: ['10.9.0.0/16'], hostSubnets: ['192.0.2.0/24'] }).forwardRules('stn');
    const reject = '-j REJECT --reject-with icmp-admin-prohibited';
    expect(rules.slice(0, 3)).toEqual([`-o stn+ ${reject}`, `-d 10.213.0.0/16 ${reject}`, '-d 10.9.0.0/16 -j ACCEPT']);
    expect(rules).toContain(`-d 169.254.0.0/16 ${reject}`);
    expect(rules).toContain(`-d 192.0.2.0/24 ${reject}`);
    expect(rules[rules.length - 1]).toBe('-j ACCEPT');
  });

  it("keeps the host's reachable nameservers in resolv.conf and leaves out the others", () => {
    const host = ['search example.internal', 'nameserver 127.0.0.53', 'nameserver 10.255.255.53', 'nameserver 9.9.9.9', 'nameserver 2620:fe::fe', 'options edns0', ''].join('\n');
    expect(policy.resolvConf(host)).toBe(
      [
        'search example.internal',
        'nameserver 9.9.9.9',
        'options edns0',
        '',
        '# strata: nameservers the RUN network policy does not reach left out: 127.0.0.53 10.255.255.53 2620:fe::fe',
        '',
      ].join('\n'),
    );
    const allowing = new RunNetworkPolicy({ containerSubnet: '10.213.0.0/16', allowCidrs: ['10.255.255.53/32'] });
    expect(allowing.resolvConf('nameserver 10.255.255.53\n')).toBe('nameserver 10.255.255.53\n');
  });
});

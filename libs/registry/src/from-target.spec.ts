import { fromTarget } from './from-target.js';

const settings = { ownHost: 'strata.example:3000', upstreamRegistry: 'registry-1.docker.io' };

describe('fromTarget: where a FROM name leads', () => {
  it('sends a short name to the tenant first, with the upstream registry (library/ for one component) as the fallback', () => {
    expect(fromTarget('busybox:1', settings)).toEqual({
      kind: 'tenant',
      repository: 'busybox',
      reference: '1',
      at: ':1',
      upstream: { host: 'registry-1.docker.io', repository: 'library/busybox' },
    });
    expect(fromTarget('team/app', settings)).toMatchObject({ kind: 'tenant', repository: 'team/app', reference: 'latest', upstream: { repository: 'team/app' } });
  });

  it('has no fallback when the deployment turned the upstream registry off', () => {
    expect(fromTarget('busybox', { ...settings, upstreamRegistry: null })).toMatchObject({ kind: 'tenant', upstream: null });
  });

  it('pulls a name with a host from that host, Docker Hub aliases from registry-1.docker.io', () => {
    expect(fromTarget('127.0.0.1:5000/lib/busybox@sha256:' + 'a'.repeat(64), settings)).toEqual({
      kind: 'pull',
      host: '127.0.0.1:5000',
      repository: 'lib/busybox',
      reference: `sha256:${'a'.repeat(64)}`,
      at: `@sha256:${'a'.repeat(64)}`,
    });
    expect(fromTarget('docker.io/alpine:3', settings)).toMatchObject({ kind: 'pull', host: 'registry-1.docker.io', repository: 'library/alpine' });
  });

  it("resolves Strata's own public host internally, whatever its case", () => {
    expect(fromTarget('STRATA.example:3000/acme/base:2', settings)).toEqual({ kind: 'own-host', host: 'STRATA.example:3000', name: 'acme/base', reference: '2', at: ':2' });
  });

  it('refuses a malformed reference', () => {
    expect(() => fromTarget('Bad Name', settings)).toThrow();
  });
});

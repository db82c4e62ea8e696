import { claimsMatch, mostSpecific, normalizeIssuer, parseTrustPolicy, PolicyInputError } from './trust-policy.js';

const base = { issuer: 'https://token.actions.githubusercontent.com', audience: 'strata', claims: { repository_owner_id: '1234' }, scopes: ['builds:write'] };

describe('trust policy input', () => {
  it('takes https issuers, and http only for an allowed loopback address', () => {
    expect(normalizeIssuer('https://gitlab.com/', [])).toBe('https://gitlab.com');
    expect(normalizeIssuer('https://gitlab.example.com/gitlab', [])).toBe('https://gitlab.example.com/gitlab');
    expect(normalizeIssuer('http://127.0.0.1:8080', ['127.0.0.0/8'])).toBe('http://127.0.0.1:8080');
    expect(() => normalizeIssuer('http://127.0.0.1:8080', [])).toThrow(PolicyInputError);
    expect(() => normalizeIssuer('http://10.0.0.1', ['10.0.0.0/8'])).toThrow(/must be an https URL/);
    expect(() => normalizeIssuer('http://issuer.example.com', ['0.0.0.0/0'])).toThrow(/must be an https URL/);
    expect(() => normalizeIssuer('ftp://issuer.example.com', [])).toThrow(/must be an https URL/);
    expect(() => normalizeIssuer('https://issuer.example.com/?x=1', [])).toThrow(/no query/);
    expect(() => normalizeIssuer('issuer', [])).toThrow(/is not a URL/);
  });

  it('fills in the defaults and refuses what would trust too much or cannot be checked', () => {
    expect(parseTrustPolicy(base, [])).toEqual({ ...base, repositories: [], ttlSeconds: 3600 });
    const bad = (over: Record<string, unknown>) => () => parseTrustPolicy({ ...base, ...over }, []);
    expect(bad({ claims: {} })).toThrow('Field "claims" must hold 1 to 20 claims.');
    expect(bad({ claims: { ref: '*' } })).toThrow(/at least one exact value/);
    expect(bad({ claims: { ref: 'refs/*/x', repository: 'a/b' } })).toThrow('Claim "ref": "*" may only end a value (a prefix, like "refs/heads/*").');
    expect(bad({ claims: { aud: 'x' } })).toThrow('Claim "aud" is checked by the exchange itself; it cannot be a condition.');
    expect(bad({ claims: { project_id: 99 } })).toThrow('Claim "project_id" must be a non-empty string of at most 500 characters.');
    expect(bad({ scopes: [] })).toThrow(/Field "scopes" must be a non-empty list/);
    expect(bad({ repositories: ['Team A'] })).toThrow(/Invalid repository pattern "Team A"/);
    expect(bad({ ttlSeconds: 30 })).toThrow('Field "ttlSeconds" must be a whole number from 60 to 43200.');
    expect(bad({ extra: 1 })).toThrow(/Unknown field "extra"/);
  });
});

describe('claim matching', () => {
  const github = { repository: 'acme/app', repository_owner_id: '1234', ref: 'refs/heads/main', run_attempt: 2, private: true, groups: ['a'] };

  it('matches every condition exactly, or by the prefix before a final "*"', () => {
    expect(claimsMatch({ repository: 'acme/app', ref: 'refs/heads/*' }, github)).toBe(true);
    expect(claimsMatch({ repository: 'acme/app', ref: 'refs/tags/*' }, github)).toBe(false);
    expect(claimsMatch({ repository: 'acme/ap' }, github)).toBe(false);
    expect(claimsMatch({ repository: 'acme/app', environment: 'prod' }, github)).toBe(false);
    expect(claimsMatch({ ref: 'refs/heads/main*' }, github)).toBe(true);
  });

  it('compares numbers and booleans as their text, never objects or lists', () => {
    expect(claimsMatch({ run_attempt: '2', private: 'true' }, github)).toBe(true);
    expect(claimsMatch({ groups: 'a' }, github)).toBe(false);
  });

  it('prefers the policy with the most conditions, then the oldest', () => {
    const a = { id: 'a', claims: { x: '1' }, createdAt: new Date(1) };
    const b = { id: 'b', claims: { x: '1', y: '2' }, createdAt: new Date(2) };
    const c = { id: 'c', claims: { x: '1', z: '3' }, createdAt: new Date(3) };
    expect(mostSpecific([a, c, b])?.id).toBe('b');
    expect(mostSpecific([])).toBeUndefined();
  });
});

import { gitAuthorization, pickRef } from './git-add-source.js';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const C = 'c'.repeat(40);

describe('ADD git sources on the worker', () => {
  it('picks the Authorization header as BuildKit does: per host first, a header secret before a token, tokens as x-access-token', () => {
    const s = (o: Record<string, string>) => new Map(Object.entries(o).map(([k, v]) => [k, Buffer.from(v)]));
    const basic = (t: string) => `Basic ${Buffer.from(`x-access-token:${t}`).toString('base64')}`;
    expect(gitAuthorization('https://git.example.test/o/r.git', s({ GIT_AUTH_TOKEN: 'all', 'GIT_AUTH_TOKEN.git.example.test': 'host' }))).toBe(basic('host'));
    expect(gitAuthorization('https://git.example.test:8443/o/r.git', s({ 'GIT_AUTH_TOKEN.git.example.test': 'host' }))).toBe(basic('host'));
    expect(gitAuthorization('https://git.example.test/o/r.git', s({ GIT_AUTH_TOKEN: 'all', GIT_AUTH_HEADER: 'Bearer xyz' }))).toBe('Bearer xyz');
    expect(gitAuthorization('https://git.example.test/o/r.git', s({ 'GIT_AUTH_TOKEN.other.test': 'no' }))).toBeNull();
    expect(gitAuthorization('git@git.example.test:o/r.git', s({ GIT_AUTH_TOKEN: 'all' }))).toBeNull();
    expect(() => gitAuthorization('https://git.example.test/o/r.git', s({ GIT_AUTH_HEADER: 'Bearer a\nX-Other: b' }))).toThrow('the secret GIT_AUTH_HEADER holds a line break; send one line');
  });

  it('resolves a ref from ls-remote as BuildKit: a branch before a tag, an annotated tag to its commit, refs/… exactly', () => {
    const out = [`${A}\trefs/heads/v1`, `${B}\trefs/tags/v1`, `${C}\trefs/tags/v1^{}`, `${A}\trefs/heads/main`, `${B}\trefs/tags/light`, `${C}\trefs/pull/1/head`].join('\n');
    expect(pickRef('v1', out)).toEqual({ commit: A, tagObject: null, fullRef: 'refs/heads/v1' });
    expect(pickRef('refs/tags/v1', out)).toEqual({ commit: C, tagObject: B, fullRef: 'refs/tags/v1' });
    expect(pickRef('light', out)).toEqual({ commit: B, tagObject: null, fullRef: 'refs/tags/light' });
    expect(pickRef('refs/pull/1/head', out)).toEqual({ commit: C, tagObject: null, fullRef: 'refs/pull/1/head' });
    expect(pickRef('nope', out)).toBeNull();
  });
});

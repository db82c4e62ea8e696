import { parseImageReference, repositoryNameProblem, tagNameProblem } from './reference.js';

describe('image names', () => {
  it.each(['app', 'team/app', 'a.b_c__d-e/f--g', 'x/y/z'])('accepts repository %s', (n) => {
    expect(repositoryNameProblem(n)).toBeNull();
  });
  it.each(['App', '-app', 'app-', 'a//b', '/a', 'a/', 'a..b', ''])('refuses repository %p', (n) => {
    expect(repositoryNameProblem(n)).toEqual(expect.any(String));
  });
  it('accepts tags up to 128 characters and refuses a leading dot or dash', () => {
    expect(tagNameProblem('v1.2.3_rc-1')).toBeNull();
    expect(tagNameProblem('a'.repeat(128))).toBeNull();
    expect(tagNameProblem('a'.repeat(129))).toMatch(/not a valid tag/);
    expect(tagNameProblem('.x')).toMatch(/not a valid tag/);
    expect(tagNameProblem('-x')).toMatch(/not a valid tag/);
  });
});

describe('parseImageReference', () => {
  it('reads a short name with a tag', () => {
    expect(parseImageReference('busybox:1.36')).toEqual({ registry: null, repository: 'busybox', tag: '1.36', digest: null });
  });
  it('reads a registry host with a port, a path and a digest', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parseImageReference(`127.0.0.1:5000/team/app@${d}`)).toEqual({ registry: '127.0.0.1:5000', repository: 'team/app', tag: null, digest: d });
  });
  it('treats a first component without a dot, colon or localhost as part of the repository', () => {
    expect(parseImageReference('team/app')).toEqual({ registry: null, repository: 'team/app', tag: null, digest: null });
    expect(parseImageReference('localhost/app:1').registry).toBe('localhost');
  });
  it('names what is wrong with a bad reference', () => {
    expect(() => parseImageReference('Team/App')).toThrow('"Team/App" is not a valid image reference');
  });
});

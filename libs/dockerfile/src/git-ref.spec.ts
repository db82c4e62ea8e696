import { classifyAddSource, parseGitSource } from './index.js';

const base = { kind: 'git', ref: null, subdir: null, checksum: null, keepGitDir: null, submodules: null, mtime: null, problem: null };

describe('git sources of ADD, recognised as BuildKit recognises them', () => {
  it.each<[string, Record<string, unknown>]>([
    ['https://example.test/o/r.git', { remote: 'https://example.test/o/r.git' }],
    ['https://example.test/o/r.git#v1.2.3', { remote: 'https://example.test/o/r.git', ref: 'v1.2.3' }],
    ['https://example.test/o/r.git#main:docs/api', { ref: 'main', subdir: 'docs/api' }],
    ['https://example.test/o/r.git#:docs', { ref: null, subdir: 'docs' }],
    ['http://127.0.0.1:8080/r.git#' + 'a'.repeat(40), { remote: 'http://127.0.0.1:8080/r.git', ref: 'a'.repeat(40) }],
    ['git@github.com:moby/buildkit.git#v0.14.1:docs', { remote: 'git@github.com:moby/buildkit.git', ref: 'v0.14.1', subdir: 'docs' }],
    ['deploy@git.example.test:/srv/repos/p.git', { remote: 'deploy@git.example.test:/srv/repos/p.git' }],
    ['ssh://git@example.test:2222/o/r.git#main', { remote: 'ssh://git@example.test:2222/o/r.git', ref: 'main' }],
    ['git://example.test/r.git', { remote: 'git://example.test/r.git' }],
    ['https://example.test/r.git##ref=v1,subdir=/sub', { ref: 'v1', subdir: '/sub' }],
    ['https://example.test/r.git##"ref=a,b",commit=abc', { ref: 'a,b', checksum: 'abc' }],
    ['https://example.test/r.git##commit=' + 'b'.repeat(40), { ref: 'b'.repeat(40), checksum: 'b'.repeat(40) }],
    ['https://example.test/r.git?ref=base', { remote: 'https://example.test/r.git', ref: 'base' }],
    ['https://example.test/r.git?branch=base', { ref: 'refs/heads/base' }],
    ['https://example.test/r.git?tag=v1&subdir=sub&keep-git-dir&submodules=false&mtime=checkout', { ref: 'refs/tags/v1', subdir: 'sub', keepGitDir: true, submodules: false, mtime: 'checkout' }],
    ['https://example.test/r.git?tag=v1#refs/tags/v1', { ref: 'refs/tags/v1' }],
    ['https://example.test/r.git?commit=abcdef', { ref: 'abcdef', checksum: 'abcdef' }],
    ['git@example.test:o/r.git?ref=main#main:sub', { remote: 'git@example.test:o/r.git', ref: 'main', subdir: 'sub' }],
  ])('%s', (src, want) => {
    expect(parseGitSource(src)).toEqual({ ...base, url: src, remote: expect.any(String), ...want });
  });

  it.each<[string, string]>([
    ['https://example.test/r.git?tag=v1#refs/heads/master', 'ref conflicts: "refs/heads/master" vs "refs/tags/v1"'],
    ['https://example.test/r.git?tag=v1&branch=v1', 'branch conflicts with tag'],
    ['https://example.test/r.git?ref=a&ref=b', 'query "ref" has multiple values'],
    ['https://example.test/r.git?ref=', 'query "ref" has no value'],
    ['https://example.test/r.git?keep-git-dir=maybe', 'invalid keep-git-dir value: "maybe"'],
    ['https://example.test/r.git?mtime=now', 'invalid mtime value: "now" (must be "checkout" or "commit")'],
    ['https://example.test/r.git?depth=1', 'unexpected query "depth" (supported: ref, tag, branch, subdir, commit, checksum, keep-git-dir, submodules, mtime)'],
    ['https://example.test/r.git##ref', 'invalid field "ref" in the URL fragment: it must be a key=value pair'],
  ])('%s is a git source BuildKit rejects: %s', (src, problem) => {
    expect(parseGitSource(src)?.problem).toBe(problem);
  });

  it.each(['https://example.test/tool.tar.gz', 'https://example.test/r.git/file', 'http://example.test/', 'ftp://example.test/r.git', 'file:///r.git', './x@y:z', 'src', 'github.com/o/r', 'a b@c:d'])(
    '%s is not a git source',
    (src) => {
      expect(parseGitSource(src)).toBeNull();
    },
  );

  it('classifies ADD sources as git, URL or context path', () => {
    expect(classifyAddSource('https://example.test/r.git#v1').kind).toBe('git');
    expect(classifyAddSource('https://example.test/r.tar').kind).toBe('url');
    expect(classifyAddSource('user@host:path').kind).toBe('git');
    expect(classifyAddSource('dir/file').kind).toBe('local');
  });
});

import { cleanRelative, IgnoreMatcher, matchComponent } from './ignore.js';

describe('.dockerignore', () => {
  const m = IgnoreMatcher.fromText(['# comment', '', 'node_modules', '*.log', '!keep.log', 'docs/**/*.md', '/secret/', 'tmp?', '[ab].txt'].join('\n'));

  it.each([
    ['node_modules', true],
    ['node_modules/x/index.js', true],
    ['app.log', true],
    ['sub/app.log', false],
    ['keep.log', false],
    ['docs/a/b/c.md', true],
    ['docs/c.md', true],
    ['docs/c.txt', false],
    ['secret/key', true],
    ['tmp1', true],
    ['tmp12', false],
    ['a.txt', true],
    ['c.txt', false],
    ['src/index.ts', false],
  ])('%s excluded: %s', (path, expected) => {
    expect(m.ignores(path)).toBe(expected);
  });

  it('lets a later exception re-include a file below an excluded directory', () => {
    const x = IgnoreMatcher.fromText('build\n!build/keep.txt');
    expect(x.ignores('build/other')).toBe(true);
    expect(x.ignores('build/keep.txt')).toBe(false);
    expect(x.mayIncludeBelow('build')).toBe(true);
  });
});

describe('path helpers', () => {
  it('cleans paths into the context root', () => {
    expect(cleanRelative('./a//b/../c/')).toBe('a/c');
    expect(cleanRelative('../../etc/passwd')).toBe('etc/passwd');
    expect(cleanRelative('/')).toBe('');
  });
  it('matches one component like Go filepath.Match', () => {
    expect(matchComponent('*.ts', 'a.ts')).toBe(true);
    expect(matchComponent('*.ts', 'a.tsx')).toBe(false);
    expect(matchComponent('[!a]*', 'b1')).toBe(true);
    expect(matchComponent('\\*', '*')).toBe(true);
  });
});

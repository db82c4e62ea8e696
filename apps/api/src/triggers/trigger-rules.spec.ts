import type { Push } from '../hooks/push-event.js';
import { RefPattern, RefPatternError } from './ref-pattern.js';
import { renderTag, tagTemplateProblem } from './tag-template.js';
import { decidePush } from './trigger-rules.js';

const sha = '0123456789abcdef0123456789abcdef01234567';
const push = (over: Partial<Push> = {}): Push => ({
  ref: 'refs/heads/main',
  sha,
  deleted: false,
  forced: false,
  message: 'change',
  author: 'Ada',
  files: ['src/a.ts'],
  forgeRepository: 'acme/app',
  ...over,
});

describe('RefPattern', () => {
  it('matches the whole ref and gives capture groups like a regular expression would', () => {
    const p = RefPattern.compile('refs/tags/v(\\d+)\\.(\\d+)\\.(\\d+)(-rc\\d+)?');
    expect(p.match('refs/tags/v1.22.3')?.slice(0, 5)).toEqual(['refs/tags/v1.22.3', '1', '22', '3', '']);
    expect(p.match('refs/tags/v1.22.3-rc2')?.[4]).toBe('-rc2');
    expect(p.match('refs/tags/v1.22.3x')).toBeNull();
    expect(p.match('xrefs/tags/v1.2.3')).toBeNull();
    expect(RefPattern.compile('^refs/heads/(main|release/[^/]+)$').match('refs/heads/release/2026')?.[1]).toBe('release/2026');
    expect(RefPattern.compile('refs/heads/(.*?)(-wip)?').match('refs/heads/feat-wip')?.slice(1, 3)).toEqual(['feat', '-wip']);
    expect(RefPattern.compile('refs/heads/(.*)(-wip)?').match('refs/heads/feat-wip')?.slice(1, 3)).toEqual(['feat-wip', '']);
    expect(RefPattern.compile('refs/heads/[a-z]{2,3}').match('refs/heads/abcd')).toBeNull();
    expect(RefPattern.compile('refs/heads/[^x]+').match('refs/heads/abc')).not.toBeNull();
  });

  it('takes linear time on patterns that hang a backtracking engine', () => {
    // JavaScript's RegExp needs minutes for these on a 40-character ref; the Pike VM is linear.
    const hostile = 'refs/heads/' + 'a'.repeat(1000) + '!';
    expect(RefPattern.compile('refs/heads/(a+)+').match(hostile)).toBeNull();
    expect(RefPattern.compile('refs/heads/(a|a)*').match(hostile)).toBeNull();
    expect(RefPattern.compile('refs/heads/(a*)*b').match(hostile)).toBeNull();
    expect(RefPattern.compile('refs/heads/(a+)+').match('refs/heads/' + 'a'.repeat(1000))?.[1]).toBe('a'.repeat(1000));
  });

  it('refuses what needs backtracking, and patterns that are too long or too large', () => {
    expect(() => RefPattern.compile('(a)\\1')).toThrow('backreferences are not supported');
    expect(() => RefPattern.compile('(?=a)a')).toThrow('lookarounds and named groups are not supported');
    expect(() => RefPattern.compile('a'.repeat(257))).toThrow('ref pattern is 257 characters long, over the limit of 256');
    expect(() => RefPattern.compile('((a{100}){100}){100}')).toThrow(RefPatternError);
    expect(() => RefPattern.compile('(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)')).toThrow('has 10 capture groups');
    expect(() => RefPattern.compile('*a')).toThrow('"*" with nothing to repeat');
  });
});

describe('tag templates', () => {
  it('fills placeholders and makes branch names tag-safe', () => {
    expect(renderTag('{branch}-{short_sha}', { branch: 'feature/x', tag: '', sha, groups: [] })).toEqual({ tag: 'feature-x-0123456' });
    expect(renderTag('{1}.{2}', { branch: '', tag: 'v1.2.3', sha, groups: ['v1.2.3', '1', '2'] })).toEqual({ tag: '1.2' });
    expect(renderTag('{tag}', { branch: 'main', tag: '', sha, groups: [] })).toEqual({ problem: expect.stringContaining('tag template "{tag}" gives "", not a tag') });
    expect(tagTemplateProblem('{branch}-{nope}')).toBe('tag template "{branch}-{nope}" uses {nope}; use {branch}, {tag}, {sha}, {short_sha} or {1} to {9}');
    expect(tagTemplateProblem('a b')).toContain('is not a valid tag');
    expect(tagTemplateProblem('v{1}')).toBeNull();
  });
});

describe('decidePush', () => {
  const rules = [{ ref: 'refs/heads/main', tags: ['latest', '{short_sha}'] }];
  it('builds a matching push with its tags', () => {
    expect(decidePush(rules, null, push())).toEqual({ outcome: 'build', tags: ['latest', '0123456'] });
  });
  it('skips deleted refs, unmatched refs, [ci skip] and pushes the path filters leave nothing of', () => {
    expect(decidePush(rules, null, push({ deleted: true, sha: null }))).toEqual({ outcome: 'skipped', reason: 'refs/heads/main was deleted; nothing to build' });
    expect(decidePush(rules, null, push({ ref: 'refs/heads/dev' }))).toEqual({ outcome: 'skipped', reason: 'no rule matches refs/heads/dev' });
    expect(decidePush(rules, null, push({ message: 'Fix [CI SKIP]' }))).toEqual({ outcome: 'skipped', reason: "the head commit's message says [CI SKIP]" });
    const paths = { include: ['src'], exclude: ['src/**/*.md'] };
    expect(decidePush(rules, paths, push({ files: ['src/docs/x.md', 'README.md'] })).outcome).toBe('skipped');
    expect(decidePush(rules, paths, push({ files: ['src/docs/x.md', 'src/lib/y.ts'] })).outcome).toBe('build');
    expect(decidePush(rules, { exclude: ['docs/**'] }, push({ files: ['docs/a.md'] })).outcome).toBe('skipped');
    // A tag is a release: path filters do not apply.
    expect(decidePush([{ ref: 'refs/tags/.*', tags: ['{tag}'] }], paths, push({ ref: 'refs/tags/v1', files: [] }))).toEqual({ outcome: 'build', tags: ['v1'] });
  });
});

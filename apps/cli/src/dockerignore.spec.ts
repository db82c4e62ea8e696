import { IgnoreMatcher } from '@strata/build-engine';
import { DockerIgnore } from './dockerignore.js';

// The CLI repeats the worker's matcher (it imports no lib): both must answer alike.
const FILES = [
  '*.log\nnode_modules\n',
  '**/*.tmp\n!keep/**\n',
  'docs/[a-c]*.md\n!docs/b.md\n',
  '/build/\n# comment\n\n  dist  \n',
  'a/**/b\n',
  'x?z\n\\*literal\n',
  '*\n!src\n!Dockerfile\n',
];
const PATHS = ['app.log', 'sub/app.log', 'node_modules/x/y.js', 'a.tmp', 'keep/a.tmp', 'docs/a.md', 'docs/b.md', 'docs/d.md', 'build/out', 'dist/x', 'a/b', 'a/x/y/b', 'a/b/c', 'xyz', 'x/z', '*literal', 'src/main.ts', 'Dockerfile', 'README'];

describe('the CLI .dockerignore matcher', () => {
  it.each(FILES)('answers as the worker does for %j', (text) => {
    const ours = DockerIgnore.parse(text);
    const workers = IgnoreMatcher.fromText(text);
    for (const p of PATHS) expect({ p, ignored: ours.ignores(p) }).toEqual({ p, ignored: workers.ignores(p) });
  });

  it('ignores nothing when the file does not parse (the worker reports it)', () => {
    expect(DockerIgnore.parse('[abc\n*').ignores('x')).toBe(false);
  });
});

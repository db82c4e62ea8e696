import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkDockerfile } from './index.js';

// Dockerfiles in the style of real projects, kept in this lib (fixtures/README.md says what they are).
const fixtureDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dockerfiles');

interface Expected {
  globalArgs: string[];
  stages: Array<{ name: string | null; from: string; instructions: string[] }>;
  neededForDefaultTarget: Array<string | number>;
}

const expected = JSON.parse(readFileSync(path.join(fixtureDir, 'expected.json'), 'utf8')) as { files: Record<string, Expected> };

describe('Dockerfile fixtures', () => {
  it('has an expectation for every fixture file', () => {
    const files = readdirSync(fixtureDir).filter((f) => f.endsWith('.Dockerfile')).sort();
    expect(Object.keys(expected.files).sort()).toEqual(files);
  });

  it.each(Object.entries(expected.files))('%s parses to what expected.json says', (file, want) => {
    const result = checkDockerfile(readFileSync(path.join(fixtureDir, file), 'utf8'));
    // The fixtures are BuildKit-valid; Strata refuses, at check time and by design, what it does not build yet.
    expect(result.errors.filter((e) => !/\bnot supported by Strata yet\b/.test(e.message))).toEqual([]);
    expect(result.globalArgs).toEqual(want.globalArgs);
    expect(result.stages.map((s) => ({ name: s.name, from: s.from, instructions: s.instructions.map((i) => i.keyword) }))).toEqual(want.stages);
    // expected.json names needed stages by name, or by index when unnamed.
    const needed = want.neededForDefaultTarget.map((ref) => (typeof ref === 'number' ? ref : result.stages.findIndex((s) => s.name === ref)));
    expect(result.neededStages).toEqual([...needed].sort((a, b) => a - b));
  });
});

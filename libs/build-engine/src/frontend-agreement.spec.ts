// Property: for generated Dockerfiles, what /v1/dockerfile/check answers (checkDockerfile) and what
// the engine runs agree on the stages, the stages the target needs, and the ARG/ENV values each
// step sees. The engine runs on in-memory fakes.

import fc from 'fast-check';
import { checkDockerfile, type CheckResult } from '@strata/dockerfile';
import type { BuildEvent, RunRequest } from './interfaces.js';
import type { IndexedContext } from './context.js';
import { fakeDeps, memoryContext } from './fakes.test.js';
import { BuildEngine } from './solver.js';

const NAMES = ['A', 'B', 'C'];
const name = fc.constantFrom(...NAMES);
// Values that read other variables in the forms a Dockerfile uses.
const value = fc.constantFrom('v1', 'x$A', '${B:-dflt}', '${A}_${C}', '"q $B"', '${C:+set}', "'$A'", 'p${A:-${B}}');

type Ins =
  | { k: 'ARG'; name: string; def: string | null }
  | { k: 'ENV'; pairs: Array<[string, string]> }
  | { k: 'RUN' }
  | { k: 'COPY_FROM'; from: number };

const instruction: fc.Arbitrary<Ins> = fc.oneof(
  fc.record({ k: fc.constant('ARG' as const), name, def: fc.option(value, { nil: null }) }),
  fc.record({ k: fc.constant('ENV' as const), pairs: fc.array(fc.tuple(name, value), { minLength: 1, maxLength: 3 }) }),
  fc.constant({ k: 'RUN' as const }),
  fc.record({ k: fc.constant('COPY_FROM' as const), from: fc.nat(3) }),
);

const stage = fc.record({
  /** Base: -1 for scratch, otherwise a stage name number (resolved to an earlier stage of that name, if any). */
  base: fc.integer({ min: -1, max: 3 }),
  /** Stage names repeat on purpose: the later stage of a name wins. */
  name: fc.nat(3),
  instructions: fc.array(instruction, { maxLength: 5 }),
});

const dockerfileCase = fc.record({
  globals: fc.array(fc.record({ name, def: fc.option(value, { nil: null }) }), { maxLength: 3 }),
  stages: fc.array(stage, { minLength: 1, maxLength: 4 }),
  buildArgs: fc.dictionary(name, fc.constantFrom('b1', 'b 2', '$A')),
  /** Index of the stage whose name is the target. */
  target: fc.option(fc.nat(3), { nil: undefined }),
});

type Case = typeof dockerfileCase extends fc.Arbitrary<infer T> ? T : never;

function render(c: Case): string {
  const lines: string[] = [];
  for (const g of c.globals) lines.push(g.def === null ? `ARG ${g.name}` : `ARG ${g.name}=${g.def}`);
  c.stages.forEach((s, i) => {
    // A base naming no earlier stage falls back to scratch, so every stage can be built here.
    const earlier = c.stages.slice(0, i).some((e) => e.name === s.base);
    lines.push(`FROM ${s.base >= 0 && earlier ? `s${s.base}` : 'scratch'} AS s${s.name}`);
    lines.push('COPY a.txt /a.txt');
    for (const ins of s.instructions) {
      if (ins.k === 'ARG') lines.push(ins.def === null ? `ARG ${ins.name}` : `ARG ${ins.name}=${ins.def}`);
      else if (ins.k === 'ENV') lines.push(`ENV ${ins.pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      else if (ins.k === 'RUN') lines.push('RUN probe');
      else {
        // Copy from an earlier stage's name; a later stage of that name wins (the plan orders them).
        const names = [...new Set(c.stages.slice(0, i).map((st) => st.name))].filter((n) => n !== s.name);
        if (names.length === 0) continue;
        const from = names[ins.from % names.length];
        lines.push(`COPY --from=s${from} /a.txt /from-${from}.txt`);
      }
    }
    lines.push('RUN probe');
  });
  return `${lines.join('\n')}\n`;
}

/** The check's instruction at a line of the Dockerfile (lines are unique across stages). */
function checkedAt(check: CheckResult, line: number) {
  for (const s of check.stages) for (const i of s.instructions) if (i.line === line) return i;
  throw new Error(`the check lists no instruction at line ${line}`);
}

describe('checkDockerfile and the engine agree', () => {
  let context: IndexedContext;
  beforeAll(async () => {
    context = await memoryContext({ 'a.txt': 'a\n' });
  });

  it('on stages, needed stages and the ARG/ENV values each RUN sees', async () => {
    let built = 0;
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(dockerfileCase, async (c) => {
        const dockerfile = render(c);
        const target = c.target === undefined ? undefined : `s${c.stages[c.target % c.stages.length].name}`;
        const check = checkDockerfile(dockerfile, { buildArgs: c.buildArgs, target });
        const events: BuildEvent[] = [];
        const deps = fakeDeps({ onEvent: (e) => events.push(e) });
        const build = new BuildEngine(deps).build({ dockerfile, dockerfilePath: 'Dockerfile', context, buildArgs: c.buildArgs, target, noCache: true });
        if (check.errors.length > 0) {
          // A file the check refuses is refused by the build, with the check's first error.
          await expect(build).rejects.toThrow(check.errors[0].message);
          refused++;
          return;
        }
        await build;
        built++;
        const stagesRun = [...new Set(events.filter((e) => e.type === 'step-done').map((e) => e.stage))].sort((a, b) => a - b);
        expect(stagesRun).toEqual(check.neededStages);
        for (const e of events) {
          if (e.type === 'step-done') expect(e.stageName).toBe(check.stages[e.stage].name);
        }
        const runs: RunRequest[] = deps.executor.runs;
        expect(runs.length).toBeGreaterThan(0);
        for (const run of runs) {
          const checked = checkedAt(check, run.line);
          expect(checked.keyword).toBe('RUN');
          expect([...run.env].sort()).toEqual([...checked.env!].sort());
        }
      }),
      { numRuns: 100 },
    );
    // Most generated files build (a few have a dependency cycle): the property is about builds.
    expect(built).toBeGreaterThan(refused * 3);
  });
});

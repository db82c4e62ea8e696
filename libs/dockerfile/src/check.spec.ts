import { analyzeDockerfile, checkDockerfile } from './index.js';

describe('checkDockerfile', () => {
  it('lists the variables each step of a needed stage sees, as a build evaluates them', () => {
    const r = checkDockerfile('ARG G=g\nFROM scratch AS unused\nRUN no\nFROM scratch AS a\nARG G\nARG X=$G-x\nENV A=1 B=$A\nENV A=2 B=$A\nRUN true\nFROM a\nRUN next', { buildArgs: { G: 'built' } });
    expect(r.errors).toEqual([]);
    const [unused, a, b] = r.stages;
    const path = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
    expect(a.instructions.map((i) => i.env)).toEqual([
      [path], [path, 'G=built'], [path, 'G=built', 'X=built-x'], [path, 'G=built', 'X=built-x', 'A=1', 'B='], [path, 'G=built', 'X=built-x', 'A=2', 'B=1'],
    ]);
    expect(b.instructions[0].env).toEqual([path, 'G=built', 'X=built-x', 'A=2', 'B=1']);
    expect(unused.instructions[0].env).toBeUndefined();
    expect(r.neededStages).toEqual([1, 2]);
  });

  it('gives the build its plan only when there is nothing to refuse', () => {
    expect(analyzeDockerfile('FROM scratch\nRUN true').plan?.target).toBe(0);
    const refused = analyzeDockerfile('FROM scratch\nRUN --network=host true');
    expect(refused.plan).toBeNull();
    expect(refused.result.errors).toHaveLength(1);
  });

  it('reports expansion errors of a needed stage at their line', () => {
    expect(checkDockerfile('FROM scratch\nWORKDIR ${DIR:?set DIR}').errors).toEqual([expect.objectContaining({ line: 2, message: expect.stringContaining('DIR: set DIR') })]);
  });
});

import { ChmodError, parseChmod } from './file-mode.js';

describe('--chmod modes, octal and symbolic (chmod(1) as BuildKit applies it to each entry)', () => {
  const cases: Array<[string, number, boolean, number]> = [
    ['755', 0o600, false, 0o755],
    ['0644', 0o777, true, 0o644],
    ['u+x', 0o644, false, 0o744],
    ['go-w', 0o777, false, 0o755],
    ['a=r,u+w', 0o755, true, 0o644],
    ['+x', 0o600, false, 0o711],
    ['=rw', 0o777, false, 0o666],
    ['+X', 0o644, false, 0o644],
    ['+X', 0o640, true, 0o751],
    ['+X', 0o744, false, 0o755],
    ['g=u', 0o640, false, 0o660],
    ['o=g', 0o750, false, 0o755],
    ['u+s,g+s', 0o755, false, 0o6755],
    ['+t', 0o777, true, 0o1777],
    ['u=rwx,g=rx,o=', 0o000, false, 0o750],
    ['ug+rw-x', 0o711, false, 0o661],
  ];
  it.each(cases)('%s on %o (directory: %s) gives %o', (spec, from, dir, want) => {
    expect(parseChmod(spec)(from, dir).toString(8)).toBe(want.toString(8));
  });

  it.each(['u+q', 'x+r', '8755', '', 'u', 'u+r,', 'rwx'])('refuses %j with a sentence naming it', (spec) => {
    expect(() => parseChmod(spec)).toThrow(ChmodError);
    expect(() => parseChmod(spec)).toThrow(`--chmod="${spec}" is neither an octal mode like 755 nor a symbolic one like u+x,go-w`);
  });
});

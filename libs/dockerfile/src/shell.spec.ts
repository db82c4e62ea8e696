import { DockerfileError, expand, expandWord, expandWords } from './index.js';

const env = new Map([
  ['HOME', '/root'],
  ['EMPTY', ''],
  ['FILE', 'archive.tar.gz'],
  ['SPACED', 'a  b c'],
  ['PATHS', '/usr/local/bin:/usr/bin'],
]);

describe('expandWord (BuildKit ProcessWord)', () => {
  it.each([
    ['$HOME', '/root'],
    ['${HOME}/x', '/root/x'],
    ['$UNSET-x', '-x'],
    ['${UNSET:-fallback}', 'fallback'],
    ['${EMPTY:-fallback}', 'fallback'],
    ['${EMPTY-fallback}', ''],
    ['${UNSET-fallback}', 'fallback'],
    ['${HOME:+set}', 'set'],
    ['${EMPTY:+set}', ''],
    ['${EMPTY+set}', 'set'],
    ['${UNSET+set}', ''],
    ['${HOME:?must be set}', '/root'],
    ['${FILE#*.}', 'tar.gz'],
    ['${FILE##*.}', 'gz'],
    ['${FILE%.*}', 'archive.tar'],
    ['${FILE%%.*}', 'archive'],
    ['${FILE/tar/zip}', 'archive.zip.gz'],
    ['${PATHS//usr/opt}', '/opt/local/bin:/opt/bin'],
    ['${FILE/a?c/X}', 'Xhive.tar.gz'],
    ['${FILE#\\*}', 'archive.tar.gz'],
    ['${UNSET:-${HOME:-x}}', '/root'],
    ['\\$HOME', '$HOME'],
    ["'$HOME'", '$HOME'],
    ['"$HOME"', '/root'],
    ['"a\\"b"', 'a"b'],
    ['"a\\xb"', 'a\\xb'],
    ['a\\ b', 'a b'],
    ['$1x', 'x'],
    ['$.', '$.'],
    ['trailing\\', 'trailing'],
  ])('%s → %s', (word, want) => {
    expect(expandWord(word, env)).toBe(want);
  });

  it('uses the backtick as escape token when the Dockerfile says so', () => {
    expect(expandWord('C:\\dir `$HOME', env, { escapeToken: '`' })).toBe('C:\\dir $HOME');
  });

  it('accepts a record or a function as lookup', () => {
    expect(expandWord('$A$B', { A: '1', B: '2' })).toBe('12');
    expect(expandWord('$A', (n) => (n === 'A' ? 'x' : undefined))).toBe('x');
  });

  it('reports the variables it used and missed', () => {
    const r = expand('$HOME ${NOPE:-x}', env);
    expect([...r.matched]).toEqual(['HOME']);
    expect([...r.unmatched]).toEqual(['NOPE']);
  });

  it.each([
    ['${UNSET:?is required}', 'UNSET: is required'],
    ['${EMPTY:?}', 'EMPTY: is not allowed to be empty'],
    ['${UNSET?}', 'UNSET: is not allowed to be unset'],
    ['${HOME', "missing '}'"],
    ['${}', 'bad substitution'],
    ['${HOME:=x}', 'unsupported modifier'],
    ['${HOME:#x}', 'unsupported modifier'],
    ['"open', 'double-quote'],
    ["'open", 'single-quote'],
    ['${FILE#\\x}', 'invalid escape'],
  ])('%s fails with a DockerfileError mentioning %s', (word, part) => {
    let err: unknown;
    try {
      expandWord(word, env, { position: { line: 4, column: 2 } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DockerfileError);
    const d = (err as DockerfileError).diagnostics[0];
    expect(d).toMatchObject({ line: 4, column: 2, severity: 'error' });
    expect(d.message).toContain(part);
  });
});

describe('expandWords (BuildKit ProcessWords)', () => {
  it.each([
    ['a b  c', ['a', 'b', 'c']],
    ['x${SPACED}y', ['xa', 'b', 'cy']],
    ['x"${SPACED}"y', ['xa  b cy']],
    ['"a b" c', ['a b', 'c']],
    ['a\\ b', ['a b']],
    ['${UNSET}', []],
  ])('%s → %j', (word, want) => {
    expect(expandWords(word, env)).toEqual(want);
  });
});

describe('patterns stay fast on hostile input', () => {
  it('expands many stars against a long value in linear-ish time', () => {
    const value = 'a'.repeat(20000);
    const started = Date.now();
    expect(expandWord('${V/*a*a*a*a*a*a*b/x}', { V: value })).toBe(value);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

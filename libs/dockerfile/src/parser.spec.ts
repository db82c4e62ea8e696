import {
  DockerfileError, parseDockerfile, parseOnbuildTrigger, runScript,
  type CopyInstruction, type Diagnostic, type Dockerfile, type StageInstruction,
} from './index.js';

function only(text: string): StageInstruction {
  const df = parseDockerfile(`FROM busybox\n${text}`);
  expect(df.stages[0].instructions).toHaveLength(1);
  return df.stages[0].instructions[0];
}

function errorsOf(text: string): Diagnostic[] {
  try {
    parseDockerfile(text);
  } catch (e) {
    if (e instanceof DockerfileError) return e.diagnostics;
    throw e;
  }
  throw new Error('expected a DockerfileError');
}

function rules(df: Dockerfile): string[] {
  return df.warnings.map((w) => w.rule ?? '');
}

describe('directives, comments and continuations', () => {
  it('reads syntax, escape and check directives at the top only', () => {
    const df = parseDockerfile('# syntax=docker/dockerfile:1\n# escape=`\n# check=skip=JSONArgsRecommended;error=false\nFROM busybox\n# escape=\\\nCMD echo hi');
    expect(df.directives.map((d) => [d.name, d.value])).toEqual([['syntax', 'docker/dockerfile:1'], ['escape', '`'], ['check', 'skip=JSONArgsRecommended;error=false']]);
    expect(df.escapeToken).toBe('`');
    expect(df.check).toEqual({ skip: ['JSONArgsRecommended'], error: false });
    expect(rules(df)).not.toContain('JSONArgsRecommended');
  });

  it('stops looking for directives after a blank line or a plain comment', () => {
    expect(parseDockerfile('\n# escape=`\nFROM busybox').escapeToken).toBe('\\');
    expect(parseDockerfile('# hello\n# escape=`\nFROM busybox').escapeToken).toBe('\\');
    expect(parseDockerfile('# unknown=1\n# escape=`\nFROM busybox').escapeToken).toBe('\\');
  });

  it('rejects a repeated directive and an invalid escape token with their line', () => {
    expect(errorsOf('# escape=`\n# escape=\\\nFROM x')[0]).toMatchObject({ line: 2, message: 'only one escape parser directive can be used' });
    expect(errorsOf('# escape=x\nFROM x')[0]).toMatchObject({ line: 1, column: 1 });
  });

  it('joins continuation lines, dropping comment lines and warning on empty ones', () => {
    const df = parseDockerfile('FROM busybox\nRUN echo a \\\n# comment\n    && echo b \\\n\n    && echo c\nRUN done');
    const run = df.stages[0].instructions[0];
    expect(run).toMatchObject({ keyword: 'RUN', line: 2, endLine: 6, cmd: { form: 'shell', command: 'echo a     && echo b     && echo c' } });
    expect(df.warnings).toContainEqual({ line: 5, column: 1, message: 'Empty continuation line', severity: 'warning', rule: 'NoEmptyContinuation' });
  });

  it('does not treat an escaped escape token as a continuation', () => {
    const df = parseDockerfile('FROM busybox\nRUN echo \\\\\nRUN two');
    expect(df.stages[0].instructions).toHaveLength(2);
  });

  it('uses the backtick for continuations under escape=`', () => {
    const df = parseDockerfile('# escape=`\nFROM busybox\nRUN echo a `\n  b\nCOPY .\\x C:\\y\\');
    expect(df.stages[0].instructions.map((i) => i.keyword)).toEqual(['RUN', 'COPY']);
    expect((df.stages[0].instructions[1] as CopyInstruction).dest).toBe('C:\\y\\');
  });

  it('accepts any letter case and leading white space, recording the column', () => {
    const ins = only('   run echo hi');
    expect(ins).toMatchObject({ keyword: 'RUN', keywordAsWritten: 'run', line: 2, column: 4 });
  });

  it('strips a byte-order mark and handles CRLF line endings', () => {
    const df = parseDockerfile('\ufeffFROM busybox\r\nRUN echo a \\\r\n  b\r\n');
    expect(df.stages[0].instructions[0]).toMatchObject({ cmd: { command: 'echo a   b' } });
  });
});

describe('instructions and flags', () => {
  it('parses FROM with --platform and AS', () => {
    const df = parseDockerfile('FROM --platform=$BUILDPLATFORM golang:1.22 AS Build');
    expect(df.stages[0]).toMatchObject({ name: 'build', from: { image: 'golang:1.22', platform: '$BUILDPLATFORM', stageName: 'build', stageNameAsWritten: 'Build' } });
    expect(rules(df)).toContain('StageNameCasing');
  });

  it('parses RUN shell and exec forms, network and security', () => {
    expect(only('RUN ["echo", "a b"]')).toMatchObject({ cmd: { form: 'exec', args: ['echo', 'a b'] } });
    expect(only('RUN [not json')).toMatchObject({ cmd: { form: 'shell', command: '[not json' } });
    expect(only('RUN --network=none --security=insecure true')).toMatchObject({ network: 'none', security: 'insecure', cmd: { command: 'true' } });
  });

  it('parses every mount type into typed options', () => {
    const run = only(
      'RUN --mount=type=cache,target=/root/.npm,id=npm,sharing=locked,mode=0755,uid=1000 ' +
      '--mount=type=secret,id=tok,env=TOKEN,required --mount=type=tmpfs,target=/t,size=64m ' +
      '--mount=type=bind,from=build,source=/out,target=/in,rw --mount=type=ssh true',
    );
    expect(run.keyword === 'RUN' && run.mounts).toEqual([
      expect.objectContaining({ type: 'cache', target: '/root/.npm', id: 'npm', sharing: 'locked', mode: 0o755, uid: 1000, readOnly: false }),
      expect.objectContaining({ type: 'secret', id: 'tok', env: 'TOKEN', required: true, readOnly: true }),
      expect.objectContaining({ type: 'tmpfs', target: '/t', size: 64 * 1024 * 1024 }),
      expect.objectContaining({ type: 'bind', from: 'build', source: '/out', target: '/in', readOnly: false }),
      expect.objectContaining({ type: 'ssh', readOnly: true }),
    ]);
  });

  it('parses LABEL pairs with quotes kept for expansion, and the legacy form', () => {
    expect(only('LABEL a=1 b="two words" "com.x"="y z"')).toMatchObject({
      pairs: [{ key: 'a', value: '1', legacy: false }, { key: 'b', value: '"two words"', legacy: false }, { key: '"com.x"', value: '"y z"', legacy: false }],
    });
    const df = parseDockerfile('FROM x\nENV NAME some value');
    expect(df.stages[0].instructions[0]).toMatchObject({ pairs: [{ key: 'NAME', value: 'some value', legacy: true }] });
    expect(df.warnings).toContainEqual(expect.objectContaining({ rule: 'LegacyKeyValueFormat', line: 2 }));
  });

  it('parses EXPOSE, ARG, USER, WORKDIR, VOLUME, STOPSIGNAL, SHELL and MAINTAINER', () => {
    expect(only('EXPOSE 80 443/tcp 53/udp 8000-8010')).toMatchObject({ ports: ['80', '443/tcp', '53/udp', '8000-8010'] });
    expect(only('ARG A B=2 C="x y"')).toMatchObject({ args: [{ name: 'A', defaultValue: null }, { name: 'B', defaultValue: '2' }, { name: 'C', defaultValue: '"x y"' }] });
    expect(only('USER app:app')).toMatchObject({ user: 'app:app' });
    expect(only('WORKDIR /srv/my app')).toMatchObject({ path: '/srv/my app' });
    expect(only('VOLUME ["/a", "/b c"]')).toMatchObject({ paths: ['/a', '/b c'], form: 'json' });
    expect(only('VOLUME /a /b')).toMatchObject({ paths: ['/a', '/b'], form: 'shell' });
    expect(only('STOPSIGNAL SIGKILL')).toMatchObject({ signal: 'SIGKILL' });
    expect(only('SHELL ["pwsh", "-c"]')).toMatchObject({ shell: ['pwsh', '-c'] });
    const df = parseDockerfile('FROM x\nMAINTAINER me@example.test');
    expect(df.stages[0].instructions[0]).toMatchObject({ maintainer: 'me@example.test' });
    expect(rules(df)).toContain('MaintainerDeprecated');
  });

  it('parses ADD and COPY flags, JSON form and sources', () => {
    expect(only('ADD --chown=1:2 --chmod=644 --link --keep-git-dir=true --checksum=sha256:abc --exclude=*.md https://x.test/r.git#v1 /src')).toMatchObject({
      keyword: 'ADD', chown: '1:2', chmod: '644', link: true, keepGitDir: true, checksum: 'sha256:abc', excludes: ['*.md'], sources: ['https://x.test/r.git#v1'], dest: '/src',
    });
    expect(only('COPY --from=build --parents --exclude=a --exclude=b ["a b", "c", "/d/"]')).toMatchObject({
      keyword: 'COPY', from: 'build', parents: true, excludes: ['a', 'b'], sources: ['a b', 'c'], dest: '/d/', form: 'json',
    });
  });

  it('parses HEALTHCHECK NONE and CMD with its options in nanoseconds', () => {
    expect(only('HEALTHCHECK NONE')).toMatchObject({ healthcheck: { kind: 'none' } });
    expect(only('HEALTHCHECK --interval=1m30s --timeout=3s --start-period=10s --start-interval=500ms --retries=3 CMD curl -f http://x/ || exit 1')).toMatchObject({
      healthcheck: { kind: 'cmd', cmd: { form: 'shell', command: 'curl -f http://x/ || exit 1' }, interval: 90e9, timeout: 3e9, startPeriod: 10e9, startInterval: 5e8, retries: 3 },
    });
  });

  it('keeps ONBUILD trigger text and parses the trigger', () => {
    const ins = only('ONBUILD COPY --chown=1 . /app');
    expect(ins).toMatchObject({ keyword: 'ONBUILD', trigger: 'COPY --chown=1 . /app', instruction: { keyword: 'COPY', chown: '1', sources: ['.'], dest: '/app' } });
    expect(parseOnbuildTrigger('RUN echo hi')).toMatchObject({ keyword: 'RUN', line: 1, cmd: { command: 'echo hi' } });
  });

  it('warns about shell-form CMD/ENTRYPOINT and repeated CMD', () => {
    const df = parseDockerfile('FROM x\nCMD a\nCMD ["b"]\nENTRYPOINT run');
    expect(df.warnings.filter((w) => w.rule !== 'ConsistentInstructionCasing').map((w) => [w.rule, w.line])).toEqual([
      ['JSONArgsRecommended', 2], ['MultipleInstructionsDisallowed', 2], ['JSONArgsRecommended', 4],
    ]);
  });

  it('warns about a duplicate stage name, as BuildKit does, instead of failing', () => {
    const df = parseDockerfile('FROM x AS a\nFROM y AS A');
    expect(df.warnings).toContainEqual({ line: 2, column: 1, message: 'Duplicate stage name "a", stage names should be unique', severity: 'warning', rule: 'DuplicateStageName' });
  });

  it('warns about FROM/AS casing, casing majority and relative WORKDIR', () => {
    const df = parseDockerfile('FROM x as a\nWORKDIR app\nrun true');
    expect(rules(df)).toEqual(expect.arrayContaining(['FromAsCasing', 'WorkdirRelativePath', 'ConsistentInstructionCasing']));
  });
});

describe('heredocs', () => {
  it('reads RUN <<EOF bodies and runs them as a script', () => {
    const ins = only('RUN <<EOF\nset -e\necho $HOME\nEOF');
    expect(ins).toMatchObject({ endLine: 5, heredocs: [{ name: 'EOF', expand: true, chomp: false, content: 'set -e\necho $HOME\n', line: 3 }] });
    expect(ins.keyword === 'RUN' && runScript(ins)).toEqual({ kind: 'shell', script: 'set -e\necho $HOME\n' });
  });

  it('strips leading tabs for <<- and feeds a heredoc to a program', () => {
    const ins = only('RUN <<-EOT python3\n\tprint(1)\n\tEOT');
    expect(ins).toMatchObject({ heredocs: [{ name: 'EOT', chomp: true, content: 'print(1)\n' }] });
    expect(ins.keyword === 'RUN' && runScript(ins)).toEqual({ kind: 'shell', script: '<<-EOT python3\nprint(1)\nEOT' });
  });

  it('reads several heredocs in one instruction in order', () => {
    const df = parseDockerfile('FROM x\nRUN <<A cat > /a && <<B cat > /b\n1\nA\n2\nB\nRUN next');
    expect(df.stages[0].instructions[0]).toMatchObject({ heredocs: [{ name: 'A', content: '1\n' }, { name: 'B', content: '2\n' }] });
    expect(df.stages[0].instructions[1]).toMatchObject({ line: 7 });
  });

  it('marks quoted delimiters as not expanded and uses them as COPY sources', () => {
    expect(only('COPY <<"EOF" /etc/x\n${A}\nEOF')).toMatchObject({ sources: [], dest: '/etc/x', heredocs: [{ name: 'EOF', expand: false, content: '${A}\n' }] });
    expect(only("COPY <<'EOF' /x\nEOF")).toMatchObject({ heredocs: [{ expand: false }] });
  });

  it('runs a lone shebang heredoc as an executable file', () => {
    const ins = only('RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF');
    expect(ins.keyword === 'RUN' && runScript(ins)).toEqual({ kind: 'shebang', name: 'EOF', content: '#!/usr/bin/env python3\nprint(1)\n' });
  });

  it('ignores << in exec form and in quotes', () => {
    expect(only('RUN ["cat", "<<EOF"]')).toMatchObject({ heredocs: [] });
    expect(only('RUN echo "<<EOF"')).toMatchObject({ heredocs: [] });
  });
});

describe('errors name the line and column', () => {
  it.each<[string, string, Partial<Diagnostic>]>([
    ['FROM x\n  RUNN echo', 'unknown instruction "RUNN" (did you mean RUN?)', { line: 2, column: 3 }],
    ['FROM x\nRUN <<EOF\nno end', 'unterminated heredoc', { line: 2, column: 5 }],
    ['FROM x\nRUN --mount=type=cache --foo=1 true', 'unknown flag --foo for RUN', { line: 2, column: 24 }],
    ['FROM x\nRUN --network=bridge true', 'invalid network mode "bridge"', { line: 2, column: 5 }],
    ['FROM x\nRUN --mount=type=nfs true', 'unsupported mount type "nfs"', { line: 2, column: 5 }],
    ['FROM x\nRUN --mount=type=bind,from=$X true', "'from' does not support variable expansion", { line: 2 }],
    ['FROM x\nCOPY --link=maybe a b', 'expects true or false', { line: 2, column: 6 }],
    ['FROM x\nCOPY --chown a b', 'needs a value', { line: 2, column: 6 }],
    ['FROM x\nCOPY onlyone', 'needs at least one source and a destination', { line: 2, column: 1 }],
    ['FROM x\nENV --x=1 A=b', 'unknown flag --x for ENV; ENV takes no flags', { line: 2, column: 5 }],
    ['FROM x\nRUN echo \\', 'continues past the end of the file', { line: 2 }],
    ['RUN echo', 'RUN comes before the first FROM', { line: 1, column: 1 }],
    ['ARG A=1', 'FROM is missing', { line: 1 }],
    ['# only a comment\n', 'no instructions', {}],
    ['FROM x AS 1abc', 'invalid stage name "1abc"', { line: 1 }],
    ['FROM x y', 'FROM takes an image', { line: 1 }],
    ['FROM x\nSHELL /bin/sh -c', 'JSON form', { line: 2 }],
    ['FROM x\nRUN ["a", 1]', 'only strings', { line: 2 }],
    ['FROM x\nHEALTHCHECK --interval=soon CMD true', 'invalid duration "soon"', { line: 2, column: 13 }],
    ['FROM x\nHEALTHCHECK --retries=-1 CMD true', 'cannot be negative', { line: 2 }],
    ['FROM x\nHEALTHCHECK WHAT', 'unknown HEALTHCHECK type', { line: 2 }],
    ['FROM x\nONBUILD ONBUILD RUN x', 'Chaining ONBUILD', { line: 2 }],
    ['FROM x\nONBUILD FROM y', 'not allowed as an ONBUILD trigger', { line: 2 }],
    ['FROM x\nENV A=1 B', '"B" has no "="', { line: 2 }],
    ['FROM x\nCOPY a <<EOF\nEOF', 'heredoc as its destination', { line: 2 }],
  ])('%j → %s', (text, message, where) => {
    const [first] = errorsOf(text);
    expect(first.message).toContain(message);
    expect(first).toMatchObject({ severity: 'error', ...where });
    expect(first.message).not.toMatch(/^line \d/);
  });

  it('collects errors from several instructions', () => {
    const errs = errorsOf('FROM x\nRUNN a\nCOPYY b c\nRUN ok');
    expect(errs.map((e) => e.line)).toEqual([2, 3]);
  });

  it('formats the error message with the position', () => {
    expect(() => parseDockerfile('FROM x\nRUNN a')).toThrow('line 2, column 1: unknown instruction "RUNN" (did you mean RUN?)');
  });
});

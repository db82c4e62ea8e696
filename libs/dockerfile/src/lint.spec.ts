import { lintBaseImagePlatforms, lintCopyIgnoredFile, lintUndefinedVars, lintWithResolvedImages, type DockerignoreView } from './lint.js';
import { checkDockerfile, parseDockerfile, resolveBuild, type Diagnostic } from './index.js';

const undefinedVars = (text: string): Array<Pick<Diagnostic, 'line' | 'column' | 'message'>> =>
  parseDockerfile(text)
    .warnings.filter((w) => w.rule === 'UndefinedVar')
    .map(({ line, column, message }) => ({ line, column, message }));

describe('UndefinedVar', () => {
  it('reports a variable no ARG or ENV defines, at the instruction, with BuildKit’s message and suggestion', () => {
    const text = [
      'FROM scratch AS base',
      'ARG VERSION',
      'ENV APP_HOME=/app',
      '  COPY $foo /dst/',
      'WORKDIR ${APP_HOEM}/bin',
      'COPY app-$VERSION.tar $APP_HOME/',
      'LABEL version=$VERSOIN',
      '',
    ].join('\n');
    expect(undefinedVars(text)).toEqual([
      { line: 4, column: 3, message: "Usage of undefined variable '$foo'" },
      { line: 5, column: 1, message: "Usage of undefined variable '$APP_HOEM' (did you mean $APP_HOME?)" },
      { line: 7, column: 1, message: "Usage of undefined variable '$VERSOIN' (did you mean $VERSION?)" },
    ]);
  });

  it('suggests PATH, which a stage FROM scratch has, for a misspelling of it', () => {
    expect(undefinedVars('FROM scratch\nENV PATH=$PAHT:/app/bin\n')).toEqual([
      { line: 2, column: 1, message: "Usage of undefined variable '$PAHT' (did you mean $PATH?)" },
    ]);
  });

  it('takes ARG and ENV in scope only from where they are declared, and global ARGs only once redeclared', () => {
    const text = [
      'ARG GLOBAL=1',
      'FROM scratch',
      'COPY $GLOBAL /a',
      'ARG GLOBAL',
      'COPY $GLOBAL /b',
      'COPY $LATER /c',
      'ENV LATER=x',
      'ENV A=1 B=$A',
      'COPY $LATER $B /d',
      '',
    ].join('\n');
    expect(undefinedVars(text)).toEqual([
      { line: 3, column: 1, message: "Usage of undefined variable '$GLOBAL'" },
      { line: 6, column: 1, message: "Usage of undefined variable '$LATER'" },
      // ENV's pairs are expanded with the environment before the instruction.
      { line: 8, column: 1, message: "Usage of undefined variable '$A'" },
    ]);
  });

  it('lets a stage built FROM another stage see its ARGs and ENVs', () => {
    expect(undefinedVars('FROM scratch AS one\nARG V=1\nENV E=2\nFROM one\nCOPY $V$E /x\nCOPY $NOPE /y\n')).toEqual([
      { line: 6, column: 1, message: "Usage of undefined variable '$NOPE'" },
    ]);
  });

  it('says nothing for predefined platform and proxy args, default forms, RUN, escaped dollars, or ARG defaults naming earlier ARGs', () => {
    const text = [
      'FROM scratch',
      'COPY $TARGETARCH/$BUILDPLATFORM $HTTP_PROXY /x',
      'COPY ${MISSING:-fallback} ${OTHER:+set} /y',
      'RUN echo $FROM_THE_SHELL',
      'CMD echo $AT_RUNTIME',
      'LABEL price=\\$5',
      'ARG A=1 B=$A',
      '',
    ].join('\n');
    expect(undefinedVars(text)).toEqual([]);
  });

  it('is silent in a stage FROM an image, whose env is unknown until the image is resolved, and speaks once it is given', () => {
    const text = 'FROM busybox\nCOPY $FROM_IMAGE $NOT_ANYWHERE /x\n';
    expect(undefinedVars(text)).toEqual([]);
    const df = parseDockerfile(text);
    const withEnv = lintUndefinedVars(df.globalArgs, df.stages, { baseImageEnv: () => ['PATH=/bin', 'FROM_IMAGE=/data'] });
    expect(withEnv.map(({ line, column, message }) => ({ line, column, message }))).toEqual([
      { line: 2, column: 1, message: "Usage of undefined variable '$NOT_ANYWHERE'" },
    ]);
  });

  it('reaches the check result as a warning and can be skipped with # check=skip=UndefinedVar', () => {
    const checked = checkDockerfile('FROM scratch\nCOPY $nope /\n');
    expect(checked.warnings).toContainEqual({ line: 2, column: 1, severity: 'warning', rule: 'UndefinedVar', message: "Usage of undefined variable '$nope'" });
    expect(checkDockerfile('# check=skip=UndefinedVar\nFROM scratch\nCOPY $nope /\n').warnings.filter((w) => w.rule === 'UndefinedVar')).toEqual([]);
  });
});

/** A .dockerignore matcher good enough for these cases: plain paths and `dir/*`, matching a path or a parent. */
function ignoring(patterns: string[], hasExceptions = false): DockerignoreView {
  const res = patterns.map((p) => new RegExp(`^${p.replace(/[.]/g, '\\.').replace(/\*/g, '[^/]*')}$`));
  return {
    hasExceptions,
    matches: (path) => {
      const parts = path.split('/');
      return parts.some((_, i) => res.some((re) => re.test(parts.slice(0, i + 1).join('/'))));
    },
  };
}

describe('CopyIgnoredFile', () => {
  it('reports COPY and ADD sources .dockerignore excludes, cleaned, at the instruction', () => {
    const df = parseDockerfile(
      ['FROM scratch', 'COPY ./tmp/helloworld.txt /helloworld.txt', 'COPY forever/helloworld.txt /', '  ADD secrets /s', 'COPY ok.txt node_modules/x /', ''].join('\n'),
    );
    expect(lintCopyIgnoredFile(df, ignoring(['tmp/*', 'secrets', 'node_modules']))).toEqual([
      { line: 2, column: 1, severity: 'warning', rule: 'CopyIgnoredFile', message: 'Attempting to Copy file "tmp/helloworld.txt" that is excluded by .dockerignore' },
      { line: 4, column: 3, severity: 'warning', rule: 'CopyIgnoredFile', message: 'Attempting to Add file "secrets" that is excluded by .dockerignore' },
      { line: 5, column: 1, severity: 'warning', rule: 'CopyIgnoredFile', message: 'Attempting to Copy file "node_modules/x" that is excluded by .dockerignore' },
    ]);
  });

  it('expands sources with ARGs, build args and ENV first, and skips COPY --from, URLs and unknown values', () => {
    const df = parseDockerfile(
      [
        'FROM scratch AS build',
        'ARG DIR=dist',
        'COPY $DIR/app.js /',
        'FROM busybox',
        'COPY --from=build tmp/x /',
        'ADD https://example.com/tmp/x /',
        'COPY ${FROM_IMAGE_ENV}tmp /',
        '',
      ].join('\n'),
    );
    expect(lintCopyIgnoredFile(df, ignoring(['dist', 'tmp']))).toEqual([expect.objectContaining({ line: 3, message: 'Attempting to Copy file "dist/app.js" that is excluded by .dockerignore' })]);
    expect(lintCopyIgnoredFile(df, ignoring(['dist', 'tmp']), { buildArgs: { DIR: 'src' } })).toEqual([]);
    expect(lintCopyIgnoredFile(df, ignoring(['dist']), { stages: [1] })).toEqual([]);
  });

  it('says nothing when .dockerignore has exceptions, as BuildKit', () => {
    const df = parseDockerfile('FROM scratch\nCOPY tmp/keep.txt /\n');
    expect(lintCopyIgnoredFile(df, ignoring(['tmp'], true))).toEqual([]);
  });

  it('follows # check=: skipped, or an error with error=true', () => {
    const ignore = ignoring(['tmp']);
    expect(lintCopyIgnoredFile(parseDockerfile('# check=skip=CopyIgnoredFile\nFROM scratch\nCOPY tmp /\n'), ignore)).toEqual([]);
    expect(lintCopyIgnoredFile(parseDockerfile('# check=error=true\nFROM scratch\nCOPY tmp /\n'), ignore)).toEqual([
      { line: 3, column: 1, severity: 'error', rule: 'CopyIgnoredFile', message: 'Attempting to Copy file "tmp" that is excluded by .dockerignore' },
    ]);
  });
});

describe('InvalidBaseImagePlatform', () => {
  const text = 'FROM busybox:1 AS tools\nRUN true\nFROM --platform=linux/amd64 alpine:3 AS app\nCOPY --from=tools /bin/sh /\n';

  it('reports a base image whose platform is not the one the stage is built for, at its FROM', () => {
    const plan = resolveBuild(parseDockerfile(text));
    const found = lintBaseImagePlatforms(plan, (i) => (i === 0 ? { os: 'linux', architecture: 'arm64', variant: 'v8' } : { os: 'linux', architecture: 'amd64' }));
    expect(found).toEqual([
      {
        line: 1,
        column: 1,
        severity: 'warning',
        rule: 'InvalidBaseImagePlatform',
        message: 'Base image busybox:1 was pulled with platform "linux/arm64/v8", expected "linux/amd64" for current build',
      },
    ]);
  });

  it('is silent when the platforms match or the image was not resolved, and follows # check=', () => {
    const plan = resolveBuild(parseDockerfile(text));
    expect(lintBaseImagePlatforms(plan, () => ({ os: 'linux', architecture: 'amd64' }))).toEqual([]);
    expect(lintBaseImagePlatforms(plan, () => null)).toEqual([]);
    const skipped = resolveBuild(parseDockerfile(`# check=skip=InvalidBaseImagePlatform\n${text}`));
    expect(lintBaseImagePlatforms(skipped, () => ({ os: 'windows', architecture: 'amd64' }))).toEqual([]);
  });
});

describe('lint findings once the FROM images are resolved (a build)', () => {
  it('adds InvalidBaseImagePlatform and the UndefinedVar findings the parser could not judge, in needed stages, without repeating its own', () => {
    const text = [
      'FROM scratch AS early',
      'COPY $SCRATCH_ONLY /a',
      'FROM busybox:1 AS app',
      'COPY $IMAGE_VAR $MISSING /b',
      'FROM alpine:3 AS unused',
      'COPY $ALSO_MISSING /c',
      '',
    ].join('\n');
    const df = parseDockerfile(text);
    expect(df.warnings.filter((w) => w.rule === 'UndefinedVar').map((w) => w.line)).toEqual([2]);
    const plan = resolveBuild(df, { target: 'app' });
    const found = lintWithResolvedImages(plan, (i) => (i === 1 ? { platform: { os: 'linux', architecture: 'arm64' }, env: ['PATH=/bin', 'IMAGE_VAR=x'] } : null));
    expect(found).toEqual([
      { line: 3, column: 1, severity: 'warning', rule: 'InvalidBaseImagePlatform', message: 'Base image busybox:1 was pulled with platform "linux/arm64", expected "linux/amd64" for current build' },
      { line: 4, column: 1, severity: 'warning', rule: 'UndefinedVar', message: "Usage of undefined variable '$MISSING'" },
    ]);
  });
});

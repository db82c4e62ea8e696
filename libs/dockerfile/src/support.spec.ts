import { checkDockerfile, parseDockerfile, resolveBuild, unsupportedInInstruction, unsupportedInPlan } from './index.js';

function refusals(text: string, opts: Parameters<typeof unsupportedInPlan>[1] = {}, target?: string): Array<[number, string]> {
  return unsupportedInPlan(resolveBuild(parseDockerfile(text), { target }), opts).map((d) => [d.line, d.message]);
}

describe('what Strata refuses', () => {
  it.each<[string, string]>([
    ['ADD https://example.test/r.git?tag=v1&branch=main /src', 'ADD: invalid git source "https://example.test/r.git?tag=v1&branch=main": branch conflicts with tag'],
    ['ADD git@example.test:o/r.git##ref=v1,depth=1 /src', 'ADD: invalid git source "git@example.test:o/r.git##ref=v1,depth=1": unexpected key "depth" in the URL fragment'],
    ['RUN --security=insecure true', 'RUN --security=insecure is not allowed on this deployment (STRATA_RUN_ALLOW_INSECURE is not true)'],
    ['RUN --network=host true', 'RUN --network=host is not allowed on this deployment'],
  ])('refuses %j at its line', (ins, message) => {
    const found = refusals(`FROM scratch\n${ins}\n`);
    expect(found).toHaveLength(1);
    expect(found[0][0]).toBe(2);
    expect(found[0][1]).toContain(message);
  });

  it('builds what it supports without a word, git sources and --keep-git-dir included', () => {
    expect(refusals('FROM scratch\nADD --keep-git-dir https://example.test/r.git#v1:docs /d\nADD git@example.test:o/r.git /r\nADD --checksum=abc123 ssh://git@example.test/o/r.git?ref=main&submodules=false /s\nADD git://example.test/r.git /g\nADD ${REPO}?bogus=1 /v\n')).toEqual([]);
    expect(refusals('FROM scratch\nCOPY --chown=1:1 --chmod=644 a /a\nADD b.tar /b/\nRUN --security=sandbox --network=none --mount=type=cache,target=/c --mount=type=bind,target=/s true\nRUN <<EOF\n#!/bin/bash\necho\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN <<EOF python3\nprint(1)\nEOF\nCOPY --from=example.test/tools:1 /t /t\nRUN --mount=type=bind,source=.,target=/src,rw --mount=type=ssh,required true\nRUN --mount=from=tools,target=/t true\n')).toEqual([]);
    expect(refusals('FROM scratch\nCOPY --chown=1:1 --chmod=644 a /a\nCOPY --link --exclude=*.md --parents --chmod=u+x ./x/./a <<EOF /d/\nhi\nEOF\nADD --link --exclude=*.md b.tar <<-EOF /b/\nhi\nEOF\nADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 https://example.test/tool.tar.gz /opt/\nRUN --security=sandbox --network=none --mount=type=cache,target=/c --mount=type=bind,target=/s true\nRUN <<EOF\n#!/bin/bash\necho\nEOF\n')).toEqual([]);
  });

  it('allows RUN --network=host and RUN --security=insecure when the operator does', () => {
    expect(refusals('FROM scratch\nRUN --network=host true\n', { allowHostNetwork: true })).toEqual([]);
    expect(refusals('FROM scratch\nRUN --security=insecure true\n', { allowInsecure: true })).toEqual([]);
    expect(refusals('FROM scratch\nRUN --security=insecure true\n', { allowHostNetwork: true })).toHaveLength(1);
  });

  it('refuses a FROM --platform other than the build platform, and only in stages the target needs', () => {
    const text = 'FROM --platform=linux/arm64 scratch AS arm\nRUN --network=host true\nFROM --platform=$BUILDPLATFORM scratch\n';
    expect(refusals(text)).toEqual([]);
    expect(refusals(text, {}, 'arm')).toEqual([
      [1, 'FROM --platform=linux/arm64 is not supported by Strata: this build makes linux/amd64 images, and multi-platform builds are not supported yet'],
      [2, 'RUN --network=host is not allowed on this deployment (STRATA_RUN_NETWORK is not host); use the default network or --network=none'],
    ]);
  });

  it('checks one instruction on its own, as a build checks an ONBUILD trigger', () => {
    const ins = parseDockerfile('FROM scratch\nRUN --security=insecure true\n').stages[0].instructions[0];
    expect(unsupportedInInstruction(ins)).toEqual([expect.objectContaining({ line: 2, column: 5, severity: 'error' })]);
  });

  it('reports the refusals in the check, with the lint warnings kept apart', () => {
    const r = checkDockerfile('FROM scratch AS a\nFROM scratch AS a\nADD https://example.test/r.git?mtime=now /a\n');
    expect(r.errors.map((e) => e.line)).toEqual([3]);
    expect(r.warnings.map((w) => w.rule)).toContain('DuplicateStageName');
  });
});

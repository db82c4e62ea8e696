import { buildFailure, buildWith, fakeImages } from './fakes.test.js';

describe('metadata steps: the image config', () => {
  it('lists EXPOSE ports as Docker does: default tcp, lower-cased protocols, ranges, host:port forms, variables', async () => {
    const { out } = await buildWith('FROM scratch\nARG P=9000\nEXPOSE 80 8080/UDP 1000-1002/tcp 127.0.0.1:90:91 $P\n');
    expect(Object.keys(out.image.config.config?.ExposedPorts ?? {}).sort()).toEqual(['1000/tcp', '1001/tcp', '1002/tcp', '80/tcp', '8080/udp', '9000/tcp', '91/tcp']);
  });

  it('refuses an EXPOSE protocol Docker does not know, at the line', async () => {
    const f = await buildFailure('FROM scratch\nEXPOSE 80/http\n');
    expect(f.line).toBe(2);
    expect(f.message).toBe('Dockerfile:2: EXPOSE: invalid protocol "http" in "80/http": use tcp, udp or sctp');
  });

  it('drops an inherited CMD on ENTRYPOINT, but keeps a CMD of the same stage; shell forms use the SHELL', async () => {
    const images = fakeImages({ base: { Cmd: ['inherited'] } });
    const dropped = await buildWith('FROM base\nENTRYPOINT ["run"]\n', { images });
    expect(dropped.out.image.config.config).toMatchObject({ Entrypoint: ['run'], Cmd: null });
    const kept = await buildWith('FROM base\nSHELL ["/bin/bash", "-c"]\nCMD echo hi\nENTRYPOINT ["run"]\n', { images });
    expect(kept.out.image.config.config).toMatchObject({ Entrypoint: ['run'], Cmd: ['/bin/bash', '-c', 'echo hi'], Shell: ['/bin/bash', '-c'] });
  });

  it('resolves WORKDIR against the previous one and expands LABEL, USER, VOLUME and STOPSIGNAL', async () => {
    const { out } = await buildWith('FROM scratch\nARG V=1.0\nWORKDIR /app\nWORKDIR ./sub/../src\nLABEL version=$V "a b"="c d"\nUSER app:$V\nVOLUME /data/$V\nSTOPSIGNAL SIG$V\n');
    expect(out.image.config.config).toMatchObject({
      WorkingDir: '/app/src', Labels: { version: '1.0', 'a b': 'c d' }, User: 'app:1.0', Volumes: { '/data/1.0': {} }, StopSignal: 'SIG1.0',
    });
  });

  it('keeps HEALTHCHECK, ONBUILD and MAINTAINER as written', async () => {
    const { out } = await buildWith('FROM scratch\nHEALTHCHECK --interval=5s --retries=2 CMD ["check"]\nONBUILD RUN make\nMAINTAINER me\n');
    expect(out.image.config.config).toMatchObject({ Healthcheck: { Test: ['CMD', 'check'], Interval: 5e9, Retries: 2 }, OnBuild: ['RUN make'] });
    expect(out.image.config.author).toBe('me');
  });

  it('records an ARG with its value and the build args it used, so a changed build arg misses', async () => {
    const first = await buildWith('FROM scratch\nARG V=d\nENV X=$V\n', {}, { buildArgs: { V: 'one' } });
    const done = (evs: typeof first.events) => evs.flatMap((e) => (e.type === 'step-done' ? [e] : []));
    expect(done(first.events)[0].fingerprint.args).toEqual({ V: 'one' });
    expect(first.out.image.config.config?.Env).toContain('X=one');
    const second = await buildWith('FROM scratch\nARG V=d\nENV X=$V\n', {}, { buildArgs: { V: 'two' } });
    expect(done(second.events)[0].cacheKey).not.toBe(done(first.events)[0].cacheKey);
  });
});

describe('history lines, as BuildKit (dockerd 20.10) writes them', () => {
  it('writes ARG with its expanded default and HEALTHCHECK as Go prints its config (seen with dockerd 20.10.24)', async () => {
    const dockerfile = [
      'FROM scratch', 'ARG PLAIN', 'ARG WITHVAL=1', 'ARG QUOTED="a b"', 'arg lower=x', 'ARG EXP=${WITHVAL}-y',
      'HEALTHCHECK --interval=5m --timeout=3s CMD curl -f http://localhost/ || exit 1',
      'HEALTHCHECK --retries=3 --start-period=2s CMD ["/bin/check", "a b"]',
      'HEALTHCHECK --interval=1h30m --timeout=1500ms --retries=10 CMD x',
      'HEALTHCHECK NONE', '',
    ].join('\n');
    const { out } = await buildWith(dockerfile, {}, { buildArgs: { WITHVAL: 'given' } });
    expect(out.image.config.history?.map((h) => h.created_by)).toEqual([
      'ARG PLAIN', 'ARG WITHVAL=1', 'ARG QUOTED=a b', 'ARG lower=x', 'ARG EXP=given-y',
      'HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/ || exit 1"] "5m0s" "3s" "0s" \'\\x00\'}',
      'HEALTHCHECK &{["CMD" "/bin/check" "a b"] "0s" "0s" "2s" \'\\x03\'}',
      'HEALTHCHECK &{["CMD-SHELL" "x"] "1h30m0s" "1.5s" "0s" \'\\n\'}',
      'HEALTHCHECK &{["NONE"] "0s" "0s" "0s" \'\\x00\'}',
    ]);
  });

  it('names each step the way docker history shows it', async () => {
    const dockerfile = [
      'FROM scratch AS s', 'ARG V=1', 'ARG W', 'COPY --chown=10:20 --chmod=640 a.txt /d', 'ADD a.txt /e', 'VOLUME /data /x', 'SHELL ["/bin/sh", "-c"]',
      'USER 0:$V', 'EXPOSE 443 80/udp', 'ONBUILD RUN true', 'LABEL a=$V', 'WORKDIR app', 'CMD echo hi', 'ENTRYPOINT ["x"]', 'STOPSIGNAL SIGINT',
      'FROM s', 'RUN true', 'ARG Z=3', 'RUN true', '',
    ].join('\n');
    const { out } = await buildWith(dockerfile);
    expect(out.image.config.history?.map((h) => h.created_by)).toEqual([
      'ARG V=1', 'ARG W', 'COPY a.txt /d # buildkit', 'ADD a.txt /e # buildkit', 'VOLUME [/data /x]', 'SHELL [/bin/sh -c]', 'USER 0:1',
      'EXPOSE map[443/tcp:{} 80/udp:{}]', 'LABEL a=1', 'WORKDIR /app', 'CMD ["/bin/sh" "-c" "echo hi"]', 'ENTRYPOINT ["x"]', 'STOPSIGNAL SIGINT',
      // The stage built FROM s runs s's ONBUILD trigger first; its own ARGs prefix its RUN lines.
      'RUN /bin/sh -c true # buildkit', 'RUN /bin/sh -c true # buildkit', 'ARG Z=3', 'RUN |1 Z=3 /bin/sh -c true # buildkit',
    ]);
  });
});

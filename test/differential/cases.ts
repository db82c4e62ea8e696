// The differential cases: each a Dockerfile and a context written by code, built by Strata and by
// BuildKit (dockerd 20.10, built-in Dockerfile frontend: no `# syntax=`, so no heredocs, --parents,
// --exclude, --link or RUN --network) from the same imported base, then compared as file tree and
// config. `busybox:1` is test/support/images.ts's busybox; `debian:minbase` is debootstrap's minbase
// bookworm (merged /usr: /bin -> usr/bin, setuid binaries, thousands of files).
import { readFileSync } from 'node:fs';
import { ContextWriter } from './support/context.js';

export type BaseImage = 'busybox' | 'debian';

export interface DiffCase {
  /** Lower-case, dashes: the Strata repository diff/<name> and the docker tag diff-<name>. */
  name: string;
  /** Which imported bases the Dockerfile uses (each is imported on both sides before any build). */
  base: BaseImage;
  /** What the case covers, in a line. */
  covers: string;
  /** `{{HTTP}}` stands for the base URL of the suite's own HTTP server on 127.0.0.1 (for ADD <url>). */
  dockerfile: string;
  /** Writes the context besides the Dockerfile. */
  context?: (ctx: ContextWriter) => void;
  buildArgs?: Record<string, string>;
  target?: string;
  /** Build secrets by id (docker build --secret; Strata-Build-Secret). */
  secrets?: Record<string, string>;
}

const df = (...lines: string[]) => `${lines.join('\n')}\n`;
const long = (c: string, n: number) => c.repeat(n);
// A capability set (v2, cap_net_bind_service effective+permitted), as `setcap cap_net_bind_service+ep` writes it.
const CAP_NET_BIND = '0sAQAAAgAEAAAAAAAAAAAAAAAAAAA=';

export const CASES: DiffCase[] = [
  // ---------------------------------------------------------------- COPY and ADD
  {
    name: 'copy-forms',
    base: 'busybox',
    covers: 'COPY of a file, several files, a directory (its contents), wildcards, into new and existing directories and to a file name',
    dockerfile: df(
      'FROM busybox:1',
      'WORKDIR /w',
      'COPY a.txt .',
      'COPY a.txt rel/',
      'COPY a.txt /abs-file',
      'COPY a.txt b.txt /multi/',
      'COPY dir /dir-into',
      'COPY dir/ /dir-slash/',
      'COPY *.txt /wild/',
      'COPY d?r /question/',
      'COPY [ab].txt /class/',
      'COPY a.txt /etc/',
      'COPY ["b.txt", "/json form/"]',
    ),
    context: (c) => c.file('a.txt', 'a\n').file('b.txt', 'bb\n').file('dir/one', '1\n').file('dir/sub/two', '2\n', 0o600).dir('dir/empty'),
  },
  {
    name: 'copy-onto-existing',
    base: 'busybox',
    covers: 'COPY of a directory over existing image directories (their mode and owner), replacing a file, keeping siblings',
    dockerfile: df('FROM busybox:1', 'COPY etc/ /etc/', 'COPY home/ /home/', 'COPY tmp /tmp', 'COPY passwd-new /etc/passwd'),
    context: (c) =>
      c.dir('etc', 0o700).file('etc/extra.conf', 'x=1\n').dir('home', 0o750).file('home/app/.profile', 'export X=1\n').dir('tmp', 0o755).file('tmp/t', 't\n')
        .file('passwd-new', 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nsvc:x:2000:2000::/srv:/bin/sh\n'),
  },
  {
    name: 'copy-chown',
    base: 'busybox',
    covers: 'COPY --chown by name, by id, uid only and user:group, including the parent directories it creates',
    dockerfile: df(
      'FROM busybox:1',
      'COPY --chown=app:app a.txt /made/by/copy/',
      'COPY --chown=1000 dir /chowned-dir/',
      'COPY --chown=1000:0 a.txt /chowned-file',
      'COPY --chown=app dir/ /home/app/',
      'COPY --chown=2000:3000 a.txt /numeric/',
    ),
    context: (c) => c.file('a.txt', 'a\n').file('dir/x', 'x\n').file('dir/sub/y', 'y\n'),
  },
  {
    name: 'copy-chmod',
    base: 'busybox',
    covers: 'COPY --chmod on a file and a directory, with --chown, and the parent directories it creates',
    dockerfile: df('FROM busybox:1', 'COPY --chmod=0640 a.txt /m/a', 'COPY --chmod=755 dir /m/dir/', 'COPY --chown=app:app --chmod=0600 a.txt /m/new/deep/secret'),
    context: (c) => c.file('a.txt', 'a\n', 0o644).file('dir/x', 'x\n', 0o600).dir('dir/sub', 0o700).file('dir/sub/y', 'y\n'),
  },
  {
    name: 'copy-context-owner',
    base: 'busybox',
    covers: 'files owned by someone else in the context become root-owned (COPY without --chown)',
    dockerfile: df('FROM busybox:1', 'COPY . /ctx/'),
    context: (c) => c.file('mine', 'm\n').chown('mine', 1000, 1000).dir('theirs').file('theirs/f', 'f\n').chown('theirs', 1234, 5678).chown('theirs/f', 4321, 8765),
  },
  {
    name: 'copy-symlink-sources',
    base: 'busybox',
    covers: 'a symlink named explicitly as source is followed; symlinks inside a copied directory are kept; a dangling link inside a directory',
    dockerfile: df('FROM busybox:1', 'COPY link /explicit/', 'COPY dirlink /explicit-dir/', 'COPY tree/ /tree/', 'COPY link /renamed-link'),
    context: (c) =>
      c.file('target.txt', 'pointed at\n').symlink('link', 'target.txt').file('realdir/f', 'f\n').symlink('dirlink', 'realdir')
        .file('tree/file', 'x\n').symlink('tree/rel', 'file').symlink('tree/up', '../target.txt').symlink('tree/dangling', 'nowhere'),
  },
  {
    name: 'context-absolute-symlink',
    base: 'busybox',
    covers: 'a context holding a symlink to an absolute path (as a checkout may): copied as a link by COPY of its directory',
    dockerfile: df('FROM busybox:1', 'COPY tree/ /tree/'),
    context: (c) => c.file('tree/file', 'x\n').symlink('tree/abs', '/etc/passwd').symlink('tree/abs-missing', '/nonexistent/file'),
  },
  {
    name: 'copy-special-modes',
    base: 'busybox',
    covers: 'setuid, setgid and sticky bits, mode 000 files and directories, group-writable files from the context',
    dockerfile: df('FROM busybox:1', 'COPY . /m/'),
    context: (c) =>
      c.file('setuid', '#!/bin/sh\n', 0o4755).file('setgid', '#!/bin/sh\n', 0o2755).file('both', 'x', 0o6711).dir('sticky', 0o1777).file('sticky/f', 'f\n')
        .file('zero', 'nothing\n', 0o000).file('closed/inside', 'in\n').dir('closed', 0o000).file('gw', 'g\n', 0o664).dir('setgid-dir', 0o2775).file('setgid-dir/f', 'f\n'),
  },
  {
    name: 'copy-hardlinks',
    base: 'busybox',
    covers: 'hard links between context files, in one directory and across directories',
    dockerfile: df('FROM busybox:1', 'COPY . /h/', 'COPY one/ /only-one/'),
    context: (c) => c.file('one/a', 'shared\n').hardlink('one/b', 'one/a').hardlink('two/c', 'one/a').file('one/alone', 'alone\n'),
  },
  {
    name: 'copy-xattrs',
    base: 'busybox',
    covers: 'extended attributes on context files (security.capability as setcap writes it, user.*): BuildKit 0.8 does not carry them',
    dockerfile: df('FROM busybox:1', 'COPY . /x/'),
    context: (c) => c.file('cap', 'bin\n', 0o755).xattr('cap', 'security.capability', CAP_NET_BIND).file('user', 'u\n').xattr('user', 'user.note', 'hello'),
  },
  {
    name: 'names-unicode-spaces',
    base: 'busybox',
    covers: 'names with spaces, unicode, quotes, leading dashes and dots, and a newline',
    dockerfile: df('FROM busybox:1', 'COPY . /n/', 'COPY ["with space.txt", "/dst with space/"]', 'COPY ünïcødé/ /ünï/'),
    context: (c) =>
      c.file('with space.txt', 's\n').file('ünïcødé/日本語.txt', 'ja\n').file('ünïcødé/emoji-😀', 'e\n').file("quote's \"double\"", 'q\n')
        .file('-dash', 'd\n').file('.hidden', 'h\n').file('new\nline', 'nl\n').file('tab\there', 't\n'),
  },
  {
    name: 'names-long',
    base: 'busybox',
    covers: 'paths over 100 bytes (ustar name), over 255 bytes (PAX), a 255-byte component, long symlink targets and hard links',
    dockerfile: df('FROM busybox:1', 'COPY . /l/'),
    context: (c) =>
      c.file(`${long('d', 60)}/${long('e', 60)}/over-100.txt`, '100\n').file(`${long('a', 120)}/${long('b', 120)}/${long('c', 40)}-over-255.txt`, '255\n')
        .file(long('z', 255), 'max component\n').symlink('long-link', `${long('t', 150)}/target`).file(`${long('t', 150)}/target`, 't\n')
        .hardlink(`${long('h', 110)}`, `${long('d', 60)}/${long('e', 60)}/over-100.txt`),
  },
  {
    name: 'add-local-archives',
    base: 'busybox',
    covers: 'ADD of a local .tar and .tar.gz (unpacked, owners kept), to a new and an existing directory, and ADD of plain files',
    dockerfile: df('FROM busybox:1', 'ADD plain.tar /unpacked/', 'ADD packed.tar.gz /gz/', 'ADD owned.tar /etc/owned/', 'ADD plain.txt /add-file', 'ADD dir/ /add-dir/'),
    context: (c) =>
      c.archive('plain.tar', (a) => a.file('in-tar.txt', 'in tar\n').file('sub/deep.txt', 'deep\n', 0o600).symlink('sub/link', 'deep.txt').dir('emptydir', 0o700))
        .archive('packed.tar.gz', (a) => a.file('gz.txt', 'gz\n').file('bin/tool', '#!/bin/sh\n', 0o4755))
        .archive('owned.tar', (a) => a.file('owned.txt', 'owned\n').dir('d').file('d/f', 'f\n'), { uid: 1000, gid: 1000 })
        .file('plain.txt', 'plain\n').file('dir/x.txt', 'x\n').archive('dir/nested.tar', (a) => a.file('not-unpacked', 'n\n')),
  },
  {
    name: 'add-url',
    base: 'busybox',
    covers: 'ADD of a URL (a server on 127.0.0.1): into a directory, to a file name, with --chown; a remote archive is not unpacked',
    dockerfile: df('FROM busybox:1', 'ADD {{HTTP}}/files/hello.txt /downloaded/', 'ADD {{HTTP}}/files/hello.txt /renamed.txt', 'ADD --chown=app:app {{HTTP}}/files/archive.tar /remote/'),
  },
  {
    name: 'add-archive-chown',
    base: 'busybox',
    covers: 'ADD --chown of a local archive (the unpacked entries take the owner) and of a plain file',
    dockerfile: df('FROM busybox:1', 'ADD --chown=app:app owned.tar.gz /chowned/', 'ADD --chown=1000:1000 plain.txt /p/'),
    context: (c) => c.archive('owned.tar.gz', (a) => a.file('f', 'f\n').dir('d').file('d/g', 'g\n'), { uid: 4000, gid: 4000 }).file('plain.txt', 'p\n'),
  },
  // ---------------------------------------------------------------- .dockerignore
  {
    name: 'dockerignore-exceptions',
    base: 'busybox',
    covers: '.dockerignore with directories, `*`, `**`, `!` exceptions (including inside an excluded directory) and comments',
    dockerfile: df('FROM busybox:1', 'COPY . /ctx/'),
    context: (c) =>
      c.file('.dockerignore', '# comment\n*.log\n!keep.log\n**/*.tmp\nbuild/\n!build/keep/\nsecret*\nnode_modules\n**/cache/**\ndocs/*.md\n!docs/README.md\n')
        .file('a.log', 'x').file('keep.log', 'k').file('src/deep/x.tmp', 't').file('src/deep/x.ts', 'ts').file('build/out.bin', 'o').file('build/keep/me', 'm')
        .file('secret.key', 's').file('node_modules/m/index.js', 'm').file('src/cache/a/b', 'c').file('docs/a.md', 'a').file('docs/README.md', 'r').file('docs/x.txt', 'x'),
  },
  {
    name: 'dockerignore-dockerfile',
    base: 'busybox',
    covers: '.dockerignore excluding everything but a few paths, itself and the Dockerfile (still used to build)',
    dockerfile: df('FROM busybox:1', 'COPY . /ctx/', 'COPY app /app/'),
    context: (c) => c.file('.dockerignore', '*\n!app\n!app/**\napp/**/*.bak\n.dockerignore\nDockerfile\n').file('app/main.sh', 'echo\n').file('app/x.bak', 'b').file('app/sub/y', 'y').file('other', 'o'),
  },
  // ---------------------------------------------------------------- ENV and ARG
  {
    name: 'env-expansion',
    base: 'busybox',
    covers: 'every ENV expansion form: $a, ${a}, ${a:-b}, ${a:+b}, escapes, quotes, legacy `ENV k v`, `ENV A=2 B=$A`',
    dockerfile: df(
      'FROM busybox:1',
      'ENV A=1',
      'ENV A=2 B=$A C=${A}',
      'ENV D=${UNSET:-dflt} E=${A:-dflt} F=${UNSET:+alt} G=${A:+alt}',
      'ENV H="quoted $A" I=\'single $A\' J=\\$A K=a\\ b',
      'ENV L ${A}-legacy form',
      'ENV M=${A}x${B}y N=$A$B O=pre-${E}-post',
      'ENV EMPTY= Q="" R=${EMPTY:-was-empty} T=${EMPTY:+not-empty}',
      'RUN echo "$A|$B|$C|$D|$E|$F|$G|$H|$I|$J|$K|$L|$M|$N|$O|$R|$T" > /env.txt',
    ),
  },
  {
    name: 'env-in-instructions',
    base: 'busybox',
    covers: 'variables expanded in WORKDIR, COPY, ADD, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL; not in RUN exec form',
    dockerfile: df(
      'FROM busybox:1',
      'ENV DIR=/srv/app DEST=copied.txt WHO=app PORT=8080 SIG=SIGQUIT VOL=/data NAME=strata',
      'WORKDIR $DIR',
      'COPY a.txt ${DEST}',
      'ADD a.txt /add/$DEST',
      'LABEL name=$NAME "with space"="${NAME} x"',
      'EXPOSE $PORT ${PORT}/udp',
      'VOLUME $VOL',
      'STOPSIGNAL $SIG',
      'RUN ["sh", "-c", "echo $DIR > exec-form.txt"]',
      'RUN ["echo", "$DIR"]',
      'USER $WHO',
    ),
    context: (c) => c.file('a.txt', 'a\n'),
  },
  {
    name: 'arg-scope-stages',
    base: 'busybox',
    covers: 'global ARGs in FROM, redeclared in stages, defaults, ARG visible in RUN but not in the config, a stage FROM an earlier stage',
    dockerfile: df(
      'ARG GLOBAL=g1',
      'ARG BASE=busybox:1',
      'FROM $BASE AS first',
      'RUN echo "before:[$GLOBAL]" > /first-before.txt',
      'ARG GLOBAL',
      'ARG LOCAL=l1',
      'RUN echo "$GLOBAL $LOCAL" > /first.txt',
      'FROM first AS second',
      'RUN echo "[$GLOBAL] [$LOCAL]" > /second.txt',
      'ARG GLOBAL',
      'ARG LOCAL',
      'RUN echo "[$GLOBAL] [$LOCAL]" > /second-redeclared.txt',
      'FROM busybox:1',
      'ARG GLOBAL=final-default',
      'ENV FROM_ARG=$GLOBAL',
      'COPY --from=second /*.txt /out/',
      'RUN env | sort > /out/env.txt',
    ),
  },
  {
    name: 'arg-build-args',
    base: 'busybox',
    covers: 'build args overriding ARG defaults, an ARG without default, ENV shadowing an ARG, undeclared build args',
    buildArgs: { GLOBAL: 'cli-global', LOCAL: 'cli-local', NODEFAULT: 'given', SHADOWED: 'from-cli', UNDECLARED: 'unused' },
    dockerfile: df(
      'ARG GLOBAL=g1',
      'FROM busybox:1',
      'ARG GLOBAL',
      'ARG LOCAL=l1',
      'ARG NODEFAULT',
      'ARG SHADOWED=default',
      'ENV SHADOWED=from-env',
      'ARG MISSING',
      'RUN echo "$GLOBAL|$LOCAL|$NODEFAULT|$SHADOWED|[$MISSING]|[$UNDECLARED]" > /args.txt',
      'LABEL global=$GLOBAL local=$LOCAL',
    ),
  },
  {
    name: 'platform-args',
    base: 'busybox',
    covers: 'automatic platform ARGs (TARGETPLATFORM, TARGETOS, TARGETARCH, BUILDPLATFORM) once declared, and unset before',
    dockerfile: df(
      'FROM busybox:1',
      'RUN echo "[$TARGETPLATFORM]" > /before.txt',
      'ARG TARGETPLATFORM',
      'ARG TARGETOS',
      'ARG TARGETARCH',
      'ARG BUILDPLATFORM',
      'RUN echo "$TARGETPLATFORM $TARGETOS $TARGETARCH $BUILDPLATFORM" > /platform.txt',
    ),
  },
  {
    name: 'default-path',
    base: 'busybox',
    covers: 'the default PATH a base without Env gets, and ENV PATH=/x:$PATH',
    dockerfile: df('FROM busybox:1', 'RUN echo "$PATH" > /path-before.txt', 'ENV PATH=/opt/tools/bin:$PATH', 'RUN echo "$PATH" > /path-after.txt'),
  },
  {
    name: 'run-environment',
    base: 'busybox',
    covers: 'the environment a RUN step sees (HOME, PATH, PWD, ARGs, ENV) as root and as another user',
    dockerfile: df('FROM busybox:1', 'ARG A=arg', 'ENV E=env', 'RUN env | sort > /root-env.txt', 'USER app', 'RUN env | sort > /tmp/app-env.txt && id > /tmp/id.txt'),
  },
  // ---------------------------------------------------------------- USER and WORKDIR
  {
    name: 'workdir-create',
    base: 'busybox',
    covers: 'WORKDIR creating a directory and its parents, relative WORKDIRs, WORKDIR on an existing directory',
    dockerfile: df('FROM busybox:1', 'WORKDIR /a/b/c', 'WORKDIR d', 'WORKDIR ../e', 'RUN pwd > /pwd.txt', 'WORKDIR /tmp', 'WORKDIR /empty-never-used'),
  },
  {
    name: 'workdir-user-owned',
    base: 'busybox',
    covers: 'WORKDIR after USER (by name and by uid:gid) creating directories owned by that user; RUN writing there as that user',
    dockerfile: df('FROM busybox:1', 'USER app', 'WORKDIR /srv/app/deep', 'RUN touch made-by-app && id > id.txt', 'USER 1000:1000', 'WORKDIR /home/app/x/y', 'USER 2000:2000', 'WORKDIR /opt/numeric'),
  },
  {
    name: 'user-forms',
    base: 'busybox',
    covers: 'USER by name, name:group, uid, uid:gid; RUN as that user; the config User',
    dockerfile: df('FROM busybox:1', 'USER app:app', 'RUN id > /tmp/1.txt', 'USER 1000', 'RUN id > /tmp/2.txt', 'USER root:app', 'RUN id > /3.txt', 'USER app'),
  },
  // ---------------------------------------------------------------- RUN
  {
    name: 'run-deletes-opaque',
    base: 'busybox',
    covers: 'RUN deleting base files and directories, and replacing a directory (rm -rf dir && mkdir dir: an opaque directory)',
    dockerfile: df(
      'FROM busybox:1',
      'RUN mkdir -p /data/keep /data/old && echo 1 > /data/old/f && echo k > /data/keep/k',
      'RUN rm /etc/group && rm -rf /data/old /usr/sbin',
      'RUN rm -rf /home && mkdir /home && echo new > /home/only',
      'RUN rm -rf /data && mkdir -p /data/keep',
    ),
  },
  {
    name: 'run-links-fifos',
    base: 'busybox',
    covers: 'RUN making hard links (also to a base file), relative symlinks, a fifo, and replacing a file with a link',
    dockerfile: df(
      'FROM busybox:1',
      'RUN mkdir /l && echo x > /l/file && ln /l/file /l/hard && ln -s file /l/rel && ln -s ../etc/passwd /l/up && mkfifo /l/fifo',
      'RUN rm /etc/group && ln -s passwd /etc/group',
      'RUN ln /bin/busybox /l/busybox-hard',
    ),
  },
  {
    name: 'run-absolute-symlink',
    base: 'busybox',
    covers: 'a RUN leaving one absolute symlink that resolves inside the image',
    dockerfile: df('FROM busybox:1', 'RUN ln -s /etc/passwd /abs-link'),
  },
  {
    name: 'run-dangling-symlink',
    base: 'busybox',
    covers: 'a RUN leaving one dangling symlink (as many packages do)',
    dockerfile: df('FROM busybox:1', 'RUN ln -s /nonexistent/target /dangling'),
  },
  {
    name: 'run-hardlink-chown',
    base: 'busybox',
    covers: 'a RUN changing owner and mode through one name of a hard-linked file: every name shows it',
    dockerfile: df('FROM busybox:1', 'RUN mkdir /hl && echo x > /hl/a && ln /hl/a /hl/b && chmod 4755 /hl/a && chown 1000:1000 /hl/b && ln /hl/b /hl/c'),
  },
  {
    name: 'run-modes',
    base: 'busybox',
    covers: 'RUN chmod u+s, g+s, +t, mode 000, chown to other users, on new and base files',
    dockerfile: df(
      'FROM busybox:1',
      'RUN mkdir /m && echo x > /m/suid && chmod u+s /m/suid && mkdir /m/sgid && chmod g+s /m/sgid && mkdir /m/sticky && chmod +t /m/sticky',
      'RUN echo z > /m/zero && chmod 000 /m/zero && mkdir /m/zerodir && chmod 000 /m/zerodir && chown 1000:1000 /m/suid && chmod u+s /m/suid',
      'RUN chmod 4755 /bin/busybox && chown 1000:1000 /home/app && chmod 700 /root',
    ),
  },
  {
    name: 'run-odd-names',
    base: 'busybox',
    covers: 'files a RUN step creates with spaces, a newline, unicode, a 255-byte name and a path over 400 bytes',
    dockerfile: df(
      'FROM busybox:1',
      `RUN mkdir /o && cd /o && touch "with space" "$(printf 'new\\nline')" "ünï" "${long('n', 255)}" && mkdir -p "${long('p', 200)}/${long('q', 200)}" && touch "${long('p', 200)}/${long('q', 200)}/f"`,
    ),
  },
  {
    name: 'run-on-bare-rootfs',
    base: 'busybox',
    covers: 'a RUN (as the default user, root) on a tree with no /etc/passwd at all',
    dockerfile: df('FROM busybox:1 AS tools', 'FROM scratch', 'COPY --from=tools /bin /bin', 'RUN ["/bin/busybox", "sh", "-c", "echo ran > /ran.txt"]'),
  },
  {
    name: 'run-non-utf8-name',
    base: 'busybox',
    covers: 'a file a RUN step creates whose name is not UTF-8 (a 0xff byte)',
    dockerfile: df('FROM busybox:1', "RUN mkdir /o && touch \"/o/$(printf 'bad\\377byte')\""),
  },
  {
    name: 'run-without-mountpoints',
    base: 'busybox',
    covers: 'a RUN on a tree with /etc but without /dev, /proc, /sys, /etc/hosts or /etc/resolv.conf: which mount points stay in the layer',
    dockerfile: df('FROM busybox:1 AS tools', 'FROM scratch', 'COPY --from=tools /bin /bin', 'COPY --from=tools /etc/passwd /etc/group /etc/', 'RUN echo ran > /ran.txt'),
  },
  {
    name: 'run-shell-and-exec',
    base: 'busybox',
    covers: 'RUN shell form with continuations and comments, exec form, failing-then-succeeding commands',
    dockerfile: df('FROM busybox:1', 'RUN echo one > /one.txt && \\', '    # a comment inside', '    echo two >> /one.txt', 'RUN ["/bin/sh", "-c", "echo exec > /exec.txt"]', 'RUN false || echo recovered > /recovered.txt'),
  },
  {
    name: 'run-mounts',
    base: 'busybox',
    covers: 'RUN --mount of type cache, tmpfs, bind (from the context and from a stage) and secret: nothing of them in the image',
    secrets: { token: 's3cr3t-value' },
    dockerfile: df(
      'FROM busybox:1 AS src',
      'RUN mkdir /s && echo data > /s/file',
      'FROM busybox:1',
      'RUN --mount=type=cache,target=/cache echo c > /cache/x && ls /cache > /cache-ls.txt',
      'RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && ls /scratch > /tmpfs-ls.txt',
      'RUN --mount=type=bind,from=src,source=/s,target=/mnt/s cat /mnt/s/file > /bound.txt',
      'RUN --mount=type=bind,source=ctx.txt,target=/ctx.txt cat /ctx.txt > /ctx-copy.txt',
      'RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-len.txt',
      'RUN --mount=type=secret,id=token,target=/etc/tok wc -c < /etc/tok > /secret-len2.txt',
    ),
    context: (c) => c.file('ctx.txt', 'from context\n'),
  },
  {
    name: 'run-mount-options',
    base: 'busybox',
    covers: 'RUN --mount options: a cache id shared by steps with the same uid/gid/mode (any sharing), not by one with other options; ADD --chmod',
    dockerfile: df(
      'FROM busybox:1',
      'RUN --mount=type=cache,id=shared,target=/c1,sharing=locked,uid=1000,gid=1000,mode=0700 stat -c "%u:%g %a" /c1 > /cache-owner.txt && echo one > /c1/one',
      'RUN --mount=type=cache,id=shared,target=/c2,sharing=private,uid=1000,gid=1000,mode=0700 ls /c2 > /seen-same-options.txt',
      'RUN --mount=type=cache,id=shared,target=/c3,sharing=locked ls /c3 > /seen-default-options.txt',
      'ADD --chmod=0751 dir/f /added-f',
    ),
    context: (c) => c.file('dir/f', 'f\n'),
  },
  {
    name: 'run-bind-rw',
    base: 'busybox',
    covers: 'RUN --mount=type=bind,rw of a context directory: writable in the step, its writes discarded',
    dockerfile: df('FROM busybox:1', 'RUN --mount=type=bind,source=dir,target=/b,rw echo written > /b/new && ls /b > /bind-ls.txt'),
    context: (c) => c.file('dir/f', 'f\n'),
  },
  // ---------------------------------------------------------------- stages
  {
    name: 'multistage-copy-from',
    base: 'busybox',
    covers: 'COPY --from a named stage and a stage index, with --chown, keeping links and special modes, following a named symlink',
    dockerfile: df(
      'FROM busybox:1 AS build',
      'RUN mkdir -p /out/sub && echo hi > /out/sub/f && ln -s f /out/sub/l && ln /out/sub/f /out/sub/h && chmod 4755 /out/sub/f && chown 1000:1000 /out/sub/h',
      'FROM busybox:1 AS other',
      'RUN echo other > /o',
      'FROM busybox:1',
      'COPY --from=build /out /copied',
      'COPY --from=1 /o /from-index',
      'COPY --from=build --chown=app:app /out/sub /owned',
      'COPY --from=build /out/sub/l /followed',
    ),
  },
  {
    name: 'copy-from-keeps-owner',
    base: 'busybox',
    covers: 'COPY --from a stage keeps the owners the files have there (only context files become root-owned)',
    dockerfile: df('FROM busybox:1 AS s', 'RUN mkdir /o && echo x > /o/f && chown 1000:1000 /o/f && mkdir /o/d && chown 2000:2000 /o/d', 'FROM busybox:1', 'COPY --from=s /o /o'),
  },
  {
    name: 'copy-from-image',
    base: 'busybox',
    covers: 'COPY --from an image that is not a stage of the Dockerfile',
    dockerfile: df('FROM busybox:1', 'COPY --from=busybox:1 /etc/passwd /from-image-passwd'),
  },
  {
    name: 'multistage-target',
    base: 'busybox',
    covers: 'building a target stage that is not the last, inheriting ENV, WORKDIR, USER and CMD from an earlier stage',
    target: 'middle',
    dockerfile: df(
      'FROM busybox:1 AS base',
      'ENV FROM_BASE=1',
      'WORKDIR /srv',
      'USER app',
      'CMD ["base-cmd"]',
      'FROM base AS middle',
      'RUN echo middle > /tmp/middle.txt',
      'ENV FROM_MIDDLE=2',
      'FROM middle AS last',
      'RUN echo last > /tmp/last.txt',
    ),
  },
  {
    name: 'duplicate-stage-names',
    base: 'busybox',
    covers: 'two stages with one name: the later one wins',
    dockerfile: df('FROM busybox:1 AS a', 'RUN echo first > /which.txt', 'FROM busybox:1 AS a', 'RUN echo second > /which.txt', 'FROM busybox:1', 'COPY --from=a /which.txt /which.txt'),
  },
  {
    name: 'from-scratch',
    base: 'busybox',
    covers: 'FROM scratch with COPY only: the tree and the default config (PATH) of an image with no base',
    dockerfile: df('FROM busybox:1 AS tools', 'FROM scratch', 'COPY --from=tools /bin/busybox /busybox', 'COPY a.txt /etc/a.txt', 'ENV X=1', 'CMD ["/busybox", "true"]'),
    context: (c) => c.file('a.txt', 'a\n'),
  },
  // ---------------------------------------------------------------- config instructions
  {
    name: 'config-expose-volume-label',
    base: 'busybox',
    covers: 'EXPOSE forms (tcp default, udp, several), VOLUME JSON and plain forms (a VOLUME makes no directory), LABEL forms, inherited labels',
    dockerfile: df(
      'FROM busybox:1 AS labelled',
      'LABEL inherited=yes overridden=old',
      'FROM labelled',
      'EXPOSE 80 443/udp 8080/tcp',
      'EXPOSE 9000',
      'VOLUME ["/data", "/logs"]',
      'VOLUME /plain /plain2',
      'LABEL a=1 "b c"="d e" overridden=new',
      'LABEL multi="line one \\',
      'line two"',
      'RUN (stat -c \'%A %U:%G %n\' /data /plain || echo some missing) > /volumes.txt 2>&1',
    ),
  },
  {
    name: 'config-healthcheck',
    base: 'busybox',
    covers: 'HEALTHCHECK with every option, shell and exec forms, HEALTHCHECK NONE in a later stage',
    dockerfile: df(
      'FROM busybox:1 AS with',
      'HEALTHCHECK --interval=5s --timeout=3s --start-period=1m --retries=2 CMD wget -q -O /dev/null http://localhost/ || exit 1',
      'FROM with AS exec',
      'HEALTHCHECK CMD ["/bin/true"]',
      'FROM exec',
      'HEALTHCHECK --interval=1m30s CMD true',
    ),
  },
  {
    name: 'config-healthcheck-none',
    base: 'busybox',
    covers: 'HEALTHCHECK NONE over an inherited healthcheck',
    dockerfile: df('FROM busybox:1 AS with', 'HEALTHCHECK CMD true', 'FROM with', 'HEALTHCHECK NONE'),
  },
  {
    name: 'config-shell',
    base: 'busybox',
    covers: 'SHELL changing how RUN, CMD and ENTRYPOINT shell forms run and are recorded',
    dockerfile: df('FROM busybox:1', 'SHELL ["/bin/sh", "-ec"]', 'RUN echo "$0 $-" > /shell.txt', 'SHELL ["/bin/busybox", "sh", "-c"]', 'RUN echo second > /second.txt', 'CMD echo shell form cmd', 'ENTRYPOINT echo shell form entrypoint'),
  },
  {
    name: 'config-onbuild',
    base: 'busybox',
    covers: 'ONBUILD triggers run when a later stage builds FROM the stage, not inherited further; ONBUILD recorded in the final config',
    dockerfile: df(
      'FROM busybox:1 AS parent',
      'ONBUILD RUN echo triggered > /onbuild.txt',
      'ONBUILD COPY a.txt /from-onbuild/',
      'FROM parent AS child',
      'RUN cat /onbuild.txt > /seen.txt',
      'FROM child',
      'ONBUILD RUN echo later',
      'ONBUILD ENV LATER=1',
    ),
    context: (c) => c.file('a.txt', 'a\n'),
  },
  {
    name: 'config-stopsignal',
    base: 'busybox',
    covers: 'STOPSIGNAL by name and by number, inherited and overridden',
    dockerfile: df('FROM busybox:1 AS a', 'STOPSIGNAL SIGTERM', 'FROM a AS b', 'FROM b', 'STOPSIGNAL 9'),
  },
  {
    name: 'config-entrypoint-cmd',
    base: 'busybox',
    covers: 'ENTRYPOINT and CMD in exec and shell forms; an ENTRYPOINT resetting an inherited CMD; CMD [] and ENTRYPOINT []',
    dockerfile: df('FROM busybox:1 AS a', 'CMD ["inherited"]', 'FROM a AS b', 'ENTRYPOINT ["/bin/echo", "ep"]', 'FROM b AS c', 'CMD ["arg1", "arg2"]', 'FROM c', 'ENTRYPOINT /bin/echo shell form', 'CMD ["kept?"]'),
  },
  {
    name: 'config-cmd-only',
    base: 'busybox',
    covers: 'CMD shell form alone, later overridden in exec form; ENTRYPOINT [] clearing',
    dockerfile: df('FROM busybox:1 AS a', 'ENTRYPOINT ["/bin/sh", "-c"]', 'CMD echo hi', 'FROM a', 'ENTRYPOINT []', 'CMD ["/bin/echo", "exec"]'),
  },
  {
    name: 'config-user-workdir-inherit',
    base: 'busybox',
    covers: 'USER, WORKDIR and ENV carried from one stage to the next and overridden',
    dockerfile: df('FROM busybox:1 AS a', 'USER app', 'WORKDIR /home/app', 'ENV A=1 B=2', 'FROM a', 'USER 1000:1000', 'ENV B=3', 'WORKDIR sub'),
  },
  {
    name: 'maintainer-and-platform',
    base: 'busybox',
    covers: 'MAINTAINER (the config author), FROM --platform with $BUILDPLATFORM and $TARGETPLATFORM, the platform ARGs in FROM',
    dockerfile: df(
      'FROM --platform=$BUILDPLATFORM busybox:1 AS build',
      'ARG TARGETARCH',
      'RUN echo "built for $TARGETARCH" > /arch.txt',
      'FROM --platform=$TARGETPLATFORM busybox:1',
      'MAINTAINER Strata Tests <tests@strata.invalid>',
      'COPY --from=build /arch.txt /arch.txt',
    ),
  },
  {
    name: 'escape-directive',
    base: 'busybox',
    covers: 'the escape parser directive (backtick), line continuations, comments between continued lines, empty continuation lines',
    dockerfile: ['# escape=`', 'FROM busybox:1', 'RUN echo a `', '  b `', '', '  c > /abc.txt', 'ENV P=C:\\path\\dir', 'COPY a.txt `', '  /a.txt', ''].join('\n'),
    context: (c) => c.file('a.txt', 'a\n'),
  },
  // ---------------------------------------------------------------- Debian: merged /usr, setuid binaries, many files
  {
    name: 'debian-copy-through-bin-symlink',
    base: 'debian',
    covers: 'COPY and ADD to /bin/… and /lib/… where /bin -> usr/bin: the file lands in /usr/bin and RUN still finds /bin/sh',
    dockerfile: df('FROM debian:minbase', 'COPY tool /bin/tool', 'ADD tool2 /sbin/', 'COPY lib.conf /lib/extra/', 'RUN /bin/tool > /tool-out.txt && stat -c \'%A %U:%G %h %n\' /usr/bin/tool /usr/sbin/tool2 > /ls.txt'),
    context: (c) => c.file('tool', '#!/bin/sh\necho tool ran\n', 0o755).file('tool2', '#!/bin/sh\n', 0o755).file('lib.conf', 'x\n'),
  },
  {
    name: 'debian-workdir-through-symlink',
    base: 'debian',
    covers: 'WORKDIR and COPY into a path through the /lib and /bin symlinks, and USER owning new directories there',
    dockerfile: df('FROM debian:minbase', 'WORKDIR /lib/myapp', 'COPY a.txt .', 'USER nobody', 'WORKDIR /bin/subdir-as-nobody', 'USER root', 'RUN stat -c \'%A %U:%G %n\' /usr/lib/myapp /usr/bin/subdir-as-nobody > /ls.txt'),
    context: (c) => c.file('a.txt', 'a\n'),
  },
  {
    name: 'debian-setuid-and-users',
    base: 'debian',
    covers: 'useradd/groupadd touching passwd, shadow and their backups; setuid binaries of the base kept; chmod u-s/u+s on base binaries',
    dockerfile: df('FROM debian:minbase', 'RUN groupadd -g 1500 grp && useradd -m -u 1500 -g grp -s /bin/bash user1', 'RUN chmod u-s /usr/bin/passwd && chmod u+s /usr/bin/env', 'USER user1', 'WORKDIR /home/user1/work', 'RUN id > id.txt'),
  },
  {
    name: 'debian-many-files',
    base: 'debian',
    covers: 'a RUN step making 3,000 files and deleting a large base directory (/usr/share/doc), and an opaque /usr/share/locale',
    dockerfile: df(
      'FROM debian:minbase',
      'RUN mkdir /many && cd /many && for i in $(seq 1 3000); do echo $i > f$i; done',
      'RUN rm -rf /usr/share/doc /var/lib/dpkg/info/*.md5sums',
      'RUN rm -rf /usr/share/locale && mkdir /usr/share/locale && touch /usr/share/locale/only',
    ),
  },
  {
    name: 'debian-dangling-symlinks',
    base: 'debian',
    covers: 'a RUN leaving a link into /etc/alternatives that does not exist, as package scripts do',
    dockerfile: df('FROM debian:minbase', 'RUN ln -s /etc/alternatives/missing /usr/bin/alt-missing'),
  },
  {
    name: 'debian-hardlink-copy-up',
    base: 'debian',
    covers: 'a RUN changing one name of a hard-linked base file (/usr/bin/perl and perl5.*): the link is broken by the copy-up',
    dockerfile: df('FROM debian:minbase', "RUN echo >> /usr/bin/perl && stat -c '%h %n' /usr/bin/perl* > /perl-links.txt"),
  },
  {
    name: 'debian-run-xattrs',
    base: 'debian',
    covers: 'a RUN setting security.capability (setcap) and a user.* xattr: both kept in the layer',
    dockerfile: df(
      'FROM debian:minbase',
      'COPY setcap setfattr /usr/local/sbin/',
      'RUN cp /usr/bin/true /usr/local/bin/bind-low && setcap cap_net_bind_service+ep /usr/local/bin/bind-low && echo n > /noted && setfattr -n user.note -v hello /noted',
    ),
    // The host's own binaries: the host is Debian bookworm too, and the base has their libcap2 and libc.
    context: (c) => c.file('setcap', readFileSync('/usr/sbin/setcap'), 0o755).file('setfattr', readFileSync('/usr/bin/setfattr'), 0o755),
  },
  {
    name: 'debian-default-path-and-env',
    base: 'debian',
    covers: 'the default PATH and HOME on a Debian base, bash as SHELL, and a RUN using them',
    dockerfile: df('FROM debian:minbase', 'SHELL ["/bin/bash", "-o", "pipefail", "-c"]', 'RUN echo "$PATH|$HOME|$BASH_VERSION" | cut -c1-80 > /env.txt', 'ENV PATH=/opt/bin:$PATH', 'RUN command -v ls > /which-ls.txt'),
  },
];

// Cases where Strata's image still differs from BuildKit's (dockerd 20.10). Each entry holds the
// differences exactly as the suite reports them, so the case fails as soon as the difference
// changes, and in particular when an engine fix makes it go away: then delete the entry (and its
// line in docs/differential.md). Every case not named here must give the same tree and config.
export interface KnownDifference {
  /** Why the difference is there: an open bug (with its issue) or a justified difference. */
  reason: string;
  /** The difference lines compareImages gives (or `strata build failed: …`), in its order. */
  observed: string[];
}

/** The reasons, one per bug or justified difference; docs/differential.md lists the same. */
export const REASONS = {
  NO_DEFAULT_PATH: "open bug (issue 11): a base without Env gets no default PATH; BuildKit adds PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin to the config (and `ENV PATH=/x:$PATH` then gives `/x:` here)",
  CHOWN_PARENTS: "open bug (issue 11): COPY/ADD --chown leaves the parent directories it creates owned by root; BuildKit gives them the --chown owner",
  SYMLINK_SOURCE: "open bug (issue 11): a symlink named as a COPY source is copied as a link; BuildKit copies what it points to (a file, or a directory's contents)",
  CONTEXT_ABS_SYMLINK: "open bug: a context holding a symlink to an absolute path is refused as a whole (\"symlink target … is absolute\"); BuildKit takes it and COPY keeps the link as it is",
  HARDLINKS_COPY: "open bug: COPY (from the context, and --from a stage) turns hard links into separate files; BuildKit keeps them linked",
  ADD_ARCHIVE: "open bug (issue 11): ADD of a local .tar/.tar.gz copies the archive instead of unpacking it (owners from the archive, --chown applied to the entries)",
  ENV_SAME_LINE: "open bug (issue 11): in `ENV A=2 B=$A` B gets the new A; in BuildKit every pair of one ENV sees the values from before it",
  ARG_FROM_STAGE: "open bug (issue 11): `FROM <earlier stage>` does not carry that stage's ARG values along as BuildKit does",
  WORKDIR_CREATE: "open bug (issue 11): WORKDIR makes no directory; BuildKit creates it and its missing parents, owned by the current USER (here a directory appears only when a later RUN uses it as cwd, created by runc as the RUN's user)",
  GETFATTR: "open bug (issue 11): a RUN that leaves a symlink whose target is not in that step's own upper directory (dangling, or a relative link to a base file such as ../etc/passwd) fails with \"internal error: getfattr … No such file or directory\"; an absolute link passes only because its target happens to exist on the worker host",
  NON_UTF8: "open bug (issue 11, item 4): a RUN that creates a name that is not UTF-8 fails with an internal lstat ENOENT (the name is decoded and re-encoded)",
  NO_PASSWD: "open bug: RUN on a tree without /etc/passwd fails (\"unable to find user root\"); BuildKit runs as uid 0 when the user is root or empty",
  MOUNT_STUBS: "justified: dockerd 20.10's BuildKit (v0.8) leaves the mount points runc creates for a RUN (/dev, /proc, /sys, --mount targets) in the layer as empty directories; Strata removes them as BuildKit's mount stub cleaner does since v0.10 (libs/runtime/src/mount-stubs.ts)",
  SCRATCH_WORKDIR: "open bug: an image FROM scratch gets WorkingDir \"/\" in BuildKit; Strata leaves it unset",
  COPY_FROM_IMAGE: "open bug: COPY --from=<image> (not a stage) is refused (\"copying from an image is not supported yet\"); BuildKit pulls the image's tree",
  COPY_FROM_OWNER: "open bug: COPY --from a stage makes every file root-owned; BuildKit keeps the owners the files have in that stage (only context files become 0:0)",
  DUPLICATE_STAGE: "open bug (issue 11): two stages with one name fail the build; BuildKit accepts it and the later stage wins",
  BIN_SYMLINK_DEST: "open bug (issue 11): COPY/ADD to a path through a symlink in the image (Debian's /bin -> usr/bin, /lib -> usr/lib) replaces the symlink with a directory, so the next RUN cannot start /bin/sh; BuildKit follows the symlink and writes /usr/bin/…",
  EMPTY_ENTRYPOINT: "open bug (minor): `ENTRYPOINT []` is recorded as an empty list; BuildKit leaves Entrypoint out (null). Same behaviour at run time, different config",
  BIND_RW: "missing feature: RUN --mount=type=bind,rw of the context is refused at build time (\"read-write binds of the build context are not supported yet\"); BuildKit gives the step a writable copy whose writes are discarded",
  ADD_URL: "missing feature: ADD <url> fails the build (\"remote sources … are not supported yet\"); BuildKit downloads the file (mode 0600, --chown applied, a remote archive not unpacked)",
  CACHE_OPTIONS: "open bug: BuildKit keeps one cache per id and uid/gid/mode (the frontend seeds a cache with uid/gid/mode from its own directory), so a step naming the same id with other options sees an empty cache; Strata shares one cache per id whatever the options",
  USER_XATTRS: "to decide: Strata's RUN diff keeps user.* xattrs; BuildKit 0.8 (docker's archive package) records only security.capability. Either record only security.capability as the peer does, or justify keeping them here",
} as const;

/** The line every case shows while the default PATH is missing (the base images set no Env). */
const ENV_WITHOUT_DEFAULT_PATH = "config.Env: strata (absent) | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]";

const because = (...keys: (keyof typeof REASONS)[]): string => keys.map((k) => REASONS[k]).join('; ');

export const KNOWN_DIFFERENCES: Record<string, KnownDifference> = {
  'copy-forms': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-onto-existing': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-chown': {
    reason: because('NO_DEFAULT_PATH', 'CHOWN_PARENTS'),
    observed: [
      "/made: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      "/made/by: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      "/made/by/copy: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      "/numeric: strata directory 0755 0:0 | docker directory 0755 2000:3000",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-chmod': {
    reason: because('NO_DEFAULT_PATH', 'CHOWN_PARENTS'),
    observed: [
      "/m/new: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      "/m/new/deep: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-context-owner': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-symlink-sources': {
    reason: because('NO_DEFAULT_PATH', 'SYMLINK_SOURCE'),
    observed: [
      "/explicit-dir/dirlink: strata symlink 0777 0:0 -> \"realdir\" | docker (absent)",
      "/explicit-dir/f: strata (absent) | docker file 0644 0:0 size=2 sha256=092fcfbbcfca",
      "/explicit/link: strata symlink 0777 0:0 -> \"target.txt\" | docker file 0644 0:0 size=11 sha256=5ef847a03adf",
      "/renamed-link: strata symlink 0777 0:0 -> \"target.txt\" | docker file 0644 0:0 size=11 sha256=5ef847a03adf",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'context-absolute-symlink': {
    reason: because('CONTEXT_ABS_SYMLINK'),
    observed: [
      "strata build failed: the build context was refused: refusing tar entry \"./tree/abs\": symlink target \"/etc/passwd\" is absolute",
    ],
  },
  'copy-special-modes': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-hardlinks': {
    reason: because('NO_DEFAULT_PATH', 'HARDLINKS_COPY'),
    observed: [
      "/h/one/a: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/b\",\"/h/two/c\"]",
      "/h/one/b: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/a\",\"/h/two/c\"]",
      "/h/two/c: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/a\",\"/h/one/b\"]",
      "/only-one/a: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/only-one/b\"]",
      "/only-one/b: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/only-one/a\"]",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-xattrs': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'names-unicode-spaces': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'names-long': {
    reason: because('NO_DEFAULT_PATH', 'HARDLINKS_COPY'),
    observed: [
      "/l/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee/over-100.txt: strata file 0644 0:0 size=4 sha256=eea8254c7500 | docker file 0644 0:0 size=4 sha256=eea8254c7500 hardlinked=[\"/l/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\"]",
      "/l/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh: strata file 0644 0:0 size=4 sha256=eea8254c7500 | docker file 0644 0:0 size=4 sha256=eea8254c7500 hardlinked=[\"/l/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee/over-100.txt\"]",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'add-local-archives': {
    reason: because('NO_DEFAULT_PATH', 'ADD_ARCHIVE'),
    observed: [
      "/etc/owned/d: strata (absent) | docker directory 0755 1000:1000",
      "/etc/owned/d/f: strata (absent) | docker file 0644 1000:1000 size=2 sha256=092fcfbbcfca",
      "/etc/owned/owned.tar: strata file 0644 0:0 size=10240 sha256=1a14498ffc6c | docker (absent)",
      "/etc/owned/owned.txt: strata (absent) | docker file 0644 1000:1000 size=6 sha256=33bff9108736",
      "/gz/bin: strata (absent) | docker directory 0755 0:0",
      "/gz/bin/tool: strata (absent) | docker file 4755 0:0 size=10 sha256=a8076d3d28d2",
      "/gz/gz.txt: strata (absent) | docker file 0644 0:0 size=3 sha256=5abe2ab7258e",
      "/gz/packed.tar.gz: strata file 0644 0:0 size=183 sha256=8909491ebd3d | docker (absent)",
      "/unpacked/emptydir: strata (absent) | docker directory 0700 0:0",
      "/unpacked/in-tar.txt: strata (absent) | docker file 0644 0:0 size=7 sha256=3cc9977660e7",
      "/unpacked/plain.tar: strata file 0644 0:0 size=10240 sha256=743c9e1ded68 | docker (absent)",
      "/unpacked/sub: strata (absent) | docker directory 0755 0:0",
      "/unpacked/sub/deep.txt: strata (absent) | docker file 0600 0:0 size=5 sha256=64896f89fd11",
      "/unpacked/sub/link: strata (absent) | docker symlink 0777 0:0 -> \"deep.txt\"",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'add-url': {
    reason: because('ADD_URL'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: ADD: remote sources (\"{{HTTP}}/files/hello.txt\") are not supported yet",
    ],
  },
  'add-archive-chown': {
    reason: because('NO_DEFAULT_PATH', 'ADD_ARCHIVE', 'CHOWN_PARENTS'),
    observed: [
      "/chowned: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      "/chowned/d: strata (absent) | docker directory 0755 4000:4000",
      "/chowned/d/g: strata (absent) | docker file 0644 4000:4000 size=2 sha256=768c71d785bf",
      "/chowned/f: strata (absent) | docker file 0644 4000:4000 size=2 sha256=092fcfbbcfca",
      "/chowned/owned.tar.gz: strata file 0644 1000:1000 size=159 sha256=1a9be6520284 | docker (absent)",
      "/p: strata directory 0755 0:0 | docker directory 0755 1000:1000",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'dockerignore-exceptions': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'dockerignore-dockerfile': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'env-expansion': {
    reason: because('NO_DEFAULT_PATH', 'ENV_SAME_LINE'),
    observed: [
      "/env.txt: strata file 0644 0:0 size=88 sha256=0c7688ed1440 | docker file 0644 0:0 size=88 sha256=2f24f4c3139e",
      "config.Env: strata [\"A=2\",\"B=2\",\"C=2\",\"D=dflt\",\"E=2\",\"F=\",\"G=alt\",\"H=quoted 2\",\"I=single $A\",\"J=$A\",\"K=a b\",\"L=2-legacy form\",\"M=2x2y\",\"N=22\",\"O=pre-2-post\",\"EMPTY=\",\"Q=\",\"R=was-empty\",\"T=\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"A=2\",\"B=1\",\"C=1\",\"D=dflt\",\"E=2\",\"F=\",\"G=alt\",\"H=quoted 2\",\"I=single $A\",\"J=$A\",\"K=a b\",\"L=2-legacy form\",\"M=2x1y\",\"N=21\",\"O=pre-2-post\",\"EMPTY=\",\"Q=\",\"R=was-empty\",\"T=\"]",
    ],
  },
  'env-in-instructions': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "config.Env: strata [\"DIR=/srv/app\",\"DEST=copied.txt\",\"WHO=app\",\"PORT=8080\",\"SIG=SIGQUIT\",\"VOL=/data\",\"NAME=strata\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"DIR=/srv/app\",\"DEST=copied.txt\",\"WHO=app\",\"PORT=8080\",\"SIG=SIGQUIT\",\"VOL=/data\",\"NAME=strata\"]",
    ],
  },
  'arg-scope-stages': {
    reason: because('NO_DEFAULT_PATH', 'ARG_FROM_STAGE'),
    observed: [
      "/out/second-redeclared.txt: strata file 0644 0:0 size=8 sha256=e75eecdb9d7b | docker file 0644 0:0 size=10 sha256=b41c384bc641",
      "/out/second.txt: strata file 0644 0:0 size=6 sha256=7a88ba9df5a6 | docker file 0644 0:0 size=10 sha256=b41c384bc641",
      "config.Env: strata [\"FROM_ARG=final-default\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"FROM_ARG=final-default\"]",
    ],
  },
  'arg-build-args': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "config.Env: strata [\"SHADOWED=from-env\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"SHADOWED=from-env\"]",
    ],
  },
  'platform-args': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'default-path': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "/path-after.txt: strata file 0644 0:0 size=16 sha256=f1a8dfe0c2bd | docker file 0644 0:0 size=76 sha256=278dfee15a2d",
      "config.Env: strata [\"PATH=/opt/tools/bin:\"] | docker [\"PATH=/opt/tools/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]",
    ],
  },
  'run-environment': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "config.Env: strata [\"E=env\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"E=env\"]",
    ],
  },
  'workdir-create': {
    reason: because('NO_DEFAULT_PATH', 'WORKDIR_CREATE'),
    observed: [
      "/a/b/c/d: strata (absent) | docker directory 0755 0:0",
      "/empty-never-used: strata (absent) | docker directory 0755 0:0",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'workdir-user-owned': {
    reason: because('NO_DEFAULT_PATH', 'WORKDIR_CREATE'),
    observed: [
      "/home/app/x: strata (absent) | docker directory 0755 1000:1000",
      "/home/app/x/y: strata (absent) | docker directory 0755 1000:1000",
      "/opt: strata (absent) | docker directory 0755 2000:2000",
      "/opt/numeric: strata (absent) | docker directory 0755 2000:2000",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'user-forms': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-deletes-opaque': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-links-fifos': {
    reason: because('GETFATTR'),
    observed: [
      "strata build failed: internal error: getfattr -R -P -d -m - -e hex . failed (exit 1): getfattr: ./l/up: No such file or directory",
    ],
  },
  'run-absolute-symlink': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-dangling-symlink': {
    reason: because('GETFATTR'),
    observed: [
      "strata build failed: internal error: getfattr -R -P -d -m - -e hex . failed (exit 1): getfattr: ./dangling: No such file or directory",
    ],
  },
  'run-hardlink-chown': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-modes': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-odd-names': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-on-bare-rootfs': {
    reason: because('NO_PASSWD'),
    observed: [
      "strata build failed: line 4: Dockerfile:4: RUN: unable to find user root: no matching entries in the image's /etc/passwd",
    ],
  },
  'run-non-utf8-name': {
    reason: because('NON_UTF8'),
    observed: [
      "strata build failed: internal error: ENOENT: no such file or directory, lstat '<worker-data>/runtime/snapshots/<id>/upper/o/bad�byte'",
    ],
  },
  'run-without-mountpoints': {
    reason: because('MOUNT_STUBS', 'SCRATCH_WORKDIR'),
    observed: [
      "/dev: strata (absent) | docker directory 0755 0:0",
      "/proc: strata (absent) | docker directory 0755 0:0",
      "/sys: strata (absent) | docker directory 0755 0:0",
      "config.WorkingDir: strata (absent) | docker \"/\"",
    ],
  },
  'run-shell-and-exec': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-mounts': {
    reason: because('NO_DEFAULT_PATH', 'MOUNT_STUBS'),
    observed: [
      "/cache: strata (absent) | docker directory 0755 0:0",
      "/mnt: strata (absent) | docker directory 0755 0:0",
      "/mnt/s: strata (absent) | docker directory 0755 0:0",
      "/run: strata (absent) | docker directory 0755 0:0",
      "/run/secrets: strata (absent) | docker directory 0755 0:0",
      "/scratch: strata (absent) | docker directory 0755 0:0",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-mount-options': {
    reason: because('NO_DEFAULT_PATH', 'MOUNT_STUBS', 'CACHE_OPTIONS'),
    observed: [
      "/c1: strata (absent) | docker directory 0755 0:0",
      "/c2: strata (absent) | docker directory 0755 0:0",
      "/c3: strata (absent) | docker directory 0755 0:0",
      "/seen-default-options.txt: strata file 0644 0:0 size=4 sha256=2c8b08da5ce6 | docker file 0644 0:0 size=0 sha256=e3b0c44298fc",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'run-bind-rw': {
    reason: because('BIND_RW'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: RUN: --mount=type=bind,source=dir,target=/b,rw: read-write binds of the build context are not supported yet",
    ],
  },
  'multistage-copy-from': {
    reason: because('NO_DEFAULT_PATH', 'HARDLINKS_COPY', 'COPY_FROM_OWNER'),
    observed: [
      "/copied/sub/f: strata file 0755 0:0 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/copied/sub/h\"]",
      "/copied/sub/h: strata file 0755 0:0 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/copied/sub/f\"]",
      "/followed: strata file 0755 0:0 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f",
      "/owned/f: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/owned/h\"]",
      "/owned/h: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/owned/f\"]",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-from-keeps-owner': {
    reason: because('NO_DEFAULT_PATH', 'COPY_FROM_OWNER'),
    observed: [
      "/o/d: strata directory 0755 0:0 | docker directory 0755 2000:2000",
      "/o/f: strata file 0644 0:0 size=2 sha256=73cb3858a687 | docker file 0644 1000:1000 size=2 sha256=73cb3858a687",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'copy-from-image': {
    reason: because('COPY_FROM_IMAGE'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: COPY: --from=busybox:1: copying from an image is not supported yet; name a stage of this Dockerfile",
    ],
  },
  'multistage-target': {
    reason: because('NO_DEFAULT_PATH', 'WORKDIR_CREATE'),
    observed: [
      "/srv: strata directory 0755 1000:1000 | docker directory 0755 0:0",
      "config.Env: strata [\"FROM_BASE=1\",\"FROM_MIDDLE=2\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"FROM_BASE=1\",\"FROM_MIDDLE=2\"]",
    ],
  },
  'duplicate-stage-names': {
    reason: because('DUPLICATE_STAGE'),
    observed: [
      "strata build failed: line 3: Dockerfile:3: Duplicate stage name \"a\", stage names should be unique",
    ],
  },
  'from-scratch': {
    reason: because('SCRATCH_WORKDIR'),
    observed: [
      "config.WorkingDir: strata (absent) | docker \"/\"",
    ],
  },
  'config-expose-volume-label': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-healthcheck': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-healthcheck-none': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-shell': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-onbuild': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-stopsignal': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-entrypoint-cmd': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'config-cmd-only': {
    reason: because('NO_DEFAULT_PATH', 'EMPTY_ENTRYPOINT'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
      "config.Entrypoint: strata [] | docker (absent)",
    ],
  },
  'config-user-workdir-inherit': {
    reason: because('NO_DEFAULT_PATH', 'WORKDIR_CREATE'),
    observed: [
      "/home/app/sub: strata (absent) | docker directory 0755 1000:1000",
      "config.Env: strata [\"A=1\",\"B=3\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"A=1\",\"B=3\"]",
    ],
  },
  'maintainer-and-platform': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'escape-directive': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "config.Env: strata [\"P=C:\\\\path\\\\dir\"] | docker [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\",\"P=C:\\\\path\\\\dir\"]",
    ],
  },
  'debian-copy-through-bin-symlink': {
    reason: because('BIN_SYMLINK_DEST'),
    observed: [
      "strata build failed: line 5: Dockerfile:5: RUN: the container for \"/bin/sh -c /bin/tool > /tool-out.txt && stat -c '%A %U:%G %h %n' /usr/bin/tool /usr/sbin/tool2 > /ls.txt\" could not start: runc run failed: unable to start container process: exec: \"/bin/sh\": stat /bin/sh: no such file or directory",
    ],
  },
  'debian-workdir-through-symlink': {
    reason: because('BIN_SYMLINK_DEST'),
    observed: [
      "strata build failed: line 7: Dockerfile:7: RUN: \"/bin/sh -c stat -c '%A %U:%G %n' /usr/lib/myapp /usr/bin/subdir-as-nobody > /ls.txt\" exited with code 1; last output:\nexec /bin/sh: no such file or directory",
    ],
  },
  'debian-setuid-and-users': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'debian-many-files': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'debian-dangling-symlinks': {
    reason: because('GETFATTR'),
    observed: [
      "strata build failed: internal error: getfattr -R -P -d -m - -e hex . failed (exit 1): getfattr: ./usr/bin/alt-missing: No such file or directory",
    ],
  },
  'debian-hardlink-copy-up': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'debian-run-xattrs': {
    reason: because('NO_DEFAULT_PATH', 'USER_XATTRS'),
    observed: [
      "/noted: strata file 0644 0:0 size=2 sha256=a4fb621495a0 xattrs={user.note=68656c6c6f} | docker file 0644 0:0 size=2 sha256=a4fb621495a0",
      ENV_WITHOUT_DEFAULT_PATH,
    ],
  },
  'debian-default-path-and-env': {
    reason: because('NO_DEFAULT_PATH'),
    observed: [
      "strata build failed: line 5: Dockerfile:5: RUN: \"/bin/bash -o pipefail -c command -v ls > /which-ls.txt\" exited with code 1",
    ],
  },
};

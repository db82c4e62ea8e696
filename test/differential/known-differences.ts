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
  CONTEXT_ABS_SYMLINK: "open bug: a context holding a symlink to an absolute path is refused as a whole (\"symlink target … is absolute\"); BuildKit takes it and COPY keeps the link as it is",
  HARDLINKS_COPY: "open bug: COPY (from the context, and --from a stage) turns hard links into separate files; BuildKit keeps them linked",
  MOUNT_STUBS: "justified: dockerd 20.10's BuildKit (v0.8) leaves the mount points runc creates for a RUN (/dev, /proc, /sys, --mount targets) in the layer as empty directories; Strata removes them as BuildKit's mount stub cleaner does since v0.10 (libs/runtime/src/mount-stubs.ts)",
  COPY_FROM_IMAGE: "missing feature: COPY --from=<image> (not a stage) is refused (\"takes files from an image, which is not supported by Strata yet\"); BuildKit pulls the image's tree",
  BIND_RW: "missing feature: RUN --mount=type=bind,rw of the context is refused at build time (\"read-write binds of the build context are not supported by Strata yet\"); BuildKit gives the step a writable copy whose writes are discarded",
  ADD_URL: "missing feature: ADD <url> fails the build (\"ADD from a URL … is not supported by Strata yet\"); BuildKit downloads the file (mode 0600, --chown applied, a remote archive not unpacked)",
  CACHE_OPTIONS: "open bug: BuildKit keeps one cache per id and uid/gid/mode (the frontend seeds a cache with uid/gid/mode from its own directory), so a step naming the same id with other options sees an empty cache; Strata shares one cache per id whatever the options",
  USER_XATTRS: "justified: Strata's RUN diff keeps user.* xattrs, as containerd's archive writer (newer BuildKit) does; dockerd 20.10's BuildKit records only security.capability (docker's archive package). security.capability itself compares equal",
} as const;

const because = (...keys: (keyof typeof REASONS)[]): string => keys.map((k) => REASONS[k]).join('; ');

export const KNOWN_DIFFERENCES: Record<string, KnownDifference> = {
  'context-absolute-symlink': {
    reason: because('CONTEXT_ABS_SYMLINK'),
    observed: [
      "strata build failed: the build context was refused: refusing tar entry \"./tree/abs\": symlink target \"/etc/passwd\" is absolute",
    ],
  },
  'copy-hardlinks': {
    reason: because('HARDLINKS_COPY'),
    observed: [
      "/h/one/a: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/b\",\"/h/two/c\"]",
      "/h/one/b: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/a\",\"/h/two/c\"]",
      "/h/two/c: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/h/one/a\",\"/h/one/b\"]",
      "/only-one/a: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/only-one/b\"]",
      "/only-one/b: strata file 0644 0:0 size=7 sha256=cf99975aa799 | docker file 0644 0:0 size=7 sha256=cf99975aa799 hardlinked=[\"/only-one/a\"]",
    ],
  },
  'names-long': {
    reason: because('HARDLINKS_COPY'),
    observed: [
      "/l/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee/over-100.txt: strata file 0644 0:0 size=4 sha256=eea8254c7500 | docker file 0644 0:0 size=4 sha256=eea8254c7500 hardlinked=[\"/l/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh\"]",
      "/l/hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh: strata file 0644 0:0 size=4 sha256=eea8254c7500 | docker file 0644 0:0 size=4 sha256=eea8254c7500 hardlinked=[\"/l/dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee/over-100.txt\"]",
    ],
  },
  'add-url': {
    reason: because('ADD_URL'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: ADD from a URL (\"{{HTTP}}/files/hello.txt\") is not supported by Strata yet; fetch it in a RUN step or add it to the build context",
    ],
  },
  'run-on-bare-rootfs': {
    reason: because('MOUNT_STUBS'),
    observed: [
      "/dev: strata (absent) | docker directory 0755 0:0",
      "/etc: strata (absent) | docker directory 0755 0:0",
      "/proc: strata (absent) | docker directory 0755 0:0",
      "/sys: strata (absent) | docker directory 0755 0:0",
    ],
  },
  'run-without-mountpoints': {
    reason: because('MOUNT_STUBS'),
    observed: [
      "/dev: strata (absent) | docker directory 0755 0:0",
      "/proc: strata (absent) | docker directory 0755 0:0",
      "/sys: strata (absent) | docker directory 0755 0:0",
    ],
  },
  'run-mounts': {
    reason: because('MOUNT_STUBS'),
    observed: [
      "/cache: strata (absent) | docker directory 0755 0:0",
      "/mnt: strata (absent) | docker directory 0755 0:0",
      "/mnt/s: strata (absent) | docker directory 0755 0:0",
      "/run: strata (absent) | docker directory 0755 0:0",
      "/run/secrets: strata (absent) | docker directory 0755 0:0",
      "/scratch: strata (absent) | docker directory 0755 0:0",
    ],
  },
  'run-mount-options': {
    reason: because('MOUNT_STUBS', 'CACHE_OPTIONS'),
    observed: [
      "/c1: strata (absent) | docker directory 0755 0:0",
      "/c2: strata (absent) | docker directory 0755 0:0",
      "/c3: strata (absent) | docker directory 0755 0:0",
      "/seen-default-options.txt: strata file 0644 0:0 size=4 sha256=2c8b08da5ce6 | docker file 0644 0:0 size=0 sha256=e3b0c44298fc",
    ],
  },
  'run-bind-rw': {
    reason: because('BIND_RW'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: RUN --mount=type=bind,source=dir,target=/b,rw: read-write binds of the build context are not supported by Strata yet; drop rw (a read-only bind is supported)",
    ],
  },
  'multistage-copy-from': {
    reason: because('HARDLINKS_COPY'),
    observed: [
      "/copied/sub/f: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/copied/sub/h\"]",
      "/copied/sub/h: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/copied/sub/f\"]",
      "/owned/f: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/owned/h\"]",
      "/owned/h: strata file 0755 1000:1000 size=3 sha256=98ea6e4f216f | docker file 0755 1000:1000 size=3 sha256=98ea6e4f216f hardlinked=[\"/owned/f\"]",
    ],
  },
  'copy-from-image': {
    reason: because('COPY_FROM_IMAGE'),
    observed: [
      "strata build failed: line 2: Dockerfile:2: COPY --from=busybox:1 takes files from an image, which is not supported by Strata yet; add a stage \"FROM busybox:1 AS <name>\" and use its name",
    ],
  },
  'debian-run-xattrs': {
    reason: because('USER_XATTRS'),
    observed: [
      "/noted: strata file 0644 0:0 size=2 sha256=a4fb621495a0 xattrs={user.note=68656c6c6f} | docker file 0644 0:0 size=2 sha256=a4fb621495a0",
    ],
  },
};

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
  MOUNT_STUBS: "justified: dockerd 20.10's BuildKit (v0.8) leaves the mount points runc creates for a RUN (/dev, /proc, /sys, --mount targets) in the layer as empty directories; Strata removes them as BuildKit's mount stub cleaner does since v0.10 (libs/runtime/src/mount-stubs.ts)",
  USER_XATTRS: "justified: Strata's RUN diff keeps user.* xattrs, as containerd's archive writer (newer BuildKit) does; dockerd 20.10's BuildKit records only security.capability (docker's archive package). security.capability itself compares equal",
} as const;

const because = (...keys: (keyof typeof REASONS)[]): string => keys.map((k) => REASONS[k]).join('; ');

export const KNOWN_DIFFERENCES: Record<string, KnownDifference> = {
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
    reason: because('MOUNT_STUBS'),
    observed: [
      "/c1: strata (absent) | docker directory 0755 0:0",
      "/c2: strata (absent) | docker directory 0755 0:0",
      "/c3: strata (absent) | docker directory 0755 0:0",
    ],
  },
  'run-bind-rw': {
    reason: because('MOUNT_STUBS'),
    observed: [
      "/b: strata (absent) | docker directory 0755 0:0",
    ],
  },
  'debian-run-xattrs': {
    reason: because('USER_XATTRS'),
    observed: [
      "/noted: strata file 0644 0:0 size=2 sha256=a4fb621495a0 xattrs={user.note=68656c6c6f} | docker file 0644 0:0 size=2 sha256=a4fb621495a0",
    ],
  },
};

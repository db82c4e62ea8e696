# idmap.pl USERNS_FILE SOURCE TARGET: mounts an idmapped clone of SOURCE at TARGET, shifted by the
# uid/gid maps of the user namespace USERNS_FILE (/proc/<pid>/ns/user). perl-base is in every
# Debian; the three syscalls (open_tree 428, move_mount 429, mount_setattr 442) have one number on
# every architecture. Used by bench/run-sandbox to measure the user-namespace design of ADR 0022.
use strict;
my ($userns, $source, $target) = @ARGV;
open(my $ns, '<', $userns) or die "open $userns: $!";
my $tree = syscall(428, -100, $source, 1 | 0x80000);     # open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | O_CLOEXEC)
die "open_tree $source: $!" if $tree < 0;
my $attr = pack('QQQQ', 0x00100000, 0, 0, fileno($ns));   # struct mount_attr { MOUNT_ATTR_IDMAP, 0, 0, userns fd }
my $empty = '';
syscall(442, $tree, $empty, 0x1000, $attr, length($attr)) == 0 or die "mount_setattr: $!";   # AT_EMPTY_PATH
syscall(429, $tree, $empty, -100, $target, 0x4) == 0 or die "move_mount $target: $!";        # MOVE_MOUNT_F_EMPTY_PATH

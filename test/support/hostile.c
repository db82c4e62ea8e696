/*
 * What a hostile tenant's RUN step tries, for test/sandbox.e2e.spec.ts. Each attempt prints one line
 * "<name> <outcome>", where the outcome is "ok" when the kernel let it happen, else the errno name
 * (or "empty" for a read that gave nothing). Built static by the test that uses it.
 *   hostile all WORKER_PID HOST_MARKER_PATH
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/keyctl.h>
#include <linux/reboot.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
  if (rc >= 0) printf("%s ok\n", name);
  else printf("%s %s\n", name, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
  fflush(stdout);
}

/* Reads up to 64 bytes: "empty" when the file gives nothing (a masked path), "ok" when it gives data. */
static void read_file(const char *name, const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) { report(name, -1); return; }
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf);
  close(fd);
  if (n == 0) printf("%s empty\n", name);
  else report(name, n);
  fflush(stdout);
}

static void write_file(const char *name, const char *path, const char *text) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) { report(name, -1); return; }
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  report(name, n < 0 ? -1 : 0);
}

/* What iputils' ping does without CAP_NET_RAW: an ICMP echo over a datagram socket to 127.0.0.1, and its reply. */
static long ping_loopback(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
  if (fd < 0) return -1;
  struct timeval timeout = { .tv_sec = 2 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  struct sockaddr_in to = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  unsigned char echo[16] = { 8 /* ICMP_ECHO */ }, reply[64];
  if (sendto(fd, echo, sizeof echo, 0, (struct sockaddr *)&to, sizeof to) < 0) return -1;
  ssize_t n = recv(fd, reply, sizeof reply, 0);
  close(fd);
  if (n < 1) return -1;
  if (reply[0] != 0 /* ICMP_ECHOREPLY */) { errno = EPROTO; return -1; }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 4 || strcmp(argv[1], "all") != 0) { fprintf(stderr, "usage: hostile all WORKER_PID HOST_MARKER_PATH\n"); return 2; }
  pid_t worker = (pid_t)atoi(argv[2]);
  char marker[4096];
  snprintf(marker, sizeof marker, "/proc/1/root%s", argv[3]);

  mkdir("/mnt/target", 0755);
  report("mount-tmpfs", mount("none", "/mnt/target", "tmpfs", 0, NULL));
  report("mount-proc", mount("proc", "/mnt/target", "proc", 0, NULL));
  report("mount-cgroup", mount("cgroup", "/mnt/target", "cgroup", 0, "memory"));
  report("init_module", syscall(SYS_init_module, "\0", 1, ""));
  int self = open("/proc/self/exe", O_RDONLY);
  report("finit_module", syscall(SYS_finit_module, self, "", 0));
  report("ptrace-worker", ptrace(PTRACE_ATTACH, worker, 0, 0));
  report("kill-worker", kill(worker, 0));
  report("host-marker-via-proc-1-root", access(marker, F_OK));
  write_file("cgroupfs-write-procs", "/sys/fs/cgroup/memory/cgroup.procs", "1\n");
  write_file("cgroupfs-write-limit", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1\n");
  report("keyctl", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 1));
  report("add_key", syscall(SYS_add_key, "user", "strata-test", "x", 1, KEY_SPEC_SESSION_KEYRING));
  union bpf_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.map_type = BPF_MAP_TYPE_ARRAY;
  attr.key_size = 4;
  attr.value_size = 4;
  attr.max_entries = 1;
  report("bpf", syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr));
  report("unshare-user", unshare(CLONE_NEWUSER));
  report("unshare-mount", unshare(CLONE_NEWNS));
  long cloned = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (cloned == 0) _exit(0);
  report("clone-newuser", cloned);
  report("setns", syscall(SYS_setns, self, 0));
  report("socket-raw-icmp", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
  report("socket-packet", socket(AF_PACKET, SOCK_RAW, 0));
  struct stat root;
  stat("/etc/hosts", &root); /* a bind mount from the worker's disk: its device is the host's disk */
  report("mknod-host-disk", mknod("/hostdisk", S_IFBLK | 0600, root.st_dev));
  int disk = open("/hostdisk", O_RDONLY);
  report("open-host-disk", disk);
  write_file("sysrq-trigger", "/proc/sysrq-trigger", "h");
  write_file("proc-sys-write", "/proc/sys/kernel/hostname", "hostile\n");
  read_file("read-kcore", "/proc/kcore");
  read_file("read-proc-keys", "/proc/keys");
  report("reboot", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, 0));
  report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, NULL, O_RDONLY));
  report("settimeofday", syscall(SYS_settimeofday, NULL, NULL));
  /* What ordinary programs need keeps working: ping over a datagram ICMP socket, fork, chroot. */
  report("ping-icmp-datagram", ping_loopback());
  pid_t child = fork();
  if (child == 0) _exit(0);
  report("fork", child < 0 ? -1 : waitpid(child, NULL, 0));
  report("chroot", chroot("/"));
  return 0;
}

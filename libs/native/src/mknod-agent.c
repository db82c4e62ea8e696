/*
 * strata-mknod-agent: the seccomp user-notification supervisor of a worker's user-namespaced RUN
 * steps (docs/adr/0022, "Device nodes in a user namespace").
 *
 * A process in a user namespace cannot make a character or block device (mknod wants CAP_MKNOD
 * over the host). The step's seccomp filter gives mknod and mknodat SCMP_ACT_NOTIFY and names this
 * agent's socket as linux.seccomp.listenerPath: runc connects once per step and sends the
 * container's state JSON with the filter's notify descriptor in SCM_RIGHTS. The agent polls every
 * step's descriptor; for each notification it
 *   - lets the kernel run anything that is not a device (FIFO, socket, regular file, the 0/0
 *     whiteout) with the caller's own credentials (SECCOMP_USER_NOTIF_FLAG_CONTINUE);
 *   - refuses (EPERM) a caller without CAP_MKNOD in its effective set, as Docker does for USER;
 *   - reads the path from the caller's memory, opens the caller's root, cwd (or dirfd) and mount
 *     namespace, then checks the notification is still live (pid reuse);
 *   - in a forked child: joins the caller's mount namespace, chroots to the caller's root, moves to
 *     its cwd/dirfd, takes the caller's umask, groups, fsuid and fsgid (the host's view of them), keeps
 *     CAP_MKNOD (and the caller's own DAC_OVERRIDE/DAC_READ_SEARCH) and calls mknodat: the path
 *     resolves exactly as the caller's would, never outside its root, and the node is owned as if the
 *     caller had made it (setgid directories and default ACLs included, by the kernel);
 *   - answers 0 or the child's errno.
 * Single-threaded: one poll() loop. Usage: strata-mknod-agent <socket path>; prints "ready" once
 * listening. Logs one line per refused or failed request to stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FDS 1024
#define MAX_GROUPS 256

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("strata-mknod-agent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* Which syscall a notification is: 1 mknod(path, mode, dev), 2 mknodat(dirfd, path, mode, dev), 0 unknown. */
static int classify(const struct seccomp_data *d) {
  int nr = d->nr;
  switch (d->arch) {
  case AUDIT_ARCH_X86_64:
    nr &= ~0x40000000; /* x32 uses the common numbers with __X32_SYSCALL_BIT */
    return nr == 133 ? 1 : nr == 259 ? 2 : 0;
  case AUDIT_ARCH_I386:
    return nr == 14 ? 1 : nr == 297 ? 2 : 0;
  case AUDIT_ARCH_AARCH64:
    return nr == 33 ? 2 : 0;
  case AUDIT_ARCH_ARM:
    return nr == 14 ? 1 : nr == 324 ? 2 : 0;
  default:
    return 0;
  }
}

static int is_32bit(const struct seccomp_data *d) {
  return d->arch == AUDIT_ARCH_I386 || d->arch == AUDIT_ARCH_ARM || (d->arch == AUDIT_ARCH_X86_64 && (d->nr & 0x40000000));
}

struct caller {
  uint64_t cap_eff;
  unsigned umask_;
  uid_t fsuid;
  gid_t fsgid;
  gid_t groups[MAX_GROUPS];
  int ngroups;
};

/* /proc/<pid>/status: CapEff, Umask, Uid/Gid (fs is the fourth), Groups; ids as the host sees them. */
static int read_status(pid_t pid, struct caller *c) {
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  int seen = 0;
  c->ngroups = 0;
  for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
    unsigned long a, b, cc, d;
    if (sscanf(line, "CapEff:\t%lx", &a) == 1) c->cap_eff = a, seen |= 1;
    else if (sscanf(line, "Umask:\t%lo", &a) == 1) c->umask_ = (unsigned)a, seen |= 2;
    else if (sscanf(line, "Uid:\t%lu\t%lu\t%lu\t%lu", &a, &b, &cc, &d) == 4) c->fsuid = (uid_t)d, seen |= 4;
    else if (sscanf(line, "Gid:\t%lu\t%lu\t%lu\t%lu", &a, &b, &cc, &d) == 4) c->fsgid = (gid_t)d, seen |= 8;
    else if (strncmp(line, "Groups:", 7) == 0) {
      char *p = line + 7, *end;
      while (c->ngroups < MAX_GROUPS) {
        unsigned long g = strtoul(p, &end, 10);
        if (end == p) break;
        c->groups[c->ngroups++] = (gid_t)g;
        p = end;
      }
    }
  }
  return seen == 15 ? 0 : -1;
}

/* The NUL-terminated path at `addr` in the caller's memory, at most PATH_MAX bytes with the NUL. */
static int read_path(pid_t pid, uint64_t addr, char *out) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/mem", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  size_t got = 0;
  while (got < PATH_MAX) {
    /* A short read stops at an unmapped page; keep reading page by page until the NUL. */
    ssize_t n = pread(fd, out + got, PATH_MAX - got, (off_t)(addr + got));
    if (n <= 0) {
      close(fd);
      return got > 0 && memchr(out, 0, got) ? 0 : -EFAULT;
    }
    if (memchr(out + got, 0, (size_t)n)) {
      close(fd);
      return 0;
    }
    got += (size_t)n;
  }
  close(fd);
  return -ENAMETOOLONG;
}

static int capset_effective(uint64_t effective) {
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  if (syscall(SYS_capget, &hdr, data) != 0) return -1;
  data[0].effective = (uint32_t)effective & data[0].permitted;
  data[1].effective = (uint32_t)(effective >> 32) & data[1].permitted;
  return (int)syscall(SYS_capset, &hdr, data);
}

/* In a forked child: the caller's mount namespace, root, cwd/dirfd, umask and file credentials, then mknodat. Returns an errno. */
static int make_node(int mntns, int rootfd, int dirfd, char *path, mode_t mode, dev_t dev, const struct caller *c) {
  if (setns(mntns, CLONE_NEWNS) != 0) return errno;
  if (fchdir(rootfd) != 0 || chroot(".") != 0) return errno;
  if (dirfd >= 0 ? fchdir(dirfd) != 0 : chdir("/") != 0) return errno;
  umask(c->umask_ & 0777);
  if (setgroups((size_t)c->ngroups, c->groups) != 0) return errno;
  setfsgid(c->fsgid);
  setfsuid(c->fsuid);
  if ((gid_t)setfsgid((gid_t)-1) != c->fsgid || (uid_t)setfsuid((uid_t)-1) != c->fsuid) return EPERM;
  /* A fsuid other than 0 drops the file capabilities from the effective set: keep CAP_MKNOD, and the
     caller's own DAC overrides (in its namespace they cover the ids it maps, which is all it can write). */
  uint64_t keep = 1ULL << CAP_MKNOD;
  keep |= c->cap_eff & ((1ULL << CAP_DAC_OVERRIDE) | (1ULL << CAP_DAC_READ_SEARCH));
  if (capset_effective(keep) != 0) return errno;
  /* The parent directory without magic links (/proc/<pid>/root, /proc/<pid>/fd/...), which would
     be followed with the agent's ptrace rights rather than the caller's; then the last component. */
  size_t len = strlen(path);
  int trailing = 0;
  while (len > 1 && path[len - 1] == '/') path[--len] = 0, trailing = 1;
  char *slash = strrchr(path, '/');
  const char *dir = ".", *base = path;
  if (slash) {
    *slash = 0;
    dir = slash == path ? "/" : path;
    base = slash + 1;
  }
  if (base[0] == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) return EEXIST;
  struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_NO_MAGICLINKS};
  int parent = (int)syscall(SYS_openat2, AT_FDCWD, dir, &how, sizeof how);
  if (parent < 0) return errno == ELOOP ? EPERM : errno;
  if (trailing) {
    struct stat st;
    return fstatat(parent, base, &st, AT_SYMLINK_NOFOLLOW) == 0 ? EEXIST : ENOENT;
  }
  if (mknodat(parent, base, mode, dev) != 0) return errno;
  return 0;
}

static void respond(int notify_fd, uint64_t id, int error, int cont) {
  struct seccomp_notif_resp resp;
  memset(&resp, 0, sizeof resp);
  resp.id = id;
  resp.error = error ? -error : 0;
  resp.flags = cont ? SECCOMP_USER_NOTIF_FLAG_CONTINUE : 0;
  if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) != 0 && errno != ENOENT)
    logf_("NOTIF_SEND: %s", strerror(errno));
}

static void handle(int notify_fd, struct seccomp_notif *req) {
  const struct seccomp_data *d = &req->data;
  pid_t pid = (pid_t)req->pid;
  int kind = classify(d);
  if (kind == 0) {
    logf_("pid %d: syscall %d of arch 0x%x is not mknod or mknodat: EPERM", pid, d->nr, d->arch);
    respond(notify_fd, req->id, EPERM, 0);
    return;
  }
  const __u64 *args = kind == 1 ? d->args : d->args + 1;
  uint64_t path_addr = args[0];
  mode_t mode = (mode_t)(args[1] & 0xffff); /* umode_t */
  unsigned int raw_dev = (unsigned int)args[2];
  if (is_32bit(d)) path_addr &= 0xffffffffULL;
  /* The kernel's new_decode_dev() of the syscall's unsigned dev. */
  unsigned major_ = (raw_dev & 0xfff00) >> 8, minor_ = (raw_dev & 0xff) | ((raw_dev >> 12) & 0xfff00);
  int type = mode & S_IFMT;
  if ((type != S_IFCHR && type != S_IFBLK) || (type == S_IFCHR && raw_dev == 0)) {
    respond(notify_fd, req->id, 0, 1); /* not a device, or overlay's whiteout: the kernel runs it as the caller */
    return;
  }

  struct caller c;
  char *path = malloc(PATH_MAX);
  char proc[64];
  int rootfd = -1, dirfd = -1, mntns = -1, error = 0;
  if (!path) {
    respond(notify_fd, req->id, ENOMEM, 0);
    return;
  }
  if (read_status(pid, &c) != 0) {
    error = ESRCH;
    goto out;
  }
  if (!(c.cap_eff & (1ULL << CAP_MKNOD))) {
    error = EPERM;
    goto out;
  }
  int r = read_path(pid, path_addr, path);
  if (r != 0) {
    error = -r;
    goto out;
  }
  if (path[0] == 0) {
    error = ENOENT;
    goto out;
  }
  snprintf(proc, sizeof proc, "/proc/%d/root", pid);
  rootfd = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
  snprintf(proc, sizeof proc, "/proc/%d/ns/mnt", pid);
  mntns = open(proc, O_RDONLY | O_CLOEXEC);
  if (rootfd < 0 || mntns < 0) {
    error = ESRCH;
    goto out;
  }
  if (path[0] != '/') {
    int at = (int)(uint32_t)d->args[0];
    if (kind == 1 || at == AT_FDCWD) snprintf(proc, sizeof proc, "/proc/%d/cwd", pid);
    else if (at < 0) {
      error = EBADF;
      goto out;
    } else snprintf(proc, sizeof proc, "/proc/%d/fd/%d", pid, at);
    dirfd = open(proc, O_PATH | O_CLOEXEC);
    if (dirfd < 0) {
      error = errno == ENOENT && kind == 2 ? EBADF : ESRCH;
      goto out;
    }
    struct stat st;
    if (fstat(dirfd, &st) != 0 || !S_ISDIR(st.st_mode)) {
      error = ENOTDIR;
      goto out;
    }
  }
  /* Everything read and opened belongs to the caller only if its syscall still waits: else the pid may be another process's. */
  if (ioctl(notify_fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) != 0) goto gone;

  pid_t child = fork();
  if (child < 0) {
    error = EAGAIN;
    goto out;
  }
  if (child == 0) _exit(make_node(mntns, rootfd, dirfd, path, mode, makedev(major_, minor_), &c));
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  error = WIFEXITED(status) ? WEXITSTATUS(status) : EIO;
  if (error != 0 && error != EEXIST && error != ENOENT && error != ENOTDIR && error != EROFS && error != EACCES)
    logf_("pid %d: mknod %s %c %u:%u: %s", pid, path, type == S_IFCHR ? 'c' : 'b', major_, minor_, strerror(error));
out:
  respond(notify_fd, req->id, error, 0);
gone:
  if (rootfd >= 0) close(rootfd);
  if (dirfd >= 0) close(dirfd);
  if (mntns >= 0) close(mntns);
  free(path);
}

/* One connection from runc: the state JSON (read and dropped) with the notify fd in SCM_RIGHTS. */
static int receive_fd(int conn) {
  char buf[65536];
  char control[CMSG_SPACE(sizeof(int) * 4)];
  struct iovec iov = {buf, sizeof buf};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return -1;
  int fd = -1;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int *fds = (int *)CMSG_DATA(cm);
    for (int i = 0; i < count; i++) {
      if (fd < 0) fd = fds[i];
      else close(fds[i]);
    }
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: strata-mknod-agent <socket path>\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  /* Descriptors the worker leaked to us (no CLOEXEC) stay the worker's: the agent holds only its own. */
  syscall(SYS_close_range, 3U, ~0U, 0U);
  /* Dies with the worker that started it: a restarted worker starts its own on the same socket. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return 1;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof addr.sun_path) {
    logf_("socket path too long: %s", argv[1]);
    return 2;
  }
  strcpy(addr.sun_path, argv[1]);
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  unlink(argv[1]);
  umask(0077);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 64) != 0) {
    logf_("cannot listen on %s: %s", argv[1], strerror(errno));
    return 1;
  }
  printf("ready\n");
  fflush(stdout);

  static struct pollfd fds[MAX_FDS];
  int nfds = 1;
  fds[0].fd = lfd;
  fds[0].events = POLLIN;
  struct seccomp_notif_sizes sizes;
  if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sizes) != 0) {
    logf_("SECCOMP_GET_NOTIF_SIZES: %s", strerror(errno));
    return 1;
  }
  struct seccomp_notif *req = calloc(1, sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req);
  size_t req_size = sizes.seccomp_notif > sizeof *req ? sizes.seccomp_notif : sizeof *req;
  if (!req) return 1;

  for (;;) {
    if (poll(fds, (nfds_t)nfds, -1) < 0) {
      if (errno == EINTR) continue;
      logf_("poll: %s", strerror(errno));
      return 1;
    }
    for (int i = nfds - 1; i >= 1; i--) {
      if (fds[i].revents & POLLIN) {
        memset(req, 0, req_size);
        if (ioctl(fds[i].fd, SECCOMP_IOCTL_NOTIF_RECV, req) == 0) handle(fds[i].fd, req);
      } else if (fds[i].revents & (POLLHUP | POLLERR | POLLNVAL)) {
        /* Every process of the step's filter is gone. */
        close(fds[i].fd);
        fds[i] = fds[--nfds];
      }
    }
    if (fds[0].revents & POLLIN) {
      int conn;
      while ((conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        struct timeval tv = {5, 0};
        setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        int fd = receive_fd(conn);
        close(conn);
        if (fd < 0) continue;
        if (nfds == MAX_FDS) {
          logf_("too many steps at once (%d): refusing a listener", MAX_FDS - 1);
          close(fd);
          continue;
        }
        fds[nfds].fd = fd;
        fds[nfds].events = POLLIN;
        fds[nfds].revents = 0;
        nfds++;
      }
    }
  }
}

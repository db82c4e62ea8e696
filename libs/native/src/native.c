// The worker's Linux syscalls that Node has no API for, so a RUN step costs no mount, umount,
// getfattr, setfattr or mknod process: mount(2), umount2(2), the l*xattr(2) family, mknod(2), and
// an idmapped bind mount (open_tree + mount_setattr(MOUNT_ATTR_IDMAP) + move_mount), and a batch
// of small files written in one thread-pool job (a layer's unpack).
// Plain N-API (node_api.h, version 8), no dependency. Errors are thrown as Node's fs errors are:
// an Error with code ('ENOENT'), errno (negative, as libuv gives it), syscall, path and dest.
// mount, umount and the idmapped mount run on libuv's thread pool (an unmount can wait on the
// filesystem) and return promises; the xattr calls and mknod are quick and synchronous.
#include <node_api.h>
#include <uv.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

// The new mount API's numbers are the same on every architecture (since Linux 5.2/5.12); glibc
// headers older than the kernel may not name them.
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 0x00000008
#endif

// struct mount_attr (linux/mount.h), under our own name: glibc's sys/mount.h and linux/mount.h
// disagree about which of them defines it.
struct strata_mount_attr {
  uint64_t attr_set;
  uint64_t attr_clr;
  uint64_t propagation;
  uint64_t userns_fd;
};

#define CHECK(call)                                                                   \
  do {                                                                                \
    if ((call) != napi_ok) {                                                          \
      napi_throw_error(env, "ERR_STRATA_NATIVE", "N-API call failed: " #call);        \
      return NULL;                                                                    \
    }                                                                                 \
  } while (0)

// ---- errors ---------------------------------------------------------------------------------

static napi_value make_errno_error(napi_env env, int err, const char *syscall, const char *path, const char *dest) {
  const char *code = strerrorname_np(err);
  if (code == NULL) code = "UNKNOWN";
  char description[128];
  snprintf(description, sizeof description, "%s", strerror(err));
  if (description[0] >= 'A' && description[0] <= 'Z' && !(description[1] >= 'A' && description[1] <= 'Z')) description[0] += 'a' - 'A';
  size_t size = strlen(code) + strlen(description) + strlen(syscall) + (path ? strlen(path) : 0) + (dest ? strlen(dest) : 0) + 32;
  char *message = malloc(size);
  if (message == NULL) return NULL;
  if (path && dest) snprintf(message, size, "%s: %s, %s '%s' -> '%s'", code, description, syscall, path, dest);
  else if (path) snprintf(message, size, "%s: %s, %s '%s'", code, description, syscall, path);
  else snprintf(message, size, "%s: %s, %s", code, description, syscall);

  napi_value code_value, message_value, error, value;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value);
  free(message);
  napi_create_error(env, code_value, message_value, &error);
  napi_create_int32(env, -err, &value);
  napi_set_named_property(env, error, "errno", value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, error, "syscall", value);
  if (path) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &value);
    napi_set_named_property(env, error, "path", value);
  }
  if (dest) {
    napi_create_string_utf8(env, dest, NAPI_AUTO_LENGTH, &value);
    napi_set_named_property(env, error, "dest", value);
  }
  return error;
}

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_value error = make_errno_error(env, err, syscall, path, NULL);
  if (error) napi_throw(env, error);
  else napi_throw_error(env, "ENOMEM", "out of memory");
  return NULL;
}

// ---- arguments ------------------------------------------------------------------------------

static napi_value get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_value undefined;
  CHECK(napi_get_undefined(env, &undefined));
  for (size_t i = argc; i < want; i++) argv[i] = undefined;
  return undefined;
}

// Throws node's TypeError for a bad argument: `The "<what>" argument <must>`, with `code`.
static void throw_argument_error(napi_env env, const char *code, const char *what, const char *must) {
  char message[160];
  snprintf(message, sizeof message, "The \"%s\" argument %s", what, must);
  napi_throw_type_error(env, code, message);
}

// A path or name from a string (UTF-8) or a Buffer (its bytes), as a malloc'd C string. NULL with
// a TypeError pending when it is neither, or holds a NUL byte. `nullable`: null/undefined give
// *out = NULL and succeed.
static int get_bytes(napi_env env, napi_value value, const char *what, int nullable, char **out) {
  *out = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok) return 0;
  if (nullable && (type == napi_null || type == napi_undefined)) return 1;
  size_t length = 0;
  if (type == napi_string) {
    if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) return 0;
    *out = malloc(length + 1);
    if (*out == NULL) return 0;
    napi_get_value_string_utf8(env, value, *out, length + 1, &length);
  } else {
    bool is_buffer = false;
    napi_is_buffer(env, value, &is_buffer);
    if (!is_buffer) {
      throw_argument_error(env, "ERR_INVALID_ARG_TYPE", what, "must be a string or a Buffer");
      return 0;
    }
    void *data;
    if (napi_get_buffer_info(env, value, &data, &length) != napi_ok) return 0;
    *out = malloc(length + 1);
    if (*out == NULL) return 0;
    memcpy(*out, data, length);
    (*out)[length] = '\0';
  }
  if (strlen(*out) != length) {
    free(*out);
    *out = NULL;
    throw_argument_error(env, "ERR_INVALID_ARG_VALUE", what, "must not contain a NUL byte");
    return 0;
  }
  return 1;
}

static int get_int64(napi_env env, napi_value value, const char *what, int64_t *out) {
  napi_valuetype type;
  napi_typeof(env, value, &type);
  if (type != napi_number) {
    throw_argument_error(env, "ERR_INVALID_ARG_TYPE", what, "must be a number");
    return 0;
  }
  return napi_get_value_int64(env, value, out) == napi_ok;
}

// ---- extended attributes (synchronous) --------------------------------------------------------

// The "path" and "name" arguments as C strings (both malloc'd); 0 with an error pending, and
// nothing left to free, when either is not a string or Buffer.
static int get_path_and_name(napi_env env, napi_value *argv, char **path, char **name) {
  if (!get_bytes(env, argv[0], "path", 0, path)) return 0;
  if (!get_bytes(env, argv[1], "name", 0, name)) {
    free(*path);
    *path = NULL;
    return 0;
  }
  return 1;
}

// Throws the errno error of `syscall` on `path` when `err` is not 0; frees `path` either way. For
// the end of a call that answers undefined.
static napi_value end_path_call(napi_env env, int err, const char *syscall, char *path) {
  if (err != 0) throw_errno(env, err, syscall, path);
  free(path);
  return NULL;
}

// llistxattr(path) when `name` is NULL, else lgetxattr(path, name), into a buffer of the size the
// call asks for, asked again while that size changes between the two calls (ERANGE: an xattr was
// added or grew). The bytes in *out (malloc'd; NULL when there are none) and their count, or -1
// with errno set.
static ssize_t read_xattr(const char *path, const char *name, char **out) {
  *out = NULL;
  for (;;) {
    ssize_t size = name ? lgetxattr(path, name, NULL, 0) : llistxattr(path, NULL, 0);
    if (size <= 0) return size;
    char *buffer = malloc((size_t)size);
    if (buffer == NULL) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t got = name ? lgetxattr(path, name, buffer, (size_t)size) : llistxattr(path, buffer, (size_t)size);
    if (got >= 0) {
      *out = buffer;
      return got;
    }
    int err = errno;
    free(buffer);
    errno = err;
    if (err != ERANGE) return -1;
  }
}

// llistxattr(path): string[] (the names of the path's own xattrs; a symlink is not followed).
static napi_value Llistxattr(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *path;
  if (!get_bytes(env, argv[0], "path", 0, &path)) return NULL;
  char *list;
  ssize_t size = read_xattr(path, NULL, &list);
  if (size < 0) return end_path_call(env, errno, "llistxattr", path);
  free(path);
  napi_value result;
  napi_create_array(env, &result);
  uint32_t index = 0;
  for (ssize_t at = 0; at < size;) {
    size_t length = strnlen(list + at, (size_t)(size - at));
    napi_value name;
    napi_create_string_utf8(env, list + at, length, &name);
    napi_set_element(env, result, index++, name);
    at += (ssize_t)length + 1;
  }
  free(list);
  return result;
}

// lgetxattr(path, name): Buffer (the value's bytes; ENODATA when the path has no such xattr).
static napi_value Lgetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char *path, *name;
  if (!get_path_and_name(env, argv, &path, &name)) return NULL;
  char *value;
  ssize_t size = read_xattr(path, name, &value);
  int err = errno;
  free(name);
  if (size < 0) return end_path_call(env, err, "lgetxattr", path);
  free(path);
  napi_value result;
  void *copy;
  napi_status status = napi_create_buffer_copy(env, (size_t)size, size > 0 ? value : "", &copy, &result);
  free(value);
  if (status != napi_ok) {
    napi_throw_error(env, "ERR_STRATA_NATIVE", "could not allocate a Buffer for an xattr value");
    return NULL;
  }
  return result;
}

// lsetxattr(path, name, value: Buffer, flags): undefined.
static napi_value Lsetxattr(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  char *path, *name;
  bool is_buffer = false;
  napi_is_buffer(env, argv[2], &is_buffer);
  if (!is_buffer) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"value\" argument must be a Buffer");
    return NULL;
  }
  void *value;
  size_t size;
  CHECK(napi_get_buffer_info(env, argv[2], &value, &size));
  int64_t flags = 0;
  napi_valuetype type;
  napi_typeof(env, argv[3], &type);
  if (type != napi_undefined && !get_int64(env, argv[3], "flags", &flags)) return NULL;
  if (!get_path_and_name(env, argv, &path, &name)) return NULL;
  int rc = lsetxattr(path, name, size > 0 ? value : "", size, (int)flags);
  int err = rc != 0 ? errno : 0;
  free(name);
  return end_path_call(env, err, "lsetxattr", path);
}

// lremovexattr(path, name): undefined.
static napi_value Lremovexattr(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  char *path, *name;
  if (!get_path_and_name(env, argv, &path, &name)) return NULL;
  int rc = lremovexattr(path, name);
  int err = rc != 0 ? errno : 0;
  free(name);
  return end_path_call(env, err, "lremovexattr", path);
}

// mknod(path, mode (file type bits included), major, minor): undefined.
static napi_value Mknod(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  int64_t mode, major_number, minor_number;
  if (!get_int64(env, argv[1], "mode", &mode) || !get_int64(env, argv[2], "major", &major_number) || !get_int64(env, argv[3], "minor", &minor_number)) return NULL;
  if (major_number < 0 || major_number > 0xfff || minor_number < 0 || minor_number > 0xfffff) {
    napi_throw_range_error(env, "ERR_OUT_OF_RANGE", "a device number is out of range (major 0-4095, minor 0-1048575)");
    return NULL;
  }
  char *path;
  if (!get_bytes(env, argv[0], "path", 0, &path)) return NULL;
  int rc = mknod(path, (mode_t)mode, makedev((unsigned int)major_number, (unsigned int)minor_number));
  return end_path_call(env, rc != 0 ? errno : 0, "mknod", path);
}

// ---- mounts (thread pool, promises) ---------------------------------------------------------

enum operation { OP_MOUNT, OP_UMOUNT, OP_IDMAPPED_BIND };

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  enum operation op;
  char *source;
  char *target;
  char *fstype;
  char *data;
  char *cwd;
  char *userns_path;
  int userns_fd;
  int recursive;
  unsigned long flags;
  // The failure, if any: errno, the syscall, and which of source/target it names.
  int err;
  const char *failed_syscall;
  const char *failed_path;
  const char *failed_dest;
} MountJob;

static void free_job(MountJob *job) {
  free(job->source);
  free(job->target);
  free(job->fstype);
  free(job->data);
  free(job->cwd);
  free(job->userns_path);
  free(job);
}

static void fail(MountJob *job, const char *syscall, const char *path, const char *dest) {
  job->err = errno;
  job->failed_syscall = syscall;
  job->failed_path = path;
  job->failed_dest = dest;
}

static void idmapped_bind(MountJob *job) {
  int userns = job->userns_fd;
  if (userns < 0) {
    userns = open(job->userns_path, O_RDONLY | O_CLOEXEC);
    if (userns < 0) return fail(job, "open", job->userns_path, NULL);
  }
  unsigned int recursive = job->recursive ? AT_RECURSIVE : 0;
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, job->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | recursive);
  if (tree < 0) {
    fail(job, "open_tree", job->source, NULL);
  } else {
    struct strata_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
    if (syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | recursive, &attr, sizeof attr) != 0) {
      fail(job, "mount_setattr", job->source, NULL);
    } else if (syscall(SYS_move_mount, tree, "", AT_FDCWD, job->target, MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      fail(job, "move_mount", job->source, job->target);
    }
    close(tree);
  }
  if (job->userns_fd < 0) close(userns);
}

static void mount_here(MountJob *job) {
  if (mount(job->source, job->target, job->fstype, job->flags, job->data) != 0) fail(job, "mount", job->source ? job->source : job->fstype, job->target);
}

// A mount whose relative paths (overlayfs's lowerdir=l/0:..., the target) resolve against `cwd`:
// made on a thread of its own that unshares its filesystem context (CLONE_FS: cwd, root, umask)
// from the process and changes into `cwd`, so no other thread's cwd ever moves. Mounts are still
// the process's: the mount namespace is not part of CLONE_FS.
static void *mount_in_cwd(void *data) {
  MountJob *job = data;
  if (unshare(CLONE_FS) != 0) fail(job, "unshare", job->cwd, NULL);
  else if (chdir(job->cwd) != 0) fail(job, "chdir", job->cwd, NULL);
  else mount_here(job);
  return NULL;
}

static void execute(napi_env env, void *data) {
  (void)env;
  MountJob *job = data;
  switch (job->op) {
    case OP_MOUNT:
      if (job->cwd == NULL) {
        mount_here(job);
      } else {
        pthread_t thread;
        int rc = pthread_create(&thread, NULL, mount_in_cwd, job);
        if (rc != 0) {
          errno = rc;
          fail(job, "pthread_create", job->cwd, NULL);
        } else {
          pthread_join(thread, NULL);
        }
      }
      break;
    case OP_UMOUNT:
      if (umount2(job->target, (int)job->flags) != 0) fail(job, "umount2", job->target, NULL);
      break;
    case OP_IDMAPPED_BIND:
      idmapped_bind(job);
      break;
  }
}

// Settles a thread-pool job's promise: rejected when the job was cancelled ("the <what> job was
// cancelled") or a syscall failed (its errno error), resolved with undefined otherwise.
static void settle_job(napi_env env, napi_deferred deferred, napi_status status, const char *what, const char *failed_syscall, int err,
                       const char *path, const char *dest) {
  napi_value result;
  if (status != napi_ok) {
    char text[64];
    snprintf(text, sizeof text, "the %s job was cancelled", what);
    napi_value message;
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
    napi_create_error(env, NULL, message, &result);
    napi_reject_deferred(env, deferred, result);
  } else if (failed_syscall != NULL) {
    result = make_errno_error(env, err, failed_syscall, path, dest);
    napi_reject_deferred(env, deferred, result);
  } else {
    napi_get_undefined(env, &result);
    napi_resolve_deferred(env, deferred, result);
  }
}

static void complete(napi_env env, napi_status status, void *data) {
  MountJob *job = data;
  settle_job(env, job->deferred, status, "mount", job->failed_syscall, job->err, job->failed_path, job->failed_dest);
  napi_delete_async_work(env, job->work);
  free_job(job);
}

static napi_value queue(napi_env env, MountJob *job, const char *name) {
  napi_value promise, resource_name;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute, complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free_job(job);
    napi_throw_error(env, "ERR_STRATA_NATIVE", "could not queue a mount job");
    return NULL;
  }
  return promise;
}

static MountJob *new_job(napi_env env, enum operation op) {
  MountJob *job = calloc(1, sizeof *job);
  if (job == NULL) napi_throw_error(env, "ENOMEM", "out of memory");
  else {
    job->op = op;
    job->userns_fd = -1;
  }
  return job;
}

// mount(source | null, target, fstype | null, flags, data | null, cwd | null): Promise<void>.
static napi_value Mount(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!get_args(env, info, 6, argv)) return NULL;
  int64_t flags;
  if (!get_int64(env, argv[3], "flags", &flags)) return NULL;
  MountJob *job = new_job(env, OP_MOUNT);
  if (job == NULL) return NULL;
  job->flags = (unsigned long)flags;
  if (!get_bytes(env, argv[0], "source", 1, &job->source) || !get_bytes(env, argv[1], "target", 0, &job->target) ||
      !get_bytes(env, argv[2], "fstype", 1, &job->fstype) || !get_bytes(env, argv[4], "data", 1, &job->data) ||
      !get_bytes(env, argv[5], "cwd", 1, &job->cwd)) {
    free_job(job);
    return NULL;
  }
  return queue(env, job, "strata.mount");
}

// umount(target, flags): Promise<void> (flags: MNT_DETACH, MNT_FORCE; UMOUNT_NOFOLLOW is always added).
static napi_value Umount(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int64_t flags;
  if (!get_int64(env, argv[1], "flags", &flags)) return NULL;
  MountJob *job = new_job(env, OP_UMOUNT);
  if (job == NULL) return NULL;
  job->flags = (unsigned long)flags | UMOUNT_NOFOLLOW;
  if (!get_bytes(env, argv[0], "target", 0, &job->target)) {
    free_job(job);
    return NULL;
  }
  return queue(env, job, "strata.umount");
}

// idmappedBindMount(source, target, usernsPath | null, usernsFd (-1: open usernsPath), recursive): Promise<void>.
static napi_value IdmappedBindMount(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  int64_t fd;
  if (!get_int64(env, argv[3], "usernsFd", &fd)) return NULL;
  bool recursive = true;
  napi_valuetype type;
  napi_typeof(env, argv[4], &type);
  if (type == napi_boolean) napi_get_value_bool(env, argv[4], &recursive);
  MountJob *job = new_job(env, OP_IDMAPPED_BIND);
  if (job == NULL) return NULL;
  job->userns_fd = fd < 0 ? -1 : (int)fd;
  job->recursive = recursive;
  if (!get_bytes(env, argv[0], "source", 0, &job->source) || !get_bytes(env, argv[1], "target", 0, &job->target) ||
      !get_bytes(env, argv[2], "usernsPath", 1, &job->userns_path)) {
    free_job(job);
    return NULL;
  }
  if (job->userns_fd < 0 && job->userns_path == NULL) {
    free_job(job);
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "idmappedBindMount needs a user namespace: a path or a file descriptor");
    return NULL;
  }
  return queue(env, job, "strata.idmappedBindMount");
}

// ---- processes without fork (posix_spawn + pidfd) ----------------------------------------------
// libuv starts a child with fork(): the kernel copies the worker's page tables, so the main thread
// stops for ~10 ms at 250 MB resident, ~30 ms at 650 MB, on every RUN step. glibc's posix_spawn
// uses clone(CLONE_VM|CLONE_VFORK): nothing is copied, the cost does not grow with the parent.
// The child: stdin /dev/null, stdout and stderr the write ends of two pipes, no other descriptor
// (closefrom 3), signal mask empty and every disposition default (node ignores SIGPIPE; a shell
// pipeline in the child must not inherit that). Its exit is watched with a pidfd polled on the
// loop and reaped with waitid(P_PID): libuv's SIGCHLD handler only waits for the pids of its own
// uv_process_t handles (waitpid(pid, WNOHANG) each), so it neither takes this status nor is
// disturbed by this child's SIGCHLD. docs/adr/0039.

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

typedef struct {
  napi_env env;
  uv_poll_t poll;
  pid_t pid;
  int pidfd;
  napi_ref on_exit;
  napi_async_context context;
  int exited;     // reaped: the pidfd no longer names a process we may signal
  int closed;     // the poll handle is closed (or was never started)
  int finalized;  // the JS handle is gone
} strata_child;

static int pidfd_supported = -1;

static int probe_pidfd(void) {
  if (pidfd_supported < 0) {
    int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    pidfd_supported = fd >= 0;
    if (fd >= 0) close(fd);
  }
  return pidfd_supported;
}

static void child_maybe_free(strata_child *child) {
  if (child->closed && child->finalized) free(child);
}

static void child_closed(uv_handle_t *handle) {
  strata_child *child = handle->data;
  if (child->pidfd >= 0) close(child->pidfd);
  child->pidfd = -1;
  child->closed = 1;
  child_maybe_free(child);
}

static void child_release_js(strata_child *child) {
  if (child->on_exit) napi_delete_reference(child->env, child->on_exit);
  child->on_exit = NULL;
  if (child->context) napi_async_destroy(child->env, child->context);
  child->context = NULL;
}

static void child_env_cleanup(void *arg) {
  // The env is going (a worker thread ends) with the child still running: stop watching it.
  strata_child *child = arg;
  child_release_js(child);
  if (!uv_is_closing((uv_handle_t *)&child->poll)) uv_close((uv_handle_t *)&child->poll, child_closed);
}

static void child_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  strata_child *child = data;
  child->finalized = 1;
  child_maybe_free(child);
}

static void child_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  strata_child *child = poll->data;
  siginfo_t info;
  memset(&info, 0, sizeof info);
  int rc;
  do rc = waitid(P_PID, (id_t)child->pid, &info, WEXITED | WNOHANG);
  while (rc < 0 && errno == EINTR);
  (void)status;
  if (rc == 0 && info.si_pid == 0) return;  // not exited yet (spurious wake-up)
  child->exited = 1;
  uv_poll_stop(poll);
  uv_close((uv_handle_t *)poll, child_closed);

  napi_env env = child->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value code, signal, callback, resource, argv[2];
  napi_get_null(env, &code);
  napi_get_null(env, &signal);
  if (rc == 0 && info.si_code == CLD_EXITED) napi_create_int32(env, info.si_status, &code);
  else if (rc == 0 && (info.si_code == CLD_KILLED || info.si_code == CLD_DUMPED)) napi_create_int32(env, info.si_status, &signal);
  else napi_create_int32(env, -1, &code);  // cannot happen: the pid is ours and not reaped elsewhere
  argv[0] = code;
  argv[1] = signal;
  if (child->on_exit && napi_get_reference_value(env, child->on_exit, &callback) == napi_ok && callback != NULL) {
    napi_create_object(env, &resource);
    napi_value result;
    // napi_make_callback: an uncaught exception goes to process 'uncaughtException', microtasks run after.
    if (napi_make_callback(env, child->context, resource, callback, 2, argv, &result) != napi_ok) {
      // A listener threw: node's 'uncaughtException', as for any callback from the loop.
      bool pending = false;
      napi_value exception;
      if (napi_is_exception_pending(env, &pending) == napi_ok && pending && napi_get_and_clear_last_exception(env, &exception) == napi_ok)
        napi_fatal_exception(env, exception);
    }
  }
  child_release_js(child);
  napi_remove_env_cleanup_hook(env, child_env_cleanup, child);
  napi_close_handle_scope(env, scope);
}

// The executable the child runs, as execvp finds it: `file` itself when it names a path, else the
// first executable regular file of that name along the PATH of the child's environment (glibc's
// default "/bin:/usr/bin" when it has none). 0, or the errno exec would have failed with.
static int resolve_executable(const char *file, char **envp, char **out) {
  *out = NULL;
  if (file[0] == '\0') return ENOENT;
  if (strchr(file, '/')) {
    *out = strdup(file);
    return *out ? 0 : ENOMEM;
  }
  const char *path = "/bin:/usr/bin";
  for (char **e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) {
      path = *e + 5;
      break;
    }
  int err = ENOENT;
  size_t file_length = strlen(file);
  for (const char *dir = path;; dir++) {
    const char *end = strchrnul(dir, ':');
    size_t dir_length = (size_t)(end - dir);
    char *candidate = malloc(dir_length + file_length + 3);
    if (candidate == NULL) return ENOMEM;
    // An empty PATH entry is the current directory, as for execvp.
    if (dir_length == 0) snprintf(candidate, file_length + 3, "./%s", file);
    else {
      memcpy(candidate, dir, dir_length);
      candidate[dir_length] = '/';
      memcpy(candidate + dir_length + 1, file, file_length + 1);
    }
    struct stat st;
    if (stat(candidate, &st) == 0 && !S_ISDIR(st.st_mode)) {
      if (access(candidate, X_OK) == 0) {
        *out = candidate;
        return 0;
      }
      err = EACCES;
    }
    free(candidate);
    if (*end == '\0') break;
    dir = end;
  }
  return err;
}

static void free_strings(char **strings) {
  if (strings == NULL) return;
  for (char **s = strings; *s; s++) free(*s);
  free(strings);
}

// A JS array of strings (or Buffers) as a NULL-terminated malloc'd array; NULL with an error pending.
static char **get_string_array(napi_env env, napi_value value, const char *what) {
  bool is_array = false;
  napi_is_array(env, value, &is_array);
  if (!is_array) {
    throw_argument_error(env, "ERR_INVALID_ARG_TYPE", what, "must be an array");
    return NULL;
  }
  uint32_t length = 0;
  napi_get_array_length(env, value, &length);
  char **strings = calloc((size_t)length + 1, sizeof *strings);
  if (strings == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < length; i++) {
    napi_value element;
    if (napi_get_element(env, value, i, &element) != napi_ok || !get_bytes(env, element, what, 0, &strings[i])) {
      free_strings(strings);
      return NULL;
    }
  }
  return strings;
}

// spawn(file, argv, envp, cwd, onExit(code, signal)): { pid, stdout, stderr, handle }.
// stdout and stderr are the read ends of the child's pipes (close-on-exec, blocking: libuv makes
// them non-blocking when a net.Socket opens them). Throws the errno error of a child that could
// not start (ENOENT, EACCES: syscall 'spawn', path `file`); nothing is left open then.
static napi_value Spawn(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (get_args(env, info, 5, argv) == NULL) return NULL;
  napi_valuetype type;
  napi_typeof(env, argv[4], &type);
  if (type != napi_function) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"onExit\" argument must be a function");
    return NULL;
  }
  if (!probe_pidfd()) return throw_errno(env, ENOSYS, "pidfd_open", NULL);
  char *file = NULL, *cwd = NULL, *executable = NULL;
  char **args = NULL, **envp = NULL;
  int out[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  napi_value result = NULL;
  int failure = 0;
  const char *failed_call = "spawn";
  if (!get_bytes(env, argv[0], "file", 0, &file)) goto done;
  if ((args = get_string_array(env, argv[1], "argv")) == NULL) goto done;
  if ((envp = get_string_array(env, argv[2], "env")) == NULL) goto done;
  if (!get_bytes(env, argv[3], "cwd", 1, &cwd)) goto done;
  if (args[0] == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "argv must hold at least the program's name");
    goto done;
  }
  if ((failure = resolve_executable(file, envp, &executable)) != 0) goto done;

  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    failure = errno;
    failed_call = "pipe2";
    goto done;
  }
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 29)
  if (cwd) posix_spawn_file_actions_addchdir_np(&actions, cwd);
#else
  if (cwd) {
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    failure = ENOSYS;
    failed_call = "posix_spawn_file_actions_addchdir_np";
    goto done;
  }
#endif
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
  // Every descriptor above stderr closed, whether or not its owner set O_CLOEXEC.
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
#endif
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  // glibc's sigfillset leaves out its own signals (32, 33: thread cancellation, setxid), and its
  // posix_spawn then sets those to SIG_IGN in the child, which exec keeps. Node's children have
  // them at SIG_DFL, so ours too: the bits are set by hand (sigaddset refuses them). The child runs
  // with every signal blocked until exec, so no handler can run in between.
#ifdef __GLIBC__
  for (int sig = 32; sig < SIGRTMIN; sig++) {
    const size_t bits = 8 * sizeof all.__val[0];
    all.__val[(sig - 1) / bits] |= 1UL << ((sig - 1) % bits);
  }
#endif
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int rc = posix_spawn(&pid, executable, &actions, &attr, args, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  close(out[1]);
  close(err_pipe[1]);
  out[1] = err_pipe[1] = -1;
  if (rc != 0) {
    failure = rc;
    goto done;
  }

  strata_child *child = calloc(1, sizeof *child);
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  uv_loop_t *loop = NULL;
  if (child == NULL || pidfd < 0 || napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &child->poll, pidfd) != 0) {
    // Cannot watch it: do not leave a child nobody reaps.
    failure = child == NULL ? ENOMEM : pidfd < 0 ? errno : EINVAL;
    failed_call = pidfd < 0 ? "pidfd_open" : "uv_poll_init";
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (pidfd >= 0) close(pidfd);
    free(child);
    goto done;
  }
  child->env = env;
  child->pid = pid;
  child->pidfd = pidfd;
  child->poll.data = child;
  napi_value resource_name, handle, value;
  napi_create_string_utf8(env, "strata.spawn", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &child->context);
  napi_create_reference(env, argv[4], 1, &child->on_exit);
  napi_add_env_cleanup_hook(env, child_env_cleanup, child);
  uv_poll_start(&child->poll, UV_READABLE, child_readable);
  napi_create_external(env, child, child_finalize, NULL, &handle);

  napi_create_object(env, &result);
  napi_create_int32(env, pid, &value);
  napi_set_named_property(env, result, "pid", value);
  napi_create_int32(env, out[0], &value);
  napi_set_named_property(env, result, "stdout", value);
  napi_create_int32(env, err_pipe[0], &value);
  napi_set_named_property(env, result, "stderr", value);
  napi_set_named_property(env, result, "handle", handle);
  out[0] = err_pipe[0] = -1;

done:
  for (int i = 0; i < 2; i++) {
    if (out[i] >= 0) close(out[i]);
    if (err_pipe[i] >= 0) close(err_pipe[i]);
  }
  if (failure != 0) throw_errno(env, failure, failed_call, file);
  free(file);
  free(cwd);
  free(executable);
  free_strings(args);
  free_strings(envp);
  return result;
}

// spawnSupported(): whether this kernel has pidfd_open (Linux 5.3+), which spawn() watches its children with.
static napi_value SpawnSupported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, probe_pidfd(), &result);
  return result;
}

// kill(handle, signal): 0, or the errno (ESRCH once the child has been reaped: its pid may be
// another process's by then, the pidfd never is).
static napi_value Kill(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (get_args(env, info, 2, argv) == NULL) return NULL;
  strata_child *child = NULL;
  if (napi_get_value_external(env, argv[0], (void **)&child) != napi_ok || child == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "The \"handle\" argument must be a spawn handle");
    return NULL;
  }
  int64_t signal;
  if (!get_int64(env, argv[1], "signal", &signal)) return NULL;
  int err = 0;
  if (child->exited || child->pidfd < 0) err = ESRCH;
  else if (syscall(SYS_pidfd_send_signal, child->pidfd, (int)signal, NULL, 0) != 0) err = errno;
  napi_value value;
  napi_create_int32(env, err, &value);
  return value;
}

// ---- small files, written in one thread-pool job --------------------------------------------

// writeFiles(paths, contents, meta, chown): Promise<void>. Creates each path (O_EXCL|O_NOFOLLOW:
// never through a link planted there) with its content, then its owner (when `chown` and it is not
// the process's own), mode and mtime; meta holds [mode, uid, gid, mtime in ms] per file. One job
// for the whole batch: a layer's small files cost a few syscalls each instead of a thread-pool
// round trip per call. The first failure stops the batch and rejects with its errno error.
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref contents_ref;
  size_t count;
  char **paths;
  const char **data;
  size_t *lengths;
  double *meta;
  bool chown;
  int err;
  const char *failed_syscall;
  size_t failed_index;
} FilesJob;

static void free_files_job(napi_env env, FilesJob *job) {
  if (job->contents_ref) napi_delete_reference(env, job->contents_ref);
  if (job->paths) {
    for (size_t i = 0; i < job->count; i++) free(job->paths[i]);
    free(job->paths);
  }
  free(job->data);
  free(job->lengths);
  free(job->meta);
  free(job);
}

// The process's umask, read once when the addon loads (reading it means setting it).
static mode_t process_umask;

static int write_one(FilesJob *job, size_t i, uid_t own_uid, gid_t own_gid) {
  const double *m = job->meta + i * 4;
  mode_t mode = (mode_t)m[0] & 07777;
  // Created with its mode when the umask leaves it whole (no set-id or sticky bits): no fchmod.
  bool exact = (mode & 0777 & ~process_umask) == mode;
  int fd = open(job->paths[i], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, exact ? mode : 0600);
  if (fd < 0) {
    job->failed_syscall = "open";
    return errno;
  }
  const char *syscall_name = NULL;
  size_t done = 0;
  while (done < job->lengths[i]) {
    ssize_t n = write(fd, job->data[i] + done, job->lengths[i] - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      syscall_name = "write";
      break;
    }
    done += (size_t)n;
  }
  uid_t uid = (uid_t)m[1];
  gid_t gid = (gid_t)m[2];
  // The owner before the mode: chown clears set-id bits.
  if (syscall_name == NULL && job->chown && (uid != own_uid || gid != own_gid) && fchown(fd, uid, gid) != 0) syscall_name = "fchown";
  if (syscall_name == NULL && !exact && fchmod(fd, mode) != 0) syscall_name = "fchmod";
  if (syscall_name == NULL) {
    int64_t ms = (int64_t)m[3];
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    struct timespec times[2];
    times[0].tv_sec = (time_t)sec;
    times[0].tv_nsec = (long)((ms - sec * 1000) * 1000000);
    times[1] = times[0];
    if (futimens(fd, times) != 0) syscall_name = "futimens";
  }
  int err = syscall_name ? errno : 0;
  if (close(fd) != 0 && syscall_name == NULL && errno != EINTR) {
    syscall_name = "close";
    err = errno;
  }
  job->failed_syscall = syscall_name;
  return err;
}

static void files_execute(napi_env env, void *data) {
  (void)env;
  FilesJob *job = data;
  uid_t own_uid = geteuid();
  gid_t own_gid = getegid();
  for (size_t i = 0; i < job->count; i++) {
    int err = write_one(job, i, own_uid, own_gid);
    if (err != 0) {
      job->err = err;
      job->failed_index = i;
      return;
    }
  }
}

static void files_complete(napi_env env, napi_status status, void *data) {
  FilesJob *job = data;
  settle_job(env, job->deferred, status, "file", job->err != 0 ? job->failed_syscall : NULL, job->err, job->err != 0 ? job->paths[job->failed_index] : NULL, NULL);
  napi_delete_async_work(env, job->work);
  free_files_job(env, job);
}

static napi_value WriteFiles(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  uint32_t count = 0, contents_count = 0;
  bool is_array = false;
  napi_is_array(env, argv[0], &is_array);
  if (is_array) napi_is_array(env, argv[1], &is_array);
  if (!is_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeFiles takes an array of paths and an array of contents");
    return NULL;
  }
  CHECK(napi_get_array_length(env, argv[0], &count));
  CHECK(napi_get_array_length(env, argv[1], &contents_count));
  bool is_typed = false;
  napi_is_typedarray(env, argv[2], &is_typed);
  double *meta_in = NULL;
  size_t meta_length = 0;
  if (is_typed) {
    napi_typedarray_type type;
    void *raw;
    napi_value buffer;
    size_t offset;
    CHECK(napi_get_typedarray_info(env, argv[2], &type, &meta_length, &raw, &buffer, &offset));
    if (type != napi_float64_array) is_typed = false;
    meta_in = raw;
  }
  if (!is_typed || contents_count != count || meta_length != (size_t)count * 4) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "writeFiles: one content and four Float64Array numbers (mode, uid, gid, mtime ms) per path");
    return NULL;
  }
  bool chown = false;
  napi_valuetype type;
  napi_typeof(env, argv[3], &type);
  if (type == napi_boolean) napi_get_value_bool(env, argv[3], &chown);

  FilesJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  job->count = count;
  job->chown = chown;
  job->paths = calloc(count ? count : 1, sizeof *job->paths);
  job->data = calloc(count ? count : 1, sizeof *job->data);
  job->lengths = calloc(count ? count : 1, sizeof *job->lengths);
  job->meta = malloc((count ? count : 1) * 4 * sizeof *job->meta);
  if (!job->paths || !job->data || !job->lengths || !job->meta) {
    free_files_job(env, job);
    napi_throw_error(env, "ENOMEM", "out of memory");
    return NULL;
  }
  memcpy(job->meta, meta_in, (size_t)count * 4 * sizeof *job->meta);
  for (uint32_t i = 0; i < count; i++) {
    napi_value path, content;
    bool is_buffer = false;
    void *bytes;
    if (napi_get_element(env, argv[0], i, &path) != napi_ok || !get_bytes(env, path, "path", 0, &job->paths[i]) ||
        napi_get_element(env, argv[1], i, &content) != napi_ok || napi_is_buffer(env, content, &is_buffer) != napi_ok || !is_buffer ||
        napi_get_buffer_info(env, content, &bytes, &job->lengths[i]) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (!pending) napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "writeFiles: every content must be a Buffer");
      free_files_job(env, job);
      return NULL;
    }
    job->data[i] = bytes;
  }
  // The contents stay where they are until the job ends: the array holding them is referenced.
  napi_value promise, resource_name;
  if (napi_create_reference(env, argv[1], 1, &job->contents_ref) != napi_ok || napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "strata.writeFiles", NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, files_execute, files_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free_files_job(env, job);
    napi_throw_error(env, "ERR_STRATA_NATIVE", "could not queue a file job");
    return NULL;
  }
  return promise;
}

// ---- module ---------------------------------------------------------------------------------

static void set_constant(napi_env env, napi_value object, const char *name, int64_t value) {
  napi_value number;
  napi_create_int64(env, value, &number);
  napi_set_named_property(env, object, name, number);
}

static napi_value Init(napi_env env, napi_value exports) {
  process_umask = umask(0);
  umask(process_umask);
  napi_property_descriptor functions[] = {
      {"mount", NULL, Mount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"umount", NULL, Umount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"idmappedBindMount", NULL, IdmappedBindMount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"llistxattr", NULL, Llistxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lgetxattr", NULL, Lgetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lsetxattr", NULL, Lsetxattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lremovexattr", NULL, Lremovexattr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mknod", NULL, Mknod, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spawn", NULL, Spawn, NULL, NULL, NULL, napi_enumerable, NULL},
      {"kill", NULL, Kill, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spawnSupported", NULL, SpawnSupported, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeFiles", NULL, WriteFiles, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  CHECK(napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions));
  napi_value constants;
  CHECK(napi_create_object(env, &constants));
  set_constant(env, constants, "MS_RDONLY", MS_RDONLY);
  set_constant(env, constants, "MS_NOSUID", MS_NOSUID);
  set_constant(env, constants, "MS_NODEV", MS_NODEV);
  set_constant(env, constants, "MS_NOEXEC", MS_NOEXEC);
  set_constant(env, constants, "MS_REMOUNT", MS_REMOUNT);
  set_constant(env, constants, "MS_BIND", MS_BIND);
  set_constant(env, constants, "MS_MOVE", MS_MOVE);
  set_constant(env, constants, "MS_REC", MS_REC);
  set_constant(env, constants, "MS_PRIVATE", MS_PRIVATE);
  set_constant(env, constants, "MS_SLAVE", MS_SLAVE);
  set_constant(env, constants, "MS_SHARED", MS_SHARED);
  set_constant(env, constants, "MS_NOATIME", MS_NOATIME);
  set_constant(env, constants, "MS_RELATIME", MS_RELATIME);
  set_constant(env, constants, "MNT_FORCE", MNT_FORCE);
  set_constant(env, constants, "MNT_DETACH", MNT_DETACH);
  set_constant(env, constants, "XATTR_CREATE", XATTR_CREATE);
  set_constant(env, constants, "XATTR_REPLACE", XATTR_REPLACE);
  set_constant(env, constants, "S_IFCHR", S_IFCHR);
  set_constant(env, constants, "S_IFBLK", S_IFBLK);
  set_constant(env, constants, "S_IFIFO", S_IFIFO);
  CHECK(napi_set_named_property(env, exports, "constants", constants));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

/*
 * What busybox cannot do inside a RUN step, for tests: leave a unix socket behind, and set or read
 * an xattr with a binary value (security.capability). Built static by the test that uses it.
 *   fsmake socket PATH | fsmake setxattr PATH NAME HEX | fsmake getxattr PATH NAME
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "socket") == 0) {
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strncpy(addr.sun_path, argv[2], sizeof addr.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("socket"); return 1; }
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "setxattr") == 0) {
    size_t n = strlen(argv[4]) / 2;
    unsigned char value[256];
    for (size_t i = 0; i < n && i < sizeof value; i++) sscanf(argv[4] + 2 * i, "%2hhx", &value[i]);
    if (lsetxattr(argv[2], argv[3], value, n, 0) != 0) { perror("setxattr"); return 1; }
    return 0;
  }
  if (argc == 4 && strcmp(argv[1], "getxattr") == 0) {
    unsigned char value[256];
    ssize_t n = lgetxattr(argv[2], argv[3], value, sizeof value);
    if (n < 0) { perror("getxattr"); return 1; }
    for (ssize_t i = 0; i < n; i++) printf("%02x", value[i]);
    printf("\n");
    return 0;
  }
  fprintf(stderr, "usage: fsmake socket PATH | setxattr PATH NAME HEX | getxattr PATH NAME\n");
  return 2;
}

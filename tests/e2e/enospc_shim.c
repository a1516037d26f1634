/* SPDX-License-Identifier: Apache-2.0 */
/* LD_PRELOAD shim for test_e2e_trust_cli.sh when no tiny tmpfs can be mounted: write() to a trust
 * store temporary file (a path containing "/.tmp-") fails with ENOSPC once the bytes written to such
 * files would pass CCRELAY_ENOSPC_AFTER (default 0). Every other write goes through untouched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ssize_t write(int fd, const void *buf, size_t n);

static size_t written;

static int is_store_tmp(int fd) {
  char link[64], path[4096];
  ssize_t k;
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  k = readlink(link, path, sizeof path - 1);
  if (k <= 0)
    return 0;
  path[k] = '\0';
  return strstr(path, "/.tmp-") != NULL;
}

ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*real_write)(int, const void *, size_t);
  if (real_write == NULL)
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
  if (fd > 2 && is_store_tmp(fd)) {
    const char *s = getenv("CCRELAY_ENOSPC_AFTER");
    size_t limit = s ? strtoul(s, NULL, 10) : 0;
    if (written + n > limit) {
      errno = ENOSPC;
      return -1;
    }
    written += n;
  }
  return real_write(fd, buf, n);
}

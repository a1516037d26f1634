/* SPDX-License-Identifier: Apache-2.0 */
/* Bounded, non-blocking-safe reads of user-named files. See fileio.h. */
#include "ccrelay/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"

const char *cr_fileio_kind(unsigned mode) {
  mode_t m = (mode_t)mode;
  if (S_ISREG(m))
    return "a regular file";
  if (S_ISFIFO(m))
    return "a FIFO";
  if (S_ISDIR(m))
    return "a directory";
  if (S_ISSOCK(m))
    return "a socket";
  if (S_ISCHR(m))
    return "a character device";
  if (S_ISBLK(m))
    return "a block device";
  return "something else";
}

int cr_fileio_open(const char *path, int *fd, const char **kind) {
  struct stat st;
  int f, fl, r;
  *fd = -1;
  if (kind)
    *kind = NULL;
  f = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (f < 0)
    return -errno;
  if (fstat(f, &st) < 0) {
    r = -errno;
    close(f);
    return r;
  }
  if (!S_ISREG(st.st_mode)) {
    if (kind)
      *kind = cr_fileio_kind((unsigned)st.st_mode);
    close(f);
    return CR_ENOT_REGULAR;
  }
  /* Regular files ignore O_NONBLOCK; cleared anyway so the descriptor behaves as callers expect. */
  fl = fcntl(f, F_GETFL);
  if (fl >= 0)
    (void)fcntl(f, F_SETFL, fl & ~O_NONBLOCK);
  *fd = f;
  return 0;
}

int cr_fileio_read(const char *path, size_t max, char **data, size_t *len, char *err, size_t errlen) {
  const char *kind;
  size_t cap = max < 65536 ? max + 1 : 4096, n = 0;
  char *buf;
  int fd, r = 0;
  *data = NULL;
  *len = 0;
  r = cr_fileio_open(path, &fd, &kind);
  if (r == CR_ENOT_REGULAR) {
    snprintf(err, errlen, "%s is %s, not a regular file", path, kind);
    return r;
  }
  if (r < 0) {
    snprintf(err, errlen, "%s", strerror(-r));
    return r;
  }
  buf = cr_malloc(cap + 1);
  for (;;) {
    ssize_t got;
    if (n == cap) {
      if (cap > max)
        break;
      cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
      buf = cr_realloc(buf, cap + 1);
    }
    got = read(fd, buf + n, cap - n);
    if (got < 0) {
      if (errno == EINTR)
        continue;
      r = -errno;
      snprintf(err, errlen, "%s", strerror(-r));
      break;
    }
    if (got == 0)
      break;
    n += (size_t)got;
  }
  close(fd);
  if (r == 0 && n > max) {
    snprintf(err, errlen, "larger than %zu bytes", max);
    r = CR_ELIMIT;
  }
  if (r < 0) {
    cr_wipe(buf, n);
    free(buf);
    return r;
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return 0;
}

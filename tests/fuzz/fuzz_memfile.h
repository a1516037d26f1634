/* SPDX-License-Identifier: Apache-2.0 */
/* A file in memory for fuzz targets whose API only reads paths: a memfd (a regular file that lives in
 * RAM, never on disk) rewritten with each input, named by its /proc/self/fd path. One per process.
 * Header-only: tests/CMakeLists.txt builds every fuzz_*.c as a target. */
#ifndef CCRELAY_FUZZ_MEMFILE_H
#define CCRELAY_FUZZ_MEMFILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Replaces the file's content with data; returns its path (static storage). */
static inline const char *fuzz_memfile(const uint8_t *data, size_t size) {
  static int fd = -1;
  static char path[64];
  if (fd < 0) {
    fd = memfd_create("ccrelay-fuzz-input", MFD_CLOEXEC);
    if (fd < 0) {
      perror("memfd_create");
      abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
    perror("fuzz_memfile");
    abort();
  }
  return path;
}

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Reads of user-named files: a FIFO (with no writer: a blocking open would wait forever), a
 * directory or a device is refused at once with what it is; a regular file is read whole; the cap
 * holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "ccrelay/error.h"
#include "ccrelay/fileio.h"

static char dir[64];

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/cr_fileio_XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  char path[128];
  (void)state;
  snprintf(path, sizeof path, "%s/fifo", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/file", dir);
  unlink(path);
  return rmdir(dir);
}

static void test_regular_and_cap(void **state) {
  char path[128], err[256], *data;
  size_t len;
  FILE *f;
  (void)state;
  snprintf(path, sizeof path, "%s/file", dir);
  f = fopen(path, "w");
  fputs("0123456789", f);
  fclose(f);
  assert_int_equal(cr_fileio_read(path, 10, &data, &len, err, sizeof err), 0);
  assert_int_equal(len, 10);
  assert_string_equal(data, "0123456789");
  free(data);
  /* a cap of 9 is one byte short; a big cap grows the buffer in steps */
  assert_int_equal(cr_fileio_read(path, 9, &data, &len, err, sizeof err), CR_ELIMIT);
  assert_null(data);
  assert_non_null(strstr(err, "larger than 9 bytes"));
  assert_int_equal(cr_fileio_read(path, 1 << 20, &data, &len, err, sizeof err), 0);
  assert_int_equal(len, 10);
  free(data);
  snprintf(path, sizeof path, "%s/none", dir);
  assert_int_equal(cr_fileio_read(path, 10, &data, &len, err, sizeof err), -2 /* ENOENT */);
}

static void test_not_regular(void **state) {
  char path[128], err[256], *data;
  const char *kind;
  size_t len;
  int fd;
  time_t t0 = time(NULL);
  (void)state;
  snprintf(path, sizeof path, "%s/fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  assert_int_equal(cr_fileio_read(path, 100, &data, &len, err, sizeof err), CR_ENOT_REGULAR);
  assert_non_null(strstr(err, "/fifo is a FIFO, not a regular file"));
  assert_int_equal(cr_fileio_open(path, &fd, &kind), CR_ENOT_REGULAR);
  assert_int_equal(fd, -1);
  assert_string_equal(kind, "a FIFO");
  assert_true(time(NULL) - t0 < 2); /* never waited for a writer */
  assert_int_equal(cr_fileio_read(dir, 100, &data, &len, err, sizeof err), CR_ENOT_REGULAR);
  assert_non_null(strstr(err, "is a directory, not a regular file"));
  assert_int_equal(cr_fileio_read("/dev/null", 100, &data, &len, err, sizeof err), CR_ENOT_REGULAR);
  assert_non_null(strstr(err, "/dev/null is a character device"));
  assert_string_equal(cr_fileio_kind(S_IFSOCK), "a socket");
  assert_string_equal(cr_fileio_kind(S_IFREG), "a regular file");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_regular_and_cap),
      cmocka_unit_test(test_not_regular),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The small formatting helpers of common.h, and request ids (errpage.c), which the per-request paths
 * use instead of snprintf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/errpage.h"

static void test_strlcpy(void **state) {
  char b[8];
  (void)state;
  assert_int_equal(cr_strlcpy(b, "GET", sizeof b), 3);
  assert_string_equal(b, "GET");
  assert_int_equal(cr_strlcpy(b, "", sizeof b), 0);
  assert_string_equal(b, "");
  assert_int_equal(cr_strlcpy(b, "1234567", sizeof b), 7); /* exactly fits */
  assert_string_equal(b, "1234567");
  assert_int_equal(cr_strlcpy(b, "123456789", sizeof b), 7); /* truncated, still terminated */
  assert_string_equal(b, "1234567");
  assert_int_equal(cr_strlcpy(b, "x", 1), 0);
  assert_string_equal(b, "");
}

static void test_u64_dec(void **state) {
  static const uint64_t vals[] = {0, 7, 10, 484, 1048576, 999999999999ull, UINT64_MAX};
  char out[21], want[32];
  (void)state;
  for (size_t i = 0; i < CR_ARRAY_SIZE(vals); i++) {
    snprintf(want, sizeof want, "%llu", (unsigned long long)vals[i]);
    assert_int_equal(cr_u64_dec(out, vals[i]), strlen(want));
    assert_string_equal(out, want);
  }
}

static void test_request_ids(void **state) {
  char a[17], b[17];
  (void)state;
  cr_errpage_request_id_new(a);
  cr_errpage_request_id_new(b);
  assert_int_equal(strlen(a), 16);
  assert_int_equal(strspn(a, "0123456789abcdef"), 16);
  assert_true(cr_errpage_request_id_valid(a));
  assert_string_not_equal(a, b);
  assert_memory_equal(a, b, 8); /* one process-wide prefix, then a counter */
}

/* Objects come back zeroed and reused, at most max are kept, and drain frees them (ASan's leak check
 * fails this test otherwise). */
static void test_freelist(void **state) {
  cr_freelist_t fl;
  unsigned char *p[5], *q;
  size_t i, j;
  (void)state;
  cr_freelist_init(&fl, 40, 3);
  for (i = 0; i < 5; i++) {
    p[i] = cr_freelist_get(&fl);
    for (j = 0; j < 40; j++)
      assert_int_equal(p[i][j], 0);
    memset(p[i], 0xab, 40);
  }
  for (i = 0; i < 5; i++)
    cr_freelist_put(&fl, p[i]);
  assert_int_equal(fl.n, 3);
  q = cr_freelist_get(&fl);
  assert_ptr_equal(q, p[2]); /* the last one kept (p[3] and p[4] were freed), reused */
  for (j = 0; j < 40; j++)
    assert_int_equal(q[j], 0);
  assert_int_equal(fl.n, 2);
  cr_freelist_put(&fl, q);
  cr_freelist_put(&fl, NULL);
  assert_int_equal(fl.n, 3);
  cr_freelist_drain(&fl);
  assert_int_equal(fl.n, 0);
  assert_null(fl.head);
  /* Smaller than a pointer still holds the link. */
  cr_freelist_init(&fl, 1, 2);
  cr_freelist_put(&fl, cr_freelist_get(&fl));
  assert_true(fl.size >= sizeof(void *));
  cr_freelist_drain(&fl);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_strlcpy),
      cmocka_unit_test(test_u64_dec),
      cmocka_unit_test(test_request_ids),
      cmocka_unit_test(test_freelist),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Per-source counting: caps per source and in total, IPv6 grouped by /64, IPv4-mapped IPv6 the same
 * source as IPv4, and many sources coming and going (deletion keeps every other source findable). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/error.h"
#include "ccrelay/srcmap.h"

static cr_srckey_t v4(const char *ip) {
  struct sockaddr_in a;
  cr_srckey_t k;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
  assert_int_equal(cr_srcmap_key((struct sockaddr *)&a, &k), 0);
  return k;
}

static cr_srckey_t v6(const char *ip) {
  struct sockaddr_in6 a;
  cr_srckey_t k;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
  assert_int_equal(cr_srcmap_key((struct sockaddr *)&a, &k), 0);
  return k;
}

static void test_per_source_cap(void **state) {
  cr_srcmap_t *m = cr_srcmap_new(100, 3);
  cr_srckey_t a = v4("127.0.0.2"), b = v4("127.0.0.3");
  (void)state;
  for (int i = 0; i < 3; i++)
    assert_int_equal(cr_srcmap_acquire(m, &a), 0);
  assert_int_equal(cr_srcmap_acquire(m, &a), CR_ELIMIT);
  assert_int_equal(cr_srcmap_acquire(m, &b), 0);
  assert_int_equal(cr_srcmap_count(m, &a), 3);
  assert_int_equal(cr_srcmap_total(m), 4);
  assert_int_equal(cr_srcmap_sources(m), 2);
  cr_srcmap_release(m, &a);
  assert_int_equal(cr_srcmap_acquire(m, &a), 0);
  for (int i = 0; i < 3; i++)
    cr_srcmap_release(m, &a);
  cr_srcmap_release(m, &b);
  assert_int_equal(cr_srcmap_total(m), 0);
  assert_int_equal(cr_srcmap_sources(m), 0);
  cr_srcmap_release(m, &b); /* not counted: ignored */
  assert_int_equal(cr_srcmap_total(m), 0);
  cr_srcmap_free(m);
}

static void test_total_cap(void **state) {
  cr_srcmap_t *m = cr_srcmap_new(5, 10);
  char ip[32];
  (void)state;
  for (int i = 0; i < 5; i++) {
    snprintf(ip, sizeof ip, "10.0.0.%d", i + 1);
    cr_srckey_t k = v4(ip);
    assert_int_equal(cr_srcmap_acquire(m, &k), 0);
  }
  cr_srckey_t k = v4("10.0.0.99");
  assert_int_equal(cr_srcmap_acquire(m, &k), CR_ELIMIT);
  assert_int_equal(cr_srcmap_count(m, &k), 0);
  cr_srcmap_free(m);
}

static void test_ipv6_by_64(void **state) {
  cr_srcmap_t *m = cr_srcmap_new(100, 2);
  cr_srckey_t a = v6("2001:db8:1:2::1"), b = v6("2001:db8:1:2:ffff:1:2:3"), c = v6("2001:db8:1:3::1");
  cr_srckey_t mapped = v6("::ffff:192.0.2.7"), plain = v4("192.0.2.7");
  (void)state;
  assert_memory_equal(&a, &b, sizeof a);
  assert_memory_not_equal(&a, &c, sizeof a);
  assert_memory_equal(&mapped, &plain, sizeof plain);
  assert_int_equal(cr_srcmap_acquire(m, &a), 0);
  assert_int_equal(cr_srcmap_acquire(m, &b), 0);
  assert_int_equal(cr_srcmap_acquire(m, &a), CR_ELIMIT); /* same /64 */
  assert_int_equal(cr_srcmap_acquire(m, &c), 0);
  assert_int_equal(cr_srcmap_acquire(m, &mapped), 0);
  assert_int_equal(cr_srcmap_acquire(m, &plain), 0);
  assert_int_equal(cr_srcmap_acquire(m, &plain), CR_ELIMIT);
  cr_srcmap_free(m);
}

static void test_other_family(void **state) {
  struct sockaddr sa;
  cr_srckey_t k;
  (void)state;
  memset(&sa, 0, sizeof sa);
  sa.sa_family = AF_UNIX;
  assert_int_equal(cr_srcmap_key(&sa, &k), UV_EAFNOSUPPORT);
}

/* Thousands of sources in and out in a mixed order: every count stays right, so deletion never
 * breaks another source's probe chain. */
static void test_churn(void **state) {
  enum { N = 3000 };
  cr_srcmap_t *m = cr_srcmap_new(N, 4);
  static cr_srckey_t keys[N];
  static unsigned held[N];
  uint32_t x = 12345;
  char ip[32];
  size_t total = 0;
  (void)state;
  for (int i = 0; i < N; i++) {
    snprintf(ip, sizeof ip, "10.%d.%d.%d", i / 65536, (i / 256) % 256, i % 256);
    keys[i] = v4(ip);
  }
  for (int round = 0; round < 200000; round++) {
    x = x * 1103515245u + 12345u;
    int i = (int)((x >> 8) % N);
    if ((x >> 4) & 1) {
      int r = cr_srcmap_acquire(m, &keys[i]);
      if (held[i] < 4 && total < N) {
        assert_int_equal(r, 0);
        held[i]++;
        total++;
      } else {
        assert_int_equal(r, CR_ELIMIT);
      }
    } else if (held[i] > 0) {
      cr_srcmap_release(m, &keys[i]);
      held[i]--;
      total--;
    }
  }
  for (int i = 0; i < N; i++)
    assert_int_equal(cr_srcmap_count(m, &keys[i]), held[i]);
  assert_int_equal(cr_srcmap_total(m), total);
  cr_srcmap_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_per_source_cap), cmocka_unit_test(test_total_cap),
      cmocka_unit_test(test_ipv6_by_64),     cmocka_unit_test(test_other_family),
      cmocka_unit_test(test_churn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

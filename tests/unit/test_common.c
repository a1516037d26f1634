/* SPDX-License-Identifier: Apache-2.0 */
/* The small formatting helpers of common.h, and request ids (errpage.c), which the per-request paths
 * use instead of snprintf. */
#define _GNU_SOURCE /* memmem */
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
  /* A caller's id is kept when it is 1..64 of [A-Za-z0-9._:-]. */
  char long_id[66];
  memset(long_id, 'a', 65);
  long_id[65] = '\0';
  assert_false(cr_errpage_request_id_valid(long_id));
  long_id[64] = '\0';
  assert_true(cr_errpage_request_id_valid(long_id));
  assert_true(cr_errpage_request_id_valid("Az09._:-"));
  assert_false(cr_errpage_request_id_valid(""));
  assert_false(cr_errpage_request_id_valid(NULL));
  assert_false(cr_errpage_request_id_valid("a b"));
  assert_false(cr_errpage_request_id_valid("a\"b"));
  assert_false(cr_errpage_request_id_valid("\xc3\xa9"));
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

static int body_has(const cr_buf_t *b, const char *s) {
  return b->len > 0 && memmem(b->base, b->len, s, strlen(s)) != NULL;
}

/* ccrelay's own answers: JSON with the real status; SOAP Faults in the caller's version, always with
 * 500, the real status in the detail; X-Ccrelay-Error names the answer either way. */
static void test_errpage_json_and_soap(void **state) {
  cr_http_msg_t h;
  cr_buf_t b;
  (void)state;
  cr_http_msg_init(&h, 0);
  cr_buf_init(&b, 0);
  cr_errpage_build(503, "no_tunnel", "no agent <connected>", "rid1", 0, &h, &b);
  assert_int_equal(h.status, 503);
  assert_string_equal(cr_http_msg_get(&h, "content-type"), "application/json");
  assert_string_equal(cr_http_msg_get(&h, "x-ccrelay-error"), "no_tunnel");
  assert_true(body_has(&b, "\"error\":\"no_tunnel\",\"status\":503"));

  cr_errpage_build(503, "no_tunnel", "no agent <connected>", "rid1", CR_SOAP_11, &h, &b);
  assert_int_equal(h.status, 500);
  assert_string_equal(cr_http_msg_get(&h, "content-type"), "text/xml; charset=utf-8");
  assert_string_equal(cr_http_msg_get(&h, "x-ccrelay-error"), "no_tunnel");
  assert_true(body_has(&b, "xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\""));
  assert_true(body_has(&b, "<faultcode>soap:Server</faultcode><faultstring>no agent &lt;connected&gt;"));
  assert_true(body_has(&b, "<http-status>503</http-status><request-id>rid1</request-id>"));
  assert_int_equal(h.content_length, (int64_t)b.len);

  cr_errpage_build(404, "no_service", "nothing here", NULL, CR_SOAP_12, &h, &b);
  assert_int_equal(h.status, 500);
  assert_string_equal(cr_http_msg_get(&h, "content-type"), "application/soap+xml; charset=utf-8");
  assert_true(body_has(&b, "xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\""));
  assert_true(body_has(&b, "<env:Code><env:Value>env:Sender</env:Value></env:Code>"));
  assert_true(body_has(&b, "<env:Reason><env:Text xml:lang=\"en\">nothing here</env:Text></env:Reason>"));
  assert_true(body_has(&b, "<ccrelay-error>no_service</ccrelay-error><http-status>404</http-status>"));
  assert_false(body_has(&b, "faultcode"));
  cr_errpage_build(502, "upstream_failed", "x", NULL, CR_SOAP_12, &h, &b);
  assert_true(body_has(&b, "<env:Value>env:Receiver</env:Value>"));
  cr_buf_free(&b);
  cr_http_msg_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errpage_json_and_soap),
      cmocka_unit_test(test_strlcpy),
      cmocka_unit_test(test_u64_dec),
      cmocka_unit_test(test_request_ids),
      cmocka_unit_test(test_freelist),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

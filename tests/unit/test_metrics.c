/* SPDX-License-Identifier: Apache-2.0 */
/* The Prometheus renderer: HELP/TYPE lines, label escaping, histogram buckets (cumulative, +Inf,
 * sum and count), the fixed method and status-class enums, and the call blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ccrelay/metrics.h"

static char *text(cr_buf_t *b) {
  cr_buf_append(b, "", 1);
  b->len--;
  return b->base;
}

static void test_escape(void **state) {
  cr_buf_t b;
  (void)state;
  cr_buf_init(&b, 0);
  cr_metrics_escape(&b, "a\\b\"c\nd");
  assert_string_equal(text(&b), "a\\\\b\\\"c\\nd");
  cr_buf_reset(&b);
  cr_metrics_escape(&b, NULL);
  cr_metrics_escape(&b, "plain");
  assert_string_equal(text(&b), "plain");
  cr_buf_reset(&b);
  {
    cr_metrics_label_t l[2] = {{"route", "x\"y"}, {"method", "GET"}};
    cr_metrics_u64(&b, "ccrelay_t_total", l, 2, 42);
  }
  assert_string_equal(text(&b), "ccrelay_t_total{route=\"x\\\"y\",method=\"GET\"} 42\n");
  cr_buf_reset(&b);
  cr_metrics_u64(&b, "ccrelay_u", NULL, 0, 7);
  cr_metrics_double(&b, "ccrelay_d", NULL, 0, 1.5);
  assert_string_equal(text(&b), "ccrelay_u 7\nccrelay_d 1.5\n");
  cr_buf_free(&b);
}

static void test_family(void **state) {
  cr_buf_t b;
  (void)state;
  cr_buf_init(&b, 0);
  cr_metrics_family(&b, "ccrelay_x_total", "counter", "Back\\slash and\nnewline.");
  assert_string_equal(text(&b), "# HELP ccrelay_x_total Back\\\\slash and\\nnewline.\n# TYPE ccrelay_x_total counter\n");
  cr_buf_free(&b);
}

static void test_histogram(void **state) {
  static const double bounds[] = {0.1, 1, 10};
  cr_metrics_hist_t h;
  cr_buf_t b;
  cr_metrics_label_t l = {"route", "r"};
  (void)state;
  cr_metrics_hist_init(&h, bounds, 3);
  cr_metrics_hist_observe(&h, 0.05);
  cr_metrics_hist_observe(&h, 0.1); /* on the bound: that bucket (le is "less or equal") */
  cr_metrics_hist_observe(&h, 0.5);
  cr_metrics_hist_observe(&h, 100);
  assert_int_equal(h.counts[0], 2);
  assert_int_equal(h.counts[1], 1);
  assert_int_equal(h.counts[2], 0);
  assert_int_equal(h.counts[3], 1);
  assert_int_equal(h.count, 4);
  cr_buf_init(&b, 0);
  cr_metrics_hist(&b, "ccrelay_h_seconds", &l, 1, &h);
  assert_string_equal(text(&b), "ccrelay_h_seconds_bucket{route=\"r\",le=\"0.1\"} 2\n"
                                "ccrelay_h_seconds_bucket{route=\"r\",le=\"1\"} 3\n"
                                "ccrelay_h_seconds_bucket{route=\"r\",le=\"10\"} 3\n"
                                "ccrelay_h_seconds_bucket{route=\"r\",le=\"+Inf\"} 4\n"
                                "ccrelay_h_seconds_sum{route=\"r\"} 100.65000000000001\n"
                                "ccrelay_h_seconds_count{route=\"r\"} 4\n");
  cr_buf_reset(&b);
  cr_metrics_hist_init(&h, bounds, 3);
  cr_metrics_hist(&b, "ccrelay_e", NULL, 0, &h);
  assert_non_null(strstr(text(&b), "ccrelay_e_bucket{le=\"+Inf\"} 0\nccrelay_e_sum 0\nccrelay_e_count 0\n"));
  cr_buf_free(&b);
}

static void test_enums(void **state) {
  (void)state;
  assert_int_equal(cr_metrics_method("GET"), CR_METRICS_GET);
  assert_int_equal(cr_metrics_method("OPTIONS"), CR_METRICS_OPTIONS);
  assert_int_equal(cr_metrics_method("get"), CR_METRICS_OTHER);
  assert_int_equal(cr_metrics_method("BREW\"}"), CR_METRICS_OTHER);
  assert_int_equal(cr_metrics_method(NULL), CR_METRICS_OTHER);
  assert_string_equal(cr_metrics_method_name(CR_METRICS_OTHER), "other");
  assert_int_equal(cr_metrics_status_class(100), 0);
  assert_int_equal(cr_metrics_status_class(204), 1);
  assert_int_equal(cr_metrics_status_class(399), 2);
  assert_int_equal(cr_metrics_status_class(404), 3);
  assert_int_equal(cr_metrics_status_class(503), 4);
  assert_int_equal(cr_metrics_status_class(0), 4);
  assert_int_equal(cr_metrics_status_class(600), 4);
  assert_string_equal(cr_metrics_class_name(1), "2xx");
}

static void test_calls(void **state) {
  cr_metrics_calls_t c[2];
  const char *names[2] = {"alpha", "be\\ta"};
  const cr_metrics_calls_t *blocks[2] = {&c[0], &c[1]};
  cr_buf_t b;
  (void)state;
  cr_metrics_calls_init(&c[0]);
  cr_metrics_calls_init(&c[1]);
  cr_metrics_calls_end(&c[0], "POST", 200, 10, 20, 0.002);
  cr_metrics_calls_end(&c[0], "POST", 201, 5, 0, 0.004);
  cr_metrics_calls_end(&c[1], "FROB", 502, 0, 7, -1);
  c[1].in_flight = 3;
  cr_buf_init(&b, 0);
  cr_metrics_calls_render(&b, "ccrelay_x", "route", names, blocks, 2, "duration_seconds", "Time.");
  text(&b);
  assert_non_null(strstr(b.base, "# TYPE ccrelay_x_calls_total counter\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_calls_total{route=\"alpha\",method=\"POST\",code=\"2xx\"} 2\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_calls_total{route=\"be\\\\ta\",method=\"other\",code=\"5xx\"} 1\n"));
  assert_null(strstr(b.base, "method=\"GET\""));
  assert_non_null(strstr(b.base, "ccrelay_x_request_bytes_total{route=\"alpha\"} 15\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_response_bytes_total{route=\"be\\\\ta\"} 7\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_calls_in_flight{route=\"be\\\\ta\"} 3\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_duration_seconds_bucket{route=\"alpha\",le=\"0.0025\"} 1\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_duration_seconds_bucket{route=\"alpha\",le=\"0.005\"} 2\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_duration_seconds_count{route=\"alpha\"} 2\n"));
  assert_non_null(strstr(b.base, "ccrelay_x_duration_seconds_count{route=\"be\\\\ta\"} 0\n"));
  cr_buf_reset(&b);
  cr_metrics_build_info(&b, "1.2.3", "abc");
  assert_non_null(strstr(text(&b), "ccrelay_build_info{version=\"1.2.3\",revision=\"abc\"} 1\n"));
  cr_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_escape),   cmocka_unit_test(test_family), cmocka_unit_test(test_histogram),
      cmocka_unit_test(test_enums),    cmocka_unit_test(test_calls),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

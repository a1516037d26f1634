/* SPDX-License-Identifier: Apache-2.0 */
/* Lazy deadlines: moving one later or clearing it never fires the callback early or at all; moving
 * it earlier fires at the earlier time; one set fires once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ccrelay/deadline.h"

typedef struct fixture {
  uv_loop_t loop;
  cr_deadline_t d;
  int fired;
  uint64_t fired_at;
  uint64_t start;
} fixture_t;

static void on_due(cr_deadline_t *d) {
  fixture_t *f = d->timer.data;
  f->fired++;
  f->fired_at = uv_now(&f->loop) - f->start;
}

static void run_ms(fixture_t *f, uint64_t ms) {
  uint64_t end;
  uv_update_time(&f->loop);
  end = uv_now(&f->loop) + ms;
  while (uv_now(&f->loop) < end) {
    uv_run(&f->loop, UV_RUN_NOWAIT);
    uv_sleep(1);
    uv_update_time(&f->loop);
  }
  uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void setup(fixture_t *f) {
  assert_int_equal(uv_loop_init(&f->loop), 0);
  cr_deadline_init(&f->loop, &f->d);
  f->d.timer.data = f;
  f->fired = 0;
  uv_update_time(&f->loop);
  f->start = uv_now(&f->loop);
}

static void teardown(fixture_t *f) {
  cr_deadline_close(&f->d, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_fires_once_when_due(void **state) {
  fixture_t f;
  (void)state;
  setup(&f);
  cr_deadline_set(&f.d, on_due, 150);
  assert_true(cr_deadline_is_set(&f.d));
  run_ms(&f, 40);
  assert_int_equal(f.fired, 0);
  run_ms(&f, 250);
  assert_int_equal(f.fired, 1);
  assert_true(f.fired_at >= 150);
  assert_false(cr_deadline_is_set(&f.d));
  run_ms(&f, 40);
  assert_int_equal(f.fired, 1);
  teardown(&f);
}

static void test_moved_later_fires_later(void **state) {
  fixture_t f;
  (void)state;
  setup(&f);
  cr_deadline_set(&f.d, on_due, 20);
  run_ms(&f, 10);
  cr_deadline_set(&f.d, on_due, 200); /* now due at 210 or later */
  run_ms(&f, 60);                     /* the uv timer fired at 20 and re-armed */
  assert_int_equal(f.fired, 0);
  run_ms(&f, 300);
  assert_int_equal(f.fired, 1);
  assert_true(f.fired_at >= 210);
  teardown(&f);
}

static void test_moved_earlier_fires_earlier(void **state) {
  fixture_t f;
  (void)state;
  setup(&f);
  cr_deadline_set(&f.d, on_due, 10000);
  cr_deadline_set(&f.d, on_due, 20);
  run_ms(&f, 80);
  assert_int_equal(f.fired, 1);
  assert_true(f.fired_at >= 20 && f.fired_at < 5000);
  teardown(&f);
}

static void test_cleared_never_fires(void **state) {
  fixture_t f;
  (void)state;
  setup(&f);
  cr_deadline_set(&f.d, on_due, 20);
  cr_deadline_clear(&f.d);
  assert_false(cr_deadline_is_set(&f.d));
  run_ms(&f, 60);
  assert_int_equal(f.fired, 0);
  /* set again after a clear (the stale uv timer is still armed until it fires) */
  cr_deadline_set(&f.d, on_due, 20);
  run_ms(&f, 80);
  assert_int_equal(f.fired, 1);
  teardown(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fires_once_when_due),
      cmocka_unit_test(test_moved_later_fires_later),
      cmocka_unit_test(test_moved_earlier_fires_earlier),
      cmocka_unit_test(test_cleared_never_fires),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The heap trimmer's policy: a little free heap is trimmed only when the role is idle, a burst's
 * worth always, and never twice when nothing changed in between. (The policy is tested on numbers:
 * under the sanitizers the heap is ASan's and mallinfo2 reports nothing.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ccrelay/memtrim.h"

#define KIB 1024u
#define MIB (1024u * 1024u)

static int busy_flag;

static int busy(void *arg) { return *(int *)arg; }

static void test_policy(void **state) {
  cr_memtrim_t mt = {.busy = busy, .arg = &busy_flag};
  (void)state;
  assert_false(cr_memtrim_due(&mt, 0, 100 * KIB, 5 * MIB)); /* idle, too little to bother */
  assert_true(cr_memtrim_due(&mt, 0, 300 * KIB, 5 * MIB));  /* idle: give it back */
  assert_false(cr_memtrim_due(&mt, 1, 300 * KIB, 5 * MIB)); /* busy: about to be reused */
  assert_false(cr_memtrim_due(&mt, 1, 7 * MIB, 5 * MIB));
  assert_true(cr_memtrim_due(&mt, 1, 9 * MIB, 5 * MIB));    /* busy, but after a burst */

  /* right after a trim that left these numbers, the same numbers are not worth another */
  mt.last_free = 9 * MIB;
  mt.last_used = 5 * MIB;
  assert_false(cr_memtrim_due(&mt, 1, 9 * MIB, 5 * MIB));
  assert_true(cr_memtrim_due(&mt, 1, 9 * MIB, 5 * MIB + 64)); /* the heap moved since */
  assert_false(cr_memtrim_due(&mt, 0, 9 * MIB, 5 * MIB));
}

/* Start and stop leave no handle behind. */
static void test_start_stop(void **state) {
  uv_loop_t loop;
  cr_memtrim_t mt;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  busy_flag = 0;
  cr_memtrim_start(&loop, &mt, 5, busy, NULL, &busy_flag);
  uv_run(&loop, UV_RUN_NOWAIT);
  cr_memtrim_stop(&mt);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct role {
  int busy; /* first: busy() reads it through the same pointer */
  int releases;
} role_t;

static void count_release(void *arg) { ((role_t *)arg)->releases++; }

static void on_stop(uv_timer_t *t) { uv_stop(t->loop); }

static void run_ms(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, on_stop, ms, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

/* The caches go back only at checks that find the role idle. */
static void test_release_when_idle(void **state) {
  uv_loop_t loop;
  cr_memtrim_t mt;
  role_t role = {.busy = 1, .releases = 0};
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  cr_memtrim_start(&loop, &mt, 5, busy, count_release, &role);
  run_ms(&loop, 40);
  assert_int_equal(role.releases, 0);
  role.busy = 0;
  run_ms(&loop, 40);
  assert_true(role.releases > 0);
  cr_memtrim_stop(&mt);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy),
      cmocka_unit_test(test_start_stop),
      cmocka_unit_test(test_release_when_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

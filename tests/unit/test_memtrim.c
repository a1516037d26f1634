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
  busy_flag = 0;
  assert_false(cr_memtrim_due(&mt, 100 * KIB, 5 * MIB)); /* idle, too little to bother */
  assert_true(cr_memtrim_due(&mt, 300 * KIB, 5 * MIB));  /* idle: give it back */
  busy_flag = 1;
  assert_false(cr_memtrim_due(&mt, 300 * KIB, 5 * MIB)); /* busy: about to be reused */
  assert_false(cr_memtrim_due(&mt, 7 * MIB, 5 * MIB));
  assert_true(cr_memtrim_due(&mt, 9 * MIB, 5 * MIB));    /* busy, but after a burst */

  /* right after a trim that left these numbers, the same numbers are not worth another */
  mt.last_free = 9 * MIB;
  mt.last_used = 5 * MIB;
  assert_false(cr_memtrim_due(&mt, 9 * MIB, 5 * MIB));
  assert_true(cr_memtrim_due(&mt, 9 * MIB, 5 * MIB + 64)); /* the heap moved since */
  busy_flag = 0;
  assert_false(cr_memtrim_due(&mt, 9 * MIB, 5 * MIB));

  /* no busy callback: always treated as busy */
  mt.busy = NULL;
  mt.last_free = mt.last_used = 0;
  assert_false(cr_memtrim_due(&mt, 300 * KIB, 5 * MIB));
  assert_true(cr_memtrim_due(&mt, 9 * MIB, 5 * MIB));
}

/* Start and stop leave no handle behind. */
static void test_start_stop(void **state) {
  uv_loop_t loop;
  cr_memtrim_t mt;
  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  busy_flag = 0;
  cr_memtrim_start(&loop, &mt, 5, busy, &busy_flag);
  uv_run(&loop, UV_RUN_NOWAIT);
  cr_memtrim_stop(&mt);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_policy),
      cmocka_unit_test(test_start_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

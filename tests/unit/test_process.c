/* SPDX-License-Identifier: Apache-2.0 */
/* The process module: a stop signal drains, the deadline cuts a drain that does not finish, a second
 * signal cuts it at once, SIGHUP calls the reload handler (or is ignored without one), idle trim
 * checks run the cache-release hooks in order, and every run leaves a loop that closes cleanly.
 * Signals are raised in this process: libuv's handler only writes to its pipe, the loop does the rest. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ccrelay/process.h"

/* A pretend role: work that finishes `work_ms` after the drain began (never when 0), unless cut. */
typedef struct role {
  uv_loop_t *loop;
  cr_process_t *proc;
  uv_timer_t work;     /* finishes the work in flight */
  uv_timer_t poke;     /* raises a signal some time after the drain began */
  uint64_t work_ms;
  int poke_signal;     /* 0: none */
  uint64_t poke_ms;
  int done;            /* nothing left in flight */
  int busy;
  int drains, cuts, stops, reloads;
  cr_process_end_t cut_why;
  uint64_t drain_at, cut_at;
  char order[16];      /* release hooks, in the order they ran: "ab" per check */
  size_t norder;
  int releases_a, releases_b;
} role_t;

static void work_done(uv_timer_t *t) {
  role_t *r = t->data;
  r->done = 1;
}

static void poke(uv_timer_t *t) {
  role_t *r = t->data;
  raise(r->poke_signal);
}

static void role_drain(void *arg) {
  role_t *r = arg;
  r->drains++;
  r->drain_at = uv_now(r->loop);
  if (r->work_ms)
    uv_timer_start(&r->work, work_done, r->work_ms, 0);
  if (r->poke_signal)
    uv_timer_start(&r->poke, poke, r->poke_ms, 0);
}

static int role_drained(void *arg) { return ((role_t *)arg)->done; }

static void role_cut(void *arg, cr_process_end_t why) {
  role_t *r = arg;
  r->cuts++;
  r->cut_why = why;
  r->cut_at = uv_now(r->loop);
  r->done = 1; /* closing what is left is immediate here */
}

/* The role's handles go once the process says the drain is over. */
static void role_stop(void *arg) {
  role_t *r = arg;
  r->stops++;
  uv_close((uv_handle_t *)&r->work, NULL);
  uv_close((uv_handle_t *)&r->poke, NULL);
}

static int role_busy(void *arg) { return ((role_t *)arg)->busy; }

static void role_reload(void *arg) {
  role_t *r = arg;
  r->reloads++;
  raise(SIGTERM); /* the run ends once the reload was seen */
}

static void release_a(void *arg) {
  role_t *r = arg;
  r->releases_a++;
  if (r->norder < sizeof r->order - 1)
    r->order[r->norder++] = 'a';
}

static void release_b(void *arg) {
  role_t *r = arg;
  r->releases_b++;
  if (r->norder < sizeof r->order - 1)
    r->order[r->norder++] = 'b';
}

static const cr_process_handlers_t handlers = {
    .drain = role_drain,
    .drained = role_drained,
    .cut = role_cut,
    .stop = role_stop,
    .busy = role_busy,
};

static void role_init(role_t *r, uv_loop_t *loop, uint64_t drain_timeout_ms, uint64_t trim_ms) {
  memset(r, 0, sizeof *r);
  assert_int_equal(uv_loop_init(loop), 0);
  r->loop = loop;
  r->busy = 1;
  uv_timer_init(loop, &r->work);
  uv_timer_init(loop, &r->poke);
  r->work.data = r->poke.data = r;
  r->proc = cr_process_new(loop, &handlers, r, drain_timeout_ms, trim_ms);
}

/* Runs the process to its end and checks that nothing was left on the loop. */
static cr_process_end_t role_run(role_t *r) {
  cr_process_end_t end;
  assert_int_equal(cr_process_start(r->proc), 0);
  end = cr_process_run(r->proc);
  assert_int_equal(cr_process_end(r->proc), end);
  cr_process_free(r->proc);
  assert_int_equal(uv_loop_close(r->loop), 0);
  return end;
}

static void raise_cb(uv_timer_t *t) {
  raise(*(int *)t->data);
  uv_close((uv_handle_t *)t, NULL);
}

/* Raises *sig ms after the loop starts (raised before cr_process_start it would take its default). */
static void start_raise(uv_loop_t *loop, uv_timer_t *t, int *sig, uint64_t ms) {
  uv_timer_init(loop, t);
  t->data = sig;
  uv_timer_start(t, raise_cb, ms, 0);
}

/* SIGTERM: the drain runs, the work finishes by itself, no cut; the role's stop comes last. */
static void test_drain_on_sigterm(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGTERM;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 0);
  r.work_ms = 30;
  start_raise(&loop, &t, &sig, 5);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_int_equal(r.drains, 1);
  assert_int_equal(r.cuts, 0);
  assert_int_equal(r.stops, 1);
}

/* SIGINT drains the same way; with nothing in flight the drain is over at once. */
static void test_drain_on_sigint_nothing_in_flight(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGINT;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 0);
  r.done = 1;
  start_raise(&loop, &t, &sig, 5);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_int_equal(r.drains, 1);
  assert_int_equal(r.cuts, 0);
  assert_int_equal(r.stops, 1);
}

/* Work that never finishes is cut at drain_timeout + the grace. */
static void test_deadline_cuts(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGTERM;
  role_t r;
  (void)state;
  role_init(&r, &loop, 100, 0);
  start_raise(&loop, &t, &sig, 5);
  assert_int_equal(role_run(&r), CR_PROCESS_DEADLINE);
  assert_int_equal(r.drains, 1);
  assert_int_equal(r.cuts, 1);
  assert_int_equal(r.cut_why, CR_PROCESS_DEADLINE);
  assert_true(r.cut_at - r.drain_at >= 100 + CR_PROCESS_DRAIN_GRACE_MS - 5);
  assert_int_equal(r.stops, 1);
}

/* A second stop signal cuts at once, long before the deadline, which then never fires. */
static void test_second_signal_forces(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGTERM;
  role_t r;
  (void)state;
  role_init(&r, &loop, 2000, 0);
  r.poke_signal = SIGINT;
  r.poke_ms = 20;
  start_raise(&loop, &t, &sig, 5);
  assert_int_equal(role_run(&r), CR_PROCESS_FORCED);
  assert_int_equal(r.drains, 1);
  assert_int_equal(r.cuts, 1);
  assert_int_equal(r.cut_why, CR_PROCESS_FORCED);
  assert_true(r.cut_at - r.drain_at < 1000);
  assert_int_equal(r.stops, 1);
}

/* SIGHUP calls the reload handler, and is no stop signal. */
static void test_sighup_calls_reload(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGHUP;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 0);
  r.done = 1;
  cr_process_on_reload(r.proc, role_reload, &r);
  start_raise(&loop, &t, &sig, 5);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_int_equal(r.reloads, 1);
  assert_int_equal(r.drains, 1); /* from the SIGTERM the reload handler raised */
}

/* Without a reload handler SIGHUP is ignored: the process survives it (its default would end it). */
static void test_sighup_ignored_without_handler(void **state) {
  uv_loop_t loop;
  uv_timer_t t1, t2;
  int hup = SIGHUP, term = SIGTERM;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 0);
  r.done = 1;
  start_raise(&loop, &t1, &hup, 5);
  start_raise(&loop, &t2, &term, 40);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_int_equal(r.reloads, 0);
  assert_int_equal(r.drains, 1);
}

/* Idle trim checks run the release hooks in the order they were added; busy checks run none. */
static void test_release_hooks_on_trim(void **state) {
  uv_loop_t loop;
  uv_timer_t t;
  int sig = SIGTERM;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 5);
  r.done = 1;
  cr_process_on_release(r.proc, release_a, &r);
  cr_process_on_release(r.proc, release_b, &r);
  start_raise(&loop, &t, &sig, 60);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_int_equal(r.releases_a, 0); /* busy all along */

  role_init(&r, &loop, 5000, 5);
  r.done = 1;
  r.busy = 0;
  cr_process_on_release(r.proc, release_a, &r);
  cr_process_on_release(r.proc, release_b, &r);
  start_raise(&loop, &t, &sig, 60);
  assert_int_equal(role_run(&r), CR_PROCESS_DRAINED);
  assert_true(r.releases_a > 0);
  assert_int_equal(r.releases_a, r.releases_b);
  assert_memory_equal(r.order, "ab", 2);
}

/* A role that fails before it runs closes the process without a drain. */
static void test_close_without_run(void **state) {
  uv_loop_t loop;
  role_t r;
  (void)state;
  role_init(&r, &loop, 5000, 0);
  cr_process_close(r.proc);
  cr_process_close(r.proc); /* idempotent */
  role_stop(&r);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(cr_process_end(r.proc), CR_PROCESS_RUNNING);
  assert_int_equal(r.drains, 0);
  cr_process_free(r.proc);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_drain_on_sigterm),
      cmocka_unit_test(test_drain_on_sigint_nothing_in_flight),
      cmocka_unit_test(test_deadline_cuts),
      cmocka_unit_test(test_second_signal_forces),
      cmocka_unit_test(test_sighup_calls_reload),
      cmocka_unit_test(test_sighup_ignored_without_handler),
      cmocka_unit_test(test_release_hooks_on_trim),
      cmocka_unit_test(test_close_without_run),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

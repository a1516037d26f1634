/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/process.h"

#include <signal.h>
#include <stdlib.h>

#include "ccrelay/alloc.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/memtrim.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"

#define DEFAULT_TRIM_INTERVAL_MS 1000

typedef struct release_hook {
  void (*fn)(void *arg);
  void *arg;
} release_hook_t;

struct cr_process {
  uv_loop_t *loop;
  cr_process_handlers_t h;
  void *arg;
  uint64_t drain_timeout_ms;
  uv_signal_t sigterm;
  uv_signal_t sigint;
  uv_signal_t sighup;
  uv_timer_t deadline;
  cr_memtrim_t memtrim;
  void (*reload)(void *arg);
  void *reload_arg;
  release_hook_t *hooks;
  size_t nhooks;
  cr_process_end_t end;
  unsigned closed : 1;
  int cut_seen; /* a call in flight was cut while draining (by the tunnels' own drain deadline) */
};

/* The memtrim's idle callback: the role's caches first (they hold chunks of the lower modules'
 * buffers), then the process-wide ones. */
static void release_caches(void *arg) {
  cr_process_t *p = arg;
  for (size_t i = 0; i < p->nhooks; i++)
    p->hooks[i].fn(p->hooks[i].arg);
  cr_http_msg_release_caches();
  cr_tls_release_caches();
  cr_stream_release_caches();
}

static int role_busy(void *arg) {
  cr_process_t *p = arg;
  return p->h.busy == NULL || p->h.busy(p->arg);
}

void cr_process_close(cr_process_t *p) {
  if (p->closed)
    return;
  p->closed = 1;
  uv_close((uv_handle_t *)&p->sigterm, NULL);
  uv_close((uv_handle_t *)&p->sigint, NULL);
  uv_close((uv_handle_t *)&p->sighup, NULL);
  uv_close((uv_handle_t *)&p->deadline, NULL);
  cr_memtrim_stop(&p->memtrim);
}

/* Drained: nothing of the process may keep the loop running any more; the role closes the rest. */
static void check_drained(cr_process_t *p) {
  if (p->closed || p->end == CR_PROCESS_RUNNING || !p->h.drained(p->arg))
    return;
  if (p->end == CR_PROCESS_DRAINING)
    p->end = p->cut_seen ? CR_PROCESS_DEADLINE : CR_PROCESS_DRAINED;
  cr_process_close(p);
  if (p->h.stop)
    p->h.stop(p->arg);
}

static void on_deadline(uv_timer_t *t) {
  cr_process_t *p = t->data;
  if (p->h.in_flight)
    cr_log_warn("drain deadline reached", "in_flight=%zu", p->h.in_flight(p->arg));
  else
    cr_log_warn("drain deadline reached", "");
  if (p->end == CR_PROCESS_DRAINING)
    p->end = CR_PROCESS_DEADLINE;
  p->h.cut(p->arg, CR_PROCESS_DEADLINE);
}

static void on_stop_signal(uv_signal_t *sig, int signum) {
  cr_process_t *p = sig->data;
  if (p->end != CR_PROCESS_RUNNING) {
    cr_log_warn("second stop signal: closing now", "signal=%d", signum);
    uv_timer_stop(&p->deadline);
    if (p->end == CR_PROCESS_DRAINING)
      p->end = CR_PROCESS_FORCED;
    p->h.cut(p->arg, CR_PROCESS_FORCED);
    return;
  }
  p->end = CR_PROCESS_DRAINING;
  cr_log_info("draining", "signal=%d deadline_ms=%llu", signum, (unsigned long long)p->drain_timeout_ms);
  p->h.drain(p->arg);
  uv_timer_start(&p->deadline, on_deadline, p->drain_timeout_ms + CR_PROCESS_DRAIN_GRACE_MS, 0);
  check_drained(p); /* nothing was in flight: no reason to wait for a loop turn */
}

static void on_sighup(uv_signal_t *sig, int signum) {
  cr_process_t *p = sig->data;
  (void)signum;
  if (p->reload)
    p->reload(p->reload_arg);
}

cr_process_t *cr_process_new(uv_loop_t *loop, const cr_process_handlers_t *h, void *arg, uint64_t drain_timeout_ms,
                             uint64_t trim_interval_ms) {
  cr_process_t *p = cr_calloc(1, sizeof *p);
  signal(SIGPIPE, SIG_IGN);
  p->loop = loop;
  p->h = *h;
  p->arg = arg;
  p->drain_timeout_ms = drain_timeout_ms;
  uv_signal_init(loop, &p->sigterm);
  uv_signal_init(loop, &p->sigint);
  uv_signal_init(loop, &p->sighup);
  uv_timer_init(loop, &p->deadline);
  p->sigterm.data = p->sigint.data = p->sighup.data = p->deadline.data = p;
  cr_memtrim_start(loop, &p->memtrim, trim_interval_ms ? trim_interval_ms : DEFAULT_TRIM_INTERVAL_MS, role_busy,
                   release_caches, p);
  return p;
}

void cr_process_set_drain_timeout(cr_process_t *p, uint64_t drain_timeout_ms) { p->drain_timeout_ms = drain_timeout_ms; }

void cr_process_on_reload(cr_process_t *p, void (*reload)(void *arg), void *arg) {
  p->reload = reload;
  p->reload_arg = arg;
}

void cr_process_on_release(cr_process_t *p, void (*release)(void *arg), void *arg) {
  p->hooks = cr_realloc(p->hooks, (p->nhooks + 1) * sizeof *p->hooks);
  p->hooks[p->nhooks].fn = release;
  p->hooks[p->nhooks].arg = arg;
  p->nhooks++;
}

int cr_process_start(cr_process_t *p) {
  int r;
  if ((r = uv_signal_start(&p->sigterm, on_stop_signal, SIGTERM)) < 0 ||
      (r = uv_signal_start(&p->sigint, on_stop_signal, SIGINT)) < 0 ||
      (r = uv_signal_start(&p->sighup, on_sighup, SIGHUP)) < 0)
    return r;
  return 0;
}

cr_process_end_t cr_process_run(cr_process_t *p) {
  for (;;) {
    cr_log_flush(); /* before the loop may block: lines of the last turn go out now */
    if (!uv_run(p->loop, UV_RUN_ONCE))
      break;
    check_drained(p);
  }
  return p->end;
}

cr_process_end_t cr_process_end(const cr_process_t *p) { return p->end; }

void cr_process_free(cr_process_t *p) {
  if (p == NULL)
    return;
  free(p->hooks);
  free(p);
}

void cr_process_note_cut(cr_process_t *p) {
  if (p != NULL && p->end == CR_PROCESS_DRAINING)
    p->cut_seen = 1;
}

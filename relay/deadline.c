/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/deadline.h"

static void on_fire(uv_timer_t *t) {
  cr_deadline_t *d = (cr_deadline_t *)t; /* timer is the first member */
  uint64_t now = uv_now(t->loop);
  if (d->due == 0)
    return; /* cleared since it was armed */
  if (now < d->due) {
    d->armed = d->due;
    uv_timer_start(&d->timer, on_fire, d->due - now, 0);
    return;
  }
  d->due = 0;
  d->cb(d);
}

void cr_deadline_init(uv_loop_t *loop, cr_deadline_t *d) {
  uv_timer_init(loop, &d->timer);
  d->cb = NULL;
  d->due = 0;
  d->armed = 0;
}

void cr_deadline_set(cr_deadline_t *d, cr_deadline_cb cb, uint64_t ms) {
  uint64_t now = uv_now(d->timer.loop);
  d->cb = cb;
  d->due = now + ms ? now + ms : 1; /* 0 means cleared */
  if (uv_is_active((uv_handle_t *)&d->timer) && d->armed <= d->due)
    return; /* fires first, then re-arms for the rest */
  d->armed = d->due;
  uv_timer_start(&d->timer, on_fire, ms, 0);
}

void cr_deadline_clear(cr_deadline_t *d) { d->due = 0; }

int cr_deadline_is_set(const cr_deadline_t *d) { return d->due != 0; }

void cr_deadline_close(cr_deadline_t *d, uv_close_cb cb) {
  d->due = 0;
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, cb);
}

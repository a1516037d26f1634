/* SPDX-License-Identifier: Apache-2.0 */
/* A timeout that is cheap to move. Connections re-arm their timeout on every request (header, request,
 * idle, response...), and each uv_timer_start/stop is a heap operation on the loop's timer heap. A
 * deadline only records when it is due: the uv timer underneath stays armed at an earlier or equal
 * time, and when it fires before the recorded time it re-arms for the rest (nginx's lazy timers do
 * the same). Moving a deadline later, or clearing it, costs a store; only an earlier one re-arms.
 *
 * The callback fires once per set, at or after the due time, never from inside cr_deadline_* calls. */
#ifndef CCRELAY_DEADLINE_H
#define CCRELAY_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct cr_deadline cr_deadline_t;
typedef void (*cr_deadline_cb)(cr_deadline_t *d);

struct cr_deadline {
  uv_timer_t timer; /* timer.data is the owner's */
  cr_deadline_cb cb;
  uint64_t due;   /* loop time the callback is due at; 0 when cleared */
  uint64_t armed; /* loop time the uv timer fires at, when active */
};

void cr_deadline_init(uv_loop_t *loop, cr_deadline_t *d);
/* Due in ms from the loop's now, calling cb; replaces any earlier setting. */
void cr_deadline_set(cr_deadline_t *d, cr_deadline_cb cb, uint64_t ms);
void cr_deadline_clear(cr_deadline_t *d);
int cr_deadline_is_set(const cr_deadline_t *d);
/* Closes the timer handle (uv_close on d->timer, with cb). */
void cr_deadline_close(cr_deadline_t *d, uv_close_cb cb);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Gives memory back to the system after a burst. glibc keeps freed heap pages for reuse, so after
 * ten thousand streams have come and gone an idle relay would sit on hundreds of MiB; a timer
 * checks how much the heap holds free and trims it when that is worth a system call: above 8 MiB
 * while busy, above 256 KiB once the role says nothing is in flight. */
#ifndef CCRELAY_MEMTRIM_H
#define CCRELAY_MEMTRIM_H

#include <uv.h>

typedef struct cr_memtrim {
  uv_timer_t timer;
  int (*busy)(void *arg);
  void (*release)(void *arg);
  void *arg;
  size_t last_free; /* the heap's free and used bytes right after the last trim */
  size_t last_used;
} cr_memtrim_t;

/* Starts checking every interval_ms. busy(arg) (may be NULL: always busy), called once per check,
 * says whether work is in flight or has been since its previous call (a role that answered a
 * thousand requests in the last second is not idle because none is in flight at the instant of the
 * check); release(arg) (may be NULL), called at each check that finds the role idle, gives back the
 * caches kept for the next burst (free lists), so their scattered chunks do not pin heap pages that
 * the trim could otherwise return. */
void cr_memtrim_start(uv_loop_t *loop, cr_memtrim_t *mt, uint64_t interval_ms, int (*busy)(void *arg),
                      void (*release)(void *arg), void *arg);
/* Closes the timer (the struct must live until the loop has run once more). */
void cr_memtrim_stop(cr_memtrim_t *mt);
/* The policy, given what busy() said and the heap's free and used bytes (mallinfo2's fordblks and
 * uordblks): 1 when a trim is worth it now. */
int cr_memtrim_due(const cr_memtrim_t *mt, int busy, size_t free_bytes, size_t used_bytes);

#endif

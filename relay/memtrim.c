/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/memtrim.h"

#include <malloc.h>

#include "ccrelay/log.h"

/* A busy process trims only after a burst: below this much free heap the pages are about to be
 * used again, and giving them back would cost page faults. */
#define BURST_THRESHOLD (8u * 1024 * 1024)
/* An idle process (the role says nothing is in flight) gives back what it holds above this. */
#define IDLE_THRESHOLD (256u * 1024)

int cr_memtrim_due(const cr_memtrim_t *mt, int busy, size_t free_bytes, size_t used_bytes) {
  size_t threshold = busy ? BURST_THRESHOLD : IDLE_THRESHOLD;
  if (free_bytes < threshold)
    return 0;
  /* Trimmed pages still count as free heap: without a change since the last trim there is nothing
   * new to give back, and walking the heap again would only cost time. */
  return free_bytes != mt->last_free || used_bytes != mt->last_used;
}

static void on_check(uv_timer_t *t) {
  cr_memtrim_t *mt = t->data;
  int busy = mt->busy == NULL || mt->busy(mt->arg);
  struct mallinfo2 mi;
  if (!busy && mt->release != NULL)
    mt->release(mt->arg);
  mi = mallinfo2();
  if (!cr_memtrim_due(mt, busy, mi.fordblks, mi.uordblks))
    return;
  malloc_trim(0);
  mi = mallinfo2();
  mt->last_free = mi.fordblks;
  mt->last_used = mi.uordblks;
  cr_log_debug("heap trimmed", "free_kib=%zu used_kib=%zu", mi.fordblks / 1024, mi.uordblks / 1024);
}

void cr_memtrim_start(uv_loop_t *loop, cr_memtrim_t *mt, uint64_t interval_ms, int (*busy)(void *arg),
                      void (*release)(void *arg), void *arg) {
  mt->busy = busy;
  mt->release = release;
  mt->arg = arg;
  mt->last_free = mt->last_used = 0;
  uv_timer_init(loop, &mt->timer);
  mt->timer.data = mt;
  uv_timer_start(&mt->timer, on_check, interval_ms, interval_ms);
  uv_unref((uv_handle_t *)&mt->timer); /* never the reason the loop keeps running */
}

void cr_memtrim_stop(cr_memtrim_t *mt) {
  if (!uv_is_closing((uv_handle_t *)&mt->timer))
    uv_close((uv_handle_t *)&mt->timer, NULL);
}

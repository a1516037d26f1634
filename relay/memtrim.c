#include "ccrelay/memtrim.h"

#include <malloc.h>

#include "ccrelay/log.h"

/* Below this much free heap a trim is not worth its cost (checking costs microseconds, so the roles
 * check every second). */
#define TRIM_THRESHOLD (8u * 1024 * 1024)

static void on_check(uv_timer_t *t) {
  struct mallinfo2 mi = mallinfo2();
  if (mi.fordblks < TRIM_THRESHOLD)
    return;
  malloc_trim(0);
  cr_log_debug("heap trimmed", "free_before_kib=%zu free_after_kib=%zu", mi.fordblks / 1024,
               mallinfo2().fordblks / 1024);
}

void cr_memtrim_start(uv_loop_t *loop, cr_memtrim_t *mt, uint64_t interval_ms) {
  uv_timer_init(loop, &mt->timer);
  uv_timer_start(&mt->timer, on_check, interval_ms, interval_ms);
  uv_unref((uv_handle_t *)&mt->timer); /* never the reason the loop keeps running */
}

void cr_memtrim_stop(cr_memtrim_t *mt) {
  if (!uv_is_closing((uv_handle_t *)&mt->timer))
    uv_close((uv_handle_t *)&mt->timer, NULL);
}

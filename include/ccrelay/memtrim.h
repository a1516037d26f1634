/* Gives memory back to the system after a burst. glibc keeps freed heap pages for reuse, so after
 * ten thousand streams have come and gone an idle relay would sit on hundreds of MiB; a timer
 * checks how much the heap holds free and trims it when that is worth a system call. */
#ifndef CCRELAY_MEMTRIM_H
#define CCRELAY_MEMTRIM_H

#include <uv.h>

typedef struct cr_memtrim {
  uv_timer_t timer;
} cr_memtrim_t;

/* Starts checking every interval_ms. */
void cr_memtrim_start(uv_loop_t *loop, cr_memtrim_t *mt, uint64_t interval_ms);
/* Closes the timer (the struct must live until the loop has run once more). */
void cr_memtrim_stop(cr_memtrim_t *mt);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* An in-memory cr_stream_t for fuzz targets: reads deliver the bytes the fuzzer feeds, in splits the
 * input chooses, one chunk per loop turn; writes are counted and discarded. It keeps the contract of
 * include/ccrelay/stream.h (callbacks never fire inside the call that caused them, write callbacks
 * fire exactly once and in order, close cancels pending writes with UV_ECANCELED before close_cb on a
 * later turn), so a layer that relies on it is exercised as over TCP, without sockets.
 *
 * Each chunk is copied into a buffer of its exact size that is freed right after the read callback,
 * so AddressSanitizer catches a reader that keeps or overreads `data`.
 *
 * Header-only (static functions): tests/CMakeLists.txt builds every fuzz_*.c as a target. */
#ifndef CCRELAY_FUZZ_MEMSTREAM_H
#define CCRELAY_FUZZ_MEMSTREAM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/alloc.h"
#include "ccrelay/stream.h"

enum {
  FUZZ_MEM_EOF = 1,       /* after the input: UV_EOF (else the stream stays open and silent) */
  FUZZ_MEM_RESET = 2,     /* after the input: UV_ECONNRESET instead */
  FUZZ_MEM_SPLIT = 4,     /* random chunk sizes (else the whole input in one read) */
  FUZZ_MEM_WRITE_FAIL = 8 /* the 4th write and every one after it completes with UV_EPIPE */
};

typedef struct fuzz_mem_write {
  cr_stream_write_cb cb;
  void *arg;
  size_t len;
} fuzz_mem_write_t;

typedef struct fuzz_mem {
  cr_stream_t s;
  uv_idle_t tick; /* delivers input and completes writes, one step per loop turn */
  cr_stream_read_cb read_cb;
  const uint8_t *in;
  size_t in_len, in_off;
  size_t hold_at;  /* nonzero: stop before this offset until fuzz_mem_release */
  unsigned flags;
  uint32_t rng;
  fuzz_mem_write_t *w; /* pending write callbacks */
  size_t nw, wcap;
  size_t queued;       /* bytes of pending writes */
  size_t nwrites;
  size_t *bytes_written; /* optional: the harness's count of bytes written, kept past the stream */
  cr_stream_close_cb close_cb;
  void (*close_probe)(cr_stream_t *s); /* optional: the harness learns the stream is gone */
  unsigned reading : 1;
  unsigned end_sent : 1;
  unsigned closing : 1;
} fuzz_mem_t;

static inline uint32_t fuzz_mem_rand(uint32_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 17;
  *x ^= *x << 5;
  return *x;
}

static inline size_t fuzz_mem_avail_end(const fuzz_mem_t *m) { return m->hold_at ? m->hold_at : m->in_len; }

static inline int fuzz_mem_busy(const fuzz_mem_t *m) {
  if (m->nw > 0)
    return 1;
  if (!m->reading || m->end_sent)
    return 0;
  if (m->in_off < fuzz_mem_avail_end(m))
    return 1;
  return m->hold_at == 0 && (m->flags & (FUZZ_MEM_EOF | FUZZ_MEM_RESET));
}

static inline void fuzz_mem_tick(uv_idle_t *h);

static inline void fuzz_mem_kick(fuzz_mem_t *m) {
  if (!m->closing && fuzz_mem_busy(m))
    uv_idle_start(&m->tick, fuzz_mem_tick);
}

static inline void fuzz_mem_complete_writes(fuzz_mem_t *m, int status_override) {
  /* Callbacks may write again: complete only the ones pending now. */
  size_t n = m->nw;
  fuzz_mem_write_t *w = m->w;
  m->w = NULL;
  m->nw = m->wcap = 0;
  for (size_t i = 0; i < n; i++) {
    int status = status_override;
    m->queued -= w[i].len;
    if (status == 0 && (m->flags & FUZZ_MEM_WRITE_FAIL) && ++m->nwrites >= 4)
      status = UV_EPIPE;
    if (status == 0 && m->bytes_written)
      *m->bytes_written += w[i].len;
    if (w[i].cb)
      w[i].cb(&m->s, status, w[i].arg);
  }
  free(w);
}

static inline void fuzz_mem_tick(uv_idle_t *h) {
  fuzz_mem_t *m = h->data;
  fuzz_mem_complete_writes(m, 0);
  if (m->closing)
    return;
  if (m->reading && m->in_off < fuzz_mem_avail_end(m)) {
    size_t n = fuzz_mem_avail_end(m) - m->in_off;
    char *chunk;
    if (m->flags & FUZZ_MEM_SPLIT)
      n = 1 + fuzz_mem_rand(&m->rng) % (n < 64 ? n : (fuzz_mem_rand(&m->rng) & 1) ? 64 : n);
    chunk = cr_malloc(n);
    memcpy(chunk, m->in + m->in_off, n);
    m->in_off += n;
    m->read_cb(&m->s, (ssize_t)n, chunk);
    free(chunk);
  } else if (m->reading && !m->end_sent && m->hold_at == 0 && (m->flags & (FUZZ_MEM_EOF | FUZZ_MEM_RESET))) {
    m->end_sent = 1;
    m->reading = 0;
    m->read_cb(&m->s, (m->flags & FUZZ_MEM_EOF) ? UV_EOF : UV_ECONNRESET, NULL);
  }
  if (!m->closing && !fuzz_mem_busy(m))
    uv_idle_stop(&m->tick);
}

static inline int fuzz_mem_read_start(cr_stream_t *s, cr_stream_read_cb cb) {
  fuzz_mem_t *m = (fuzz_mem_t *)s;
  if (m->closing || m->end_sent)
    return UV_EINVAL;
  m->read_cb = cb;
  m->reading = 1;
  fuzz_mem_kick(m);
  return 0;
}

static inline int fuzz_mem_read_stop(cr_stream_t *s) {
  fuzz_mem_t *m = (fuzz_mem_t *)s;
  m->reading = 0;
  return 0;
}

static inline int fuzz_mem_queue(fuzz_mem_t *m, size_t len, cr_stream_write_cb cb, void *arg) {
  if (m->closing)
    return UV_EPIPE;
  if (m->nw == m->wcap) {
    m->wcap = m->wcap ? m->wcap * 2 : 8;
    m->w = cr_realloc(m->w, m->wcap * sizeof *m->w);
  }
  m->w[m->nw++] = (fuzz_mem_write_t){cb, arg, len};
  m->queued += len;
  fuzz_mem_kick(m);
  return 0;
}

static inline int fuzz_mem_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg) {
  size_t len = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    /* touch both ends: a caller handing over freed memory or a wrong length shows up here */
    volatile uint8_t sink = 0;
    if (bufs[i].len)
      sink ^= (uint8_t)(bufs[i].base[0] ^ bufs[i].base[bufs[i].len - 1]);
    (void)sink;
    len += bufs[i].len;
  }
  return fuzz_mem_queue((fuzz_mem_t *)s, len, cb, arg);
}

static inline int fuzz_mem_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  return fuzz_mem_queue((fuzz_mem_t *)s, 0, cb, arg);
}

static inline void fuzz_mem_closed(uv_handle_t *h) {
  fuzz_mem_t *m = h->data;
  fuzz_mem_complete_writes(m, UV_ECANCELED);
  if (m->nw != 0)
    abort(); /* a write accepted after close: write refuses them */
  if (m->close_cb)
    m->close_cb(&m->s);
  if (m->close_probe)
    m->close_probe(&m->s);
  free(m);
}

static inline void fuzz_mem_close(cr_stream_t *s, cr_stream_close_cb cb) {
  fuzz_mem_t *m = (fuzz_mem_t *)s;
  if (m->closing)
    abort(); /* closing twice is a bug (stream.h) */
  m->closing = 1;
  m->reading = 0;
  m->close_cb = cb;
  uv_close((uv_handle_t *)&m->tick, fuzz_mem_closed);
}

static inline size_t fuzz_mem_queue_size(const cr_stream_t *s) { return ((const fuzz_mem_t *)s)->queued; }

static const cr_stream_vtbl_t fuzz_mem_vtbl = {
    "fuzz-mem",        0, fuzz_mem_read_start, fuzz_mem_read_stop, fuzz_mem_write, fuzz_mem_shutdown,
    fuzz_mem_close,    fuzz_mem_queue_size,
};

/* A stream that will read in[0..len) (which must outlive the stream). */
static inline fuzz_mem_t *fuzz_mem_new(uv_loop_t *loop, const uint8_t *in, size_t len, unsigned flags, uint32_t seed) {
  fuzz_mem_t *m = cr_calloc(1, sizeof *m);
  m->s.vt = &fuzz_mem_vtbl;
  m->s.loop = loop;
  memcpy(m->s.peer, "fuzz:1", 7);
  m->in = in;
  m->in_len = len;
  m->flags = flags;
  m->rng = seed | 1;
  uv_idle_init(loop, &m->tick);
  m->tick.data = m;
  return m;
}

/* Lets the rest of the input through (after hold_at). */
static inline void fuzz_mem_release(fuzz_mem_t *m) {
  if (m->hold_at == 0)
    return;
  m->hold_at = 0;
  fuzz_mem_kick(m);
}

static inline void fuzz_walk_busy(uv_handle_t *h, void *arg) {
  if (uv_is_closing(h) || (h->type == UV_IDLE && uv_is_active(h)))
    *(int *)arg = 1;
}

/* Runs the loop until it is quiet: no idle handle wants to run (the memory streams deliver and
 * complete through them; so do the tunnel's flushes) and no handle is closing; timers far off do
 * not count, their callbacks would only fire after the bytes are all in. At most max_turns turns. */
static inline void fuzz_run_until_quiet(uv_loop_t *loop, int max_turns) {
  for (int i = 0; i < max_turns; i++) {
    int busy = 0;
    if (uv_run(loop, UV_RUN_NOWAIT) == 0)
      return;
    uv_walk(loop, fuzz_walk_busy, &busy);
    if (!busy)
      return;
  }
}

/* After everything was closed: the loop must empty out on its own, timers included. */
static inline void fuzz_run_to_end(uv_loop_t *loop) {
  for (int i = 0; i < 100000; i++)
    if (uv_run(loop, UV_RUN_NOWAIT) == 0)
      return;
  __builtin_trap(); /* something still runs after its owner was closed */
}

#endif

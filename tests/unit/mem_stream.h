/* SPDX-License-Identifier: Apache-2.0 */
/* An in-memory cr_stream_t pair for tests that need no sockets: two ends on one uv loop, where bytes
 * written on one become reads on the other. Everything is delivered on a later loop turn (a zero timer
 * per end), as the stream contract asks: read callbacks, write callbacks, EOF.
 *
 * Knobs for the tests: mem_hold_writes keeps write callbacks back (a peer that does not read, so the
 * writer's queue grows), mem_read_chunk caps the bytes per read callback, mem_fail makes the next
 * read report an error with a detail the error_detail operation returns, mem_shutdown (or closing an
 * end) makes the other end read EOF once it has read everything before. */
#ifndef CCRELAY_TESTS_MEM_STREAM_H
#define CCRELAY_TESTS_MEM_STREAM_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/buf.h"
#include "ccrelay/common.h"
#include "ccrelay/stream.h"

#define MEM_MAX_WRITES 64

typedef struct mem_end mem_end_t;

struct mem_end {
  cr_stream_t base; /* first: a cr_stream_t * is a mem_end_t * */
  mem_end_t *peer;
  uv_timer_t pump;
  cr_buf_t in; /* written by the peer, not yet read */
  cr_stream_read_cb read_cb;
  cr_stream_close_cb close_cb;
  struct {
    cr_stream_write_cb cb;
    void *arg;
    size_t len;
  } writes[MEM_MAX_WRITES];
  unsigned nwrites;
  size_t queued;
  size_t read_chunk;
  int reading, hold_writes, eof_in, eof_delivered, fail_err, closing;
  char detail[128];
};

static void mem_schedule(mem_end_t *e);

static void mem_complete_writes(mem_end_t *e, int status) {
  while (e->nwrites > 0) {
    cr_stream_write_cb cb = e->writes[0].cb;
    void *arg = e->writes[0].arg;
    e->queued -= e->writes[0].len;
    memmove(&e->writes[0], &e->writes[1], (e->nwrites - 1) * sizeof e->writes[0]);
    e->nwrites--;
    if (cb)
      cb(&e->base, status, arg);
  }
}

static void mem_on_pump(uv_timer_t *t) {
  mem_end_t *e = t->data;
  char chunk[16384];
  size_t n;
  if (e->closing)
    return;
  if (!e->hold_writes)
    mem_complete_writes(e, 0);
  /* One read per turn at most, so a reader that stops is honoured at once. */
  if (!e->reading || e->closing)
    return;
  if (e->fail_err) {
    int err = e->fail_err;
    e->fail_err = 0;
    e->reading = 0;
    e->eof_delivered = 1;
    e->read_cb(&e->base, err, NULL);
    return;
  }
  if (e->in.len > 0) {
    n = CR_MIN(e->in.len, CR_MIN(e->read_chunk ? e->read_chunk : sizeof chunk, sizeof chunk));
    memcpy(chunk, e->in.base, n);
    cr_buf_consume(&e->in, n);
    e->read_cb(&e->base, (ssize_t)n, chunk);
    if (!e->closing && (e->in.len > 0 || e->eof_in))
      mem_schedule(e);
    return;
  }
  if (e->eof_in && !e->eof_delivered) {
    e->eof_delivered = 1;
    e->reading = 0;
    e->read_cb(&e->base, UV_EOF, NULL);
  }
}

static void mem_schedule(mem_end_t *e) {
  if (!e->closing && !uv_is_active((uv_handle_t *)&e->pump))
    uv_timer_start(&e->pump, mem_on_pump, 0, 0);
}

static int mem_read_start(cr_stream_t *s, cr_stream_read_cb cb) {
  mem_end_t *e = (mem_end_t *)s;
  if (e->closing || e->eof_delivered)
    return UV_EINVAL;
  e->read_cb = cb;
  e->reading = 1;
  mem_schedule(e);
  return 0;
}

static int mem_read_stop(cr_stream_t *s) {
  ((mem_end_t *)s)->reading = 0;
  return 0;
}

static int mem_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg) {
  mem_end_t *e = (mem_end_t *)s;
  size_t total = 0;
  if (e->closing || e->nwrites == MEM_MAX_WRITES)
    return UV_EINVAL;
  if (e->peer == NULL)
    return UV_EPIPE;
  for (unsigned i = 0; i < nbufs; i++) {
    if (cr_buf_append(&e->peer->in, bufs[i].base, bufs[i].len) < 0)
      return UV_ENOBUFS;
    total += bufs[i].len;
  }
  e->writes[e->nwrites].cb = cb;
  e->writes[e->nwrites].arg = arg;
  e->writes[e->nwrites].len = total;
  e->nwrites++;
  e->queued += total;
  mem_schedule(e);
  mem_schedule(e->peer);
  return 0;
}

static int mem_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  mem_end_t *e = (mem_end_t *)s;
  uv_buf_t none = uv_buf_init(NULL, 0);
  if (e->peer != NULL) {
    e->peer->eof_in = 1;
    mem_schedule(e->peer);
  }
  return mem_write(s, &none, 0, cb, arg);
}

static void mem_pump_closed(uv_handle_t *h) {
  mem_end_t *e = h->data;
  if (e->close_cb)
    e->close_cb(&e->base);
  cr_buf_free(&e->in);
  free(e);
}

static void mem_close(cr_stream_t *s, cr_stream_close_cb cb) {
  mem_end_t *e = (mem_end_t *)s;
  e->closing = 1;
  e->reading = 0;
  e->close_cb = cb;
  if (e->peer != NULL) {
    e->peer->eof_in = 1; /* the other end reads what was sent, then EOF */
    mem_schedule(e->peer);
    e->peer->peer = NULL;
    e->peer = NULL;
  }
  mem_complete_writes(e, UV_ECANCELED);
  uv_timer_stop(&e->pump);
  uv_close((uv_handle_t *)&e->pump, mem_pump_closed);
}

static size_t mem_write_queue_size(const cr_stream_t *s) { return ((const mem_end_t *)s)->queued; }

static size_t mem_error_detail(const cr_stream_t *s, char *buf, size_t len) {
  const mem_end_t *e = (const mem_end_t *)s;
  snprintf(buf, len, "%s", e->detail);
  return CR_MIN(strlen(e->detail), len > 0 ? len - 1 : 0);
}

static const cr_stream_vtbl_t mem_vtbl = {
    .name = "mem",
    .copies_writes = 1,
    .read_start = mem_read_start,
    .read_stop = mem_read_stop,
    .write = mem_write,
    .shutdown = mem_shutdown,
    .close = mem_close,
    .write_queue_size = mem_write_queue_size,
    .error_detail = mem_error_detail,
};

static mem_end_t *mem_end_new(uv_loop_t *loop, const char *name) {
  mem_end_t *e = calloc(1, sizeof *e);
  e->base.vt = &mem_vtbl;
  e->base.loop = loop;
  snprintf(e->base.peer, sizeof e->base.peer, "%s", name);
  cr_buf_init(&e->in, 64 * 1024 * 1024);
  uv_timer_init(loop, &e->pump);
  e->pump.data = e;
  return e;
}

/* Two connected ends; close each with cr_stream_close. */
static void mem_pair(uv_loop_t *loop, cr_stream_t **a, cr_stream_t **b) {
  mem_end_t *x = mem_end_new(loop, "mem:a"), *y = mem_end_new(loop, "mem:b");
  x->peer = y;
  y->peer = x;
  *a = &x->base;
  *b = &y->base;
}

static inline void mem_hold_writes(cr_stream_t *s, int hold) {
  mem_end_t *e = (mem_end_t *)s;
  e->hold_writes = hold;
  if (!hold)
    mem_schedule(e);
}

static inline void mem_read_chunk(cr_stream_t *s, size_t n) { ((mem_end_t *)s)->read_chunk = n; }

/* The next read on s reports err; the stream's error detail says detail. */
static inline void mem_fail(cr_stream_t *s, int err, const char *detail) {
  mem_end_t *e = (mem_end_t *)s;
  e->fail_err = err;
  snprintf(e->detail, sizeof e->detail, "%s", detail);
  mem_schedule(e);
}

#endif

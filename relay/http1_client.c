/* SPDX-License-Identifier: Apache-2.0 */
/* One HTTP/1.1 exchange over a cr_stream_t.
 *
 * The exchange moves through explicit phases, each driven by the callback named for it:
 *
 *   P_CONNECT    no stream yet; head and body bytes wait in out       (cr_h1client_attach ->)
 *   P_SEND       the request goes out; no response head yet           (flush, on_write_complete)
 *   P_WAIT_HEAD  every request byte is handed to the stream; response_timeout runs
 *   P_BODY       on_head was delivered; response_timeout bounds the gap between reads (on_read)
 *   P_DONE       the response is complete: on_end
 *   P_FINISHING  the response came before the request was all sent: its rest goes out, then the
 *                stream is released for reuse (the caller is already gone)
 *
 * Sending and receiving overlap (a server may answer early), so the request side has its own
 * progress (send_t) beside the phase, and the caller's hold on the exchange a third (life_t).
 *
 * Ownership: write buffers stay with the exchange until the stream's write callback, even after the
 * caller is gone; the object is recycled only once the caller is gone, the stream released and no
 * write is in flight, and never from inside one of its own frames (depth). */
#include "ccrelay/http1_client.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/deadline.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"

#define HIGH_WATER (64 * 1024)
#define LOW_WATER (16 * 1024)
/* A caller that ignores the high-water signal gets CR_ELIMIT here rather than unbounded memory. */
#define OUT_MAX (16 * 1024 * 1024)
/* A request write's largest piece when more waits: a slow upstream's progress (cr_h1client_sent) then
 * shows at least every 64 KiB it takes, not only once per whole backlog. */
#define WRITE_MAX (64 * 1024)
/* Response bytes received while the caller had paused: at most one read's worth is ever held. */
#define HELD_MAX (1024 * 1024)
/* A recycled exchange keeps no buffer that served one big transfer. */
#define KEEP_OUT_MAX (256 * 1024)
#define KEEP_INFLIGHT_MAX (4 * 1024)
#define FREE_MAX 64

#define DEFAULT_RESPONSE_TIMEOUT_MS 30000
#define DEFAULT_MAX_HEAD (16 * 1024)

typedef enum { P_CONNECT, P_SEND, P_WAIT_HEAD, P_BODY, P_DONE, P_FINISHING } phase_t;

typedef enum {
  SEND_OPEN,  /* the caller may write more body */
  SEND_ENDED, /* the body is complete; bytes may still wait in out */
  SEND_DONE,  /* every byte is handed to the stream */
} send_t;

typedef enum {
  LIFE_ACTIVE, /* the caller holds the exchange */
  LIFE_FAILED, /* on_error is due on a later loop turn */
  LIFE_GONE,   /* on_end or on_error ran (or runs), or the caller canceled: no callback any more */
} life_t;

/* Deferred work (bit flags). */
#define DEFER_FAIL 1u  /* deliver on_error */
#define DEFER_FLUSH 2u /* send what was queued in the same loop turn as one write */
#define DEFER_FEED 4u  /* re-feed response bytes held while paused */

struct cr_h1client_ctx {
  uv_loop_t *loop;
  char *name;
  char *peer;
  char *peer_log;
  uint64_t response_timeout_ms;
  cr_http1_limits_t limits;
  cr_queue_t live;     /* cr_h1client_t.link: every exchange not on the free list */
  cr_queue_t deferred; /* cr_h1client_t.defer_link */
  uv_idle_t defer_idle; /* runs the deferred work on the next loop turn */
  cr_h1client_t *free;
  size_t nfree;
  size_t nobjs; /* exchanges allocated, recycled ones included: each holds an open timer */
  unsigned defer_open : 1;
  unsigned freeing : 1;
};

struct cr_h1client {
  cr_h1client_ctx_t *ctx;
  cr_queue_t link;
  cr_queue_t defer_link;
  cr_h1client_callbacks_t cbs;
  void *data;
  cr_stream_t *s; /* between attach and release */
  cr_h1client_release_cb release_cb;
  void *release_arg;
  cr_http1_parser_t *parser;
  cr_deadline_t deadline; /* response timeout; while finishing, the same bound on the rest */
  cr_buf_t out;      /* head and body bytes not yet handed to the stream */
  cr_buf_t inflight; /* bytes the stream is writing; valid until on_write_complete */
  uint64_t sent;     /* head and body bytes whose write completed */
  cr_buf_t held;     /* response bytes received but not parsed while paused */
  int64_t body_left; /* Content-Length framing: body bytes still expected; -1 otherwise */
  phase_t phase;
  send_t send;
  life_t life;
  unsigned defer_flags;
  int depth;    /* frames of this exchange on the stack: it is not recycled meanwhile */
  int in_api;   /* inside an API call on this exchange: callbacks are deferred */
  int cb_depth; /* inside one of the caller's callbacks: callbacks are deferred */
  int err;
  unsigned ninterim;  /* 1xx heads passed on */
  unsigned in_use : 1;
  unsigned chunked : 1;       /* the request body goes chunked */
  unsigned is_head : 1;
  unsigned keep_alive : 1;    /* the response allows another exchange on the connection */
  unsigned paused : 1;
  unsigned want_writable : 1; /* a write returned 1; on_writable is owed */
  unsigned writing : 1;
  unsigned reading : 1;
  unsigned parser_paused : 1;
  unsigned parser_dirty : 1;  /* the parser is not at a message boundary: a new one for the next use */
  unsigned reused : 1;
  cr_h1client_t *next_free;
  char detail[512];
};

static void on_read(cr_stream_t *s, ssize_t nread, const char *data);
static void on_write_complete(cr_stream_t *s, int status, void *arg);
static void on_defer(uv_idle_t *h);
static void on_deadline(cr_deadline_t *d);
static int flush(cr_h1client_t *c);

static int on_parser_head(void *ud, cr_http_msg_t *m);
static int on_parser_body(void *ud, const char *data, size_t len);
static int on_parser_end(void *ud);
static int on_parser_interim(void *ud, const cr_http_msg_t *m);

static const cr_http1_callbacks_t parser_cbs = {
    .on_head = on_parser_head,
    .on_body = on_parser_body,
    .on_end = on_parser_end,
    .on_interim = on_parser_interim,
};

/* ---- small helpers ---- */

static void buf_swap(cr_buf_t *a, cr_buf_t *b) {
  cr_buf_t t = *a;
  *a = *b;
  *b = t;
}

static void buf_trim(cr_buf_t *b, size_t keep) {
  b->len = 0;
  if (b->cap > keep)
    cr_buf_free(b);
}

static size_t buffered(const cr_h1client_t *c) { return c->out.len + c->inflight.len; }

static void read_start(cr_h1client_t *c) {
  if (c->reading || c->s == NULL)
    return;
  if (cr_stream_read_start(c->s, on_read) == 0)
    c->reading = 1;
}

static void read_stop(cr_h1client_t *c) {
  if (!c->reading)
    return;
  cr_stream_read_stop(c->s);
  c->reading = 0;
}

static const char *phase_of(const cr_h1client_t *c) {
  switch (c->phase) {
  case P_CONNECT:
    return "connecting to";
  case P_SEND:
    return "sending request to";
  case P_WAIT_HEAD:
    return "waiting for response head from";
  default:
    break;
  }
  return "reading response body from";
}

/* ---- lifetime ---- */

static void ctx_maybe_free(cr_h1client_ctx_t *ctx) {
  if (!ctx->freeing || ctx->nobjs > 0 || ctx->defer_open)
    return;
  free(ctx->name);
  free(ctx->peer);
  free(ctx->peer_log);
  free(ctx);
}

static void on_client_timer_closed(uv_handle_t *h) {
  cr_h1client_t *c = h->data;
  cr_h1client_ctx_t *ctx = c->ctx;
  cr_http1_parser_free(c->parser);
  cr_buf_free(&c->out);
  cr_buf_free(&c->inflight);
  cr_buf_free(&c->held);
  free(c);
  ctx->nobjs--;
  ctx_maybe_free(ctx);
}

static void destroy(cr_h1client_t *c) { cr_deadline_close(&c->deadline, on_client_timer_closed); }

static cr_h1client_t *client_alloc(cr_h1client_ctx_t *ctx) {
  cr_h1client_t *c = ctx->free;
  if (c != NULL) {
    ctx->free = c->next_free;
    ctx->nfree--;
  } else {
    c = cr_calloc(1, sizeof *c);
    c->ctx = ctx;
    cr_deadline_init(ctx->loop, &c->deadline);
    c->deadline.timer.data = c;
    cr_buf_init(&c->out, OUT_MAX);
    cr_buf_init(&c->inflight, OUT_MAX);
    cr_buf_init(&c->held, HELD_MAX);
    ctx->nobjs++;
  }
  if (c->parser == NULL)
    c->parser = cr_http1_parser_new(CR_HTTP1_RESPONSE, &ctx->limits, &parser_cbs, c);
  memset(&c->cbs, 0, sizeof c->cbs);
  c->data = NULL;
  c->s = NULL;
  c->release_cb = NULL;
  c->release_arg = NULL;
  c->body_left = -1;
  c->phase = P_CONNECT;
  c->send = SEND_OPEN;
  c->life = LIFE_ACTIVE;
  c->defer_flags = 0;
  c->depth = c->in_api = c->cb_depth = 0;
  c->err = 0;
  c->ninterim = 0;
  c->in_use = 1;
  c->chunked = c->is_head = c->keep_alive = c->paused = c->want_writable = 0;
  c->writing = c->reading = c->parser_paused = c->parser_dirty = c->reused = 0;
  c->next_free = NULL;
  c->detail[0] = '\0';
  cr_queue_init(&c->defer_link);
  cr_queue_insert_tail(&ctx->live, &c->link);
  return c;
}

static void recycle(cr_h1client_t *c) {
  cr_h1client_ctx_t *ctx = c->ctx;
  c->in_use = 0;
  cr_queue_remove(&c->link);
  cr_queue_remove(&c->defer_link);
  if (ctx->freeing || ctx->nfree >= FREE_MAX) {
    destroy(c);
    return;
  }
  buf_trim(&c->out, KEEP_OUT_MAX);
  buf_trim(&c->inflight, KEEP_INFLIGHT_MAX);
  cr_buf_free(&c->held);
  if (c->parser_dirty) {
    cr_http1_parser_free(c->parser);
    c->parser = NULL;
  }
  c->next_free = ctx->free;
  ctx->free = c;
  ctx->nfree++;
}

static void enter(cr_h1client_t *c) { c->depth++; }

/* Leaves one frame; the outermost recycles an exchange that is over in every respect. */
static void leave(cr_h1client_t *c) {
  if (--c->depth > 0 || !c->in_use)
    return;
  if (c->life == LIFE_GONE && c->s == NULL && !c->writing)
    recycle(c);
}

static void defer(cr_h1client_t *c, unsigned what) {
  cr_h1client_ctx_t *ctx = c->ctx;
  c->defer_flags |= what;
  if (cr_queue_empty(&c->defer_link))
    cr_queue_insert_tail(&ctx->deferred, &c->defer_link);
  /* An idle handle, not a zero-delay timer: the same next turn (the loop does not block while it is
   * active) without a timer-heap insert and removal per exchange. */
  if (!ctx->freeing && !uv_is_active((uv_handle_t *)&ctx->defer_idle))
    uv_idle_start(&ctx->defer_idle, on_defer);
}

/* Hands the stream back: the exchange touches it no more. */
static void release(cr_h1client_t *c, int reusable) {
  cr_stream_t *s = c->s;
  if (s == NULL)
    return;
  read_stop(c);
  c->s = NULL;
  cr_deadline_clear(&c->deadline);
  c->parser_dirty = !reusable;
  c->release_cb(s, reusable, c->release_arg);
}

static void deliver_error(cr_h1client_t *c) {
  c->life = LIFE_GONE;
  c->cb_depth++;
  if (c->cbs.on_error)
    c->cbs.on_error(c, c->err, c->detail);
  c->cb_depth--;
}

/* The one error exit. Releases the stream at once (to be closed); on_error fires now from a plain
 * loop callback, otherwise on the next loop turn. */
static void vfail(cr_h1client_t *c, int err, const char *fmt, va_list ap) CR_PRINTF(3, 0);
static void vfail(cr_h1client_t *c, int err, const char *fmt, va_list ap) {
  if (c->life != LIFE_ACTIVE)
    return;
  vsnprintf(c->detail, sizeof c->detail, fmt, ap);
  c->err = err;
  c->life = LIFE_FAILED;
  release(c, 0);
  cr_log_debug("upstream request failed", "route=%s err=%s", c->ctx->name, cr_err_name(err));
  if (c->cb_depth > 0 || c->in_api > 0) {
    defer(c, DEFER_FAIL);
    return;
  }
  cr_queue_remove(&c->defer_link);
  deliver_error(c);
}

static void fail(cr_h1client_t *c, int err, const char *fmt, ...) CR_PRINTF(3, 4);
static void fail(cr_h1client_t *c, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(c, err, fmt, ap);
  va_end(ap);
}

/* ---- sending ---- */

static void response_timer_update(cr_h1client_t *c) {
  if (c->s == NULL || c->life != LIFE_ACTIVE)
    return;
  if (c->paused || (c->phase != P_WAIT_HEAD && c->phase != P_BODY)) {
    cr_deadline_clear(&c->deadline);
    return;
  }
  cr_deadline_set(&c->deadline, on_deadline, c->ctx->response_timeout_ms);
}

/* Hands everything queued (at most WRITE_MAX when more waits) to the stream as one write, unless a
 * write is already in flight (its completion sends the rest): this batches head and body, and body
 * pieces written in one turn. Returns -1 when the exchange failed, else 0. */
static int flush(cr_h1client_t *c) {
  uv_buf_t b;
  char why[256];
  int rc;
  if (c->s == NULL || c->life != LIFE_ACTIVE)
    return 0;
  if (!c->writing && c->out.len > 0) {
    if (c->out.len <= WRITE_MAX) {
      buf_swap(&c->inflight, &c->out);
    } else { /* only when the upstream is behind: a piece, copied; the rest moves to the front */
      cr_buf_reset(&c->inflight);
      if (cr_buf_append(&c->inflight, c->out.base, WRITE_MAX) < 0) {
        fail(c, CR_ELIMIT, "%s %s failed: %s", "sending request to", c->ctx->peer, cr_strerror(CR_ELIMIT));
        return -1;
      }
      cr_buf_consume(&c->out, WRITE_MAX);
    }
    b = uv_buf_init(c->inflight.base, (unsigned)c->inflight.len);
    rc = cr_stream_write(c->s, &b, 1, on_write_complete, c);
    if (rc < 0) {
      c->inflight.len = 0;
      fail(c, rc, "%s %s failed: %s", "sending request to", c->ctx->peer,
           cr_stream_strerror(c->s, rc, why, sizeof why));
      return -1;
    }
    c->writing = 1;
  }
  if (c->out.len == 0 && c->send == SEND_ENDED) {
    c->send = SEND_DONE;
    if (c->phase == P_SEND)
      c->phase = P_WAIT_HEAD;
    response_timer_update(c);
  }
  return 0;
}

/* The rest of a request whose response already ended goes out once the write in flight completes;
 * then the stream is reusable. */
static void finish_flush(cr_h1client_t *c) {
  uv_buf_t b;
  if (c->writing)
    return;
  if (c->out.len == 0) {
    release(c, 1);
    return;
  }
  buf_swap(&c->inflight, &c->out);
  b = uv_buf_init(c->inflight.base, (unsigned)c->inflight.len);
  if (cr_stream_write(c->s, &b, 1, on_write_complete, c) < 0) {
    c->inflight.len = 0;
    release(c, 0);
    return;
  }
  c->writing = 1;
}

/* A server may answer before it has read the whole request body (nginx's `return` does) and, when it
 * keeps the connection, reads and discards the rest. Closing instead would cost the next request a
 * new TCP and TLS handshake, so the rest is sent (bounded by the response timeout) and the stream
 * released for reuse. Only once every body byte is queued. */
static void start_finishing(cr_h1client_t *c) {
  if (c->out.len > 0)
    cr_log_debug("upstream answered before the request was sent; finishing it before reuse", "route=%s peer=%s",
                 c->ctx->name, c->ctx->peer_log);
  c->phase = P_FINISHING;
  cr_deadline_set(&c->deadline, on_deadline, c->ctx->response_timeout_ms);
  finish_flush(c);
}

static void on_writable_due(cr_h1client_t *c) {
  c->want_writable = 0;
  c->cb_depth++;
  if (c->cbs.on_writable)
    c->cbs.on_writable(c);
  c->cb_depth--;
}

static void on_write_complete(cr_stream_t *s, int status, void *arg) {
  cr_h1client_t *c = arg;
  char why[256];
  (void)s;
  enter(c);
  c->writing = 0;
  if (status == 0 && c->phase != P_FINISHING)
    c->sent += c->inflight.len;
  c->inflight.len = 0;
  if (c->s == NULL)
    goto out; /* released: a write the close canceled, or one that completed meanwhile */
  if (status < 0) {
    if (c->phase == P_FINISHING)
      release(c, 0);
    else
      fail(c, status, "%s %s failed: %s", "sending request to", c->ctx->peer,
           cr_stream_strerror(c->s, status, why, sizeof why));
    goto out;
  }
  if (c->phase == P_FINISHING) {
    finish_flush(c);
    goto out;
  }
  if (c->life != LIFE_ACTIVE || flush(c) < 0)
    goto out;
  if (c->want_writable && buffered(c) < LOW_WATER)
    on_writable_due(c);
out:
  leave(c);
}

/* ---- the response ---- */

static int on_parser_head(void *ud, cr_http_msg_t *m) {
  cr_h1client_t *c = ud;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  c->phase = P_BODY;
  c->keep_alive = m->keep_alive;
  c->cb_depth++;
  if (c->cbs.on_head)
    c->cbs.on_head(c, m);
  c->cb_depth--;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  if (c->paused) {
    c->parser_paused = 1;
    return CR_HTTP1_PAUSE;
  }
  return 0;
}

/* A 1xx head: passed on as it comes, the phase unchanged (the request may still be going out: a 100
 * Continue is what lets its body follow). */
static int on_parser_interim(void *ud, const cr_http_msg_t *m) {
  cr_h1client_t *c = ud;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  if (c->cbs.on_interim == NULL)
    return 0;
  if (c->ninterim >= CR_H1CLIENT_INTERIM_MAX) {
    cr_log_debug("upstream interim response dropped", "route=%s peer=%s status=%d", c->ctx->name, c->ctx->peer_log,
                 m->status);
    return 0;
  }
  c->ninterim++;
  c->cb_depth++;
  c->cbs.on_interim(c, m);
  c->cb_depth--;
  return c->life != LIFE_ACTIVE ? CR_ECANCELED : 0;
}

static int on_parser_body(void *ud, const char *data, size_t len) {
  cr_h1client_t *c = ud;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  c->cb_depth++;
  if (c->cbs.on_body)
    c->cbs.on_body(c, data, len);
  c->cb_depth--;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  if (c->paused) {
    c->parser_paused = 1;
    return CR_HTTP1_PAUSE;
  }
  return 0;
}

static int on_parser_end(void *ud) {
  cr_h1client_t *c = ud;
  if (c->life != LIFE_ACTIVE)
    return CR_ECANCELED;
  c->phase = P_DONE;
  /* Stop here: on_end is delivered after the parser returns, once the stream is settled. */
  c->parser_paused = 1;
  return CR_HTTP1_PAUSE;
}

static void parser_ready(cr_h1client_t *c) {
  if (c->parser_paused) {
    cr_http1_parser_resume(c->parser);
    c->parser_paused = 0;
  }
}

/* The response is complete: settle the stream first (so on_end may already reuse it), then tell the
 * caller. clean: nothing followed the response on the connection. */
static void finish(cr_h1client_t *c, int clean) {
  if (c->s != NULL) {
    if (clean && c->keep_alive && c->held.len == 0 && c->send != SEND_OPEN) {
      parser_ready(c);
      if (c->send == SEND_DONE && !c->writing)
        release(c, 1);
      else
        start_finishing(c);
    } else {
      release(c, 0);
    }
  }
  c->life = LIFE_GONE;
  c->cb_depth++;
  if (c->cbs.on_end)
    c->cbs.on_end(c);
  c->cb_depth--;
}

static void parse_failed(cr_h1client_t *c, int rc) {
  const char *why = cr_http1_parser_error(c->parser);
  /* Too large is either limit; the parser's text says which. */
  if (rc == CR_EHTTP_TOO_LARGE)
    fail(c, CR_EHTTP_PARSE, "response head from %s is too large: %s", c->ctx->peer,
         why && *why ? why : "over the head size limit");
  else
    fail(c, CR_EHTTP_PARSE, "%s %s failed: malformed response: %s", phase_of(c), c->ctx->peer,
         why && *why ? why : cr_strerror(rc));
}

/* Runs the parser over response bytes. from_held: data lies in held (a re-feed after resume).
 * Returns -1 when the exchange finished, failed or was canceled, else 0. */
static int feed(cr_h1client_t *c, const char *data, size_t len, int from_held) {
  ssize_t n;
  size_t rest;
  int rc;
  parser_ready(c);
  n = cr_http1_parse(c->parser, data, len);
  if (c->life != LIFE_ACTIVE)
    return -1; /* canceled or failed from inside a callback */
  if (n < 0) {
    parse_failed(c, (int)n);
    return -1;
  }
  rest = len - (size_t)n;
  if (from_held)
    cr_buf_consume(&c->held, (size_t)n);
  if (c->phase == P_DONE) {
    /* Bytes after a complete response were never asked for: the connection cannot be trusted. */
    finish(c, rest == 0);
    return -1;
  }
  if (!from_held && rest > 0) {
    rc = cr_buf_append(&c->held, data + n, rest);
    if (rc < 0) {
      fail(c, rc, "%s %s failed: %zu bytes received while paused exceed the hold buffer", phase_of(c),
           c->ctx->peer, rest);
      return -1;
    }
  }
  if (rest > 0 || c->paused)
    read_stop(c);
  if (c->phase == P_BODY)
    response_timer_update(c);
  return 0;
}

static void on_read_error(cr_h1client_t *c, int err) {
  char why[256];
  if (err == UV_EOF && (c->phase == P_BODY || cr_http1_parser_in_message(c->parser))) {
    parser_ready(c);
    cr_http1_parse_eof(c->parser);
    if (c->life != LIFE_ACTIVE)
      return;
    if (c->phase == P_DONE) {
      finish(c, 0); /* a body delimited by close */
      return;
    }
    fail(c, UV_EOF, "%s %s failed: connection closed before the response was complete", phase_of(c), c->ctx->peer);
    return;
  }
  if (err == UV_EOF) {
    fail(c, UV_EOF, "%s %s failed: connection closed%s", phase_of(c), c->ctx->peer,
         c->reused ? " (pooled connection)" : "");
    return;
  }
  fail(c, err, "%s %s failed: %s", phase_of(c), c->ctx->peer, cr_stream_strerror(c->s, err, why, sizeof why));
}

static void on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  cr_h1client_t *c = s->data;
  enter(c);
  if (c->phase == P_FINISHING || c->life != LIFE_ACTIVE) {
    /* EOF, an error or unsolicited bytes while only the request's rest goes out: done either way. */
    cr_log_debug("upstream idle connection dropped", "route=%s peer=%s reason=%s", c->ctx->name, c->ctx->peer_log,
                 nread < 0 ? cr_err_name((int)nread) : "unsolicited-bytes");
    if (nread < 0)
      c->reading = 0;
    release(c, 0);
  } else if (nread < 0) {
    c->reading = 0;
    on_read_error(c, (int)nread);
  } else {
    feed(c, data, (size_t)nread, 0);
  }
  leave(c);
}

static void on_deadline(cr_deadline_t *d) {
  cr_h1client_t *c = d->timer.data;
  uint64_t ms = c->ctx->response_timeout_ms;
  enter(c);
  if (c->phase == P_FINISHING)
    release(c, 0);
  else if (c->phase == P_BODY)
    fail(c, UV_ETIMEDOUT, "reading response body from %s failed: no data within %" PRIu64 " ms", c->ctx->peer, ms);
  else
    fail(c, UV_ETIMEDOUT, "no response head within %" PRIu64 " ms from %s", ms, c->ctx->peer);
  leave(c);
}

/* ---- deferred work ---- */

static void run_deferred(cr_h1client_t *c, unsigned what) {
  if (what & DEFER_FAIL) {
    if (c->life == LIFE_FAILED)
      deliver_error(c);
    return;
  }
  if (c->s == NULL || c->life != LIFE_ACTIVE)
    return;
  if ((what & DEFER_FLUSH) && flush(c) < 0)
    return;
  if ((what & DEFER_FEED) && !c->paused) {
    /* Even with nothing held the parser may owe the message's end (paused on the last body byte);
     * an empty feed delivers it, since no more bytes will come on a keep-alive connection. */
    if ((c->held.len > 0 || c->parser_paused) && feed(c, c->held.base ? c->held.base : "", c->held.len, 1) < 0)
      return;
    if (!c->paused && c->held.len == 0)
      read_start(c);
  }
}

static void on_defer(uv_idle_t *h) {
  cr_h1client_ctx_t *ctx = h->data;
  cr_queue_t batch;
  cr_h1client_t *c;
  unsigned what;
  /* Work queued while this batch runs waits for the next turn (defer starts the handle again):
   * bounded work per wakeup. */
  uv_idle_stop(h);
  if (cr_queue_empty(&ctx->deferred))
    return;
  batch.next = ctx->deferred.next;
  batch.prev = ctx->deferred.prev;
  batch.next->prev = &batch;
  batch.prev->next = &batch;
  cr_queue_init(&ctx->deferred);
  while (!cr_queue_empty(&batch)) {
    c = cr_queue_data(cr_queue_head(&batch), cr_h1client_t, defer_link);
    cr_queue_remove(&c->defer_link);
    what = c->defer_flags;
    c->defer_flags = 0;
    enter(c);
    run_deferred(c, what);
    leave(c);
  }
}

/* ---- public API ---- */

cr_h1client_ctx_t *cr_h1client_ctx_new(uv_loop_t *loop, const cr_h1client_ctx_opts_t *opts) {
  cr_h1client_ctx_t *ctx = cr_calloc(1, sizeof *ctx);
  ctx->loop = loop;
  ctx->name = cr_strdup(opts->name ? opts->name : "upstream");
  ctx->peer = cr_strdup(opts->peer ? opts->peer : "upstream");
  ctx->peer_log = cr_strdup(opts->peer_log ? opts->peer_log : ctx->peer);
  ctx->response_timeout_ms = opts->response_timeout_ms ? opts->response_timeout_ms : DEFAULT_RESPONSE_TIMEOUT_MS;
  ctx->limits.max_head_size = opts->max_header_size ? opts->max_header_size : DEFAULT_MAX_HEAD;
  ctx->limits.max_headers = opts->max_header_fields;
  cr_queue_init(&ctx->live);
  cr_queue_init(&ctx->deferred);
  uv_idle_init(loop, &ctx->defer_idle);
  ctx->defer_idle.data = ctx;
  ctx->defer_open = 1;
  return ctx;
}

void cr_h1client_ctx_release_caches(cr_h1client_ctx_t *ctx) {
  cr_h1client_t *c;
  while ((c = ctx->free) != NULL) {
    ctx->free = c->next_free;
    ctx->nfree--;
    destroy(c);
  }
}

static void on_defer_closed(uv_handle_t *h) {
  cr_h1client_ctx_t *ctx = h->data;
  ctx->defer_open = 0;
  ctx_maybe_free(ctx);
}

void cr_h1client_ctx_free(cr_h1client_ctx_t *ctx) {
  cr_queue_t *q, *n;
  if (ctx == NULL || ctx->freeing)
    return;
  ctx->freeing = 1;
  cr_queue_foreach_safe(q, n, &ctx->live) {
    cr_h1client_t *c = cr_queue_data(q, cr_h1client_t, link);
    enter(c);
    if (c->life != LIFE_GONE) {
      c->life = LIFE_GONE; /* a caller that did not cancel hears nothing more either */
      cr_queue_remove(&c->defer_link);
    }
    release(c, 0);
    leave(c);
  }
  cr_h1client_ctx_release_caches(ctx);
  uv_close((uv_handle_t *)&ctx->defer_idle, on_defer_closed);
}

static int method_wants_length(const char *m) {
  return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

/* Rewrites the caller's head in place (version, framing) and serialises it into out. In place because
 * the caller's head is already its own rewritable copy: a second copy here was 1 % of the agent. */
static int frame_head(cr_h1client_t *c, cr_http_msg_t *m, int has_body) {
  cr_http_body_t framing;
  char num[32];
  size_t len;
  int rc = 0;
  cr_http_msg_remove_ids(m, CR_HDR_BIT(CR_HDR_CONTENT_LENGTH) | CR_HDR_BIT(CR_HDR_TRANSFER_ENCODING));
  m->version_minor = 1;
  c->is_head = m->method != NULL && strcmp(m->method, "HEAD") == 0;
  /* The head comes off a stream-delimited carrier: without a length, has_body says whether a body
   * follows at all. */
  framing = has_body || m->content_length >= 0 ? cr_http_body_framing(m, NULL, 1) : CR_HTTP_BODY_NONE;
  switch (framing) {
  case CR_HTTP_BODY_LENGTH:
    c->body_left = m->content_length;
    len = cr_u64_dec(num, (uint64_t)m->content_length);
    rc = cr_http_msg_add_header_id(m, CR_HDR_CONTENT_LENGTH, "Content-Length", 14, num, len);
    m->chunked = 0;
    break;
  case CR_HTTP_BODY_CHUNKED:
  case CR_HTTP_BODY_UNTIL_END: /* a request cannot end with its connection: an unknown length goes chunked */
    c->chunked = 1;
    rc = cr_http_msg_add_header_id(m, CR_HDR_TRANSFER_ENCODING, "Transfer-Encoding", 17, "chunked", 7);
    m->chunked = 1;
    break;
  case CR_HTTP_BODY_NONE:
    c->send = SEND_ENDED;
    if (m->content_length == 0) {
      c->body_left = 0;
      rc = cr_http_msg_add_header_id(m, CR_HDR_CONTENT_LENGTH, "Content-Length", 14, "0", 1);
      m->chunked = 0;
    } else if (m->method != NULL && method_wants_length(m->method)) {
      rc = cr_http_msg_add_header_id(m, CR_HDR_CONTENT_LENGTH, "Content-Length", 14, "0", 1);
    }
    break;
  }
  if (rc < 0)
    return rc;
  return cr_http1_write_request_head(&c->out, m);
}

int cr_h1client_new(cr_h1client_ctx_t *ctx, cr_http_msg_t *head, int has_body, const cr_h1client_callbacks_t *cbs,
                    void *data, cr_h1client_t **out) {
  cr_h1client_t *c = client_alloc(ctx);
  int rc;
  c->cbs = *cbs;
  c->data = data;
  enter(c);
  c->in_api++;
  rc = frame_head(c, head, has_body);
  if (rc < 0)
    fail(c, rc, "request to %s not sent: its head cannot be serialised (%s)", ctx->peer, cr_strerror(rc));
  c->in_api--;
  leave(c);
  *out = c;
  return rc;
}

void cr_h1client_attach(cr_h1client_t *c, cr_stream_t *s, int reused, cr_h1client_release_cb release_cb,
                        void *arg) {
  enter(c);
  c->in_api++;
  c->s = s;
  s->data = c;
  c->reused = reused != 0;
  c->release_cb = release_cb;
  c->release_arg = arg;
  c->parser_dirty = 1; /* until a response ends cleanly on it */
  if (c->life != LIFE_ACTIVE) {
    release(c, 0);
    goto out;
  }
  if (c->is_head)
    cr_http1_parser_expect_no_body(c->parser);
  if (c->phase == P_CONNECT)
    c->phase = P_SEND;
  if (!c->paused)
    read_start(c);
  if (c->send == SEND_OPEN)
    defer(c, DEFER_FLUSH); /* body bytes written in this turn go out with the head */
  else
    flush(c); /* the head (and body) is everything */
out:
  c->in_api--;
  leave(c);
}

void cr_h1client_fail(cr_h1client_t *c, int err, const char *fmt, ...) {
  va_list ap;
  enter(c);
  c->in_api++;
  va_start(ap, fmt);
  vfail(c, err, fmt, ap);
  va_end(ap);
  c->in_api--;
  leave(c);
}

int cr_h1client_write(cr_h1client_t *c, const char *data, size_t len) {
  char hdr[24];
  size_t hlen;
  int rc;
  if (c->life != LIFE_ACTIVE)
    return 0; /* on_error is on its way: the bytes have nowhere to go */
  if (c->send != SEND_OPEN)
    return c->body_left == 0 && len == 0 ? 0 : UV_EINVAL;
  if (len > 0) {
    if (c->body_left >= 0 && (uint64_t)len > (uint64_t)c->body_left)
      return CR_EPROTO;
    if (c->chunked) {
      hlen = cr_http1_chunk_header(hdr, len);
      rc = cr_buf_append(&c->out, hdr, hlen);
      if (rc == 0)
        rc = cr_buf_append(&c->out, data, len);
      if (rc == 0)
        rc = cr_buf_append(&c->out, CR_HTTP1_CHUNK_TRAILER, 2);
    } else {
      rc = cr_buf_append(&c->out, data, len);
    }
    if (rc < 0)
      return rc;
    if (c->body_left >= 0) {
      c->body_left -= (int64_t)len;
      if (c->body_left == 0)
        c->send = SEND_ENDED;
    }
    if (c->s != NULL) {
      enter(c);
      c->in_api++;
      flush(c);
      c->in_api--;
      leave(c);
    }
  }
  if (buffered(c) > HIGH_WATER) {
    c->want_writable = 1;
    return 1;
  }
  return 0;
}

int cr_h1client_end(cr_h1client_t *c) {
  int rc;
  if (c->life != LIFE_ACTIVE || c->send != SEND_OPEN)
    return 0;
  if (c->body_left > 0)
    return CR_EPROTO; /* fewer bytes than the Content-Length promised */
  if (c->chunked) {
    rc = cr_buf_append(&c->out, CR_HTTP1_LAST_CHUNK, sizeof CR_HTTP1_LAST_CHUNK - 1);
    if (rc < 0)
      return rc;
  }
  c->send = SEND_ENDED;
  if (c->s != NULL) {
    enter(c);
    c->in_api++;
    flush(c);
    c->in_api--;
    leave(c);
  }
  return 0;
}

void cr_h1client_pause(cr_h1client_t *c, int paused) {
  if (c->life != LIFE_ACTIVE || (paused != 0) == c->paused)
    return;
  c->paused = paused != 0;
  if (c->s == NULL)
    return;
  if (c->paused) {
    read_stop(c);
    cr_deadline_clear(&c->deadline);
    return;
  }
  if (c->held.len > 0 || c->parser_paused)
    defer(c, DEFER_FEED); /* held bytes are re-fed on the next turn, never from inside this call */
  else
    read_start(c);
  response_timer_update(c);
}

void cr_h1client_cancel(cr_h1client_t *c) {
  if (c->life == LIFE_GONE)
    return;
  enter(c);
  c->life = LIFE_GONE;
  cr_queue_remove(&c->defer_link);
  release(c, 0);
  leave(c);
}

void *cr_h1client_data(const cr_h1client_t *c) { return c->data; }

uint64_t cr_h1client_sent(const cr_h1client_t *c) { return c->sent; }

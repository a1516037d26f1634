/* The agent's HTTPS client toward one upstream: a keep-alive pool of TLS connections and one HTTP/1.1
 * exchange at a time on each.
 *
 * A request moves through explicit states, each driven by a callback named after it:
 *
 *   REQ_CONNECT   waiting for a connection: a pooled one is taken at once (LIFO), otherwise one is
 *                 dialled (on_connect -> on_handshake) under connect_timeout
 *   REQ_SEND      head and body go out; the response may already be arriving (early answers)
 *   REQ_WAIT_HEAD the request is fully handed to the stream; response_timeout runs
 *   REQ_BODY      on_head was delivered; response_timeout bounds the gap between reads
 *   (end)         on_end, or the one error exit req_fail -> on_error
 *
 * Sending and receiving overlap, so REQ_SEND is a flag (send_done) beside the receive state.
 *
 * Ownership: the write buffers belong to the connection (a stream may read them until its write
 * callback fires, even after the request is gone); a request owns only bytes not yet handed to the
 * stream. A connection dies in its close callbacks (stream and timer), never inside its own
 * callbacks. A request is freed when its final callback returns, at cancel, or, when a cancel
 * happens inside one of its own callbacks, once that callback has returned.
 *
 * User callbacks never run from inside an API call: failures and re-feeds that arise there go
 * through a per-upstream deferral queue served by a zero timer on the next loop turn. */
#include "ccrelay/upstream.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/common.h"
#include "ccrelay/deadline.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"

#define HIGH_WATER (64 * 1024)
#define LOW_WATER (16 * 1024)
/* A request write's largest piece when more waits: a slow upstream's progress (cr_upstream_req_sent)
 * then shows at least every 64 KiB it takes, not only once per whole backlog. */
#define WRITE_MAX (64 * 1024)
/* A caller that ignores the high-water signal gets CR_ELIMIT here rather than unbounded memory. */
#define OUT_MAX (16 * 1024 * 1024)
/* Response bytes received while the caller had paused: at most one read's worth is ever held. */
#define HELD_MAX (1024 * 1024)
/* Buffers larger than this are released rather than kept with a recycled object. */
#define KEEP_BUF_MAX (256 * 1024)
#define FREE_REQS_MAX 64
/* An idle pooled connection keeps a request-sized write buffer, nothing bigger. */
#define POOLED_BUF_MAX (4 * 1024)

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_RESPONSE_TIMEOUT_MS 30000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_PURGE_INTERVAL_MS 1000

typedef enum {
  CONN_CONNECTING, /* DNS and TCP connect */
  CONN_HANDSHAKE,  /* TLS handshake */
  CONN_ACTIVE,     /* carrying a request */
  CONN_IDLE,       /* in the pool */
  CONN_CLOSED,     /* closing; freed when stream and timer are closed */
} conn_state_t;

typedef enum {
  REQ_CONNECT,
  REQ_SEND,
  REQ_WAIT_HEAD,
  REQ_BODY,
} req_state_t;

/* Deferred work for a request (bit flags). */
#define DEFER_FAIL 1u  /* deliver on_error */
#define DEFER_FLUSH 2u /* send what was queued in the same loop turn as one write */
#define DEFER_FEED 4u  /* re-feed response bytes held while paused */

typedef struct conn conn_t;

struct cr_upstream {
  uv_loop_t *loop;
  cr_tls_ctx_t *tls;
  unsigned tls_gen;      /* bumped by cr_upstream_set_tls; connections of older ones are not reused */
  char peer_subject[256]; /* the upstream's certificate on the latest handshake */
  time_t peer_not_after;  /* 0 before the first handshake */
  char *name;
  char *host;
  char *server_name;
  unsigned port;
  char hostport[280];    /* "127.0.0.1:9443", "[::1]:9443" */
  char who[560];         /* "127.0.0.1:9443 (server name localhost)" */
  char host_header[280]; /* server_name[:port] */
  uint64_t connect_timeout_ms;
  uint64_t response_timeout_ms;
  uint64_t idle_timeout_ms;
  unsigned max_idle;
  cr_http1_limits_t limits;
  cr_queue_t idle;     /* conn_t.link, most recently used first */
  cr_queue_t busy;     /* conn_t.link */
  cr_queue_t reqs;     /* cr_upstream_req_t.link: every live request */
  cr_queue_t deferred; /* cr_upstream_req_t.defer_link */
  size_t nidle;
  size_t nbusy;
  size_t nconns; /* including connections still closing */
  uv_timer_t defer_timer;
  uv_timer_t purge_timer; /* runs while connections are pooled */
  uint64_t purge_interval_ms;
  size_t peak_busy; /* most connections busy at once since the last purge tick */
  cr_upstream_req_t *free_reqs;
  size_t nfree_reqs;
  unsigned freeing : 1;
  unsigned timers_open; /* defer and purge timers not yet closed */
};

struct conn {
  cr_upstream_t *u;
  cr_stream_t *s; /* TCP while connecting, TLS afterwards; NULL if the dial failed synchronously */
  cr_queue_t link;
  cr_upstream_req_t *req;
  cr_http1_parser_t *parser;
  cr_deadline_t deadline; /* connect, response or idle timeout, by state */
  cr_buf_t inflight; /* bytes the stream is writing; valid until on_write_complete */
  cr_buf_t held;     /* response bytes received but not parsed while the request is paused */
  cr_buf_t tail;     /* request bytes still to send after the response ended early (finishing) */
  uint64_t idle_since;
  unsigned tls_gen; /* the upstream's tls_gen when this connection was dialled */
  conn_state_t state;
  unsigned pending_closes;
  unsigned writing : 1;
  unsigned reading : 1;
  unsigned parser_paused : 1;
  unsigned reused : 1;
  unsigned finishing : 1; /* no request: sending the tail of one already answered, then pooled */
};

struct cr_upstream_req {
  cr_upstream_t *u;
  conn_t *conn;
  cr_queue_t link;
  cr_queue_t defer_link;
  cr_upstream_req_callbacks_t cbs;
  void *data;
  cr_buf_t out;      /* head and body bytes not yet handed to the stream */
  uint64_t sent;     /* head and body bytes whose write completed */
  int64_t body_left; /* Content-Length framing: body bytes still expected; -1 otherwise */
  req_state_t state;
  unsigned defer_flags;
  int cb_depth; /* inside one of this request's callbacks */
  int in_api;   /* inside an API call on this request */
  int err;
  unsigned chunked : 1;
  unsigned is_head : 1;
  unsigned end_queued : 1;    /* the caller ended the body (or there was none) */
  unsigned send_done : 1;     /* every byte handed to the stream */
  unsigned resp_done : 1;     /* the final response is complete */
  unsigned resp_keep_alive : 1;
  unsigned paused : 1;
  unsigned want_writable : 1; /* a write returned 1; on_writable is owed */
  unsigned canceled : 1;
  unsigned failed : 1;
  unsigned final : 1; /* on_end or on_error is running */
  cr_upstream_req_t *next_free;
  char detail[512];
};

static void conn_close(conn_t *c);
static int flush(conn_t *c);
static void on_defer_timer(uv_timer_t *t);
static void on_read(cr_stream_t *s, ssize_t nread, const char *data);

/* ---- small helpers ---- */

static void buf_trim(cr_buf_t *b) {
  b->len = 0;
  if (b->cap > KEEP_BUF_MAX)
    cr_buf_free(b);
}

static void buf_swap(cr_buf_t *a, cr_buf_t *b) {
  cr_buf_t t = *a;
  *a = *b;
  *b = t;
}

static size_t req_buffered(const cr_upstream_req_t *r) {
  return r->out.len + (r->conn ? r->conn->inflight.len : 0);
}

static void conn_read_start(conn_t *c) {
  int rc;
  if (c->reading || c->state == CONN_CLOSED)
    return;
  rc = cr_stream_read_start(c->s, on_read);
  if (rc == 0)
    c->reading = 1;
}

static void conn_read_stop(conn_t *c) {
  if (!c->reading)
    return;
  cr_stream_read_stop(c->s);
  c->reading = 0;
}

static const char *stream_reason(conn_t *c, int err) {
  const char *why = NULL;
  if (c != NULL && c->s != NULL && cr_stream_is_tls(c->s))
    why = cr_tls_stream_error(c->s);
  return why != NULL && *why ? why : cr_strerror(err);
}

/* ---- request lifetime ---- */

static cr_upstream_req_t *req_alloc(cr_upstream_t *u) {
  cr_upstream_req_t *r = u->free_reqs;
  cr_buf_t keep;
  if (r != NULL) {
    u->free_reqs = r->next_free;
    u->nfree_reqs--;
    keep = r->out;
  } else {
    r = cr_malloc(sizeof *r);
    cr_buf_init(&keep, OUT_MAX);
  }
  memset(r, 0, offsetof(cr_upstream_req_t, detail));
  r->detail[0] = '\0';
  r->out = keep;
  r->out.len = 0;
  r->u = u;
  r->body_left = -1;
  cr_queue_init(&r->defer_link);
  cr_queue_insert_tail(&u->reqs, &r->link);
  return r;
}

static void req_free(cr_upstream_req_t *r) {
  cr_upstream_t *u = r->u;
  cr_queue_remove(&r->link);
  cr_queue_remove(&r->defer_link);
  if (u->freeing || u->nfree_reqs >= FREE_REQS_MAX) {
    cr_buf_free(&r->out);
    free(r);
    return;
  }
  buf_trim(&r->out);
  r->next_free = u->free_reqs;
  u->free_reqs = r;
  u->nfree_reqs++;
}

static void defer(cr_upstream_req_t *r, unsigned what) {
  cr_upstream_t *u = r->u;
  r->defer_flags |= what;
  if (cr_queue_empty(&r->defer_link))
    cr_queue_insert_tail(&u->deferred, &r->defer_link);
  if (!uv_is_active((uv_handle_t *)&u->defer_timer) && !u->freeing)
    uv_timer_start(&u->defer_timer, on_defer_timer, 0, 0);
}

/* Separates r from its connection; the connection is closed unless the caller pools it. */
static conn_t *req_detach(cr_upstream_req_t *r) {
  conn_t *c = r->conn;
  if (c == NULL)
    return NULL;
  r->conn = NULL;
  c->req = NULL;
  cr_deadline_clear(&c->deadline);
  return c;
}

static void deliver_error(cr_upstream_req_t *r) {
  r->final = 1;
  r->cb_depth++;
  if (r->cbs.on_error)
    r->cbs.on_error(r, r->err, r->detail);
  r->cb_depth--;
  req_free(r);
}

/* The one error exit. Closes the connection at once; on_error fires now when we are in a plain
 * libuv callback, otherwise on the next loop turn. */
static void req_fail(cr_upstream_req_t *r, int err, const char *fmt, ...) CR_PRINTF(3, 4);
static void req_fail(cr_upstream_req_t *r, int err, const char *fmt, ...) {
  va_list ap;
  conn_t *c;
  if (r->failed || r->canceled || r->final)
    return;
  va_start(ap, fmt);
  vsnprintf(r->detail, sizeof r->detail, fmt, ap);
  va_end(ap);
  r->err = err;
  r->failed = 1;
  c = req_detach(r);
  if (c != NULL)
    conn_close(c);
  cr_log_debug("upstream request failed", "route=%s err=%s", r->u->name, cr_err_name(err));
  if (r->cb_depth > 0 || r->in_api > 0) {
    defer(r, DEFER_FAIL);
    return;
  }
  cr_queue_remove(&r->defer_link);
  deliver_error(r);
}

static const char *phase_of(const cr_upstream_req_t *r) {
  switch (r->state) {
  case REQ_CONNECT:
    return "connecting to";
  case REQ_SEND:
    return "sending request to";
  case REQ_WAIT_HEAD:
    return "waiting for response head from";
  case REQ_BODY:
    break;
  }
  return "reading response body from";
}

/* ---- connections ---- */

static void conn_maybe_free(conn_t *c);

void cr_upstream_release_caches(cr_upstream_t *u) {
  cr_upstream_req_t *r;
  while ((r = u->free_reqs) != NULL) {
    u->free_reqs = r->next_free;
    cr_buf_free(&r->out);
    free(r);
  }
  u->nfree_reqs = 0;
}

static void upstream_maybe_free(cr_upstream_t *u) {
  if (!u->freeing || u->nconns > 0 || u->timers_open > 0)
    return;
  cr_upstream_release_caches(u);
  cr_tls_ctx_free(u->tls);
  free(u->name);
  free(u->host);
  free(u->server_name);
  free(u);
}

static void conn_maybe_free(conn_t *c) {
  cr_upstream_t *u = c->u;
  if (--c->pending_closes > 0)
    return;
  cr_http1_parser_free(c->parser);
  cr_buf_free(&c->inflight);
  cr_buf_free(&c->held);
  cr_buf_free(&c->tail);
  free(c);
  u->nconns--;
  upstream_maybe_free(u);
}

static void on_stream_closed(cr_stream_t *s) { conn_maybe_free(s->data); }

static void on_timer_closed(uv_handle_t *h) { conn_maybe_free(h->data); }

static void conn_close(conn_t *c) {
  cr_upstream_t *u = c->u;
  if (c->state == CONN_CLOSED)
    return;
  if (c->state == CONN_IDLE)
    u->nidle--;
  else
    u->nbusy--;
  cr_queue_remove(&c->link);
  c->state = CONN_CLOSED;
  c->req = NULL;
  c->reading = 0;
  cr_log_debug("upstream connection closed", "route=%s peer=%s", u->name, u->hostport);
  c->pending_closes = 1;
  cr_deadline_close(&c->deadline, on_timer_closed);
  if (c->s != NULL) {
    c->pending_closes++;
    c->s->data = c;
    cr_stream_close(c->s, on_stream_closed);
  }
}

static int on_parser_head(void *ud, cr_http_msg_t *m);
static int on_parser_body(void *ud, const char *data, size_t len);
static int on_parser_end(void *ud);

static const cr_http1_callbacks_t parser_cbs = {
    .on_head = on_parser_head,
    .on_body = on_parser_body,
    .on_end = on_parser_end,
};

static void on_timer(cr_deadline_t *d);

static void busy_grew(cr_upstream_t *u) {
  u->nbusy++;
  if (u->nbusy > u->peak_busy)
    u->peak_busy = u->nbusy;
}

/* The pool follows demand (as HAProxy's idle-connection purge does): every interval, the idle
 * connections beyond what the interval's peak could have used on top of the busy ones are surplus,
 * and half of them (the least recently used) close. A finished burst leaves no warm pool holding
 * memory and upstream slots for the whole idle_timeout, and a steady load keeps what it uses. The
 * most recently used connection stays until idle_timeout, so an occasional caller finds it warm. */
static void on_purge_timer(uv_timer_t *t) {
  cr_upstream_t *u = t->data;
  size_t wanted = u->peak_busy > u->nbusy ? u->peak_busy - u->nbusy : 0;
  size_t surplus = u->nidle > wanted ? u->nidle - wanted : 0;
  size_t n = CR_MIN((surplus + 1) / 2, u->nidle > 0 ? u->nidle - 1 : 0);
  for (; n > 0; n--)
    conn_close(cr_queue_data(u->idle.prev, conn_t, link));
  u->peak_busy = u->nbusy;
  if (u->nidle <= 1)
    uv_timer_stop(&u->purge_timer);
}

static conn_t *conn_new(cr_upstream_t *u) {
  conn_t *c = cr_calloc(1, sizeof *c);
  c->u = u;
  c->state = CONN_CONNECTING;
  cr_queue_init(&c->link);
  cr_queue_insert_tail(&u->busy, &c->link);
  busy_grew(u);
  u->nconns++;
  cr_deadline_init(u->loop, &c->deadline);
  c->deadline.timer.data = c;
  c->parser = cr_http1_parser_new(CR_HTTP1_RESPONSE, &u->limits, &parser_cbs, c);
  cr_buf_init(&c->inflight, OUT_MAX);
  cr_buf_init(&c->held, HELD_MAX);
  cr_buf_init(&c->tail, OUT_MAX);
  return c;
}

static void conn_attach(conn_t *c, cr_upstream_req_t *r) {
  c->req = r;
  r->conn = c;
  if (r->is_head)
    cr_http1_parser_expect_no_body(c->parser);
}

/* LIFO: the most recently used connection is the least likely to have been dropped by the peer. */
static conn_t *pool_take(cr_upstream_t *u) {
  conn_t *c;
  while (!cr_queue_empty(&u->idle)) {
    c = cr_queue_data(cr_queue_head(&u->idle), conn_t, link);
    if (uv_now(u->loop) - c->idle_since >= u->idle_timeout_ms) {
      /* The newest is stale, so all are: the timer just has not run yet. */
      conn_close(c);
      continue;
    }
    cr_queue_remove(&c->link);
    u->nidle--;
    cr_deadline_clear(&c->deadline);
    c->state = CONN_ACTIVE;
    c->reused = 1;
    cr_queue_insert_tail(&u->busy, &c->link);
    busy_grew(u);
    return c;
  }
  return NULL;
}

static void pool_put(conn_t *c) {
  cr_upstream_t *u = c->u;
  if (u->freeing || u->max_idle == 0 || c->tls_gen != u->tls_gen) {
    conn_close(c);
    return;
  }
  cr_queue_remove(&c->link);
  u->nbusy--;
  c->state = CONN_IDLE;
  c->idle_since = uv_now(u->loop);
  /* A pooled connection may wait for long: it keeps no buffer that served one big transfer (the
   * response bytes held during a pause can have reached a whole read, 64 KiB). */
  cr_buf_free(&c->held);
  cr_buf_free(&c->tail);
  if (c->inflight.cap > POOLED_BUF_MAX && !c->writing)
    cr_buf_free(&c->inflight);
  cr_queue_insert_head(&u->idle, &c->link);
  u->nidle++;
  /* Reading while idle is how a peer's close (or stray bytes) is noticed before the next request
   * would be written into a dead connection. */
  conn_read_start(c);
  cr_deadline_set(&c->deadline, on_timer, u->idle_timeout_ms);
  while (u->nidle > u->max_idle)
    conn_close(cr_queue_data(u->idle.prev, conn_t, link));
  if (u->nidle > 1 && !uv_is_active((uv_handle_t *)&u->purge_timer))
    uv_timer_start(&u->purge_timer, on_purge_timer, u->purge_interval_ms, u->purge_interval_ms);
}

/* ---- sending ---- */

static void response_timer_update(cr_upstream_req_t *r);

static void on_writable_due(cr_upstream_req_t *r) {
  r->want_writable = 0;
  r->cb_depth++;
  if (r->cbs.on_writable)
    r->cbs.on_writable(r);
  r->cb_depth--;
  if (r->canceled && r->cb_depth == 0)
    req_free(r);
}

static void on_write_complete(cr_stream_t *s, int status, void *arg);

/* The tail of a request whose response already ended goes out once the write in flight completes;
 * then the connection is pooled. */
static void finish_flush(conn_t *c) {
  uv_buf_t b;
  if (c->writing)
    return;
  if (c->tail.len == 0) {
    c->finishing = 0;
    pool_put(c);
    return;
  }
  buf_swap(&c->inflight, &c->tail);
  b = uv_buf_init(c->inflight.base, (unsigned)c->inflight.len);
  if (cr_stream_write(c->s, &b, 1, on_write_complete, c) < 0) {
    c->inflight.len = 0;
    conn_close(c);
    return;
  }
  c->writing = 1;
}

/* A server may answer before it has read the whole request body (nginx's `return` does) and, when it
 * keeps the connection, reads and discards the rest. Closing instead would cost the next request a
 * new TCP and TLS handshake, so the rest is sent (bounded by the response timeout) and the connection
 * pooled. Only called once every body byte is queued. */
static void finish_send(conn_t *c, cr_upstream_req_t *r) {
  cr_log_debug("upstream answered before the request was sent; finishing it before reuse", "route=%s peer=%s",
               c->u->name, c->u->hostport);
  buf_swap(&c->tail, &r->out);
  c->finishing = 1;
  cr_deadline_set(&c->deadline, on_timer, c->u->response_timeout_ms);
  finish_flush(c);
}

static void on_write_complete(cr_stream_t *s, int status, void *arg) {
  conn_t *c = arg;
  cr_upstream_req_t *r = c->req;
  c->writing = 0;
  if (status == 0 && r != NULL && !c->finishing)
    r->sent += c->inflight.len;
  c->inflight.len = 0;
  if (c->state == CONN_CLOSED)
    return;
  if (status < 0) {
    if (r == NULL) {
      conn_close(c);
      return;
    }
    req_fail(r, status, "%s %s failed: %s", "sending request to", c->u->who, stream_reason(c, status));
    return;
  }
  if (c->finishing) {
    finish_flush(c);
    return;
  }
  if (r == NULL || flush(c) < 0)
    return;
  if (r->want_writable && req_buffered(r) < LOW_WATER)
    on_writable_due(r);
}

/* Hands everything queued (at most WRITE_MAX when more waits) to the stream as one write, unless a
 * write is already in flight (its completion sends the rest): this batches head and body, and body
 * pieces written in one turn.
 * Returns -1 when the request failed (and may be gone), else 0. */
static int flush(conn_t *c) {
  cr_upstream_req_t *r = c->req;
  uv_buf_t b;
  int rc;
  if (r == NULL || c->state != CONN_ACTIVE)
    return 0;
  if (!c->writing && r->out.len > 0) {
    if (r->out.len <= WRITE_MAX) {
      buf_swap(&c->inflight, &r->out);
    } else { /* only when the upstream is behind: a piece, copied; the rest moves to the front */
      cr_buf_reset(&c->inflight);
      if (cr_buf_append(&c->inflight, r->out.base, WRITE_MAX) < 0) {
        req_fail(r, CR_ELIMIT, "%s %s failed: %s", "sending request to", c->u->who, cr_strerror(CR_ELIMIT));
        return -1;
      }
      cr_buf_consume(&r->out, WRITE_MAX);
    }
    b = uv_buf_init(c->inflight.base, (unsigned)c->inflight.len);
    rc = cr_stream_write(c->s, &b, 1, on_write_complete, c);
    if (rc < 0) {
      c->inflight.len = 0;
      req_fail(r, rc, "%s %s failed: %s", "sending request to", c->u->who, stream_reason(c, rc));
      return -1;
    }
    c->writing = 1;
  }
  if (r->out.len == 0 && r->end_queued && !r->send_done) {
    r->send_done = 1;
    if (r->state == REQ_SEND)
      r->state = REQ_WAIT_HEAD;
    response_timer_update(r);
  }
  return 0;
}

/* ---- the response ---- */

static void response_timer_update(cr_upstream_req_t *r) {
  conn_t *c = r->conn;
  if (c == NULL || c->state != CONN_ACTIVE)
    return;
  if (r->paused || r->resp_done || (r->state != REQ_WAIT_HEAD && r->state != REQ_BODY)) {
    cr_deadline_clear(&c->deadline);
    return;
  }
  cr_deadline_set(&c->deadline, on_timer, r->u->response_timeout_ms);
}

static int on_parser_head(void *ud, cr_http_msg_t *m) {
  conn_t *c = ud;
  cr_upstream_req_t *r = c->req;
  if (r == NULL)
    return CR_ECANCELED;
  r->state = REQ_BODY;
  r->resp_keep_alive = m->keep_alive;
  r->cb_depth++;
  if (r->cbs.on_head)
    r->cbs.on_head(r, m);
  r->cb_depth--;
  if (c->req != r)
    return CR_ECANCELED;
  if (r->paused) {
    c->parser_paused = 1;
    return CR_HTTP1_PAUSE;
  }
  return 0;
}

static int on_parser_body(void *ud, const char *data, size_t len) {
  conn_t *c = ud;
  cr_upstream_req_t *r = c->req;
  if (r == NULL)
    return CR_ECANCELED;
  r->cb_depth++;
  if (r->cbs.on_body)
    r->cbs.on_body(r, data, len);
  r->cb_depth--;
  if (c->req != r)
    return CR_ECANCELED;
  if (r->paused) {
    c->parser_paused = 1;
    return CR_HTTP1_PAUSE;
  }
  return 0;
}

static int on_parser_end(void *ud) {
  conn_t *c = ud;
  cr_upstream_req_t *r = c->req;
  if (r == NULL)
    return CR_ECANCELED;
  r->resp_done = 1;
  /* Stop here: on_end is delivered after the parser returns, once the connection is settled. */
  c->parser_paused = 1;
  return CR_HTTP1_PAUSE;
}

static void parser_ready(conn_t *c) {
  if (c->parser_paused) {
    cr_http1_parser_resume(c->parser);
    c->parser_paused = 0;
  }
}

/* The response is complete: settle the connection first (so on_end may already reuse it), then
 * tell the caller. */
static void req_finish(cr_upstream_req_t *r, int clean) {
  conn_t *c = req_detach(r);
  if (c != NULL) {
    if (clean && r->resp_keep_alive && c->held.len == 0 && (r->send_done || r->end_queued)) {
      parser_ready(c);
      if (r->send_done)
        pool_put(c);
      else
        finish_send(c, r);
    } else {
        conn_close(c);
    }
  }
  r->final = 1;
  r->cb_depth++;
  if (r->cbs.on_end)
    r->cbs.on_end(r);
  r->cb_depth--;
  req_free(r);
}

static void parse_failed(cr_upstream_req_t *r, int rc) {
  conn_t *c = r->conn;
  const char *why = c ? cr_http1_parser_error(c->parser) : "";
  if (rc == CR_EHTTP_TOO_LARGE)
    req_fail(r, CR_EHTTP_PARSE, "response head from %s exceeds %zu bytes", r->u->who,
             r->u->limits.max_head_size);
  else
    req_fail(r, CR_EHTTP_PARSE, "%s %s failed: malformed response: %s", phase_of(r), r->u->who,
             why && *why ? why : cr_strerror(rc));
}

/* Runs the parser over response bytes. from_held: data lies in c->held (a re-feed after resume).
 * Returns -1 when r finished, failed or was canceled (it may be gone), else 0. */
static int conn_feed(conn_t *c, cr_upstream_req_t *r, const char *data, size_t len, int from_held) {
  ssize_t n;
  size_t rest;
  int rc;
  parser_ready(c);
  n = cr_http1_parse(c->parser, data, len);
  if (r->canceled) {
    /* Canceled from on_head/on_body: the connection is already closing. */
    req_free(r);
    return -1;
  }
  if (r->failed)
    return -1; /* failed from inside a callback; on_error is queued */
  if (n < 0) {
    parse_failed(r, (int)n);
    return -1;
  }
  rest = len - (size_t)n;
  if (from_held)
    cr_buf_consume(&c->held, (size_t)n);
  if (r->resp_done) {
    /* Bytes after a complete response were never asked for: the connection cannot be trusted. */
    req_finish(r, rest == 0);
    return -1;
  }
  if (!from_held && rest > 0) {
    rc = cr_buf_append(&c->held, data + n, rest);
    if (rc < 0) {
      req_fail(r, rc, "%s %s failed: %zu bytes received while paused exceed the hold buffer",
               phase_of(r), r->u->who, rest);
      return -1;
    }
  }
  if (rest > 0 || r->paused)
    conn_read_stop(c);
  if (r->state == REQ_BODY)
    response_timer_update(r);
  return 0;
}

static void on_read_error(conn_t *c, cr_upstream_req_t *r, int err) {
  cr_upstream_t *u = c->u;
  if (err == UV_EOF && (r->state == REQ_BODY || cr_http1_parser_in_message(c->parser))) {
    parser_ready(c);
    cr_http1_parse_eof(c->parser);
    if (r->canceled) {
      req_free(r);
      return;
    }
    if (r->failed)
      return;
    if (r->resp_done) {
      req_finish(r, 0); /* a body delimited by close */
      return;
    }
    req_fail(r, UV_EOF, "%s %s failed: connection closed before the response was complete", phase_of(r),
             u->who);
    return;
  }
  if (err == UV_EOF) {
    req_fail(r, UV_EOF, "%s %s failed: connection closed%s", phase_of(r), u->who,
             c->reused ? " (pooled connection)" : "");
    return;
  }
  req_fail(r, err, "%s %s failed: %s", phase_of(r), u->who, stream_reason(c, err));
}

static void on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  conn_t *c = s->data;
  cr_upstream_req_t *r = c->req;
  if (c->state == CONN_IDLE || r == NULL) {
    /* EOF, an error or unsolicited bytes on an idle connection: it is done either way. */
    cr_log_debug("upstream idle connection dropped", "route=%s peer=%s reason=%s", c->u->name, c->u->hostport,
                 nread < 0 ? cr_err_name((int)nread) : "unsolicited-bytes");
    conn_close(c);
    return;
  }
  if (nread < 0) {
    c->reading = 0;
    on_read_error(c, r, (int)nread);
    return;
  }
  conn_feed(c, r, data, (size_t)nread, 0);
}

/* ---- connecting ---- */

static void conn_ready(conn_t *c) {
  cr_upstream_req_t *r = c->req;
  cr_deadline_clear(&c->deadline);
  c->state = CONN_ACTIVE;
  if (r->state == REQ_CONNECT)
    r->state = REQ_SEND;
  if (!r->paused)
    conn_read_start(c);
  flush(c);
}

static void on_handshake(cr_stream_t *s, int status) {
  conn_t *c = s->data;
  cr_upstream_req_t *r = c->req;
  cr_upstream_t *u = c->u;
  if (status < 0) {
    req_fail(r, status, "TLS handshake with %s failed: %s", u->who, stream_reason(c, status));
    return;
  }
  cr_log_debug("upstream connection established", "route=%s peer=%s%s", u->name, u->hostport,
               cr_tls_stream_resumed(s) ? " resumed=1" : "");
  if (cr_tls_stream_verify_warning(s)[0])
    cr_log_warn("soft revocation: upstream allowed without a usable CRL", "route=%s upstream=%s reason=\"%s\"",
                u->name, u->hostport, cr_tls_stream_verify_warning(s));
  {
    X509 *peer = cr_tls_stream_peer_cert(s);
    if (peer) {
      struct tm tm;
      cr_x509_name_oneline(X509_get_subject_name(peer), u->peer_subject, sizeof u->peer_subject);
      if (ASN1_TIME_to_tm(X509_get0_notAfter(peer), &tm) == 1)
        u->peer_not_after = timegm(&tm);
    }
  }
  conn_ready(c);
}

static void on_connect(cr_stream_t *s, int status) {
  conn_t *c = s->data;
  cr_upstream_req_t *r = c->req;
  cr_upstream_t *u = c->u;
  cr_stream_t *tls;
  int rc;
  if (status < 0) {
    req_fail(r, status, "connect to %s failed: %s", u->hostport, cr_strerror(status));
    return;
  }
  tls = cr_tls_stream_new(s, u->tls, u->server_name);
  c->tls_gen = u->tls_gen;
  tls->data = c;
  c->s = tls;
  c->state = CONN_HANDSHAKE;
  rc = cr_tls_stream_handshake(tls, on_handshake);
  if (rc < 0)
    req_fail(r, rc, "TLS handshake with %s failed: %s", u->who, stream_reason(c, rc));
}

static void on_timer(cr_deadline_t *d) {
  conn_t *c = d->timer.data;
  cr_upstream_req_t *r = c->req;
  cr_upstream_t *u = c->u;
  switch (c->state) {
  case CONN_IDLE:
    conn_close(c);
    return;
  case CONN_CLOSED:
    return;
  case CONN_CONNECTING:
    req_fail(r, UV_ETIMEDOUT, "connect to %s timed out after %" PRIu64 " ms", u->hostport, u->connect_timeout_ms);
    return;
  case CONN_HANDSHAKE:
    req_fail(r, UV_ETIMEDOUT, "TLS handshake with %s timed out after %" PRIu64 " ms (connect timeout)", u->who,
             u->connect_timeout_ms);
    return;
  case CONN_ACTIVE:
    break;
  }
  if (r == NULL) {
    conn_close(c);
    return;
  }
  if (r->state == REQ_BODY)
    req_fail(r, UV_ETIMEDOUT, "reading response body from %s failed: no data within %" PRIu64 " ms", u->who,
             u->response_timeout_ms);
  else
    req_fail(r, UV_ETIMEDOUT, "no response head within %" PRIu64 " ms from %s", u->response_timeout_ms, u->who);
}

static void dial(cr_upstream_req_t *r) {
  cr_upstream_t *u = r->u;
  conn_t *c = conn_new(u);
  int rc;
  conn_attach(c, r);
  rc = cr_tcp_connect(u->loop, u->host, u->port, on_connect, c, &c->s);
  if (rc < 0) {
    c->s = NULL;
    req_fail(r, rc, "connect to %s failed: %s", u->hostport, cr_strerror(rc));
    return;
  }
  cr_deadline_set(&c->deadline, on_timer, u->connect_timeout_ms);
}

/* ---- deferred work ---- */

static void run_deferred(cr_upstream_req_t *r, unsigned what) {
  conn_t *c = r->conn;
  if (what & DEFER_FAIL) {
    deliver_error(r);
    return;
  }
  if (c == NULL || c->state != CONN_ACTIVE)
    return;
  if ((what & DEFER_FLUSH) && flush(c) < 0)
    return;
  if ((what & DEFER_FEED) && !r->paused) {
    /* Even with nothing held the parser may owe the message's end (paused on the last body byte);
     * an empty feed delivers it, since no more bytes will come on a keep-alive connection. */
    if ((c->held.len > 0 || c->parser_paused) && conn_feed(c, r, c->held.base ? c->held.base : "", c->held.len, 1) < 0)
      return;
    if (!r->paused && c->held.len == 0)
      conn_read_start(c);
  }
}

static void on_defer_timer(uv_timer_t *t) {
  cr_upstream_t *u = t->data;
  cr_queue_t batch;
  cr_upstream_req_t *r;
  unsigned what;
  /* Work queued while this batch runs waits for the next turn: bounded work per wakeup. */
  cr_queue_init(&batch);
  if (cr_queue_empty(&u->deferred))
    return;
  batch.next = u->deferred.next;
  batch.prev = u->deferred.prev;
  batch.next->prev = &batch;
  batch.prev->next = &batch;
  cr_queue_init(&u->deferred);
  while (!cr_queue_empty(&batch)) {
    r = cr_queue_data(cr_queue_head(&batch), cr_upstream_req_t, defer_link);
    cr_queue_remove(&r->defer_link);
    what = r->defer_flags;
    r->defer_flags = 0;
    run_deferred(r, what);
  }
}

/* ---- public API ---- */

static void format_hostport(char *out, size_t outlen, const char *host, unsigned port, int omit_443) {
  int v6 = strchr(host, ':') != NULL;
  if (omit_443 && port == 443)
    snprintf(out, outlen, v6 ? "[%s]" : "%s", host);
  else
    snprintf(out, outlen, v6 ? "[%s]:%u" : "%s:%u", host, port);
}

int cr_upstream_new(uv_loop_t *loop, const cr_upstream_opts_t *opts, cr_upstream_t **out, char *err,
                    size_t errlen) {
  cr_tls_ctx_opts_t to;
  cr_tls_ctx_t *tls = NULL;
  cr_upstream_t *u;
  const char *name = opts->name ? opts->name : "upstream";
  char tlserr[512];
  int rc;
  if (opts->host == NULL || *opts->host == '\0' || opts->port == 0 || opts->port > 65535) {
    snprintf(err, errlen, "upstream %s: host and a port in 1..65535 are required", name);
    return CR_ECONFIG;
  }
  if (opts->tls) {
    tls = cr_tls_ctx_ref(opts->tls);
  } else {
    memset(&to, 0, sizeof to);
    to.server = 0;
    to.ca_file = opts->ca_file;
    to.identity = opts->identity;
    to.alpn = "http/1.1";
    to.resume_sessions = 1;
    rc = cr_tls_ctx_new(&to, &tls, tlserr, sizeof tlserr);
    if (rc < 0) {
      snprintf(err, errlen, "upstream %s: %s", name, tlserr);
      return rc;
    }
  }
  u = cr_calloc(1, sizeof *u);
  u->loop = loop;
  u->tls = tls;
  u->name = cr_strdup(name);
  u->host = cr_strdup(opts->host);
  u->server_name = cr_strdup(opts->server_name && *opts->server_name ? opts->server_name : opts->host);
  u->port = opts->port;
  u->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  u->response_timeout_ms = opts->response_timeout_ms ? opts->response_timeout_ms : DEFAULT_RESPONSE_TIMEOUT_MS;
  u->idle_timeout_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
  u->max_idle = opts->max_idle;
  u->limits.max_head_size = opts->max_header_size ? opts->max_header_size : 16 * 1024;
  u->limits.max_headers = 0;
  format_hostport(u->hostport, sizeof u->hostport, u->host, u->port, 0);
  snprintf(u->who, sizeof u->who, "%s (server name %s)", u->hostport, u->server_name);
  format_hostport(u->host_header, sizeof u->host_header, u->server_name, u->port, 1);
  cr_queue_init(&u->idle);
  cr_queue_init(&u->busy);
  cr_queue_init(&u->reqs);
  cr_queue_init(&u->deferred);
  uv_timer_init(loop, &u->defer_timer);
  u->defer_timer.data = u;
  uv_timer_init(loop, &u->purge_timer);
  u->purge_timer.data = u;
  u->timers_open = 2;
  u->purge_interval_ms = opts->purge_interval_ms ? opts->purge_interval_ms : DEFAULT_PURGE_INTERVAL_MS;
  *out = u;
  return 0;
}

static void on_timer_handle_closed(uv_handle_t *h) {
  cr_upstream_t *u = h->data;
  u->timers_open--;
  upstream_maybe_free(u);
}

void cr_upstream_free(cr_upstream_t *u) {
  cr_queue_t *q, *n;
  if (u == NULL || u->freeing)
    return;
  u->freeing = 1;
  cr_queue_foreach_safe(q, n, &u->reqs) {
    cr_upstream_req_t *r = cr_queue_data(q, cr_upstream_req_t, link);
    cr_upstream_req_cancel(r);
  }
  while (!cr_queue_empty(&u->idle))
    conn_close(cr_queue_data(cr_queue_head(&u->idle), conn_t, link));
  /* Connections still busy belong to requests being canceled from inside their callbacks. */
  while (!cr_queue_empty(&u->busy))
    conn_close(cr_queue_data(cr_queue_head(&u->busy), conn_t, link));
  uv_close((uv_handle_t *)&u->defer_timer, on_timer_handle_closed);
  uv_close((uv_handle_t *)&u->purge_timer, on_timer_handle_closed);
}

void cr_upstream_set_tls(cr_upstream_t *u, cr_tls_ctx_t *tls) {
  cr_tls_ctx_t *old = u->tls;
  u->tls = cr_tls_ctx_ref(tls);
  u->tls_gen++;
  cr_tls_ctx_free(old); /* connections still using it hold their own reference */
  while (!cr_queue_empty(&u->idle))
    conn_close(cr_queue_data(cr_queue_head(&u->idle), conn_t, link));
}

int cr_upstream_peer_cert(const cr_upstream_t *u, char *subject, size_t subjectlen, time_t *not_after) {
  if (u->peer_not_after == 0)
    return UV_ENOENT;
  snprintf(subject, subjectlen, "%s", u->peer_subject);
  *not_after = u->peer_not_after;
  return 0;
}

void cr_upstream_stats(const cr_upstream_t *u, size_t *idle, size_t *busy) {
  if (idle)
    *idle = u->nidle;
  if (busy)
    *busy = u->nbusy;
}

static int method_wants_length(const char *m) {
  return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

/* Rewrites the caller's head in place (Host, framing) and serialises it into r->out. In place because
 * the caller's head is already its own rewritable copy: a second copy here was 1 % of the agent. */
static int build_head(cr_upstream_req_t *r, cr_http_msg_t *m, int has_body) {
  cr_upstream_t *u = r->u;
  char num[32];
  size_t len;
  int rc;
  cr_http_msg_remove(m, "Host");
  cr_http_msg_remove(m, "Content-Length");
  cr_http_msg_remove(m, "Transfer-Encoding");
  m->version_minor = 1;
  rc = cr_http_msg_add_header(m, "Host", 4, u->host_header, strlen(u->host_header));
  if (rc < 0)
    return rc;
  r->is_head = m->method != NULL && strcmp(m->method, "HEAD") == 0;
  if (m->content_length >= 0) {
    r->body_left = m->content_length;
    len = cr_u64_dec(num, (uint64_t)m->content_length);
    rc = cr_http_msg_add_header(m, "Content-Length", 14, num, len);
    m->chunked = 0;
    if (m->content_length == 0)
      r->end_queued = 1;
  } else if (has_body) {
    r->chunked = 1;
    rc = cr_http_msg_add_header(m, "Transfer-Encoding", 17, "chunked", 7);
    m->chunked = 1;
  } else {
    r->end_queued = 1;
    if (m->method != NULL && method_wants_length(m->method))
      rc = cr_http_msg_add_header(m, "Content-Length", 14, "0", 1);
  }
  if (rc < 0)
    return rc;
  return cr_http1_write_request_head(&r->out, m);
}

cr_upstream_req_t *cr_upstream_request(cr_upstream_t *u, cr_http_msg_t *head, int has_body,
                                       const cr_upstream_req_callbacks_t *cbs, void *data) {
  cr_upstream_req_t *r = req_alloc(u);
  conn_t *c;
  int rc;
  r->cbs = *cbs;
  r->data = data;
  r->state = REQ_CONNECT;
  r->in_api++;
  rc = build_head(r, head, has_body);
  if (rc < 0) {
    req_fail(r, rc, "request to %s not sent: its head cannot be serialised (%s)", u->who, cr_strerror(rc));
    goto out;
  }
  c = pool_take(u);
  if (c == NULL) {
    dial(r);
    goto out;
  }
  cr_log_debug("upstream connection reused", "route=%s peer=%s", u->name, u->hostport);
  conn_attach(c, r);
  r->state = REQ_SEND;
  if (r->end_queued)
    flush(c); /* the head is everything */
  else
    defer(r, DEFER_FLUSH); /* body bytes written in this turn go out with the head */
out:
  r->in_api--;
  return r;
}

int cr_upstream_req_write(cr_upstream_req_t *r, const char *data, size_t len) {
  char hdr[24];
  size_t hlen;
  int rc;
  if (r->failed || r->canceled || r->final)
    return 0; /* on_error is on its way (or the caller is done with r): the bytes have nowhere to go */
  if (r->end_queued)
    return r->body_left == 0 && len == 0 ? 0 : UV_EINVAL;
  if (len > 0) {
    if (r->body_left >= 0 && (uint64_t)len > (uint64_t)r->body_left)
      return CR_EPROTO;
    if (r->chunked) {
      hlen = cr_http1_chunk_header(hdr, len);
      rc = cr_buf_append(&r->out, hdr, hlen);
      if (rc == 0)
        rc = cr_buf_append(&r->out, data, len);
      if (rc == 0)
        rc = cr_buf_append(&r->out, CR_HTTP1_CHUNK_TRAILER, 2);
    } else {
      rc = cr_buf_append(&r->out, data, len);
    }
    if (rc < 0)
      return rc;
    if (r->body_left >= 0) {
      r->body_left -= (int64_t)len;
      if (r->body_left == 0)
        r->end_queued = 1;
    }
    if (r->conn != NULL) {
      r->in_api++;
      flush(r->conn);
      r->in_api--;
    }
  }
  if (req_buffered(r) > HIGH_WATER) {
    r->want_writable = 1;
    return 1;
  }
  return 0;
}

int cr_upstream_req_end(cr_upstream_req_t *r) {
  int rc;
  if (r->failed || r->canceled || r->final)
    return 0;
  if (r->end_queued)
    return 0;
  if (r->body_left > 0)
    return CR_EPROTO; /* fewer bytes than the Content-Length promised */
  if (r->chunked) {
    rc = cr_buf_append(&r->out, CR_HTTP1_LAST_CHUNK, sizeof CR_HTTP1_LAST_CHUNK - 1);
    if (rc < 0)
      return rc;
  }
  r->end_queued = 1;
  if (r->conn != NULL) {
    r->in_api++;
    flush(r->conn);
    r->in_api--;
  }
  return 0;
}

void cr_upstream_req_pause(cr_upstream_req_t *r, int paused) {
  conn_t *c = r->conn;
  if (r->failed || r->canceled || r->final || (paused != 0) == r->paused)
    return;
  r->paused = paused != 0;
  if (c == NULL || c->state != CONN_ACTIVE)
    return;
  if (r->paused) {
    conn_read_stop(c);
    cr_deadline_clear(&c->deadline);
    return;
  }
  if (c->held.len > 0 || c->parser_paused)
    defer(r, DEFER_FEED); /* held bytes are re-fed on the next turn, never from inside this call */
  else
    conn_read_start(c);
  response_timer_update(r);
}

void cr_upstream_req_cancel(cr_upstream_req_t *r) {
  conn_t *c;
  if (r->canceled || r->final)
    return;
  r->canceled = 1;
  cr_queue_remove(&r->defer_link);
  c = req_detach(r);
  if (c != NULL)
    conn_close(c);
  if (r->cb_depth == 0)
    req_free(r);
}

void *cr_upstream_req_data(const cr_upstream_req_t *r) { return r->data; }

uint64_t cr_upstream_req_sent(const cr_upstream_req_t *r) { return r->sent; }

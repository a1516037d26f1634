/* SPDX-License-Identifier: Apache-2.0 */
/* The operators' HTTP/1.1 listener: one request per connection, parsed by cr_http1 under fixed
 * bounds, answered once (now or later) with Connection: close.
 *
 * Connection life:
 *   READING -> HANDLING (on_request delivered) -> ANSWERING (answer written, then FIN) -> closed
 * Errors before on_request (malformed, too large, too slow) are answered by us and never reach
 * the callee. A caller that goes away while HANDLING (EOF or error: a half-close after the request
 * cannot be told apart from a close here, and admin clients do not half-close) aborts the request. */
#include "ccrelay/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/errpage.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"
#include "ccrelay/stream.h"
#include "ccrelay/x509.h"

#define ADMIN_MAX_HEAD (16 * 1024)
#define ADMIN_MAX_BODY (1024 * 1024)
#define ADMIN_DEADLINE_MS 10000
#define ADMIN_MAX_CONNS 128
#define ADMIN_MAX_EXTRA_HEADERS 8
#define ADMIN_LINGER_MS 2000

typedef enum { ST_READING, ST_HANDLING, ST_ANSWERING, ST_CLOSING } conn_state_t;

struct cr_admin {
  uv_loop_t *loop;
  cr_listener_t *lis;
  cr_admin_callbacks_t cbs;
  void *arg;
  cr_queue_t conns; /* cr_admin_req_t.link */
  size_t nconns;
  unsigned port;
  int closing;
};

/* The request and its connection are one object: the callee's handle is the connection. */
struct cr_admin_req {
  cr_queue_t link;
  cr_admin_t *a; /* NULL once the connection left the admin's list (closing) */
  cr_stream_t *s;
  cr_http1_parser_t *parser;
  uv_timer_t timer;
  conn_state_t state;
  cr_http_msg_t head;
  cr_http_msg_t extra; /* headers the callee adds to its answer */
  cr_buf_t body;
  void *data;
  char peer[64];
  unsigned complete : 1;   /* the parser saw the whole request */
  unsigned continued : 1;  /* 100 Continue sent */
  unsigned eof_seen : 1;
  unsigned stream_closed : 1;
  unsigned timer_closed : 1;
};

typedef struct conn_write {
  cr_admin_req_t *c;
  size_t len;
  char data[];
} conn_write_t;

static void conn_close(cr_admin_req_t *c);
static void on_deadline(uv_timer_t *t);
static void admin_free_if_done(cr_admin_t *a);

/* ---------- bearer tokens ---------- */

int cr_admin_bearer_ok(const cr_http_msg_t *head, const char *token) {
  const char *v;
  unsigned char got[32], want[32];
  size_t vlen, tlen;
  int same;
  if (token == NULL || token[0] == '\0' || cr_http_msg_count(head, "authorization") != 1)
    return 0;
  v = cr_http_msg_get(head, "authorization");
  if (strncasecmp(v, "Bearer ", 7) != 0)
    return 0;
  v += 7;
  while (*v == ' ')
    v++;
  vlen = strlen(v);
  tlen = strlen(token);
  /* Digests of both have the same length whatever was sent, so the comparison's time says nothing
   * about how much of the token matched, nor about its length. */
  cr_x509_sha256(v, vlen, got);
  cr_x509_sha256(token, tlen, want);
  same = cr_x509_mem_equal(got, want, sizeof got);
  cr_wipe(want, sizeof want);
  return same && vlen == tlen;
}

/* ---------- answering ---------- */

static void conn_free_if_done(cr_admin_req_t *c) {
  if (!c->stream_closed || !c->timer_closed)
    return;
  cr_http1_parser_free(c->parser);
  cr_http_msg_free(&c->head);
  cr_http_msg_free(&c->extra);
  cr_buf_free(&c->body);
  free(c);
}

static void conn_stream_closed(cr_stream_t *s) {
  cr_admin_req_t *c = s->data;
  c->stream_closed = 1;
  conn_free_if_done(c);
}

static void conn_timer_closed(uv_handle_t *h) {
  cr_admin_req_t *c = h->data;
  c->timer_closed = 1;
  conn_free_if_done(c);
}

static void conn_close(cr_admin_req_t *c) {
  cr_admin_t *a = c->a;
  if (c->state == ST_CLOSING)
    return;
  c->state = ST_CLOSING;
  if (a) {
    cr_queue_remove(&c->link);
    a->nconns--;
    c->a = NULL;
  }
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
  cr_stream_close(c->s, conn_stream_closed);
  if (a)
    admin_free_if_done(a);
}

/* The connection fails while the callee holds the request: tell it, then close. */
static void conn_abort(cr_admin_req_t *c) {
  cr_admin_t *a = c->a;
  if (c->state == ST_HANDLING && a) {
    c->state = ST_ANSWERING; /* a respond from inside on_abort is ignored */
    if (a->cbs.on_abort)
      a->cbs.on_abort(c, a->arg);
  }
  conn_close(c);
}

/* Our FIN is out; reading on (and dropping) until the caller's EOF, briefly, keeps an unread
 * request tail from turning our close into a reset that would destroy the answer. */
static void shutdown_done(cr_stream_t *s, int status, void *arg) {
  cr_admin_req_t *c = arg;
  if (c->state != ST_ANSWERING)
    return;
  if (status < 0 || c->eof_seen)
    conn_close(c);
  else
    uv_timer_start(&c->timer, on_deadline, ADMIN_LINGER_MS, 0);
}

static void answer_written(cr_stream_t *s, int status, void *arg) {
  conn_write_t *w = arg;
  cr_admin_req_t *c = w->c;
  free(w);
  if (c->state != ST_ANSWERING)
    return; /* closed meanwhile (the write was cancelled) */
  if (status < 0 || cr_stream_shutdown(c->s, shutdown_done, c) < 0)
    conn_close(c);
}

static void continue_written(cr_stream_t *s, int status, void *arg) {
  free(arg);
}

static int conn_write(cr_admin_req_t *c, const char *data, size_t len, cr_stream_write_cb cb) {
  conn_write_t *w = cr_malloc(sizeof *w + len);
  uv_buf_t buf;
  int r;
  w->c = c;
  w->len = len;
  memcpy(w->data, data, len);
  buf = uv_buf_init(w->data, (unsigned)len);
  r = cr_stream_write(c->s, &buf, 1, cb, w);
  if (r < 0)
    free(w);
  return r;
}

static void send_answer(cr_admin_req_t *c, int status, const char *ctype, const char *body, size_t len) {
  cr_http_msg_t head;
  cr_buf_t out;
  char clen[24];
  int r;
  if (c->state == ST_ANSWERING || c->state == ST_CLOSING)
    return;
  c->state = ST_ANSWERING;
  uv_timer_start(&c->timer, on_deadline, ADMIN_DEADLINE_MS, 0); /* for the caller to take the answer */
  cr_http_msg_init(&head, 0);
  cr_buf_init(&out, 0);
  head.status = status;
  head.version_minor = 1;
  if (ctype && ctype[0])
    cr_http_msg_add_header(&head, "Content-Type", 12, ctype, strlen(ctype));
  snprintf(clen, sizeof clen, "%zu", len);
  cr_http_msg_add_header(&head, "Content-Length", 14, clen, strlen(clen));
  cr_http_msg_add_header(&head, "Cache-Control", 13, "no-store", 8);
  for (size_t i = 0; i < c->extra.nheaders; i++)
    cr_http_msg_add_header(&head, c->extra.headers[i].name, c->extra.headers[i].name_len,
                           c->extra.headers[i].value, c->extra.headers[i].value_len);
  cr_http_msg_add_header(&head, "Connection", 10, "close", 5);
  r = cr_http1_write_response_head(&out, &head);
  if (r == 0 && len)
    r = cr_buf_append(&out, body, len);
  if (r < 0) {
    cr_log_warn("admin answer not sendable", "peer=%s status=%d reason=\"%s\"", c->peer, status, cr_strerror(r));
    conn_close(c);
  } else if (conn_write(c, out.base, out.len, answer_written) < 0) {
    conn_close(c);
  }
  cr_buf_free(&out);
  cr_http_msg_free(&head);
}

static void send_error(cr_admin_req_t *c, int status, const char *code, const char *message) {
  cr_http_msg_t head;
  cr_buf_t body;
  cr_http_msg_init(&head, 0);
  cr_buf_init(&body, 0);
  cr_errpage_build(status, code, message, NULL, 0, &head, &body);
  send_answer(c, status, "application/json", body.base, body.len);
  cr_buf_free(&body);
  cr_http_msg_free(&head);
}

void cr_admin_respond(cr_admin_req_t *req, int status, const char *ctype, const char *body, size_t len) {
  if (req->state != ST_HANDLING)
    return;
  send_answer(req, status, ctype, body, len);
}

int cr_admin_req_add_header(cr_admin_req_t *req, const char *name, const char *value) {
  if (!cr_http_token_valid(name, strlen(name)) || !cr_http_field_value_valid(value, strlen(value)))
    return CR_EHTTP_PARSE;
  return cr_http_msg_add_header(&req->extra, name, strlen(name), value, strlen(value));
}

const char *cr_admin_req_peer(const cr_admin_req_t *req) { return req->peer; }
void cr_admin_req_set_data(cr_admin_req_t *req, void *data) { req->data = data; }
void *cr_admin_req_data(const cr_admin_req_t *req) { return req->data; }

/* ---------- reading the request ---------- */

static int on_head(void *ud, cr_http_msg_t *m) {
  cr_admin_req_t *c = ud;
  const char *expect;
  if (m->content_length > ADMIN_MAX_BODY) {
    send_error(c, 413, "body_too_large", "request body over 1 MiB");
    return CR_ELIMIT;
  }
  cr_http_msg_copy(&c->head, m);
  expect = cr_http_msg_get(m, "expect");
  /* curl waits a second for this before sending a body of more than 1 KiB (a PEM bundle). */
  if (expect && cr_http_name_eq(expect, "100-continue") && m->version_minor == 1 && !c->continued) {
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    c->continued = 1;
    conn_write(c, cont, sizeof cont - 1, continue_written);
  }
  return 0;
}

static int on_body(void *ud, const char *data, size_t len) {
  cr_admin_req_t *c = ud;
  if (cr_buf_append(&c->body, data, len) < 0) {
    send_error(c, 413, "body_too_large", "request body over 1 MiB");
    return CR_ELIMIT;
  }
  return 0;
}

static int on_end(void *ud) {
  cr_admin_req_t *c = ud;
  c->complete = 1;
  return CR_HTTP1_PAUSE; /* one request per connection: whatever follows is dropped */
}

static const cr_http1_callbacks_t parser_cbs = {.on_head = on_head, .on_body = on_body, .on_end = on_end};

static void deliver(cr_admin_req_t *c) {
  cr_admin_t *a = c->a;
  c->state = ST_HANDLING;
  uv_timer_stop(&c->timer);
  a->cbs.on_request(c, &c->head, c->body.base ? c->body.base : "", c->body.len, a->arg);
}

static void on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  cr_admin_req_t *c = s->data;
  ssize_t n;
  if (nread < 0) {
    if (c->state == ST_ANSWERING && nread == UV_EOF) {
      c->eof_seen = 1; /* a half-close: the answer still goes out */
      return;
    }
    if (c->state == ST_READING && nread == UV_EOF && cr_http1_parser_in_message(c->parser))
      cr_log_debug("admin request cut short", "peer=%s", c->peer);
    conn_abort(c);
    return;
  }
  if (c->state != ST_READING)
    return; /* after the request: dropped, we only watch for the caller leaving */
  n = cr_http1_parse(c->parser, data, (size_t)nread);
  if (n < 0) {
    if (c->state == ST_READING) { /* not already answered by a callback */
      char msg[200];
      if (n == CR_EHTTP_TOO_LARGE) {
        send_error(c, 400, "header_too_large", "request header section over 16 KiB");
      } else {
        snprintf(msg, sizeof msg, "malformed request: %s", cr_http1_parser_error(c->parser));
        send_error(c, 400, "bad_request", msg);
      }
    }
    return;
  }
  if (c->complete)
    deliver(c);
}

static void on_deadline(uv_timer_t *t) {
  cr_admin_req_t *c = t->data;
  if (c->state == ST_READING)
    send_error(c, 408, "request_timeout", "request not complete within 10 s");
  else if (c->state == ST_ANSWERING)
    conn_close(c); /* the caller does not read its answer */
}

static void on_connection(cr_listener_t *l, cr_stream_t *conn, void *arg) { cr_admin_accept(arg, conn); }

void cr_admin_accept(cr_admin_t *a, cr_stream_t *conn) {
  cr_http1_limits_t limits = {ADMIN_MAX_HEAD, 0, 0, 0};
  cr_admin_req_t *c;
  if (a->closing || a->nconns >= ADMIN_MAX_CONNS) {
    cr_log_warn("admin connection refused", "peer=%s reason=\"%s\"", conn->peer,
                a->closing ? "closing" : "too many connections");
    cr_stream_close(conn, NULL);
    return;
  }
  c = cr_calloc(1, sizeof *c);
  c->a = a;
  c->s = conn;
  conn->data = c;
  snprintf(c->peer, sizeof c->peer, "%s", conn->peer[0] ? conn->peer : "-");
  c->parser = cr_http1_parser_new(CR_HTTP1_REQUEST, &limits, &parser_cbs, c);
  cr_http_msg_init(&c->head, 0);
  cr_http_msg_init(&c->extra, ADMIN_MAX_EXTRA_HEADERS);
  cr_buf_init(&c->body, ADMIN_MAX_BODY);
  uv_timer_init(a->loop, &c->timer);
  c->timer.data = c;
  cr_queue_insert_tail(&a->conns, &c->link);
  a->nconns++;
  uv_timer_start(&c->timer, on_deadline, ADMIN_DEADLINE_MS, 0);
  if (cr_stream_read_start(conn, on_read) < 0)
    conn_close(c);
}

/* ---------- the listener ---------- */

int cr_admin_listen(uv_loop_t *loop, const char *host, unsigned port, const cr_admin_callbacks_t *cbs, void *arg,
                    cr_admin_t **out, char *err, size_t errlen) {
  cr_admin_t *a = cr_calloc(1, sizeof *a);
  int r;
  a->loop = loop;
  a->cbs = *cbs;
  a->arg = arg;
  cr_queue_init(&a->conns);
  r = cr_tcp_listen(loop, host, port, 64, on_connection, a, &a->lis, err, errlen);
  if (r < 0) {
    free(a);
    *out = NULL;
    return r;
  }
  a->port = cr_listener_port(a->lis);
  *out = a;
  return 0;
}

unsigned cr_admin_port(const cr_admin_t *a) { return a->port; }

static void admin_free_if_done(cr_admin_t *a) {
  if (a->closing && a->nconns == 0)
    free(a);
}

void cr_admin_close(cr_admin_t *a) {
  cr_queue_t *q, *n;
  if (a->closing)
    return;
  a->closing = 1;
  cr_listener_close(a->lis);
  a->lis = NULL;
  a->nconns++; /* keeps a alive while the connections go */
  cr_queue_foreach_safe(q, n, &a->conns) conn_abort(cr_queue_data(q, cr_admin_req_t, link));
  a->nconns--;
  admin_free_if_done(a);
}

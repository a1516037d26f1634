/* SPDX-License-Identifier: Apache-2.0 */
/* Admin listener tests: a real libuv loop, the listener on 127.0.0.1 and in-process TCP clients
 * writing raw requests. Every wait is bounded in time, and every test ends with
 * uv_loop_close() == 0.
 *
 * The gateway's admin API (relay/gateway_admin.c) is tested here too, over a real tunnel pair: this
 * file defines cr__gateway_foreach_tunnel itself (a test double for gateway.c's, which the linker
 * then never pulls from the core library) and lists the pair's gateway side as agent
 * "acme-agent-1". */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccrelay/admin.h"
#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/stream.h"
#include "ccrelay/tunnel.h"
#include "../../relay/gateway_internal.h"

#define MAX_HELD 8
#define MAX_CLIENTS 8

typedef enum {
  SRV_SYNC,  /* answer inside on_request: 200 "got <method> <target> <body_len>" */
  SRV_HOLD,  /* keep the request; the test answers (or closes) later */
  SRV_AUTH   /* 401 with WWW-Authenticate unless the bearer token is right, else 200 "welcome" */
} srv_mode_t;

typedef struct ctx ctx_t;

typedef struct client {
  ctx_t *c;
  cr_stream_t *s;
  cr_buf_t rx;
  char *req;     /* bytes to send once connected */
  size_t reqlen;
  char *later;   /* bytes sent after "100 Continue" arrives */
  size_t laterlen;
  int connected, eof, err, closed, later_sent;
  int close_after_send; /* close the connection once the request is written */
} client_t;

struct ctx {
  uv_loop_t loop;
  uv_timer_t ticker; /* keeps UV_RUN_ONCE from blocking forever */
  cr_admin_t *admin;
  unsigned port; /* where clients connect */
  srv_mode_t mode;
  int requests, aborts;
  cr_admin_req_t *held[MAX_HELD];
  char held_target[MAX_HELD][32]; /* which request each is: connections are accepted in any order */
  int nheld;
  size_t last_body_len;
  int last_body_ok;       /* body bytes matched the expected pattern */
  char last_peer[64];
  client_t clients[MAX_CLIENTS];
  int nclients;
};

#define RUN_UNTIL(c, cond, ms)                                                      \
  do {                                                                              \
    uv_update_time(&(c)->loop);                                                     \
    uint64_t dl_ = uv_now(&(c)->loop) + (ms);                                       \
    while (!(cond) && uv_now(&(c)->loop) < dl_)                                     \
      uv_run(&(c)->loop, UV_RUN_ONCE);                                              \
    assert_true(cond);                                                              \
  } while (0)

static const char TOKEN[] = "0123456789abcdef0123456789abcdef";

/* ---------- the server side ---------- */

static int body_pattern_ok(const char *body, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (body[i] != (char)('a' + i % 26))
      return 0;
  return 1;
}

static void srv_on_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t body_len,
                           void *arg) {
  ctx_t *c = arg;
  char out[256];
  c->requests++;
  c->last_body_len = body_len;
  c->last_body_ok = body_pattern_ok(body, body_len);
  snprintf(c->last_peer, sizeof c->last_peer, "%s", cr_admin_req_peer(req));
  switch (c->mode) {
  case SRV_SYNC:
    snprintf(out, sizeof out, "got %s %s %zu", head->method, head->target, body_len);
    cr_admin_respond(req, 200, "text/plain", out, strlen(out));
    break;
  case SRV_HOLD:
    assert_true(c->nheld < MAX_HELD);
    cr_admin_req_set_data(req, c);
    snprintf(c->held_target[c->nheld], sizeof c->held_target[0], "%s", head->target);
    c->held[c->nheld++] = req;
    break;
  case SRV_AUTH:
    if (!cr_admin_bearer_ok(head, TOKEN)) {
      assert_int_equal(cr_admin_req_add_header(req, "WWW-Authenticate", "Bearer"), 0);
      assert_int_equal(cr_admin_req_add_header(req, "Bad Name", "x"), CR_EHTTP_PARSE);
      cr_admin_respond(req, 401, "application/json", "{\"error\":\"unauthorized\"}", 24);
    } else {
      cr_admin_respond(req, 200, "text/plain", "welcome", 7);
    }
    break;
  }
}

static void srv_on_abort(cr_admin_req_t *req, void *arg) {
  ctx_t *c = arg;
  c->aborts++;
  for (int i = 0; i < c->nheld; i++)
    if (c->held[i] == req)
      c->held[i] = NULL;
}

static const cr_admin_callbacks_t srv_cbs = {srv_on_request, srv_on_abort};

static void ticker_cb(uv_timer_t *t) {}

static void ctx_init(ctx_t *c, srv_mode_t mode) {
  char err[256];
  memset(c, 0, sizeof *c);
  c->mode = mode;
  assert_int_equal(uv_loop_init(&c->loop), 0);
  uv_timer_init(&c->loop, &c->ticker);
  uv_timer_start(&c->ticker, ticker_cb, 20, 20);
  assert_int_equal(cr_admin_listen(&c->loop, "127.0.0.1", 0, &srv_cbs, c, &c->admin, err, sizeof err), 0);
  c->port = cr_admin_port(c->admin);
  assert_true(c->port > 0);
}

static void client_closed(cr_stream_t *s) {
  client_t *cl = s->data;
  cl->closed = 1;
}

static void ctx_finish(ctx_t *c) {
  if (c->admin)
    cr_admin_close(c->admin);
  c->admin = NULL;
  for (int i = 0; i < c->nclients; i++) {
    client_t *cl = &c->clients[i];
    if (cl->s && !cl->closed) {
      cr_stream_close(cl->s, client_closed);
      cl->s = NULL;
    }
  }
  uv_close((uv_handle_t *)&c->ticker, NULL);
  for (int i = 0; i < 200 && uv_run(&c->loop, UV_RUN_NOWAIT); i++)
    ;
  assert_int_equal(uv_loop_close(&c->loop), 0);
  for (int i = 0; i < c->nclients; i++) {
    cr_buf_free(&c->clients[i].rx);
    free(c->clients[i].req);
    free(c->clients[i].later);
  }
}

/* ---------- raw clients ---------- */

static void client_write_done(cr_stream_t *s, int status, void *arg) {
  client_t *cl = s->data;
  if (status < 0)
    cl->err = status;
  else if (cl->close_after_send && !cl->closed && arg == NULL) {
    cr_stream_close(s, client_closed);
    cl->s = NULL;
    cl->closed = 1;
  }
}

static void client_send(client_t *cl, const char *data, size_t len, void *tag) {
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  assert_int_equal(cr_stream_write(cl->s, &b, 1, client_write_done, tag), 0);
}

static void client_on_read(cr_stream_t *s, ssize_t n, const char *data) {
  client_t *cl = s->data;
  if (n < 0) {
    if (n == UV_EOF)
      cl->eof = 1;
    else
      cl->err = (int)n;
    return;
  }
  assert_int_equal(cr_buf_append(&cl->rx, data, (size_t)n), 0);
  assert_int_equal(cr_buf_append(&cl->rx, "", 1), 0); /* keeps rx a C string for the asserts */
  cl->rx.len--;
  if (cl->later && !cl->later_sent && cl->rx.len >= 25 &&
      memmem(cl->rx.base, cl->rx.len, "HTTP/1.1 100 Continue\r\n\r\n", 25) != NULL) {
    cl->later_sent = 1;
    client_send(cl, cl->later, cl->laterlen, NULL);
  }
}

static void client_connected(cr_stream_t *s, int status) {
  client_t *cl = s->data;
  assert_int_equal(status, 0);
  cl->connected = 1;
  assert_int_equal(cr_stream_read_start(s, client_on_read), 0);
  if (cl->reqlen)
    client_send(cl, cl->req, cl->reqlen, NULL);
}

/* Starts a client that sends req (copied) once connected. */
static client_t *client_start(ctx_t *c, const char *req, size_t len) {
  client_t *cl;
  assert_true(c->nclients < MAX_CLIENTS);
  cl = &c->clients[c->nclients++];
  cl->c = c;
  cr_buf_init(&cl->rx, 4 * 1024 * 1024);
  cl->req = cr_malloc(len + 1);
  memcpy(cl->req, req, len);
  cl->reqlen = len;
  assert_int_equal(cr_tcp_connect(&c->loop, "127.0.0.1", c->port, client_connected, cl, &cl->s), 0);
  cl->s->data = cl;
  return cl;
}

static client_t *client_start_str(ctx_t *c, const char *req) { return client_start(c, req, strlen(req)); }

static int rx_has(const client_t *cl, const char *s) {
  return cl->rx.len && memmem(cl->rx.base, cl->rx.len, s, strlen(s)) != NULL;
}

static int status_of(const client_t *cl) {
  int st = 0;
  const char *p = cl->rx.base;
  size_t n = cl->rx.len;
  /* skip a 100 Continue */
  if (n >= 25 && memcmp(p, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0) {
    p += 25;
    n -= 25;
  }
  if (n >= 12 && sscanf(p, "HTTP/1.1 %d", &st) == 1)
    return st;
  return 0;
}

static const char *body_of(const client_t *cl) {
  const char *p = memmem(cl->rx.base, cl->rx.len, "\r\n\r\n", 4);
  if (p && cl->rx.len >= 25 && memcmp(cl->rx.base, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0)
    p = memmem(p + 4, cl->rx.len - (size_t)(p + 4 - cl->rx.base), "\r\n\r\n", 4);
  return p ? p + 4 : "";
}

/* ---------- tests ---------- */

static void test_sync_answer(void **state) {
  ctx_t c;
  client_t *cl;
  char want[64];
  ctx_init(&c, SRV_SYNC);
  cl = client_start_str(&c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  RUN_UNTIL(&c, cl->eof, 3000);
  assert_int_equal(status_of(cl), 200);
  assert_true(rx_has(cl, "Connection: close\r\n"));
  assert_true(rx_has(cl, "Content-Type: text/plain\r\n"));
  assert_true(rx_has(cl, "Content-Length: 18\r\n"));
  assert_true(rx_has(cl, "\r\n\r\ngot GET /healthz 0"));
  assert_int_equal(c.requests, 1);
  assert_int_equal(c.aborts, 0);
  snprintf(want, sizeof want, "127.0.0.1:");
  assert_memory_equal(c.last_peer, want, strlen(want));
  ctx_finish(&c);
}

static void test_async_answer(void **state) {
  ctx_t c;
  client_t *a, *b;
  ctx_init(&c, SRV_HOLD);
  a = client_start_str(&c, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
  b = client_start_str(&c, "DELETE /two HTTP/1.1\r\nHost: x\r\n\r\n");
  int one, two;
  RUN_UNTIL(&c, c.nheld == 2, 3000);
  one = strcmp(c.held_target[0], "/one") == 0 ? 0 : 1;
  two = 1 - one;
  assert_string_equal(c.held_target[two], "/two");
  /* Nothing is sent before the callee answers. */
  for (int i = 0; i < 5; i++)
    uv_run(&c.loop, UV_RUN_NOWAIT);
  assert_int_equal(a->rx.len, 0);
  assert_ptr_equal(cr_admin_req_data(c.held[one]), &c);
  cr_admin_respond(c.held[two], 202, "application/json", "{\"later\":true}", 14);
  cr_admin_respond(c.held[two], 500, "text/plain", "twice", 5); /* answered already: ignored */
  c.held[two] = NULL;
  RUN_UNTIL(&c, a->eof || b->eof, 3000);
  cr_admin_respond(c.held[one], 204, NULL, NULL, 0);
  c.held[one] = NULL;
  RUN_UNTIL(&c, a->eof && b->eof, 3000);
  assert_int_equal(status_of(a), 204);
  assert_true(rx_has(a, "Content-Length: 0\r\n"));
  assert_int_equal(status_of(b), 202);
  assert_string_equal(body_of(b), "{\"later\":true}");
  assert_int_equal(c.aborts, 0);
  ctx_finish(&c);
}

static char *pattern(size_t n) {
  char *p = cr_malloc(n + 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (char)('a' + i % 26);
  p[n] = 0;
  return p;
}

static void test_body_collected(void **state) {
  ctx_t c;
  client_t *cl, *ch;
  const size_t n = 300000;
  char *body = pattern(n);
  cr_buf_t req, chunked;
  ctx_init(&c, SRV_SYNC);
  cr_buf_init(&req, 0);
  cr_buf_appendf(&req, "POST /trust HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
  cr_buf_append(&req, body, n);
  cl = client_start(&c, req.base, req.len);
  RUN_UNTIL(&c, cl->eof, 3000);
  assert_int_equal(status_of(cl), 200);
  assert_string_equal(body_of(cl), "got POST /trust 300000");
  assert_int_equal(c.last_body_len, n);
  assert_true(c.last_body_ok);

  /* Chunked, in uneven chunks. */
  cr_buf_init(&chunked, 0);
  cr_buf_appendf(&chunked, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  cr_buf_appendf(&chunked, "%x\r\n", 7);
  cr_buf_append(&chunked, body, 7);
  cr_buf_appendf(&chunked, "\r\n%x\r\n", 1000);
  cr_buf_append(&chunked, body + 7, 1000);
  cr_buf_appendf(&chunked, "\r\n0\r\n\r\n");
  ch = client_start(&c, chunked.base, chunked.len);
  RUN_UNTIL(&c, ch->eof, 3000);
  assert_string_equal(body_of(ch), "got POST /c 1007");
  assert_true(c.last_body_ok);
  assert_int_equal(c.requests, 2);
  cr_buf_free(&req);
  cr_buf_free(&chunked);
  free(body);
  ctx_finish(&c);
}

static void test_expect_continue(void **state) {
  ctx_t c;
  client_t *cl;
  char *body = pattern(5000);
  const char *head = "POST /trust HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
  ctx_init(&c, SRV_SYNC);
  cl = client_start_str(&c, head);
  cl->later = body;
  cl->laterlen = 5000;
  RUN_UNTIL(&c, cl->eof, 3000);
  assert_true(cl->later_sent);
  assert_int_equal(status_of(cl), 200);
  assert_string_equal(body_of(cl), "got POST /trust 5000");
  assert_true(c.last_body_ok);
  ctx_finish(&c);
}

static void test_body_too_large(void **state) {
  ctx_t c;
  client_t *cl, *ch;
  cr_buf_t req;
  char *big = pattern(600 * 1024);
  ctx_init(&c, SRV_SYNC);
  /* Declared too large: refused at the head, before any body byte. */
  cl = client_start_str(&c, "POST /trust HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n");
  RUN_UNTIL(&c, cl->eof, 3000);
  assert_int_equal(status_of(cl), 413);
  assert_true(rx_has(cl, "Content-Type: application/json"));
  assert_true(rx_has(cl, "\"error\":\"body_too_large\""));
  /* Chunked past 1 MiB: refused when the collected body crosses it. */
  cr_buf_init(&req, 0);
  cr_buf_appendf(&req, "POST /trust HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 2; i++) {
    cr_buf_appendf(&req, "%x\r\n", 600 * 1024);
    cr_buf_append(&req, big, 600 * 1024);
    cr_buf_appendf(&req, "\r\n");
  }
  cr_buf_appendf(&req, "0\r\n\r\n");
  ch = client_start(&c, req.base, req.len);
  RUN_UNTIL(&c, ch->eof || ch->err, 5000);
  assert_int_equal(status_of(ch), 413);
  assert_int_equal(c.requests, 0);
  cr_buf_free(&req);
  free(big);
  ctx_finish(&c);
}

static void test_malformed(void **state) {
  ctx_t c;
  client_t *a, *b;
  cr_buf_t req;
  ctx_init(&c, SRV_SYNC);
  a = client_start_str(&c, "GET /x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n");
  cr_buf_init(&req, 0);
  cr_buf_appendf(&req, "GET /x HTTP/1.1\r\nHost: x\r\n");
  for (int i = 0; i < 40; i++)
    cr_buf_appendf(&req, "X-Filler-%d: %0500d\r\n", i, 0);
  cr_buf_appendf(&req, "\r\n");
  b = client_start(&c, req.base, req.len);
  RUN_UNTIL(&c, a->eof && b->eof, 3000);
  assert_int_equal(status_of(a), 400);
  assert_true(rx_has(a, "\"error\":\"bad_request\""));
  assert_int_equal(status_of(b), 400);
  assert_true(rx_has(b, "\"error\":\"header_too_large\""));
  assert_int_equal(c.requests, 0);
  cr_buf_free(&req);
  ctx_finish(&c);
}

static void test_caller_abort(void **state) {
  ctx_t c;
  client_t *cl;
  ctx_init(&c, SRV_HOLD);
  cl = client_start_str(&c, "GET /agents/x/status HTTP/1.1\r\nHost: x\r\n\r\n");
  RUN_UNTIL(&c, c.nheld == 1, 3000);
  cr_stream_close(cl->s, client_closed);
  cl->s = NULL;
  RUN_UNTIL(&c, c.aborts == 1, 3000);
  assert_null(c.held[0]);
  /* A caller gone before its request was complete is no abort: on_request never saw it. */
  cl = client_start_str(&c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
  cl->close_after_send = 1;
  RUN_UNTIL(&c, cl->closed, 3000);
  for (int i = 0; i < 10; i++)
    uv_run(&c.loop, UV_RUN_NOWAIT);
  assert_int_equal(c.requests, 1);
  assert_int_equal(c.aborts, 1);
  ctx_finish(&c);
}

static void test_close_in_flight(void **state) {
  ctx_t c;
  client_t *a, *b;
  ctx_init(&c, SRV_HOLD);
  a = client_start_str(&c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n");
  b = client_start_str(&c, "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
  RUN_UNTIL(&c, c.nheld == 2, 3000);
  cr_admin_close(c.admin);
  c.admin = NULL;
  assert_int_equal(c.aborts, 2);
  RUN_UNTIL(&c, (a->eof || a->err) && (b->eof || b->err), 3000);
  assert_int_equal(a->rx.len, 0);
  ctx_finish(&c);
}

static void test_auth_answer(void **state) {
  ctx_t c;
  client_t *none, *bad, *good;
  ctx_init(&c, SRV_AUTH);
  none = client_start_str(&c, "GET /agents HTTP/1.1\r\nHost: x\r\n\r\n");
  bad = client_start_str(&c, "GET /agents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n");
  good = client_start_str(&c, "GET /agents HTTP/1.1\r\nHost: x\r\n"
                              "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n\r\n");
  RUN_UNTIL(&c, none->eof && bad->eof && good->eof, 3000);
  assert_int_equal(status_of(none), 401);
  assert_true(rx_has(none, "WWW-Authenticate: Bearer\r\n"));
  assert_int_equal(status_of(bad), 401);
  assert_int_equal(status_of(good), 200);
  assert_false(rx_has(good, "WWW-Authenticate"));
  assert_string_equal(body_of(good), "welcome");
  ctx_finish(&c);
}

static int bearer(const char *authz1, const char *authz2, const char *token) {
  cr_http_msg_t m;
  int r;
  cr_http_msg_init(&m, 0);
  if (authz1)
    cr_http_msg_add_header(&m, "Authorization", 13, authz1, strlen(authz1));
  if (authz2)
    cr_http_msg_add_header(&m, "authorization", 13, authz2, strlen(authz2));
  r = cr_admin_bearer_ok(&m, token);
  cr_http_msg_free(&m);
  return r;
}

static void test_bearer(void **state) {
  assert_true(bearer("Bearer 0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_true(bearer("bearer 0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_true(bearer("Bearer   0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_false(bearer(NULL, NULL, TOKEN));
  assert_false(bearer("Bearer 0123456789abcdef0123456789abcdeF", NULL, TOKEN));
  assert_false(bearer("Bearer 0123456789abcdef0123456789abcde", NULL, TOKEN));   /* prefix */
  assert_false(bearer("Bearer 0123456789abcdef0123456789abcdef0", NULL, TOKEN)); /* longer */
  assert_false(bearer("Bearer ", NULL, TOKEN));
  assert_false(bearer("Basic 0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_false(bearer("0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_false(bearer("Bearer0123456789abcdef0123456789abcdef", NULL, TOKEN));
  assert_false(bearer("Bearer 0123456789abcdef0123456789abcdef", "Bearer x", TOKEN)); /* two */
  assert_false(bearer("Bearer ", NULL, ""));
  assert_false(bearer("Bearer x", NULL, NULL));
}

static void test_listen_error(void **state) {
  uv_loop_t loop;
  cr_admin_t *a = NULL, *b = (cr_admin_t *)1;
  char err[256] = "";
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(cr_admin_listen(&loop, "127.0.0.1", 0, &srv_cbs, NULL, &a, err, sizeof err), 0);
  assert_true(cr_admin_listen(&loop, "127.0.0.1", cr_admin_port(a), &srv_cbs, NULL, &b, err, sizeof err) < 0);
  assert_null(b);
  assert_true(err[0] != '\0');
  cr_admin_close(a);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---------- the gateway's admin API over a tunnel pair ---------- */

typedef enum {
  AG_ECHO,  /* read the body, then answer 201 {"got":N,"ok":true|false} */
  AG_RESET, /* reset the stream at once */
  AG_HOLD,  /* answer nothing */
  AG_BIG,   /* answer 200 with a body of 1 MiB + 1 */
  AG_TEXT   /* read the body, then answer 200 text/plain that is not JSON */
} ag_mode_t;

#define BIG_ANSWER (1024 * 1024 + 1)

typedef struct gctx {
  ctx_t c; /* loop and clients; c.port is the admin API's */
  cr_listener_t *lis;
  cr_tunnel_t *gw, *ag;
  int gw_closed, ag_closed;
  cr__gw_admin_t *ga;
  cr_conf_gateway_t conf;
  ag_mode_t mode;
  int fan;        /* the tunnel walk reports the one tunnel as several, of two agent processes */
  int reset_nth;  /* the agent resets its nth stream (counted from 1); 0: none */
  int streams, streams_closed, stream_close_err;
  char method[16], target[256], host[64], by[96], ctype[64], rid[80];
  int64_t content_length;
  size_t rx;
  int rx_ok;
  size_t big_sent;
} gctx_t;

void cr__gateway_foreach_tunnel(struct gateway *gw, void (*visit)(const cr__gw_tunnel_info_t *info, void *arg),
                                void *arg) {
  gctx_t *g = (gctx_t *)(void *)gw;
  if (g->gw && !g->gw_closed) {
    cr__gw_tunnel_info_t info = {"acme-agent-1", "acme", "127.0.0.1:1", g->gw, "kept", ""};
    if (g->fan) {
      /* process aaaa has two tunnels, bbbb one; a tunnel not yet announced is most likely one more of
       * theirs; an unrelated agent is not touched */
      cr__gw_tunnel_info_t more[] = {
          {"acme-agent-1", "acme", "127.0.0.1:1", g->gw, "kept", "aaaa"},
          {"acme-agent-1", "acme", "127.0.0.1:2", g->gw, "kept", "bbbb"},
          {"acme-agent-1", "acme", "127.0.0.1:3", g->gw, "pending", ""},
          {"acme-agent-1", "acme", "127.0.0.1:4", g->gw, "kept", "aaaa"},
          {"other-agent", "acme", "127.0.0.1:5", g->gw, "kept", "cccc"},
      };
      for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        visit(&more[i], arg);
      return;
    }
    visit(&info, arg);
  }
}

/* The gateway's exposition, as this test's stand-in gateway has it (the admin API only relays it). */
void cr__gateway_metrics(struct gateway *gw, cr_buf_t *out) {
  (void)gw;
  cr_metrics_family(out, "ccrelay_test_total", "counter", "A stand-in.");
  cr_metrics_u64(out, "ccrelay_test_total", NULL, 0, 1);
}

static void copy_hdr(char *out, size_t outlen, const cr_http_msg_t *m, const char *name) {
  const char *v = cr_http_msg_get(m, name);
  snprintf(out, outlen, "%s", v ? v : "");
}

static void ag_pump_big(gctx_t *g, cr_tstream_t *ts) {
  static char chunk[16384];
  while (g->big_sent < BIG_ANSWER) {
    size_t n = CR_MIN(sizeof chunk, BIG_ANSWER - g->big_sent);
    int r = cr_tstream_write(ts, chunk, n);
    if (r < 0)
      return; /* reset by the gateway meanwhile */
    g->big_sent += n;
    if (r == 1)
      return;
  }
  cr_tstream_end(ts);
}

static void ag_data(cr_tstream_t *ts, const char *d, size_t n) {
  gctx_t *g = cr_tstream_data(ts);
  for (size_t i = 0; i < n; i++)
    if (d[i] != (char)('a' + (g->rx + i) % 26))
      g->rx_ok = 0;
  g->rx += n;
  cr_tstream_consume(ts, n);
}

static void ag_end(cr_tstream_t *ts) {
  gctx_t *g = cr_tstream_data(ts);
  cr_http_msg_t head;
  char body[64];
  if (g->mode != AG_ECHO && g->mode != AG_TEXT)
    return;
  if (g->mode == AG_TEXT)
    snprintf(body, sizeof body, "{\"got\":%zu} \"tail\"\n", g->rx);
  else
    snprintf(body, sizeof body, "{\"got\":%zu,\"ok\":%s}", g->rx, g->rx_ok ? "true" : "false");
  cr_http_msg_init(&head, 0);
  head.status = 201;
  head.content_length = (int64_t)strlen(body);
  cr_http_msg_add_header(&head, "content-type", 12, "application/json", 16);
  assert_int_equal(cr_tstream_respond(ts, &head, 1), 0);
  assert_true(cr_tstream_write(ts, body, strlen(body)) >= 0);
  cr_tstream_end(ts);
  cr_http_msg_free(&head);
}

static void ag_writable(cr_tstream_t *ts) {
  gctx_t *g = cr_tstream_data(ts);
  if (g->mode == AG_BIG)
    ag_pump_big(g, ts);
}

static void ag_stream_close(cr_tstream_t *ts, int error) {
  gctx_t *g = cr_tstream_data(ts);
  g->streams_closed++;
  g->stream_close_err = error;
}

static const cr_tstream_callbacks_t ag_stream_cbs = {
    .on_data = ag_data, .on_end = ag_end, .on_writable = ag_writable, .on_close = ag_stream_close};

static void ag_on_stream(cr_tunnel_t *t, cr_tstream_t *ts, cr_http_msg_t *head) {
  gctx_t *g = cr_tunnel_data(t);
  g->streams++;
  g->rx = 0;
  g->rx_ok = 1;
  snprintf(g->method, sizeof g->method, "%s", head->method);
  snprintf(g->target, sizeof g->target, "%s", head->target);
  copy_hdr(g->host, sizeof g->host, head, "host");
  copy_hdr(g->by, sizeof g->by, head, "x-ccrelay-requested-by");
  copy_hdr(g->ctype, sizeof g->ctype, head, "content-type");
  copy_hdr(g->rid, sizeof g->rid, head, "x-request-id");
  g->content_length = head->content_length;
  cr_tstream_set_callbacks(ts, &ag_stream_cbs, g);
  if (g->mode == AG_RESET || g->streams == g->reset_nth) {
    cr_tstream_reset(ts);
  } else if (g->mode == AG_BIG) {
    cr_http_msg_t h;
    cr_http_msg_init(&h, 0);
    h.status = 200;
    assert_int_equal(cr_tstream_respond(ts, &h, 1), 0);
    cr_http_msg_free(&h);
    ag_pump_big(g, ts);
  }
}

static void pair_closed(cr_tunnel_t *t, int error) {
  gctx_t *g = cr_tunnel_data(t);
  if (t == g->gw)
    g->gw_closed = 1;
  else
    g->ag_closed = 1;
}

static const cr_tunnel_callbacks_t pair_gw_cbs = {.on_close = pair_closed};
static const cr_tunnel_callbacks_t pair_ag_cbs = {.on_stream = ag_on_stream, .on_close = pair_closed};

static void pair_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  gctx_t *g = arg;
  cr_tunnel_opts_t o = {.role = CR_TUNNEL_GATEWAY};
  g->gw = cr_tunnel_new(conn, &o, &pair_gw_cbs, g);
  assert_int_equal(cr_tunnel_start(g->gw), 0);
  cr_listener_close(l);
  g->lis = NULL;
}

static void pair_connect(cr_stream_t *s, int status) {
  gctx_t *g = s->data;
  cr_tunnel_opts_t o = {.role = CR_TUNNEL_AGENT};
  assert_int_equal(status, 0);
  g->ag = cr_tunnel_new(s, &o, &pair_ag_cbs, g);
  assert_int_equal(cr_tunnel_start(g->ag), 0);
}

static gctx_t *gw_setup(ag_mode_t mode) {
  gctx_t *g = cr_calloc(1, sizeof *g);
  cr_stream_t *dial;
  char err[256];
  g->mode = mode;
  memset(&g->c, 0, sizeof g->c);
  assert_int_equal(uv_loop_init(&g->c.loop), 0);
  uv_timer_init(&g->c.loop, &g->c.ticker);
  uv_timer_start(&g->c.ticker, ticker_cb, 20, 20);
  assert_int_equal(cr_tcp_listen(&g->c.loop, "127.0.0.1", 0, 4, pair_accept, g, &g->lis, err, sizeof err), 0);
  assert_int_equal(cr_tcp_connect(&g->c.loop, "127.0.0.1", cr_listener_port(g->lis), pair_connect, g, &dial), 0);
  RUN_UNTIL(&g->c, g->gw && g->ag, 2000);
  g->conf.path = (char *)"gateway-test.yaml";
  g->conf.admin_listen.host = (char *)"127.0.0.1";
  g->conf.admin_listen.port = 0;
  g->conf.admin_token = (char *)TOKEN;
  assert_int_equal(cr__gw_admin_start((struct gateway *)(void *)g, &g->c.loop, &g->conf, &g->ga), 0);
  g->c.port = cr__gw_admin_port(g->ga);
  return g;
}

static void gw_teardown(gctx_t *g) {
  if (g->ga)
    cr__gw_admin_stop(g->ga);
  g->ga = NULL;
  if (!g->gw_closed)
    cr_tunnel_close(g->gw, 0);
  if (!g->ag_closed)
    cr_tunnel_close(g->ag, 0);
  RUN_UNTIL(&g->c, g->gw_closed && g->ag_closed, 2000);
  ctx_finish(&g->c);
  free(g);
}

#define AUTH "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n"

static client_t *gw_call(gctx_t *g, const char *method, const char *path, const char *extra) {
  char req[1024];
  snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: admin\r\n%s%s\r\n", method, path, AUTH, extra ? extra : "");
  return client_start_str(&g->c, req);
}

static void test_gw_admin_routes(void **state) {
  gctx_t *g = gw_setup(AG_ECHO);
  client_t *noauth, *list, *badname, *unknown, *put, *nothing, *badfp, *st;
  noauth = client_start_str(&g->c, "GET /agents HTTP/1.1\r\nHost: admin\r\n\r\n");
  list = gw_call(g, "GET", "/agents", NULL);
  badname = gw_call(g, "GET", "/agents/acme%2Fx/trust", NULL);
  unknown = gw_call(g, "GET", "/agents/other-agent/trust", NULL);
  put = gw_call(g, "PUT", "/agents/acme-agent-1/trust", NULL);
  nothing = gw_call(g, "GET", "/agents/acme-agent-1/nothing", NULL);
  badfp = gw_call(g, "DELETE", "/agents/acme-agent-1/trust/ab..cd", NULL);
  RUN_UNTIL(&g->c, noauth->eof && list->eof && badname->eof && unknown->eof && put->eof && nothing->eof && badfp->eof,
            3000);
  assert_int_equal(status_of(noauth), 401);
  assert_true(rx_has(noauth, "WWW-Authenticate: Bearer\r\n"));
  assert_int_equal(status_of(list), 200);
  assert_string_equal(body_of(list), "{\"tunnels\":[{\"agent\":\"acme-agent-1\",\"group\":\"acme\",\"peer\":"
                                     "\"127.0.0.1:1\",\"streams\":0,\"usable\":true}]}\n");
  assert_int_equal(status_of(badname), 400);
  assert_int_equal(status_of(unknown), 404);
  assert_true(rx_has(unknown, "\"error\":\"unknown_agent\""));
  assert_int_equal(status_of(put), 405);
  assert_true(rx_has(put, "Allow: GET, POST\r\n"));
  assert_int_equal(status_of(nothing), 404);
  assert_int_equal(status_of(badfp), 400);
  assert_int_equal(g->streams, 0); /* none of these reached the agent */

  st = gw_call(g, "GET", "/agents/acme-agent-1/status?verbose=1", NULL);
  RUN_UNTIL(&g->c, st->eof, 3000);
  assert_int_equal(status_of(st), 201);
  assert_true(rx_has(st, "Content-Type: application/json\r\n"));
  assert_string_equal(body_of(st), "{\"got\":0,\"ok\":true}");
  assert_string_equal(g->method, "GET");
  assert_string_equal(g->target, "/.well-known/ccrelay/status");
  assert_string_equal(g->host, "ccrelay-control");
  assert_memory_equal(g->by, "admin 127.0.0.1:", 16);
  assert_true(g->rid[0] != '\0');
  gw_teardown(g);
}

static void test_gw_admin_post_and_delete(void **state) {
  gctx_t *g = gw_setup(AG_ECHO);
  const size_t n = 600 * 1024; /* several times the tunnel stream's send buffer */
  char *body = pattern(n);
  cr_buf_t req;
  client_t *post, *del;
  char want[64];
  cr_buf_init(&req, 0);
  cr_buf_appendf(&req, "POST /agents/acme-agent-1/trust HTTP/1.1\r\nHost: admin\r\n" AUTH
                       "Content-Type: application/x-pem-file\r\nContent-Length: %zu\r\n\r\n", n);
  cr_buf_append(&req, body, n);
  post = client_start(&g->c, req.base, req.len);
  RUN_UNTIL(&g->c, post->eof, 5000);
  assert_int_equal(status_of(post), 201); /* the one process's status */
  snprintf(want, sizeof want, "\"answer\":{\"got\":%zu,\"ok\":true}}]}", n);
  assert_non_null(strstr(body_of(post), want));
  assert_non_null(strstr(body_of(post), "\"reached\":1,\"succeeded\":1,\"failed\":0,"));
  assert_non_null(strstr(body_of(post), "\"agents\":[{\"instance\":null,\"peer\":\"127.0.0.1:1\",\"tunnels\":1,"
                                        "\"status\":201,"));
  assert_string_equal(g->method, "POST");
  assert_string_equal(g->target, "/.well-known/ccrelay/trust");
  assert_string_equal(g->ctype, "application/x-pem-file");
  assert_int_equal(g->content_length, (int64_t)n);

  del = gw_call(g, "DELETE", "/agents/acme-agent-1/trust/sha256:AB12cd", NULL);
  RUN_UNTIL(&g->c, del->eof, 3000);
  assert_int_equal(status_of(del), 201);
  assert_string_equal(g->method, "DELETE");
  assert_string_equal(g->target, "/.well-known/ccrelay/trust/sha256:AB12cd");
  assert_int_equal(g->content_length, 0);
  RUN_UNTIL(&g->c, g->streams_closed == 2, 2000);
  assert_int_equal(g->stream_close_err, 0);
  cr_buf_free(&req);
  free(body);
  gw_teardown(g);
}

static void test_gw_admin_stream_failures(void **state) {
  gctx_t *g = gw_setup(AG_RESET);
  client_t *reset, *big, *gone;
  reset = gw_call(g, "GET", "/agents/acme-agent-1/trust", NULL);
  RUN_UNTIL(&g->c, reset->eof, 3000);
  assert_int_equal(status_of(reset), 502);
  assert_true(rx_has(reset, "\"error\":{\"code\":\"tunnel_stream_failed\""));

  g->mode = AG_BIG;
  big = gw_call(g, "GET", "/agents/acme-agent-1/trust", NULL);
  RUN_UNTIL(&g->c, big->eof, 5000);
  assert_int_equal(status_of(big), 502);
  assert_true(rx_has(big, "\"error\":{\"code\":\"answer_too_large\""));
  RUN_UNTIL(&g->c, g->streams_closed == 2, 2000);

  /* The tunnel goes away during a call. */
  g->mode = AG_HOLD;
  gone = gw_call(g, "GET", "/agents/acme-agent-1/status", NULL);
  RUN_UNTIL(&g->c, g->streams == 3, 3000);
  cr_tunnel_close(g->gw, CR_ECLOSED);
  RUN_UNTIL(&g->c, gone->eof, 3000);
  assert_int_equal(status_of(gone), 502);
  gw_teardown(g);
}

static void test_gw_admin_caller_leaves(void **state) {
  gctx_t *g = gw_setup(AG_HOLD);
  client_t *a, *b;
  a = gw_call(g, "DELETE", "/agents/acme-agent-1/trust/abcd", NULL);
  RUN_UNTIL(&g->c, g->streams == 1, 3000);
  cr_stream_close(a->s, client_closed);
  a->s = NULL;
  RUN_UNTIL(&g->c, g->streams_closed == 1, 3000); /* the control stream is reset */
  assert_int_equal(g->stream_close_err, UV_ECONNRESET);

  /* The admin API stops (drain) with a call in flight: the caller's connection closes, the
   * stream is reset. */
  b = gw_call(g, "GET", "/agents/acme-agent-1/trust", NULL);
  RUN_UNTIL(&g->c, g->streams == 2, 3000);
  cr__gw_admin_stop(g->ga);
  g->ga = NULL;
  RUN_UNTIL(&g->c, (b->eof || b->err) && g->streams_closed == 2, 3000);
  assert_int_equal(b->rx.len, 0);
  gw_teardown(g);
}

/* Trust calls go once to every agent process of the name (not once per tunnel), status to one; the
 * answer has a result per process, and its status says whether all succeeded. */
static void test_gw_admin_fanout(void **state) {
  gctx_t *g = gw_setup(AG_ECHO);
  client_t *del, *st, *mixed, *list;
  const char *b;
  g->fan = 1;
  list = gw_call(g, "GET", "/agents", NULL);
  RUN_UNTIL(&g->c, list->eof, 3000);
  assert_non_null(strstr(body_of(list), "\"peer\":\"127.0.0.1:2\",\"streams\":0,\"usable\":true,"
                                         "\"instance\":\"bbbb\"}"));

  del = gw_call(g, "DELETE", "/agents/acme-agent-1/trust/abcd", NULL);
  RUN_UNTIL(&g->c, del->eof, 3000);
  assert_int_equal(g->streams, 2);
  assert_int_equal(status_of(del), 201);
  b = body_of(del);
  assert_non_null(strstr(b, "\"agent\":\"acme-agent-1\",\"request_id\":\""));
  assert_non_null(strstr(b, "\"reached\":2,\"succeeded\":2,\"failed\":0,\"note\":\""));
  assert_non_null(strstr(b, "{\"instance\":\"aaaa\",\"peer\":\"127.0.0.1:1\",\"tunnels\":2,\"status\":201,"
                            "\"answer\":{\"got\":0,\"ok\":true}}"));
  assert_non_null(strstr(b, "{\"instance\":\"bbbb\",\"peer\":\"127.0.0.1:2\",\"tunnels\":1,\"status\":201,"
                            "\"answer\":{\"got\":0,\"ok\":true}}"));
  assert_null(strstr(b, "cccc"));
  assert_string_equal(g->target, "/.well-known/ccrelay/trust/abcd");

  st = gw_call(g, "GET", "/agents/acme-agent-1/status", NULL);
  RUN_UNTIL(&g->c, st->eof, 3000);
  assert_int_equal(g->streams, 3); /* one process */
  assert_string_equal(body_of(st), "{\"got\":0,\"ok\":true}");

  /* One process fails (its stream is reset), the other answers: 502 with both results. */
  g->reset_nth = 5;
  mixed = gw_call(g, "GET", "/agents/acme-agent-1/trust", NULL);
  RUN_UNTIL(&g->c, mixed->eof, 3000);
  assert_int_equal(g->streams, 5);
  assert_int_equal(status_of(mixed), 502);
  b = body_of(mixed);
  assert_non_null(strstr(b, "\"reached\":2,\"succeeded\":1,\"failed\":1,"));
  assert_non_null(strstr(b, "\"status\":502,\"error\":{\"code\":\"tunnel_stream_failed\""));
  assert_non_null(strstr(b, "\"status\":201,\"answer\":{\"got\":0,\"ok\":true}}"));
  RUN_UNTIL(&g->c, g->streams_closed == 5, 2000);

  /* An answer that is not one JSON value is carried as a string. */
  g->mode = AG_TEXT;
  g->fan = 0;
  list = gw_call(g, "GET", "/agents/acme-agent-1/trust", NULL);
  RUN_UNTIL(&g->c, list->eof, 3000);
  assert_int_equal(status_of(list), 201);
  assert_non_null(strstr(body_of(list), "\"status\":201,\"answer_text\":\"{\\\"got\\\":0} \\\"tail\\\"\\u000a\"}]}"));
  gw_teardown(g);
}

/* POST /reload: served only once the gateway hooked its reload in; the answer carries the outcome and
 * the counters; the token is the one of the configuration in force (cr__gw_admin_set_conf). */
typedef struct fake_reload {
  int calls, fail;
  uint64_t ok, failed;
} fake_reload_t;

static int fake_reload(void *arg, char *msg, size_t msglen, uint64_t *ok, uint64_t *failed) {
  fake_reload_t *f = arg;
  f->calls++;
  if (f->fail) {
    f->failed++;
    snprintf(msg, msglen, "gateway.yaml:3:7: \"services\": bad");
  } else {
    f->ok++;
    snprintf(msg, msglen, "reloaded");
  }
  *ok = f->ok;
  *failed = f->failed;
  return f->fail ? CR_ECONFIG : 0;
}

static void test_gw_admin_reload(void **state) {
  gctx_t *g = gw_setup(AG_ECHO);
  fake_reload_t f = {0, 0, 0, 0};
  cr_conf_gateway_t next;
  client_t *c;
  (void)state;
  c = gw_call(g, "POST", "/reload", NULL);
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 404); /* no reload hooked in */
  cr__gw_admin_on_reload(g->ga, fake_reload, &f);
  c = gw_call(g, "GET", "/reload", NULL);
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 405);
  c = client_start_str(&g->c, "POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n");
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 401);
  assert_int_equal(f.calls, 0);
  c = gw_call(g, "POST", "/reload", "Content-Length: 0\r\n");
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 200);
  assert_string_equal(body_of(c), "{\"reloaded\":true,\"message\":\"reloaded\",\"reloads_ok\":1,\"reloads_failed\":0}\n");
  f.fail = 1;
  c = gw_call(g, "POST", "/reload", "Content-Length: 0\r\n");
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 422);
  assert_string_equal(body_of(c), "{\"reloaded\":false,\"message\":\"gateway.yaml:3:7: \\\"services\\\": bad\","
                                  "\"reloads_ok\":1,\"reloads_failed\":1}\n");
  assert_int_equal(f.calls, 2);
  /* A reload that changed the token: the old one no longer opens the API. */
  next = g->conf;
  next.admin_token = (char *)"fedcba9876543210fedcba9876543210";
  cr__gw_admin_set_conf(g->ga, &next);
  c = gw_call(g, "GET", "/agents", NULL);
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 401);
  c = client_start_str(&g->c, "GET /agents HTTP/1.1\r\nHost: admin\r\n"
                              "Authorization: Bearer fedcba9876543210fedcba9876543210\r\n\r\n");
  RUN_UNTIL(&g->c, c->eof, 3000);
  assert_int_equal(status_of(c), 200);
  cr__gw_admin_set_conf(g->ga, &g->conf);
  assert_int_equal(g->streams, 0);
  gw_teardown(g);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sync_answer),     cmocka_unit_test(test_async_answer),
      cmocka_unit_test(test_body_collected),  cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_body_too_large),  cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_caller_abort),    cmocka_unit_test(test_close_in_flight),
      cmocka_unit_test(test_auth_answer),     cmocka_unit_test(test_bearer),
      cmocka_unit_test(test_listen_error),    cmocka_unit_test(test_gw_admin_routes),
      cmocka_unit_test(test_gw_admin_post_and_delete), cmocka_unit_test(test_gw_admin_stream_failures),
      cmocka_unit_test(test_gw_admin_caller_leaves),  cmocka_unit_test(test_gw_admin_fanout),
      cmocka_unit_test(test_gw_admin_reload),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

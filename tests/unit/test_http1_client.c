/* SPDX-License-Identifier: Apache-2.0 */
/* The HTTP/1 client exchange over an in-memory stream pair (mem_stream.h): no sockets, no TLS. The
 * test plays the server on the other end, reading the request bytes and writing responses by hand. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"
#include "ccrelay/http1_client.h"
#include "ccrelay/http_msg.h"
#include "mem_stream.h"

#define PEER "mem-server:443 (server name test)"

typedef struct fx {
  uv_loop_t loop;
  cr_h1client_ctx_t *ctx;
  cr_stream_t *cli; /* the client's end, while the client has not given it back for closing */
  cr_stream_t *srv;
  cr_buf_t srv_in; /* request bytes the server end read */
  int srv_eof;
  cr_h1client_t *c;
  cr_http_msg_t req;
  int status, heads, bodies, ends, errors, writables, releases, reusable;
  int released_before_end;
  int err;
  char detail[512];
  cr_buf_t body;
  /* behaviour */
  int pause_in_head;
  int cancel_in_body;
  int cancel_in_interim;
  int interims;
  int interim_status[32];
  int interim_before_head; /* every interim came before on_head */
  char interim_link[128];
  int timed_out;
  uv_timer_t guard;
} fx_t;

static fx_t *fx_of(cr_h1client_t *c) { return cr_h1client_data(c); }

static void on_head(cr_h1client_t *c, cr_http_msg_t *m) {
  fx_t *f = fx_of(c);
  f->heads++;
  f->status = m->status;
  if (f->pause_in_head)
    cr_h1client_pause(c, 1);
}

static void on_body(cr_h1client_t *c, const char *data, size_t len) {
  fx_t *f = fx_of(c);
  f->bodies++;
  assert_int_equal(cr_buf_append(&f->body, data, len), 0);
  if (f->cancel_in_body) {
    cr_h1client_cancel(c);
    f->c = NULL;
  }
}

static void on_end(cr_h1client_t *c) {
  fx_t *f = fx_of(c);
  f->ends++;
  f->released_before_end = f->releases > 0;
  f->c = NULL;
}

static void on_error(cr_h1client_t *c, int err, const char *detail) {
  fx_t *f = fx_of(c);
  f->errors++;
  f->err = err;
  snprintf(f->detail, sizeof f->detail, "%s", detail);
  f->c = NULL;
}

static void on_writable(cr_h1client_t *c) { fx_of(c)->writables++; }

static void on_interim(cr_h1client_t *c, const cr_http_msg_t *m) {
  fx_t *f = fx_of(c);
  const char *link = cr_http_msg_get(m, "link");
  if (f->interims == 0)
    f->interim_before_head = 1;
  if (f->heads > 0)
    f->interim_before_head = 0;
  if (f->interims < 32)
    f->interim_status[f->interims] = m->status;
  f->interims++;
  if (link)
    snprintf(f->interim_link, sizeof f->interim_link, "%s", link);
  if (f->cancel_in_interim) {
    cr_h1client_cancel(c);
    f->c = NULL;
  }
}

static const cr_h1client_callbacks_t cbs = {on_head, on_body, on_end, on_error, on_writable, on_interim};

static void on_release(cr_stream_t *s, int reusable, void *arg) {
  fx_t *f = arg;
  f->releases++;
  f->reusable = reusable;
  if (!reusable) {
    cr_stream_close(s, NULL);
    f->cli = NULL;
  }
}

static void srv_read(cr_stream_t *s, ssize_t n, const char *data) {
  fx_t *f = s->data;
  if (n < 0) {
    f->srv_eof = 1;
    return;
  }
  assert_int_equal(cr_buf_append(&f->srv_in, data, (size_t)n), 0);
}

static void fx_init(fx_t *f, uint64_t timeout_ms) {
  cr_h1client_ctx_opts_t o = {.name = "test", .peer = PEER, .peer_log = "mem-server:443",
                              .response_timeout_ms = timeout_ms};
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->guard);
  f->guard.data = f;
  f->ctx = cr_h1client_ctx_new(&f->loop, &o);
  mem_pair(&f->loop, &f->cli, &f->srv);
  f->srv->data = f;
  assert_int_equal(cr_stream_read_start(f->srv, srv_read), 0);
  cr_buf_init(&f->srv_in, 0);
  cr_buf_init(&f->body, 0);
  cr_http_msg_init(&f->req, 0);
}

static void on_guard(uv_timer_t *t) { ((fx_t *)t->data)->timed_out = 1; }

/* Runs the loop until cond holds, for at most 3 s. Turn by turn (UV_RUN_ONCE would also run the
 * timers due after its poll, and cond must be checked before a timeout it could race). */
#define RUN_UNTIL(f, cond)                                                                                        \
  do {                                                                                                            \
    (f)->timed_out = 0;                                                                                           \
    uv_timer_start(&(f)->guard, on_guard, 3000, 0);                                                               \
    while (!(cond) && !(f)->timed_out) {                                                                          \
      uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                                          \
      if (!(cond))                                                                                                \
        uv_sleep(1);                                                                                              \
    }                                                                                                             \
    uv_timer_stop(&(f)->guard);                                                                                   \
    assert_true(cond);                                                                                            \
  } while (0)

/* A few loop turns, for checking that nothing happens. */
static void turns(fx_t *f, int n) {
  for (int i = 0; i < n; i++)
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static void fx_request(fx_t *f, const char *method, int64_t content_length, int has_body) {
  cr_http_msg_reset(&f->req);
  cr_http_msg_set_method(&f->req, method, strlen(method));
  cr_http_msg_set_target(&f->req, "/x?y=1", 6);
  assert_int_equal(cr_http_msg_add_header(&f->req, "Host", 4, "test", 4), 0);
  f->req.content_length = content_length;
  assert_int_equal(cr_h1client_new(f->ctx, &f->req, has_body, &cbs, f, &f->c), 0);
  cr_h1client_attach(f->c, f->cli, 0, on_release, f);
}

static void srv_send(fx_t *f, const char *s) {
  uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
  assert_int_equal(cr_stream_write(f->srv, &b, 1, NULL, NULL), 0); /* mem copies at once */
}

static void fx_done(fx_t *f) {
  if (f->c != NULL)
    cr_h1client_cancel(f->c);
  if (f->cli != NULL)
    cr_stream_close(f->cli, NULL);
  if (f->srv != NULL)
    cr_stream_close(f->srv, NULL);
  cr_h1client_ctx_free(f->ctx);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  cr_buf_free(&f->srv_in);
  cr_buf_free(&f->body);
  cr_http_msg_free(&f->req);
}

static int srv_has(fx_t *f, const char *s) {
  return f->srv_in.len > 0 && memmem(f->srv_in.base, f->srv_in.len, s, strlen(s)) != NULL;
}

/* ---- tests ---- */

static void test_simple_response(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  assert_true(srv_has(&f, "GET /x?y=1 HTTP/1.1\r\n"));
  assert_true(srv_has(&f, "Host: test\r\n"));
  assert_false(srv_has(&f, "Content-Length")); /* a GET without body announces none */
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.heads, 1);
  assert_int_equal(f.status, 200);
  assert_int_equal(f.body.len, 5);
  assert_memory_equal(f.body.base, "hello", 5);
  assert_int_equal(f.errors, 0);
  /* The stream is handed back reusable before on_end, so on_end could already reuse it. */
  assert_int_equal(f.releases, 1);
  assert_int_equal(f.reusable, 1);
  assert_true(f.released_before_end);

  /* A second exchange on the same stream: the recycled exchange and its parser start clean. */
  cr_buf_reset(&f.srv_in);
  cr_buf_reset(&f.body);
  fx_request(&f, "POST", 3, 1);
  assert_int_equal(cr_h1client_write(f.c, "abc", 3), 0);
  RUN_UNTIL(&f, srv_has(&f, "abc"));
  assert_true(srv_has(&f, "Content-Length: 3\r\n"));
  srv_send(&f, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok");
  RUN_UNTIL(&f, f.ends == 2);
  assert_int_equal(f.status, 201);
  assert_memory_equal(f.body.base, "ok", 2);
  assert_int_equal(f.reusable, 1);
  fx_done(&f);
}

static void test_chunked_response(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  mem_read_chunk(f.cli, 7); /* the chunk framing arrives cut at odd places */
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n");
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.body.len, 12);
  assert_memory_equal(f.body.base, "hello, world", 12);
  assert_int_equal(f.reusable, 1);
  fx_done(&f);
}

static void test_close_delimited(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\n\r\nuntil the end");
  RUN_UNTIL(&f, f.bodies > 0);
  assert_int_equal(f.ends, 0); /* no length: only the close ends it */
  assert_int_equal(cr_stream_shutdown(f.srv, NULL, NULL), 0);
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.errors, 0);
  assert_memory_equal(f.body.base, "until the end", 13);
  assert_int_equal(f.releases, 1);
  assert_int_equal(f.reusable, 0); /* a connection that ended cannot carry another exchange */
  fx_done(&f);
}

static void test_bodiless_responses(void **state) {
  static const struct {
    const char *method;
    const char *response;
  } cases[] = {
      {"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"},
      {"HEAD", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"GET", "HTTP/1.1 204 No Content\r\n\r\n"},
      {"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"},
      {"GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"},
  };
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fx_t f;
    fx_init(&f, 1000);
    fx_request(&f, cases[i].method, -1, 0);
    RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
    srv_send(&f, cases[i].response);
    RUN_UNTIL(&f, f.ends == 1);
    assert_int_equal(f.heads, 1); /* the 100 is not passed on */
    assert_int_equal(f.body.len, 0);
    assert_int_equal(f.errors, 0);
    assert_int_equal(f.reusable, 1);
    fx_done(&f);
  }
}

/* What the server end received, parsed as a request: its body, de-chunked. */
static int req_body_cb(void *ud, const char *data, size_t len) { return cr_buf_append(ud, data, len); }

static void parse_request(fx_t *f, cr_buf_t *body, int *chunked) {
  cr_http1_callbacks_t pc = {.on_body = req_body_cb};
  cr_http1_parser_t *p = cr_http1_parser_new(CR_HTTP1_REQUEST, NULL, &pc, body);
  assert_int_equal(cr_http1_parse(p, f->srv_in.base, f->srv_in.len), (ssize_t)f->srv_in.len);
  assert_false(cr_http1_parser_in_message(p));
  *chunked = srv_has(f, "Transfer-Encoding: chunked\r\n");
  cr_http1_parser_free(p);
}

static void test_request_body_backpressure(void **state) {
  enum { PIECE = 8192, TOTAL = 40 * PIECE };
  char piece[PIECE];
  cr_buf_t got;
  size_t sent = 0;
  int rc = 0, chunked;
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "POST", -1, 1); /* unknown length: chunked */
  mem_hold_writes(f.cli, 1);     /* the peer reads nothing: writes stay in flight */
  while (sent < TOTAL && rc == 0) {
    for (size_t i = 0; i < PIECE; i++)
      piece[i] = (char)('a' + (sent + i) % 26);
    rc = cr_h1client_write(f.c, piece, PIECE);
    sent += PIECE;
    turns(&f, 1);
  }
  assert_int_equal(rc, 1); /* bounded: the writer is told to pause */
  assert_true(sent < TOTAL);
  turns(&f, 3);
  assert_int_equal(f.writables, 0);
  mem_hold_writes(f.cli, 0);
  RUN_UNTIL(&f, f.writables == 1);
  while (sent < TOTAL) {
    for (size_t i = 0; i < PIECE; i++)
      piece[i] = (char)('a' + (sent + i) % 26);
    if (cr_h1client_write(f.c, piece, PIECE) == 1)
      RUN_UNTIL(&f, f.writables == 2);
    sent += PIECE;
  }
  assert_int_equal(cr_h1client_end(f.c), 0);
  assert_int_equal(cr_h1client_write(f.c, "x", 1), UV_EINVAL);
  RUN_UNTIL(&f, srv_has(&f, "0\r\n\r\n"));
  cr_buf_init(&got, 0);
  parse_request(&f, &got, &chunked);
  assert_true(chunked);
  assert_int_equal(got.len, TOTAL);
  for (size_t i = 0; i < TOTAL; i++)
    if (got.base[i] != (char)('a' + i % 26))
      fail_msg("body byte %zu differs", i);
  cr_buf_free(&got);
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.reusable, 1);
  fx_done(&f);
}

static void test_content_length_body_rules(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "PUT", 4, 1);
  assert_int_equal(cr_h1client_write(f.c, "abcde", 5), CR_EPROTO); /* past the length */
  assert_int_equal(cr_h1client_write(f.c, "ab", 2), 0);
  assert_int_equal(cr_h1client_end(f.c), CR_EPROTO); /* short of it */
  assert_int_equal(cr_h1client_write(f.c, "cd", 2), 0); /* exactly the length ends the body */
  RUN_UNTIL(&f, srv_has(&f, "abcd"));
  assert_true(srv_has(&f, "Content-Length: 4\r\n"));
  assert_false(srv_has(&f, "chunked"));
  cr_h1client_cancel(f.c);
  f.c = NULL;
  assert_int_equal(f.reusable, 0);

  /* A POST without a body says so: Content-Length: 0. */
  cr_stream_close(f.srv, NULL);
  mem_pair(&f.loop, &f.cli, &f.srv);
  f.srv->data = &f;
  cr_buf_reset(&f.srv_in);
  assert_int_equal(cr_stream_read_start(f.srv, srv_read), 0);
  fx_request(&f, "POST", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  assert_true(srv_has(&f, "Content-Length: 0\r\n"));
  fx_done(&f);
}

static void test_response_timeout(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 60);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.err, UV_ETIMEDOUT);
  assert_string_equal(f.detail, "no response head within 60 ms from " PEER);
  assert_int_equal(f.reusable, 0);
  fx_done(&f);

  /* Between body reads the same bound applies. */
  fx_init(&f, 60);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf");
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.heads, 1);
  assert_string_equal(f.detail, "reading response body from " PEER " failed: no data within 60 ms");
  fx_done(&f);
}

static void test_bad_response(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.err, CR_EHTTP_PARSE);
  assert_non_null(strstr(f.detail, "waiting for response head from " PEER " failed: malformed response: "));
  assert_int_equal(f.heads, 0);
  assert_int_equal(f.reusable, 0);
  fx_done(&f);

  /* Bytes after a complete response were never asked for: the stream is not reused. */
  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naSURPRISE");
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.reusable, 0);
  fx_done(&f);
}

static void test_stream_error_detail(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  mem_fail(f.cli, UV_ECONNRESET, "peer alert: the test said no");
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.err, UV_ECONNRESET);
  assert_string_equal(f.detail, "waiting for response head from " PEER " failed: peer alert: the test said no");
  fx_done(&f);

  /* A close before the head, on a stream that had served before, says so. */
  fx_init(&f, 1000);
  cr_http_msg_set_method(&f.req, "GET", 3);
  cr_http_msg_set_target(&f.req, "/", 1);
  assert_int_equal(cr_h1client_new(f.ctx, &f.req, 0, &cbs, &f, &f.c), 0);
  cr_h1client_attach(f.c, f.cli, 1, on_release, &f);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  cr_stream_close(f.srv, NULL);
  f.srv = NULL;
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.err, UV_EOF);
  assert_string_equal(f.detail, "waiting for response head from " PEER " failed: connection closed (pooled connection)");
  fx_done(&f);
}

static void test_pause_resume(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 80);
  f.pause_in_head = 1;
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
  RUN_UNTIL(&f, f.heads == 1);
  srv_send(&f, "def");
  /* Paused: nothing is delivered, and the response timeout does not run meanwhile. */
  uv_sleep(120);
  turns(&f, 5);
  assert_int_equal(f.bodies, 0);
  assert_int_equal(f.errors, 0);
  cr_h1client_pause(f.c, 0);
  assert_int_equal(f.bodies, 0); /* never from inside the call */
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.body.len, 6);
  assert_memory_equal(f.body.base, "abcdef", 6);
  assert_int_equal(f.reusable, 1);
  fx_done(&f);
}

static void test_cancel_inside_body(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  f.cancel_in_body = 1;
  mem_read_chunk(f.cli, 50); /* the head in one read, the body split over reads */
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  /* Head and body arrive in one read: the parser would go on delivering after the first byte. */
  srv_send(&f, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcdefghij");
  RUN_UNTIL(&f, f.bodies == 1);
  turns(&f, 5);
  assert_int_equal(f.bodies, 1);
  assert_int_equal(f.ends + f.errors, 0);
  assert_int_equal(f.releases, 1);
  assert_int_equal(f.reusable, 0);
  fx_done(&f);
}

static void test_early_response_finishes_request(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  fx_request(&f, "POST", 6, 1);
  assert_int_equal(cr_h1client_write(f.c, "abc", 3), 0);
  RUN_UNTIL(&f, srv_has(&f, "abc"));
  mem_hold_writes(f.cli, 1);
  /* The server answers before the body is complete; the caller then ends its body and is gone. */
  srv_send(&f, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n");
  assert_int_equal(cr_h1client_write(f.c, "def", 3), 0);
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.status, 413);
  assert_int_equal(f.releases, 0); /* the rest of the request is still going out */
  mem_hold_writes(f.cli, 0);
  RUN_UNTIL(&f, f.releases == 1);
  assert_int_equal(f.reusable, 1);
  assert_true(srv_has(&f, "abcdef"));
  fx_done(&f);
}

static void test_fail_before_attach(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  cr_http_msg_set_method(&f.req, "GET", 3);
  cr_http_msg_set_target(&f.req, "/", 1);
  assert_int_equal(cr_h1client_new(f.ctx, &f.req, 0, &cbs, &f, &f.c), 0);
  cr_h1client_fail(f.c, UV_ECONNREFUSED, "connect to %s failed: %s", "somewhere", "refused");
  assert_int_equal(f.errors, 0); /* never from inside the call */
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.err, UV_ECONNREFUSED);
  assert_string_equal(f.detail, "connect to somewhere failed: refused");
  assert_int_equal(f.releases, 0);

  /* A head that cannot go on the wire fails the same way, without a stream. */
  cr_http_msg_reset(&f.req);
  cr_http_msg_set_method(&f.req, "G T", 3);
  cr_http_msg_set_target(&f.req, "/", 1);
  assert_int_equal(cr_h1client_new(f.ctx, &f.req, 0, &cbs, &f, &f.c), CR_EHTTP_PARSE);
  RUN_UNTIL(&f, f.errors == 2);
  assert_non_null(strstr(f.detail, "request to " PEER " not sent: its head cannot be serialised"));
  fx_done(&f);
}

/* Expect: 100-continue as a relay sees it: the server's 100 arrives while the request body has not
 * been written yet, the body follows, then a 103 with a Link field, then the final response. Each
 * interim head is passed on in order, before on_head, and the connection stays reusable. */
static void test_interim_responses(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  cr_http_msg_reset(&f.req);
  cr_http_msg_set_method(&f.req, "POST", 4);
  cr_http_msg_set_target(&f.req, "/up", 3);
  assert_int_equal(cr_http_msg_add_header(&f.req, "Host", 4, "test", 4), 0);
  assert_int_equal(cr_http_msg_add_header(&f.req, "Expect", 6, "100-continue", 12), 0);
  f.req.content_length = 4;
  assert_int_equal(cr_h1client_new(f.ctx, &f.req, 1, &cbs, &f, &f.c), 0);
  cr_h1client_attach(f.c, f.cli, 0, on_release, &f);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  assert_true(srv_has(&f, "Expect: 100-continue\r\n"));
  srv_send(&f, "HTTP/1.1 100 Continue\r\n\r\n");
  RUN_UNTIL(&f, f.interims == 1);
  assert_int_equal(f.interim_status[0], 100);
  assert_int_equal(f.heads, 0);
  assert_int_equal(cr_h1client_write(f.c, "data", 4), 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\ndata"));
  srv_send(&f, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload; as=style\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.interims, 2);
  assert_int_equal(f.interim_status[1], 103);
  assert_string_equal(f.interim_link, "</s.css>; rel=preload; as=style");
  assert_true(f.interim_before_head);
  assert_int_equal(f.status, 200);
  assert_int_equal(f.body.len, 2);
  assert_int_equal(f.releases, 1);
  assert_int_equal(f.reusable, 1);
  fx_done(&f);
}

/* A server that keeps sending 1xx gets only CR_H1CLIENT_INTERIM_MAX of them passed on; the final
 * response still arrives. A 101 is still refused. */
static void test_interim_bounded(void **state) {
  fx_t f;
  cr_buf_t many;
  (void)state;
  fx_init(&f, 1000);
  cr_buf_init(&many, 0);
  for (int i = 0; i < CR_H1CLIENT_INTERIM_MAX + 9; i++)
    cr_buf_appendf(&many, "HTTP/1.1 102 Processing\r\n\r\n");
  cr_buf_appendf(&many, "HTTP/1.1 204 No Content\r\n\r\n");
  cr_buf_append(&many, "", 1);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, many.base);
  RUN_UNTIL(&f, f.ends == 1);
  assert_int_equal(f.interims, CR_H1CLIENT_INTERIM_MAX);
  assert_int_equal(f.interim_status[0], 102);
  assert_int_equal(f.status, 204);
  cr_buf_free(&many);
  fx_done(&f);

  fx_init(&f, 1000);
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
  RUN_UNTIL(&f, f.errors == 1);
  assert_int_equal(f.interims, 0);
  assert_int_equal(f.err, CR_EHTTP_PARSE);
  fx_done(&f);
}

/* Canceling from inside on_interim: nothing more fires and the stream goes back to be closed. */
static void test_cancel_inside_interim(void **state) {
  fx_t f;
  (void)state;
  fx_init(&f, 1000);
  f.cancel_in_interim = 1;
  fx_request(&f, "GET", -1, 0);
  RUN_UNTIL(&f, srv_has(&f, "\r\n\r\n"));
  srv_send(&f, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  RUN_UNTIL(&f, f.interims == 1);
  turns(&f, 5);
  assert_int_equal(f.heads, 0);
  assert_int_equal(f.ends + f.errors, 0);
  assert_int_equal(f.releases, 1);
  assert_int_equal(f.reusable, 0);
  fx_done(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_simple_response),
      cmocka_unit_test(test_chunked_response),
      cmocka_unit_test(test_close_delimited),
      cmocka_unit_test(test_bodiless_responses),
      cmocka_unit_test(test_request_body_backpressure),
      cmocka_unit_test(test_content_length_body_rules),
      cmocka_unit_test(test_response_timeout),
      cmocka_unit_test(test_bad_response),
      cmocka_unit_test(test_stream_error_detail),
      cmocka_unit_test(test_pause_resume),
      cmocka_unit_test(test_cancel_inside_body),
      cmocka_unit_test(test_early_response_finishes_request),
      cmocka_unit_test(test_fail_before_attach),
      cmocka_unit_test(test_interim_responses),
      cmocka_unit_test(test_interim_bounded),
      cmocka_unit_test(test_cancel_inside_interim),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The CONNECT exchange against a scripted proxy on an in-memory stream pair: the request it sends,
 * Basic credentials, a multi-round scheme (407 then success), every failure the proxy can cause
 * (403, 502, 407 refused, garbage, a head over the cap, a close before or inside the answer, bytes
 * after the 2xx), cancellation; and the dial over real loopback TCP (hand-over, timeout, refusal). */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/error.h"
#include "ccrelay/proxy_connect.h"
#include "ccrelay/stream.h"
#include "mem_stream.h"

/* ---------------------------------------------------------------- a scripted proxy */

#define MAX_REQS 8

typedef struct fake_proxy {
  cr_stream_t *s;
  cr_buf_t in;
  const char *const *answers; /* one per request head received; NULL: shut down instead */
  size_t nanswers;
  size_t next;
  char reqs[MAX_REQS][2048];
  int nreqs;
  cr_buf_t after; /* bytes after the last request head (the tunnel's payload) */
} fake_proxy_t;

static void proxy_on_read(cr_stream_t *s, ssize_t n, const char *data) {
  fake_proxy_t *p = s->data;
  char *end;
  if (n < 0)
    return;
  if (p->next >= p->nanswers || p->nreqs >= MAX_REQS) { /* tunnel mode */
    cr_buf_append(&p->after, data, (size_t)n);
    return;
  }
  cr_buf_append(&p->in, data, (size_t)n);
  while (p->next < p->nanswers && (end = memmem(p->in.base, p->in.len, "\r\n\r\n", 4)) != NULL) {
    size_t hl = (size_t)(end - p->in.base) + 4;
    const char *ans = p->answers[p->next++];
    snprintf(p->reqs[p->nreqs++], sizeof p->reqs[0], "%.*s", (int)hl, p->in.base);
    cr_buf_consume(&p->in, hl);
    if (ans == NULL) {
      cr_stream_shutdown(s, NULL, NULL);
    } else {
      uv_buf_t b = uv_buf_init((char *)ans, (unsigned)strlen(ans));
      assert_int_equal(cr_stream_write(s, &b, 1, NULL, NULL), 0);
      if (p->next < p->nanswers && p->answers[p->next] == NULL) { /* answer, then close */
        p->next++;
        cr_stream_shutdown(s, NULL, NULL);
      }
    }
  }
  if (p->next >= p->nanswers && p->in.len > 0) {
    cr_buf_append(&p->after, p->in.base, p->in.len);
    cr_buf_reset(&p->in);
  }
}

typedef struct result {
  int fired;
  int status;
  char detail[1024];
} result_t;

static void on_done(cr_proxy_connect_t *pc, int status, const char *detail, void *data) {
  result_t *r = data;
  (void)pc;
  r->fired++;
  r->status = status;
  snprintf(r->detail, sizeof r->detail, "%s", detail);
}

typedef struct world {
  uv_loop_t loop;
  cr_stream_t *client, *server;
  fake_proxy_t proxy;
  result_t res;
  void *client_data;
} world_t;

static void world_init(world_t *w, const char *const *answers, size_t n) {
  memset(w, 0, sizeof *w);
  uv_loop_init(&w->loop);
  mem_pair(&w->loop, &w->client, &w->server);
  w->proxy.s = w->server;
  w->proxy.answers = answers;
  w->proxy.nanswers = n;
  cr_buf_init(&w->proxy.in, 0);
  cr_buf_init(&w->proxy.after, 0);
  w->server->data = &w->proxy;
  w->client->data = &w->client_data; /* the owner's: must be back after the exchange */
  assert_int_equal(cr_stream_read_start(w->server, proxy_on_read), 0);
}

static void world_run_exchange(world_t *w, cr_proxy_auth_t *auth, const char *hint) {
  cr_proxy_connect_opts_t o = {"gw.example", 8443, "proxy.test:3128", auth, hint};
  int err = 0;
  cr_proxy_connect_t *pc = cr_proxy_connect_start(w->client, &o, on_done, &w->res, &err);
  assert_non_null(pc);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  assert_int_equal(w->res.fired, 1);
  assert_ptr_equal(w->client->data, &w->client_data);
}

static void world_free(world_t *w) {
  cr_stream_close(w->client, NULL);
  cr_stream_close(w->server, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&w->loop), 0);
  cr_buf_free(&w->proxy.in);
  cr_buf_free(&w->proxy.after);
}

static void expect_fail(const char *const *answers, size_t n, cr_proxy_auth_t *auth, int status, const char *want1,
                        const char *want2) {
  world_t w;
  world_init(&w, answers, n);
  world_run_exchange(&w, auth, "proxy.username / proxy.password_file");
  if (w.res.status != status || strstr(w.res.detail, want1) == NULL || (want2 && strstr(w.res.detail, want2) == NULL))
    fail_msg("status %d (%s), detail \"%s\"; want %d with \"%s\" and \"%s\"", w.res.status, cr_strerror(w.res.status),
             w.res.detail, status, want1, want2 ? want2 : "");
  world_free(&w);
}

/* ---------------------------------------------------------------- success */

static void on_client_read(cr_stream_t *s, ssize_t n, const char *data) {
  cr_buf_t *got = s->data;
  if (n > 0)
    cr_buf_append(got, data, (size_t)n);
}

static void test_basic_tunnel(void **state) {
  static const char *const answers[] = {"HTTP/1.1 200 Connection established\r\n\r\n"};
  cr_proxy_auth_t *auth = cr_proxy_auth_basic_new("Aladdin", "open sesame");
  world_t w;
  cr_buf_t got;
  uv_buf_t b;
  (void)state;
  world_init(&w, answers, 1);
  world_run_exchange(&w, auth, NULL);
  assert_int_equal(w.res.status, 0);
  assert_int_equal(w.proxy.nreqs, 1);
  /* RFC 7617's example credentials */
  assert_string_equal(w.proxy.reqs[0], "CONNECT gw.example:8443 HTTP/1.1\r\n"
                                       "Host: gw.example:8443\r\n"
                                       "Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"
                                       "User-Agent: ccrelay/" CCRELAY_VERSION "\r\n\r\n");
  /* The same stream is now a pipe to the target, both ways, with nothing lost. */
  cr_buf_init(&got, 0);
  w.client->data = &got;
  assert_int_equal(cr_stream_read_start(w.client, on_client_read), 0);
  b = uv_buf_init("\x16\x03\x01hello", 8);
  assert_int_equal(cr_stream_write(w.client, &b, 1, NULL, NULL), 0);
  b = uv_buf_init("\x16\x03\x03world", 8);
  assert_int_equal(cr_stream_write(w.server, &b, 1, NULL, NULL), 0);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  assert_int_equal(w.proxy.after.len, 8);
  assert_memory_equal(w.proxy.after.base, "\x16\x03\x01hello", 8);
  assert_int_equal(got.len, 8);
  assert_memory_equal(got.base, "\x16\x03\x03world", 8);
  cr_buf_free(&got);
  world_free(&w);
  cr_proxy_auth_free(auth);
}

static void test_base64_lengths(void **state) {
  /* "a:" (2 bytes), "ab:" (3), "abc:" (4): each padding case. */
  static const struct {
    const char *user, *want;
  } cases[] = {{"a", "Basic YTo="}, {"ab", "Basic YWI6"}, {"abc", "Basic YWJjOg=="}};
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_proxy_auth_t *a = cr_proxy_auth_basic_new(cases[i].user, "");
    cr_buf_t out;
    cr_buf_init(&out, 0);
    assert_int_equal(a->vt->initial(a, &out), 0);
    assert_int_equal(out.len, strlen(cases[i].want));
    assert_memory_equal(out.base, cases[i].want, out.len);
    cr_buf_free(&out);
    cr_proxy_auth_free(a);
  }
}

/* A connection-bound scheme in the shape of Negotiate: nothing with the first request, a token
 * computed from the 407's challenge in the second, and the 2xx checked by done(). */
typedef struct test_scheme {
  cr_proxy_auth_t base;
  int responded, done_called;
} test_scheme_t;

static int ts_initial(cr_proxy_auth_t *a, cr_buf_t *out) {
  (void)a, (void)out;
  return 0;
}

static int ts_respond(cr_proxy_auth_t *a, const cr_http_msg_t *resp, cr_buf_t *out, char *why, size_t len) {
  test_scheme_t *t = (test_scheme_t *)a;
  const char *ch = cr_http_msg_get(resp, "proxy-authenticate");
  if (t->responded || ch == NULL || strncmp(ch, "Test ", 5) != 0) {
    snprintf(why, len, "no usable challenge");
    return 0;
  }
  t->responded = 1;
  cr_buf_appendf(out, "Test answer-to-%s", ch + 5);
  return 1;
}

static int ts_done(cr_proxy_auth_t *a, const cr_http_msg_t *resp, char *why, size_t len) {
  test_scheme_t *t = (test_scheme_t *)a;
  const char *fin = cr_http_msg_get(resp, "proxy-authenticate");
  t->done_called = 1;
  if (fin == NULL || strcmp(fin, "Test final") != 0) {
    snprintf(why, len, "the proxy did not prove itself");
    return CR_EPROXY_AUTH;
  }
  return 0;
}

static void ts_free(cr_proxy_auth_t *a) { (void)a; }

static const cr_proxy_auth_vtbl_t ts_vt = {"Test", ts_initial, ts_respond, ts_done, ts_free};

static void test_407_then_success(void **state) {
  static const char *const answers[] = {
      "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Test c0ffee\r\n"
      "Content-Type: text/html\r\nContent-Length: 11\r\n\r\n<h1>no</h1>",
      "HTTP/1.1 200 OK\r\nProxy-Authenticate: Test final\r\n\r\n"};
  test_scheme_t t = {{&ts_vt}, 0, 0};
  world_t w;
  (void)state;
  world_init(&w, answers, 2);
  world_run_exchange(&w, &t.base, NULL);
  assert_int_equal(w.res.status, 0);
  assert_int_equal(w.proxy.nreqs, 2);
  assert_null(strstr(w.proxy.reqs[0], "Proxy-Authorization"));
  assert_non_null(strstr(w.proxy.reqs[1], "\r\nProxy-Authorization: Test answer-to-c0ffee\r\n"));
  assert_true(t.done_called);
  world_free(&w);

  /* The same, with the proxy's answers arriving a byte at a time. */
  memset(&t, 0, sizeof t);
  t.base.vt = &ts_vt;
  world_init(&w, answers, 2);
  mem_read_chunk(w.client, 1);
  world_run_exchange(&w, &t.base, NULL);
  assert_int_equal(w.res.status, 0);
  assert_int_equal(w.proxy.nreqs, 2);
  world_free(&w);

  /* done() refusing the 2xx ends the exchange. */
  {
    static const char *const unproven[] = {answers[0], "HTTP/1.1 200 OK\r\n\r\n"};
    memset(&t, 0, sizeof t);
    t.base.vt = &ts_vt;
    expect_fail(unproven, 2, &t.base, CR_EPROXY_AUTH, "did not prove itself", NULL);
  }
}

/* ---------------------------------------------------------------- failures */

static void test_407(void **state) {
  static const char *const refused[] = {"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                        "Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n"};
  static const char *const negotiate[] = {"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                          "Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: NTLM\r\n"
                                          "Content-Length: 0\r\n\r\n"};
  cr_proxy_auth_t *auth = cr_proxy_auth_basic_new("svc-ccrelay", "wrong-pass");
  world_t w;
  (void)state;
  world_init(&w, refused, 1);
  world_run_exchange(&w, auth, "proxy.username / proxy.password_file");
  assert_int_equal(w.res.status, CR_EPROXY_AUTH);
  assert_string_equal(w.res.detail, "407 from proxy.test:3128: the proxy refused the credentials of user "
                                    "'svc-ccrelay' (it offers Basic); check proxy.username / proxy.password_file");
  /* neither the password nor its encoding is in the message */
  assert_null(strstr(w.res.detail, "wrong-pass"));
  assert_null(strstr(w.res.detail, "c3Zj"));
  assert_int_equal(w.proxy.nreqs, 1);
  world_free(&w);

  expect_fail(negotiate, 1, auth, CR_EPROXY_AUTH, "does not offer Basic authentication (it offers Negotiate, NTLM)",
              NULL);
  /* no credentials configured */
  expect_fail(refused, 1, NULL, CR_EPROXY_AUTH, "407 from proxy.test:3128: the proxy asks for authentication",
              "(it offers Basic); set proxy.username / proxy.password_file");
  cr_proxy_auth_free(auth);
}

static void test_refusals(void **state) {
  static const char *const forbidden[] = {"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope."};
  static const char *const bad_gw[] = {"HTTP/1.1 502 Bad Gateway\r\n\r\n"};
  static const char *const unavail[] = {"HTTP/1.0 503 Service Unavailable\r\n\r\n"};
  static const char *const timeout[] = {"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n"};
  static const char *const method[] = {"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"};
  (void)state;
  expect_fail(forbidden, 1, NULL, CR_EPROXY, "the proxy refused the CONNECT to gw.example:8443 (403 from proxy.test:3128)",
              NULL);
  expect_fail(bad_gw, 1, NULL, CR_EPROXY, "the proxy could not reach the gateway gw.example:8443 (502 from proxy.test:3128)",
              NULL);
  expect_fail(unavail, 1, NULL, CR_EPROXY, "could not reach the gateway gw.example:8443 (503 ", NULL);
  expect_fail(timeout, 1, NULL, CR_EPROXY, "could not reach the gateway gw.example:8443 (504 ", NULL);
  expect_fail(method, 1, NULL, CR_EPROXY, "proxy proxy.test:3128 answered the CONNECT to gw.example:8443 with 405",
              NULL);
}

static void test_broken_answers(void **state) {
  static const char *const garbage[] = {"SSH-2.0-OpenSSH_9.2\r\n\r\n"};
  static const char *const closed[] = {NULL};
  static const char *const midhead[] = {"HTTP/1.1 200 Connection established\r\nVia: 1.1 squ", NULL};
  static const char *const extra[] = {"HTTP/1.1 200 Connection established\r\n\r\nhello"};
  static const char *const extra407[] = {"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                         "Proxy-Authenticate: Test x\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"};
  static const char *const until_close[] = {"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                            "Proxy-Authenticate: Test x\r\n\r\n<html>"};
  static const char *const interim[] = {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"};
  char *big, *over[1];
  size_t n = 0;
  test_scheme_t t = {{&ts_vt}, 0, 0};
  (void)state;
  expect_fail(garbage, 1, NULL, CR_EPROXY, "proxy proxy.test:3128 sent a malformed answer to CONNECT: ", NULL);
  expect_fail(closed, 1, NULL, CR_EPROXY, "proxy proxy.test:3128 closed the connection without answering CONNECT",
              NULL);
  expect_fail(midhead, 2, NULL, CR_EPROXY, "closed the connection in the middle of its answer to CONNECT", NULL);
  expect_fail(extra, 1, NULL, CR_EPROXY, "sent 5 bytes after its 2xx answer, before the TLS handshake began", NULL);
  expect_fail(extra407, 1, &t.base, CR_EPROXY, "sent 19 bytes after its 407 answer", NULL);
  memset(&t, 0, sizeof t);
  t.base.vt = &ts_vt;
  expect_fail(until_close, 1, &t.base, CR_EPROXY_AUTH, "closes the connection after its challenge", NULL);

  /* A head over the cap: 16 KiB of fields, never a tunnel. */
  big = malloc(CR_PROXY_MAX_HEAD + 200);
  n += (size_t)sprintf(big + n, "HTTP/1.1 200 Connection established\r\n");
  while (n < CR_PROXY_MAX_HEAD + 50)
    n += (size_t)sprintf(big + n, "X-Pad: %090d\r\n", 0);
  sprintf(big + n, "\r\n");
  over[0] = big;
  expect_fail((const char *const *)over, 1, NULL, CR_EPROXY, "sent an answer head larger than 16384 bytes", NULL);
  free(big);

  /* A 1xx before the answer is skipped, as HTTP says. */
  {
    world_t w;
    world_init(&w, interim, 1);
    world_run_exchange(&w, NULL, NULL);
    assert_int_equal(w.res.status, 0);
    world_free(&w);
  }
}

static void test_stream_error_and_cancel(void **state) {
  static const char *const never[] = {NULL};
  world_t w;
  cr_proxy_connect_opts_t o = {"::1", 443, "proxy.test:3128", NULL, NULL};
  cr_proxy_connect_t *pc;
  int err = 0;
  (void)state;

  /* A read error: the stream's code, with the proxy named. */
  world_init(&w, never, 0);
  mem_fail(w.client, UV_ECONNRESET, "reset");
  world_run_exchange(&w, NULL, NULL);
  assert_int_equal(w.res.status, UV_ECONNRESET);
  assert_non_null(strstr(w.res.detail, "reading from proxy proxy.test:3128: "));
  world_free(&w);

  /* Cancelled before the answer: cb never fires, the stream is the owner's again, nothing leaks;
   * an IPv6 target goes in brackets. */
  world_init(&w, never, 0);
  pc = cr_proxy_connect_start(w.client, &o, on_done, &w.res, &err);
  assert_non_null(pc);
  uv_run(&w.loop, UV_RUN_NOWAIT);
  cr_proxy_connect_cancel(pc);
  assert_ptr_equal(w.client->data, &w.client_data);
  uv_run(&w.loop, UV_RUN_DEFAULT);
  assert_int_equal(w.res.fired, 0);
  assert_true(w.proxy.after.len > 45);
  assert_memory_equal(w.proxy.after.base, "CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n", 45);
  world_free(&w);

  /* Cancelled with our write still pending (the peer holds write callbacks): freed when it calls back. */
  world_init(&w, never, 0);
  mem_hold_writes(w.client, 1);
  pc = cr_proxy_connect_start(w.client, &o, on_done, &w.res, &err);
  assert_non_null(pc);
  cr_proxy_connect_cancel(pc);
  world_free(&w);
  assert_int_equal(w.res.fired, 0);
}

/* ---------------------------------------------------------------- the dial, over loopback TCP */

typedef struct tcp_proxy {
  cr_listener_t *l;
  cr_stream_t *conn;
  const char *answer; /* NULL: accept and stay silent */
  cr_buf_t in;
} tcp_proxy_t;

static void tcp_proxy_read(cr_stream_t *s, ssize_t n, const char *data) {
  tcp_proxy_t *p = s->data;
  if (n <= 0)
    return;
  cr_buf_append(&p->in, data, (size_t)n);
  if (p->answer && memmem(p->in.base, p->in.len, "\r\n\r\n", 4)) {
    uv_buf_t b = uv_buf_init((char *)p->answer, (unsigned)strlen(p->answer));
    cr_stream_write(s, &b, 1, NULL, NULL);
    p->answer = NULL;
  }
}

static void tcp_proxy_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  tcp_proxy_t *p = arg;
  (void)l;
  p->conn = conn;
  conn->data = p;
  cr_stream_read_start(conn, tcp_proxy_read);
}

typedef struct dial_res {
  int fired, status;
  cr_stream_t *s;
  void *data;
  char detail[700];
} dial_res_t;

static void on_dialed(cr_stream_t *s, int status) {
  dial_res_t *r = s->data;
  r->fired++;
  r->status = status;
  r->s = s;
  cr_stream_error_detail(s, r->detail, sizeof r->detail);
}

static void dial_case(const char *answer, uint64_t timeout_ms, int status, const char *want) {
  uv_loop_t loop;
  tcp_proxy_t p = {0};
  dial_res_t r = {0};
  cr_stream_t *d = NULL;
  char err[200];
  cr_proxy_auth_t *auth = cr_proxy_auth_basic_new("u", "p");
  cr_proxy_dial_opts_t o = {"127.0.0.1", 0, auth, "proxy.username / proxy.password_env", timeout_ms};
  uv_loop_init(&loop);
  cr_buf_init(&p.in, 0);
  p.answer = answer;
  assert_int_equal(cr_tcp_listen(&loop, "127.0.0.1", 0, 8, tcp_proxy_accept, &p, &p.l, err, sizeof err), 0);
  o.proxy_port = cr_listener_port(p.l);
  assert_int_equal(cr_proxy_dial(&loop, &o, "gw.example", 443, on_dialed, &r, &d), 0);
  while (!r.fired && uv_run(&loop, UV_RUN_ONCE))
    ;
  assert_int_equal(r.fired, 1);
  if (r.status != status || (want && strstr(r.detail, want) == NULL))
    fail_msg("dial: status %d, detail \"%s\"; want %d, \"%s\"", r.status, r.detail, status, want ? want : "");
  if (status == 0) {
    /* the TCP stream itself, with the caller's data, peer the proxy */
    assert_ptr_not_equal(r.s, d);
    assert_string_equal(r.s->vt->name, "tcp");
    assert_ptr_equal(r.s->data, &r);
    assert_non_null(memmem(p.in.base, p.in.len, "Proxy-Authorization: Basic dTpw\r\n", 33));
    cr_stream_close(r.s, NULL);
  } else {
    assert_ptr_equal(r.s, d);
    cr_stream_close(d, NULL);
  }
  if (p.conn)
    cr_stream_close(p.conn, NULL);
  cr_listener_close(p.l);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  cr_buf_free(&p.in);
  cr_proxy_auth_free(auth);
}

static void test_dial(void **state) {
  (void)state;
  dial_case("HTTP/1.1 200 Connection established\r\n\r\n", 5000, 0, NULL);
  dial_case("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n"
            "Content-Length: 0\r\n\r\n",
            5000, CR_EPROXY_AUTH, "407 from 127.0.0.1:");
  dial_case("HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n"
            "Content-Length: 0\r\n\r\n",
            5000, CR_EPROXY_AUTH, "check proxy.username / proxy.password_env");
  dial_case(NULL, 100, UV_ETIMEDOUT, "did not answer CONNECT within 100 ms (proxy.connect_timeout)");
}

static void test_dial_refused(void **state) {
  uv_loop_t loop;
  dial_res_t r = {0};
  cr_stream_t *d = NULL;
  cr_listener_t *l;
  char err[200];
  unsigned port;
  cr_proxy_dial_opts_t o = {"127.0.0.1", 0, NULL, NULL, 5000};
  (void)state;
  uv_loop_init(&loop);
  /* a port that was free a moment ago */
  assert_int_equal(cr_tcp_listen(&loop, "127.0.0.1", 0, 1, NULL, NULL, &l, err, sizeof err), 0);
  port = cr_listener_port(l);
  cr_listener_close(l);
  uv_run(&loop, UV_RUN_DEFAULT);
  o.proxy_port = port;
  assert_int_equal(cr_proxy_dial(&loop, &o, "gw.example", 443, on_dialed, &r, &d), 0);
  while (!r.fired && uv_run(&loop, UV_RUN_ONCE))
    ;
  assert_int_equal(r.status, UV_ECONNREFUSED);
  assert_non_null(strstr(r.detail, "cannot connect to proxy 127.0.0.1:"));
  cr_stream_close(d, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);

  /* closing the handle mid-dial cancels: no callback */
  memset(&r, 0, sizeof r);
  uv_loop_init(&loop);
  assert_int_equal(cr_proxy_dial(&loop, &o, "gw.example", 443, on_dialed, &r, &d), 0);
  cr_stream_close(d, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.fired, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_tunnel),       cmocka_unit_test(test_base64_lengths),
      cmocka_unit_test(test_407_then_success),   cmocka_unit_test(test_407),
      cmocka_unit_test(test_refusals),           cmocka_unit_test(test_broken_answers),
      cmocka_unit_test(test_stream_error_and_cancel), cmocka_unit_test(test_dial),
      cmocka_unit_test(test_dial_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

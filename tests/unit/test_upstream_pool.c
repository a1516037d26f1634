/* SPDX-License-Identifier: Apache-2.0 */
/* The upstream connection pool against a TLS server on 127.0.0.1 (cr_tcp_listen + server-side TLS
 * streams): dial, lend, take back, reuse, purge, cancel while connecting, connect failures, TLS
 * context generations. No HTTP: the pool never looks at the bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ccrelay/error.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "ccrelay/upstream_pool.h"
#include "tls_pki.h"

/* ---- the server ---- */

#define MAX_SCONNS 32

typedef struct srv {
  uv_loop_t *loop;
  cr_listener_t *l;
  cr_tls_ctx_t *ctx;
  int silent; /* accept TCP, never speak TLS */
  cr_stream_t *conns[MAX_SCONNS];
  int nconns, handshakes, peer_gone;
} srv_t;

static void sconn_read(cr_stream_t *s, ssize_t n, const char *data) {
  srv_t *sv = s->data;
  (void)data;
  if (n < 0)
    sv->peer_gone++;
}

static void sconn_handshake(cr_stream_t *s, int status) {
  srv_t *sv = s->data;
  if (status == 0) {
    sv->handshakes++;
    cr_stream_read_start(s, sconn_read);
  }
}

static void on_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  srv_t *sv = arg;
  cr_stream_t *s = conn;
  (void)l;
  assert_true(sv->nconns < MAX_SCONNS);
  if (!sv->silent) {
    s = cr_tls_stream_new(conn, sv->ctx, NULL);
    s->data = sv;
    assert_int_equal(cr_tls_stream_handshake(s, sconn_handshake), 0);
  }
  s->data = sv;
  sv->conns[sv->nconns++] = s;
}

static void srv_start(srv_t *sv, uv_loop_t *loop, const char *cert, int silent) {
  char err[512];
  cr_tls_identity_src_t id = {.cert = pki(cert), .key = NULL};
  cr_tls_ctx_opts_t o;
  char key[384];
  memset(sv, 0, sizeof *sv);
  sv->loop = loop;
  sv->silent = silent;
  snprintf(key, sizeof key, "%s", pki(cert));
  memcpy(key + strlen(key) - 3, "key", 3); /* x.pem -> x.key */
  id.key = key;
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.identity = &id;
  assert_int_equal(cr_tls_ctx_new(&o, &sv->ctx, err, sizeof err), 0);
  assert_int_equal(cr_tcp_listen(loop, "127.0.0.1", 0, 16, on_accept, sv, &sv->l, err, sizeof err), 0);
}

static void srv_stop(srv_t *sv) {
  for (int i = 0; i < sv->nconns; i++)
    if (sv->conns[i] != NULL)
      cr_stream_close(sv->conns[i], NULL);
  cr_listener_close(sv->l);
  cr_tls_ctx_free(sv->ctx);
}

/* ---- the client side ---- */

typedef struct fx {
  uv_loop_t loop;
  srv_t srv;
  cr_upool_t *pool;
  uv_timer_t guard;
  int timed_out;
  /* connect results */
  int calls, status;
  cr_upool_conn_t *ready;
  char detail[512];
} fx_t;

static void on_guard(uv_timer_t *t) { ((fx_t *)t->data)->timed_out = 1; }

#define RUN_UNTIL(f, cond, ms)                                                                                    \
  do {                                                                                                            \
    (f)->timed_out = 0;                                                                                           \
    uv_timer_start(&(f)->guard, on_guard, (ms), 0);                                                               \
    while (!(cond) && !(f)->timed_out) {                                                                          \
      uv_run(&(f)->loop, UV_RUN_NOWAIT);                                                                          \
      if (!(cond))                                                                                                \
        uv_sleep(1);                                                                                              \
    }                                                                                                             \
    uv_timer_stop(&(f)->guard);                                                                                   \
  } while (0)

static void run_for(fx_t *f, uint64_t ms) { RUN_UNTIL(f, 0, ms); }

static void on_ready(cr_upool_conn_t *c, int status, const char *detail, void *data) {
  fx_t *f = data;
  f->calls++;
  f->status = status;
  f->ready = status == 0 ? c : NULL;
  snprintf(f->detail, sizeof f->detail, "%s", detail ? detail : "");
}

static void fx_init(fx_t *f, const char *cert, int silent, const cr_upool_opts_t *extra) {
  cr_upool_opts_t o;
  char err[512];
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->guard);
  f->guard.data = f;
  srv_start(&f->srv, &f->loop, cert, silent);
  if (extra)
    o = *extra;
  else
    memset(&o, 0, sizeof o);
  o.name = "test";
  o.host = "127.0.0.1";
  o.port = cr_listener_port(f->srv.l);
  o.server_name = "localhost";
  o.ca_file = pki("ca.pem");
  assert_int_equal(cr_upool_new(&f->loop, &o, &f->pool, err, sizeof err), 0);
}

static void fx_done(fx_t *f) {
  cr_upool_free(f->pool);
  srv_stop(&f->srv);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

/* Dials one connection and waits for it. */
static cr_upool_conn_t *dial(fx_t *f) {
  cr_upool_conn_t *c;
  char err[256];
  int calls = f->calls;
  assert_int_equal(cr_upool_connect(f->pool, on_ready, f, &c, err, sizeof err), 0);
  assert_non_null(c);
  assert_null(cr_upool_conn_stream(c)); /* not before the handshake */
  RUN_UNTIL(f, f->calls > calls, 3000);
  assert_int_equal(f->calls, calls + 1);
  assert_int_equal(f->status, 0);
  assert_ptr_equal(f->ready, c);
  return c;
}

static void stats(fx_t *f, size_t want_idle, size_t want_busy) {
  size_t idle, busy;
  cr_upool_stats(f->pool, &idle, &busy);
  assert_int_equal(idle, want_idle);
  assert_int_equal(busy, want_busy);
}

static size_t nidle(fx_t *f) {
  size_t idle;
  cr_upool_stats(f->pool, &idle, NULL);
  return idle;
}

/* ---- tests ---- */

static void test_take_put_reuse(void **state) {
  cr_upool_opts_t o = {.max_idle = 4};
  cr_upool_conn_t *c, *again;
  cr_stream_t *s;
  char err[256], subject[256];
  time_t na;
  fx_t f;
  (void)state;
  fx_init(&f, "server.pem", 0, &o);
  assert_int_equal(cr_upool_peer_cert(f.pool, subject, sizeof subject, &na), UV_ENOENT);
  c = dial(&f);
  s = cr_upool_conn_stream(c);
  assert_non_null(s);
  assert_true(cr_stream_is_tls(s));
  assert_false(cr_upool_conn_reused(c));
  stats(&f, 0, 1);
  assert_int_equal(cr_upool_peer_cert(f.pool, subject, sizeof subject, &na), 0);
  assert_non_null(strstr(subject, "CN=localhost"));
  assert_true(na > time(NULL));
  snprintf(err, sizeof err, "127.0.0.1:%u (server name localhost)", cr_listener_port(f.srv.l));
  assert_string_equal(cr_upool_peer_name(f.pool), err);
  cr_upool_put(c);
  stats(&f, 1, 0);
  /* Taken back at once, from inside the call: no callback, the same stream. */
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &again, err, sizeof err), 1);
  assert_ptr_equal(again, c);
  assert_ptr_equal(cr_upool_conn_stream(again), s);
  assert_true(cr_upool_conn_reused(again));
  stats(&f, 0, 1);
  cr_upool_put(again);
  run_for(&f, 50);
  assert_int_equal(f.calls, 1);
  assert_int_equal(f.srv.handshakes, 1); /* one connection served both */
  stats(&f, 1, 0);
  fx_done(&f);
}

static void test_connect_failures(void **state) {
  cr_upool_t *pool;
  cr_upool_opts_t o;
  cr_upool_conn_t *c;
  char err[512], want[128];
  unsigned port;
  fx_t f;
  (void)state;
  /* Nobody listens: refused. The port is one a listener just gave back. */
  fx_init(&f, "server.pem", 0, NULL);
  port = cr_listener_port(f.srv.l);
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  o.port = port;
  o.ca_file = pki("ca.pem");
  assert_int_equal(cr_upool_new(&f.loop, &o, &pool, err, sizeof err), 0);
  cr_listener_close(f.srv.l);
  assert_int_equal(cr_tcp_listen(&f.loop, "127.0.0.1", 0, 16, on_accept, &f.srv, &f.srv.l, err, sizeof err), 0);
  run_for(&f, 20);
  assert_int_equal(cr_upool_connect(pool, on_ready, &f, &c, err, sizeof err), 0);
  RUN_UNTIL(&f, f.calls == 1, 3000);
  assert_int_equal(f.status, UV_ECONNREFUSED);
  snprintf(want, sizeof want, "connect to 127.0.0.1:%u failed: connection refused", port);
  assert_string_equal(f.detail, want);
  {
    size_t idle = 9, busy = 9;
    cr_upool_stats(pool, &idle, &busy);
    assert_int_equal(idle + busy, 0);
  }
  cr_upool_free(pool);
  fx_done(&f);

  /* The server's certificate has expired: the TLS stream's own reason reaches the detail. */
  fx_init(&f, "expired.pem", 0, NULL);
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  RUN_UNTIL(&f, f.calls == 1, 3000);
  assert_int_equal(f.status, CR_ETLS_VERIFY);
  snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%u (server name localhost) failed: ",
           cr_listener_port(f.srv.l));
  assert_memory_equal(f.detail, want, strlen(want));
  assert_non_null(strstr(f.detail, "certificate has expired"));
  stats(&f, 0, 0);
  fx_done(&f);

  /* A server that never answers the handshake: the connect timeout covers it. */
  memset(&o, 0, sizeof o);
  o.connect_timeout_ms = 300;
  fx_init(&f, "server.pem", 1, &o);
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  RUN_UNTIL(&f, f.calls == 1, 3000);
  assert_int_equal(f.status, UV_ETIMEDOUT);
  if (f.srv.nconns == 1) /* the TCP part made it in time (unless the machine is very busy) */
    snprintf(want, sizeof want,
             "TLS handshake with 127.0.0.1:%u (server name localhost) timed out after 300 ms (connect timeout)",
             cr_listener_port(f.srv.l));
  else
    snprintf(want, sizeof want, "connect to 127.0.0.1:%u timed out after 300 ms", cr_listener_port(f.srv.l));
  assert_string_equal(f.detail, want);
  fx_done(&f);

  /* Bad options. */
  memset(&o, 0, sizeof o);
  o.host = "127.0.0.1";
  assert_int_equal(cr_upool_new(uv_default_loop(), &o, &pool, err, sizeof err), CR_ECONFIG);
  assert_string_equal(err, "host and a port in 1..65535 are required");
}

static void test_cancel_while_connecting(void **state) {
  cr_upool_opts_t o = {.connect_timeout_ms = 200, .max_idle = 2};
  cr_upool_conn_t *c;
  char err[256];
  int nbefore;
  fx_t f;
  (void)state;
  /* Canceled during the TCP connect. */
  fx_init(&f, "server.pem", 1, &o);
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  stats(&f, 0, 1);
  cr_upool_close(c);
  stats(&f, 0, 0);
  /* Canceled during the handshake (the server accepted TCP and stays silent). Whether the first,
   * canceled while its name was resolved or its SYN was out, reached the server does not matter. */
  run_for(&f, 20);
  nbefore = f.srv.nconns;
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  RUN_UNTIL(&f, f.srv.nconns == nbefore + 1, 3000);
  assert_int_equal(f.srv.nconns, nbefore + 1);
  run_for(&f, 20);
  cr_upool_close(c);
  /* Past the connect timeout: neither cancel ever calls back, not even with the timeout. */
  run_for(&f, 300);
  assert_int_equal(f.calls, 0);
  stats(&f, 0, 0);
  /* A connect still running when the pool is freed is canceled too. */
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  fx_done(&f);
  assert_int_equal(f.calls, 0);
}

static void test_purge_follows_demand(void **state) {
  cr_upool_opts_t o = {.max_idle = 8, .purge_interval_ms = 30, .idle_timeout_ms = 10000};
  cr_upool_conn_t *c[4];
  char err[256];
  fx_t f;
  (void)state;
  fx_init(&f, "server.pem", 0, &o);
  for (int i = 0; i < 4; i++)
    assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c[i], err, sizeof err), 0);
  stats(&f, 0, 4);
  RUN_UNTIL(&f, f.calls == 4, 3000);
  assert_int_equal(f.calls, 4);
  for (int i = 0; i < 4; i++)
    cr_upool_put(c[i]);
  stats(&f, 4, 0);
  /* The burst is over: the surplus halves each interval, down to the one most recently used. */
  RUN_UNTIL(&f, f.srv.peer_gone == 3, 2000);
  stats(&f, 1, 0);
  assert_int_equal(f.srv.peer_gone, 3);
  run_for(&f, 100);
  stats(&f, 1, 0);
  /* The survivor is the most recently used one. */
  {
    cr_upool_conn_t *again;
    assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &again, err, sizeof err), 1);
    assert_ptr_equal(again, c[3]);
    cr_upool_put(again);
  }
  fx_done(&f);

  /* idle_timeout closes even the last one; max_idle bounds the pool; max_idle 0 pools nothing. */
  {
    cr_upool_opts_t o2 = {.max_idle = 1, .idle_timeout_ms = 80};
    fx_init(&f, "server.pem", 0, &o2);
    c[0] = dial(&f);
    c[1] = dial(&f);
    cr_upool_put(c[0]);
    cr_upool_put(c[1]);
    stats(&f, 1, 0); /* over max_idle: the least recently used closed */
    RUN_UNTIL(&f, f.srv.peer_gone == 2, 2000);
    stats(&f, 0, 0);
    fx_done(&f);
  }
  fx_init(&f, "server.pem", 0, NULL);
  c[0] = dial(&f);
  cr_upool_put(c[0]);
  stats(&f, 0, 0);
  fx_done(&f);
}

static void test_generations(void **state) {
  cr_upool_opts_t o = {.max_idle = 4};
  cr_tls_ctx_opts_t to;
  cr_tls_ctx_t *tls;
  cr_upool_conn_t *lent, *idle, *c;
  char err[512];
  fx_t f;
  (void)state;
  fx_init(&f, "server.pem", 0, &o);
  lent = dial(&f);
  idle = dial(&f);
  cr_upool_put(idle);
  stats(&f, 1, 1);
  memset(&to, 0, sizeof to);
  to.ca_file = pki("ca.pem");
  to.alpn = "http/1.1";
  assert_int_equal(cr_tls_ctx_new(&to, &tls, err, sizeof err), 0);
  cr_upool_set_tls(f.pool, tls);
  cr_tls_ctx_free(tls); /* the pool holds its own reference */
  stats(&f, 0, 1);      /* the idle one closed at once */
  cr_upool_put(lent);   /* made under the old context: closed, not pooled */
  stats(&f, 0, 0);
  c = dial(&f); /* a new connection, under the new context */
  assert_false(cr_upool_conn_reused(c));
  cr_upool_put(c);
  stats(&f, 1, 0);
  fx_done(&f);
}

static void test_idle_peer_close(void **state) {
  cr_upool_opts_t o = {.max_idle = 4};
  cr_upool_conn_t *c;
  char err[256];
  fx_t f;
  (void)state;
  fx_init(&f, "server.pem", 0, &o);
  c = dial(&f);
  cr_upool_put(c);
  stats(&f, 1, 0);
  /* The server drops it while it sits in the pool: the pool notices, without anyone asking. */
  cr_stream_close(f.srv.conns[0], NULL);
  f.srv.conns[0] = NULL;
  RUN_UNTIL(&f, nidle(&f) == 0, 3000);
  stats(&f, 0, 0);
  /* The next connect dials. */
  assert_int_equal(cr_upool_connect(f.pool, on_ready, &f, &c, err, sizeof err), 0);
  RUN_UNTIL(&f, f.calls == 2, 3000);
  assert_int_equal(f.status, 0);
  cr_upool_close(c);
  fx_done(&f);
}

static int group_setup(void **state) {
  char err[512];
  (void)state;
  if (cr_tls_global_init(err, sizeof err) != 0) { /* before the PKI: its legacy PKCS#12 needs it */
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return pki_make();
}

static int group_teardown(void **state) {
  (void)state;
  pki_remove();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_take_put_reuse),
      cmocka_unit_test(test_connect_failures),
      cmocka_unit_test(test_cancel_while_connecting),
      cmocka_unit_test(test_purge_follows_demand),
      cmocka_unit_test(test_generations),
      cmocka_unit_test(test_idle_peer_close),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

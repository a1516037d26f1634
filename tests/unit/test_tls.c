/* SPDX-License-Identifier: Apache-2.0 */
/* TLS contexts, identities and streams: two cr_tls streams over real TCP on 127.0.0.1 in one libuv
 * loop, with a PKI generated at setup (tls_pki.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "ccrelay/error.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "mem_stream.h"
#include "tls_pki.h"

#define MIB (1024 * 1024)
#define ALPN "ccrelay/1"

typedef struct pair pair_t;

typedef struct peer {
  pair_t *pair;
  cr_stream_t *tcp; /* the lower stream, for tests that go around TLS */
  cr_stream_t *tls;
  int hs_done, hs_status;
  char hs_err[512];
  int ended, end_status; /* read EOF or error */
  char end_err[512];
  unsigned char *rx;
  size_t rx_len;
  size_t reads;
  int echo;              /* write back whatever arrives */
  int stop_on_first;     /* read_stop inside the first read callback */
  int shutdown_on_eof;
  int writes_done, writes_failed, shutdown_done;
  int closed;
} peer_t;

struct pair {
  uv_loop_t loop;
  uv_timer_t tick;
  cr_listener_t *listener;
  cr_tls_ctx_t *sctx, *cctx;
  const char *server_name;
  int close_client_in_handshake;
  peer_t srv, cli;
};

/* ---- contexts ---- */

static cr_tls_identity_src_t id_pem(const char *base) {
  char cert[64], key[64];
  cr_tls_identity_src_t src = {0};
  snprintf(cert, sizeof cert, "%s.pem", base);
  snprintf(key, sizeof key, "%s.key", base);
  src.cert = strdup(pki(cert));
  src.key = strdup(pki(key));
  return src;
}

static void id_pem_free(cr_tls_identity_src_t *src) {
  free((char *)src->cert);
  free((char *)src->key);
}

/* Contexts made below insist on ALPN unless a test turns this off (HTTP/1.1 upstreams and callers). */
static int alpn_required = 1;
/* Client contexts keep and offer sessions when a test turns this on (as upstream contexts do). */
static int client_resume;

static cr_tls_ctx_t *server_ctx(const char *cert, int require_client, const char *alpn, int tls13_only,
                                cr_tls_peer_check_cb check) {
  cr_tls_identity_src_t id = id_pem(cert);
  cr_tls_ctx_opts_t o = {0};
  cr_tls_ctx_t *ctx = NULL;
  char err[512];
  int r;
  o.server = 1;
  o.identity = &id;
  o.ca_file = require_client ? pki("ca.pem") : NULL;
  o.alpn = alpn;
  o.alpn_required = alpn_required;
  o.tls13_only = tls13_only;
  o.peer_check = check;
  r = cr_tls_ctx_new(&o, &ctx, err, sizeof err);
  if (r != 0)
    fail_msg("server ctx: %s", err);
  id_pem_free(&id);
  return ctx;
}

/* identity: a PEM base name, a .p12 file name, or NULL */
static cr_tls_ctx_t *client_ctx(const char *identity, const char *alpn) {
  cr_tls_identity_src_t id = {0};
  cr_tls_ctx_opts_t o = {0};
  cr_tls_ctx_t *ctx = NULL;
  char err[512];
  int r, pem = identity && strstr(identity, ".p12") == NULL;
  if (pem) {
    id = id_pem(identity);
  } else if (identity) {
    id.pkcs12 = pki(identity);
    id.password = PKI_PASS;
  }
  o.ca_file = pki("ca.pem");
  o.identity = identity ? &id : NULL;
  o.alpn = alpn;
  o.alpn_required = alpn_required;
  o.resume_sessions = client_resume;
  r = cr_tls_ctx_new(&o, &ctx, err, sizeof err);
  if (r != 0)
    fail_msg("client ctx: %s", err);
  if (pem)
    id_pem_free(&id);
  return ctx;
}

/* ---- a client and a server in one loop ---- */

static void on_closed(cr_stream_t *s) {
  peer_t *p = s->data;
  if (p)
    p->closed = 1;
}

static void on_hs(cr_stream_t *s, int status) {
  peer_t *p = s->data;
  p->hs_done = 1;
  p->hs_status = status;
  snprintf(p->hs_err, sizeof p->hs_err, "%s", cr_tls_stream_error(s));
}

static void echo_written(cr_stream_t *s, int status, void *arg) {
  peer_t *p = s->data;
  free(arg);
  if (status == 0)
    p->writes_done++;
  else
    p->writes_failed++;
}

static void on_shutdown(cr_stream_t *s, int status, void *arg) {
  peer_t *p = s->data;
  (void)arg;
  p->shutdown_done = status == 0 ? 1 : -1;
}

static void on_read(cr_stream_t *s, ssize_t n, const char *data) {
  peer_t *p = s->data;
  assert_false(p->ended); /* nothing after EOF or an error */
  if (n < 0) {
    p->ended = 1;
    p->end_status = (int)n;
    snprintf(p->end_err, sizeof p->end_err, "%s", cr_tls_stream_error(s));
    if (n == UV_EOF && p->shutdown_on_eof)
      assert_int_equal(cr_stream_shutdown(s, on_shutdown, NULL), 0);
    return;
  }
  p->reads++;
  p->rx = realloc(p->rx, p->rx_len + (size_t)n);
  memcpy(p->rx + p->rx_len, data, (size_t)n);
  p->rx_len += (size_t)n;
  if (p->echo) {
    char *copy = malloc((size_t)n);
    uv_buf_t b = uv_buf_init(copy, (unsigned)n);
    memcpy(copy, data, (size_t)n);
    assert_int_equal(cr_stream_write(s, &b, 1, echo_written, copy), 0);
  }
  if (p->stop_on_first && p->reads == 1)
    assert_int_equal(cr_stream_read_stop(s), 0);
}

static void on_connect(cr_stream_t *tcp, int status) {
  pair_t *pr = tcp->data;
  assert_int_equal(status, 0);
  pr->cli.tcp = tcp;
  pr->cli.tls = cr_tls_stream_new(tcp, pr->cctx, pr->server_name);
  pr->cli.tls->data = &pr->cli;
  assert_int_equal(cr_tls_stream_handshake(pr->cli.tls, on_hs), 0);
  if (pr->close_client_in_handshake)
    cr_stream_close(pr->cli.tls, on_closed); /* ClientHello is out; the server will answer */
}

static void on_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  pair_t *pr = arg;
  (void)l;
  assert_null(pr->srv.tls);
  pr->srv.tcp = conn;
  pr->srv.tls = cr_tls_stream_new(conn, pr->sctx, NULL);
  pr->srv.tls->data = &pr->srv;
  assert_int_equal(cr_tls_stream_handshake(pr->srv.tls, on_hs), 0);
}

static void tick(uv_timer_t *t) { (void)t; }

static pair_t *pair_start(cr_tls_ctx_t *sctx, cr_tls_ctx_t *cctx, const char *server_name) {
  pair_t *pr = calloc(1, sizeof *pr);
  cr_stream_t *tcp;
  char err[256];
  pr->srv.pair = pr;
  pr->cli.pair = pr;
  pr->sctx = sctx;
  pr->cctx = cctx;
  pr->server_name = server_name;
  assert_int_equal(uv_loop_init(&pr->loop), 0);
  uv_timer_init(&pr->loop, &pr->tick);
  uv_timer_start(&pr->tick, tick, 20, 20); /* wakes the loop so run_until can check its clock */
  assert_int_equal(cr_tcp_listen(&pr->loop, "127.0.0.1", 0, 16, on_accept, pr, &pr->listener, err, sizeof err), 0);
  assert_int_equal(cr_tcp_connect(&pr->loop, "127.0.0.1", cr_listener_port(pr->listener), on_connect, pr, &tcp), 0);
  return pr;
}

typedef int (*cond_fn)(pair_t *pr);

static int run_until(pair_t *pr, cond_fn cond) {
  uint64_t start = uv_now(&pr->loop);
  while (!cond(pr) && uv_now(&pr->loop) - start < 5000)
    uv_run(&pr->loop, UV_RUN_ONCE);
  return cond(pr);
}

static void run_for(pair_t *pr, uint64_t ms) {
  uint64_t start = uv_now(&pr->loop);
  while (uv_now(&pr->loop) - start < ms)
    uv_run(&pr->loop, UV_RUN_ONCE);
}

static int both_hs(pair_t *pr) { return pr->srv.hs_done && pr->cli.hs_done; }

static void pair_finish(pair_t *pr) {
  peer_t *peers[2] = {&pr->srv, &pr->cli};
  for (int i = 0; i < 2; i++) {
    peer_t *p = peers[i];
    if (p->tls)
      cr_stream_close(p->tls, on_closed);
    else if (p->tcp)
      cr_stream_close(p->tcp, on_closed);
  }
  if (pr->listener)
    cr_listener_close(pr->listener);
  uv_close((uv_handle_t *)&pr->tick, NULL);
  assert_int_equal(uv_run(&pr->loop, UV_RUN_DEFAULT), 0);
  for (int i = 0; i < 2; i++) {
    if (peers[i]->tls)
      assert_true(peers[i]->closed);
    free(peers[i]->rx);
  }
  assert_int_equal(uv_loop_close(&pr->loop), 0);
  cr_tls_ctx_free(pr->sctx);
  cr_tls_ctx_free(pr->cctx);
  free(pr);
}

/* In TLS 1.3 the client's handshake is complete once it sent Finished; a server that then rejects
 * the client's certificate is heard on the client's first read. Either way the client must fail. */
static int client_failed(pair_t *pr) {
  return pr->cli.hs_done && (pr->cli.hs_status != 0 || pr->cli.ended);
}

static void client_read_after_hs(pair_t *pr) {
  assert_true(run_until(pr, both_hs));
  if (pr->cli.hs_status == 0)
    assert_int_equal(cr_stream_read_start(pr->cli.tls, on_read), 0);
  assert_true(run_until(pr, client_failed));
}

static int client_status(pair_t *pr) { return pr->cli.hs_status ? pr->cli.hs_status : pr->cli.end_status; }
static const char *client_err(pair_t *pr) { return pr->cli.hs_status ? pr->cli.hs_err : pr->cli.end_err; }

/* ---- tests: streams ---- */

static int got_all_echo(pair_t *pr) { return pr->cli.rx_len >= MIB; }
static int both_eof(pair_t *pr) { return pr->srv.ended && pr->cli.ended && pr->srv.shutdown_done && pr->cli.shutdown_done; }

static void wrote(cr_stream_t *s, int status, void *arg) {
  peer_t *p = s->data;
  (void)arg;
  if (status == 0)
    p->writes_done++;
  else
    p->writes_failed++;
}

static int got_half_echo(pair_t *pr) { return pr->cli.rx_len >= MIB / 2; }

/* An idle process gives back the TLS and read buffers it keeps between records (free lists, the
 * shared plaintext and read buffers): the next exchange on the same connections is unaffected. */
static void test_release_caches_between_exchanges(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  unsigned char *data = malloc(MIB);
  uv_buf_t b;
  (void)state;
  for (size_t i = 0; i < MIB; i++)
    data[i] = (unsigned char)(i * 13 + (i >> 9));
  assert_true(run_until(pr, both_hs));
  pr->srv.echo = 1;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  assert_int_equal(cr_stream_read_start(pr->cli.tls, on_read), 0);
  b = uv_buf_init((char *)data, MIB / 2);
  assert_int_equal(cr_stream_write(pr->cli.tls, &b, 1, wrote, NULL), 0);
  assert_true(run_until(pr, got_half_echo));
  run_for(pr, 20); /* the last write completions come back: buffers on the free lists */
  cr_tls_release_caches();
  cr_stream_release_caches();
  b = uv_buf_init((char *)data + MIB / 2, MIB / 2);
  assert_int_equal(cr_stream_write(pr->cli.tls, &b, 1, wrote, NULL), 0);
  assert_true(run_until(pr, got_all_echo));
  assert_int_equal(pr->cli.rx_len, MIB);
  assert_memory_equal(pr->cli.rx, data, MIB);
  free(data);
  pair_finish(pr);
}

static void test_mtls_echo_1mib(void **state) {
  pair_t *pr;
  unsigned char *data = malloc(MIB);
  char cn[64];
  uv_buf_t bufs[4];
  (void)state;
  for (size_t i = 0; i < MIB; i++)
    data[i] = (unsigned char)(i * 7 + (i >> 10));
  pr = pair_start(server_ctx("server", 1, ALPN, 1, NULL), client_ctx("client_legacy_cli.p12", ALPN), "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, 0);
  assert_int_equal(pr->cli.hs_status, 0);
  assert_true(cr_stream_is_tls(pr->cli.tls));
  assert_string_equal(cr_tls_stream_alpn(pr->cli.tls), ALPN);
  assert_string_equal(cr_tls_stream_alpn(pr->srv.tls), ALPN);
  cr_x509_common_name(cr_tls_stream_peer_cert(pr->srv.tls), cn, sizeof cn);
  assert_string_equal(cn, "agent-1");
  cr_x509_common_name(cr_tls_stream_peer_cert(pr->cli.tls), cn, sizeof cn);
  assert_string_equal(cn, "localhost");

  pr->srv.echo = 1;
  pr->srv.shutdown_on_eof = 1;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  assert_int_equal(cr_stream_read_start(pr->cli.tls, on_read), 0);
  /* One write with several buffers, then two plain ones: 1 MiB in all. */
  bufs[0] = uv_buf_init((char *)data, 1000);
  bufs[1] = uv_buf_init((char *)data + 1000, 0);
  bufs[2] = uv_buf_init((char *)data + 1000, 300000 - 1000);
  assert_int_equal(cr_stream_write(pr->cli.tls, bufs, 3, wrote, NULL), 0);
  assert_int_equal(cr_stream_write_queue_size(pr->cli.tls), 300000);
  bufs[3] = uv_buf_init((char *)data + 300000, 500000);
  assert_int_equal(cr_stream_write(pr->cli.tls, &bufs[3], 1, wrote, NULL), 0);
  bufs[3] = uv_buf_init((char *)data + 800000, MIB - 800000);
  assert_int_equal(cr_stream_write(pr->cli.tls, &bufs[3], 1, wrote, NULL), 0);
  assert_int_equal(cr_stream_write_queue_size(pr->cli.tls), MIB);
  assert_true(run_until(pr, got_all_echo));
  assert_int_equal(pr->srv.rx_len, MIB);
  assert_int_equal(pr->cli.rx_len, MIB);
  assert_memory_equal(pr->srv.rx, data, MIB);
  assert_memory_equal(pr->cli.rx, data, MIB);
  assert_int_equal(pr->cli.writes_done, 3);
  assert_int_equal(cr_stream_write_queue_size(pr->cli.tls), 0);
  /* An empty write still completes, once. */
  assert_int_equal(cr_stream_write(pr->cli.tls, &bufs[1], 1, wrote, NULL), 0);
  run_for(pr, 20);
  assert_int_equal(pr->cli.writes_done, 4);

  /* close_notify both ways: the client ends, the server sees EOF and ends too. */
  assert_int_equal(cr_stream_shutdown(pr->cli.tls, on_shutdown, NULL), 0);
  assert_int_equal(cr_stream_write(pr->cli.tls, bufs, 1, wrote, NULL), UV_EPIPE);
  assert_true(run_until(pr, both_eof));
  assert_int_equal(pr->srv.end_status, UV_EOF);
  assert_int_equal(pr->cli.end_status, UV_EOF);
  assert_int_equal(pr->srv.shutdown_done, 1);
  assert_int_equal(pr->srv.writes_failed, 0);
  pair_finish(pr);
  free(data);
}

static void test_ip_literal_and_no_client_cert(void **state) {
  /* A server without ca_file asks for no client certificate; the client checks the IP SAN. */
  pair_t *pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "127.0.0.1");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, 0);
  assert_int_equal(pr->cli.hs_status, 0);
  assert_null(cr_tls_stream_peer_cert(pr->srv.tls));
  assert_string_equal(cr_tls_stream_alpn(pr->cli.tls), "");
  pair_finish(pr);
}

static void test_expired_server_cert(void **state) {
  pair_t *pr = pair_start(server_ctx("expired", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, CR_ETLS_VERIFY);
  assert_non_null(strstr(pr->cli.hs_err, "certificate has expired"));
  assert_int_equal(pr->srv.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.hs_err, "peer alert: certificate expired"));
  pair_finish(pr);
}

/* A role's own identity must be in date: the same expired certificate is refused when loaded as
 * one (identity_current), with the message `ccrelay check` prints too. A FIFO as the CA file is
 * refused at once instead of blocking. */
static void test_role_identity_current(void **state) {
  cr_tls_identity_src_t id = id_pem("expired");
  cr_tls_identity_t loaded;
  cr_tls_ctx_opts_t o = {0};
  cr_tls_ctx_t *ctx = NULL;
  char err[512], fifo[64];
  (void)state;
  assert_int_equal(cr_tls_identity_load_current(&id, &loaded, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, "expired.pem expired at "));
  assert_null(loaded.cert);
  o.server = 1;
  o.identity = &id;
  o.identity_current = 1;
  assert_int_equal(cr_tls_ctx_new(&o, &ctx, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, "expired.pem expired at "));
  assert_null(ctx);
  id_pem_free(&id);
  id = id_pem("server");
  assert_int_equal(cr_tls_identity_load_current(&id, &loaded, err, sizeof err), 0);
  cr_tls_identity_free(&loaded);
  snprintf(fifo, sizeof fifo, "/tmp/cr_tls_fifo_%d", (int)getpid());
  unlink(fifo);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  o.ca_file = fifo;
  assert_int_equal(cr_tls_ctx_new(&o, &ctx, err, sizeof err), CR_ENOT_REGULAR);
  assert_non_null(strstr(err, "is a FIFO, not a regular file"));
  unlink(fifo);
  id_pem_free(&id);
}

static void test_unknown_ca(void **state) {
  pair_t *pr = pair_start(server_ctx("unknown", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, CR_ETLS_VERIFY);
  assert_non_null(strstr(pr->cli.hs_err, "unable to get local issuer certificate"));
  assert_int_equal(pr->srv.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.hs_err, "unknown CA"));
  pair_finish(pr);
}

static void test_wrong_host(void **state) {
  pair_t *pr = pair_start(server_ctx("wronghost", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, CR_ETLS_VERIFY);
  assert_non_null(strstr(pr->cli.hs_err, "hostname mismatch"));
  pair_finish(pr);
}

static void test_wrong_ip(void **state) {
  pair_t *pr = pair_start(server_ctx("wronghost", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "127.0.0.1");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, CR_ETLS_VERIFY);
  assert_non_null(strstr(pr->cli.hs_err, "IP address mismatch"));
  pair_finish(pr);
}

static void test_client_cert_required(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 1, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  (void)state;
  client_read_after_hs(pr);
  assert_int_equal(pr->srv.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.hs_err, "peer did not return a certificate"));
  assert_int_equal(client_status(pr), CR_ETLS);
  assert_non_null(strstr(client_err(pr), "certificate required"));
  pair_finish(pr);
}

static void test_client_cert_required_tls12(void **state) {
  /* Under TLS 1.2 the client learns it during the handshake itself. */
  cr_tls_ctx_t *cctx = client_ctx(NULL, NULL);
  pair_t *pr;
  (void)state;
  SSL_CTX_set_max_proto_version(cr_tls_ctx_native(cctx), TLS1_2_VERSION);
  pr = pair_start(server_ctx("server", 1, NULL, 0, NULL), cctx, "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.hs_err, "peer did not return a certificate"));
  assert_int_equal(pr->cli.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->cli.hs_err, "peer alert: handshake failure"));
  pair_finish(pr);
}

static void test_alpn_mismatch(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 0, ALPN, 0, NULL), client_ctx(NULL, "http/1.1"), "localhost");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, CR_ETLS_ALPN);
  assert_int_equal(pr->cli.hs_status, CR_ETLS_ALPN);
  assert_non_null(strstr(pr->srv.hs_err, ALPN));
  assert_non_null(strstr(pr->cli.hs_err, "no application protocol"));
  pair_finish(pr);
}

static void test_alpn_not_offered(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 0, ALPN, 0, NULL), client_ctx(NULL, NULL), "localhost");
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, CR_ETLS_ALPN);
  assert_int_equal(pr->cli.hs_status, CR_ETLS_ALPN);
  pair_finish(pr);
}

/* HTTP/1.1 peers that do not speak ALPN at all are accepted when ALPN is not required. */
static void test_alpn_optional_for_http1(void **state) {
  pair_t *pr;
  (void)state;
  alpn_required = 0;
  pr = pair_start(server_ctx("server", 0, "http/1.1", 0, NULL), client_ctx(NULL, NULL), "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, 0);
  assert_int_equal(pr->cli.hs_status, 0);
  pair_finish(pr);
  pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, "http/1.1"), "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, 0);
  assert_int_equal(pr->cli.hs_status, 0);
  pair_finish(pr);
  /* A different protocol is still refused. */
  pr = pair_start(server_ctx("server", 0, "http/1.1", 0, NULL), client_ctx(NULL, "ccrelay/1"), "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, CR_ETLS_ALPN);
  pair_finish(pr);
  alpn_required = 1;
}

static int refuse_strangers(X509 *leaf, void *arg, char *why, size_t whylen) {
  char cn[64];
  (void)arg;
  cr_x509_common_name(leaf, cn, sizeof cn);
  if (strcmp(cn, "agent-1") == 0)
    return 0;
  snprintf(why, whylen, "agent certificate CN=%s maps to no relay group", cn);
  return 1;
}

static void test_peer_check(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 1, ALPN, 1, refuse_strangers), client_ctx("stranger", ALPN),
                          "localhost");
  (void)state;
  client_read_after_hs(pr);
  assert_int_equal(pr->srv.hs_status, CR_ETLS_VERIFY);
  assert_string_equal(pr->srv.hs_err, "agent certificate CN=stranger-agent maps to no relay group");
  assert_true(client_status(pr) < 0);
  pair_finish(pr);

  /* The same server accepts the agent it knows. */
  pr = pair_start(server_ctx("server", 1, ALPN, 1, refuse_strangers), client_ctx("client", ALPN), "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, 0);
  assert_int_equal(pr->cli.hs_status, 0);
  pair_finish(pr);
}

static int cli_got_byte(pair_t *pr) { return pr->cli.rx_len >= 1; }

/* Two connections with the same contexts; says whether the second resumed (both sides agree). */
static int second_resumes(cr_tls_ctx_t *s, cr_tls_ctx_t *c) {
  static char x[] = "x";
  uv_buf_t b = uv_buf_init(x, 1);
  int resumed = -1;
  for (int i = 0; i < 2; i++) {
    pair_t *pr = pair_start(cr_tls_ctx_ref(s), cr_tls_ctx_ref(c), "localhost");
    assert_true(run_until(pr, both_hs));
    assert_int_equal(pr->srv.hs_status, 0);
    assert_int_equal(pr->cli.hs_status, 0);
    if (i == 0) {
      assert_false(cr_tls_stream_resumed(pr->cli.tls));
      /* a TLS 1.3 ticket arrives after the handshake: the client reads to get it */
      assert_int_equal(cr_stream_read_start(pr->cli.tls, on_read), 0);
      assert_int_equal(cr_stream_write(pr->srv.tls, &b, 1, wrote, NULL), 0);
      assert_true(run_until(pr, cli_got_byte));
    } else {
      resumed = cr_tls_stream_resumed(pr->cli.tls);
      assert_int_equal(cr_tls_stream_resumed(pr->srv.tls), resumed);
    }
    pair_finish(pr); /* no close_notify: the client's kept copy must survive that */
  }
  return resumed;
}

/* A server that asks for client certificates resumes a returning client's session (without a session
 * id context OpenSSL would answer it with an internal-error alert); a server with a peer check issues
 * no tickets, so every handshake shows the check a certificate. */
static void test_session_resumption(void **state) {
  cr_tls_ctx_t *s, *c;
  (void)state;
  client_resume = 1;
  s = server_ctx("server", 1, ALPN, 0, NULL);
  c = client_ctx("client", ALPN);
  assert_int_equal(second_resumes(s, c), 1);
  cr_tls_ctx_free(s);
  cr_tls_ctx_free(c);

  s = server_ctx("server", 1, ALPN, 1, refuse_strangers);
  c = client_ctx("client", ALPN);
  assert_int_equal(second_resumes(s, c), 0);
  cr_tls_ctx_free(s);
  cr_tls_ctx_free(c);

  client_resume = 0; /* a client that keeps no session never resumes */
  s = server_ctx("server", 1, ALPN, 0, NULL);
  c = client_ctx("client", ALPN);
  assert_int_equal(second_resumes(s, c), 0);
  cr_tls_ctx_free(s);
  cr_tls_ctx_free(c);
}

static void test_tls13_only_refuses_tls12(void **state) {
  cr_tls_ctx_t *cctx = client_ctx(NULL, NULL);
  pair_t *pr;
  (void)state;
  SSL_CTX_set_max_proto_version(cr_tls_ctx_native(cctx), TLS1_2_VERSION);
  pr = pair_start(server_ctx("server", 0, NULL, 1, NULL), cctx, "localhost");
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->srv.hs_status, CR_ETLS);
  assert_int_equal(pr->cli.hs_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.hs_err, "unsupported protocol"));
  assert_non_null(strstr(pr->cli.hs_err, "protocol version"));
  pair_finish(pr);
}

static int client_ended(pair_t *pr) { return pr->cli.ended; }
static int server_wrote(pair_t *pr) { return pr->srv.writes_done > 0; }

static void test_truncation(void **state) {
  pair_t *pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  uv_buf_t b = uv_buf_init((char *)"hello", 5);
  (void)state;
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, 0);
  assert_int_equal(cr_stream_read_start(pr->cli.tls, on_read), 0);
  assert_int_equal(cr_stream_write(pr->srv.tls, &b, 1, wrote, NULL), 0);
  /* Writes leave in batches at the end of a loop turn: let this one reach TCP first. */
  assert_true(run_until(pr, server_wrote));
  /* FIN on the raw TCP under the server's TLS: no close_notify. */
  assert_int_equal(cr_stream_shutdown(pr->srv.tcp, NULL, NULL), 0);
  assert_true(run_until(pr, client_ended));
  assert_int_equal(pr->cli.rx_len, 5);
  assert_int_equal(pr->cli.end_status, CR_ETLS_TRUNCATED);
  assert_non_null(strstr(pr->cli.end_err, "close_notify"));
  pair_finish(pr);
}

static int server_got_all(pair_t *pr) { return pr->srv.rx_len >= 90000; }
static int server_got_1(pair_t *pr) { return pr->srv.reads >= 1; }
static int server_ended(pair_t *pr) { return pr->srv.ended; }

/* A connected pair whose client sent n records of 9000 bytes (big enough to be encrypted at once:
 * small writes share a record) while the server was not reading. */
static pair_t *pair_with_records(int n) {
  pair_t *pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  static char chunk[9000];
  uv_buf_t b = uv_buf_init(chunk, sizeof chunk);
  memset(chunk, 'x', sizeof chunk);
  assert_true(run_until(pr, both_hs));
  for (int i = 0; i < n; i++)
    assert_int_equal(cr_stream_write(pr->cli.tls, &b, 1, wrote, NULL), 0);
  return pr;
}

/* The server starts reading, stops inside its first delivery, and must hear nothing more; then it
 * reads again. */
static void read_first_then_resume(pair_t *pr) {
  run_for(pr, 50);
  assert_int_equal(pr->srv.reads, 0); /* not reading yet: nothing delivered */
  pr->srv.stop_on_first = 1;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  assert_int_equal(pr->srv.reads, 0); /* never inside read_start */
  assert_true(run_until(pr, server_got_1));
  run_for(pr, 100);
  assert_int_equal(pr->srv.reads, 1);
  assert_false(pr->srv.ended); /* an end found behind the data waits for the user to read again */
  pr->srv.stop_on_first = 0;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  assert_false(pr->srv.ended);
}

/* Ten records: one read event brings several, delivered together; a read_stop inside that delivery
 * holds the rest back until read_start. */
static void test_read_stop(void **state) {
  pair_t *pr = pair_with_records(10);
  (void)state;
  assert_int_equal(cr_stream_shutdown(pr->cli.tls, NULL, NULL), 0);
  read_first_then_resume(pr);
  assert_int_equal(pr->srv.rx_len % 9000, 0); /* whole records */
  assert_true(pr->srv.rx_len >= 18000);       /* more than one per delivery */
  assert_true(pr->srv.rx_len < 90000);        /* the stop held the rest back */
  assert_true(run_until(pr, server_got_all));
  run_for(pr, 30);
  assert_int_equal(pr->srv.rx_len, 90000);
  assert_true(pr->srv.ended);
  assert_int_equal(pr->srv.end_status, UV_EOF);
  pair_finish(pr);
}

/* The TLS streams of a pair over an in-memory lower pair (no sockets): the bytes a lower end has not
 * read yet are visible, and one lower read brings at most 16 KiB. */
static pair_t *mem_pair_start(void) {
  pair_t *pr = calloc(1, sizeof *pr);
  pr->srv.pair = pr;
  pr->cli.pair = pr;
  pr->sctx = server_ctx("server", 0, NULL, 0, NULL);
  pr->cctx = client_ctx(NULL, NULL);
  assert_int_equal(uv_loop_init(&pr->loop), 0);
  uv_timer_init(&pr->loop, &pr->tick);
  uv_timer_start(&pr->tick, tick, 20, 20);
  mem_pair(&pr->loop, &pr->cli.tcp, &pr->srv.tcp);
  pr->cli.tls = cr_tls_stream_new(pr->cli.tcp, pr->cctx, "localhost");
  pr->srv.tls = cr_tls_stream_new(pr->srv.tcp, pr->sctx, NULL);
  pr->cli.tls->data = &pr->cli;
  pr->srv.tls->data = &pr->srv;
  assert_int_equal(cr_tls_stream_handshake(pr->srv.tls, on_hs), 0);
  assert_int_equal(cr_tls_stream_handshake(pr->cli.tls, on_hs), 0);
  assert_true(run_until(pr, both_hs));
  assert_int_equal(pr->cli.hs_status, 0);
  assert_int_equal(pr->srv.hs_status, 0);
  return pr;
}

#define PUSHBACK_TOTAL (4 * (size_t)MIB)
static int server_got_pushback_total(pair_t *pr) { return pr->srv.rx_len >= PUSHBACK_TOTAL; }

/* A reader that stopped takes at most one more lower read of what the peer sends: the rest stays
 * unread below it (backpressure to the sender, whatever the owner's read_stop/read_start rhythm),
 * and everything arrives once reading resumes. */
static void test_stopped_reader_pushes_back(void **state) {
  pair_t *pr = mem_pair_start();
  static char chunk[64 * 1024];
  uv_buf_t b = uv_buf_init(chunk, sizeof chunk);
  size_t unread;
  (void)state;
  memset(chunk, 'y', sizeof chunk);
  pr->srv.stop_on_first = 1;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  for (size_t i = 0; i < PUSHBACK_TOTAL / sizeof chunk; i++)
    assert_int_equal(cr_stream_write(pr->cli.tls, &b, 1, wrote, NULL), 0);
  assert_true(run_until(pr, server_got_1));
  run_for(pr, 100);
  assert_int_equal(pr->srv.reads, 1);
  unread = ((mem_end_t *)pr->srv.tcp)->in.len;
  if (unread + 4 * 16384 < PUSHBACK_TOTAL)
    fail_msg("the stopped reader kept reading: %zu of %zu bytes left below it", unread, PUSHBACK_TOTAL);
  pr->srv.stop_on_first = 0;
  assert_int_equal(cr_stream_read_start(pr->srv.tls, on_read), 0);
  assert_true(run_until(pr, server_got_pushback_total));
  assert_int_equal(pr->srv.rx_len, PUSHBACK_TOTAL);
  assert_int_equal(pr->cli.writes_failed, 0);
  pair_finish(pr);
}

/* Records and the peer's close_notify in one read: the data is delivered first, the end after it. */
static void test_end_behind_data(void **state) {
  pair_t *pr = pair_with_records(3);
  (void)state;
  assert_int_equal(cr_stream_shutdown(pr->cli.tls, NULL, NULL), 0);
  read_first_then_resume(pr);
  assert_int_equal(pr->srv.rx_len, 27000);
  assert_true(run_until(pr, server_ended));
  assert_int_equal(pr->srv.reads, 1);
  assert_int_equal(pr->srv.end_status, UV_EOF);
  pair_finish(pr);
}

/* Records and then a forged one in one read: the good data is delivered first, and the failure is
 * reported after it with the reason OpenSSL gave when it happened. */
static void test_failure_behind_data(void **state) {
  pair_t *pr = pair_with_records(2);
  static char forged[5 + 32] = {0x17, 0x03, 0x03, 0x00, 0x20}; /* application data, 32 bytes of zeros */
  uv_buf_t f = uv_buf_init(forged, sizeof forged);
  (void)state;
  run_for(pr, 30); /* the records leave before the forged bytes */
  assert_int_equal(cr_stream_write(pr->cli.tcp, &f, 1, NULL, NULL), 0);
  read_first_then_resume(pr);
  assert_int_equal(pr->srv.rx_len, 18000);
  assert_true(run_until(pr, server_ended));
  assert_int_equal(pr->srv.reads, 1);
  assert_int_equal(pr->srv.end_status, CR_ETLS);
  assert_non_null(strstr(pr->srv.end_err, "bad record mac"));
  pair_finish(pr);
}

static int server_hs_cli_closed(pair_t *pr) { return pr->srv.hs_done && pr->cli.closed; }

static void test_close_during_handshake(void **state) {
  pair_t *pr;
  (void)state;
  pr = pair_start(server_ctx("server", 0, NULL, 0, NULL), client_ctx(NULL, NULL), "localhost");
  pr->close_client_in_handshake = 1;
  assert_true(run_until(pr, server_hs_cli_closed));
  assert_false(pr->cli.hs_done); /* the client's callback never fired */
  assert_true(pr->srv.hs_status < 0);
  pr->cli.tls = NULL;
  pr->cli.tcp = NULL;
  pair_finish(pr);
}

/* ---- tests: identities and contexts ---- */

static int load(const char *p12, const char *pass, char *err, size_t errlen) {
  cr_tls_identity_src_t src = {0};
  cr_tls_identity_t id;
  int r;
  src.pkcs12 = pki(p12);
  src.password = pass;
  r = cr_tls_identity_load(&src, &id, err, errlen);
  if (r == 0) {
    char cn[64];
    cr_x509_common_name(id.cert, cn, sizeof cn);
    assert_string_equal(cn, "agent-1");
    assert_non_null(id.key);
    assert_non_null(id.chain);
    assert_int_equal(sk_X509_num(id.chain), 1);
    cr_tls_identity_free(&id);
  }
  return r;
}

static void test_identity_pkcs12(void **state) {
  char err[512] = "";
  (void)state;
  assert_int_equal(load("client_legacy_cli.p12", PKI_PASS, err, sizeof err), 0);
  assert_int_equal(load("client_legacy_api.p12", PKI_PASS, err, sizeof err), 0);
  assert_int_equal(load("client.p12", PKI_PASS, err, sizeof err), 0);

  assert_int_equal(load("client.p12", "wrong", err, sizeof err), CR_EP12_PASSWORD);
  assert_non_null(strstr(err, pki("client.p12")));
  assert_non_null(strstr(err, "password_file"));
  assert_int_equal(load("client_legacy_cli.p12", "", err, sizeof err), CR_EP12_PASSWORD);
  assert_null(strstr(err, PKI_PASS));

  assert_int_equal(load("corrupt.p12", PKI_PASS, err, sizeof err), CR_EP12_CORRUPT);
  assert_non_null(strstr(err, pki("corrupt.p12")));
  assert_int_equal(load("ca.pem", PKI_PASS, err, sizeof err), CR_EP12_CORRUPT);

  assert_int_equal(load("md2.p12", PKI_PASS, err, sizeof err), CR_EP12_UNSUPPORTED);
  assert_non_null(strstr(err, pki("md2.p12")));
  assert_null(strstr(err, PKI_PASS));

  assert_int_equal(load("missing.p12", PKI_PASS, err, sizeof err), UV_ENOENT);
  assert_non_null(strstr(err, pki("missing.p12")));
}

static void test_identity_pem(void **state) {
  cr_tls_identity_src_t src = {0};
  cr_tls_identity_t id;
  char err[512] = "";
  (void)state;
  src.cert = pki("client.pem");
  src.key = pki("client.key");
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), 0);
  assert_int_equal(sk_X509_num(id.chain), 0);
  cr_tls_identity_free(&id);

  src.key = pki("server.key");
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), CR_EKEY_MISMATCH);
  assert_non_null(strstr(err, pki("server.key")));
  assert_non_null(strstr(err, "CN=agent-1"));

  src.key = pki("client.pem");
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, pki("client.pem")));

  /* An encrypted key: the password opens it; without one it fails at once (never a tty prompt). */
  src.key = pki("client_enc.key");
  src.password = PKI_PASS;
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), 0);
  cr_tls_identity_free(&id);
  src.password = NULL;
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, "password_file"));
  src.password = "Zq9-not-it";
  assert_int_equal(cr_tls_identity_load(&src, &id, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, pki("client_enc.key")));
  assert_null(strstr(err, "Zq9-not-it"));
}

static void test_ctx_errors(void **state) {
  cr_tls_ctx_opts_t o = {0};
  cr_tls_ctx_t *ctx = NULL;
  char err[512] = "";
  (void)state;
  o.ca_file = pki("ca_empty.pem");
  assert_true(cr_tls_ctx_new(&o, &ctx, err, sizeof err) < 0);
  assert_non_null(strstr(err, pki("ca_empty.pem")));
  o.ca_file = pki("nope.pem");
  assert_true(cr_tls_ctx_new(&o, &ctx, err, sizeof err) < 0);
  assert_non_null(strstr(err, pki("nope.pem")));
  o.ca_file = NULL;
  assert_int_equal(cr_tls_ctx_new(&o, &ctx, err, sizeof err), CR_ECONFIG);
  o.server = 1;
  assert_int_equal(cr_tls_ctx_new(&o, &ctx, err, sizeof err), CR_ECONFIG);
  assert_null(ctx);
}

static void test_names(void **state) {
  X509 *x;
  FILE *f = fopen(pki("client.pem"), "r");
  char out[128];
  (void)state;
  assert_non_null(f);
  x = PEM_read_X509(f, NULL, NULL, NULL);
  fclose(f);
  cr_x509_name_oneline(X509_get_subject_name(x), out, sizeof out);
  assert_string_equal(out, "CN=agent-1, O=ccrelay tests");
  cr_x509_common_name(x, out, sizeof out);
  assert_string_equal(out, "agent-1");
  X509_free(x);
}

static int group_setup(void **state) {
  char err[256];
  (void)state;
  if (cr_tls_global_init(err, sizeof err) != 0) {
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
      cmocka_unit_test(test_identity_pkcs12),
      cmocka_unit_test(test_identity_pem),
      cmocka_unit_test(test_ctx_errors),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_mtls_echo_1mib),
      cmocka_unit_test(test_ip_literal_and_no_client_cert),
      cmocka_unit_test(test_expired_server_cert),
      cmocka_unit_test(test_role_identity_current),
      cmocka_unit_test(test_unknown_ca),
      cmocka_unit_test(test_wrong_host),
      cmocka_unit_test(test_wrong_ip),
      cmocka_unit_test(test_client_cert_required),
      cmocka_unit_test(test_client_cert_required_tls12),
      cmocka_unit_test(test_alpn_mismatch),
      cmocka_unit_test(test_alpn_not_offered),
      cmocka_unit_test(test_alpn_optional_for_http1),
      cmocka_unit_test(test_peer_check),
      cmocka_unit_test(test_session_resumption),
      cmocka_unit_test(test_tls13_only_refuses_tls12),
      cmocka_unit_test(test_truncation),
      cmocka_unit_test(test_read_stop),
      cmocka_unit_test(test_stopped_reader_pushes_back),
      cmocka_unit_test(test_release_caches_between_exchanges),
      cmocka_unit_test(test_end_behind_data),
      cmocka_unit_test(test_failure_behind_data),
      cmocka_unit_test(test_close_during_handshake),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

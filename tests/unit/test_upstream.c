/* SPDX-License-Identifier: Apache-2.0 */
/* The upstream client against a real HTTPS server on 127.0.0.1: an in-process server built from
 * cr_tcp_listen + a server-side TLS stream that requires a client certificate, and a small
 * hand-written HTTP/1.1 responder. Certificates come from the openssl CLI into a mkdtemp dir. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/queue.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "ccrelay/upstream.h"

static char pki[PATH_MAX];

static const char *pki_path(const char *file) {
  static char paths[8][PATH_MAX + 64];
  static unsigned next;
  char *p = paths[next++ % 8];
  snprintf(p, PATH_MAX + 64, "%s/%s", pki, file);
  return p;
}

/* ---- test PKI ---- */

static const char mkcerts_sh[] =
    "set -e\n"
    "cd \"$1\"\n"
    "ec='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "ca() { openssl req -x509 $ec -keyout $1.key -out $1.pem -subj \"/CN=$2\" -days 2 "
    "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null; }\n"
    "leaf() { openssl req $ec -keyout $1.key -out $1.csr -subj \"/CN=$3\" 2>/dev/null;"
    " printf '%b\\n' \"$5\" > $1.ext;"
    " openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days $4 -extfile $1.ext"
    " -out $1.pem 2>/dev/null; }\n"
    "srv='subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth'\n"
    "ca ca 'ccrelay upstream test CA'\n"
    "ca other-ca 'ccrelay unrelated CA'\n"
    "ca client-ca 'ccrelay client CA'\n"
    "leaf server ca localhost 2 \"$srv\"\n"
    "leaf expired ca localhost -1 \"$srv\"\n"
    "leaf unknownca other-ca localhost 2 \"$srv\"\n"
    "leaf wronghost ca wrong.example 2 'subjectAltName=DNS:wrong.example\\nextendedKeyUsage=serverAuth'\n"
    "leaf client client-ca 'CMS JSON connector' 2 'extendedKeyUsage=clientAuth'\n"
    "openssl pkcs12 -export -in client.pem -inkey client.key -certfile client-ca.pem -name client "
    "-passout pass:s3cret -out client.p12\n";

static int group_setup(void **state) {
  char cmd[2 * PATH_MAX + 64];
  char script[PATH_MAX + 32];
  char err[512];
  FILE *f;
  (void)state;
  snprintf(pki, sizeof pki, "/tmp/cr_upstream_XXXXXX");
  if (mkdtemp(pki) == NULL)
    return -1;
  snprintf(script, sizeof script, "%s/mkcerts.sh", pki);
  f = fopen(script, "w");
  if (f == NULL)
    return -1;
  fputs(mkcerts_sh, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "sh %s %s", script, pki);
  if (system(cmd) != 0)
    return -1;
  if (cr_tls_global_init(err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  char cmd[PATH_MAX + 32];
  (void)state;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", pki);
  return system(cmd) == 0 ? 0 : -1;
}

/* ---- body pattern ---- */

static unsigned char pat(size_t i) { return (unsigned char)((i * 131u) ^ (i >> 9)); }

static char *pattern(size_t off, size_t n) {
  char *p = cr_malloc(n ? n : 1);
  for (size_t i = 0; i < n; i++)
    p[i] = (char)pat(off + i);
  return p;
}

static int is_pattern(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] != pat(i))
      return 0;
  return 1;
}

/* ---- the server ---- */

typedef enum { SRV_TLS, SRV_SILENT } srv_mode_t;

typedef struct server {
  uv_loop_t *loop;
  cr_listener_t *l;
  cr_tls_ctx_t *ctx;
  srv_mode_t mode;
  unsigned port;
  int accepted;
  int resumed; /* handshakes that resumed a session */
  int requests;
  size_t body_bytes; /* request body bytes received, over all requests */
  char last_method[16];
  char last_target[256];
  char last_host[256];
  int last_chunked;
  cr_buf_t last_body;
  cr_queue_t conns;
} server_t;

enum { SC_HEAD, SC_CL, SC_CHUNK_SIZE, SC_CHUNK_DATA, SC_CHUNK_CRLF, SC_TRAILER, SC_DONE };

typedef struct sconn {
  server_t *srv;
  cr_stream_t *s;
  cr_queue_t link;
  cr_buf_t in;
  cr_buf_t body;
  int state;
  size_t left;
  int chunked;
  int closing;
  int answered; /* /early: the response went out at the head; the body is read and dropped */
  char method[16];
  char target[256];
} sconn_t;

static void sconn_closed(cr_stream_t *s) {
  sconn_t *sc = s->data;
  cr_buf_free(&sc->in);
  cr_buf_free(&sc->body);
  free(sc);
}

static void sconn_close(sconn_t *sc) {
  if (sc->closing)
    return;
  sc->closing = 1;
  cr_queue_remove(&sc->link);
  sc->s->data = sc;
  cr_stream_close(sc->s, sconn_closed);
}

static void free_arg_cb(cr_stream_t *s, int status, void *arg) { free(arg); }

static void send_raw(sconn_t *sc, char *data, size_t len) {
  uv_buf_t b = uv_buf_init(data, (unsigned)len);
  if (cr_stream_write(sc->s, &b, 1, free_arg_cb, data) < 0)
    free(data);
}

static void send_str(sconn_t *sc, const char *s) { send_raw(sc, cr_strdup(s), strlen(s)); }

static void shutdown_then_close(cr_stream_t *s, int status, void *arg) { sconn_close(arg); }

static void respond_body(sconn_t *sc, const char *body, size_t len, int chunked, const char *extra) {
  cr_buf_t out;
  char *copy;
  cr_buf_init(&out, 0);
  if (chunked) {
    size_t off = 0, piece = 1000;
    cr_buf_appendf(&out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n", extra);
    while (off < len) {
      size_t n = CR_MIN(piece, len - off);
      cr_buf_appendf(&out, "%zx\r\n", n);
      cr_buf_append(&out, body + off, n);
      cr_buf_append(&out, "\r\n", 2);
      off += n;
      piece = piece * 3 + 7; /* varied chunk sizes */
    }
    cr_buf_append(&out, "0\r\n\r\n", 5);
  } else {
    cr_buf_appendf(&out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n", len, extra);
    cr_buf_append(&out, body, len);
  }
  copy = out.base;
  send_raw(sc, copy, out.len);
}

static void respond(sconn_t *sc) {
  server_t *srv = sc->srv;
  const char *t = sc->target;
  if (sc->answered) {
    sc->answered = 0;
    cr_buf_reset(&sc->body);
    sc->state = SC_HEAD;
    return;
  }
  srv->requests++;
  snprintf(srv->last_method, sizeof srv->last_method, "%s", sc->method);
  snprintf(srv->last_target, sizeof srv->last_target, "%s", t);
  srv->last_chunked = sc->chunked;
  cr_buf_reset(&srv->last_body);
  cr_buf_append(&srv->last_body, sc->body.base, sc->body.len);
  if (strcmp(t, "/slow") == 0) {
    sc->state = SC_DONE;
    return;
  }
  if (strcmp(t, "/hello") == 0) {
    respond_body(sc, "hello", 5, 0, "");
  } else if (strcmp(t, "/head") == 0) {
    send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
  } else if (strcmp(t, "/interim") == 0) {
    send_str(sc, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    respond_body(sc, "final", 5, 0, "");
  } else if (strncmp(t, "/echo", 5) == 0) {
    respond_body(sc, sc->body.base ? sc->body.base : "", sc->body.len, strstr(t, "chunked") != NULL, "");
  } else if (strncmp(t, "/big", 4) == 0) {
    size_t n = strtoul(t + 7, NULL, 10); /* "/big?n=N[&chunked]" */
    char *p = pattern(0, n);
    respond_body(sc, p, n, strstr(t, "chunked") != NULL, "");
    free(p);
  } else if (strcmp(t, "/close") == 0) {
    respond_body(sc, "bye", 3, 0, "Connection: close\r\n");
    cr_stream_shutdown(sc->s, shutdown_then_close, sc);
    sc->state = SC_DONE;
    return;
  } else if (strcmp(t, "/stall") == 0) {
    send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
  } else if (strcmp(t, "/garbage") == 0) {
    send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nno colon here\r\n\r\nhello");
  } else if (strcmp(t, "/cut") == 0) {
    send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    cr_stream_shutdown(sc->s, shutdown_then_close, sc);
    sc->state = SC_DONE;
    return;
  } else if (strcmp(t, "/extra") == 0) {
    send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n");
  } else {
    send_str(sc, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
  }
  cr_buf_reset(&sc->body);
  sc->state = SC_HEAD;
}

static const char *find_header(const char *head, const char *name, char *out, size_t outlen) {
  const char *p = head;
  size_t nlen = strlen(name);
  while ((p = strstr(p, "\r\n")) != NULL) {
    p += 2;
    if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
      const char *v = p + nlen + 1, *e = strstr(v, "\r\n");
      while (*v == ' ')
        v++;
      snprintf(out, outlen, "%.*s", (int)(e - v), v);
      return out;
    }
  }
  return NULL;
}

/* Returns 0 when more input is needed. */
static int sconn_step(sconn_t *sc) {
  server_t *srv = sc->srv;
  char *end, val[256];
  size_t n;
  switch (sc->state) {
  case SC_HEAD:
    if (sc->in.len == 0)
      return 0;
    end = memmem(sc->in.base, sc->in.len, "\r\n\r\n", 4);
    if (end == NULL)
      return 0;
    *end = '\0';
    sscanf(sc->in.base, "%15s %255s", sc->method, sc->target);
    if (find_header(sc->in.base, "Host", val, sizeof val))
      snprintf(srv->last_host, sizeof srv->last_host, "%s", val);
    sc->chunked = find_header(sc->in.base, "Transfer-Encoding", val, sizeof val) != NULL;
    sc->left = find_header(sc->in.base, "Content-Length", val, sizeof val) ? strtoul(val, NULL, 10) : 0;
    cr_buf_consume(&sc->in, (size_t)(end + 4 - sc->in.base));
    sc->state = sc->chunked ? SC_CHUNK_SIZE : SC_CL;
    if (strcmp(sc->target, "/early") == 0) {
      /* like nginx's `return`: answer at the head, keep the connection, discard the body */
      srv->requests++;
      sc->answered = 1;
      send_str(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
    }
    return 1;
  case SC_CL:
    n = CR_MIN(sc->left, sc->in.len);
    cr_buf_append(&sc->body, sc->in.base, n);
    srv->body_bytes += n;
    cr_buf_consume(&sc->in, n);
    sc->left -= n;
    if (sc->left > 0)
      return 0;
    respond(sc);
    return 1;
  case SC_CHUNK_SIZE:
    end = sc->in.len ? memmem(sc->in.base, sc->in.len, "\r\n", 2) : NULL;
    if (end == NULL)
      return 0;
    sc->left = strtoul(sc->in.base, NULL, 16);
    cr_buf_consume(&sc->in, (size_t)(end + 2 - sc->in.base));
    sc->state = sc->left ? SC_CHUNK_DATA : SC_TRAILER;
    return 1;
  case SC_CHUNK_DATA:
    n = CR_MIN(sc->left, sc->in.len);
    if (n == 0)
      return 0;
    cr_buf_append(&sc->body, sc->in.base, n);
    srv->body_bytes += n;
    cr_buf_consume(&sc->in, n);
    sc->left -= n;
    if (sc->left == 0)
      sc->state = SC_CHUNK_CRLF;
    return 1;
  case SC_CHUNK_CRLF:
  case SC_TRAILER:
    if (sc->in.len < 2)
      return 0;
    assert_memory_equal(sc->in.base, "\r\n", 2);
    cr_buf_consume(&sc->in, 2);
    if (sc->state == SC_TRAILER) {
      respond(sc);
      return 1;
    }
    sc->state = SC_CHUNK_SIZE;
    return 1;
  default:
    return 0;
  }
}

static void sconn_read(cr_stream_t *s, ssize_t nread, const char *data) {
  sconn_t *sc = s->data;
  if (nread < 0) {
    sconn_close(sc);
    return;
  }
  cr_buf_append(&sc->in, data, (size_t)nread);
  while (!sc->closing && sconn_step(sc))
    ;
}

static void sconn_handshake(cr_stream_t *s, int status) {
  sconn_t *sc = s->data;
  if (status < 0) {
    sconn_close(sc);
    return;
  }
  if (cr_tls_stream_resumed(s))
    sc->srv->resumed++;
  cr_stream_read_start(s, sconn_read);
}

static void on_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  server_t *srv = arg;
  sconn_t *sc = cr_calloc(1, sizeof *sc);
  srv->accepted++;
  sc->srv = srv;
  cr_buf_init(&sc->in, 0);
  cr_buf_init(&sc->body, 0);
  cr_queue_insert_tail(&srv->conns, &sc->link);
  if (srv->mode == SRV_SILENT) {
    sc->s = conn;
    conn->data = sc;
    return;
  }
  sc->s = cr_tls_stream_new(conn, srv->ctx, NULL);
  sc->s->data = sc;
  assert_int_equal(cr_tls_stream_handshake(sc->s, sconn_handshake), 0);
}

static void server_start(server_t *srv, uv_loop_t *loop, srv_mode_t mode, const char *cert) {
  cr_tls_identity_src_t id = {0};
  cr_tls_ctx_opts_t o = {0};
  char err[512];
  memset(srv, 0, sizeof *srv);
  srv->loop = loop;
  srv->mode = mode;
  cr_queue_init(&srv->conns);
  cr_buf_init(&srv->last_body, 0);
  if (mode == SRV_TLS) {
    char key[PATH_MAX + 64], crt[PATH_MAX + 64];
    snprintf(key, sizeof key, "%s/%s.key", pki, cert);
    snprintf(crt, sizeof crt, "%s/%s.pem", pki, cert);
    id.cert = crt;
    id.key = key;
    o.server = 1;
    o.ca_file = pki_path("client-ca.pem"); /* mTLS: a client certificate is required */
    o.identity = &id;
    o.alpn = "http/1.1";
    if (cr_tls_ctx_new(&o, &srv->ctx, err, sizeof err) != 0)
      fail_msg("server ctx: %s", err);
  }
  if (cr_tcp_listen(loop, "127.0.0.1", 0, 64, on_accept, srv, &srv->l, err, sizeof err) != 0)
    fail_msg("listen: %s", err);
  srv->port = cr_listener_port(srv->l);
}

static void server_drop_conns(server_t *srv) {
  while (!cr_queue_empty(&srv->conns))
    sconn_close(cr_queue_data(cr_queue_head(&srv->conns), sconn_t, link));
}

static void server_stop(server_t *srv) {
  server_drop_conns(srv);
  if (srv->l)
    cr_listener_close(srv->l);
  srv->l = NULL;
  if (srv->ctx)
    cr_tls_ctx_free(srv->ctx);
  srv->ctx = NULL;
  cr_buf_free(&srv->last_body);
}

/* ---- the client side ---- */

typedef struct tc {
  uv_loop_t loop;
  server_t srv;
  cr_upstream_t *u;
  cr_upstream_req_t *req;
  int heads, ends, errors, bodies, writables;
  int status;
  int err;
  char detail[512];
  cr_buf_t body;
  int paused;           /* the test paused the response */
  int body_while_paused;
  int pause_at_first_body;
  int cancel_in;        /* 1: cancel in on_head, 2: cancel in on_body */
  int again;            /* start a second /hello from on_end */
  uint64_t purge_ms;    /* the upstream's purge interval; 0 for the default */
  size_t early_rest;    /* body bytes to write from on_head, after a first 1000 */
  uv_timer_t t;
} tc_t;

static tc_t *tc_new(srv_mode_t mode, const char *cert) {
  tc_t *t = cr_calloc(1, sizeof *t);
  assert_int_equal(uv_loop_init(&t->loop), 0);
  cr_buf_init(&t->body, 0);
  if (cert != NULL || mode == SRV_SILENT)
    server_start(&t->srv, &t->loop, mode, cert);
  uv_timer_init(&t->loop, &t->t);
  t->t.data = t;
  return t;
}

static void tc_upstream(tc_t *t, unsigned port, uint64_t connect_ms, uint64_t response_ms, uint64_t idle_ms) {
  static cr_tls_identity_src_t id;
  cr_upstream_opts_t o = {0};
  char err[512];
  id.pkcs12 = pki_path("client.p12");
  id.password = "s3cret";
  o.name = "test";
  o.host = "127.0.0.1";
  o.port = port;
  o.server_name = "localhost";
  o.ca_file = pki_path("ca.pem");
  o.identity = &id;
  o.connect_timeout_ms = connect_ms;
  o.response_timeout_ms = response_ms;
  o.idle_timeout_ms = idle_ms;
  o.max_idle = 4;
  o.purge_interval_ms = t->purge_ms;
  if (cr_upstream_new(&t->loop, &o, &t->u, err, sizeof err) != 0)
    fail_msg("cr_upstream_new: %s", err);
}

static void run_for(tc_t *t, uint64_t ms);

static void tc_free(tc_t *t) {
  uint64_t start;
  if (t->u)
    cr_upstream_free(t->u);
  server_stop(&t->srv);
  uv_close((uv_handle_t *)&t->t, NULL);
  /* NOWAIT and a short sleep: a leaked handle fails the test below instead of hanging it. */
  start = uv_now(&t->loop);
  while (uv_run(&t->loop, UV_RUN_NOWAIT) != 0 && uv_now(&t->loop) - start < 2000) {
    usleep(1000);
    uv_update_time(&t->loop);
  }
  assert_int_equal(uv_loop_close(&t->loop), 0);
  cr_buf_free(&t->body);
  free(t);
}

static void on_guard(uv_timer_t *h) { *(int *)h->data = 1; }

/* Runs the loop until *flag is set or ms pass. */
static void run_until(tc_t *t, int *flag, uint64_t ms) {
  uv_timer_t guard;
  int expired = 0;
  uv_timer_init(&t->loop, &guard);
  guard.data = &expired;
  /* Repeating, so a UV_RUN_ONCE that starts after the guard fired still has a timer to wake it. */
  uv_update_time(&t->loop);
  uv_timer_start(&guard, on_guard, ms, ms);
  while (!*flag && !expired)
    uv_run(&t->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&t->loop, UV_RUN_NOWAIT);
}

static void run_for(tc_t *t, uint64_t ms) {
  int never = 0;
  run_until(t, &never, ms);
}

static void cb_head(cr_upstream_req_t *r, cr_http_msg_t *head) {
  tc_t *t = cr_upstream_req_data(r);
  t->heads++;
  t->status = head->status;
  if (t->early_rest > 0) {
    /* one write goes out now; the rest queues behind it and is still unsent when the response ends */
    char *p = pattern(0, t->early_rest + 1000);
    assert_int_equal(cr_upstream_req_write(r, p, 1000) < 0, 0);
    assert_int_equal(cr_upstream_req_write(r, p + 1000, t->early_rest) < 0, 0);
    free(p);
    t->early_rest = 0;
  }
  if (t->cancel_in == 1) {
    cr_upstream_req_cancel(r);
    t->req = NULL;
  }
}

static void on_resume(uv_timer_t *h) {
  tc_t *t = h->data;
  t->paused = 0;
  if (t->req != NULL)
    cr_upstream_req_pause(t->req, 0);
}

static void cb_body(cr_upstream_req_t *r, const char *data, size_t len) {
  tc_t *t = cr_upstream_req_data(r);
  t->bodies++;
  if (t->paused)
    t->body_while_paused++;
  cr_buf_append(&t->body, data, len);
  if (t->cancel_in == 2) {
    cr_upstream_req_cancel(r);
    t->req = NULL;
    return;
  }
  if (t->pause_at_first_body && t->bodies % 20 == 1) {
    t->paused = 1;
    cr_upstream_req_pause(r, 1);
    uv_timer_start(&t->t, on_resume, 30, 0);
  }
}

static const cr_upstream_req_callbacks_t cbs;

static void cb_end(cr_upstream_req_t *r) {
  tc_t *t = cr_upstream_req_data(r);
  t->ends++;
  t->req = NULL;
  if (t->again) {
    cr_http_msg_t m;
    t->again = 0;
    cr_http_msg_init(&m, 0);
    cr_http_msg_set_method(&m, "GET", 3);
    cr_http_msg_set_target(&m, "/hello", 6);
    m.content_length = -1;
    t->req = cr_upstream_request(t->u, &m, 0, &cbs, t);
    cr_http_msg_free(&m);
  }
}

static void cb_error(cr_upstream_req_t *r, int err, const char *detail) {
  tc_t *t = cr_upstream_req_data(r);
  t->errors++;
  t->err = err;
  snprintf(t->detail, sizeof t->detail, "%s", detail);
  print_message("  on_error %s: %s\n", cr_err_name(err), detail);
  t->req = NULL;
}

static void cb_writable(cr_upstream_req_t *r) {
  tc_t *t = cr_upstream_req_data(r);
  t->writables++;
}

static const cr_upstream_req_callbacks_t cbs = {
    .on_head = cb_head,
    .on_body = cb_body,
    .on_end = cb_end,
    .on_error = cb_error,
    .on_writable = cb_writable,
};

static cr_upstream_req_t *start(tc_t *t, const char *method, const char *target, int has_body, int64_t cl) {
  cr_http_msg_t m;
  cr_http_msg_init(&m, 0);
  cr_http_msg_set_method(&m, method, strlen(method));
  cr_http_msg_set_target(&m, target, strlen(target));
  cr_http_msg_add_header(&m, "Host", 4, "ignored.example", 15);
  cr_http_msg_add_header(&m, "X-Test", 6, "1", 1);
  m.content_length = cl;
  t->heads = t->ends = t->errors = t->bodies = 0;
  t->status = 0;
  t->err = 0;
  t->detail[0] = '\0';
  cr_buf_reset(&t->body);
  t->req = cr_upstream_request(t->u, &m, has_body, &cbs, t);
  cr_http_msg_free(&m);
  assert_non_null(t->req);
  return t->req;
}

static int done(tc_t *t) { return t->ends + t->errors; }

static void wait_done(tc_t *t, uint64_t ms) {
  uint64_t start = uv_now(&t->loop);
  while (done(t) == 0 && uv_now(&t->loop) - start < ms)
    run_until(t, &t->ends, 20);
  assert_int_equal(done(t), 1);
}

static void expect_ok(tc_t *t, int status) {
  if (t->errors)
    fail_msg("unexpected error %s: %s", cr_err_name(t->err), t->detail);
  assert_int_equal(t->ends, 1);
  assert_int_equal(t->status, status);
}

/* ---- tests ---- */

static void test_get_and_keepalive(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy;
  char host[64];
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  /* Callbacks never fire from inside cr_upstream_request. */
  assert_int_equal(done(t), 0);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, 5);
  assert_memory_equal(t->body.base, "hello", 5);
  snprintf(host, sizeof host, "localhost:%u", t->srv.port);
  assert_string_equal(t->srv.last_host, host);
  assert_string_equal(t->srv.last_method, "GET");
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle, 1);
  assert_int_equal(busy, 0);

  /* The second request rides the pooled connection. */
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1000);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 1);
  assert_int_equal(t->srv.requests, 2);

  /* A request started from on_end reuses the connection just released. */
  t->again = 1;
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1000);
  t->ends = t->errors = 0;
  wait_done(t, 1000);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 1);
  assert_int_equal(t->srv.requests, 4);
  tc_free(t);
}

static void test_head_and_interim(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "HEAD", "/head", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, 0);
  start(t, "GET", "/interim", 0, -1);
  wait_done(t, 1000);
  expect_ok(t, 200);
  assert_int_equal(t->heads, 1);
  assert_memory_equal(t->body.base, "final", 5);
  assert_int_equal(t->srv.accepted, 1);
  tc_free(t);
}

static void post_big(tc_t *t, const char *target, int chunked, size_t total, size_t piece) {
  char *body = pattern(0, total);
  size_t off = 0;
  int rc = 0;
  uint64_t start_ms = uv_now(&t->loop);
  start(t, "POST", target, 1, chunked ? -1 : (int64_t)total);
  t->writables = 0;
  while (off < total && uv_now(&t->loop) - start_ms < 1500) {
    size_t n = CR_MIN(piece, total - off);
    rc = cr_upstream_req_write(t->req, body + off, n);
    assert_true(rc == 0 || rc == 1);
    off += n;
    if (rc == 1) {
      int w = t->writables;
      while (t->writables == w && done(t) == 0 && uv_now(&t->loop) - start_ms < 1500)
        uv_run(&t->loop, UV_RUN_ONCE);
      assert_int_equal(done(t), 0);
    }
  }
  assert_int_equal(off, total);
  assert_int_equal(cr_upstream_req_end(t->req), 0);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.last_chunked, chunked);
  assert_int_equal(t->srv.last_body.len, total);
  assert_true(is_pattern(t->srv.last_body.base, total));
  assert_int_equal(t->body.len, total);
  assert_true(is_pattern(t->body.base, total));
  free(body);
}

static void test_post_bodies(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t big = 1024 * 1024 + 12345;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  /* chunked up, content-length down; many small writes with backpressure */
  post_big(t, "/echo", 1, big, 16 * 1024);
  assert_true(t->writables > 0);
  /* content-length up, chunked down; one huge write */
  post_big(t, "/echo?chunked", 0, big, big);
  /* small bodies both ways */
  post_big(t, "/echo", 0, 10, 3);
  post_big(t, "/echo?chunked", 1, 1, 1);
  assert_int_equal(t->srv.accepted, 1);
  /* POST without a body carries Content-Length: 0 */
  start(t, "POST", "/echo", 0, -1);
  wait_done(t, 1000);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, 0);
  tc_free(t);
}

/* The server answers before the body is sent (nginx's `return` does): the rest of the body still goes
 * out and the connection is reused, not closed and dialled again for the next request. */
static void test_early_response_keeps_connection(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy, rest = 300000;
  char one = 'x';
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "POST", "/early", 1, (int64_t)(1 + 1000 + rest));
  assert_int_equal(cr_upstream_req_write(t->req, &one, 1) < 0, 0);
  t->early_rest = rest;
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, 5);
  assert_memory_equal(t->body.base, "early", 5);
  /* the connection is busy until the body is out (a loop turn or two), then pooled */
  run_for(t, 100);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle, 1);
  assert_int_equal(busy, 0);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 1);
  assert_int_equal(t->srv.requests, 2);
  assert_int_equal(t->srv.body_bytes, 1 + 1000 + rest);
  tc_free(t);
}

/* A new connection resumes the session the server gave the last one (no certificate exchange); a
 * new TLS context (a reload) never offers an old session. */
static void test_new_connections_resume(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  static cr_tls_identity_src_t id;
  cr_tls_ctx_opts_t o = {0};
  cr_tls_ctx_t *fresh;
  char err[512];
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.resumed, 0);

  server_drop_conns(&t->srv); /* the pooled connection goes; the next request dials */
  run_for(t, 50);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 2);
  assert_int_equal(t->srv.resumed, 1);

  id.pkcs12 = pki_path("client.p12");
  id.password = "s3cret";
  o.ca_file = pki_path("ca.pem");
  o.identity = &id;
  o.alpn = "http/1.1";
  o.resume_sessions = 1;
  if (cr_tls_ctx_new(&o, &fresh, err, sizeof err) != 0)
    fail_msg("ctx: %s", err);
  cr_upstream_set_tls(t->u, fresh);
  cr_tls_ctx_free(fresh);
  server_drop_conns(&t->srv);
  run_for(t, 50);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 3);
  assert_int_equal(t->srv.resumed, 1); /* full handshake under the new context */
  tc_free(t);
}

static void test_big_responses(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  char target[64];
  size_t n = 3 * 1024 * 1024 + 7;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  snprintf(target, sizeof target, "/big?n=%zu", n);
  start(t, "GET", target, 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, n);
  assert_true(is_pattern(t->body.base, n));
  snprintf(target, sizeof target, "/big?n=%zu&chunked", n);
  start(t, "GET", target, 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->body.len, n);
  assert_true(is_pattern(t->body.base, n));
  tc_free(t);
}

static void test_pause_resume(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  char target[64];
  size_t n = 1024 * 1024 + 99;
  tc_upstream(t, t->srv.port, 2000, 500, 5000);
  for (int chunked = 0; chunked < 2; chunked++) {
    snprintf(target, sizeof target, "/big?n=%zu%s", n, chunked ? "&chunked" : "");
    t->pause_at_first_body = 1;
    start(t, "GET", target, 0, -1);
    wait_done(t, 1800);
    expect_ok(t, 200);
    assert_int_equal(t->body_while_paused, 0);
    assert_int_equal(t->body.len, n);
    assert_true(is_pattern(t->body.base, n));
  }
  t->pause_at_first_body = 0;

  /* Paused from outside any callback, before the response arrives: nothing is delivered. */
  start(t, "GET", "/hello", 0, -1);
  cr_upstream_req_pause(t->req, 1);
  t->paused = 1;
  run_for(t, 100);
  assert_int_equal(t->heads, 0);
  t->paused = 0;
  cr_upstream_req_pause(t->req, 0);
  wait_done(t, 1000);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 1);
  tc_free(t);
}

static void test_connect_refused(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  unsigned port = t->srv.port;
  char want[64];
  server_stop(&t->srv);
  run_for(t, 10);
  tc_upstream(t, port, 2000, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  assert_int_equal(done(t), 0);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_ECONNREFUSED);
  snprintf(want, sizeof want, "connect to 127.0.0.1:%u failed", port);
  assert_non_null(strstr(t->detail, want));
  tc_free(t);
}

static void expect_verify_failure(const char *cert, const char *why) {
  tc_t *t = tc_new(SRV_TLS, cert);
  char want[128];
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  if (t->err != CR_ETLS_VERIFY)
    fail_msg("%s: got %s: %s", cert, cr_err_name(t->err), t->detail);
  snprintf(want, sizeof want, "TLS handshake with 127.0.0.1:%u (server name localhost) failed: ", t->srv.port);
  if (strstr(t->detail, want) == NULL || strstr(t->detail, why) == NULL)
    fail_msg("%s: detail '%s' lacks '%s'", cert, t->detail, why);
  assert_int_equal(t->srv.requests, 0);
  tc_free(t);
}

static void test_tls_verify_failures(void **state) {
  expect_verify_failure("expired", "expired");
  expect_verify_failure("unknownca", "issuer");
  expect_verify_failure("wronghost", "mismatch");
}

static void test_response_timeouts(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy;
  tc_upstream(t, t->srv.port, 2000, 200, 5000);
  start(t, "GET", "/slow", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_ETIMEDOUT);
  assert_non_null(strstr(t->detail, "no response head within 200 ms"));
  start(t, "GET", "/stall", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->heads, 1);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_ETIMEDOUT);
  assert_non_null(strstr(t->detail, "reading response body"));
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle + busy, 0);
  tc_free(t);
}

/* A listener whose accept queue is full drops further SYNs: a connect that never completes. */
static int blackhole(unsigned *port, int *filler) {
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(l, 0), 0);
  getsockname(l, (struct sockaddr *)&a, &alen);
  *port = ntohs(a.sin_port);
  *filler = socket(AF_INET, SOCK_STREAM, 0);
  assert_int_equal(connect(*filler, (struct sockaddr *)&a, sizeof a), 0);
  return l;
}

static void test_connect_timeout(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  unsigned port;
  int filler, l = blackhole(&port, &filler);
  char want[96];
  tc_upstream(t, port, 200, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_ETIMEDOUT);
  snprintf(want, sizeof want, "connect to 127.0.0.1:%u timed out after 200 ms", port);
  assert_string_equal(t->detail, want);
  close(filler);
  close(l);
  tc_free(t);
}

static void test_handshake_timeout(void **state) {
  tc_t *t = tc_new(SRV_SILENT, NULL);
  tc_upstream(t, t->srv.port, 200, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_ETIMEDOUT);
  assert_non_null(strstr(t->detail, "TLS handshake with 127.0.0.1:"));
  assert_non_null(strstr(t->detail, "timed out after 200 ms"));
  tc_free(t);
}

static void expect_quiet(tc_t *t) {
  size_t idle, busy;
  run_for(t, 100);
  assert_int_equal(t->ends + t->errors, 0);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle + busy, 0);
}

static void test_cancel_each_phase(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  uint64_t t0;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);

  /* during DNS resolution */
  start(t, "GET", "/hello", 0, -1);
  cr_upstream_req_cancel(t->req);
  expect_quiet(t);

  /* while sending the body */
  start(t, "POST", "/echo", 1, -1);
  assert_int_equal(cr_upstream_req_write(t->req, "abc", 3), 0);
  t0 = uv_now(&t->loop);
  while (t->srv.body_bytes == 0 && uv_now(&t->loop) - t0 < 1000)
    run_for(t, 5);
  assert_true(t->srv.body_bytes > 0);
  cr_upstream_req_cancel(t->req);
  expect_quiet(t);

  /* waiting for the response head */
  start(t, "GET", "/slow", 0, -1);
  t0 = uv_now(&t->loop);
  while (strcmp(t->srv.last_target, "/slow") != 0 && uv_now(&t->loop) - t0 < 1000)
    run_for(t, 5);
  cr_upstream_req_cancel(t->req);
  expect_quiet(t);

  /* from inside on_head, and inside on_body */
  t->cancel_in = 1;
  start(t, "GET", "/big?n=100000", 0, -1);
  run_until(t, &t->heads, 1000);
  assert_int_equal(t->heads, 1);
  expect_quiet(t);
  t->cancel_in = 2;
  start(t, "GET", "/big?n=100000", 0, -1);
  run_until(t, &t->bodies, 1000);
  assert_int_equal(t->bodies, 1);
  expect_quiet(t);
  t->cancel_in = 0;

  /* a synchronous failure is deferred; canceling before it fires silences it */
  {
    cr_http_msg_t m;
    cr_http_msg_init(&m, 0);
    cr_http_msg_set_method(&m, "GET", 3);
    cr_http_msg_set_target(&m, "/bad target", 11);
    m.content_length = -1;
    t->req = cr_upstream_request(t->u, &m, 0, &cbs, t);
    cr_http_msg_free(&m);
    cr_upstream_req_cancel(t->req);
    expect_quiet(t);
  }

  /* cr_upstream_free with a request in flight: no callback either */
  start(t, "GET", "/slow", 0, -1);
  run_for(t, 50);
  cr_upstream_free(t->u);
  t->u = NULL;
  run_for(t, 50);
  assert_int_equal(t->ends + t->errors, 0);
  tc_free(t);
}

static void test_cancel_connect_and_handshake(void **state) {
  tc_t *s;
  unsigned port;
  int filler, l;

  /* during the TCP connect */
  s = tc_new(SRV_TLS, "server");
  l = blackhole(&port, &filler);
  tc_upstream(s, port, 2000, 2000, 5000);
  start(s, "GET", "/hello", 0, -1);
  run_for(s, 50);
  cr_upstream_req_cancel(s->req);
  expect_quiet(s);
  close(filler);
  close(l);
  tc_free(s);

  /* during the TLS handshake */
  s = tc_new(SRV_SILENT, NULL);
  tc_upstream(s, s->srv.port, 2000, 2000, 5000);
  start(s, "GET", "/hello", 0, -1);
  run_for(s, 50);
  assert_int_equal(s->srv.accepted, 1);
  cr_upstream_req_cancel(s->req);
  expect_quiet(s);
  tc_free(s);
}

static void test_bad_responses(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "GET", "/garbage", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, CR_EHTTP_PARSE);
  assert_non_null(strstr(t->detail, "waiting for response head from 127.0.0.1:"));
  start(t, "GET", "/cut", 0, -1);
  wait_done(t, 1500);
  assert_int_equal(t->heads, 1);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->err, UV_EOF);
  assert_non_null(strstr(t->detail, "reading response body from 127.0.0.1:"));
  assert_int_equal(t->body.len, 10);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle + busy, 0);
  tc_free(t);
}

static void test_bad_head_is_deferred_error(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  cr_http_msg_t m;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  cr_http_msg_init(&m, 0);
  cr_http_msg_set_method(&m, "GET", 3);
  cr_http_msg_set_target(&m, "/bad target", 11);
  m.content_length = -1;
  t->req = cr_upstream_request(t->u, &m, 0, &cbs, t);
  cr_http_msg_free(&m);
  assert_int_equal(t->errors, 0);
  wait_done(t, 500);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->srv.accepted, 0);
  tc_free(t);
}

static void test_idle_connection_closed(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy;
  uint64_t t0;
  tc_upstream(t, t->srv.port, 2000, 2000, 5000);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle, 1);
  /* The server drops the idle connection: the pool notices by reading. */
  server_drop_conns(&t->srv);
  t0 = uv_now(&t->loop);
  do {
    run_for(t, 5);
    cr_upstream_stats(t->u, &idle, &busy);
  } while (idle > 0 && uv_now(&t->loop) - t0 < 1000);
  assert_int_equal(idle, 0);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 2);

  /* Connection: close from the server is honoured. */
  start(t, "GET", "/close", 0, -1);
  wait_done(t, 1000);
  expect_ok(t, 200);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle + busy, 0);

  /* Bytes after a complete response: the connection is not pooled. */
  start(t, "GET", "/extra", 0, -1);
  wait_done(t, 1000);
  expect_ok(t, 200);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle + busy, 0);
  tc_free(t);
}

static size_t idle_count(tc_t *t) {
  size_t idle, busy;
  cr_upstream_stats(t->u, &idle, &busy);
  return idle;
}

/* Four requests at once, each on its own connection. */
static void burst_of_four(tc_t *t) {
  cr_http_msg_t m;
  uint64_t t0;
  int i;
  t->ends = t->errors = 0;
  cr_http_msg_init(&m, 0);
  cr_http_msg_set_method(&m, "GET", 3);
  cr_http_msg_set_target(&m, "/hello", 6);
  m.content_length = -1;
  for (i = 0; i < 4; i++)
    assert_non_null(cr_upstream_request(t->u, &m, 0, &cbs, t));
  cr_http_msg_free(&m);
  t0 = uv_now(&t->loop);
  while (t->ends + t->errors < 4 && uv_now(&t->loop) - t0 < 3000)
    run_for(t, 10);
  assert_int_equal(t->errors, 0);
  assert_int_equal(t->ends, 4);
}

/* A burst fills the pool; a steady sequential load then keeps one connection; a second burst that
 * stops drains, half per interval, to the most recently used connection long before idle_timeout. */
static void test_pool_follows_demand(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  uint64_t t0;
  t->purge_ms = 100;
  tc_upstream(t, t->srv.port, 2000, 2000, 60000);
  burst_of_four(t);
  assert_int_equal(t->srv.accepted, 4);
  assert_int_equal(idle_count(t), 4);

  /* One request at a time for eight intervals: the surplus closes, the one in use stays. */
  t0 = uv_now(&t->loop);
  while (uv_now(&t->loop) - t0 < 800) {
    start(t, "GET", "/hello", 0, -1);
    wait_done(t, 1500);
    expect_ok(t, 200);
    run_for(t, 5);
  }
  assert_int_equal(t->srv.accepted, 4); /* no connection was dialled again */
  assert_int_equal(idle_count(t), 1);

  /* A second burst, then no load: back to one within a few intervals, not after the 60 s idle_timeout. */
  burst_of_four(t);
  assert_int_equal(idle_count(t), 4);
  t0 = uv_now(&t->loop);
  while (idle_count(t) > 1 && uv_now(&t->loop) - t0 < 1000)
    run_for(t, 10);
  assert_int_equal(idle_count(t), 1);
  run_for(t, 300);
  assert_int_equal(idle_count(t), 1);
  /* idle: the request caches go back, and the next request still works */
  cr_upstream_release_caches(t->u);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  tc_free(t);
}

static void test_idle_timeout(void **state) {
  tc_t *t = tc_new(SRV_TLS, "server");
  size_t idle, busy;
  tc_upstream(t, t->srv.port, 2000, 2000, 100);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  run_for(t, 250);
  cr_upstream_stats(t->u, &idle, &busy);
  assert_int_equal(idle, 0);
  start(t, "GET", "/hello", 0, -1);
  wait_done(t, 1500);
  expect_ok(t, 200);
  assert_int_equal(t->srv.accepted, 2);
  tc_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get_and_keepalive),
      cmocka_unit_test(test_head_and_interim),
      cmocka_unit_test(test_post_bodies),
      cmocka_unit_test(test_early_response_keeps_connection),
      cmocka_unit_test(test_new_connections_resume),
      cmocka_unit_test(test_big_responses),
      cmocka_unit_test(test_pause_resume),
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test(test_tls_verify_failures),
      cmocka_unit_test(test_response_timeouts),
      cmocka_unit_test(test_connect_timeout),
      cmocka_unit_test(test_handshake_timeout),
      cmocka_unit_test(test_cancel_each_phase),
      cmocka_unit_test(test_cancel_connect_and_handshake),
      cmocka_unit_test(test_bad_responses),
      cmocka_unit_test(test_bad_head_is_deferred_error),
      cmocka_unit_test(test_idle_connection_closed),
      cmocka_unit_test(test_idle_timeout),
      cmocka_unit_test(test_pool_follows_demand),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

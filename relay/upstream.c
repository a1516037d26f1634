/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's HTTPS client toward one upstream, as a route sees it: the pool of TLS connections
 * (upstream_pool.c) and an HTTP/1.1 exchange on each (http1_client.c), glued together.
 *
 * A request is an HTTP/1 exchange that waits for a connection: a pooled one is attached at once,
 * otherwise one is dialled and attached when its handshake is done. The exchange hands the connection
 * back when it is done with it, saying whether it may serve again; the pool keeps it or closes it.
 * What is the route's is decided here: the Host header, and which pool and timeouts apply. */
#include "ccrelay/upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/http1_client.h"
#include "ccrelay/queue.h"
#include "ccrelay/upstream_pool.h"

#define FREE_REQS_MAX 64

struct cr_upstream {
  cr_upool_t *pool;
  cr_h1client_ctx_t *h1;
  char host_header[280]; /* server_name[:port] */
  cr_queue_t reqs;       /* cr_upstream_req_t.link: every live request */
  cr_upstream_req_t *free_reqs;
  size_t nfree_reqs;
  unsigned freeing : 1;
};

struct cr_upstream_req {
  cr_upstream_t *u;
  cr_queue_t link;
  cr_h1client_t *h1;
  cr_upool_conn_t *dialing; /* the connection being dialled for this request, until it is ready */
  cr_upstream_req_callbacks_t cbs;
  void *data;
  unsigned final : 1; /* on_end or on_error is running */
  cr_upstream_req_t *next_free;
};

/* ---- request lifetime ---- */

static void upstream_maybe_free(cr_upstream_t *u) {
  if (!u->freeing || !cr_queue_empty(&u->reqs))
    return;
  cr_upstream_release_caches(u);
  free(u);
}

static cr_upstream_req_t *req_alloc(cr_upstream_t *u) {
  cr_upstream_req_t *r = u->free_reqs;
  if (r != NULL) {
    u->free_reqs = r->next_free;
    u->nfree_reqs--;
  } else {
    r = cr_malloc(sizeof *r);
  }
  memset(r, 0, sizeof *r);
  r->u = u;
  cr_queue_insert_tail(&u->reqs, &r->link);
  return r;
}

static void req_free(cr_upstream_req_t *r) {
  cr_upstream_t *u = r->u;
  cr_queue_remove(&r->link);
  if (u->freeing || u->nfree_reqs >= FREE_REQS_MAX) {
    free(r);
    upstream_maybe_free(u);
    return;
  }
  r->next_free = u->free_reqs;
  u->free_reqs = r;
  u->nfree_reqs++;
}

void cr_upstream_release_caches(cr_upstream_t *u) {
  cr_upstream_req_t *r;
  while ((r = u->free_reqs) != NULL) {
    u->free_reqs = r->next_free;
    free(r);
  }
  u->nfree_reqs = 0;
  if (!u->freeing)
    cr_h1client_ctx_release_caches(u->h1);
}

/* ---- the exchange's callbacks, passed on as the request's ---- */

static void h1_on_head(cr_h1client_t *h, cr_http_msg_t *head) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  if (r->cbs.on_head)
    r->cbs.on_head(r, head);
}

static void h1_on_interim(cr_h1client_t *h, const cr_http_msg_t *head) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  if (r->cbs.on_interim)
    r->cbs.on_interim(r, head);
}

static void h1_on_body(cr_h1client_t *h, const char *data, size_t len) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  if (r->cbs.on_body)
    r->cbs.on_body(r, data, len);
}

static void h1_on_end(cr_h1client_t *h) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  r->final = 1;
  if (r->cbs.on_end)
    r->cbs.on_end(r);
  req_free(r);
}

static void h1_on_error(cr_h1client_t *h, int err, const char *detail) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  r->final = 1;
  if (r->cbs.on_error)
    r->cbs.on_error(r, err, detail);
  req_free(r);
}

static void h1_on_writable(cr_h1client_t *h) {
  cr_upstream_req_t *r = cr_h1client_data(h);
  if (r->cbs.on_writable)
    r->cbs.on_writable(r);
}

static const cr_h1client_callbacks_t h1_cbs = {
    .on_head = h1_on_head,
    .on_interim = h1_on_interim,
    .on_body = h1_on_body,
    .on_end = h1_on_end,
    .on_error = h1_on_error,
    .on_writable = h1_on_writable,
};

/* ---- connections ---- */

static void on_release(cr_stream_t *s, int reusable, void *arg) {
  cr_upool_conn_t *conn = arg;
  (void)s;
  if (reusable)
    cr_upool_put(conn);
  else
    cr_upool_close(conn);
}

static void attach(cr_upstream_req_t *r, cr_upool_conn_t *conn) {
  cr_h1client_attach(r->h1, cr_upool_conn_stream(conn), cr_upool_conn_reused(conn), on_release, conn);
}

static void on_pool_ready(cr_upool_conn_t *conn, int status, const char *detail, void *data) {
  cr_upstream_req_t *r = data;
  r->dialing = NULL;
  if (status < 0) {
    cr_h1client_fail(r->h1, status, "%s", detail);
    return;
  }
  attach(r, conn);
}

/* ---- public API ---- */

static void format_hostport(char *out, size_t outlen, const char *host, unsigned port, unsigned default_port) {
  int v6 = strchr(host, ':') != NULL;
  if (port == default_port)
    snprintf(out, outlen, v6 ? "[%s]" : "%s", host);
  else
    snprintf(out, outlen, v6 ? "[%s]:%u" : "%s:%u", host, port);
}

int cr_upstream_new(uv_loop_t *loop, const cr_upstream_opts_t *opts, cr_upstream_t **out, char *err,
                    size_t errlen) {
  const char *name = opts->name ? opts->name : "upstream";
  const char *server_name = opts->server_name && *opts->server_name ? opts->server_name : opts->host;
  cr_upool_opts_t po;
  cr_h1client_ctx_opts_t ho;
  cr_upool_t *pool;
  cr_upstream_t *u;
  char why[512];
  int rc;
  memset(&po, 0, sizeof po);
  po.name = name;
  po.host = opts->host;
  po.port = opts->port;
  po.server_name = server_name;
  po.connect_timeout_ms = opts->connect_timeout_ms;
  po.idle_timeout_ms = opts->idle_timeout_ms;
  po.purge_interval_ms = opts->purge_interval_ms;
  po.max_idle = opts->max_idle;
  po.tls = opts->tls;
  po.ca_file = opts->ca_file;
  po.identity = opts->identity;
  po.plain = opts->plain_http;
  rc = cr_upool_new(loop, &po, &pool, why, sizeof why);
  if (rc < 0) {
    snprintf(err, errlen, "upstream %s: %s", name, why);
    return rc;
  }
  memset(&ho, 0, sizeof ho);
  ho.name = name;
  ho.peer = cr_upool_peer_name(pool);
  ho.peer_log = cr_upool_hostport(pool);
  ho.response_timeout_ms = opts->response_timeout_ms;
  ho.max_header_size = opts->max_header_size;
  ho.max_header_fields = opts->max_header_fields;
  u = cr_calloc(1, sizeof *u);
  u->pool = pool;
  u->h1 = cr_h1client_ctx_new(loop, &ho);
  format_hostport(u->host_header, sizeof u->host_header, server_name, opts->port, opts->plain_http ? 80 : 443);
  cr_queue_init(&u->reqs);
  *out = u;
  return 0;
}

void cr_upstream_free(cr_upstream_t *u) {
  cr_queue_t *q, *n;
  if (u == NULL || u->freeing)
    return;
  cr_queue_foreach_safe(q, n, &u->reqs) {
    cr_upstream_req_t *r = cr_queue_data(q, cr_upstream_req_t, link);
    cr_upstream_req_cancel(r); /* a no-op for one inside its final callback */
  }
  u->freeing = 1;
  /* Exchanges still sending the rest of a request answered early give their connections back now. */
  cr_h1client_ctx_free(u->h1);
  cr_upool_free(u->pool);
  upstream_maybe_free(u); /* or once the requests in their final callbacks return */
}

void cr_upstream_set_tls(cr_upstream_t *u, cr_tls_ctx_t *tls) { cr_upool_set_tls(u->pool, tls); }

int cr_upstream_peer_cert(const cr_upstream_t *u, char *subject, size_t subjectlen, time_t *not_after) {
  return cr_upool_peer_cert(u->pool, subject, subjectlen, not_after);
}

int cr_upstream_conn_info(const cr_upstream_t *u, cr_tls_conn_info_t *out) { return cr_upool_conn_info(u->pool, out); }

void cr_upstream_stats(const cr_upstream_t *u, size_t *idle, size_t *busy) { cr_upool_stats(u->pool, idle, busy); }

void cr_upstream_handshakes(const cr_upstream_t *u, uint64_t *full, uint64_t *resumed) {
  cr_upool_handshakes(u->pool, full, resumed);
}

cr_upstream_req_t *cr_upstream_request(cr_upstream_t *u, cr_http_msg_t *head, int has_body,
                                       const cr_upstream_req_callbacks_t *cbs, void *data) {
  cr_upstream_req_t *r = req_alloc(u);
  cr_upool_conn_t *conn;
  char why[512];
  int rc;
  r->cbs = *cbs;
  r->data = data;
  /* The route's Host, whatever the caller's head carried. */
  cr_http_msg_remove_ids(head, CR_HDR_BIT(CR_HDR_HOST));
  rc = cr_http_msg_add_header_id(head, CR_HDR_HOST, "Host", 4, u->host_header, strlen(u->host_header));
  if (cr_h1client_new(u->h1, head, has_body, &h1_cbs, r, &r->h1) < 0)
    return r; /* the head cannot be sent: on_error follows */
  if (rc < 0) {
    cr_h1client_fail(r->h1, rc, "request to %s not sent: its head cannot be serialised (%s)",
                     cr_upool_peer_name(u->pool), cr_strerror(rc));
    return r;
  }
  rc = cr_upool_connect(u->pool, on_pool_ready, r, &conn, why, sizeof why);
  if (rc < 0)
    cr_h1client_fail(r->h1, rc, "%s", why);
  else if (rc == 1)
    attach(r, conn);
  else
    r->dialing = conn;
  return r;
}

int cr_upstream_req_write(cr_upstream_req_t *r, const char *data, size_t len) {
  return r->final ? 0 : cr_h1client_write(r->h1, data, len);
}

int cr_upstream_req_end(cr_upstream_req_t *r) { return r->final ? 0 : cr_h1client_end(r->h1); }

void cr_upstream_req_pause(cr_upstream_req_t *r, int paused) {
  if (!r->final)
    cr_h1client_pause(r->h1, paused);
}

void cr_upstream_req_cancel(cr_upstream_req_t *r) {
  if (r->final)
    return;
  if (r->dialing != NULL)
    cr_upool_close(r->dialing); /* its callback never fires */
  cr_h1client_cancel(r->h1);
  req_free(r);
}

void *cr_upstream_req_data(const cr_upstream_req_t *r) { return r->data; }

uint64_t cr_upstream_req_sent(const cr_upstream_req_t *r) { return r->h1 ? cr_h1client_sent(r->h1) : 0; }

/* SPDX-License-Identifier: Apache-2.0 */
/* The upstream connection pool: dial (TCP, then TLS), lend, take back, purge.
 *
 * A connection moves through explicit states:
 *
 *   DIALING    TCP connect (DNS included) under connect_timeout
 *   HANDSHAKE  TLS handshake, under what is left of the same timeout
 *   LENT       a borrower runs an exchange on it
 *   IDLE       in the pool, read by us, under idle_timeout
 *   CLOSED     closing; freed once its stream and timer have closed
 *
 * A connection dies in its close callbacks (stream and timer), never inside its own callbacks; the
 * pool's memory goes with its last connection and its purge timer. */
#include "ccrelay/upstream_pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/deadline.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"
#include "ccrelay/tls.h"

#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_IDLE_TIMEOUT_MS 60000
#define DEFAULT_PURGE_INTERVAL_MS 1000

typedef enum { CONN_DIALING, CONN_HANDSHAKE, CONN_LENT, CONN_IDLE, CONN_CLOSED } conn_state_t;

struct cr_upool {
  uv_loop_t *loop;
  cr_tls_ctx_t *tls;
  unsigned gen; /* bumped by cr_upool_set_tls; connections of older ones are not reused */
  char *name;
  char *host;
  char *server_name;
  unsigned port;
  char hostport[280];
  char who[560];
  cr_tls_conn_info_t info; /* the latest handshake; info.version "" before the first */
  int plain;               /* no TLS: connections are lent once TCP connected */
  uint64_t connect_timeout_ms;
  uint64_t idle_timeout_ms;
  uint64_t purge_interval_ms;
  unsigned max_idle;
  cr_queue_t idle; /* cr_upool_conn_t.link, most recently used first */
  cr_queue_t busy; /* dialing, handshaking and lent */
  size_t nidle;
  size_t nbusy;
  size_t nconns;    /* including connections still closing */
  size_t peak_busy; /* most connections busy at once since the last purge tick */
  uint64_t handshakes_full;    /* TLS handshakes completed, for metrics */
  uint64_t handshakes_resumed;
  uv_timer_t purge_timer; /* runs while connections are pooled */
  unsigned timer_open : 1;
  unsigned freeing : 1;
};

struct cr_upool_conn {
  cr_upool_t *p;
  cr_stream_t *s; /* TCP while dialling, TLS afterwards; NULL if the dial failed synchronously */
  cr_queue_t link;
  cr_deadline_t deadline; /* connect or idle timeout, by state */
  cr_upool_connect_cb cb;
  void *data;
  uint64_t idle_since;
  unsigned gen; /* the pool's gen when the TLS layer was added */
  conn_state_t state;
  unsigned pending_closes;
  unsigned reused : 1;
};

static void pool_maybe_free(cr_upool_t *p) {
  if (!p->freeing || p->nconns > 0 || p->timer_open)
    return;
  cr_tls_ctx_free(p->tls);
  free(p->name);
  free(p->host);
  free(p->server_name);
  free(p);
}

static void conn_maybe_free(cr_upool_conn_t *c) {
  cr_upool_t *p = c->p;
  if (--c->pending_closes > 0)
    return;
  free(c);
  p->nconns--;
  pool_maybe_free(p);
}

static void on_stream_closed(cr_stream_t *s) { conn_maybe_free(s->data); }

static void on_deadline_closed(uv_handle_t *h) { conn_maybe_free(h->data); }

static void conn_close(cr_upool_conn_t *c) {
  cr_upool_t *p = c->p;
  if (c->state == CONN_CLOSED)
    return;
  if (c->state == CONN_IDLE)
    p->nidle--;
  else
    p->nbusy--;
  cr_queue_remove(&c->link);
  c->state = CONN_CLOSED;
  c->cb = NULL;
  cr_log_debug("upstream connection closed", "route=%s peer=%s", p->name, p->hostport);
  c->pending_closes = 1;
  cr_deadline_close(&c->deadline, on_deadline_closed);
  if (c->s != NULL) {
    c->pending_closes++;
    c->s->data = c;
    cr_stream_close(c->s, on_stream_closed);
  }
}

static void busy_grew(cr_upool_t *p) {
  p->nbusy++;
  if (p->nbusy > p->peak_busy)
    p->peak_busy = p->nbusy;
}

/* The pool follows demand (as HAProxy's idle-connection purge does): every interval, the idle
 * connections beyond what the interval's peak could have used on top of the busy ones are surplus,
 * and half of them (the least recently used) close. A finished burst leaves no warm pool holding
 * memory and upstream slots for the whole idle_timeout, and a steady load keeps what it uses. The
 * most recently used connection stays until idle_timeout, so an occasional caller finds it warm. */
static void on_purge_timer(uv_timer_t *t) {
  cr_upool_t *p = t->data;
  size_t wanted = p->peak_busy > p->nbusy ? p->peak_busy - p->nbusy : 0;
  size_t surplus = p->nidle > wanted ? p->nidle - wanted : 0;
  size_t n = CR_MIN((surplus + 1) / 2, p->nidle > 0 ? p->nidle - 1 : 0);
  for (; n > 0; n--)
    conn_close(cr_queue_data(p->idle.prev, cr_upool_conn_t, link));
  p->peak_busy = p->nbusy;
  if (p->nidle <= 1)
    uv_timer_stop(&p->purge_timer);
}

/* ---- dialling ---- */

/* The connect failed: the connection closes first, then the borrower hears why. */
static void dial_failed(cr_upool_conn_t *c, int status, const char *fmt, ...) CR_PRINTF(3, 4);
static void dial_failed(cr_upool_conn_t *c, int status, const char *fmt, ...) {
  cr_upool_connect_cb cb = c->cb;
  void *data = c->data;
  char detail[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  conn_close(c);
  if (cb != NULL)
    cb(c, status, detail, data);
}

static void on_handshake(cr_stream_t *s, int status) {
  cr_upool_conn_t *c = s->data;
  cr_upool_t *p = c->p;
  cr_upool_connect_cb cb = c->cb;
  char why[256];
  if (status < 0) {
    dial_failed(c, status, "TLS handshake with %s failed: %s", p->who, cr_stream_strerror(s, status, why, sizeof why));
    return;
  }
  cr_log_debug("upstream connection established", "route=%s peer=%s ?resumed=%d", p->name, p->hostport,
               cr_tls_stream_resumed(s) ? 1 : 0);
  if (cr_tls_stream_resumed(s))
    p->handshakes_resumed++;
  else
    p->handshakes_full++;
  if (cr_tls_stream_verify_warning(s)[0])
    cr_log_warn("soft revocation: upstream allowed without a usable CRL", "route=%s upstream=%s reason=\"%s\"",
                p->name, p->hostport, cr_tls_stream_verify_warning(s));
  cr_tls_stream_conn_info(s, &p->info);
  cr_deadline_clear(&c->deadline);
  c->state = CONN_LENT;
  c->cb = NULL;
  cb(c, 0, NULL, c->data);
}

static void on_connect(cr_stream_t *s, int status) {
  cr_upool_conn_t *c = s->data;
  cr_upool_t *p = c->p;
  cr_stream_t *tls;
  char why[256];
  int rc;
  if (status < 0) {
    dial_failed(c, status, "connect to %s failed: %s", p->hostport, cr_strerror(status));
    return;
  }
  if (p->plain) {
    cr_upool_connect_cb cb = c->cb;
    cr_log_debug("upstream connection established", "route=%s peer=%s tls=0", p->name, p->hostport);
    c->gen = p->gen;
    cr_deadline_clear(&c->deadline);
    c->state = CONN_LENT;
    c->cb = NULL;
    cb(c, 0, NULL, c->data);
    return;
  }
  tls = cr_tls_stream_new(s, p->tls, p->server_name);
  c->gen = p->gen;
  tls->data = c;
  c->s = tls;
  c->state = CONN_HANDSHAKE;
  rc = cr_tls_stream_handshake(tls, on_handshake);
  if (rc < 0)
    dial_failed(c, rc, "TLS handshake with %s failed: %s", p->who, cr_stream_strerror(tls, rc, why, sizeof why));
}

static void on_deadline(cr_deadline_t *d) {
  cr_upool_conn_t *c = d->timer.data;
  cr_upool_t *p = c->p;
  switch (c->state) {
  case CONN_DIALING:
    dial_failed(c, UV_ETIMEDOUT, "connect to %s timed out after %" PRIu64 " ms", p->hostport, p->connect_timeout_ms);
    return;
  case CONN_HANDSHAKE:
    dial_failed(c, UV_ETIMEDOUT, "TLS handshake with %s timed out after %" PRIu64 " ms (connect timeout)", p->who,
                p->connect_timeout_ms);
    return;
  case CONN_IDLE:
    conn_close(c);
    return;
  case CONN_LENT:
  case CONN_CLOSED:
    return;
  }
}

static cr_upool_conn_t *conn_new(cr_upool_t *p) {
  cr_upool_conn_t *c = cr_calloc(1, sizeof *c);
  c->p = p;
  c->state = CONN_DIALING;
  cr_queue_init(&c->link);
  cr_queue_insert_tail(&p->busy, &c->link);
  busy_grew(p);
  p->nconns++;
  cr_deadline_init(p->loop, &c->deadline);
  c->deadline.timer.data = c;
  return c;
}

/* LIFO: the most recently used connection is the least likely to have been dropped by the peer. */
static cr_upool_conn_t *take_idle(cr_upool_t *p) {
  cr_upool_conn_t *c;
  while (!cr_queue_empty(&p->idle)) {
    c = cr_queue_data(cr_queue_head(&p->idle), cr_upool_conn_t, link);
    if (uv_now(p->loop) - c->idle_since >= p->idle_timeout_ms || c->gen != p->gen) {
      /* The newest is stale, so all are: the timer just has not run yet. */
      conn_close(c);
      continue;
    }
    cr_queue_remove(&c->link);
    p->nidle--;
    cr_deadline_clear(&c->deadline);
    cr_stream_read_stop(c->s);
    c->state = CONN_LENT;
    c->reused = 1;
    cr_queue_insert_tail(&p->busy, &c->link);
    busy_grew(p);
    return c;
  }
  return NULL;
}

int cr_upool_connect(cr_upool_t *p, cr_upool_connect_cb cb, void *data, cr_upool_conn_t **out, char *err,
                     size_t errlen) {
  cr_upool_conn_t *c = take_idle(p);
  int rc;
  *out = c;
  if (c != NULL) {
    cr_log_debug("upstream connection reused", "route=%s peer=%s", p->name, p->hostport);
    return 1;
  }
  c = conn_new(p);
  c->cb = cb;
  c->data = data;
  rc = cr_tcp_connect(p->loop, p->host, p->port, on_connect, c, &c->s);
  if (rc < 0) {
    c->s = NULL;
    snprintf(err, errlen, "connect to %s failed: %s", p->hostport, cr_strerror(rc));
    conn_close(c);
    return rc;
  }
  cr_deadline_set(&c->deadline, on_deadline, p->connect_timeout_ms);
  *out = c;
  return 0;
}

/* ---- lending and taking back ---- */

static void on_idle_read(cr_stream_t *s, ssize_t nread, const char *data) {
  cr_upool_conn_t *c = s->data;
  (void)data;
  /* EOF, an error or unsolicited bytes on an idle connection: it is done either way. */
  cr_log_debug("upstream idle connection dropped", "route=%s peer=%s reason=%s", c->p->name, c->p->hostport,
               nread < 0 ? cr_err_name((int)nread) : "unsolicited-bytes");
  conn_close(c);
}

void cr_upool_put(cr_upool_conn_t *c) {
  cr_upool_t *p = c->p;
  if (c->state != CONN_LENT)
    return;
  if (p->freeing || p->max_idle == 0 || c->gen != p->gen) {
    conn_close(c);
    return;
  }
  cr_queue_remove(&c->link);
  p->nbusy--;
  c->state = CONN_IDLE;
  c->idle_since = uv_now(p->loop);
  cr_queue_insert_head(&p->idle, &c->link);
  p->nidle++;
  /* Reading while idle is how a peer's close (or stray bytes) is noticed. */
  c->s->data = c;
  cr_stream_read_start(c->s, on_idle_read);
  cr_deadline_set(&c->deadline, on_deadline, p->idle_timeout_ms);
  while (p->nidle > p->max_idle)
    conn_close(cr_queue_data(p->idle.prev, cr_upool_conn_t, link));
  if (p->nidle > 1 && !uv_is_active((uv_handle_t *)&p->purge_timer))
    uv_timer_start(&p->purge_timer, on_purge_timer, p->purge_interval_ms, p->purge_interval_ms);
}

void cr_upool_close(cr_upool_conn_t *c) { conn_close(c); }

cr_stream_t *cr_upool_conn_stream(const cr_upool_conn_t *c) { return c->state == CONN_LENT ? c->s : NULL; }

int cr_upool_conn_reused(const cr_upool_conn_t *c) { return c->reused; }

/* ---- the pool ---- */

static void format_hostport(char *out, size_t outlen, const char *host, unsigned port) {
  snprintf(out, outlen, strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host, port);
}

int cr_upool_new(uv_loop_t *loop, const cr_upool_opts_t *opts, cr_upool_t **out, char *err, size_t errlen) {
  cr_tls_ctx_opts_t to;
  cr_tls_ctx_t *tls = NULL;
  cr_upool_t *p;
  int rc;
  if (opts->host == NULL || *opts->host == '\0' || opts->port == 0 || opts->port > 65535) {
    snprintf(err, errlen, "host and a port in 1..65535 are required");
    return CR_ECONFIG;
  }
  if (opts->plain) {
    tls = NULL;
  } else if (opts->tls != NULL) {
    tls = cr_tls_ctx_ref(opts->tls);
  } else {
    memset(&to, 0, sizeof to);
    to.server = 0;
    to.ca_file = opts->ca_file;
    to.identity = opts->identity;
    to.alpn = "http/1.1";
    to.resume_sessions = 1;
    rc = cr_tls_ctx_new(&to, &tls, err, errlen);
    if (rc < 0)
      return rc;
  }
  p = cr_calloc(1, sizeof *p);
  p->loop = loop;
  p->tls = tls;
  p->plain = opts->plain;
  p->name = cr_strdup(opts->name ? opts->name : "upstream");
  p->host = cr_strdup(opts->host);
  p->server_name = cr_strdup(opts->server_name && *opts->server_name ? opts->server_name : opts->host);
  p->port = opts->port;
  p->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
  p->idle_timeout_ms = opts->idle_timeout_ms ? opts->idle_timeout_ms : DEFAULT_IDLE_TIMEOUT_MS;
  p->purge_interval_ms = opts->purge_interval_ms ? opts->purge_interval_ms : DEFAULT_PURGE_INTERVAL_MS;
  p->max_idle = opts->max_idle;
  format_hostport(p->hostport, sizeof p->hostport, p->host, p->port);
  snprintf(p->who, sizeof p->who, "%s (server name %s)", p->hostport, p->server_name);
  cr_queue_init(&p->idle);
  cr_queue_init(&p->busy);
  uv_timer_init(loop, &p->purge_timer);
  p->purge_timer.data = p;
  p->timer_open = 1;
  *out = p;
  return 0;
}

static void on_purge_timer_closed(uv_handle_t *h) {
  cr_upool_t *p = h->data;
  p->timer_open = 0;
  pool_maybe_free(p);
}

void cr_upool_free(cr_upool_t *p) {
  cr_queue_t *q, *n;
  if (p == NULL || p->freeing)
    return;
  p->freeing = 1;
  while (!cr_queue_empty(&p->idle))
    conn_close(cr_queue_data(cr_queue_head(&p->idle), cr_upool_conn_t, link));
  cr_queue_foreach_safe(q, n, &p->busy) {
    cr_upool_conn_t *c = cr_queue_data(q, cr_upool_conn_t, link);
    if (c->state != CONN_LENT)
      conn_close(c); /* a connect nobody waits for any more */
  }
  uv_close((uv_handle_t *)&p->purge_timer, on_purge_timer_closed);
}

void cr_upool_set_tls(cr_upool_t *p, cr_tls_ctx_t *tls) {
  cr_tls_ctx_t *old = p->tls;
  if (p->plain)
    return; /* no TLS to replace */
  p->tls = cr_tls_ctx_ref(tls);
  p->gen++;
  cr_tls_ctx_free(old); /* connections still using it hold their own reference */
  while (!cr_queue_empty(&p->idle))
    conn_close(cr_queue_data(cr_queue_head(&p->idle), cr_upool_conn_t, link));
}

const char *cr_upool_hostport(const cr_upool_t *p) { return p->hostport; }

const char *cr_upool_peer_name(const cr_upool_t *p) { return p->who; }

int cr_upool_peer_cert(const cr_upool_t *p, char *subject, size_t subjectlen, time_t *not_after) {
  if (p->info.not_after == 0)
    return UV_ENOENT;
  snprintf(subject, subjectlen, "%s", p->info.subject);
  *not_after = p->info.not_after;
  return 0;
}

int cr_upool_conn_info(const cr_upool_t *p, cr_tls_conn_info_t *out) {
  if (p->info.version[0] == '\0')
    return UV_ENOENT;
  *out = p->info;
  return 0;
}

void cr_upool_stats(const cr_upool_t *p, size_t *idle, size_t *busy) {
  if (idle)
    *idle = p->nidle;
  if (busy)
    *busy = p->nbusy;
}

void cr_upool_handshakes(const cr_upool_t *p, uint64_t *full, uint64_t *resumed) {
  *full = p->handshakes_full;
  *resumed = p->handshakes_resumed;
}

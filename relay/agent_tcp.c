/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's side of a passthrough service: a CONNECT stream from the gateway whose authority names
 * a tcp_routes[] host gets a plain TCP connection to the route's fixed host:port, and bytes move both
 * ways untouched (the caller's TLS runs end to end with the upstream).
 *
 * Relay life: CONNECTING (TCP dial, within connect_timeout; the gateway's first bytes wait in the
 * stream window, copied) -> OPEN (200 sent; idle_timeout without a byte either way ends it) -> ended
 * by both directions' ends, a failure, or the tunnel going away; freed once its TCP stream and timer
 * closed. Backpressure: a gateway byte is consumed from the stream window only when the upstream's
 * socket took it; the upstream is read only while the stream's send buffer has room. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent_internal.h"
#include "ccrelay/common.h"
#include "ccrelay/deadline.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/stream.h"
#include "ccrelay/tunnel.h"

#define EARLY_MAX (1024 * 1024) /* gateway bytes held before the dial completes: one stream window */

typedef struct relay {
  cr_queue_t link;
  agent_t *a;
  cr__agent_gen_t *gen;               /* the configuration route belongs to, held until the relay is freed */
  const cr_conf_tcp_route_t *route;
  tcp_route_metrics_t *m;             /* the route name's counters */
  cr_tstream_t *ts;       /* NULL once closed or let go */
  cr_stream_t *up;        /* NULL until dialled */
  cr_deadline_t deadline; /* connect, then idle */
  cr_buf_t early;         /* gateway bytes that came before the connection */
  uint64_t start_ms;
  uint64_t bytes_in;      /* gateway -> upstream */
  uint64_t bytes_out;     /* upstream -> gateway */
  unsigned connected : 1;
  unsigned gw_ended : 1;  /* END_STREAM from the gateway: the upstream gets our FIN */
  unsigned up_shut : 1;
  unsigned closing : 1;
  unsigned up_closed : 1;
  unsigned timer_closed : 1;
  unsigned paused : 1;    /* not reading the upstream: the stream's send buffer is full */
  char why[160];
} relay_t;

typedef struct up_write {
  relay_t *r;
  size_t len;
  char data[];
} up_write_t;

static void relay_close(relay_t *r, tcp_result_t result, const char *fmt, ...) CR_PRINTF(3, 4);

static void detached_data(cr_tstream_t *ts, const char *data, size_t len) {
  (void)data;
  cr_tstream_consume(ts, len);
}
static void detached_event(cr_tstream_t *ts) { (void)ts; }
static void detached_close(cr_tstream_t *ts, int error) { (void)ts, (void)error; }
static const cr_tstream_callbacks_t detached_cbs = {
    .on_data = detached_data, .on_end = detached_event, .on_writable = detached_event, .on_close = detached_close};

static void maybe_free(relay_t *r) {
  if (r->closing && r->timer_closed && (r->up == NULL || r->up_closed)) {
    cr_buf_free(&r->early);
    cr__agent_gen_release(r->a, r->gen);
    free(r);
  }
}

static void up_closed(cr_stream_t *s) {
  relay_t *r = s->data;
  r->up_closed = 1;
  maybe_free(r);
}

static void timer_closed(uv_handle_t *h) {
  relay_t *r = h->data;
  r->timer_closed = 1;
  maybe_free(r);
}

/* One exit: the log line and counters, the stream reset unless it ended, the upstream closed. */
static void relay_close(relay_t *r, tcp_result_t result, const char *fmt, ...) {
  if (r->closing)
    return;
  r->closing = 1;
  r->m->active--;
  r->m->relays[result]++;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
  }
  cr_log_info("tcp relay", "route=%s upstream=%s:%u bytes_in=%llu bytes_out=%llu duration_ms=%llu ?error=\"%s\"",
              r->route->name, r->route->connect_host, r->route->connect_port, (unsigned long long)r->bytes_in,
              (unsigned long long)r->bytes_out, (unsigned long long)(uv_now(&r->a->loop) - r->start_ms), r->why);
  cr_queue_remove(&r->link);
  if (r->ts) {
    cr_tstream_set_callbacks(r->ts, &detached_cbs, NULL);
    cr_tstream_reset(r->ts);
    r->ts = NULL;
  }
  cr_deadline_close(&r->deadline, timer_closed);
  if (r->up)
    cr_stream_close(r->up, up_closed);
  else
    maybe_free(r);
}

static void on_idle(cr_deadline_t *d) {
  relay_t *r = d->timer.data;
  relay_close(r, TCP_TIMEOUT, "%s for %llu ms", r->connected ? "no bytes either way" : "connect timed out",
              (unsigned long long)(r->connected ? r->route->idle_timeout_ms : r->route->connect_timeout_ms));
}

static void activity(relay_t *r) { cr_deadline_set(&r->deadline, on_idle, r->route->idle_timeout_ms); }

static void up_write_done(cr_stream_t *s, int status, void *arg) {
  up_write_t *w = arg;
  relay_t *r = w->r;
  (void)s;
  if (!r->closing) {
    if (status < 0) {
      relay_close(r, TCP_ERROR, "writing to the upstream: %s", cr_strerror(status));
    } else {
      if (r->ts)
        cr_tstream_consume(r->ts, w->len);
      activity(r);
    }
  }
  free(w);
}

static int up_write(relay_t *r, const char *data, size_t len) {
  up_write_t *w = cr_malloc(sizeof *w + len);
  uv_buf_t b;
  int rc;
  w->r = r;
  w->len = len;
  memcpy(w->data, data, len);
  b = uv_buf_init(w->data, (unsigned)len);
  rc = cr_stream_write(r->up, &b, 1, up_write_done, w);
  if (rc < 0) {
    free(w);
  } else {
    r->bytes_in += len;
    r->m->bytes_in += len;
  }
  return rc;
}

static void up_shutdown_done(cr_stream_t *s, int status, void *arg) {
  relay_t *r = arg;
  (void)s;
  if (!r->closing && status < 0)
    relay_close(r, TCP_ERROR, "ending the upstream's direction: %s", cr_strerror(status));
}

static void up_shutdown(relay_t *r) {
  int rc;
  if (r->up_shut)
    return;
  r->up_shut = 1;
  if ((rc = cr_stream_shutdown(r->up, up_shutdown_done, r)) < 0)
    relay_close(r, TCP_ERROR, "ending the upstream's direction: %s", cr_strerror(rc));
}

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  relay_t *r = cr_tstream_data(ts);
  int rc;
  if (!r->connected) {
    if (cr_buf_append(&r->early, data, len) < 0)
      relay_close(r, TCP_ERROR, "the gateway sent more than %d bytes before the upstream connected", EARLY_MAX);
    return; /* consumed once written to the upstream */
  }
  if ((rc = up_write(r, data, len)) < 0)
    relay_close(r, TCP_ERROR, "writing to the upstream: %s", cr_strerror(rc));
}

static void ts_on_end(cr_tstream_t *ts) {
  relay_t *r = cr_tstream_data(ts);
  r->gw_ended = 1; /* the caller's FIN: the upstream gets ours after the bytes before it */
  if (r->connected)
    up_shutdown(r);
}

static void up_on_read(cr_stream_t *s, ssize_t nread, const char *data);

static void ts_on_writable(cr_tstream_t *ts) {
  relay_t *r = cr_tstream_data(ts);
  int rc;
  if (r->paused && !r->closing) {
    r->paused = 0;
    if ((rc = cr_stream_read_start(r->up, up_on_read)) < 0)
      relay_close(r, TCP_ERROR, "reading the upstream: %s", cr_strerror(rc));
  }
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  relay_t *r = cr_tstream_data(ts);
  r->ts = NULL;
  if (error)
    relay_close(r, TCP_ERROR, "tunnel stream: %s", cr_strerror(error));
  else
    relay_close(r, TCP_OK, NULL); /* both directions ended */
}

static const cr_tstream_callbacks_t relay_cbs = {
    .on_data = ts_on_data, .on_end = ts_on_end, .on_writable = ts_on_writable, .on_close = ts_on_close};

static void up_on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  relay_t *r = s->data;
  int rc;
  if (r->closing || nread == 0)
    return;
  if (nread == UV_EOF) {
    /* the upstream's FIN goes on as END_STREAM; the caller may still send */
    if (r->ts && (rc = cr_tstream_end(r->ts)) < 0)
      relay_close(r, TCP_ERROR, "tunnel stream: %s", cr_strerror(rc));
    return;
  }
  if (nread < 0) {
    relay_close(r, TCP_ERROR, "reading the upstream: %s", cr_strerror((int)nread));
    return;
  }
  rc = r->ts ? cr_tstream_write(r->ts, data, (size_t)nread) : CR_ECLOSED;
  if (rc < 0) {
    relay_close(r, TCP_ERROR, "tunnel stream: %s", cr_strerror(rc));
    return;
  }
  r->bytes_out += (size_t)nread;
  r->m->bytes_out += (size_t)nread;
  activity(r);
  if (rc == 1) {
    cr_stream_read_stop(s);
    r->paused = 1;
  }
}

static int respond(cr_tstream_t *ts, int status, const char *why) {
  cr_http_msg_t head;
  int rc;
  cr_http_msg_init(&head, 4);
  head.status = status;
  head.content_length = status == 200 ? -1 : 0;
  if (why)
    cr_http_msg_add_header(&head, "x-ccrelay-error", 15, why, strlen(why));
  rc = cr_tstream_respond(ts, &head, status == 200);
  cr_http_msg_free(&head);
  return rc;
}

static void on_connect(cr_stream_t *s, int status) {
  relay_t *r = s->data;
  int rc;
  if (status < 0) {
    char why[200];
    snprintf(why, sizeof why, "cannot connect to %s:%u: %s", r->route->connect_host, r->route->connect_port,
             cr_strerror(status));
    if (r->ts) {
      cr_tstream_set_callbacks(r->ts, &detached_cbs, NULL); /* answered: the gateway ends the stream */
      respond(r->ts, 502, why);
    }
    r->ts = NULL;
    relay_close(r, TCP_CONNECT_FAILED, "%s", why);
    return;
  }
  r->connected = 1;
  activity(r);
  if (r->ts == NULL || (rc = respond(r->ts, 200, NULL)) < 0) {
    relay_close(r, TCP_ERROR, "tunnel stream gone before the upstream connected");
    return;
  }
  if (r->early.len > 0) {
    if ((rc = up_write(r, r->early.base, r->early.len)) < 0) {
      relay_close(r, TCP_ERROR, "writing to the upstream: %s", cr_strerror(rc));
      return;
    }
  }
  cr_buf_free(&r->early);
  if (r->gw_ended)
    up_shutdown(r);
  if (!r->closing && (rc = cr_stream_read_start(r->up, up_on_read)) < 0)
    relay_close(r, TCP_ERROR, "reading the upstream: %s", cr_strerror(rc));
}

/* The stream's authority is "host:port" (the port is the caller's business, not the route's). */
static const cr_conf_tcp_route_t *match(const cr_conf_agent_t *conf, const char *authority) {
  size_t n = strcspn(authority, ":");
  for (size_t i = 0; i < conf->ntcp_routes; i++) {
    const char *h = conf->tcp_routes[i].host;
    if (strlen(h) == n && strncasecmp(h, authority, n) == 0)
      return &conf->tcp_routes[i];
  }
  return NULL;
}

static void refuse(cr_tstream_t *ts, int status, const char *authority, const char *why) {
  cr_log_warn("tcp relay refused", "authority=%s status=%d reason=\"%s\"", authority, status, why);
  cr_tstream_set_callbacks(ts, &detached_cbs, NULL);
  if (respond(ts, status, why) < 0)
    cr_tstream_reset(ts);
}

void cr__agent_tcp_stream(agent_t *a, cr_tstream_t *ts, const cr_http_msg_t *req) {
  const char *authority = req->target ? req->target : "";
  const cr_conf_tcp_route_t *route = match(a->conf, authority);
  relay_t *r;
  int rc;
  if (route == NULL) {
    a->metrics.tcp_refused_no_route++;
    refuse(ts, 404, authority, "no tcp route serves this host");
    return;
  }
  if (a->draining) {
    a->metrics.tcp_refused_draining++;
    refuse(ts, 503, authority, "the agent is shutting down");
    return;
  }
  r = cr_calloc(1, sizeof *r);
  r->a = a;
  /* A reload may retire this configuration while the relay runs (a passthrough connection can last
   * hours): its route, names and timeouts stay valid until the relay is freed. */
  r->gen = a->gen;
  a->gen->refs++;
  r->route = route;
  r->m = cr__agent_tcp_metrics(a, route->name);
  r->m->active++;
  r->ts = ts;
  r->start_ms = uv_now(&a->loop);
  cr_buf_init(&r->early, EARLY_MAX);
  cr_deadline_init(&a->loop, &r->deadline);
  r->deadline.timer.data = r;
  cr_queue_insert_tail(&a->tcp_relays, &r->link);
  cr_tstream_set_callbacks(ts, &relay_cbs, r);
  cr_deadline_set(&r->deadline, on_idle, route->connect_timeout_ms);
  rc = cr_tcp_connect(&a->loop, route->connect_host, route->connect_port, on_connect, r, &r->up);
  if (rc < 0) {
    char why[200];
    r->up = NULL;
    snprintf(why, sizeof why, "cannot connect to %s:%u: %s", route->connect_host, route->connect_port,
             cr_strerror(rc));
    cr_tstream_set_callbacks(ts, &detached_cbs, NULL);
    respond(ts, 502, why);
    r->ts = NULL;
    relay_close(r, TCP_CONNECT_FAILED, "%s", why);
    return;
  }
  r->up->data = r;
}

void cr__agent_tcp_close_all(agent_t *a) {
  cr_queue_t *q, *n;
  cr_queue_foreach_safe(q, n, &a->tcp_relays) {
    relay_close(cr_queue_data(q, relay_t, link), TCP_ERROR, "the agent is stopping");
  }
}

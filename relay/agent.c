/* SPDX-License-Identifier: Apache-2.0 */
/* The agent: keeps `connections` tunnels to the gateway and serves every stream that arrives on them
 * by its routes. A stream that matches no route is answered 404 here and nothing is sent anywhere.
 *
 * Tunnel slot life: BACKOFF -> CONNECTING (TCP) -> HANDSHAKE (TLS) -> UP -> IDLE -> BACKOFF ... or freed
 * (how many slots, and which tunnels are kept, is replica coverage: see "tunnel slots" below).
 * Exchange life: stream arrives -> upstream request -> response head -> body -> end, where either
 * side's failure ends the other (an upstream error before the head becomes a 502/504 answer). */
#include "ccrelay/agent.h"

#include "agent_internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/proxy_connect.h"
#include "ccrelay/queue.h"
#include "ccrelay/route.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "ccrelay/tunnel.h"
#include "ccrelay/upstream.h"

/* A tunnel that stayed up this long resets the redial backoff. */
#define STABLE_TUNNEL_MS 10000
#define MAX_FREE_EXCHANGES 64 /* a busy loop turn's worth of ended exchanges, kept for the next ones */
#define SCRATCH_EXTRA_HEADERS 8 /* the scratch head copies 1xx heads from the upstream's: room to spare */

/* IDLE: between a dial or tunnel that ended and the decision to dial again or free the slot. */
typedef enum { SLOT_IDLE, SLOT_BACKOFF, SLOT_CONNECTING, SLOT_HANDSHAKE, SLOT_UP, SLOT_STOPPED } slot_state_t;

typedef struct slot {
  cr_queue_t link; /* agent.slots */
  agent_t *agent;
  unsigned index;
  slot_state_t state;
  cr_stream_t *conn; /* the outermost stream while connecting/handshaking */
  cr_tunnel_t *tunnel;
  uv_timer_t timer;  /* backoff, then the TCP connect deadline, then the rest of the dial's */
  uint64_t dial_start; /* loop time the dial began */
  uint64_t backoff_ms;
  uint64_t up_since;
  unsigned failures;
  unsigned addr;     /* the gateway.address entry of the current dial */
  char replica[CR_CONF_REPLICA_ID_MAX + 1]; /* the replica the tunnel reached, once announced */
  char instance[33];
  unsigned announced : 1; /* the gateway told its replica id on this tunnel */
  unsigned bound : 1;     /* counted toward its replica's `connections` */
  unsigned leaving : 1;   /* shutting down: not needed, its replica left, or the gateway's GOAWAY */
  unsigned goaway : 1;    /* the gateway sent GOAWAY */
} slot_t;

typedef struct exchange {
  cr_queue_t link;
  agent_t *agent;
  cr_tstream_t *ts;
  cr_upstream_req_t *req;
  cr__agent_gen_t *gen;   /* the configuration the exchange began under (a reference) */
  long route;             /* into gen's routes */
  int soap;               /* our own failures as SOAP Faults: the caller's version (cr_http_soap_t), or 0 */
  char request_id[65];
  char method[16];
  int status;
  cr_metrics_calls_t *m;  /* where the exchange counts (its route's block, or unrouted); not for control */
  uint64_t start_ms;
  uint64_t head_ms;       /* when the upstream's head arrived */
  uint64_t bytes_in;
  uint64_t bytes_out;
  size_t unconsumed;      /* request bytes held out of the tunnel window while the upstream is full */
  uint64_t wait_since;    /* when unconsumed last became non-zero (the current send_timeout window); 0: none */
  uint64_t sent_mark;     /* the upstream's sent count at wait_since */
  unsigned head_sent : 1;
  unsigned upstream_paused : 1;
  unsigned resp_has_body : 1;
  unsigned control : 1;   /* a control call: its body is collected, then answered here */
  cr_buf_t control_body;
  char *control_target;
  char *requested_by;
  cr__agent_change_t *change; /* a trust change being written; the answer waits for it */
  char error[300];
} exchange_t;


static void slot_schedule(slot_t *sl);
static void exchange_finish(exchange_t *x);
static void respond_json(exchange_t *x, int status, const cr_buf_t *body);
static void control_finish(exchange_t *x);
static int handle_announce(struct slot *sl, const char *body, size_t len, int *status, cr_buf_t *out);
static void slot_leave(struct slot *sl, const char *why);
static void coverage_check(agent_t *a);

static uint64_t now_ms(agent_t *a) { return uv_now(&a->loop); }

/* ---------- answers of our own ---------- */

static void respond_local(exchange_t *x, int status, const char *code, const char *message) {
  cr_http_msg_t head;
  cr_buf_t body;
  cr_http_msg_init(&head, 0);
  cr_buf_init(&body, 0);
  cr_errpage_build(status, code, message, x->request_id, x->soap, &head, &body);
  cr_http_msg_strip_hop_by_hop(&head); /* content_length travels as a field, not a header */
  x->status = head.status; /* a SOAP Fault goes with 500 */
  x->head_sent = 1;
  if (cr_tstream_respond(x->ts, &head, 1) == 0) {
    cr_tstream_write(x->ts, body.base, body.len);
    cr_tstream_end(x->ts);
    x->bytes_out = body.len;
  } else {
    cr_tstream_reset(x->ts);
  }
  cr_buf_free(&body);
  cr_http_msg_free(&head);
}

/* ---------- upstream side of an exchange ---------- */

/* The upstream's head goes down the tunnel rewritten in place (the parser's own, no copy); the
 * parser already held it to limits.max_header_fields. */
static void up_on_head(cr_upstream_req_t *req, cr_http_msg_t *head) {
  exchange_t *x = cr_upstream_req_data(req);
  int has_body;
  x->head_ms = now_ms(x->agent);
  x->status = head->status;
  has_body = cr_http_body_framing(head, x->method, 0) != CR_HTTP_BODY_NONE;
  cr_http_msg_strip_hop_by_hop(head);
  x->resp_has_body = has_body;
  x->head_sent = 1;
  if (cr_tstream_respond(x->ts, head, has_body) < 0) {
    snprintf(x->error, sizeof x->error, "response head could not be sent down the tunnel");
    cr_upstream_req_cancel(req);
    x->req = NULL;
    cr_tstream_reset(x->ts);
  }
}

/* 100 Continue, 103 Early Hints...: down the tunnel as they come (RFC 9110 15.2: a proxy forwards
 * them), so a caller waiting on Expect: 100-continue sends its body as soon as the upstream asks. */
static void up_on_interim(cr_upstream_req_t *req, const cr_http_msg_t *resp) {
  exchange_t *x = cr_upstream_req_data(req);
  cr_http_msg_t *head = &x->agent->scratch_head;
  if (x->head_sent || cr_http_msg_copy(head, resp) < 0)
    return; /* a head too large to copy is only a hint: the final response still comes */
  cr_http_msg_strip_hop_by_hop(head);
  if (cr_tstream_respond_interim(x->ts, head) < 0)
    cr_log_debug("interim response not relayed", "request_id=%s status=%d", x->request_id, resp->status);
}

static void up_on_body(cr_upstream_req_t *req, const char *data, size_t len) {
  exchange_t *x = cr_upstream_req_data(req);
  x->bytes_out += len;
  if (cr_tstream_write(x->ts, data, len) == 1 && !x->upstream_paused) {
    x->upstream_paused = 1;
    cr_upstream_req_pause(req, 1);
  }
}

static void up_on_end(cr_upstream_req_t *req) {
  exchange_t *x = cr_upstream_req_data(req);
  x->req = NULL;
  if (x->resp_has_body)
    cr_tstream_end(x->ts);
}

static void up_on_error(cr_upstream_req_t *req, int err, const char *detail) {
  exchange_t *x = cr_upstream_req_data(req);
  const cr_conf_route_t *r = &x->gen->conf->routes[x->route];
  x->req = NULL;
  snprintf(x->error, sizeof x->error, "%s", detail);
  cr_log_warn("upstream failed", "request_id=%s route=%s upstream=%s reason=\"%s\" code=%s", x->request_id,
              r->name, r->upstream_url, detail, cr_err_name(err));
  if (x->head_sent) {
    /* Mid-body: what the upstream sent still goes down the tunnel, then a reset, never END_STREAM:
     * the caller must see a broken response, not a short one. */
    cr_tstream_abort(x->ts);
    return;
  }
  /* The caller learns what failed, by class; the addresses and certificate details in `detail` stay in
   * the log, found by the request id the body carries. */
  char pub[256];
  if (err == UV_ETIMEDOUT) {
    snprintf(pub, sizeof pub, "the upstream of route %s did not answer in time", r->name);
    respond_local(x, 504, "upstream_timeout", pub);
    return;
  }
  if (err == CR_ETLS_VERIFY)
    snprintf(pub, sizeof pub, "the upstream of route %s presented a certificate the agent does not accept", r->name);
  else if (err == CR_ETLS)
    snprintf(pub, sizeof pub, "the TLS handshake with the upstream of route %s failed", r->name);
  else if (err == CR_EHTTP_PARSE)
    snprintf(pub, sizeof pub, "the upstream of route %s sent a malformed response", r->name);
  else
    snprintf(pub, sizeof pub, "the connection to the upstream of route %s failed (%s)", r->name, cr_strerror(err));
  respond_local(x, 502, "upstream_failed", pub);
}

static void up_on_writable(cr_upstream_req_t *req) {
  exchange_t *x = cr_upstream_req_data(req);
  x->wait_since = 0; /* everything but a little was taken: no window until bytes wait again */
  if (x->unconsumed && x->ts) {
    cr_tstream_consume(x->ts, x->unconsumed);
    x->unconsumed = 0;
  }
}

static const cr_upstream_req_callbacks_t up_cbs = {
    .on_head = up_on_head,
    .on_interim = up_on_interim,
    .on_body = up_on_body,
    .on_end = up_on_end,
    .on_error = up_on_error,
    .on_writable = up_on_writable,
};

/* ---------- an upstream that stops reading the request body ---------- */

/* While an exchange holds request bytes back from the tunnel because its upstream's buffer is full,
 * a send_timeout window runs from when they began to wait (dropped when the upstream drains, so a
 * window that ends had bytes waiting throughout). By its end the upstream must have taken some (at
 * least one write, and min_send_rate x send_timeout bytes), else the exchange is cut. One timer per
 * agent checks every exchange a few times per window while any waits. */
static uint64_t send_watch_tick(const agent_t *a) {
  return CR_MAX(CR_MIN(a->conf->send_timeout_ms / 4, 1000), 50);
}

static void send_cut(exchange_t *x, uint64_t took) {
  const cr_conf_agent_t *conf = x->agent->conf;
  const cr_conf_route_t *r = &x->gen->conf->routes[x->route];
  char msg[200];
  snprintf(msg, sizeof msg, "the upstream took %llu request bytes in %llu ms (send_timeout, min_send_rate %llu B/s)",
           (unsigned long long)took, (unsigned long long)conf->send_timeout_ms,
           (unsigned long long)conf->min_send_rate);
  cr_log_warn("upstream too slow",
              "request_id=%s route=%s upstream=%s took=%llu send_timeout_ms=%llu min_send_rate=%llu", x->request_id,
              r->name, r->upstream_url, (unsigned long long)took, (unsigned long long)conf->send_timeout_ms,
              (unsigned long long)conf->min_send_rate);
  snprintf(x->error, sizeof x->error, "%s", msg);
  cr_upstream_req_cancel(x->req); /* closes the upstream connection */
  x->req = NULL;
  x->wait_since = 0;
  if (!x->head_sent)
    respond_local(x, 504, "upstream_send_timeout", msg); /* the rest of the body is taken and dropped */
  else
    cr_tstream_reset(x->ts);
  if (x->unconsumed) {
    cr_tstream_consume(x->ts, x->unconsumed);
    x->unconsumed = 0;
  }
}

static void on_send_watch(uv_timer_t *h) {
  agent_t *a = h->data;
  uint64_t now = now_ms(a), ms = a->conf->send_timeout_ms;
  uint64_t need = a->conf->min_send_rate * ms / 1000;
  int waiting = 0;
  cr_queue_t *q, *n;
  cr_queue_foreach_safe(q, n, &a->exchanges) {
    exchange_t *x = cr_queue_data(q, exchange_t, link);
    uint64_t sent, took;
    if (x->wait_since == 0 || x->req == NULL || x->ts == NULL)
      continue;
    waiting = 1;
    if (now - x->wait_since < ms)
      continue;
    sent = cr_upstream_req_sent(x->req);
    took = sent - x->sent_mark;
    if (took >= (need ? need : 1)) {
      x->wait_since = now; /* the next window */
      x->sent_mark = sent;
      continue;
    }
    send_cut(x, took);
  }
  if (!waiting)
    uv_timer_stop(h);
}

static void send_watch_start(exchange_t *x) {
  agent_t *a = x->agent;
  if (a->conf->send_timeout_ms == 0 || x->wait_since != 0)
    return;
  x->wait_since = now_ms(a);
  x->sent_mark = cr_upstream_req_sent(x->req);
  if (!uv_is_active((uv_handle_t *)&a->send_watch))
    uv_timer_start(&a->send_watch, on_send_watch, send_watch_tick(a), send_watch_tick(a));
}

/* ---------- tunnel side of an exchange ---------- */

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  exchange_t *x = cr_tstream_data(ts);
  x->bytes_in += len;
  if (x->control) {
    cr_tstream_consume(ts, len);
    if (!x->head_sent && !x->change && cr_buf_append(&x->control_body, data, len) < 0) {
      cr_buf_t msg;
      cr_buf_init(&msg, 0);
      cr_buf_appendf(&msg, "{\"error\":\"too_large\",\"message\":\"control request bodies are at most 1 MiB\"}\n");
      respond_json(x, 413, &msg);
      cr_buf_free(&msg);
    }
    return;
  }
  if (x->req == NULL) {
    cr_tstream_consume(ts, len); /* answered already: drop the rest of the body */
    return;
  }
  if (x->route >= 0 && x->gen->conf->routes[x->route].max_body &&
      x->bytes_in > x->gen->conf->routes[x->route].max_body) {
    /* A body without Content-Length crossed the route's limit: the upstream request ends here. */
    const cr_conf_route_t *r = &x->gen->conf->routes[x->route];
    char msg[200];
    cr_tstream_consume(ts, len + x->unconsumed); /* bytes held for the upstream are dropped too */
    x->unconsumed = 0;
    x->wait_since = 0;
    cr_upstream_req_cancel(x->req);
    x->req = NULL;
    snprintf(msg, sizeof msg, "the request body is larger than route %s accepts (%llu bytes)", r->name,
             (unsigned long long)r->max_body);
    cr_log_warn("request refused", "request_id=%s route=%s rule=max_body max_body=%llu", x->request_id, r->name,
                (unsigned long long)r->max_body);
    if (x->head_sent) {
      snprintf(x->error, sizeof x->error, "%s", msg);
      cr_tstream_reset(ts);
    } else {
      /* The rest of the body is dropped as it arrives (the caller stops sending once it has the answer). */
      respond_local(x, 413, "too_large", msg);
    }
    return;
  }
  if (cr_upstream_req_write(x->req, data, len) == 1) {
    x->unconsumed += len; /* the window stays closed by these bytes until the upstream drains */
    send_watch_start(x);
  } else
    cr_tstream_consume(ts, len);
}

static void ts_on_end(cr_tstream_t *ts) {
  exchange_t *x = cr_tstream_data(ts);
  if (x->control && !x->head_sent && !x->change) {
    control_finish(x);
    return;
  }
  if (x->req)
    cr_upstream_req_end(x->req);
}

static void ts_on_writable(cr_tstream_t *ts) {
  exchange_t *x = cr_tstream_data(ts);
  if (x->upstream_paused && x->req) {
    x->upstream_paused = 0;
    cr_upstream_req_pause(x->req, 0);
  }
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  exchange_t *x = cr_tstream_data(ts);
  x->ts = NULL;
  if (x->req && x->agent->draining)
    cr_process_note_cut(x->agent->proc); /* the drain ended this call: not a clean stop */
  if (x->req) {
    cr_upstream_req_cancel(x->req);
    x->req = NULL;
    if (!x->error[0])
      snprintf(x->error, sizeof x->error, "tunnel stream closed before the exchange finished: %s",
               cr_strerror(error));
  } else if (error != 0 && !x->error[0]) {
    snprintf(x->error, sizeof x->error, "tunnel stream: %s", cr_strerror(error));
  }
  exchange_finish(x);
}

static const cr_tstream_callbacks_t ts_cbs = {
    .on_head = NULL,
    .on_data = ts_on_data,
    .on_end = ts_on_end,
    .on_writable = ts_on_writable,
    .on_close = ts_on_close,
};

static void exchange_finish(exchange_t *x) {
  agent_t *a = x->agent;
  const char *route = x->route >= 0 ? x->gen->conf->routes[x->route].name : "-";
  if (!x->control) {
    cr_metrics_calls_t *m = x->m;
    m->in_flight--;
    cr_metrics_calls_end(m, x->method, x->status, x->bytes_in, x->bytes_out,
                         x->head_ms ? (double)(x->head_ms - x->start_ms) / 1000.0 : -1.0);
  }
  cr_log_info("access",
              "request_id=%s route=%s method=%s status=%d bytes_in=%llu bytes_out=%llu duration_ms=%llu "
              "upstream_ms=%lld ?error=\"%s\"",
              x->request_id, route, x->method, x->status, (unsigned long long)x->bytes_in,
              (unsigned long long)x->bytes_out, (unsigned long long)(now_ms(a) - x->start_ms),
              x->head_ms ? (long long)(x->head_ms - x->start_ms) : -1LL, x->error);
  cr_queue_remove(&x->link);
  if (x->change) {
    cr__agent_control_cancel(x->change);
    x->change = NULL;
  }
  cr_buf_free(&x->control_body);
  free(x->control_target);
  free(x->requested_by);
  if (x->gen)
    cr__agent_gen_release(a, x->gen);
  x->gen = NULL;
  cr_freelist_put(&a->free_exchanges, x);
}

/* Answers x with a complete JSON body of our own. */
static void respond_json(exchange_t *x, int status, const cr_buf_t *body) {
  cr_http_msg_t head;
  cr_http_msg_init(&head, 0);
  head.status = status;
  head.content_length = (int64_t)body->len;
  cr_http_msg_add_header(&head, "content-type", 12, "application/json", 16);
  x->status = status;
  x->head_sent = 1;
  x->bytes_out = body->len;
  if (cr_tstream_respond(x->ts, &head, body->len > 0) == 0) {
    if (body->len) {
      cr_tstream_write(x->ts, body->base, body->len);
      cr_tstream_end(x->ts);
    }
  } else {
    cr_tstream_reset(x->ts);
  }
  cr_http_msg_free(&head);
}

static void control_done(void *data, int status, const cr_buf_t *body) {
  exchange_t *x = data;
  x->change = NULL;
  respond_json(x, status, body);
}

/* The control channel: the gateway asks, never a public caller (the gateway refuses that prefix).
 * The request body (a certificate to trust) is collected whole, at most 1 MiB, then answered: at
 * once, or once a trust change is on disk (control_done). */
static void control_finish(exchange_t *x) {
  cr_buf_t out;
  int status = 500;
  cr_buf_init(&out, 0);
  if (strcmp(x->control_target, CR_CONTROL_PREFIX "replicas") == 0 && strcmp(x->method, "POST") == 0) {
    /* The gateway's replica announcement: about this tunnel, so answered here. */
    slot_t *sl = cr_tunnel_data(cr_tstream_tunnel(x->ts));
    int leave = handle_announce(sl, x->control_body.base, x->control_body.len, &status, &out);
    respond_json(x, status, &out);
    cr_buf_free(&out);
    if (leave)
      slot_leave(sl, "not needed");
    else
      coverage_check(x->agent);
    return;
  }
  x->change = cr__agent_control(x->agent, x->method, x->control_target, x->control_body.base,
                                x->control_body.len, x->requested_by, &status, &out, control_done, x);
  if (x->change == NULL)
    respond_json(x, status, &out);
  cr_buf_free(&out);
}

/* Requests in flight, or begun since the previous check: heap they freed is likely to be wanted
 * again soon. (Under load there are instants with none in flight; trimming or dropping the caches at
 * such an instant would cost page faults and allocations a moment later.) */
static int agent_busy(void *arg) {
  agent_t *a = arg;
  int busy = !cr_queue_empty(&a->exchanges) || a->exchanges_begun != a->exchanges_seen;
  a->exchanges_seen = a->exchanges_begun;
  return busy;
}

/* Idle: the caches kept for the next burst go back, so the heap trim can return their pages (the
 * process module adds the lower modules' own). */
static void agent_release_caches(void *arg) {
  agent_t *a = arg;
  cr_freelist_drain(&a->free_exchanges);
  cr_queue_t *q;
  cr_queue_foreach(q, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    if (sl->tunnel)
      cr_tunnel_release_caches(sl->tunnel);
  }
  for (size_t i = 0; a->routes && i < a->conf->nroutes; i++)
    if (a->routes[i].up)
      cr_upstream_release_caches(a->routes[i].up);
}

static void on_stream(cr_tunnel_t *t, cr_tstream_t *ts, cr_http_msg_t *req) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  exchange_t *x;
  const char *rid = cr_http_msg_get_id(req, CR_HDR_X_REQUEST_ID);
  const cr_conf_route_t *r;
  int has_body;

  if (req->method && strcmp(req->method, "CONNECT") == 0) {
    cr__agent_tcp_stream(a, ts, req); /* a passthrough service: bytes, not HTTP (agent_tcp.c) */
    return;
  }
  x = cr_freelist_get(&a->free_exchanges);

  x->agent = a;
  x->ts = ts;
  x->gen = a->gen; /* a control call's probes, too, use the routes of the configuration in force */
  a->gen->refs++;
  x->route = -1;
  x->start_ms = now_ms(a);
  cr_strlcpy(x->method, req->method ? req->method : "-", sizeof x->method);
  if (rid && cr_errpage_request_id_valid(rid))
    cr_strlcpy(x->request_id, rid, sizeof x->request_id);
  else
    cr_errpage_request_id_new(x->request_id);
  cr_queue_insert_tail(&a->exchanges, &x->link);
  a->exchanges_begun++;
  cr_tstream_set_callbacks(ts, &ts_cbs, x);

  if (req->target && strncmp(req->target, CR_CONTROL_PREFIX, strlen(CR_CONTROL_PREFIX)) == 0) {
    const char *by = cr_http_msg_get_id(req, CR_HDR_X_CCRELAY_REQUESTED_BY);
    x->control = 1;
    x->control_target = cr_strdup(req->target);
    x->requested_by = cr_strdup(by ? by : "");
    cr_buf_init(&x->control_body, 1024 * 1024);
    if (req->content_length == 0)
      control_finish(x); /* no body: on_end may already have been consumed with the head */
    return;
  }
  x->route = cr_route_match(a->conf->routes, a->conf->nroutes, req);
  x->m = x->route >= 0 ? a->routes[x->route].m : &a->metrics.unrouted;
  x->m->in_flight++;
  /* A soap route answers its failures as SOAP Faults, in the caller's version (1.1 when the request
   * does not say); without a route the request alone decides, as at the gateway. */
  x->soap = cr_http_soap_version(req);
  if (x->route >= 0 && a->conf->routes[x->route].soap && x->soap == CR_SOAP_NONE)
    x->soap = CR_SOAP_11;
  else if (x->route >= 0 && !a->conf->routes[x->route].soap)
    x->soap = CR_SOAP_NONE;
  if (x->route < 0) {
    const char *host = cr_http_msg_get_id(req, CR_HDR_HOST);
    cr_log_warn("no route", "request_id=%s method=%s target=\"%s\" host=%s", x->request_id, x->method,
                req->target ? req->target : "", host ? host : "-");
    respond_local(x, 404, "no_route", "no route of this agent matches the request; nothing was forwarded");
    return;
  }
  r = &a->conf->routes[x->route];
  if (!a->routes[x->route].usable) {
    char msg[900];
    snprintf(msg, sizeof msg, "route %s is unavailable: %s", r->name, a->routes[x->route].why);
    respond_local(x, 503, "route_unavailable", msg);
    return;
  }
  if (r->max_body && req->content_length >= 0 && (uint64_t)req->content_length > r->max_body) {
    char msg[200];
    snprintf(msg, sizeof msg, "the request body (%lld bytes) is larger than route %s accepts (%llu bytes); nothing "
             "was forwarded", (long long)req->content_length, r->name, (unsigned long long)r->max_body);
    cr_log_warn("request refused", "request_id=%s route=%s rule=max_body content_length=%lld max_body=%llu",
                x->request_id, r->name, (long long)req->content_length, (unsigned long long)r->max_body);
    respond_local(x, 413, "too_large", msg);
    return;
  }
  /* The tunnel's head becomes the upstream request in place (it is ours until we return, and the
   * upstream module serialises it before cr_upstream_request returns): no copy per request. */
  has_body = cr_http_body_framing(req, NULL, 1) != CR_HTTP_BODY_NONE;
  cr_http_msg_strip_hop_by_hop(req);
  if (r->upstream_base_path && r->upstream_base_path[0]) {
    cr_buf_reset(&a->scratch_buf);
    cr_buf_appendf(&a->scratch_buf, "%s%s", r->upstream_base_path, req->target);
    cr_http_msg_set_target(req, a->scratch_buf.base, a->scratch_buf.len);
  }
  if (!has_body && (strcmp(x->method, "GET") == 0 || strcmp(x->method, "HEAD") == 0 ||
                    strcmp(x->method, "DELETE") == 0 || strcmp(x->method, "OPTIONS") == 0))
    req->content_length = -1; /* no body and no reason to announce an empty one */
  x->req = cr_upstream_request(a->routes[x->route].up, req, has_body, &up_cbs, x);
}

/* ---------- tunnel slots and replica coverage ---------- */

/* Coverage: the gateways announce their replica set on every tunnel (handle_announce). The agent
 * keeps `connections` tunnels to every replica of the newest set: it dials its gateway.address
 * (a load balancer, or a list, every A/AAAA answer a candidate) until each replica holds them,
 * keeps a tunnel that lands on a replica short of tunnels, and closes one that lands on a covered
 * replica or on one outside the set (GOAWAY, not a failure: it redials promptly). A replica that
 * sends GOAWAY (draining) loses its tunnels without a failure counted, and is dialled for again at
 * once: while it is away the dials land on covered replicas, and slow down after a few (a replica
 * that restarts is covered again as soon as the load balancer sends a dial to it); a replica that
 * left the set loses its tunnels. Without any announcement (an older gateway) the agent holds `connections` tunnels in
 * all, as before. Slots come and go with the need: one per tunnel or dial. */

#define SURPLUS_GRACE 4      /* surplus dials per replica of the set before they slow down */
#define MISS_LOG_MS 60000    /* a replica not reached is logged at most this often */

static void slot_failed(slot_t *sl, const char *what, int err, const char *detail);
static void slot_dial(uv_timer_t *t);
static void slot_after(slot_t *sl, int failed);
static void coverage_check(agent_t *a);

static const cr_conf_addr_t *slot_addr(const slot_t *sl) { return &sl->agent->boot->gateway.addrs[sl->addr]; }

static int in_set(const agent_t *a, const char *id) {
  for (size_t i = 0; a->set && i < a->set->nset; i++)
    if (strcmp(a->set->set[i], id) == 0)
      return 1;
  return 0;
}

/* Tunnels kept for replica id (not leaving). */
static unsigned covered(const agent_t *a, const char *id) {
  unsigned n = 0;
  cr_queue_t *q;
  cr_queue_foreach(q, &a->slots) {
    const slot_t *sl = cr_queue_data(q, slot_t, link);
    if (sl->bound && !sl->leaving && strcmp(sl->replica, id) == 0)
      n++;
  }
  return n;
}

/* Tunnels still wanted: per replica of the set what it lacks; without a set,
 * `connections` less the tunnels up. */
static unsigned coverage_need(const agent_t *a) {
  unsigned conns = a->boot->gateway.connections, need = 0;
  cr_queue_t *q;
  if (a->set == NULL) {
    unsigned up = 0;
    cr_queue_foreach(q, &a->slots) {
      const slot_t *sl = cr_queue_data(q, slot_t, link);
      up += sl->state == SLOT_UP && !sl->leaving;
    }
    return up < conns ? conns - up : 0;
  }
  for (size_t i = 0; i < a->set->nset; i++) {
    unsigned have = covered(a, a->set->set[i]);
    need += have < conns ? conns - have : 0;
  }
  return need;
}

/* Slots working toward a new tunnel: dialling, or up and not yet told which replica they reached. */
static unsigned coverage_active(const agent_t *a, const slot_t *except) {
  unsigned n = 0;
  cr_queue_t *q;
  cr_queue_foreach(q, &a->slots) {
    const slot_t *sl = cr_queue_data(q, slot_t, link);
    if (sl == except || sl->leaving || sl->state == SLOT_STOPPED || sl->state == SLOT_IDLE)
      continue;
    if (sl->state != SLOT_UP || (a->set != NULL && !sl->bound))
      n++;
  }
  return n;
}

static void slot_timer_closed(uv_handle_t *h) { free(h->data); }

static void slot_free(slot_t *sl) {
  agent_t *a = sl->agent;
  cr_queue_remove(&sl->link);
  a->nslots--;
  uv_close((uv_handle_t *)&sl->timer, slot_timer_closed);
}

static slot_t *slot_new(agent_t *a) {
  slot_t *sl = cr_calloc(1, sizeof *sl);
  sl->agent = a;
  sl->index = a->slot_ids++;
  sl->state = SLOT_IDLE;
  uv_timer_init(&a->loop, &sl->timer);
  sl->timer.data = sl;
  cr_queue_insert_tail(&a->slots, &sl->link);
  a->nslots++;
  return sl;
}

/* The replicas of the set short of tunnels, for the log. */
static void missing_list(const agent_t *a, char *out, size_t len) {
  size_t off = 0;
  out[0] = '\0';
  for (size_t i = 0; a->set && i < a->set->nset && off < len; i++)
    if (covered(a, a->set->set[i]) < a->boot->gateway.connections)
      off += (size_t)snprintf(out + off, len - off, "%s%s", off ? "," : "", a->set->set[i]);
}

/* A dial that landed on a replica already covered (or outside the set) is retried promptly; once
 * SURPLUS_GRACE dials per replica in a row found nothing new, the load balancer is probably not
 * sending us to the missing replica (down, or not behind it): slow down and say so. */
static uint64_t surplus_delay(agent_t *a) {
  const cr_conf_agent_t *c = a->boot;
  unsigned grace = SURPLUS_GRACE * (unsigned)(a->set ? CR_MAX(a->set->nset, 1) : 1), steps;
  uint64_t d = c->gateway.reconnect_min_ms;
  uint32_t rnd = 0;
  if (a->surplus_streak > grace) {
    char missing[512];
    steps = (a->surplus_streak - grace) / grace + 1;
    for (unsigned i = 0; i < steps && d < c->gateway.reconnect_max_ms; i++)
      d *= 2;
    d = CR_MIN(d, c->gateway.reconnect_max_ms);
    missing_list(a, missing, sizeof missing);
    if (missing[0] && (a->miss_logged_ms == 0 || now_ms(a) - a->miss_logged_ms >= MISS_LOG_MS)) {
      a->miss_logged_ms = now_ms(a);
      cr_log_warn("replica not reached: serving through the others",
                  "missing=\"%s\" dials=%u gateway=%s:%u retry_ms=%llu hint=\"the load balancer in front of "
                  "gateway.address does not send tunnels to it: is it down, or not behind that address?\"",
                  missing, a->surplus_streak, c->gateway.host, c->gateway.port, (unsigned long long)d);
    }
  }
  cr_x509_random_bytes(&rnd, sizeof rnd);
  return d / 2 + (d / 2 + 1) * (rnd % 1000) / 1000;
}

/* Closes a tunnel we do not need (surplus, or its replica left the set): GOAWAY, streams in flight
 * finish. Its close is no failure. */
static void slot_leave(slot_t *sl, const char *why) {
  agent_t *a = sl->agent;
  if (sl->leaving || sl->tunnel == NULL)
    return;
  sl->leaving = 1;
  cr_log_debug("tunnel not needed", "slot=%u replica=%s reason=\"%s\"", sl->index, sl->replica[0] ? sl->replica : "-",
               why);
  cr_tunnel_shutdown(sl->tunnel, a->conf->drain_timeout_ms);
}

static void adopt_set(agent_t *a, const cr__agent_announce_t *an) {
  char list[1024];
  size_t off = 0;
  cr_queue_t *q;
  if (a->set == NULL)
    a->set = cr_calloc(1, sizeof *a->set);
  *a->set = *an;
  list[0] = '\0';
  for (size_t i = 0; i < an->nset && off < sizeof list; i++)
    off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? "," : "", an->set[i]);
  cr_log_info("replica set", "set=\"%s\" generation=%llu from=%s", list, (unsigned long long)an->generation,
              an->replica);
  /* A replica that left the set: its tunnels end (calls in flight on them finish). */
  cr_queue_foreach(q, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    if (sl->announced && !in_set(a, sl->replica))
      slot_leave(sl, "its replica left the replica set");
  }
}

/* The announcement arrived on sl's tunnel: adopt the set when it is the newest, and say whether the
 * tunnel is kept. Writes the answer's JSON to out; returns 1 when the tunnel is to be closed. */
static int handle_announce(slot_t *sl, const char *body, size_t len, int *status, cr_buf_t *out) {
  agent_t *a = sl->agent;
  cr__agent_announce_t *an = cr_malloc(sizeof *an);
  const char *why = NULL;
  char err[200];
  int leave = 0;
  if (cr__agent_announce_parse(body, len, an, err, sizeof err) < 0) {
    cr_log_warn("bad replica announcement", "slot=%u peer=%s reason=\"%s\"", sl->index,
                sl->tunnel ? cr_tunnel_transport(sl->tunnel)->peer : "-", err);
    *status = 400;
    cr_buf_appendf(out, "{\"error\":{\"code\":\"bad_announcement\",\"message\":\"");
    cr_errpage_json_escape(out, err);
    cr_buf_appendf(out, "\"}}\n");
    free(an);
    return 0;
  }
  if (a->set == NULL || an->generation > a->set->generation ||
      (an->generation == a->set->generation && strcmp(an->replica, a->set->replica) > 0))
    adopt_set(a, an);
  if (sl->announced && strcmp(sl->replica, an->replica) != 0)
    sl->bound = 0; /* cannot happen with one process per tunnel; judged afresh */
  snprintf(sl->replica, sizeof sl->replica, "%s", an->replica);
  snprintf(sl->instance, sizeof sl->instance, "%s", an->instance);
  sl->announced = 1;
  if (sl->leaving) {
    why = "closing";
  } else if (!in_set(a, an->replica)) {
    why = "this replica is not in the replica set";
    if (a->notin_logged_ms == 0 || now_ms(a) - a->notin_logged_ms >= MISS_LOG_MS) {
      a->notin_logged_ms = now_ms(a);
      cr_log_warn("tunnel reached a replica outside the replica set; closing it",
                  "replica=%s set_from=%s generation=%llu hint=\"replicas disagree on the set, or a replica "
                  "is missing from its own set\"",
                  an->replica, a->set->replica, (unsigned long long)a->set->generation);
    }
    leave = 1;
  } else if (!sl->bound) {
    cr_queue_t *q;
    if (covered(a, an->replica) >= a->boot->gateway.connections) {
      why = "this replica already holds its tunnels from this agent";
      leave = 1;
    } else {
      sl->bound = 1;
      a->surplus_streak = 0;
      cr_log_info("tunnel covers replica", "slot=%u replica=%s tunnels_to_replica=%u connections=%u", sl->index,
                  an->replica, covered(a, an->replica), a->boot->gateway.connections);
    }
    /* Two processes announcing one id: their tunnels would be counted as one replica's. */
    cr_queue_foreach(q, &a->slots) {
      const slot_t *o = cr_queue_data(q, slot_t, link);
      if (o != sl && o->bound && !o->leaving && o->instance[0] && sl->instance[0] &&
          strcmp(o->replica, an->replica) == 0 && strcmp(o->instance, sl->instance) != 0 &&
          (a->dup_logged_ms == 0 || now_ms(a) - a->dup_logged_ms >= MISS_LOG_MS)) {
        a->dup_logged_ms = now_ms(a);
        cr_log_error("two gateway replicas announce the same replica id",
                     "replica=%s instances=%s,%s hint=\"give every gateway replica its own replicas.id\"",
                     an->replica, o->instance, sl->instance);
        break;
      }
    }
  }
  if (leave)
    a->surplus_streak++;
  *status = 200;
  cr_buf_appendf(out, "{\"kept\":%s", leave || sl->leaving ? "false" : "true");
  if (why) {
    cr_buf_appendf(out, ",\"reason\":\"");
    cr_errpage_json_escape(out, why);
    cr_buf_appendf(out, "\"");
  }
  cr_buf_appendf(out, ",\"replica\":\"");
  cr_errpage_json_escape(out, an->replica);
  cr_buf_appendf(out, "\",\"tunnels_to_replica\":%u,\"instance\":\"%s\"}\n", covered(a, an->replica),
                 a->instance); /* the gateway groups this process's tunnels by it */
  free(an);
  return leave;
}

/* Dials or drops slots so that the dials in progress match what coverage still lacks. */
static void coverage_check(agent_t *a) {
  unsigned need, active;
  cr_queue_t *q, *n;
  if (a->draining)
    return;
  need = coverage_need(a);
  active = coverage_active(a, NULL);
  /* Too many waiting to dial (a replica got covered meanwhile, or left): drop the waiting ones. */
  cr_queue_foreach_safe(q, n, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    if (active <= need)
      break;
    if (sl->state == SLOT_BACKOFF && !sl->leaving) {
      uv_timer_stop(&sl->timer);
      slot_free(sl);
      active--;
    }
  }
  while (active < need) {
    slot_t *sl = slot_new(a);
    sl->state = SLOT_BACKOFF;
    uv_timer_start(&sl->timer, slot_dial, 0, 0);
    active++;
  }
}
static void on_dial_timeout(uv_timer_t *t);

static void on_tunnel_close(cr_tunnel_t *t, int error) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  const cr_conf_addr_t *ad = slot_addr(sl);
  uint64_t up_for;
  int quiet;
  sl->tunnel = NULL;
  if (sl->state != SLOT_UP) {
    /* Closed before the gateway's SETTINGS: the gateway refused us (TLS 1.3 reports a refused client
     * certificate only after the handshake), or the dial deadline passed. */
    slot_failed(sl, "tls", error ? error : CR_ECLOSED, cr_tunnel_error_detail(t));
    return;
  }
  up_for = now_ms(a) - sl->up_since;
  a->tunnels_up--;
  /* Ours to close (surplus, replica gone) or the gateway's drain: expected, not a failure. */
  quiet = a->draining || sl->leaving || sl->goaway;
  cr_log(quiet ? (sl->bound || a->draining ? CR_LOG_INFO : CR_LOG_DEBUG) : CR_LOG_WARN, "tunnel down",
         "slot=%u gateway=%s:%u replica=%s reason=\"%s%s%s\" up_ms=%llu tunnels_up=%zu", sl->index, ad->host, ad->port,
         sl->replica[0] ? sl->replica : "-", error ? cr_strerror(error) : "closed",
         cr_tunnel_error_detail(t)[0] ? ": " : "", cr_tunnel_error_detail(t), (unsigned long long)up_for,
         a->tunnels_up);
  if (up_for >= STABLE_TUNNEL_MS || quiet)
    sl->backoff_ms = 0;
  if (a->draining) {
    sl->state = SLOT_STOPPED;
    return;
  }
  slot_after(sl, !quiet);
}

static void on_tunnel_ready(cr_tunnel_t *t) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  const cr_conf_addr_t *ad = slot_addr(sl);
  uv_timer_stop(&sl->timer);
  sl->state = SLOT_UP;
  sl->up_since = now_ms(a);
  a->tunnels_up++;
  cr_log(a->set ? CR_LOG_DEBUG : CR_LOG_INFO, "tunnel up", "slot=%u gateway=%s:%u peer=%s attempts=%u tunnels_up=%zu",
         sl->index, ad->host, ad->port, cr_tunnel_transport(t)->peer, sl->failures + 1, a->tunnels_up);
  sl->failures = 0;
  coverage_check(a);
}

static void on_tunnel_goaway(cr_tunnel_t *t) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  sl->goaway = 1;
  cr_log(sl->leaving ? CR_LOG_DEBUG : CR_LOG_INFO, "gateway sent GOAWAY", "slot=%u replica=%s", sl->index,
         sl->replica[0] ? sl->replica : "-");
  if (sl->leaving)
    return;
  /* The replica drains: calls in flight finish on this tunnel, and a replacement is dialled now. */
  sl->leaving = 1;
  coverage_check(a);
}

static const cr_tunnel_callbacks_t tunnel_cbs = {
    .on_stream = on_stream,
    .on_ready = on_tunnel_ready,
    .on_goaway = on_tunnel_goaway,
    .on_close = on_tunnel_close,
};

/* A slot's dial or tunnel ended: dial again if coverage still lacks a tunnel (failed: exponential
 * backoff; otherwise promptly), else the slot goes. */
static void slot_after(slot_t *sl, int failed) {
  agent_t *a = sl->agent;
  int was_surplus = sl->leaving && !sl->bound && !sl->goaway;
  sl->state = SLOT_IDLE;
  sl->bound = sl->leaving = sl->goaway = sl->announced = 0;
  sl->replica[0] = sl->instance[0] = '\0';
  if (coverage_active(a, sl) < coverage_need(a)) {
    if (failed) {
      slot_schedule(sl);
    } else {
      sl->state = SLOT_BACKOFF;
      uv_timer_start(&sl->timer, slot_dial, was_surplus ? surplus_delay(a) : 0, 0);
    }
  } else {
    slot_free(sl);
  }
  coverage_check(a);
}

static void slot_failed(slot_t *sl, const char *what, int err, const char *detail) {
  agent_t *a = sl->agent;
  const cr_conf_addr_t *ad = slot_addr(sl);
  sl->failures++;
  cr__agent_count_dial_failure(a, what, err);
  /* Repeated failures are logged at debug after the third, so a long outage does not flood the log;
   * every 20th stays visible. */
  cr_log(sl->failures <= 3 || sl->failures % 20 == 0 ? CR_LOG_WARN : CR_LOG_DEBUG, "tunnel dial failed",
         "slot=%u gateway=%s:%u step=%s reason=\"%s%s%s\" attempt=%u", sl->index, ad->host, ad->port, what,
         cr_strerror(err), detail && detail[0] ? ": " : "", detail ? detail : "", sl->failures);
  if (sl->conn) {
    cr_stream_close(sl->conn, NULL);
    sl->conn = NULL;
  }
  uv_timer_stop(&sl->timer);
  if (a->draining) {
    sl->state = SLOT_STOPPED;
    return;
  }
  slot_after(sl, 1);
}

static void on_handshake(cr_stream_t *tls, int status) {
  slot_t *sl = tls->data;
  agent_t *a = sl->agent;
  cr_tunnel_opts_t opts;
  int r;
  if (status < 0) {
    slot_failed(sl, "tls", status, cr_tls_stream_error(tls));
    return;
  }
  sl->conn = NULL;
  memset(&opts, 0, sizeof opts);
  opts.role = CR_TUNNEL_AGENT;
  opts.ping_interval_ms = a->boot->gateway.ping_interval_ms;
  opts.ping_timeout_ms = a->boot->gateway.ping_timeout_ms;
  opts.rtt = &a->metrics.rtt;
  /* The dial deadline keeps running until the gateway's SETTINGS arrive (on_tunnel_ready). */
  sl->tunnel = cr_tunnel_new(tls, &opts, &tunnel_cbs, sl);
  r = cr_tunnel_start(sl->tunnel);
  if (r < 0)
    cr_tunnel_close(sl->tunnel, r);
}

static void on_connected(cr_stream_t *s, int status) {
  slot_t *sl = s->data;
  agent_t *a = sl->agent;
  cr_stream_t *tls;
  if (status < 0) {
    char why[640];
    cr_stream_error_detail(s, why, sizeof why); /* through a proxy: what the proxy said */
    slot_failed(sl, a->boot->gateway.proxy.host ? "proxy" : "connect", status, why);
    return;
  }
  sl->state = SLOT_HANDSHAKE;
  /* The TCP connect had its own shorter deadline; TLS and SETTINGS get what connect_timeout leaves. */
  {
    uint64_t used = uv_now(&a->loop) - sl->dial_start, total = a->boot->gateway.connect_timeout_ms;
    uv_timer_start(&sl->timer, on_dial_timeout, used < total ? total - used : 1, 0);
  }
  tls = cr_tls_stream_new(s, a->tunnel_tls,
                          a->boot->gateway.server_name ? a->boot->gateway.server_name : slot_addr(sl)->host);
  tls->data = sl;
  sl->conn = tls;
  status = cr_tls_stream_handshake(tls, on_handshake);
  if (status < 0)
    slot_failed(sl, "tls", status, cr_tls_stream_error(tls));
}

/* A path that drops packets leaves a TCP connect hanging through SYN retries (1, 3, 7, 15 s); giving
 * it up early and dialling again finds the gateway soon after the path is back. */
static uint64_t dial_deadline(const cr_conf_agent_t *c) {
  return CR_MIN(c->gateway.dial_timeout_ms, c->gateway.connect_timeout_ms);
}

static void on_dial_timeout(uv_timer_t *t) {
  slot_t *sl = t->data;
  char detail[96];
  if (sl->tunnel) { /* TLS done, but the gateway never sent its SETTINGS */
    cr_tunnel_close(sl->tunnel, UV_ETIMEDOUT);
    return;
  }
  if (sl->state == SLOT_CONNECTING)
    snprintf(detail, sizeof detail, "TCP connect not finished within %llu ms (gateway.dial_timeout)",
             (unsigned long long)dial_deadline(sl->agent->boot));
  else
    snprintf(detail, sizeof detail, "not connected within %llu ms",
             (unsigned long long)sl->agent->boot->gateway.connect_timeout_ms);
  slot_failed(sl, sl->state == SLOT_HANDSHAKE ? "tls" : "connect", UV_ETIMEDOUT, detail);
}

/* TCP to the gateway; or, with gateway.proxy, TCP to the proxy and CONNECT to the gateway. Either
 * way on_connected gets a byte stream to the gateway for the TLS handshake. */
/* One dial to ad: straight, or through the proxy when one applies (the proxy resolves the name). */
static int dial_gateway(agent_t *a, slot_t *sl, const cr_conf_addr_t *ad, unsigned rotation, cr_stream_t **s) {
  const cr_conf_proxy_t *p = &a->boot->gateway.proxy;
  cr_proxy_dial_opts_t o = {p->host, p->port, a->proxy_auth,
                            p->username == NULL  ? "proxy.username with proxy.password_file or proxy.password_env"
                            : p->password_from_env ? "proxy.username / proxy.password_env"
                                                   : "proxy.username / proxy.password_file",
                            p->connect_timeout_ms};
  if (p->host == NULL)
    return cr_tcp_connect_rotated(&a->loop, ad->host, ad->port, rotation, on_connected, sl, s);
  return cr_proxy_dial(&a->loop, &o, ad->host, ad->port, on_connected, sl, s);
}

static void slot_dial(uv_timer_t *t) {
  slot_t *sl = t->data;
  agent_t *a = sl->agent;
  cr_stream_t *s;
  int r;
  const cr_conf_addr_t *ad;
  unsigned n = a->dials++;
  a->metrics.dials++;
  sl->state = SLOT_CONNECTING;
  /* Entries in turn, and within an entry its answers in turn: with several addresses or a name with
   * several records, successive dials reach every candidate. */
  sl->addr = n % (unsigned)a->boot->gateway.naddrs;
  ad = slot_addr(sl);
  r = dial_gateway(a, sl, ad, n / (unsigned)a->boot->gateway.naddrs, &s);
  if (r < 0) {
    slot_failed(sl, "connect", r, NULL);
    return;
  }
  s->data = sl;
  sl->conn = s;
  sl->dial_start = uv_now(&a->loop);
  uv_timer_start(&sl->timer, on_dial_timeout, dial_deadline(a->boot), 0);
}

/* Exponential backoff with jitter between reconnect_min and reconnect_max, so a gateway restart is not
 * met by every agent's every slot in the same millisecond. */
static void slot_schedule(slot_t *sl) {
  const cr_conf_agent_t *c = sl->agent->boot;
  uint32_t rnd = 0;
  uint64_t delay;
  if (sl->backoff_ms == 0)
    sl->backoff_ms = c->gateway.reconnect_min_ms;
  else
    sl->backoff_ms = CR_MIN(sl->backoff_ms * 2, c->gateway.reconnect_max_ms);
  cr_x509_random_bytes(&rnd, sizeof rnd); /* 0 when it fails: no jitter this once */
  delay = sl->backoff_ms / 2 + (sl->backoff_ms / 2 + 1) * (rnd % 1000) / 1000;
  sl->state = SLOT_BACKOFF;
  uv_timer_start(&sl->timer, slot_dial, delay, 0);
}

/* ---------- start, drain, stop ---------- */

static int agent_drained(void *arg) {
  agent_t *a = arg;
  cr_queue_t *q;
  if (!a->draining)
    return 0;
  cr_queue_foreach(q, &a->slots) {
    if (cr_queue_data(q, slot_t, link)->state != SLOT_STOPPED)
      return 0;
  }
  return 1;
}

/* The process module closed its own handles (signals, deadline, trim); these are the agent's. */
static void close_handles(void *arg) {
  agent_t *a = arg;
  cr_queue_t *q, *n;
  if (a->handles_closed)
    return;
  a->handles_closed = 1;
  uv_close((uv_handle_t *)&a->send_watch, NULL);
  uv_close((uv_handle_t *)&a->retired_timer, NULL);
  cr__agent_gens_close(a);
  cr__agent_tcp_close_all(a);
  cr_queue_foreach_safe(q, n, &a->slots) slot_free(cr_queue_data(q, slot_t, link));
  cr__agent_trust_stop(a);
  if (a->admin) {
    cr_admin_close(a->admin);
    a->admin = NULL;
  }
  for (size_t i = 0; a->routes && i < a->conf->nroutes; i++)
    if (a->routes[i].up) {
      cr_upstream_free(a->routes[i].up);
      a->routes[i].up = NULL;
    }
}

/* The drain deadline passed, or a second stop signal: tunnels still draining close now. */
static void agent_cut(void *arg, cr_process_end_t why) {
  agent_t *a = arg;
  cr_queue_t *q;
  (void)why;
  cr_queue_foreach(q, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    if (sl->tunnel)
      cr_tunnel_close(sl->tunnel, CR_ECLOSED);
  }
}

static void agent_drain(void *arg) {
  agent_t *a = arg;
  cr_queue_t *q;
  a->draining = 1;
  cr_queue_foreach(q, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    uv_timer_stop(&sl->timer);
    if (sl->tunnel) {
      cr_tunnel_shutdown(sl->tunnel, a->conf->drain_timeout_ms);
    } else {
      if (sl->conn) {
        cr_stream_close(sl->conn, NULL);
        sl->conn = NULL;
      }
      sl->state = SLOT_STOPPED;
    }
  }
}

static const cr_process_handlers_t process_handlers = {
    .drain = agent_drain,
    .drained = agent_drained,
    .cut = agent_cut,
    .stop = close_handles,
    .busy = agent_busy,
};

int cr__agent_tunnel_tls_new(const cr_conf_agent_t *c, cr_tls_ctx_t **out, char *err, size_t errlen) {
  cr_tls_identity_src_t id = {c->gateway.identity.pkcs12.path, c->gateway.identity.password,
                              c->gateway.identity.cert.path, c->gateway.identity.key.path};
  cr_tls_ctx_opts_t o;
  memset(&o, 0, sizeof o);
  o.ca_file = c->gateway.ca.path;
  o.identity = &id;
  o.identity_current = 1;
  o.tls13_only = 1;
  o.alpn = CR_TUNNEL_ALPN;
  o.alpn_required = 1;
  return cr_tls_ctx_new(&o, out, err, errlen);
}

static int build_tunnel_tls(agent_t *a) {
  char err[1024];
  if (cr__agent_tunnel_tls_new(a->conf, &a->tunnel_tls, err, sizeof err) < 0) {
    cr_log_error("cannot start", "config=%s key=gateway reason=\"%s\"", a->conf->path, err);
    return -1;
  }
  return 0;
}

/* gateway.proxy as loaded (from the file, the environment, or excluded by no_proxy), said once at
 * start; the credentials become the proxy dial's Basic scheme. */
static void proxy_start(agent_t *a) {
  const cr_conf_proxy_t *p = &a->boot->gateway.proxy;
  if (p->host != NULL) {
    if (p->username != NULL)
      a->proxy_auth = cr_proxy_auth_basic_new(p->username, p->password);
    cr_log_info("gateway proxy", "proxy=%s%s%s:%u from=%s user=%s gateway=%s:%u", strchr(p->host, ':') ? "[" : "",
                p->host, strchr(p->host, ':') ? "]" : "", p->port, p->source, p->username ? p->username : "-",
                a->boot->gateway.host, a->boot->gateway.port);
  } else if (p->from_environment) {
    cr_log_info("gateway proxy", "proxy=none from=environment reason=\"%s%s%s\" gateway=%s:%u",
                p->no_proxy_entry ? "no_proxy entry '" : "https_proxy and HTTPS_PROXY are not set",
                p->no_proxy_entry ? p->no_proxy_entry : "", p->no_proxy_entry ? "' matches the gateway" : "",
                a->boot->gateway.host, a->boot->gateway.port);
  }
}

/* Tunnels up by the replica they reached, for /metrics: every replica of the announced set (0 when
 * none reaches it, so that an alert sees it), then any other replica a tunnel reached; "" for
 * tunnels whose gateway announced no replica. Replica ids are the gateways' validated ids. */
static void tunnels_metrics(agent_t *a, cr_buf_t *out) {
  enum { MAXIDS = 2 * CR_CONF_REPLICAS_MAX + 1 };
  const char *ids[MAXIDS];
  uint64_t up[MAXIDS];
  size_t n = 0;
  cr_queue_t *q;
  for (size_t i = 0; a->set && i < a->set->nset && n < MAXIDS; i++) {
    ids[n] = a->set->set[i];
    up[n++] = 0;
  }
  cr_queue_foreach(q, &a->slots) {
    slot_t *sl = cr_queue_data(q, slot_t, link);
    size_t k = 0;
    if (sl->state != SLOT_UP)
      continue;
    while (k < n && strcmp(ids[k], sl->replica) != 0)
      k++;
    if (k == n) {
      if (n == MAXIDS)
        continue;
      ids[n] = sl->replica;
      up[n++] = 0;
    }
    up[k]++;
  }
  cr_metrics_family(out, "ccrelay_agent_tunnels_up", "gauge",
                    "Tunnels to the gateway that are up, by the gateway replica they reached.");
  if (n == 0) {
    cr_metrics_label_t l = {"replica", ""};
    cr_metrics_u64(out, "ccrelay_agent_tunnels_up", &l, 1, 0);
  }
  for (size_t k = 0; k < n; k++) {
    cr_metrics_label_t l = {"replica", ids[k]};
    cr_metrics_u64(out, "ccrelay_agent_tunnels_up", &l, 1, up[k]);
  }
}

int cr_agent_run(const cr_conf_agent_t *conf) {
  agent_t *a = cr_calloc(1, sizeof *a);
  int code = 1;
  cr_process_end_t end;

  a->conf = a->boot = conf;
  a->gen = cr_calloc(1, sizeof *a->gen);
  a->gen->conf = conf;
  a->gen->number = 1;
  cr_queue_init(&a->retired);
  if (cr__agent_instance_init(a) < 0)
    cr_log_warn("no instance id: the gateway cannot tell this process's tunnels from another's",
                "reason=\"the random number generator failed\"");
  uv_loop_init(&a->loop);
  cr_queue_init(&a->exchanges);
  cr_metrics_calls_init(&a->metrics.unrouted);
  a->tunnels_metrics = tunnels_metrics;
  cr_metrics_hist_init(&a->metrics.rtt, cr_metrics_rtt_bounds, cr_metrics_rtt_nbounds);
  cr_queue_init(&a->tcp_relays);
  /* whatever the tunnel or an upstream's parser accepted, plus the fields a rewrite adds */
  cr_http_msg_init(&a->scratch_head, CR_TUNNEL_MAX_HEADERS + SCRATCH_EXTRA_HEADERS);
  cr_freelist_init(&a->free_exchanges, sizeof(exchange_t), MAX_FREE_EXCHANGES);
  cr_buf_init(&a->scratch_buf, 0);
  /* Every handle exists before anything can fail, so one path closes them all (slots are made by
   * coverage_check, once running, and freed by close_handles). */
  cr_queue_init(&a->slots);
  a->proc = cr_process_new(&a->loop, &process_handlers, a, conf->drain_timeout_ms, 0);
  cr_process_on_release(a->proc, agent_release_caches, a);
  cr_process_on_reload(a->proc, cr__agent_trust_sighup, a);
  uv_timer_init(&a->loop, &a->send_watch);
  a->send_watch.data = a;
  uv_timer_init(&a->loop, &a->retired_timer);
  a->retired_timer.data = a;
  if (build_tunnel_tls(a) < 0 || cr__agent_trust_start(a) < 0 || cr__agent_admin_start(a) < 0) {
    close_handles(a);
    cr_process_close(a->proc);
    goto out;
  }
  proxy_start(a);
  coverage_check(a); /* the first `connections` dials */
  cr_process_start(a->proc);
  cr_log_info("agent started", "gateway=%s:%u addresses=%zu connections=%u routes=%zu version=%s",
              conf->gateway.host, conf->gateway.port, conf->gateway.naddrs, conf->gateway.connections, conf->nroutes,
              CCRELAY_VERSION);
  /* A stop that cut calls in flight (drain deadline, second signal) is not a clean one: the exit
   * status says so, for supervisors and scripts (README, Operations). */
  end = cr_process_run(a->proc);
  cr_log_info("agent stopped", "");
  code = end == CR_PROCESS_DRAINED || end == CR_PROCESS_RUNNING ? 0 : CR_PROCESS_EXIT_CUT;
out:
  uv_run(&a->loop, UV_RUN_DEFAULT);
  cr_log_flush();
  if (uv_loop_close(&a->loop) != 0)
    cr_log_warn("event loop closed with handles still open", "");
  cr_process_free(a->proc);
  cr_tls_ctx_free(a->tunnel_tls);
  cr_proxy_auth_free(a->proxy_auth);
  cr__agent_trust_free(a);
  cr__agent_gens_free(a);
  cr__agent_metrics_free(a);
  free(a->set);
  cr_http_msg_free(&a->scratch_head);
  cr_buf_free(&a->scratch_buf);
  cr_freelist_drain(&a->free_exchanges);
  free(a);
  return code;
}

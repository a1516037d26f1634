/* The agent: keeps `connections` tunnels to the gateway and serves every stream that arrives on them
 * by its routes. A stream that matches no route is answered 404 here and nothing is sent anywhere.
 *
 * Tunnel slot life: BACKOFF -> CONNECTING (TCP) -> HANDSHAKE (TLS) -> UP -> BACKOFF ...
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
#include "ccrelay/queue.h"
#include "ccrelay/route.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "ccrelay/tunnel.h"
#include "ccrelay/upstream.h"

/* A tunnel that stayed up this long resets the redial backoff. */
#define STABLE_TUNNEL_MS 10000
#define MAX_FREE_EXCHANGES 64 /* a busy loop turn's worth of ended exchanges, kept for the next ones */
#define SCRATCH_EXTRA_HEADERS 8 /* what a rewrite adds: Host, framing */

typedef enum { SLOT_BACKOFF, SLOT_CONNECTING, SLOT_HANDSHAKE, SLOT_UP, SLOT_STOPPED } slot_state_t;

typedef struct slot {
  agent_t *agent;
  unsigned index;
  slot_state_t state;
  cr_stream_t *conn; /* the outermost stream while connecting/handshaking */
  cr_tunnel_t *tunnel;
  uv_timer_t timer;  /* backoff, then connect+handshake deadline */
  uint64_t backoff_ms;
  uint64_t up_since;
  unsigned failures;
} slot_t;

typedef struct exchange {
  cr_queue_t link;
  agent_t *agent;
  cr_tstream_t *ts;
  cr_upstream_req_t *req;
  long route;
  int soap;               /* our own failures as SOAP Faults: the caller's version (cr_http_soap_t), or 0 */
  char request_id[65];
  char method[16];
  int status;
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

static void up_on_head(cr_upstream_req_t *req, const cr_http_msg_t *resp) {
  exchange_t *x = cr_upstream_req_data(req);
  cr_http_msg_t *head = &x->agent->scratch_head;
  int has_body;
  x->head_ms = now_ms(x->agent);
  x->status = resp->status;
  if (cr_http_msg_copy(head, resp) < 0) {
    const cr_conf_route_t *r = &x->agent->conf->routes[x->route];
    cr_log_warn("upstream failed",
                "request_id=%s route=%s upstream=%s reason=\"response head has more than %d header fields\"",
                x->request_id, r->name, r->upstream_url, CR_TUNNEL_MAX_HEADERS + SCRATCH_EXTRA_HEADERS);
    cr_upstream_req_cancel(req);
    x->req = NULL;
    respond_local(x, 502, "upstream_failed", "the upstream's response head has more header fields than the agent "
                                             "forwards; nothing of it was forwarded");
    return;
  }
  cr_http_msg_strip_hop_by_hop(head);
  has_body = cr_http_body_framing(resp, x->method, 0) != CR_HTTP_BODY_NONE;
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
  const cr_conf_route_t *r = &x->agent->conf->routes[x->route];
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
  if (err == UV_ETIMEDOUT)
    respond_local(x, 504, "upstream_timeout", detail);
  else
    respond_local(x, 502, "upstream_failed", detail);
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
  const cr_conf_route_t *r = &conf->routes[x->route];
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
  const char *route = x->route >= 0 ? a->conf->routes[x->route].name : "-";
  cr_log_info("access",
              "request_id=%s route=%s method=%s status=%d bytes_in=%llu bytes_out=%llu duration_ms=%llu "
              "upstream_ms=%lld%s%s%s",
              x->request_id, route, x->method, x->status, (unsigned long long)x->bytes_in,
              (unsigned long long)x->bytes_out, (unsigned long long)(now_ms(a) - x->start_ms),
              x->head_ms ? (long long)(x->head_ms - x->start_ms) : -1LL, x->error[0] ? " error=\"" : "", x->error,
              x->error[0] ? "\"" : "");
  cr_queue_remove(&x->link);
  if (x->change) {
    cr__agent_control_cancel(x->change);
    x->change = NULL;
  }
  cr_buf_free(&x->control_body);
  free(x->control_target);
  free(x->requested_by);
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
  for (unsigned i = 0; i < a->conf->gateway.connections; i++)
    if (a->slots[i].tunnel)
      cr_tunnel_release_caches(a->slots[i].tunnel);
  for (size_t i = 0; a->routes && i < a->conf->nroutes; i++)
    if (a->routes[i].up)
      cr_upstream_release_caches(a->routes[i].up);
}

static void on_stream(cr_tunnel_t *t, cr_tstream_t *ts, const cr_http_msg_t *req) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  exchange_t *x = cr_freelist_get(&a->free_exchanges);
  const char *rid = cr_http_msg_get(req, "x-request-id");
  const cr_conf_route_t *r;
  cr_http_msg_t *uh = &a->scratch_head;
  int has_body;

  x->agent = a;
  x->ts = ts;
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
    const char *by = cr_http_msg_get(req, "x-ccrelay-requested-by");
    x->control = 1;
    x->control_target = cr_strdup(req->target);
    x->requested_by = cr_strdup(by ? by : "");
    cr_buf_init(&x->control_body, 1024 * 1024);
    if (req->content_length == 0)
      control_finish(x); /* no body: on_end may already have been consumed with the head */
    return;
  }
  x->route = cr_route_match(a->conf->routes, a->conf->nroutes, req);
  /* A soap route answers its failures as SOAP Faults, in the caller's version (1.1 when the request
   * does not say); without a route the request alone decides, as at the gateway. */
  x->soap = cr_http_soap_version(req);
  if (x->route >= 0 && a->conf->routes[x->route].soap && x->soap == CR_SOAP_NONE)
    x->soap = CR_SOAP_11;
  else if (x->route >= 0 && !a->conf->routes[x->route].soap)
    x->soap = CR_SOAP_NONE;
  if (x->route < 0) {
    cr_log_warn("no route", "request_id=%s method=%s target=\"%s\" host=%s", x->request_id, x->method,
                req->target ? req->target : "", cr_http_msg_get(req, "host") ? cr_http_msg_get(req, "host") : "-");
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
  if (cr_http_msg_copy(uh, req) < 0) {
    respond_local(x, 431, "too_many_headers", "the request has more header fields than the agent forwards; "
                                              "nothing was forwarded");
    return;
  }
  cr_http_msg_strip_hop_by_hop(uh);
  if (r->upstream_base_path && r->upstream_base_path[0]) {
    cr_buf_reset(&a->scratch_buf);
    cr_buf_appendf(&a->scratch_buf, "%s%s", r->upstream_base_path, req->target);
    cr_http_msg_set_target(uh, a->scratch_buf.base, a->scratch_buf.len);
  }
  has_body = cr_http_body_framing(req, NULL, 1) != CR_HTTP_BODY_NONE;
  if (!has_body && (strcmp(x->method, "GET") == 0 || strcmp(x->method, "HEAD") == 0 ||
                    strcmp(x->method, "DELETE") == 0 || strcmp(x->method, "OPTIONS") == 0))
    uh->content_length = -1; /* no body and no reason to announce an empty one */
  x->req = cr_upstream_request(a->routes[x->route].up, uh, has_body, &up_cbs, x);
}

/* ---------- tunnel slots ---------- */

static void slot_failed(slot_t *sl, const char *what, int err, const char *detail);

static void on_tunnel_close(cr_tunnel_t *t, int error) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  uint64_t up_for;
  sl->tunnel = NULL;
  if (sl->state != SLOT_UP) {
    /* Closed before the gateway's SETTINGS: the gateway refused us (TLS 1.3 reports a refused client
     * certificate only after the handshake), or the dial deadline passed. */
    slot_failed(sl, "tls", error ? error : CR_ECLOSED, cr_tunnel_error_detail(t));
    return;
  }
  up_for = now_ms(a) - sl->up_since;
  a->tunnels_up--;
  cr_log(a->draining ? CR_LOG_INFO : CR_LOG_WARN, "tunnel down",
         "slot=%u gateway=%s:%u reason=\"%s%s%s\" up_ms=%llu tunnels_up=%zu", sl->index, a->conf->gateway.host,
         a->conf->gateway.port, error ? cr_strerror(error) : "closed", cr_tunnel_error_detail(t)[0] ? ": " : "",
         cr_tunnel_error_detail(t), (unsigned long long)up_for, a->tunnels_up);
  if (up_for >= STABLE_TUNNEL_MS)
    sl->backoff_ms = 0;
  if (a->draining) {
    sl->state = SLOT_STOPPED;
    return;
  }
  slot_schedule(sl);
}

static void on_tunnel_ready(cr_tunnel_t *t) {
  slot_t *sl = cr_tunnel_data(t);
  agent_t *a = sl->agent;
  uv_timer_stop(&sl->timer);
  sl->state = SLOT_UP;
  sl->up_since = now_ms(a);
  a->tunnels_up++;
  cr_log_info("tunnel up", "slot=%u gateway=%s:%u peer=%s attempts=%u tunnels_up=%zu", sl->index,
              a->conf->gateway.host, a->conf->gateway.port, cr_tunnel_transport(t)->peer, sl->failures + 1,
              a->tunnels_up);
  sl->failures = 0;
}

static void on_tunnel_goaway(cr_tunnel_t *t) {
  slot_t *sl = cr_tunnel_data(t);
  cr_log_info("gateway sent GOAWAY", "slot=%u", sl->index);
}

static const cr_tunnel_callbacks_t tunnel_cbs = {
    .on_stream = on_stream,
    .on_ready = on_tunnel_ready,
    .on_goaway = on_tunnel_goaway,
    .on_close = on_tunnel_close,
};

static void slot_failed(slot_t *sl, const char *what, int err, const char *detail) {
  agent_t *a = sl->agent;
  sl->failures++;
  /* Repeated failures are logged at debug after the third, so a long outage does not flood the log;
   * every 20th stays visible. */
  cr_log(sl->failures <= 3 || sl->failures % 20 == 0 ? CR_LOG_WARN : CR_LOG_DEBUG, "tunnel dial failed",
         "slot=%u gateway=%s:%u step=%s reason=\"%s%s%s\" attempt=%u", sl->index, a->conf->gateway.host,
         a->conf->gateway.port, what, cr_strerror(err), detail && detail[0] ? ": " : "", detail ? detail : "",
         sl->failures);
  if (sl->conn) {
    cr_stream_close(sl->conn, NULL);
    sl->conn = NULL;
  }
  uv_timer_stop(&sl->timer);
  if (a->draining) {
    sl->state = SLOT_STOPPED;
    return;
  }
  slot_schedule(sl);
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
  opts.ping_interval_ms = a->conf->gateway.ping_interval_ms;
  opts.ping_timeout_ms = a->conf->gateway.ping_timeout_ms;
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
    slot_failed(sl, "connect", status, NULL);
    return;
  }
  sl->state = SLOT_HANDSHAKE;
  tls = cr_tls_stream_new(s, a->tunnel_tls,
                          a->conf->gateway.server_name ? a->conf->gateway.server_name : a->conf->gateway.host);
  tls->data = sl;
  sl->conn = tls;
  status = cr_tls_stream_handshake(tls, on_handshake);
  if (status < 0)
    slot_failed(sl, "tls", status, cr_tls_stream_error(tls));
}

static void on_dial_timeout(uv_timer_t *t) {
  slot_t *sl = t->data;
  char detail[96];
  if (sl->tunnel) { /* TLS done, but the gateway never sent its SETTINGS */
    cr_tunnel_close(sl->tunnel, UV_ETIMEDOUT);
    return;
  }
  snprintf(detail, sizeof detail, "not connected within %llu ms",
           (unsigned long long)sl->agent->conf->gateway.connect_timeout_ms);
  slot_failed(sl, sl->state == SLOT_HANDSHAKE ? "tls" : "connect", UV_ETIMEDOUT, detail);
}

static void slot_dial(uv_timer_t *t) {
  slot_t *sl = t->data;
  agent_t *a = sl->agent;
  cr_stream_t *s;
  int r;
  sl->state = SLOT_CONNECTING;
  r = cr_tcp_connect(&a->loop, a->conf->gateway.host, a->conf->gateway.port, on_connected, sl, &s);
  if (r < 0) {
    slot_failed(sl, "connect", r, NULL);
    return;
  }
  s->data = sl;
  sl->conn = s;
  uv_timer_start(&sl->timer, on_dial_timeout, a->conf->gateway.connect_timeout_ms, 0);
}

/* Exponential backoff with jitter between reconnect_min and reconnect_max, so a gateway restart is not
 * met by every agent's every slot in the same millisecond. */
static void slot_schedule(slot_t *sl) {
  const cr_conf_agent_t *c = sl->agent->conf;
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
  if (!a->draining)
    return 0;
  for (unsigned i = 0; i < a->conf->gateway.connections; i++)
    if (a->slots[i].state != SLOT_STOPPED)
      return 0;
  return 1;
}

/* The process module closed its own handles (signals, deadline, trim); these are the agent's. */
static void close_handles(void *arg) {
  agent_t *a = arg;
  if (uv_is_closing((uv_handle_t *)&a->slots[0].timer))
    return;
  uv_close((uv_handle_t *)&a->send_watch, NULL);
  for (unsigned i = 0; i < a->conf->gateway.connections; i++)
    uv_close((uv_handle_t *)&a->slots[i].timer, NULL);
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
  (void)why;
  for (unsigned i = 0; i < a->conf->gateway.connections; i++)
    if (a->slots[i].tunnel)
      cr_tunnel_close(a->slots[i].tunnel, CR_ECLOSED);
}

static void agent_drain(void *arg) {
  agent_t *a = arg;
  a->draining = 1;
  for (unsigned i = 0; i < a->conf->gateway.connections; i++) {
    slot_t *sl = &a->slots[i];
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

static int build_tunnel_tls(agent_t *a) {
  const cr_conf_agent_t *c = a->conf;
  cr_tls_identity_src_t id = {c->gateway.identity.pkcs12.path, c->gateway.identity.password,
                              c->gateway.identity.cert.path, c->gateway.identity.key.path};
  cr_tls_ctx_opts_t o;
  char err[1024];
  memset(&o, 0, sizeof o);
  o.ca_file = c->gateway.ca.path;
  o.identity = &id;
  o.tls13_only = 1;
  o.alpn = CR_TUNNEL_ALPN;
  o.alpn_required = 1;
  if (cr_tls_ctx_new(&o, &a->tunnel_tls, err, sizeof err) < 0) {
    cr_log_error("cannot start", "config=%s key=gateway reason=\"%s\"", c->path, err);
    return -1;
  }
  return 0;
}

int cr_agent_run(const cr_conf_agent_t *conf) {
  agent_t *a = cr_calloc(1, sizeof *a);
  int code = 1;
  cr_process_end_t end;

  a->conf = conf;
  uv_loop_init(&a->loop);
  cr_queue_init(&a->exchanges);
  /* whatever the tunnel or an upstream's parser accepted, plus the fields a rewrite adds */
  cr_http_msg_init(&a->scratch_head, CR_TUNNEL_MAX_HEADERS + SCRATCH_EXTRA_HEADERS);
  cr_freelist_init(&a->free_exchanges, sizeof(exchange_t), MAX_FREE_EXCHANGES);
  cr_buf_init(&a->scratch_buf, 0);
  /* Every handle exists before anything can fail, so one path closes them all. */
  a->slots = cr_calloc(conf->gateway.connections, sizeof *a->slots);
  for (unsigned i = 0; i < conf->gateway.connections; i++) {
    slot_t *sl = &a->slots[i];
    sl->agent = a;
    sl->index = i;
    uv_timer_init(&a->loop, &sl->timer);
    sl->timer.data = sl;
  }
  a->proc = cr_process_new(&a->loop, &process_handlers, a, conf->drain_timeout_ms, 0);
  cr_process_on_release(a->proc, agent_release_caches, a);
  cr_process_on_reload(a->proc, cr__agent_trust_sighup, a);
  uv_timer_init(&a->loop, &a->send_watch);
  a->send_watch.data = a;
  if (build_tunnel_tls(a) < 0 || cr__agent_trust_start(a) < 0 || cr__agent_admin_start(a) < 0) {
    close_handles(a);
    cr_process_close(a->proc);
    goto out;
  }
  for (unsigned i = 0; i < conf->gateway.connections; i++)
    slot_dial(&a->slots[i].timer);
  cr_process_start(a->proc);
  cr_log_info("agent started", "gateway=%s:%u connections=%u routes=%zu version=%s", conf->gateway.host,
              conf->gateway.port, conf->gateway.connections, conf->nroutes, CCRELAY_VERSION);
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
  if (a->trust.store)
    cr_truststore_close(a->trust.store);
  free(a->routes);
  free(a->slots);
  cr_http_msg_free(&a->scratch_head);
  cr_buf_free(&a->scratch_buf);
  cr_freelist_drain(&a->free_exchanges);
  free(a);
  return code;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* "Test Connection" for one route: the route's upstream dialled as the agent dials it (the route
 * checks, its identity chained to the trust store, its TLS settings, the upstream pool and HTTP/1.1
 * client), one request, and what the connection looked like. `ccrelay probe` runs it from the command
 * line and the agent's control channel runs it on the agent's own loop.
 *
 * A probe has its own upstream with no pooling and no session resumption, so the server's certificate
 * is always exchanged and verified; the agent's pools and their connections are never touched. Every
 * outcome is reported from a later loop turn (the deferral timer), and the probe is freed once its
 * timer has closed and its upstream is released. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_internal.h"
#include "ccrelay/agent.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"

struct cr_agent_probe {
  uv_timer_t timer; /* defers reports of failures found before the dial */
  cr_upstream_t *up;
  cr_upstream_req_t *req;
  cr_agent_probe_cb cb; /* NULL once reported or cancelled */
  void *data;
  cr_agent_probe_result_t res;
  const cr_conf_route_t *route;
};

static void on_timer_closed(uv_handle_t *h) { free(h->data); }

/* Reports (once) and releases what the probe holds; the memory goes when the timer has closed. */
static void finish(cr_agent_probe_t *p) {
  cr_agent_probe_cb cb = p->cb;
  p->cb = NULL;
  p->req = NULL;
  if (cb) {
    cr_agent_probe_result_t *r = &p->res;
    r->ok = r->reachable && (r->verified || r->plain) && r->status > 0 && r->error[0] == '\0';
    cb(r, p->data);
  }
  if (p->up) {
    cr_upstream_free(p->up);
    p->up = NULL;
  }
  if (!uv_is_closing((uv_handle_t *)&p->timer))
    uv_close((uv_handle_t *)&p->timer, on_timer_closed);
}

static void on_deferred(uv_timer_t *t) { finish(t->data); }

static void fail_later(cr_agent_probe_t *p) { uv_timer_start(&p->timer, on_deferred, 0, 0); }

static void note_tls(cr_agent_probe_t *p) {
  if (!p->res.plain && p->up && cr_upstream_conn_info(p->up, &p->res.tls) == 0) {
    p->res.verified = 1;
    snprintf(p->res.verify, sizeof p->res.verify, "ok");
  }
}

static void on_head(cr_upstream_req_t *r, cr_http_msg_t *head) {
  cr_agent_probe_t *p = cr_upstream_req_data(r);
  p->res.reachable = 1;
  p->res.status = head->status;
  note_tls(p);
}

static void on_body(cr_upstream_req_t *r, const char *data, size_t len) {
  (void)r;
  (void)data;
  (void)len; /* the status is what a probe reports */
}

static void on_end(cr_upstream_req_t *r) {
  cr_agent_probe_t *p = cr_upstream_req_data(r);
  p->req = NULL;
  finish(p); /* frees the upstream: allowed, the request is in its final callback */
}

static void on_error(cr_upstream_req_t *r, int err, const char *detail) {
  cr_agent_probe_t *p = cr_upstream_req_data(r);
  p->req = NULL;
  if (p->res.status > 0) {
    /* The head came; a body cut short does not make the route unreachable. */
    finish(p);
    return;
  }
  note_tls(p);
  if (err == CR_ETLS_VERIFY) {
    p->res.reachable = 1;
    p->res.verified = 0;
    snprintf(p->res.verify, sizeof p->res.verify, "%s", detail);
  } else if (err == CR_ETLS) {
    p->res.reachable = 1; /* a server took part in a handshake that failed */
  }
  snprintf(p->res.error, sizeof p->res.error, "%s", detail);
  finish(p);
}

static const cr_upstream_req_callbacks_t req_cbs = {
    .on_head = on_head, .on_body = on_body, .on_end = on_end, .on_error = on_error, .on_writable = NULL};

static uint64_t capped(uint64_t v, uint64_t cap) { return cap && (v == 0 || v > cap) ? cap : v; }

cr_agent_probe_t *cr_agent_probe_start(uv_loop_t *loop, const cr_agent_probe_opts_t *o, cr_agent_probe_cb cb,
                                       void *data) {
  const cr_conf_route_t *r = &o->conf->routes[o->route];
  cr_agent_probe_t *p = cr_calloc(1, sizeof *p);
  cr_agent_probe_result_t *res = &p->res;
  cr_tls_ctx_t *tls = NULL;
  cr_upstream_opts_t uo;
  cr_http_msg_t head;
  char subject[256], target[2048];
  const char *method = o->method ? o->method : "HEAD", *path = o->path ? o->path : "/";
  time_t na;
  int stage;

  p->cb = cb;
  p->data = data;
  p->route = r;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  res->route = r->name;
  res->upstream = r->upstream_url;
  res->server_name = r->server_name ? r->server_name : r->upstream_host;
  res->plain = r->plain_http;
  snprintf(res->verify_source, sizeof res->verify_source, "%s",
           r->plain_http ? "none" : r->ca.path ? "ca_file" : "trust_store");
  if (!r->plain_http) {
    cr_trust_crl_mode_t mode = cr__agent_crl_mode(r->revocation);
    X509_STORE *store = o->store;
    if (store == NULL && r->ca.path == NULL) {
      snprintf(res->error, sizeof res->error, "%s", o->store_error ? o->store_error : "no trust store");
      fail_later(p);
      return p;
    }
    if (cr__agent_route_tls(r, o->identity, store, mode, 0, &tls, subject, sizeof subject, &na, res->warning,
                            sizeof res->warning, &stage, res->error, sizeof res->error) < 0) {
      fail_later(p);
      return p;
    }
  }
  memset(&uo, 0, sizeof uo);
  uo.name = r->name;
  uo.host = r->upstream_host;
  uo.port = r->upstream_port;
  uo.server_name = res->server_name;
  uo.tls = tls;
  uo.plain_http = r->plain_http;
  uo.connect_timeout_ms = capped(r->connect_timeout_ms, o->max_timeout_ms);
  uo.response_timeout_ms = capped(r->response_timeout_ms, o->max_timeout_ms);
  uo.max_idle = 0;
  uo.max_header_size = o->conf->max_header_size;
  uo.max_header_fields = o->conf->max_header_fields;
  if (cr_upstream_new(loop, &uo, &p->up, res->error, sizeof res->error) < 0) {
    cr_tls_ctx_free(tls);
    fail_later(p);
    return p;
  }
  cr_tls_ctx_free(tls);
  snprintf(target, sizeof target, "%s%s", r->upstream_base_path ? r->upstream_base_path : "", path);
  cr_http_msg_init(&head, 0);
  cr_http_msg_set_method(&head, method, strlen(method));
  cr_http_msg_set_target(&head, target, strlen(target));
  cr_http_msg_add_header(&head, "User-Agent", 10, "ccrelay-probe/" CCRELAY_VERSION,
                         strlen("ccrelay-probe/" CCRELAY_VERSION));
  head.content_length = -1;
  p->req = cr_upstream_request(p->up, &head, 0, &req_cbs, p);
  cr_http_msg_free(&head);
  return p;
}

void cr_agent_probe_cancel(cr_agent_probe_t *p) {
  p->cb = NULL;
  if (p->req) {
    cr_upstream_req_cancel(p->req);
    p->req = NULL;
  }
  uv_timer_stop(&p->timer);
  finish(p);
}

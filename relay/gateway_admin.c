/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's admin API: authenticated operator calls that list agent tunnels and drive an agent's
 * control endpoints (status, trust store) through one of its tunnels.
 *
 *   GET    /agents                          tunnels: agent, group, peer, streams in flight
 *   GET    /agents/<agent>/status           -> GET    /.well-known/ccrelay/status
 *   GET    /agents/<agent>/trust            -> GET    /.well-known/ccrelay/trust
 *   POST   /agents/<agent>/trust            -> POST   /.well-known/ccrelay/trust (body passed through)
 *   DELETE /agents/<agent>/trust/<fp>       -> DELETE /.well-known/ccrelay/trust/<fp>
 *   POST   /agents/<agent>/probe[?query]    -> POST   /.well-known/ccrelay/probe[?query]: "Test Connection"
 *                                              for every route (or route=NAME...), method=, path=
 *   POST   /reload                          reloads the gateway's configuration as SIGHUP does:
 *                                              200 {"reloaded":true,...}, or 422 with the reason
 *
 * A control call's life: the request is collected whole by the admin listener, sent as one tunnel
 * stream, the agent's answer is collected (at most 1 MiB) and relayed with its status and
 * Content-Type. The call object lives until both its stream and its timer have closed, so the
 * admin caller may leave (on_abort) or be answered (504) while the stream still winds down. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/admin.h"
#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/errpage.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/route.h"
#include "ccrelay/tunnel.h"
#include "gateway_internal.h"

#define CTL_TIMEOUT_MS 10000
#define CTL_MAX_ANSWER (1024 * 1024)
#define CTL_WRITE_CHUNK (16 * 1024)
#define CTL_HOST "ccrelay-control"

struct cr__gw_admin {
  struct gateway *gw;
  uv_loop_t *loop;
  const cr_conf_gateway_t *conf;
  cr_admin_t *admin;
  cr__gw_admin_reload_fn reload; /* POST /reload; NULL: the endpoint answers 404 */
  void *reload_arg;
};

typedef struct ctl_call {
  cr_admin_req_t *req; /* NULL once answered or the caller left */
  cr_tstream_t *ts;    /* NULL once the stream closed */
  uv_timer_t timer;
  uv_loop_t *loop;
  const char *body; /* the admin request's body: valid while req is set */
  size_t body_len, body_off;
  cr_buf_t answer;
  int status;
  char ctype[128];
  char agent[128];
  char peer[64];
  char method[8];
  char target[300];
  char action[8]; /* "add", "remove", or "" for a read */
  char fp[130];
  char request_id[17];
  uint64_t start_ms;
  unsigned head_seen : 1;
  unsigned ended_local : 1;
} ctl_call_t;

/* ---------- answers ---------- */

static void log_call(const char *peer, const char *method, const char *target, int status, const char *agent,
                     uint64_t ms, const char *request_id) {
  cr_log(status >= 400 ? CR_LOG_WARN : CR_LOG_INFO, "admin call",
         "peer=%s method=%s target=%s status=%d agent=%s duration_ms=%llu request_id=%s", peer, method, target,
         status, agent && agent[0] ? agent : "-", (unsigned long long)ms,
         request_id && request_id[0] ? request_id : "-");
}

static void respond_json_error(cr_admin_req_t *req, int status, const char *code, const char *message) {
  cr_http_msg_t head;
  cr_buf_t body;
  cr_http_msg_init(&head, 0);
  cr_buf_init(&body, 0);
  cr_errpage_build(status, code, message, NULL, 0, &head, &body);
  cr_admin_respond(req, status, "application/json", body.base, body.len);
  cr_buf_free(&body);
  cr_http_msg_free(&head);
}

/* Answers the admin caller (once) and logs the call; a change is logged with who asked and how the
 * agent answered. */
static void call_answer(ctl_call_t *c, int status, const char *ctype, const char *body, size_t len,
                        const char *why) {
  uint64_t ms;
  if (c->req == NULL)
    return;
  ms = uv_now(c->loop) - c->start_ms;
  cr_admin_respond(c->req, status, ctype, body, len);
  c->req = NULL;
  c->body = NULL;
  uv_timer_stop(&c->timer);
  log_call(c->peer, c->method, c->target, status, c->agent, ms, c->request_id);
  if (c->action[0]) /* fingerprint and reason are empty when the change has none */
    cr_log(status >= 200 && status < 300 ? CR_LOG_INFO : CR_LOG_WARN, "remote trust change",
           "requested_by=\"admin %s\" agent=%s action=%s ?fingerprint=%s agent_status=%d request_id=%s ?reason=%s",
           c->peer, c->agent, c->action, c->fp, status, c->request_id, why ? why : "");
}

static void call_fail(ctl_call_t *c, int status, const char *code, const char *message) {
  cr_http_msg_t head;
  cr_buf_t body;
  cr_http_msg_init(&head, 0);
  cr_buf_init(&body, 0);
  cr_errpage_build(status, code, message, c->request_id, 0, &head, &body);
  call_answer(c, status, "application/json", body.base, body.len, message);
  cr_buf_free(&body);
  cr_http_msg_free(&head);
}

/* ---------- the control stream ---------- */

static void call_timer_closed(uv_handle_t *h) {
  ctl_call_t *c = h->data;
  cr_buf_free(&c->answer);
  free(c);
}

/* Writes the request body in pieces, pausing when the stream's send buffer is full. */
static void call_pump(ctl_call_t *c) {
  int r = 0;
  while (c->body && c->body_off < c->body_len) {
    size_t n = c->body_len - c->body_off;
    if (n > CTL_WRITE_CHUNK)
      n = CTL_WRITE_CHUNK;
    r = cr_tstream_write(c->ts, c->body + c->body_off, n);
    if (r < 0)
      break;
    c->body_off += n;
    if (r == 1)
      return; /* on_writable resumes */
  }
  if (r < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "writing to the agent's tunnel stream failed: %s", cr_strerror(r));
    call_fail(c, 502, "tunnel_stream_failed", msg);
    cr_tstream_reset(c->ts);
    return;
  }
  if (!c->ended_local) {
    c->ended_local = 1;
    cr_tstream_end(c->ts);
  }
}

static void ts_on_head(cr_tstream_t *ts, const cr_http_msg_t *head) {
  ctl_call_t *c = cr_tstream_data(ts);
  const char *ct = cr_http_msg_get(head, "content-type");
  c->head_seen = 1;
  c->status = head->status;
  snprintf(c->ctype, sizeof c->ctype, "%s", ct && strlen(ct) < sizeof c->ctype ? ct : "application/json");
}

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  ctl_call_t *c = cr_tstream_data(ts);
  cr_tstream_consume(ts, len);
  if (c->req == NULL)
    return;
  if (cr_buf_append(&c->answer, data, len) < 0) {
    call_fail(c, 502, "answer_too_large", "the agent's answer is larger than 1 MiB");
    cr_tstream_reset(ts);
  }
}

static void ts_on_end(cr_tstream_t *ts) {
  ctl_call_t *c = cr_tstream_data(ts);
  if (c->req == NULL || !c->head_seen)
    return;
  call_answer(c, c->status, c->ctype, c->answer.base, c->answer.len, NULL);
  if (!c->ended_local)
    cr_tstream_reset(ts); /* answered before taking the whole body: nothing more to send */
}

static void ts_on_writable(cr_tstream_t *ts) {
  ctl_call_t *c = cr_tstream_data(ts);
  if (c->req)
    call_pump(c);
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  ctl_call_t *c = cr_tstream_data(ts);
  c->ts = NULL;
  if (c->req) {
    char msg[200];
    snprintf(msg, sizeof msg, "the tunnel stream to the agent failed: %s", cr_strerror(error ? error : CR_EPROTO));
    call_fail(c, 502, "tunnel_stream_failed", msg);
  }
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, call_timer_closed);
}

static const cr_tstream_callbacks_t ctl_cbs = {
    .on_head = ts_on_head,
    .on_data = ts_on_data,
    .on_end = ts_on_end,
    .on_writable = ts_on_writable,
    .on_close = ts_on_close,
};

static void on_call_timeout(uv_timer_t *t) {
  ctl_call_t *c = t->data;
  call_fail(c, 504, "agent_timeout", "no answer from the agent within 10 s");
  if (c->ts)
    cr_tstream_reset(c->ts);
}

/* ---------- finding an agent's tunnel ---------- */

typedef struct pick {
  const char *agent;
  cr_tunnel_t *best;
  size_t best_n;
  int seen;
} pick_t;

static void pick_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  pick_t *p = arg;
  size_t n;
  if (strcmp(info->agent, p->agent) != 0)
    return;
  p->seen = 1;
  if (!cr_tunnel_usable(info->tunnel))
    return;
  n = cr_tunnel_nstreams(info->tunnel);
  if (p->best == NULL || n < p->best_n) {
    p->best = info->tunnel;
    p->best_n = n;
  }
}

static void list_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  cr_buf_t *out = arg;
  if (out->len > 1 && out->base[out->len - 1] == '}')
    cr_buf_append(out, ",", 1);
  cr_buf_appendf(out, "{\"agent\":\"");
  cr_errpage_json_escape(out, info->agent);
  cr_buf_appendf(out, "\",\"group\":\"");
  cr_errpage_json_escape(out, info->group);
  cr_buf_appendf(out, "\",\"peer\":\"");
  cr_errpage_json_escape(out, info->peer);
  cr_buf_appendf(out, "\",\"streams\":%zu,\"usable\":%s}", cr_tunnel_nstreams(info->tunnel),
                 cr_tunnel_usable(info->tunnel) ? "true" : "false");
}

static void list_agents(cr__gw_admin_t *ga, cr_admin_req_t *req, const cr_http_msg_t *head) {
  cr_buf_t out;
  cr_buf_init(&out, 0);
  cr_buf_appendf(&out, "{\"tunnels\":[");
  cr__gateway_foreach_tunnel(ga->gw, list_visit, &out);
  cr_buf_appendf(&out, "]}\n");
  cr_admin_respond(req, 200, "application/json", out.base, out.len);
  log_call(cr_admin_req_peer(req), head->method, head->target, 200, NULL, 0, NULL);
  cr_buf_free(&out);
}

/* POST /reload: the gateway's configuration reloaded now, as SIGHUP does; the answer says whether it
 * was applied and, if not, why (file:line:col). */
static void reload_config(cr__gw_admin_t *ga, cr_admin_req_t *req, const cr_http_msg_t *head) {
  char msg[1200];
  uint64_t ok = 0, failed = 0;
  cr_buf_t out;
  int r = ga->reload(ga->reload_arg, msg, sizeof msg, &ok, &failed);
  cr_buf_init(&out, 0);
  cr_buf_appendf(&out, "{\"reloaded\":%s,\"message\":\"", r == 0 ? "true" : "false");
  cr_errpage_json_escape(&out, msg);
  cr_buf_appendf(&out, "\",\"reloads_ok\":%llu,\"reloads_failed\":%llu}\n", (unsigned long long)ok,
                 (unsigned long long)failed);
  cr_admin_respond(req, r == 0 ? 200 : 422, "application/json", out.base, out.len);
  log_call(cr_admin_req_peer(req), head->method, head->target, r == 0 ? 200 : 422, NULL, 0, NULL);
  cr_buf_free(&out);
}

void cr__gw_admin_set_conf(cr__gw_admin_t *ga, const cr_conf_gateway_t *conf) { ga->conf = conf; }

void cr__gw_admin_on_reload(cr__gw_admin_t *ga, cr__gw_admin_reload_fn reload, void *arg) {
  ga->reload = reload;
  ga->reload_arg = arg;
}

/* ---------- routing admin calls ---------- */

static int name_ok(const char *s, size_t len, size_t max, int colon) {
  if (len == 0 || len > max)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          (!colon && (ch == '.' || ch == '_' || ch == '-')) || (colon && ch == ':')))
      return 0;
  }
  return 1;
}

static void refuse(cr_admin_req_t *req, const cr_http_msg_t *head, int status, const char *code, const char *msg,
                   const char *allow) {
  if (allow)
    cr_admin_req_add_header(req, "Allow", allow);
  respond_json_error(req, status, code, msg);
  log_call(cr_admin_req_peer(req), head->method, head->target, status, NULL, 0, NULL);
}

/* Sends the control call down one usable tunnel of the agent. */
static void forward(cr__gw_admin_t *ga, cr_admin_req_t *req, const cr_http_msg_t *head, const char *agent,
                    const char *suffix, const char *action, const char *fp, const char *body, size_t body_len) {
  pick_t p = {agent, NULL, 0, 0};
  ctl_call_t *c;
  cr_http_msg_t h;
  char target[300], by[96];
  const char *ct;
  int err = 0;

  cr__gateway_foreach_tunnel(ga->gw, pick_visit, &p);
  if (p.best == NULL) {
    char msg[256];
    snprintf(msg, sizeof msg, p.seen ? "agent %s has no usable tunnel (draining); retry later"
                                     : "no connected agent named %s", agent);
    refuse(req, head, p.seen ? 503 : 404, p.seen ? "no_tunnel" : "unknown_agent", msg, NULL);
    return;
  }
  c = cr_calloc(1, sizeof *c);
  c->req = req;
  c->loop = ga->loop;
  c->body = body;
  c->body_len = body_len;
  c->start_ms = uv_now(ga->loop);
  cr_buf_init(&c->answer, CTL_MAX_ANSWER);
  snprintf(c->agent, sizeof c->agent, "%s", agent);
  snprintf(c->peer, sizeof c->peer, "%s", cr_admin_req_peer(req));
  snprintf(c->method, sizeof c->method, "%s", head->method);
  snprintf(c->target, sizeof c->target, "%s", head->target);
  snprintf(c->action, sizeof c->action, "%s", action);
  snprintf(c->fp, sizeof c->fp, "%s", fp ? fp : "");
  cr_errpage_request_id_new(c->request_id);
  uv_timer_init(ga->loop, &c->timer);
  c->timer.data = c;

  snprintf(target, sizeof target, CR_CONTROL_PREFIX "%s", suffix);
  snprintf(by, sizeof by, "admin %s", c->peer);
  cr_http_msg_init(&h, 0);
  cr_http_msg_set_method(&h, head->method, strlen(head->method));
  cr_http_msg_set_target(&h, target, strlen(target));
  cr_http_msg_add_header(&h, "Host", 4, CTL_HOST, strlen(CTL_HOST));
  cr_http_msg_add_header(&h, "x-ccrelay-requested-by", 22, by, strlen(by));
  cr_http_msg_add_header(&h, "x-request-id", 12, c->request_id, strlen(c->request_id));
  ct = cr_http_msg_get(head, "content-type");
  if (body_len && ct)
    cr_http_msg_add_header(&h, "content-type", 12, ct, strlen(ct));
  h.content_length = (int64_t)body_len;
  c->ts = cr_tunnel_open_stream(p.best, &h, body_len > 0, &ctl_cbs, c, &err);
  cr_http_msg_free(&h);
  if (c->ts == NULL) {
    char msg[160];
    snprintf(msg, sizeof msg, "could not open a tunnel stream to the agent: %s", cr_strerror(err));
    call_fail(c, 502, "tunnel_stream_failed", msg);
    uv_close((uv_handle_t *)&c->timer, call_timer_closed);
    return;
  }
  cr_admin_req_set_data(req, c);
  uv_timer_start(&c->timer, on_call_timeout, CTL_TIMEOUT_MS, 0);
  if (body_len)
    call_pump(c);
  else
    c->ended_local = 1; /* END_STREAM went with the head */
}

static void on_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t body_len,
                       void *arg) {
  cr__gw_admin_t *ga = arg;
  const char *peer = cr_admin_req_peer(req);
  const char *path = head->target, *q, *name, *slash, *sub;
  size_t plen, nlen;
  char agent[128], suffix[200], fp[130];
  int is_get = strcmp(head->method, "GET") == 0;

  if (!cr_admin_bearer_ok(head, ga->conf->admin_token)) {
    cr_log_warn("admin call refused", "peer=%s method=%s reason=\"%s\"", peer, head->method,
                cr_http_msg_find(head, "authorization") ? "wrong bearer token" : "no bearer token");
    cr_admin_req_add_header(req, "WWW-Authenticate", "Bearer");
    respond_json_error(req, 401, "unauthorized", "this endpoint needs Authorization: Bearer <admin token>");
    return;
  }
  q = strchr(path, '?');
  plen = q ? (size_t)(q - path) : strlen(path);
  if (plen == 7 && memcmp(path, "/agents", 7) == 0) {
    if (!is_get)
      refuse(req, head, 405, "method_not_allowed", "use GET", "GET");
    else
      list_agents(ga, req, head);
    return;
  }
  if (plen == 7 && memcmp(path, "/reload", 7) == 0 && ga->reload != NULL) {
    if (strcmp(head->method, "POST") != 0)
      refuse(req, head, 405, "method_not_allowed", "use POST", "POST");
    else
      reload_config(ga, req, head);
    return;
  }
  if (plen <= 8 || memcmp(path, "/agents/", 8) != 0) {
    refuse(req, head, 404, "not_found", "unknown admin endpoint", NULL);
    return;
  }
  name = path + 8;
  slash = memchr(name, '/', plen - 8);
  nlen = slash ? (size_t)(slash - name) : plen - 8;
  if (!name_ok(name, nlen, sizeof agent - 1, 0)) {
    refuse(req, head, 400, "bad_agent_name", "agent names are 1 to 127 characters of A-Z a-z 0-9 . _ -", NULL);
    return;
  }
  memcpy(agent, name, nlen);
  agent[nlen] = '\0';
  if (slash == NULL) {
    refuse(req, head, 404, "not_found", "unknown admin endpoint (try /agents/<agent>/status or /trust)", NULL);
    return;
  }
  sub = slash + 1;
  plen -= (size_t)(sub - path);
  if (plen == 6 && memcmp(sub, "status", 6) == 0) {
    if (!is_get)
      refuse(req, head, 405, "method_not_allowed", "use GET", "GET");
    else
      forward(ga, req, head, agent, "status", "", NULL, NULL, 0);
    return;
  }
  if (plen == 5 && memcmp(sub, "probe", 5) == 0) {
    if (strcmp(head->method, "POST") != 0) {
      refuse(req, head, 405, "method_not_allowed", "use POST", "POST");
      return;
    }
    if (q && strlen(q) > sizeof suffix - 8) {
      refuse(req, head, 414, "query_too_long", "the probe query is limited to 190 bytes", NULL);
      return;
    }
    snprintf(suffix, sizeof suffix, "probe%s", q ? q : "");
    forward(ga, req, head, agent, suffix, "", NULL, NULL, 0);
    return;
  }
  if (plen == 5 && memcmp(sub, "trust", 5) == 0) {
    if (is_get)
      forward(ga, req, head, agent, "trust", "", NULL, NULL, 0);
    else if (strcmp(head->method, "POST") == 0 && body_len == 0)
      refuse(req, head, 400, "empty_body", "POST a PEM or DER certificate (or several PEM ones)", NULL);
    else if (strcmp(head->method, "POST") == 0)
      forward(ga, req, head, agent, "trust", "add", NULL, body, body_len);
    else
      refuse(req, head, 405, "method_not_allowed", "use GET or POST", "GET, POST");
    return;
  }
  if (plen > 6 && memcmp(sub, "trust/", 6) == 0) {
    size_t flen = plen - 6;
    if (!name_ok(sub + 6, flen, sizeof fp - 1, 1)) {
      refuse(req, head, 400, "bad_fingerprint", "a fingerprint (or unique prefix) is hex digits, colons allowed",
             NULL);
      return;
    }
    if (strcmp(head->method, "DELETE") != 0) {
      refuse(req, head, 405, "method_not_allowed", "use DELETE", "DELETE");
      return;
    }
    memcpy(fp, sub + 6, flen);
    fp[flen] = '\0';
    snprintf(suffix, sizeof suffix, "trust/%s", fp);
    forward(ga, req, head, agent, suffix, "remove", fp, NULL, 0);
    return;
  }
  refuse(req, head, 404, "not_found", "unknown admin endpoint", NULL);
}

/* The admin caller left (or the listener is closing) before the agent answered. */
static void on_abort(cr_admin_req_t *req, void *arg) {
  ctl_call_t *c = cr_admin_req_data(req);
  if (c == NULL)
    return;
  cr_log_warn("admin call abandoned",
              "peer=%s method=%s agent=%s request_id=%s reason=\"the caller left or the admin listener closed\"",
              c->peer, c->method, c->agent, c->request_id);
  if (c->action[0])
    cr_log_warn("remote trust change", "requested_by=\"admin %s\" agent=%s action=%s ?fingerprint=%s agent_status=- "
                "request_id=%s reason=\"the admin caller left before the agent answered; the change may have "
                "been applied\"", c->peer, c->agent, c->action, c->fp, c->request_id);
  c->req = NULL;
  c->body = NULL;
  uv_timer_stop(&c->timer);
  if (c->ts)
    cr_tstream_reset(c->ts);
}

int cr__gw_admin_start(struct gateway *gw, uv_loop_t *loop, const cr_conf_gateway_t *conf, cr__gw_admin_t **out) {
  static const cr_admin_callbacks_t cbs = {on_request, on_abort};
  cr__gw_admin_t *ga = cr_calloc(1, sizeof *ga);
  char err[512];
  int r;
  ga->gw = gw;
  ga->loop = loop;
  ga->conf = conf;
  r = cr_admin_listen(loop, conf->admin_listen.host, conf->admin_listen.port, &cbs, ga, &ga->admin, err, sizeof err);
  if (r < 0) {
    cr_log_error("cannot start", "config=%s:%d:%d key=admin.listen reason=\"%s\"", conf->path,
                 conf->admin_listen.pos.line, conf->admin_listen.pos.col, err);
    free(ga);
    return r;
  }
  cr_log_info("admin listening", "admin=%s:%u auth=bearer", conf->admin_listen.host, cr_admin_port(ga->admin));
  *out = ga;
  return 0;
}

unsigned cr__gw_admin_port(const cr__gw_admin_t *ga) { return cr_admin_port(ga->admin); }

cr_admin_t *cr__gw_admin_listener(const cr__gw_admin_t *ga) { return ga->admin; }

void cr__gw_admin_stop(cr__gw_admin_t *ga) {
  cr_admin_close(ga->admin);
  free(ga);
}

/* ---------- the probe listener ---------- */

static void probe_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t body_len,
                          void *arg) {
  const cr__gw_probe_ops_t *p = arg;
  const char *path = head->target, *q = strchr(path, '?');
  size_t plen = q ? (size_t)(q - path) : strlen(path);
  cr_buf_t out;
  char why[256] = "";
  int ready;
  (void)body;
  (void)body_len;
  if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0) {
    cr_admin_req_add_header(req, "Allow", "GET, HEAD");
    respond_json_error(req, 405, "method_not_allowed", "use GET");
    return;
  }
  cr_buf_init(&out, 0);
  if (plen == 8 && memcmp(path, "/healthz", 8) == 0) {
    cr_admin_respond(req, 200, "text/plain", "ok\n", 3);
  } else if (plen == 7 && memcmp(path, "/readyz", 7) == 0) {
    ready = p->ready(p->arg, why, sizeof why);
    cr_buf_appendf(&out, "{\"ready\":%s", ready ? "true" : "false");
    if (!ready) {
      cr_buf_appendf(&out, ",\"why\":\"");
      cr_errpage_json_escape(&out, why);
      cr_buf_appendf(&out, "\"");
    }
    cr_buf_appendf(&out, "}\n");
    cr_admin_respond(req, ready ? 200 : 503, "application/json", out.base, out.len);
  } else if (plen == 7 && memcmp(path, "/status", 7) == 0) {
    cr_buf_appendf(&out, "{");
    p->status(p->arg, &out);
    cr_buf_appendf(&out, "}\n");
    cr_admin_respond(req, 200, "application/json", out.base, out.len);
  } else {
    respond_json_error(req, 404, "not_found", "the probe listener serves /healthz, /readyz and /status");
  }
  cr_buf_free(&out);
}

int cr__gw_probe_start(uv_loop_t *loop, const cr_conf_gateway_t *conf, const cr__gw_probe_ops_t *ops,
                       cr_admin_t **out) {
  static const cr_admin_callbacks_t cbs = {probe_request, NULL};
  char err[512];
  int r;
  r = cr_admin_listen(loop, conf->probe_listen.host, conf->probe_listen.port, &cbs, (void *)ops, out, err,
                      sizeof err);
  if (r < 0) {
    cr_log_error("cannot start", "config=%s:%d:%d key=probe.listen reason=\"%s\"", conf->path,
                 conf->probe_listen.pos.line, conf->probe_listen.pos.col, err);
    return r;
  }
  cr_log_info("probe listening", "probe=%s:%u endpoints=\"/healthz /readyz /status\"", conf->probe_listen.host,
              cr_admin_port(*out));
  return 0;
}

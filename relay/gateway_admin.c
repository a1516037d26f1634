/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's admin API: authenticated operator calls that list agent tunnels and drive an agent's
 * control endpoints (status, trust store) through its tunnels.
 *
 *   GET    /agents                          tunnels: agent, group, peer, streams in flight, instance
 *   GET    /agents/<agent>/status           -> GET    /.well-known/ccrelay/status        (one process)
 *   GET    /agents/<agent>/trust            -> GET    /.well-known/ccrelay/trust         (every process)
 *   POST   /agents/<agent>/trust            -> POST   /.well-known/ccrelay/trust         (every process;
 *                                              body passed through)
 *   DELETE /agents/<agent>/trust/<fp>       -> DELETE /.well-known/ccrelay/trust/<fp>    (every process)
 *   POST   /agents/<agent>/probe[?query]    -> POST   /.well-known/ccrelay/probe[?query] (one process):
 *                                              "Test Connection" for every route (or route=NAME...),
 *                                              method=, path=
 *   POST   /reload                          reloads the gateway's configuration as SIGHUP does:
 *                                              200 {"reloaded":true,...}, or 422 with the reason
 *
 * Several agent processes may share a name (replicas with one certificate), each with its own trust
 * store. The trust calls go once to every process connected now, told apart by the instance id each
 * reports on its tunnels (gateway_tunnels.c), and answer {"reached":N,...,"agents":[one result per
 * process]}: the status all processes answered with, 200 when they differ but all succeeded, 502
 * when some failed. Processes not connected are not reached, and the answer cannot name them.
 * status and probe go to one process and relay its answer as it is.
 *
 * A control call's life: the request is collected whole by the admin listener, sent as one tunnel
 * stream per process, each answer is collected (at most 1 MiB). Each stream (a leg) lives until both
 * it and its timer have closed, so the admin caller may leave (on_abort) or be answered (504) while
 * streams still wind down; the call (a fan) lives until answered and its last leg freed. */
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

/* A control call to an agent name: one leg (a control stream) per agent process it goes to. status
 * and probe go to one process and relay its answer as is ("relay"); the trust calls go to every
 * connected process of the name and answer with one result per process. The fan lives until it
 * answered (or its caller left) and every leg was freed (refs). */
typedef struct fan fan_t;

typedef struct result {
  char instance[33]; /* "" when the process did not tell */
  char peer[64];     /* the tunnel the call went through */
  size_t tunnels;    /* usable tunnels of that process */
  int status;
  char ctype[128];
  cr_buf_t answer; /* the agent's answer (at most 1 MiB) */
  char code[32];   /* set when the call failed on the way (no answer from the agent) */
  char message[200];
} result_t;

typedef struct ctl_call {
  fan_t *fan;
  size_t idx;       /* its result: fan->results[idx] */
  cr_tstream_t *ts; /* NULL once the stream closed */
  uv_timer_t timer;
  const char *body; /* the admin request's body: valid while the fan's req is set */
  size_t body_len, body_off;
  unsigned head_seen : 1;
  unsigned ended_local : 1;
  unsigned done : 1; /* its result is final */
} ctl_call_t;

struct fan {
  cr_admin_req_t *req; /* NULL once answered or the caller left */
  uv_loop_t *loop;
  int relay;
  int starting; /* legs are being opened: the answer waits for the last one */
  size_t n, pending, refs;
  ctl_call_t **legs; /* entries NULL once freed */
  result_t *results;
  char agent[128];
  char peer[64];
  char method[8];
  char target[300];
  char action[8]; /* "add", "remove", or "" for a read */
  char fp[130];
  char request_id[17];
  uint64_t start_ms;
};

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

static void fan_unref(fan_t *f) {
  if (--f->refs > 0)
    return;
  for (size_t i = 0; i < f->n; i++)
    cr_buf_free(&f->results[i].answer);
  free(f->results);
  free(f->legs);
  free(f);
}

/* Strict JSON, so that an agent's answer is embedded as a value only when it is one (an answer that
 * is not is carried as a string): *p advances past one value; 0 or -1. */
static int json_value(const char **p, const char *end, int depth);

static void json_ws(const char **p, const char *end) {
  while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
    (*p)++;
}

static int json_string(const char **p, const char *end) {
  const char *s = *p + 1;
  while (s < end && *s != '"') {
    if ((unsigned char)*s < 0x20)
      return -1;
    if (*s == '\\') {
      if (++s >= end || !strchr("\"\\/bfnrtu", *s))
        return -1;
      if (*s == 'u')
        for (int i = 0; i < 4; i++)
          if (++s >= end || !strchr("0123456789abcdefABCDEF", *s))
            return -1;
    }
    s++;
  }
  if (s >= end)
    return -1;
  *p = s + 1;
  return 0;
}

static int json_number(const char **p, const char *end) {
  const char *s = *p;
  int digits = 0;
  if (s < end && *s == '-')
    s++;
  while (s < end && ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E' || *s == '+' || *s == '-')) {
    digits += *s >= '0' && *s <= '9';
    s++;
  }
  if (!digits)
    return -1;
  *p = s;
  return 0;
}

static int json_word(const char **p, const char *end, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(end - *p) < n || memcmp(*p, w, n) != 0)
    return -1;
  *p += n;
  return 0;
}

static int json_members(const char **p, const char *end, int depth, char close) {
  (*p)++;
  json_ws(p, end);
  if (*p < end && **p == close) {
    (*p)++;
    return 0;
  }
  for (;;) {
    if (close == '}') {
      if (*p >= end || **p != '"' || json_string(p, end) < 0)
        return -1;
      json_ws(p, end);
      if (*p >= end || **p != ':')
        return -1;
      (*p)++;
    }
    if (json_value(p, end, depth + 1) < 0)
      return -1;
    json_ws(p, end);
    if (*p < end && **p == ',') {
      (*p)++;
      json_ws(p, end);
      continue;
    }
    if (*p < end && **p == close) {
      (*p)++;
      return 0;
    }
    return -1;
  }
}

static int json_value(const char **p, const char *end, int depth) {
  json_ws(p, end);
  if (*p >= end || depth > 64)
    return -1;
  switch (**p) {
  case '{':
    return json_members(p, end, depth, '}');
  case '[':
    return json_members(p, end, depth, ']');
  case '"':
    return json_string(p, end);
  case 't':
    return json_word(p, end, "true");
  case 'f':
    return json_word(p, end, "false");
  case 'n':
    return json_word(p, end, "null");
  default:
    return json_number(p, end);
  }
}

static int is_json(const char *s, size_t len) {
  const char *p = s, *end = s + len;
  if (len == 0 || json_value(&p, end, 0) < 0)
    return 0;
  json_ws(&p, end);
  return p == end;
}

static int ok_status(int st) { return st >= 200 && st < 300; }

/* One entry of the per-process answer. */
static void result_json(cr_buf_t *out, const result_t *r) {
  cr_buf_appendf(out, "{\"instance\":");
  if (r->instance[0])
    cr_buf_appendf(out, "\"%s\"", r->instance);
  else
    cr_buf_appendf(out, "null");
  cr_buf_appendf(out, ",\"peer\":\"");
  cr_errpage_json_escape(out, r->peer);
  cr_buf_appendf(out, "\",\"tunnels\":%zu,\"status\":%d", r->tunnels, r->status);
  if (r->code[0]) {
    cr_buf_appendf(out, ",\"error\":{\"code\":\"%s\",\"message\":\"", r->code);
    cr_errpage_json_escape(out, r->message);
    cr_buf_appendf(out, "\"}}");
  } else if (is_json(r->answer.base, r->answer.len)) {
    cr_buf_appendf(out, ",\"answer\":");
    cr_buf_append(out, r->answer.base, r->answer.len);
    while (out->len && (out->base[out->len - 1] == '\n' || out->base[out->len - 1] == '\r'))
      out->len--;
    cr_buf_appendf(out, "}");
  } else {
    char *text = cr_calloc(1, r->answer.len + 1);
    if (r->answer.len)
      memcpy(text, r->answer.base, r->answer.len); /* escaped up to a NUL byte, if any */
    cr_buf_appendf(out, ",\"answer_text\":\"");
    cr_errpage_json_escape(out, text);
    cr_buf_appendf(out, "\"}");
    free(text);
  }
}

/* The status of a fanned-out call: the one every process answered with; 200 when they differ but all
 * succeeded; 502 when any failed while another did not (the results say which). */
static int fan_status(const fan_t *f, size_t *ok) {
  int same = 1;
  *ok = 0;
  for (size_t i = 0; i < f->n; i++) {
    *ok += ok_status(f->results[i].status);
    same &= f->results[i].status == f->results[0].status;
  }
  if (same)
    return f->results[0].status;
  return *ok == f->n ? 200 : 502;
}

/* Answers the admin caller once every leg has its result. */
static void fan_answer(fan_t *f) {
  cr_admin_req_t *req = f->req;
  uint64_t ms = uv_now(f->loop) - f->start_ms;
  int status;
  if (req == NULL)
    return;
  f->req = NULL;
  for (size_t i = 0; i < f->n; i++)
    if (f->legs[i])
      f->legs[i]->body = NULL;
  if (f->relay) {
    result_t *r = &f->results[0];
    status = r->status;
    if (r->code[0]) {
      cr_http_msg_t head;
      cr_buf_t body;
      cr_http_msg_init(&head, 0);
      cr_buf_init(&body, 0);
      cr_errpage_build(status, r->code, r->message, f->request_id, 0, &head, &body);
      cr_admin_respond(req, status, "application/json", body.base, body.len);
      cr_buf_free(&body);
      cr_http_msg_free(&head);
    } else {
      cr_admin_respond(req, status, r->ctype, r->answer.base, r->answer.len);
    }
  } else {
    cr_buf_t out;
    size_t ok;
    status = fan_status(f, &ok);
    cr_buf_init(&out, 0);
    cr_buf_appendf(&out, "{\"agent\":\"");
    cr_errpage_json_escape(&out, f->agent);
    cr_buf_appendf(&out, "\",\"request_id\":\"%s\",\"reached\":%zu,\"succeeded\":%zu,\"failed\":%zu,\"note\":\"%s\","
                         "\"agents\":[",
                   f->request_id, f->n, ok, f->n - ok,
                   "one result per agent process connected to this gateway now; agent processes not connected "
                   "were not reached and not changed");
    for (size_t i = 0; i < f->n; i++) {
      if (i)
        cr_buf_append(&out, ",", 1);
      result_json(&out, &f->results[i]);
    }
    cr_buf_appendf(&out, "]}\n");
    cr_admin_respond(req, status, "application/json", out.base, out.len);
    cr_buf_free(&out);
  }
  log_call(f->peer, f->method, f->target, status, f->agent, ms, f->request_id);
  fan_unref(f); /* the caller's reference */
}

/* A leg's result is final: the agent's answer (code NULL) or why there is none. The answer to the
 * caller goes once the last leg is final; a change is logged per process with who asked and how the
 * agent answered. */
static void leg_finish(ctl_call_t *c, int status, const char *code, const char *message) {
  fan_t *f = c->fan;
  result_t *r = &f->results[c->idx];
  if (c->done)
    return;
  c->done = 1;
  c->body = NULL;
  uv_timer_stop(&c->timer);
  r->status = status;
  if (code) {
    snprintf(r->code, sizeof r->code, "%s", code);
    snprintf(r->message, sizeof r->message, "%s", message);
    cr_buf_free(&r->answer);
    cr_buf_init(&r->answer, CTL_MAX_ANSWER);
  }
  if (f->action[0] && f->req) /* fingerprint, instance and reason are empty when there is none */
    cr_log(ok_status(status) ? CR_LOG_INFO : CR_LOG_WARN, "remote trust change",
           "requested_by=\"admin %s\" agent=%s ?instance=%s peer=%s action=%s ?fingerprint=%s agent_status=%d "
           "request_id=%s ?reason=%s",
           f->peer, f->agent, r->instance, r->peer, f->action, f->fp, status, f->request_id,
           code ? message : "");
  if (--f->pending == 0 && !f->starting)
    fan_answer(f);
}

/* ---------- the control stream ---------- */

static void call_timer_closed(uv_handle_t *h) {
  ctl_call_t *c = h->data;
  fan_t *f = c->fan;
  f->legs[c->idx] = NULL;
  free(c);
  fan_unref(f);
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
    leg_finish(c, 502, "tunnel_stream_failed", msg);
    cr_tstream_reset(c->ts);
    return;
  }
  if (!c->ended_local) {
    c->ended_local = 1;
    cr_tstream_end(c->ts);
  }
}

static void ts_on_head(cr_tstream_t *ts, cr_http_msg_t *head) {
  ctl_call_t *c = cr_tstream_data(ts);
  result_t *r = &c->fan->results[c->idx];
  const char *ct = cr_http_msg_get(head, "content-type");
  c->head_seen = 1;
  r->status = head->status;
  snprintf(r->ctype, sizeof r->ctype, "%s", ct && strlen(ct) < sizeof r->ctype ? ct : "application/json");
}

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  ctl_call_t *c = cr_tstream_data(ts);
  cr_tstream_consume(ts, len);
  if (c->done || c->fan->req == NULL)
    return;
  if (cr_buf_append(&c->fan->results[c->idx].answer, data, len) < 0) {
    leg_finish(c, 502, "answer_too_large", "the agent's answer is larger than 1 MiB");
    cr_tstream_reset(ts);
  }
}

static void ts_on_end(cr_tstream_t *ts) {
  ctl_call_t *c = cr_tstream_data(ts);
  if (c->done || !c->head_seen)
    return;
  leg_finish(c, c->fan->results[c->idx].status, NULL, NULL);
  if (!c->ended_local)
    cr_tstream_reset(ts); /* answered before taking the whole body: nothing more to send */
}

static void ts_on_writable(cr_tstream_t *ts) {
  ctl_call_t *c = cr_tstream_data(ts);
  if (!c->done && c->fan->req)
    call_pump(c);
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  ctl_call_t *c = cr_tstream_data(ts);
  c->ts = NULL;
  if (!c->done) {
    char msg[200];
    snprintf(msg, sizeof msg, "the tunnel stream to the agent failed: %s", cr_strerror(error ? error : CR_EPROTO));
    leg_finish(c, 502, "tunnel_stream_failed", msg);
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
  leg_finish(c, 504, "agent_timeout", "no answer from the agent within 10 s");
  if (c->ts)
    cr_tstream_reset(c->ts);
}

/* ---------- finding an agent's processes ---------- */

/* The processes of an agent name, each with the tunnel its call goes through. Tunnels are grouped
 * by the instance id the agent told in its answer to the replica announcement; tunnels with none
 * ("" : an agent that does not tell, or no answer yet) form one more group. */
typedef struct target {
  char instance[33];
  char peer[64];
  cr_tunnel_t *tunnel; /* the best usable one: kept before pending before surplus, then least busy */
  size_t streams;
  int rank;
  size_t tunnels;
} target_t;

typedef struct plan {
  const char *agent;
  int fanout; /* 0: one tunnel of the name, the least busy */
  target_t *v;
  size_t n, cap;
  int seen;
} plan_t;

static int coverage_rank(const char *coverage) {
  if (coverage == NULL || strcmp(coverage, "kept") == 0)
    return 2;
  return strcmp(coverage, "pending") == 0 ? 1 : 0;
}

static void plan_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  plan_t *p = arg;
  const char *inst = p->fanout && info->instance ? info->instance : "";
  target_t *t = NULL;
  size_t n;
  int rank;
  if (strcmp(info->agent, p->agent) != 0)
    return;
  p->seen = 1;
  if (!cr_tunnel_usable(info->tunnel))
    return;
  for (size_t i = 0; i < p->n && t == NULL; i++)
    if (strcmp(p->v[i].instance, inst) == 0)
      t = &p->v[i];
  if (t == NULL) {
    if (p->n == p->cap) {
      p->cap = p->cap ? 2 * p->cap : 4;
      p->v = cr_realloc(p->v, p->cap * sizeof *p->v);
    }
    t = &p->v[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->instance, sizeof t->instance, "%s", inst);
  }
  t->tunnels++;
  n = cr_tunnel_nstreams(info->tunnel);
  rank = p->fanout ? coverage_rank(info->coverage) : 0; /* one tunnel of the name: any, least busy */
  if (t->tunnel == NULL || rank > t->rank || (rank == t->rank && n < t->streams)) {
    t->tunnel = info->tunnel;
    t->streams = n;
    t->rank = rank;
    snprintf(t->peer, sizeof t->peer, "%s", info->peer);
  }
}

/* Tunnels of no known process that are all still waiting for their announcement's answer, next to
 * known processes: most likely more tunnels of those (an agent dials several), so they are left
 * out rather than sent the change twice. A process whose every tunnel is that young (under a round
 * trip) is not reached. */
static void plan_drop_unannounced(plan_t *p) {
  int known = 0;
  for (size_t i = 0; i < p->n; i++)
    known |= p->v[i].instance[0] != '\0';
  for (size_t i = 0; known && i < p->n; i++)
    if (p->v[i].instance[0] == '\0' && p->v[i].rank < 2) {
      p->v[i] = p->v[--p->n];
      return;
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
  cr_buf_appendf(out, "\",\"streams\":%zu,\"usable\":%s", cr_tunnel_nstreams(info->tunnel),
                 cr_tunnel_usable(info->tunnel) ? "true" : "false");
  if (info->instance && info->instance[0]) {
    cr_buf_appendf(out, ",\"instance\":\"");
    cr_errpage_json_escape(out, info->instance);
    cr_buf_appendf(out, "\"");
  }
  cr_buf_appendf(out, "}");
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

/* Opens leg i of f on tunnel t with head h; a failure to open is the leg's result at once. */
static void leg_start(fan_t *f, size_t i, cr_tunnel_t *t, const cr_http_msg_t *h, const char *body,
                      size_t body_len) {
  ctl_call_t *c = cr_calloc(1, sizeof *c);
  int err = 0;
  c->fan = f;
  c->idx = i;
  c->body = body;
  c->body_len = body_len;
  f->legs[i] = c;
  f->refs++;
  uv_timer_init(f->loop, &c->timer);
  c->timer.data = c;
  c->ts = cr_tunnel_open_stream(t, h, body_len > 0, &ctl_cbs, c, &err);
  if (c->ts == NULL) {
    char msg[160];
    snprintf(msg, sizeof msg, "could not open a tunnel stream to the agent: %s", cr_strerror(err));
    leg_finish(c, 502, "tunnel_stream_failed", msg);
    uv_close((uv_handle_t *)&c->timer, call_timer_closed);
    return;
  }
  uv_timer_start(&c->timer, on_call_timeout, CTL_TIMEOUT_MS, 0);
  if (body_len)
    call_pump(c);
  else
    c->ended_local = 1; /* END_STREAM went with the head */
}

/* Sends the control call to the agent: fanout, once to every connected process of the name (one
 * result each); else down its least busy usable tunnel, relaying the answer. */
static void forward(cr__gw_admin_t *ga, cr_admin_req_t *req, const cr_http_msg_t *head, const char *agent,
                    const char *suffix, int fanout, const char *action, const char *fp, const char *body,
                    size_t body_len) {
  plan_t p;
  fan_t *f;
  cr_http_msg_t h;
  char target[300], by[96];
  const char *ct;

  memset(&p, 0, sizeof p);
  p.agent = agent;
  p.fanout = fanout;
  cr__gateway_foreach_tunnel(ga->gw, plan_visit, &p);
  if (fanout)
    plan_drop_unannounced(&p);
  if (p.n == 0) {
    char msg[256];
    snprintf(msg, sizeof msg, p.seen ? "agent %s has no usable tunnel (draining); retry later"
                                     : "no connected agent named %s", agent);
    refuse(req, head, p.seen ? 503 : 404, p.seen ? "no_tunnel" : "unknown_agent", msg, NULL);
    free(p.v);
    return;
  }
  f = cr_calloc(1, sizeof *f);
  f->req = req;
  f->loop = ga->loop;
  f->relay = !fanout;
  f->n = f->pending = p.n;
  f->refs = 1; /* the caller's, until answered or gone */
  f->legs = cr_calloc(p.n, sizeof *f->legs);
  f->results = cr_calloc(p.n, sizeof *f->results);
  f->start_ms = uv_now(ga->loop);
  snprintf(f->agent, sizeof f->agent, "%s", agent);
  snprintf(f->peer, sizeof f->peer, "%s", cr_admin_req_peer(req));
  snprintf(f->method, sizeof f->method, "%s", head->method);
  snprintf(f->target, sizeof f->target, "%s", head->target);
  snprintf(f->action, sizeof f->action, "%s", action);
  snprintf(f->fp, sizeof f->fp, "%s", fp ? fp : "");
  cr_errpage_request_id_new(f->request_id);
  for (size_t i = 0; i < p.n; i++) {
    result_t *r = &f->results[i];
    cr_buf_init(&r->answer, CTL_MAX_ANSWER);
    snprintf(r->ctype, sizeof r->ctype, "application/json"); /* unless the agent's answer says */
    snprintf(r->instance, sizeof r->instance, "%s", p.v[i].instance);
    snprintf(r->peer, sizeof r->peer, "%s", p.v[i].peer);
    r->tunnels = p.v[i].tunnels;
  }
  cr_admin_req_set_data(req, f);

  snprintf(target, sizeof target, CR_CONTROL_PREFIX "%s", suffix);
  snprintf(by, sizeof by, "admin %s", f->peer);
  cr_http_msg_init(&h, 0);
  cr_http_msg_set_method(&h, head->method, strlen(head->method));
  cr_http_msg_set_target(&h, target, strlen(target));
  cr_http_msg_add_header(&h, "Host", 4, CTL_HOST, strlen(CTL_HOST));
  cr_http_msg_add_header(&h, "x-ccrelay-requested-by", 22, by, strlen(by));
  cr_http_msg_add_header(&h, "x-request-id", 12, f->request_id, strlen(f->request_id));
  ct = cr_http_msg_get(head, "content-type");
  if (body_len && ct)
    cr_http_msg_add_header(&h, "content-type", 12, ct, strlen(ct));
  h.content_length = (int64_t)body_len;
  f->starting = 1;
  for (size_t i = 0; i < p.n; i++)
    leg_start(f, i, p.v[i].tunnel, &h, body, body_len);
  f->starting = 0;
  cr_http_msg_free(&h);
  free(p.v);
  if (f->pending == 0)
    fan_answer(f);
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
  if (plen == 8 && memcmp(path, "/metrics", 8) == 0) {
    cr_buf_t out;
    if (!is_get && strcmp(head->method, "HEAD") != 0) {
      refuse(req, head, 405, "method_not_allowed", "use GET", "GET");
      return;
    }
    cr_buf_init(&out, 0);
    cr__gateway_metrics(ga->gw, &out);
    cr_admin_respond(req, 200, CR_METRICS_CONTENT_TYPE, out.base, out.len);
    cr_buf_free(&out);
    return;
  }
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
      forward(ga, req, head, agent, "status", 0, "", NULL, NULL, 0);
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
    forward(ga, req, head, agent, suffix, 0, "", NULL, NULL, 0);
    return;
  }
  if (plen == 5 && memcmp(sub, "trust", 5) == 0) {
    if (is_get)
      forward(ga, req, head, agent, "trust", 1, "", NULL, NULL, 0);
    else if (strcmp(head->method, "POST") == 0 && body_len == 0)
      refuse(req, head, 400, "empty_body", "POST a PEM or DER certificate (or several PEM ones)", NULL);
    else if (strcmp(head->method, "POST") == 0)
      forward(ga, req, head, agent, "trust", 1, "add", NULL, body, body_len);
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
    forward(ga, req, head, agent, suffix, 1, "remove", fp, NULL, 0);
    return;
  }
  refuse(req, head, 404, "not_found", "unknown admin endpoint", NULL);
}

/* The admin caller left (or the listener is closing) before every agent answered. */
static void on_abort(cr_admin_req_t *req, void *arg) {
  fan_t *f = cr_admin_req_data(req);
  (void)arg;
  if (f == NULL || f->req == NULL)
    return;
  cr_log_warn("admin call abandoned",
              "peer=%s method=%s agent=%s request_id=%s reason=\"the caller left or the admin listener closed\"",
              f->peer, f->method, f->agent, f->request_id);
  if (f->action[0])
    cr_log_warn("remote trust change", "requested_by=\"admin %s\" agent=%s action=%s ?fingerprint=%s agent_status=- "
                "request_id=%s reason=\"the admin caller left before every agent answered; the change may have "
                "been applied\"", f->peer, f->agent, f->action, f->fp, f->request_id);
  f->req = NULL;
  for (size_t i = 0; i < f->n; i++) {
    ctl_call_t *c = f->legs[i];
    if (c == NULL || c->done)
      continue;
    c->body = NULL;
    uv_timer_stop(&c->timer);
    if (c->ts)
      cr_tstream_reset(c->ts);
  }
  fan_unref(f); /* the caller's reference */
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
  } else if (plen == 8 && memcmp(path, "/metrics", 8) == 0) {
    p->metrics(p->arg, &out);
    cr_admin_respond(req, 200, CR_METRICS_CONTENT_TYPE, out.base, out.len);
  } else {
    respond_json_error(req, 404, "not_found", "the probe listener serves /healthz, /readyz, /status and /metrics");
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
  cr_log_info("probe listening", "probe=%s:%u endpoints=\"/healthz /readyz /status /metrics\"", conf->probe_listen.host,
              cr_admin_port(*out));
  return 0;
}

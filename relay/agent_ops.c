/* What the agent tells operators: readiness, the status document (routes, identities and upstream
 * certificates with their expiry, the trust store), the admin listener (/healthz, /readyz, /status),
 * and the control channel through which the gateway asks for status and, when `remote_trust: true`,
 * manages the trust store. */
#include <stdio.h>
#include <string.h>

#include "agent_internal.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/log.h"
#include "ccrelay/route.h"
#include "ccrelay/x509.h"

#define MAX_REMOTE_BODY (1024 * 1024)

static void json_reason(cr_buf_t *out, int *first, const char *fmt_prefix, const char *text) {
  cr_buf_appendf(out, "%s\"%s", *first ? "" : ",", fmt_prefix);
  cr_json_escape(out, text);
  cr_buf_appendf(out, "\"");
  *first = 0;
}

int cr__agent_ready(agent_t *a, cr_buf_t *why) {
  int first = 1, ready = 1;
  char line[900];
  cr_buf_appendf(why, "[");
  if (a->tunnels_up == 0) {
    json_reason(why, &first, "", "no tunnel to the gateway is up");
    ready = 0;
  }
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    route_rt_t *rt = &a->routes[i];
    if (rt->usable && rt->id_not_after && rt->id_not_after <= time(NULL)) {
      /* Expired since the last reload: the next reload refuses the route; say so now. */
      snprintf(line, sizeof line, "route %s: client identity %s has expired", rt->conf->name, rt->id_subject);
      json_reason(why, &first, "", line);
      ready = 0;
    } else if (!rt->usable) {
      snprintf(line, sizeof line, "route %s: %s", rt->conf->name, rt->why);
      json_reason(why, &first, "", line);
      ready = 0;
    }
  }
  cr_buf_appendf(why, "]");
  return ready;
}

static void cert_json(cr_buf_t *out, const char *key, const char *subject, time_t not_after) {
  char when[32];
  if (not_after == 0) {
    cr_buf_appendf(out, "\"%s\":null", key);
    return;
  }
  cr_x509_fmt_time(not_after, CR_X509_TIME_ISO, when, sizeof when);
  cr_buf_appendf(out, "\"%s\":{\"subject\":\"", key);
  cr_json_escape(out, subject);
  cr_buf_appendf(out, "\",\"not_after\":\"%s\",\"days_left\":%ld,\"expired\":%s}", when,
                 (long)((not_after - time(NULL)) / 86400), not_after <= time(NULL) ? "true" : "false");
}

void cr__agent_status_json(agent_t *a, cr_buf_t *out) {
  cr_buf_t why;
  int ready;
  cr_buf_init(&why, 0);
  ready = cr__agent_ready(a, &why);
  cr_buf_appendf(out, "{\"version\":\"%s\",\"ready\":%s,\"not_ready_because\":%.*s,\"tunnels_up\":%zu,"
                      "\"connections\":%u,\"routes\":[",
                 CCRELAY_VERSION, ready ? "true" : "false", (int)why.len, why.base, a->tunnels_up,
                 a->conf->gateway.connections);
  cr_buf_free(&why);
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    route_rt_t *rt = &a->routes[i];
    size_t idle = 0, busy = 0;
    char subject[256] = "";
    time_t up_na = 0;
    if (rt->up) {
      cr_upstream_stats(rt->up, &idle, &busy);
      cr_upstream_peer_cert(rt->up, subject, sizeof subject, &up_na);
    }
    cr_buf_appendf(out, "%s{\"name\":\"", i ? "," : "");
    cr_json_escape(out, rt->conf->name);
    cr_buf_appendf(out, "\",\"upstream\":\"");
    cr_json_escape(out, rt->conf->upstream_url);
    cr_buf_appendf(out, "\",\"usable\":%s,\"why\":\"", rt->usable ? "true" : "false");
    cr_json_escape(out, rt->why);
    cr_buf_appendf(out, "\",\"verify\":\"%s\",", rt->conf->ca.path ? "ca_file" : "trust_store");
    cert_json(out, "identity", rt->id_subject, rt->id_not_after);
    cr_buf_appendf(out, ",");
    cert_json(out, "upstream_certificate", subject, up_na);
    cr_buf_appendf(out, ",\"idle_connections\":%zu,\"busy_connections\":%zu}", idle, busy);
  }
  cr_buf_appendf(out, "],\"trust_store\":{\"dir\":\"");
  cr_json_escape(out, a->conf->trust_store);
  cr_buf_appendf(out, "\",\"error\":\"");
  cr_json_escape(out, a->trust.error);
  cr_buf_appendf(out, "\",");
  cr__agent_trust_bad_json(a, out);
  cr_buf_appendf(out, ",");
  cr__agent_trust_json(a, out);
  cr_buf_appendf(out, "}}\n");
}

/* ---- the admin listener ---- */

static void on_admin_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t len,
                             void *arg) {
  agent_t *a = arg;
  cr_buf_t out;
  cr_buf_init(&out, 0);
  if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0) {
    cr_admin_respond(req, 405, "application/json", "{\"error\":\"method_not_allowed\"}\n", 31);
  } else if (strcmp(head->target, "/healthz") == 0) {
    cr_admin_respond(req, 200, "text/plain", "ok\n", 3);
  } else if (strcmp(head->target, "/readyz") == 0) {
    cr_buf_t why;
    int ready;
    cr_buf_init(&why, 0);
    ready = cr__agent_ready(a, &why);
    cr_buf_appendf(&out, "{\"ready\":%s,\"not_ready_because\":%.*s}\n", ready ? "true" : "false", (int)why.len,
                   why.base);
    cr_buf_free(&why);
    cr_admin_respond(req, ready ? 200 : 503, "application/json", out.base, out.len);
  } else if (strcmp(head->target, "/status") == 0) {
    cr__agent_status_json(a, &out);
    cr_admin_respond(req, 200, "application/json", out.base, out.len);
  } else {
    cr_admin_respond(req, 404, "application/json", "{\"error\":\"not_found\"}\n", 22);
  }
  cr_buf_free(&out);
}

static const cr_admin_callbacks_t admin_cbs = {.on_request = on_admin_request, .on_abort = NULL};

int cr__agent_admin_start(agent_t *a) {
  const cr_conf_listen_t *l = &a->conf->admin_listen;
  char err[512];
  if (l->host == NULL)
    return 0;
  if (cr_admin_listen(&a->loop, l->host, l->port, &admin_cbs, a, &a->admin, err, sizeof err) < 0) {
    cr_log_error("cannot start", "config=%s:%d:%d key=admin.listen reason=\"%s\"", a->conf->path, l->pos.line,
                 l->pos.col, err);
    return -1;
  }
  cr_log_info("admin listening", "address=%s:%u endpoints=\"/healthz /readyz /status\"", l->host,
              cr_admin_port(a->admin));
  return 0;
}

/* ---- the control channel ---- */

static void error_json(cr_buf_t *out, const char *code, const char *message) {
  cr_buf_appendf(out, "{\"error\":\"%s\",\"message\":\"", code);
  cr_json_escape(out, message);
  cr_buf_appendf(out, "\"}\n");
}

static void control_trust_add(agent_t *a, const char *body, size_t len, const char *who, int *status,
                              cr_buf_t *out) {
  cr_trust_batch_t *b = cr_trust_batch_new();
  cr_trust_report_t rep = {NULL, 0};
  char err[1024];
  int r;
  if (len == 0 || len > MAX_REMOTE_BODY) {
    *status = len ? 413 : 400;
    error_json(out, "bad_request", "send one or more CA certificates (PEM or DER), at most 1 MiB");
    cr_trust_batch_free(b);
    return;
  }
  r = cr_trust_batch_add_mem(b, body, len, NULL, "remote request", err, sizeof err);
  if (r == 0)
    r = cr_truststore_add(a->trust.store, b, 0, &rep, err, sizeof err);
  cr_trust_batch_free(b);
  if (r < 0) {
    *status = r == CR_ENO_CERT || r == CR_ETRUST_REFUSED || r == CR_ETLS ? 422 : 500;
    error_json(out, r == CR_ETRUST_REFUSED ? "refused" : "failed", err);
    cr_log_warn("remote trust change refused", "requested_by=\"%s\" action=add reason=\"%s\"", who, err);
    return;
  }
  cr_buf_appendf(out, "{\"added\":[");
  for (size_t i = 0; i < rep.n; i++) {
    cr_buf_appendf(out, "%s{\"fingerprint\":\"%s\",\"subject\":\"", i ? "," : "", rep.v[i].fingerprint);
    cr_json_escape(out, rep.v[i].subject);
    cr_buf_appendf(out, "\",\"status\":\"%s\"}", rep.v[i].status == CR_TRUST_ADDED ? "added" : "present");
    cr_log_warn("remote trust change", "requested_by=\"%s\" action=add fingerprint=%s subject=\"%s\" result=%s", who,
                rep.v[i].fingerprint, rep.v[i].subject, rep.v[i].status == CR_TRUST_ADDED ? "added" : "present");
  }
  cr_buf_appendf(out, "]}\n");
  cr_trust_report_free(&rep);
  *status = 200;
  cr__agent_trust_reload(a, "remote_change", 0);
}

static void control_trust_remove(agent_t *a, const char *fp, const char *who, int *status, cr_buf_t *out) {
  char removed[CR_TRUST_FP_HEX + 1], err[1024];
  int r = cr_truststore_remove(a->trust.store, fp, removed, err, sizeof err);
  if (r < 0) {
    *status = r == UV_ENOENT ? 404 : r == CR_EAMBIGUOUS ? 409 : r == UV_EINVAL ? 400 : 500;
    error_json(out, r == UV_ENOENT ? "not_found" : r == CR_EAMBIGUOUS ? "ambiguous" : "failed", err);
    cr_log_warn("remote trust change refused", "requested_by=\"%s\" action=remove fingerprint=%s reason=\"%s\"", who,
                fp, err);
    return;
  }
  cr_log_warn("remote trust change", "requested_by=\"%s\" action=remove fingerprint=%s result=removed", who, removed);
  cr_buf_appendf(out, "{\"removed\":\"%s\"}\n", removed);
  *status = 200;
  cr__agent_trust_reload(a, "remote_change", 0);
}

void cr__agent_control(agent_t *a, const char *method, const char *target, const char *body, size_t len,
                       const char *requested_by, int *status, cr_buf_t *out) {
  const char *path = target + strlen(CR_CONTROL_PREFIX);
  const char *who = requested_by && *requested_by ? requested_by : "gateway";
  if (strcmp(path, "status") == 0 && strcmp(method, "GET") == 0) {
    *status = 200;
    cr__agent_status_json(a, out);
    return;
  }
  if (strcmp(path, "trust") != 0 && strncmp(path, "trust/", 6) != 0) {
    *status = 404;
    error_json(out, "no_control_endpoint", "unknown control endpoint");
    return;
  }
  if (!a->conf->remote_trust) {
    *status = 403;
    error_json(out, "remote_trust_disabled",
               "this agent does not allow remote trust management (remote_trust: false in its config)");
    cr_log_warn("remote trust request refused", "requested_by=\"%s\" method=%s reason=\"remote_trust is false\"", who,
                method);
    return;
  }
  if (a->trust.store == NULL) {
    *status = 503;
    error_json(out, "no_trust_store", a->trust.error);
    return;
  }
  if (strcmp(path, "trust") == 0 && strcmp(method, "GET") == 0) {
    *status = 200;
    cr_buf_appendf(out, "{");
    cr__agent_trust_json(a, out);
    cr_buf_appendf(out, "}\n");
  } else if (strcmp(path, "trust") == 0 && strcmp(method, "POST") == 0) {
    control_trust_add(a, body, len, who, status, out);
  } else if (strncmp(path, "trust/", 6) == 0 && path[6] && strcmp(method, "DELETE") == 0) {
    control_trust_remove(a, path + 6, who, status, out);
  } else {
    *status = 405;
    error_json(out, "method_not_allowed", "use GET or POST on trust, DELETE on trust/FINGERPRINT");
  }
}

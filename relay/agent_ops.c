/* SPDX-License-Identifier: Apache-2.0 */
/* What the agent tells operators: readiness, the status document (routes, identities and upstream
 * certificates with their expiry, the trust store), the admin listener (/healthz, /readyz, /status),
 * and the control channel through which the gateway asks for status and, when `remote_trust: true`,
 * manages the trust store. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_internal.h"
#include "ccrelay/agent.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/log.h"
#include "ccrelay/route.h"
#include "ccrelay/x509.h"
#include "ccrelay_revision.h"

#define MAX_REMOTE_BODY (1024 * 1024)

static void json_reason(cr_buf_t *out, int *first, const char *fmt_prefix, const char *text) {
  cr_buf_appendf(out, "%s\"%s", *first ? "" : ",", fmt_prefix);
  cr_errpage_json_escape(out, text);
  cr_buf_appendf(out, "\"");
  *first = 0;
}

int cr__agent_instance_init(agent_t *a) {
  unsigned char raw[CR__AGENT_INSTANCE_LEN / 2];
  int r = cr_x509_random_bytes(raw, sizeof raw);
  a->instance[0] = '\0';
  if (r < 0)
    return r;
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf(a->instance + 2 * i, 3, "%02x", raw[i]);
  return 0;
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
  cr_errpage_json_escape(out, subject);
  cr_buf_appendf(out, "\",\"not_after\":\"%s\",\"days_left\":%ld,\"expired\":%s}", when,
                 (long)((not_after - time(NULL)) / 86400), not_after <= time(NULL) ? "true" : "false");
}

void cr__agent_status_json(agent_t *a, cr_buf_t *out) {
  cr_buf_t why;
  int ready;
  cr_buf_init(&why, 0);
  ready = cr__agent_ready(a, &why);
  cr_buf_appendf(out, "{\"version\":\"%s\",\"instance\":\"%s\",\"ready\":%s,\"not_ready_because\":%.*s,"
                      "\"tunnels_up\":%zu,\"connections\":%u,\"routes\":[",
                 CCRELAY_VERSION, a->instance, ready ? "true" : "false", (int)why.len, why.base, a->tunnels_up,
                 a->boot->gateway.connections);
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
    cr_errpage_json_escape(out, rt->conf->name);
    cr_buf_appendf(out, "\",\"upstream\":\"");
    cr_errpage_json_escape(out, rt->conf->upstream_url);
    cr_buf_appendf(out, "\",\"usable\":%s,\"why\":\"", rt->usable ? "true" : "false");
    cr_errpage_json_escape(out, rt->why);
    cr_buf_appendf(out, "\",\"verify\":\"%s\",", rt->conf->ca.path ? "ca_file" : "trust_store");
    cert_json(out, "identity", rt->id_subject, rt->id_not_after);
    cr_buf_appendf(out, ",");
    cert_json(out, "upstream_certificate", subject, up_na);
    cr_buf_appendf(out, ",\"idle_connections\":%zu,\"busy_connections\":%zu}", idle, busy);
  }
  cr_buf_appendf(out, "],\"tcp_routes\":[");
  for (size_t i = 0; i < a->conf->ntcp_routes; i++) {
    const cr_conf_tcp_route_t *tr = &a->conf->tcp_routes[i];
    const tcp_route_metrics_t *m = cr__agent_tcp_metrics(a, tr->name);
    uint64_t ended = 0;
    for (unsigned r = 0; r < TCP_NRESULTS; r++)
      ended += m->relays[r];
    cr_buf_appendf(out, "%s{\"name\":\"", i ? "," : "");
    cr_errpage_json_escape(out, tr->name);
    cr_buf_appendf(out, "\",\"host\":\"");
    cr_errpage_json_escape(out, tr->host);
    cr_buf_appendf(out, "\",\"connect\":\"");
    cr_errpage_json_escape(out, tr->connect_host);
    cr_buf_appendf(out, ":%u\",\"active\":%llu,\"ended\":%llu,\"failed\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu}",
                   tr->connect_port, (unsigned long long)m->active, (unsigned long long)ended,
                   (unsigned long long)(ended - m->relays[TCP_OK]), (unsigned long long)m->bytes_in,
                   (unsigned long long)m->bytes_out);
  }
  cr_buf_appendf(out, "],\"config_generation\":%llu,\"reloads_ok\":%llu,\"reloads_failed\":%llu,"
                      "\"last_reload_ok\":%llu",
                 (unsigned long long)(a->gen ? a->gen->number : 0), (unsigned long long)a->reloads_ok,
                 (unsigned long long)a->reloads_failed, (unsigned long long)a->last_reload_ok);
  cr_buf_appendf(out, ",\"trust_store\":{\"dir\":\"");
  cr_errpage_json_escape(out, a->conf->trust_store);
  cr_buf_appendf(out, "\",\"error\":\"");
  cr_errpage_json_escape(out, a->trust.error);
  cr_buf_appendf(out, "\",");
  cr__agent_trust_bad_json(a, out);
  cr_buf_appendf(out, ",");
  cr__agent_trust_json(a, out);
  cr_buf_appendf(out, "}}\n");
}

/* ---- metrics ---- */

static const char *const step_names[AM_NSTEPS] = {"connect", "proxy", "tls"};
static const char *const why_names[AM_NWHYS] = {"timeout", "refused", "closed", "tls", "other"};

void cr__agent_metrics_conf(agent_t *a) {
  agent_metrics_t *am = &a->metrics;
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    const char *name = a->conf->routes[i].name;
    size_t b = 0;
    while (b < am->nblocks && strcmp(am->block_names[b], name) != 0)
      b++;
    if (b == am->nblocks) {
      am->blocks = cr_realloc(am->blocks, (b + 1) * sizeof *am->blocks);
      am->block_names = cr_realloc(am->block_names, (b + 1) * sizeof *am->block_names);
      am->blocks[b] = cr_calloc(1, sizeof *am->blocks[b]);
      cr_metrics_calls_init(am->blocks[b]);
      am->block_names[b] = cr_strdup(name);
      am->nblocks++;
    }
    a->routes[i].m = am->blocks[b];
  }
}

tcp_route_metrics_t *cr__agent_tcp_metrics(agent_t *a, const char *name) {
  agent_metrics_t *am = &a->metrics;
  size_t b = 0;
  while (b < am->ntcp_blocks && strcmp(am->tcp_block_names[b], name) != 0)
    b++;
  if (b == am->ntcp_blocks) {
    am->tcp_blocks = cr_realloc(am->tcp_blocks, (b + 1) * sizeof *am->tcp_blocks);
    am->tcp_block_names = cr_realloc(am->tcp_block_names, (b + 1) * sizeof *am->tcp_block_names);
    am->tcp_blocks[b] = cr_calloc(1, sizeof *am->tcp_blocks[b]);
    am->tcp_block_names[b] = cr_strdup(name);
    am->ntcp_blocks++;
  }
  return am->tcp_blocks[b];
}

void cr__agent_metrics_free(agent_t *a) {
  agent_metrics_t *am = &a->metrics;
  for (size_t b = 0; b < am->nblocks; b++) {
    free(am->blocks[b]);
    free(am->block_names[b]);
  }
  free(am->blocks);
  free(am->block_names);
  am->blocks = NULL;
  am->block_names = NULL;
  am->nblocks = 0;
  for (size_t b = 0; b < am->ntcp_blocks; b++) {
    free(am->tcp_blocks[b]);
    free(am->tcp_block_names[b]);
  }
  free(am->tcp_blocks);
  free(am->tcp_block_names);
  am->tcp_blocks = NULL;
  am->tcp_block_names = NULL;
  am->ntcp_blocks = 0;
}

static const char *const tcp_result_names[TCP_NRESULTS] = {"ok", "connect_failed", "timeout", "error"};

/* Passthrough relays: every tcp route of the configuration in force appears (zeros before its first
 * relay), and so does every name that had relays under an earlier one. */
static void tcp_metrics(agent_t *a, cr_buf_t *out) {
  agent_metrics_t *am = &a->metrics;
  cr_metrics_label_t l[2];
  for (size_t i = 0; i < a->conf->ntcp_routes; i++)
    (void)cr__agent_tcp_metrics(a, a->conf->tcp_routes[i].name);
  cr_metrics_family(out, "ccrelay_agent_tcp_relays_total", "counter",
                    "Passthrough relays (tcp_routes) that ended, by route and how they ended.");
  for (size_t b = 0; b < am->ntcp_blocks; b++)
    for (unsigned r = 0; r < TCP_NRESULTS; r++) {
      l[0] = (cr_metrics_label_t){"route", am->tcp_block_names[b]};
      l[1] = (cr_metrics_label_t){"result", tcp_result_names[r]};
      cr_metrics_u64(out, "ccrelay_agent_tcp_relays_total", l, 2, am->tcp_blocks[b]->relays[r]);
    }
  cr_metrics_family(out, "ccrelay_agent_tcp_relays_active", "gauge", "Passthrough relays running, by route.");
  for (size_t b = 0; b < am->ntcp_blocks; b++) {
    l[0] = (cr_metrics_label_t){"route", am->tcp_block_names[b]};
    cr_metrics_u64(out, "ccrelay_agent_tcp_relays_active", l, 1, am->tcp_blocks[b]->active);
  }
  cr_metrics_family(out, "ccrelay_agent_tcp_bytes_total", "counter",
                    "Bytes relayed by passthrough relays: in = from the gateway to the upstream, out = back.");
  for (size_t b = 0; b < am->ntcp_blocks; b++) {
    l[0] = (cr_metrics_label_t){"route", am->tcp_block_names[b]};
    l[1] = (cr_metrics_label_t){"direction", "in"};
    cr_metrics_u64(out, "ccrelay_agent_tcp_bytes_total", l, 2, am->tcp_blocks[b]->bytes_in);
    l[1] = (cr_metrics_label_t){"direction", "out"};
    cr_metrics_u64(out, "ccrelay_agent_tcp_bytes_total", l, 2, am->tcp_blocks[b]->bytes_out);
  }
  cr_metrics_family(out, "ccrelay_agent_tcp_refused_total", "counter",
                    "Passthrough streams refused: no tcp route serves the name (404), or the agent was stopping.");
  l[0] = (cr_metrics_label_t){"reason", "no_route"};
  cr_metrics_u64(out, "ccrelay_agent_tcp_refused_total", l, 1, am->tcp_refused_no_route);
  l[0] = (cr_metrics_label_t){"reason", "draining"};
  cr_metrics_u64(out, "ccrelay_agent_tcp_refused_total", l, 1, am->tcp_refused_draining);
}

void cr__agent_count_dial_failure(agent_t *a, const char *step, int err) {
  unsigned st = strcmp(step, "proxy") == 0 ? AM_STEP_PROXY : strcmp(step, "tls") == 0 ? AM_STEP_TLS : AM_STEP_CONNECT;
  unsigned why;
  switch (err) {
  case UV_ETIMEDOUT:
    why = AM_WHY_TIMEOUT;
    break;
  case UV_ECONNREFUSED:
  case CR_EREFUSED:
  case CR_EPROXY:
  case CR_EPROXY_AUTH:
    why = AM_WHY_REFUSED;
    break;
  case UV_EOF:
  case UV_ECONNRESET:
  case UV_EPIPE:
  case CR_ECLOSED:
  case CR_ETLS_TRUNCATED:
    why = AM_WHY_CLOSED;
    break;
  case CR_ETLS:
  case CR_ETLS_VERIFY:
  case CR_ETLS_ALPN:
    why = AM_WHY_TLS;
    break;
  default:
    why = AM_WHY_OTHER;
  }
  a->metrics.dial_failures[st][why]++;
}

static void cert_sample(cr_buf_t *out, const char *kind, const char *name, const char *subject, time_t not_after) {
  cr_metrics_label_t l[3] = {{"kind", kind}, {"name", name}, {"subject", subject}};
  if (not_after)
    cr_metrics_u64(out, "ccrelay_certificate_not_after_seconds", l, 3, (uint64_t)not_after);
}

void cr__agent_metrics(agent_t *a, cr_buf_t *out) {
  size_t n = a->conf->nroutes;
  cr_metrics_label_t l[3];
  cr_trust_list_t tl;
  char err[300];
  int listed;

  cr_metrics_build_info(out, CCRELAY_VERSION, CCRELAY_REVISION);
  /* Every route name the agent ever had: a route dropped by a reload keeps its last counts. */
  cr_metrics_calls_render(out, "ccrelay_agent", "route", (const char *const *)a->metrics.block_names,
                          (const cr_metrics_calls_t *const *)a->metrics.blocks, a->metrics.nblocks,
                          "upstream_duration_seconds",
                          "Time from a request's arrival to its upstream's response head, in seconds.");
  cr_metrics_family(out, "ccrelay_agent_unrouted_calls_total", "counter",
                    "Requests that matched no route (answered 404).");
  {
    uint64_t sum = 0;
    for (unsigned m = 0; m < CR_METRICS_NMETHODS; m++)
      for (unsigned c = 0; c < CR_METRICS_NCLASSES; c++)
        sum += a->metrics.unrouted.calls[m][c];
    cr_metrics_u64(out, "ccrelay_agent_unrouted_calls_total", NULL, 0, sum);
  }

  if (a->tunnels_metrics)
    a->tunnels_metrics(a, out);
  cr_metrics_family(out, "ccrelay_agent_tunnel_dials_total", "counter", "Tunnel dials to the gateway begun.");
  cr_metrics_u64(out, "ccrelay_agent_tunnel_dials_total", NULL, 0, a->metrics.dials);
  cr_metrics_family(out, "ccrelay_agent_tunnel_dial_failures_total", "counter",
                    "Tunnel dials that failed, by the step that failed and a reason class.");
  for (unsigned st = 0; st < AM_NSTEPS; st++)
    for (unsigned w = 0; w < AM_NWHYS; w++) {
      l[0] = (cr_metrics_label_t){"step", step_names[st]};
      l[1] = (cr_metrics_label_t){"reason", why_names[w]};
      cr_metrics_u64(out, "ccrelay_agent_tunnel_dial_failures_total", l, 2, a->metrics.dial_failures[st][w]);
    }
  cr_metrics_family(out, "ccrelay_tunnel_ping_rtt_seconds", "histogram",
                    "Round trip of the tunnels' HTTP/2 PINGs, from sending to the ACK, in seconds.");
  cr_metrics_hist(out, "ccrelay_tunnel_ping_rtt_seconds", NULL, 0, &a->metrics.rtt);

  cr_metrics_family(out, "ccrelay_agent_upstream_connections", "gauge",
                    "Connections to each route's upstream, idle in the pool or busy with a call.");
  for (size_t i = 0; i < n; i++) {
    size_t idle = 0, busy = 0;
    if (a->routes[i].up)
      cr_upstream_stats(a->routes[i].up, &idle, &busy);
    l[0] = (cr_metrics_label_t){"route", a->conf->routes[i].name};
    l[1] = (cr_metrics_label_t){"state", "idle"};
    cr_metrics_u64(out, "ccrelay_agent_upstream_connections", l, 2, idle);
    l[1] = (cr_metrics_label_t){"state", "busy"};
    cr_metrics_u64(out, "ccrelay_agent_upstream_connections", l, 2, busy);
  }
  cr_metrics_family(out, "ccrelay_agent_upstream_handshakes_total", "counter",
                    "TLS handshakes with each route's upstream: full, or a resumed session.");
  for (size_t i = 0; i < n; i++) {
    uint64_t full = 0, resumed = 0;
    if (a->routes[i].up)
      cr_upstream_handshakes(a->routes[i].up, &full, &resumed);
    l[0] = (cr_metrics_label_t){"route", a->conf->routes[i].name};
    l[1] = (cr_metrics_label_t){"kind", "full"};
    cr_metrics_u64(out, "ccrelay_agent_upstream_handshakes_total", l, 2, full);
    l[1] = (cr_metrics_label_t){"kind", "resumed"};
    cr_metrics_u64(out, "ccrelay_agent_upstream_handshakes_total", l, 2, resumed);
  }
  tcp_metrics(a, out);
  cr_metrics_family(out, "ccrelay_agent_routes_usable", "gauge",
                    "1 when the route can be used, 0 when it is refused (see /status for why).");
  for (size_t i = 0; i < n; i++) {
    l[0] = (cr_metrics_label_t){"route", a->conf->routes[i].name};
    cr_metrics_u64(out, "ccrelay_agent_routes_usable", l, 1, a->routes[i].usable ? 1 : 0);
  }

  /* Certificates: route identities and the upstreams' certificates by route name; the trust
   * store's by fingerprint (subjects can repeat), its CRLs' next update by fingerprint. */
  listed = a->trust.store && cr_truststore_list(a->trust.store, &tl, err, sizeof err) == 0;
  cr_metrics_family(out, "ccrelay_certificate_not_after_seconds", "gauge",
                    "When a certificate expires (notAfter), in seconds since the Unix epoch.");
  for (size_t i = 0; i < n; i++) {
    route_rt_t *rt = &a->routes[i];
    char subject[256];
    time_t na;
    cert_sample(out, "route_identity", rt->conf->name, rt->id_subject, rt->id_not_after);
    if (rt->up && cr_upstream_peer_cert(rt->up, subject, sizeof subject, &na) == 0)
      cert_sample(out, "upstream", rt->conf->name, subject, na);
  }
  for (size_t i = 0; listed && i < tl.ncerts; i++)
    cert_sample(out, tl.certs[i].self_signed ? "trusted_root" : "trusted_intermediate", tl.certs[i].fingerprint,
                tl.certs[i].subject, tl.certs[i].not_after);
  cr_metrics_family(out, "ccrelay_crl_next_update_seconds", "gauge",
                    "When a trust-store CRL is due to be replaced (nextUpdate), in seconds since the Unix epoch.");
  for (size_t i = 0; listed && i < tl.ncrls; i++) {
    l[0] = (cr_metrics_label_t){"name", tl.crls[i].fingerprint};
    l[1] = (cr_metrics_label_t){"issuer", tl.crls[i].issuer};
    if (tl.crls[i].next_update)
      cr_metrics_u64(out, "ccrelay_crl_next_update_seconds", l, 2, (uint64_t)tl.crls[i].next_update);
  }
  if (listed)
    cr_trust_list_free(&tl);

  cr_metrics_family(out, "ccrelay_reloads_total", "counter",
                    "Reloads of the trust store and the routes that depend on it, by result.");
  l[0] = (cr_metrics_label_t){"result", "ok"};
  cr_metrics_u64(out, "ccrelay_reloads_total", l, 1, a->metrics.reloads_ok);
  l[0] = (cr_metrics_label_t){"result", "failed"};
  cr_metrics_u64(out, "ccrelay_reloads_total", l, 1, a->metrics.reloads_failed);
  cr_metrics_family(out, "ccrelay_reload_last_success_timestamp_seconds", "gauge",
                    "When the last reload succeeded, in seconds since the Unix epoch (0: never).");
  cr_metrics_u64(out, "ccrelay_reload_last_success_timestamp_seconds", NULL, 0, (uint64_t)a->metrics.reload_last_ok);
}

/* ---- the admin listener ---- */

/* The admin listener has no authentication, so POST /reload is served only where just this machine
 * can reach it: admin.listen on a loopback address (127.0.0.0/8, ::1, localhost). A request with an
 * Origin field comes from a web page (a browser may send a simple cross-site POST to loopback), and
 * is refused too. */
static int reload_allowed(agent_t *a, const cr_http_msg_t *head, const char **why) {
  const char *h = a->boot->admin_listen.host;
  int loopback = h && (strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0 || strcmp(h, "localhost") == 0);
  if (!loopback) {
    *why = "POST /reload is served only when admin.listen is a loopback address (the admin listener has no "
           "authentication); send SIGHUP instead";
    return 0;
  }
  if (cr_http_msg_get(head, "origin") != NULL) {
    *why = "POST /reload is not served to web pages (the request carries Origin)";
    return 0;
  }
  return 1;
}

static void admin_reload(agent_t *a, cr_admin_req_t *req, const cr_http_msg_t *head, cr_buf_t *out) {
  const char *why;
  char msg[2048];
  int r;
  if (!reload_allowed(a, head, &why)) {
    cr_log_warn("admin reload refused", "peer=%s reason=\"%s\"", cr_admin_req_peer(req), why);
    cr_buf_appendf(out, "{\"reloaded\":false,\"error\":\"forbidden\",\"message\":\"");
    cr_errpage_json_escape(out, why);
    cr_buf_appendf(out, "\"}\n");
    cr_admin_respond(req, 403, "application/json", out->base, out->len);
    return;
  }
  r = cr__agent_reload(a, "admin", msg, sizeof msg);
  cr_buf_appendf(out, "{\"reloaded\":%s,\"message\":\"", r == 0 ? "true" : "false");
  cr_errpage_json_escape(out, msg);
  cr_buf_appendf(out, "\",\"reloads_ok\":%llu,\"reloads_failed\":%llu}\n", (unsigned long long)a->reloads_ok,
                 (unsigned long long)a->reloads_failed);
  cr_admin_respond(req, r == 0 ? 200 : 422, "application/json", out->base, out->len);
}

static void on_admin_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t len,
                             void *arg) {
  agent_t *a = arg;
  cr_buf_t out;
  cr_buf_init(&out, 0);
  if (strcmp(head->target, "/reload") == 0) {
    if (strcmp(head->method, "POST") == 0)
      admin_reload(a, req, head, &out);
    else
      cr_admin_respond(req, 405, "application/json", "{\"error\":\"method_not_allowed\"}\n", 31);
  } else if (strcmp(head->method, "GET") != 0 && strcmp(head->method, "HEAD") != 0) {
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
  } else if (strcmp(head->target, "/metrics") == 0) {
    cr__agent_metrics(a, &out);
    cr_admin_respond(req, 200, CR_METRICS_CONTENT_TYPE, out.base, out.len);
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
  cr_log_info("admin listening", "address=%s:%u endpoints=\"/healthz /readyz /status /metrics /reload\"", l->host,
              cr_admin_port(a->admin));
  return 0;
}

/* ---- the control channel ---- */

static void error_json(cr_buf_t *out, const char *code, const char *message) {
  cr_buf_appendf(out, "{\"error\":\"%s\",\"message\":\"", code);
  cr_errpage_json_escape(out, message);
  cr_buf_appendf(out, "\"}\n");
}

/* ---- remote trust changes, off the loop thread ----
 *
 * A change writes, fsyncs, renames and fsyncs the directory: on a slow disk that is many
 * milliseconds, and on the loop thread every tunnel of the agent would wait for it. So the input is
 * checked and parsed on the loop thread, the file-system work runs on libuv's thread pool (it
 * shares only the store handle, which holds nothing but the directory's path and never changes),
 * and the routes are reloaded and the gateway answered back on the loop thread. Changes run one at
 * a time, in the order they arrived, so an add and a remove of the same certificate cannot race. */

typedef enum { CHANGE_ADD, CHANGE_REMOVE, CHANGE_PROBE } change_op_t;

/* A probe asked for through the control channel caps each route's timeouts, so that the answer comes
 * within the gateway's 10 s for a control call. */
#define PROBE_MAX_TIMEOUT_MS 4000

struct cr__agent_change {
  uv_work_t work;
  cr_queue_t link;          /* a->trust.changes */
  agent_t *agent;
  cr_truststore_t *store;
  change_op_t op;
  cr_trust_batch_t *batch;  /* add: parsed on the loop thread */
  char *fp;                 /* remove: the fingerprint (prefix) asked for */
  char *who;
  cr__agent_control_cb done; /* NULL once cancelled */
  void *data;
  unsigned submitted : 1;   /* handed to the thread pool */
  /* written by the worker, read after it */
  int r;
  cr_trust_report_t rep;
  char removed[CR_TRUST_FP_HEX + 1];
  char err[1024];
  /* probe: one per route asked for, all at once on the loop */
  cr_agent_probe_t **probes;
  cr_agent_probe_result_t *results;
  size_t nprobes, pending;
};

static void add_refused(int r, const char *err, const char *who, int *status, cr_buf_t *out) {
  *status = r == CR_ENO_CERT || r == CR_ETRUST_REFUSED || r == CR_ETLS ? 422 : 500;
  error_json(out, r == CR_ETRUST_REFUSED ? "refused" : "failed", err);
  cr_log_warn("remote trust change refused", "requested_by=\"%s\" action=add reason=\"%s\"", who, err);
}

/* The answer to an add the store took, and its audit lines. */
static void add_done(cr__agent_change_t *c, int *status, cr_buf_t *out) {
  const cr_trust_report_t *rep = &c->rep;
  cr_buf_appendf(out, "{\"added\":[");
  for (size_t i = 0; i < rep->n; i++) {
    cr_buf_appendf(out, "%s{\"fingerprint\":\"%s\",\"subject\":\"", i ? "," : "", rep->v[i].fingerprint);
    cr_errpage_json_escape(out, rep->v[i].subject);
    cr_buf_appendf(out, "\",\"status\":\"%s\"}", rep->v[i].status == CR_TRUST_ADDED ? "added" : "present");
    cr_log_warn("remote trust change", "requested_by=\"%s\" action=add fingerprint=%s subject=\"%s\" result=%s",
                c->who, rep->v[i].fingerprint, rep->v[i].subject,
                rep->v[i].status == CR_TRUST_ADDED ? "added" : "present");
  }
  cr_buf_appendf(out, "]}\n");
  *status = 200;
}

static void remove_done(cr__agent_change_t *c, int *status, cr_buf_t *out) {
  int r = c->r;
  if (r < 0) {
    *status = r == UV_ENOENT ? 404 : r == CR_EAMBIGUOUS ? 409 : r == UV_EINVAL ? 400 : 500;
    error_json(out, r == UV_ENOENT ? "not_found" : r == CR_EAMBIGUOUS ? "ambiguous" : "failed", c->err);
    cr_log_warn("remote trust change refused", "requested_by=\"%s\" action=remove fingerprint=%s reason=\"%s\"",
                c->who, c->fp, c->err);
    return;
  }
  cr_log_warn("remote trust change", "requested_by=\"%s\" action=remove fingerprint=%s result=removed", c->who,
              c->removed);
  cr_buf_appendf(out, "{\"removed\":\"%s\"}\n", c->removed);
  *status = 200;
}

static void log_dropped(const cr__agent_change_t *c) {
  cr_log_warn("remote trust change dropped", "requested_by=\"%s\" action=%s "
              "reason=\"the control stream closed before the change began\"",
              c->who, c->op == CHANGE_ADD ? "add" : "remove");
}

static void change_free(cr__agent_change_t *c) {
  cr_trust_batch_free(c->batch);
  cr_trust_report_free(&c->rep);
  free(c->fp);
  free(c->who);
  free(c);
}

/* On a thread-pool thread: the file-system work, and nothing of the agent. */
static void change_work(uv_work_t *w) {
  cr__agent_change_t *c = cr_container_of(w, cr__agent_change_t, work);
  if (c->op == CHANGE_ADD)
    c->r = cr_truststore_add(c->store, c->batch, 0, &c->rep, c->err, sizeof c->err);
  else
    c->r = cr_truststore_remove(c->store, c->fp, c->removed, c->err, sizeof c->err);
}

static void change_after(uv_work_t *w, int status);

static void change_next(agent_t *a) {
  cr__agent_change_t *c;
  if (cr_queue_empty(&a->trust.changes))
    return;
  c = cr_queue_data(cr_queue_head(&a->trust.changes), cr__agent_change_t, link);
  if (c->submitted)
    return;
  c->submitted = 1;
  uv_queue_work(&a->loop, &c->work, change_work, change_after);
}

/* Back on the loop thread. A change cancelled before it started wrote nothing; one whose caller
 * went away while it ran stands (it is logged and the routes reload), only the answer is dropped. */
static void change_after(uv_work_t *w, int status) {
  cr__agent_change_t *c = cr_container_of(w, cr__agent_change_t, work);
  agent_t *a = c->agent;
  cr_buf_t out;
  int code = 500;
  cr_queue_remove(&c->link);
  if (status == UV_ECANCELED) {
    log_dropped(c);
    change_free(c);
    change_next(a);
    return;
  }
  cr_buf_init(&out, 0);
  if (c->op == CHANGE_ADD && c->r < 0)
    add_refused(c->r, c->err, c->who, &code, &out);
  else if (c->op == CHANGE_ADD)
    add_done(c, &code, &out);
  else
    remove_done(c, &code, &out);
  if (c->r == 0 && !a->trust.stopped)
    cr__agent_trust_reload(a, "remote_change", 0);
  if (c->done)
    c->done(c->data, code, &out);
  else
    cr_log_warn("remote trust change not answered", "requested_by=\"%s\" action=%s status=%d "
                "reason=\"the control stream closed while the change was written\"",
                c->who, c->op == CHANGE_ADD ? "add" : "remove", code);
  cr_buf_free(&out);
  change_free(c);
  change_next(a);
}

/* Queues a change whose input (batch or fp) is complete: the worker may start at once. */
static cr__agent_change_t *change_queue(agent_t *a, change_op_t op, cr_trust_batch_t *batch, const char *fp,
                                        const char *who, cr__agent_control_cb done, void *data) {
  cr__agent_change_t *c = cr_calloc(1, sizeof *c);
  c->agent = a;
  c->store = a->trust.store;
  c->op = op;
  c->batch = batch;
  c->fp = fp ? cr_strdup(fp) : NULL;
  c->who = cr_strdup(who);
  c->done = done;
  c->data = data;
  cr_queue_insert_tail(&a->trust.changes, &c->link);
  change_next(a);
  return c;
}

static void probe_change_free(cr__agent_change_t *c) {
  free(c->probes);
  free(c->results);
  free(c->who);
  free(c);
}

void cr__agent_control_cancel(cr__agent_change_t *c) {
  c->done = NULL;
  c->data = NULL;
  if (c->op == CHANGE_PROBE) {
    for (size_t i = 0; i < c->nprobes; i++)
      if (c->probes[i])
        cr_agent_probe_cancel(c->probes[i]);
    cr_log_warn("probe not answered", "requested_by=\"%s\" reason=\"the control stream closed first\"", c->who);
    probe_change_free(c);
    return;
  }
  if (!c->submitted) {
    log_dropped(c);
    cr_queue_remove(&c->link);
    change_free(c);
    return;
  }
  /* Not started yet: it never will be (change_after sees UV_ECANCELED). Running: it finishes. */
  uv_cancel((uv_req_t *)&c->work);
}

static cr__agent_change_t *control_trust_add(agent_t *a, const char *body, size_t len, const char *who,
                                             int *status, cr_buf_t *out, cr__agent_control_cb done, void *data) {
  cr_trust_batch_t *b;
  char err[1024];
  int r;
  if (len == 0 || len > MAX_REMOTE_BODY) {
    *status = len ? 413 : 400;
    error_json(out, "bad_request", "send one or more CA certificates (PEM or DER), at most 1 MiB");
    return NULL;
  }
  b = cr_trust_batch_new();
  r = cr_trust_batch_add_mem(b, body, len, NULL, "remote request", err, sizeof err);
  if (r < 0) {
    cr_trust_batch_free(b);
    add_refused(r, err, who, status, out);
    return NULL;
  }
  return change_queue(a, CHANGE_ADD, b, NULL, who, done, data);
}

/* ---- probes ("Test Connection") ---- */

static void json_str(cr_buf_t *out, const char *key, const char *v, int comma) {
  cr_buf_appendf(out, "%s\"%s\":\"", comma ? "," : "", key);
  cr_errpage_json_escape(out, v ? v : "");
  cr_buf_appendf(out, "\"");
}

static void probe_json(cr_buf_t *out, const cr_agent_probe_result_t *r) {
  char when[32] = "";
  cr_buf_appendf(out, "{");
  json_str(out, "name", r->route, 0);
  json_str(out, "upstream", r->upstream, 1);
  cr_buf_appendf(out, ",\"ok\":%s,\"reachable\":%s,\"verified\":%s,\"plain_http\":%s", r->ok ? "true" : "false",
                 r->reachable ? "true" : "false", r->verified ? "true" : "false", r->plain ? "true" : "false");
  json_str(out, "tls_version", r->tls.version, 1);
  json_str(out, "cipher", r->tls.cipher, 1);
  if (r->tls.not_after)
    cr_x509_fmt_time(r->tls.not_after, CR_X509_TIME_ISO, when, sizeof when);
  cr_buf_appendf(out, ",\"server_certificate\":{");
  json_str(out, "subject", r->tls.subject, 0);
  json_str(out, "issuer", r->tls.issuer, 1);
  json_str(out, "not_after", when, 1);
  cr_buf_appendf(out, "}");
  json_str(out, "verify", r->verify, 1);
  json_str(out, "verify_source", r->verify_source, 1);
  cr_buf_appendf(out, ",\"status\":%d", r->status);
  json_str(out, "error", r->error, 1);
  json_str(out, "warning", r->warning, 1);
  cr_buf_appendf(out, "}");
}

static void on_probe_done(const cr_agent_probe_result_t *res, void *data) {
  cr__agent_change_t *c = data;
  size_t i;
  cr_buf_t out;
  int all = 1;
  for (i = 0; i < c->nprobes; i++)
    if (c->results[i].route == res->route) /* the route's name: one probe per route */
      break;
  if (i < c->nprobes) {
    c->results[i] = *res;
    c->probes[i] = NULL;
  }
  cr_log(res->ok ? CR_LOG_INFO : CR_LOG_WARN, "probe", "requested_by=\"%s\" route=%s ok=%d status=%d reason=\"%s\"",
         c->who, res->route, res->ok, res->status, res->error);
  if (--c->pending > 0)
    return;
  cr_buf_init(&out, 0);
  for (i = 0; i < c->nprobes; i++)
    all &= c->results[i].ok;
  cr_buf_appendf(&out, "{\"ok\":%s,\"routes\":[", all ? "true" : "false");
  for (i = 0; i < c->nprobes; i++) {
    if (i)
      cr_buf_appendf(&out, ",");
    probe_json(&out, &c->results[i]);
  }
  cr_buf_appendf(&out, "]}\n");
  if (c->done)
    c->done(c->data, 200, &out);
  cr_buf_free(&out);
  probe_change_free(c);
}

/* Decodes %XX in place; 0, or -1 for a bad escape or a decoded control character. */
static int pct_decode(char *s) {
  char *o = s;
  for (; *s; s++) {
    if (*s == '%') {
      int hi, lo;
      if (!s[1] || !s[2])
        return -1;
      hi = s[1] <= '9' ? s[1] - '0' : (s[1] | 0x20) - 'a' + 10;
      lo = s[2] <= '9' ? s[2] - '0' : (s[2] | 0x20) - 'a' + 10;
      if (hi < 0 || hi > 15 || lo < 0 || lo > 15 || hi * 16 + lo < 0x21)
        return -1;
      *o++ = (char)(hi * 16 + lo);
      s += 2;
    } else {
      *o++ = *s;
    }
  }
  *o = '\0';
  return 0;
}

/* POST probe[?route=NAME...&method=M&path=P]: every route (or those named), at once. */
static cr__agent_change_t *control_probe(agent_t *a, const char *query, const char *who, int *status, cr_buf_t *out,
                                         cr__agent_control_cb done, void *data) {
  char method[16] = "HEAD", path[1024] = "/", q[2048], *save = NULL, *tok;
  unsigned char *want = cr_calloc(a->conf->nroutes ? a->conf->nroutes : 1, 1);
  X509_STORE *stores[3] = {NULL, NULL, NULL};
  char store_err[1100] = "";
  cr__agent_change_t *c;
  size_t nwant = 0;
  snprintf(q, sizeof q, "%s", query ? query : "");
  for (tok = strtok_r(q, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(tok, '=');
    const char *bad = NULL;
    if (eq == NULL || pct_decode(eq + 1) < 0) {
      bad = "a query of route=NAME, method=METHOD and path=/PATH";
    } else if (strncmp(tok, "route=", 6) == 0) {
      size_t i;
      for (i = 0; i < a->conf->nroutes && strcmp(a->conf->routes[i].name, eq + 1) != 0; i++)
        ;
      if (i == a->conf->nroutes) {
        *status = 404;
        snprintf(store_err, sizeof store_err, "this agent has no route named %s", eq + 1);
        error_json(out, "unknown_route", store_err);
        free(want);
        return NULL;
      }
      nwant += !want[i];
      want[i] = 1;
    } else if (strncmp(tok, "method=", 7) == 0 && strlen(eq + 1) > 0 && strlen(eq + 1) < sizeof method &&
               strspn(eq + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") == strlen(eq + 1)) {
      snprintf(method, sizeof method, "%s", eq + 1);
    } else if (strncmp(tok, "path=", 5) == 0 && eq[1] == '/' && strlen(eq + 1) < sizeof path) {
      snprintf(path, sizeof path, "%s", eq + 1);
    } else {
      bad = "route=NAME, method= an upper-case HTTP method, path= starting with /";
    }
    if (bad) {
      *status = 400;
      error_json(out, "bad_query", bad);
      free(want);
      return NULL;
    }
  }
  c = cr_calloc(1, sizeof *c);
  c->agent = a;
  c->op = CHANGE_PROBE;
  c->who = cr_strdup(who);
  c->done = done;
  c->data = data;
  c->probes = cr_calloc(a->conf->nroutes ? a->conf->nroutes : 1, sizeof *c->probes);
  c->results = cr_calloc(a->conf->nroutes ? a->conf->nroutes : 1, sizeof *c->results);
  if (a->trust.store == NULL)
    snprintf(store_err, sizeof store_err, "%s", a->trust.error[0] ? a->trust.error : "no trust store");
  /* Every result slot names its route first: a probe that fails at once still reports from a later
   * loop turn, and finds its slot by name. */
  for (size_t i = 0; i < a->conf->nroutes; i++)
    if (nwant == 0 || want[i])
      c->results[c->nprobes++].route = a->conf->routes[i].name;
  c->pending = c->nprobes;
  for (size_t i = 0, k = 0; i < a->conf->nroutes; i++) {
    const cr_conf_route_t *r = &a->conf->routes[i];
    cr_trust_crl_mode_t mode = cr__agent_crl_mode(r->revocation);
    cr_agent_probe_opts_t o;
    if (nwant && !want[i])
      continue;
    if (a->trust.store && stores[mode] == NULL &&
        cr_truststore_x509_store(a->trust.store, (int)mode, &stores[mode], store_err, sizeof store_err) < 0)
      stores[mode] = NULL;
    memset(&o, 0, sizeof o);
    o.conf = a->conf;
    o.route = i;
    o.identity = a->routes[i].identity;
    o.store = stores[mode];
    o.store_error = store_err;
    o.method = method;
    o.path = path;
    o.max_timeout_ms = PROBE_MAX_TIMEOUT_MS;
    c->probes[k++] = cr_agent_probe_start(&a->loop, &o, on_probe_done, c);
  }
  for (int m = 0; m < 3; m++)
    X509_STORE_free(stores[m]);
  cr_log_info("probe requested", "requested_by=\"%s\" routes=%zu method=%s path=\"%s\"", who, c->nprobes, method,
              path);
  free(want);
  return c;
}

cr__agent_change_t *cr__agent_control(agent_t *a, const char *method, const char *target, const char *body,
                                      size_t len, const char *requested_by, int *status, cr_buf_t *out,
                                      cr__agent_control_cb done, void *data) {
  const char *path = target + strlen(CR_CONTROL_PREFIX);
  const char *who = requested_by && *requested_by ? requested_by : "gateway";
  if (strcmp(path, "status") == 0 && strcmp(method, "GET") == 0) {
    *status = 200;
    cr__agent_status_json(a, out);
    return NULL;
  }
  if (strcmp(path, "probe") == 0 || strncmp(path, "probe?", 6) == 0) {
    if (strcmp(method, "POST") != 0) {
      *status = 405;
      error_json(out, "method_not_allowed", "use POST on probe");
      return NULL;
    }
    return control_probe(a, path[5] ? path + 6 : NULL, who, status, out, done, data);
  }
  if (strcmp(path, "trust") != 0 && strncmp(path, "trust/", 6) != 0) {
    *status = 404;
    error_json(out, "no_control_endpoint", "unknown control endpoint");
    return NULL;
  }
  if (!a->conf->remote_trust) {
    *status = 403;
    error_json(out, "remote_trust_disabled",
               "this agent does not allow remote trust management (remote_trust: false in its config)");
    cr_log_warn("remote trust request refused", "requested_by=\"%s\" method=%s reason=\"remote_trust is false\"", who,
                method);
    return NULL;
  }
  if (a->trust.store == NULL) {
    *status = 503;
    error_json(out, "no_trust_store", a->trust.error);
    return NULL;
  }
  if (strcmp(path, "trust") == 0 && strcmp(method, "GET") == 0) {
    *status = 200;
    cr_buf_appendf(out, "{");
    cr__agent_trust_json(a, out);
    cr_buf_appendf(out, "}\n");
  } else if (strcmp(path, "trust") == 0 && strcmp(method, "POST") == 0) {
    return control_trust_add(a, body, len, who, status, out, done, data);
  } else if (strncmp(path, "trust/", 6) == 0 && path[6] && strcmp(method, "DELETE") == 0) {
    return change_queue(a, CHANGE_REMOVE, NULL, path + 6, who, done, data);
  } else {
    *status = 405;
    error_json(out, "method_not_allowed", "use GET or POST on trust, DELETE on trust/FINGERPRINT");
  }
  return NULL;
}

/* ---------- the replica announcement (parsed here; acted on by agent.c) ---------- */

typedef struct jcur {
  const char *p, *end;
} jcur_t;

static void jws(jcur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
    c->p++;
}

static int jlit(jcur_t *c, char ch) {
  jws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* A string without escapes or control characters (ids and keys never need them), at most max-1
 * bytes. 0, or -1. */
static int jstr(jcur_t *c, char *out, size_t max) {
  size_t n = 0;
  if (!jlit(c, '"'))
    return -1;
  while (c->p < c->end && *c->p != '"') {
    unsigned char ch = (unsigned char)*c->p;
    if (ch < 0x20 || ch == '\\' || n + 1 >= max)
      return -1;
    out[n++] = (char)ch;
    c->p++;
  }
  if (c->p >= c->end)
    return -1;
  c->p++;
  out[n] = '\0';
  return 0;
}

static int jnum(jcur_t *c, uint64_t *out) {
  uint64_t v = 0;
  int digits = 0;
  jws(c);
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    if (v > (UINT64_MAX - 9) / 10 || (digits == 1 && v == 0))
      return -1; /* too large, or a leading zero */
    v = v * 10 + (uint64_t)(*c->p - '0');
    digits++;
    c->p++;
  }
  *out = v;
  return digits ? 0 : -1;
}

/* An unknown key's value: a later gateway may add scalars; nothing nested is accepted. */
static int jskip_scalar(jcur_t *c) {
  char tmp[256];
  uint64_t n;
  static const char *const words[] = {"true", "false", "null"};
  jws(c);
  if (c->p < c->end && *c->p == '"')
    return jstr(c, tmp, sizeof tmp);
  if (c->p < c->end && *c->p >= '0' && *c->p <= '9')
    return jnum(c, &n);
  for (size_t i = 0; i < 3; i++) {
    size_t l = strlen(words[i]);
    if ((size_t)(c->end - c->p) >= l && memcmp(c->p, words[i], l) == 0) {
      c->p += l;
      return 0;
    }
  }
  return -1;
}

int cr__agent_announce_parse(const char *body, size_t len, cr__agent_announce_t *out, char *why, size_t whylen) {
  jcur_t c = {body, body + len};
  char key[32];
  int seen_replica = 0, seen_set = 0, seen_gen = 0, seen_inst = 0;
  memset(out, 0, sizeof *out);
  if (len > CR__AGENT_ANNOUNCE_MAX) {
    snprintf(why, whylen, "announcement larger than %d bytes", CR__AGENT_ANNOUNCE_MAX);
    return -1;
  }
  if (!jlit(&c, '{'))
    goto bad;
  if (!jlit(&c, '}')) {
    do {
      if (jstr(&c, key, sizeof key) < 0 || !jlit(&c, ':'))
        goto bad;
      if (strcmp(key, "replica") == 0) {
        if (seen_replica++ || jstr(&c, out->replica, sizeof out->replica) < 0)
          goto bad;
      } else if (strcmp(key, "instance") == 0) {
        if (seen_inst++ || jstr(&c, out->instance, sizeof out->instance) < 0)
          goto bad;
      } else if (strcmp(key, "generation") == 0) {
        if (seen_gen++ || jnum(&c, &out->generation) < 0)
          goto bad;
      } else if (strcmp(key, "set") == 0) {
        if (seen_set++ || !jlit(&c, '['))
          goto bad;
        if (!jlit(&c, ']')) {
          do {
            if (out->nset == CR_CONF_REPLICAS_MAX) {
              snprintf(why, whylen, "more than %d replicas in the set", CR_CONF_REPLICAS_MAX);
              return -1;
            }
            if (jstr(&c, out->set[out->nset], sizeof out->set[0]) < 0)
              goto bad;
            out->nset++;
          } while (jlit(&c, ','));
          if (!jlit(&c, ']'))
            goto bad;
        }
      } else if (jskip_scalar(&c) < 0) {
        goto bad;
      }
    } while (jlit(&c, ','));
    if (!jlit(&c, '}'))
      goto bad;
  }
  jws(&c);
  if (c.p != c.end)
    goto bad;
  if (!seen_replica || !seen_set || !seen_gen) {
    snprintf(why, whylen, "replica, generation and set are required");
    return -1;
  }
  if (!cr_conf_replica_id_ok(out->replica, strlen(out->replica))) {
    snprintf(why, whylen, "bad replica id");
    return -1;
  }
  for (size_t i = 0; i < out->nset; i++) {
    if (!cr_conf_replica_id_ok(out->set[i], strlen(out->set[i]))) {
      snprintf(why, whylen, "bad replica id in set[%zu]", i);
      return -1;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(out->set[i], out->set[j]) == 0) {
        snprintf(why, whylen, "duplicate replica id '%s' in the set", out->set[i]);
        return -1;
      }
  }
  return 0;
bad:
  snprintf(why, whylen, "not the announcement's JSON at byte %zu (an object of strings, an integer "
                        "generation and a set array of ids)", (size_t)(c.p - body));
  return -1;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration schemas: the agent's and the gateway's keys, read into the plain structs of
 * config.h with the typed readers of config_read.c. */
#include "ccrelay/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/fileio.h"
#include "config_internal.h"

/* ---------------------------------------------------------------- agent */

static const char *const agent_keys[] = {"log",         "gateway",    "routes",
                                         "limits",      "drain_timeout", "trust_store",
                                         "revocation",  "expiry_warning", "admin",
                                         "remote_trust", "tcp_routes"};
static const char *const tcp_route_keys[] = {"name", "host", "connect", "connect_timeout", "idle_timeout"};
static const range_t r_tcp_idle = {5 * 60 * MS_PER_S, 1, 24 * MS_PER_H};
static const char *const agent_admin_keys[] = {"listen"};
/* In cr_conf_revocation_t order. */
static const char *const revocation_names[] = {"off", "soft", "hard"};
static const char *const agent_only_keys[] = {"routes", "tcp_routes"};
static const char *const agent_gw_keys[] = {"address",       "server_name",  "ca",
                                            "identity",      "connections",  "connect_timeout",
                                            "ping_interval", "ping_timeout", "reconnect_min",
                                            "reconnect_max", "proxy", "dial_timeout"};
static const char *const route_keys[] = {"name", "match", "upstream", "soap", "revocation", "limits"};
static const char *const route_limits_keys[] = {"max_body"};
static const char *const match_keys[] = {"host", "path_prefix", "methods", "header", "soap_action"};
static const char *const header_keys[] = {"name", "value"};
static const char *const upstream_keys[] = {"url",          "server_name",     "ca",
                                            "identity",     "connect_timeout", "response_timeout",
                                            "idle_timeout", "max_idle",        "plain_http",
                                            "tls"};
static const char *const upstream_tls_keys[] = {"min_version", "max_version", "security_level", "ciphers", "curves"};
/* In wire order from 0x0301: upstream.tls.min_version/max_version. */
static const char *const tls_version_names[] = {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"};
static const char *const limits_keys[] = {"max_header_size", "max_header_fields", "send_timeout", "min_send_rate"};

static const range_t r_connect = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_dial = {3 * MS_PER_S, 1, MS_PER_H};
static const range_t r_ping_interval = {15 * MS_PER_S, 100, MS_PER_H};
static const range_t r_ping_timeout = {10 * MS_PER_S, 100, MS_PER_H};
static const range_t r_reconnect_min = {250, 1, MS_PER_H};
static const range_t r_reconnect_max = {30 * MS_PER_S, 1, MS_PER_H};
static const range_t r_up_connect = {5 * MS_PER_S, 1, MS_PER_H};
static const range_t r_up_response = {30 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_up_idle = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_header_size = {16 * 1024, 1024, 1024 * 1024};
static const range_t r_drain = {10 * MS_PER_S, 0, MS_PER_H};
static const range_t r_handshake = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_header_timeout = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_pub_idle = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_request = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_expiry_warning = {30 * MS_PER_D, 0, 3650 * MS_PER_D};
/* 0s turns the send timeout off; a rate of 0 asks only for some progress in each send_timeout. */
static const range_t r_send_timeout = {30 * MS_PER_S, 0, MS_PER_H};
static const range_t r_min_send_rate = {0, 0, 1024 * 1024 * 1024};
static const range_t r_max_body = {CR_CONF_MAX_BODY_DEFAULT, 0, UINT64_C(1) << 40};

/* One gateway.address entry: host:port, host a name or an IP literal. */
static int load_addr(ctx_t *c, const node_t *v, const char *kp, cr_conf_addr_t *out) {
  const char *why;
  char tmp[80];
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  if ((why = cr__conf_split_hostport(v->str, v->len, 1, &out->host, &out->port)) != NULL) {
    free(out->host);
    out->host = NULL;
    return cr__conf_fail(c, v->pos, kp, "bad address '%s': %s", cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)),
                why);
  }
  out->pos = v->pos;
  return 0;
}

static int load_agent_gateway(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *m, *v;
  const char *p = "gateway";
  char kp[PATH_LEN], ep[PATH_LEN];
  cr_conf_pos_t min_pos = {0, 0}, max_pos = {0, 0};

  if (cr__conf_get_map(c, root, "", "gateway", REQ, agent_gw_keys, CR_ARRAY_SIZE(agent_gw_keys), &m) != 0)
    return CR_ECONFIG;
  v = cr__conf_map_get(m, "address");
  if (v == NULL)
    return cr__conf_missing(c, m, p, "address");
  cr__conf_join(kp, p, "address");
  if (v->kind == N_SEQ) {
    /* Several addresses: replicas reached without a load balancer, or several load balancers. */
    if (v->n == 0 || v->n > CR_CONF_ADDRS_MAX)
      return cr__conf_fail(c, v->pos, kp, "a list of 1 to %d host:port entries is needed, got %zu",
                           CR_CONF_ADDRS_MAX, v->n);
    a->gateway.addrs = cr_calloc(v->n, sizeof *a->gateway.addrs);
    for (size_t i = 0; i < v->n; i++) {
      cr__conf_join_index(ep, kp, i);
      if (load_addr(c, v->items[i], ep, &a->gateway.addrs[i]) != 0)
        return CR_ECONFIG;
      a->gateway.naddrs++;
      for (size_t j = 0; j < i; j++)
        if (strcasecmp(a->gateway.addrs[j].host, a->gateway.addrs[i].host) == 0 &&
            a->gateway.addrs[j].port == a->gateway.addrs[i].port)
          return cr__conf_fail(c, v->items[i]->pos, ep, "duplicate address (%s[%zu] at %d:%d has it)", kp, j,
                               a->gateway.addrs[j].pos.line, a->gateway.addrs[j].pos.col);
    }
  } else {
    a->gateway.addrs = cr_calloc(1, sizeof *a->gateway.addrs);
    if (load_addr(c, v, kp, &a->gateway.addrs[0]) != 0)
      return CR_ECONFIG;
    a->gateway.naddrs = 1;
  }
  a->gateway.host = cr_strdup(a->gateway.addrs[0].host);
  a->gateway.port = a->gateway.addrs[0].port;
  a->gateway.pos = a->gateway.addrs[0].pos;
  if (cr__conf_get_host(c, m, p, "server_name", OPT, &a->gateway.server_name) != 0 ||
      cr__conf_get_file(c, m, p, "ca", REQ, &a->gateway.ca) != 0 ||
      cr__conf_get_identity(c, m, p, "identity", &a->gateway.identity) != 0 ||
      cr__conf_get_uint(c, m, p, "connections", 2, 1, 64, &a->gateway.connections) != 0 ||
      cr__conf_get_duration(c, m, p, "connect_timeout", r_connect, &a->gateway.connect_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "dial_timeout", r_dial, &a->gateway.dial_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "ping_interval", r_ping_interval, &a->gateway.ping_interval_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "ping_timeout", r_ping_timeout, &a->gateway.ping_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "reconnect_min", r_reconnect_min, &a->gateway.reconnect_min_ms,
                   &min_pos) ||
      cr__conf_get_duration(c, m, p, "reconnect_max", r_reconnect_max, &a->gateway.reconnect_max_ms,
                   &max_pos))
    return CR_ECONFIG;
  if (a->gateway.reconnect_min_ms > a->gateway.reconnect_max_ms)
    return cr__conf_fail(c, max_pos.line ? max_pos : min_pos,
                cr__conf_join(kp, p, max_pos.line ? "reconnect_max" : "reconnect_min"),
                "reconnect_min must not exceed reconnect_max");
  if (a->gateway.server_name == NULL && a->gateway.naddrs == 1)
    a->gateway.server_name = cr_strdup(a->gateway.host);
  return cr__conf_get_proxy(c, m, p, a->gateway.host, &a->gateway.proxy);
}

static int load_match(ctx_t *c, const node_t *route, const char *rp, cr_conf_route_t *r) {
  const node_t *m, *methods, *h;
  char mp[PATH_LEN], kp[PATH_LEN], ep[PATH_LEN];
  size_t i;

  if (cr__conf_get_map(c, route, rp, "match", OPT, match_keys, CR_ARRAY_SIZE(match_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  cr__conf_join(mp, rp, "match");
  if (cr__conf_get_host(c, m, mp, "host", OPT, &r->match_host) != 0 ||
      cr__conf_get_prefix(c, m, mp, "path_prefix", &r->match_path_prefix) != 0 ||
      cr__conf_get_list(c, m, mp, "methods", OPT, &methods) != 0)
    return CR_ECONFIG;
  if (methods != NULL) {
    cr__conf_join(kp, mp, "methods");
    r->match_methods = cr_calloc(methods->n, sizeof(char *));
    for (i = 0; i < methods->n; i++) {
      const node_t *e = methods->items[i];
      char *s;
      cr__conf_join_index(ep, kp, i);
      if (cr__conf_scalar_str(c, e, ep, REQ) != 0)
        return CR_ECONFIG;
      for (s = e->str; *s; s++)
        if (!isalpha((unsigned char)*s))
          return cr__conf_fail(c, e->pos, ep, "not an HTTP method name");
      s = r->match_methods[r->nmatch_methods++] = cr_strdup(e->str);
      for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
    }
  }
  if (cr__conf_get_map(c, m, mp, "header", OPT, header_keys, CR_ARRAY_SIZE(header_keys), &h) != 0)
    return CR_ECONFIG;
  if (h != NULL) {
    cr_conf_pos_t pos;
    const char *s;
    cr__conf_join(kp, mp, "header");
    if (cr__conf_get_str(c, h, kp, "name", REQ, &r->match_header_name, &pos) != 0)
      return CR_ECONFIG;
    for (s = r->match_header_name; *s; s++)
      if (!cr__conf_is_token_char((unsigned char)*s))
        return cr__conf_fail(c, pos, cr__conf_join(ep, kp, "name"), "not a valid header name");
    if (cr__conf_get_str(c, h, kp, "value", REQ | EMPTY_OK, &r->match_header_value, &pos) != 0)
      return CR_ECONFIG;
    for (s = r->match_header_value; *s; s++)
      if ((unsigned char)*s < 0x20 && *s != '\t')
        return cr__conf_fail(c, pos, cr__conf_join(ep, kp, "value"), "must not contain control characters");
  }
  {
    cr_conf_pos_t pos;
    char *a;
    size_t n;
    if (cr__conf_get_str(c, m, mp, "soap_action", OPT | EMPTY_OK, &r->match_soap_action, &pos) != 0)
      return CR_ECONFIG;
    a = r->match_soap_action;
    if (a != NULL) {
      /* Written as the SOAPAction header shows it ("\"urn:x\""), it means the action inside. */
      n = strlen(a);
      if (n >= 2 && a[0] == '"' && a[n - 1] == '"') {
        memmove(a, a + 1, n - 2);
        a[n - 2] = '\0';
      }
      for (; *a; a++)
        if ((unsigned char)*a < 0x20 || *a == 0x7f)
          return cr__conf_fail(c, pos, cr__conf_join(ep, mp, "soap_action"), "must not contain control characters");
    }
  }
  return 0;
}

/* upstream.tls: names as OpenSSL spells them; whether OpenSSL accepts a cipher list or the curves is
 * its own parser's to say (the agent's route check, which `check` runs too). */
static int load_upstream_tls(ctx_t *c, const node_t *up_map, const char *up, cr_conf_route_t *r) {
  const node_t *m, *v;
  char tp[PATH_LEN], kp[PATH_LEN];
  unsigned level;
  int vmin, vmax;

  if (cr__conf_get_map(c, up_map, up, "tls", OPT, upstream_tls_keys, CR_ARRAY_SIZE(upstream_tls_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  cr__conf_join(tp, up, "tls");
  r->tls.pos = m->pos;
  if (cr__conf_get_enum(c, m, tp, "min_version", tls_version_names, CR_ARRAY_SIZE(tls_version_names), -1, &vmin) ||
      cr__conf_get_enum(c, m, tp, "max_version", tls_version_names, CR_ARRAY_SIZE(tls_version_names), -1, &vmax) ||
      cr__conf_get_uint(c, m, tp, "security_level", 0, 0, 5, &level) != 0 ||
      cr__conf_get_str(c, m, tp, "ciphers", OPT, &r->tls.ciphers, &r->tls.ciphers_pos) != 0 ||
      cr__conf_get_str(c, m, tp, "curves", OPT, &r->tls.curves, &r->tls.curves_pos) != 0)
    return CR_ECONFIG;
  r->tls.min_version = vmin >= 0 ? 0x0301 + vmin : 0;
  r->tls.max_version = vmax >= 0 ? 0x0301 + vmax : 0;
  if ((v = cr__conf_map_get(m, "min_version")) != NULL)
    r->tls.min_pos = v->pos;
  if ((v = cr__conf_map_get(m, "max_version")) != NULL)
    r->tls.max_pos = v->pos;
  if ((v = cr__conf_map_get(m, "security_level")) != NULL) {
    r->tls.level_pos = v->pos;
    r->tls.security_level = (int)level;
  }
  if (r->tls.max_version && r->tls.max_version < (r->tls.min_version ? r->tls.min_version : 0x0303))
    return cr__conf_fail(c, r->tls.max_pos, cr__conf_join(kp, tp, "max_version"),
                         "%s is below min_version (%s)", tls_version_names[r->tls.max_version - 0x0301],
                         r->tls.min_version ? tls_version_names[r->tls.min_version - 0x0301] : "TLSv1.2 by default");
  return 0;
}

static int load_upstream(ctx_t *c, const node_t *route, const char *rp, cr_conf_route_t *r) {
  const node_t *m, *v, *pv;
  char up[PATH_LEN], kp[PATH_LEN], tmp[80];
  const char *why;
  int plain;

  if (cr__conf_get_map(c, route, rp, "upstream", REQ, upstream_keys, CR_ARRAY_SIZE(upstream_keys), &m) != 0)
    return CR_ECONFIG;
  cr__conf_join(up, rp, "upstream");
  v = cr__conf_map_get(m, "url");
  if (v == NULL)
    return cr__conf_missing(c, m, up, "url");
  cr__conf_join(kp, up, "url");
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  why = cr__conf_parse_url(v->str, v->len, &r->upstream_host, &r->upstream_port, &r->upstream_base_path, &plain);
  if (why != NULL)
    return cr__conf_fail(c, v->pos, kp, "bad URL '%s': %s", cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)), why);
  r->upstream_url = cr_strdup(v->str);
  if (cr__conf_get_bool(c, m, up, "plain_http", 0, &r->plain_http) != 0)
    return CR_ECONFIG;
  pv = cr__conf_map_get(m, "plain_http");
  if (plain && !r->plain_http)
    return cr__conf_fail(c, v->pos, kp,
                         "an http:// upstream is plain HTTP: nothing to or from it is encrypted or authenticated; "
                         "use https://, or set plain_http: true on this upstream to allow it (e.g. SCEP, NDES)");
  if (!plain && r->plain_http)
    return cr__conf_fail(c, pv->pos, cr__conf_join(kp, up, "plain_http"),
                         "plain_http: true needs an http:// url (this one is https://)");
  if (r->plain_http) {
    static const char *const tls_only[] = {"identity", "ca", "tls"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(tls_only); i++)
      if ((pv = cr__conf_map_get(m, tls_only[i])) != NULL)
        return cr__conf_fail(c, pv->pos, cr__conf_join(kp, up, tls_only[i]),
                             "a plain_http upstream has no TLS, so no %s; remove it", tls_only[i]);
  }
  r->tls.security_level = -1;
  if (cr__conf_get_host(c, m, up, "server_name", OPT, &r->server_name) != 0 ||
      cr__conf_get_file(c, m, up, "ca", OPT, &r->ca) != 0 ||
      (!r->plain_http && cr__conf_get_identity(c, m, up, "identity", &r->identity) != 0) ||
      load_upstream_tls(c, m, up, r) != 0 ||
      cr__conf_get_duration(c, m, up, "connect_timeout", r_up_connect, &r->connect_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, up, "response_timeout", r_up_response, &r->response_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, up, "idle_timeout", r_up_idle, &r->idle_timeout_ms, NULL) ||
      cr__conf_get_uint(c, m, up, "max_idle", 64, 0, 1024, &r->max_idle) != 0)
    return CR_ECONFIG;
  if (r->server_name == NULL)
    r->server_name = cr_strdup(r->upstream_host);
  return 0;
}

static int load_tcp_routes(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *list;
  char rp[PATH_LEN], kp[PATH_LEN];
  size_t i, j;

  if (cr__conf_get_list(c, root, "", "tcp_routes", OPT, &list) != 0)
    return CR_ECONFIG;
  if (list == NULL)
    return 0;
  a->tcp_routes = cr_calloc(list->n ? list->n : 1, sizeof(*a->tcp_routes));
  a->ntcp_routes = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_tcp_route_t *r = &a->tcp_routes[i];
    cr_conf_pos_t name_pos = {0, 0};
    cr_conf_addr_t addr = {0};
    const node_t *v;
    cr__conf_join_index(rp, "tcp_routes", i);
    if (cr__conf_map_check(c, m, rp, tcp_route_keys, CR_ARRAY_SIZE(tcp_route_keys)) != 0)
      return CR_ECONFIG;
    r->pos = m->pos;
    if (cr__conf_get_name(c, m, rp, &r->name, &name_pos) != 0 ||
        cr__conf_get_host(c, m, rp, "host", REQ, &r->host) != 0 ||
        cr__conf_get_duration(c, m, rp, "connect_timeout", r_up_connect, &r->connect_timeout_ms, NULL) ||
        cr__conf_get_duration(c, m, rp, "idle_timeout", r_tcp_idle, &r->idle_timeout_ms, NULL))
      return CR_ECONFIG;
    if ((v = cr__conf_map_get(m, "connect")) == NULL)
      return cr__conf_missing(c, m, rp, "connect");
    if (load_addr(c, v, cr__conf_join(kp, rp, "connect"), &addr) != 0)
      return CR_ECONFIG;
    r->connect_host = addr.host;
    r->connect_port = addr.port;
    for (j = 0; j < a->nroutes; j++)
      if (strcmp(a->routes[j].name, r->name) == 0)
        return cr__conf_fail(c, name_pos, cr__conf_join(kp, rp, "name"), "duplicate route name '%s' (routes[%zu] has it)",
                             r->name, j);
    for (j = 0; j < i; j++) {
      if (strcmp(a->tcp_routes[j].name, r->name) == 0)
        return cr__conf_fail(c, name_pos, cr__conf_join(kp, rp, "name"),
                             "duplicate route name '%s' (tcp_routes[%zu] has it)", r->name, j);
      if (strcasecmp(a->tcp_routes[j].host, r->host) == 0)
        return cr__conf_fail(c, r->pos, rp, "duplicate host '%s' (tcp_routes[%zu] has it)", r->host, j);
    }
  }
  return 0;
}

static int load_routes(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *list;
  char rp[PATH_LEN];
  size_t i, j;

  if (cr__conf_get_list(c, root, "", "routes", REQ, &list) != 0)
    return CR_ECONFIG;
  a->routes = cr_calloc(list->n, sizeof(*a->routes));
  a->nroutes = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_route_t *r = &a->routes[i];
    cr_conf_pos_t name_pos = {0, 0};
    int rev;
    cr__conf_join_index(rp, "routes", i);
    if (cr__conf_map_check(c, m, rp, route_keys, CR_ARRAY_SIZE(route_keys)) != 0)
      return CR_ECONFIG;
    r->pos = m->pos;
    if (cr__conf_get_name(c, m, rp, &r->name, &name_pos) != 0)
      return CR_ECONFIG;
    for (j = 0; j < i; j++)
      if (strcmp(a->routes[j].name, r->name) == 0) {
        char kp[PATH_LEN];
        return cr__conf_fail(c, name_pos, cr__conf_join(kp, rp, "name"),
                    "duplicate route name '%s' (routes[%zu] at %d:%d has it)", r->name, j,
                    a->routes[j].pos.line, a->routes[j].pos.col);
      }
    const node_t *lim;
    char lp[PATH_LEN];
    if (load_match(c, m, rp, r) != 0 || load_upstream(c, m, rp, r) != 0 ||
        cr__conf_get_map(c, m, rp, "limits", OPT, route_limits_keys, CR_ARRAY_SIZE(route_limits_keys), &lim) != 0 ||
        cr__conf_get_size(c, lim, cr__conf_join(lp, rp, "limits"), "max_body", r_max_body, &r->max_body) != 0 ||
        cr__conf_get_bool(c, m, rp, "soap", 0, &r->soap) != 0 ||
        cr__conf_get_enum(c, m, rp, "revocation", revocation_names, CR_ARRAY_SIZE(revocation_names), -1,
                 &rev) != 0)
      return CR_ECONFIG;
    /* The global value is filled in once it is known (load_agent). */
    r->revocation_set = rev >= 0;
    r->revocation = rev >= 0 ? (cr_conf_revocation_t)rev : CR_REVOCATION_OFF;
  }
  return 0;
}

static int load_agent(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  static const char *const gateway_only[] = {"tunnel", "public", "groups", "services"};
  const node_t *lim, *adm;
  int rev;
  size_t i;

  a->trust_store = cr_strdup(CR_CONF_TRUST_STORE_DEFAULT);
  if (cr__conf_root_check(c, root, agent_keys, CR_ARRAY_SIZE(agent_keys), gateway_only,
                 CR_ARRAY_SIZE(gateway_only), "a gateway") != 0 ||
      cr__conf_load_log(c, root, &a->log) != 0 || load_agent_gateway(c, root, a) != 0 ||
      load_routes(c, root, a) != 0 || load_tcp_routes(c, root, a) != 0 ||
      cr__conf_get_dir(c, root, "", "trust_store", &a->trust_store, &a->trust_store_pos) != 0 ||
      cr__conf_get_map(c, root, "", "limits", OPT, limits_keys, CR_ARRAY_SIZE(limits_keys), &lim) != 0 ||
      cr__conf_get_size(c, lim, "limits", "max_header_size", r_header_size, &a->max_header_size) != 0 ||
      cr__conf_get_uint(c, lim, "limits", "max_header_fields", CR_CONF_HEADER_FIELDS_DEFAULT,
                        CR_CONF_HEADER_FIELDS_MIN, CR_CONF_HEADER_FIELDS_MAX, &a->max_header_fields) != 0 ||
      cr__conf_get_duration(c, lim, "limits", "send_timeout", r_send_timeout, &a->send_timeout_ms, NULL) != 0 ||
      cr__conf_get_size(c, lim, "limits", "min_send_rate", r_min_send_rate, &a->min_send_rate) != 0 ||
      cr__conf_get_duration(c, root, "", "drain_timeout", r_drain, &a->drain_timeout_ms, NULL) != 0 ||
      cr__conf_get_enum(c, root, "", "revocation", revocation_names, CR_ARRAY_SIZE(revocation_names),
               CR_REVOCATION_OFF, &rev) != 0 ||
      cr__conf_get_duration(c, root, "", "expiry_warning", r_expiry_warning, &a->expiry_warning_ms, NULL) ||
      cr__conf_get_map(c, root, "", "admin", OPT, agent_admin_keys, CR_ARRAY_SIZE(agent_admin_keys),
              &adm) != 0 ||
      (adm != NULL && cr__conf_get_listen(c, adm, "admin", "listen", &a->admin_listen) != 0) ||
      cr__conf_get_bool(c, root, "", "remote_trust", 0, &a->remote_trust) != 0)
    return CR_ECONFIG;
  a->revocation = (cr_conf_revocation_t)rev;
  for (i = 0; i < a->nroutes; i++)
    if (!a->routes[i].revocation_set)
      a->routes[i].revocation = a->revocation;
  return 0;
}

static void identity_free(cr_conf_identity_t *id) {
  free(id->pkcs12.path);
  free(id->cert.path);
  free(id->key.path);
  if (id->password != NULL) {
    cr_wipe(id->password, strlen(id->password));
    free(id->password);
  }
}

void cr_conf_agent_free(cr_conf_agent_t *a) {
  size_t i, j;

  if (a == NULL)
    return;
  free(a->path);
  free(a->trust_store);
  free(a->admin_listen.host);
  free(a->gateway.host);
  for (i = 0; i < a->gateway.naddrs; i++)
    free(a->gateway.addrs[i].host);
  free(a->gateway.addrs);
  free(a->gateway.server_name);
  free(a->gateway.ca.path);
  identity_free(&a->gateway.identity);
  cr__conf_proxy_free(&a->gateway.proxy);
  for (i = 0; i < a->nroutes; i++) {
    cr_conf_route_t *r = &a->routes[i];
    free(r->name);
    free(r->match_host);
    free(r->match_path_prefix);
    for (j = 0; j < r->nmatch_methods; j++)
      free(r->match_methods[j]);
    free(r->match_methods);
    free(r->match_header_name);
    free(r->match_header_value);
    free(r->match_soap_action);
    free(r->upstream_url);
    free(r->upstream_host);
    free(r->upstream_base_path);
    free(r->server_name);
    free(r->ca.path);
    identity_free(&r->identity);
    free(r->tls.ciphers);
    free(r->tls.curves);
  }
  free(a->routes);
  for (i = 0; i < a->ntcp_routes; i++) {
    free(a->tcp_routes[i].name);
    free(a->tcp_routes[i].host);
    free(a->tcp_routes[i].connect_host);
  }
  free(a->tcp_routes);
  memset(a, 0, sizeof(*a));
}




/* ---------------------------------------------------------------- gateway */

static const char *const gateway_keys[] = {"log",      "tunnel",        "public", "groups",
                                           "services", "drain_timeout", "admin",  "replicas",
                                           "probe"};
static const char *const replicas_keys[] = {"id", "set", "dns", "refresh"};
static const char *const probe_keys[] = {"listen"};
static const range_t r_refresh = {10 * MS_PER_S, MS_PER_S, MS_PER_H};
static const char *const gateway_admin_keys[] = {"listen", "token_file"};
static const char *const tunnel_keys[] = {"listen",        "identity",     "client_ca",
                                          "handshake_timeout", "ping_interval", "ping_timeout",
                                          "crl",           "revocation",   "max_handshakes", "max_per_source"};
static const char *const public_keys[] = {"listen",          "identity",     "client_ca",
                                          "header_timeout",  "idle_timeout", "request_timeout",
                                          "max_header_size", "max_header_fields", "max_connections",
                                          "send_timeout", "min_send_rate", "crl", "revocation", "tls",
                                          "trusted_proxies", "max_handshakes", "max_per_source"};
static const char *const public_tls_keys[] = {"ciphers", "min_version"};
static const char *const public_tls_version_names[] = {"TLSv1.2", "TLSv1.3"};

/* crl and revocation of a listener with client_ca. Without client_ca there is no client certificate
 * to check, so either key is a mistake. */
static int load_revocation(ctx_t *c, const node_t *m, const char *p, const cr_conf_file_t *client_ca,
                           cr_conf_file_t *crl, cr_conf_revocation_t *rev, int *rev_set, cr_conf_pos_t *rev_pos) {
  const node_t *v = cr__conf_map_get(m, "revocation");
  char kp[PATH_LEN], cp[PATH_LEN];
  int r;
  if (cr__conf_get_file(c, m, p, "crl", OPT, crl) != 0 ||
      cr__conf_get_enum(c, m, p, "revocation", revocation_names, CR_ARRAY_SIZE(revocation_names), -1, &r) != 0)
    return CR_ECONFIG;
  *rev_set = r >= 0;
  *rev = r >= 0 ? (cr_conf_revocation_t)r : crl->path ? CR_REVOCATION_HARD : CR_REVOCATION_OFF;
  *rev_pos = v ? v->pos : crl->pos;
  if (client_ca->path == NULL && (crl->path || (*rev_set && *rev != CR_REVOCATION_OFF)))
    return cr__conf_fail(c, crl->path ? crl->pos : *rev_pos, cr__conf_join(kp, p, crl->path ? "crl" : "revocation"),
                         "checks client certificates, but %s is not set: no client certificate is asked for",
                         cr__conf_join(cp, p, "client_ca"));
  return 0;
}

/* public.tls: the TLS 1.2 suites and the lowest version. The list's syntax is checked here; whether
 * OpenSSL knows its names is for cr_tls_cipher_list_check (`check` and start). */
static int load_public_tls(ctx_t *c, const node_t *pub, cr_conf_gateway_t *g) {
  const node_t *m, *v;
  const char *p = "public.tls";
  char kp[PATH_LEN], tmp[80];
  int ver;
  g->public_.tls_min_version = 12;
  if (cr__conf_get_map(c, pub, "public", "tls", OPT, public_tls_keys, CR_ARRAY_SIZE(public_tls_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  if (cr__conf_get_enum(c, m, p, "min_version", public_tls_version_names, CR_ARRAY_SIZE(public_tls_version_names), 0, &ver) != 0)
    return CR_ECONFIG;
  g->public_.tls_min_version = ver == 1 ? 13 : 12;
  if ((v = cr__conf_map_get(m, "ciphers")) == NULL)
    return 0;
  cr__conf_join(kp, p, "ciphers");
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  if (v->len > 1024)
    return cr__conf_fail(c, v->pos, kp, "longer than 1024 characters");
  for (size_t i = 0; i < v->len; i++) {
    unsigned char ch = (unsigned char)v->str[i];
    if (!isalnum(ch) && strchr("!+-:,@=._ ", ch) == NULL)
      return cr__conf_fail(c, v->pos, kp, "'%s' is not an OpenSSL cipher list (character %zu)",
                           cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)), i + 1);
  }
  g->public_.tls_ciphers = cr_strdup(v->str);
  g->public_.tls_ciphers_pos = v->pos;
  return 0;
}
static const char *const group_keys[] = {"name", "agents"};
static const char *const service_keys[] = {"host", "path_prefix", "group", "callers", "limits", "mode"};
static const char *const service_modes[] = {"http", "passthrough"};
static const char *const callers_keys[] = {"client_ca", "subjects", "token_files", "sources"};
static const char *const service_limits_keys[] = {"max_body", "max_concurrent"};

/* ---- address ranges */

int cr_conf_parse_cidr(const char *s, cr_conf_cidr_t *out, const char **why) {
  char addr[INET6_ADDRSTRLEN + 1];
  const char *slash = strchr(s, '/');
  size_t alen = slash ? (size_t)(slash - s) : strlen(s);
  unsigned max, prefix, i;
  memset(out, 0, sizeof *out);
  *why = NULL;
  if (alen == 0 || alen >= sizeof addr) {
    *why = "expected an IPv4 or IPv6 address, optionally with /PREFIX";
    return CR_ECONFIG;
  }
  memcpy(addr, s, alen);
  addr[alen] = '\0';
  if (inet_pton(AF_INET, addr, out->addr) == 1) {
    out->family = 4;
    max = 32;
  } else if (inet_pton(AF_INET6, addr, out->addr) == 1) {
    out->family = 6;
    max = 128;
  } else {
    *why = "not an IPv4 or IPv6 address";
    return CR_ECONFIG;
  }
  prefix = max;
  if (slash != NULL) {
    const char *p = slash + 1;
    if (*p == '\0' || strlen(p) > 3) {
      *why = "the prefix length must be a number";
      return CR_ECONFIG;
    }
    for (prefix = 0; *p; p++) {
      if (!isdigit((unsigned char)*p)) {
        *why = "the prefix length must be a number";
        return CR_ECONFIG;
      }
      prefix = prefix * 10 + (unsigned)(*p - '0');
    }
    if (prefix > max) {
      *why = max == 32 ? "an IPv4 prefix length is at most 32" : "an IPv6 prefix length is at most 128";
      return CR_ECONFIG;
    }
  }
  for (i = prefix; i < max; i++)
    if (out->addr[i / 8] & (0x80 >> (i % 8))) {
      *why = "host bits are set after the prefix length (did you mean the network address?)";
      return CR_ECONFIG;
    }
  out->prefix = prefix;
  return 0;
}

int cr_conf_cidr_match(const cr_conf_cidr_t *list, size_t n, const char *ip) {
  unsigned char a[16];
  int family;
  if (inet_pton(AF_INET, ip, a) == 1)
    family = 4;
  else if (inet_pton(AF_INET6, ip, a) == 1)
    family = 6;
  else
    return 0;
  /* An IPv4 caller on a dual-stack listener shows as ::ffff:a.b.c.d: it matches IPv4 ranges. */
  if (family == 6 && memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
    memmove(a, a + 12, 4);
    family = 4;
  }
  for (size_t k = 0; k < n; k++) {
    const cr_conf_cidr_t *c = &list[k];
    unsigned full = c->prefix / 8, rest = c->prefix % 8;
    if (c->family != family || memcmp(a, c->addr, full) != 0)
      continue;
    if (rest == 0 || ((a[full] ^ c->addr[full]) & (0xff << (8 - rest)) & 0xff) == 0)
      return 1;
  }
  return 0;
}

/* A list of CIDRs (EMPTY_OK: [] is allowed) into *out. */
static int get_cidrs(ctx_t *c, const node_t *m, const char *path, const char *key, cr_conf_cidr_t **out, size_t *n) {
  const node_t *list;
  char kp[PATH_LEN], ep[PATH_LEN], tmp[80];
  if (cr__conf_get_list(c, m, path, key, OPT | EMPTY_OK, &list) != 0)
    return CR_ECONFIG;
  if (list == NULL)
    return 0;
  cr__conf_join(kp, path, key);
  *out = cr_calloc(list->n ? list->n : 1, sizeof **out);
  for (size_t i = 0; i < list->n; i++) {
    const node_t *e = list->items[i];
    const char *why;
    cr__conf_join_index(ep, kp, i);
    if (cr__conf_scalar_str(c, e, ep, REQ) != 0)
      return CR_ECONFIG;
    if (cr_conf_parse_cidr(e->str, &(*out)[i], &why) != 0)
      return cr__conf_fail(c, e->pos, ep, "bad address range '%s': %s", cr__conf_sanitize(e->str, e->len, tmp, sizeof tmp),
                           why);
    (*n)++;
  }
  return 0;
}

/* ---- callers */

static int parse_subject(ctx_t *c, const node_t *e, const char *ep, cr_conf_subject_t *out) {
  static const struct {
    const char *prefix;
    cr_conf_subject_kind_t kind;
  } kinds[] = {{"cn:", CR_SUBJECT_CN}, {"dns:", CR_SUBJECT_DNS}, {"uri:", CR_SUBJECT_URI}};
  char tmp[80];
  const char *v = NULL, *star;
  size_t i, n;
  for (i = 0; i < CR_ARRAY_SIZE(kinds); i++)
    if (strncasecmp(e->str, kinds[i].prefix, strlen(kinds[i].prefix)) == 0) {
      v = e->str + strlen(kinds[i].prefix);
      out->kind = kinds[i].kind;
      break;
    }
  if (v == NULL)
    return cr__conf_fail(c, e->pos, ep, "'%s' names no kind: write cn:NAME, dns:NAME or uri:URI",
                         cr__conf_sanitize(e->str, e->len, tmp, sizeof tmp));
  n = strlen(v);
  if (n == 0)
    return cr__conf_fail(c, e->pos, ep, "nothing after '%.4s'", e->str);
  for (i = 0; i < n; i++)
    if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
      return cr__conf_fail(c, e->pos, ep, "must not contain control characters");
  star = strchr(v, '*');
  switch (out->kind) {
  case CR_SUBJECT_CN:
    if (star)
      return cr__conf_fail(c, e->pos, ep, "a cn: name is matched exactly; '*' is no wildcard there (use dns:*.DOMAIN)");
    break;
  case CR_SUBJECT_DNS:
    if (star && (star != v || v[1] != '.' || strchr(v + 1, '*')))
      return cr__conf_fail(c, e->pos, ep, "bad wildcard '%s': '*' may only be the whole leftmost label (dns:*.example.com)",
                           cr__conf_sanitize(v, n, tmp, sizeof tmp));
    if (star && strchr(v + 2, '.') == NULL)
      return cr__conf_fail(c, e->pos, ep, "bad wildcard '%s': at least two labels must follow '*.'",
                           cr__conf_sanitize(v, n, tmp, sizeof tmp));
    for (i = star ? 2 : 0; i < n; i++)
      if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '.')
        return cr__conf_fail(c, e->pos, ep, "'%s' is not a DNS name", cr__conf_sanitize(v, n, tmp, sizeof tmp));
    break;
  case CR_SUBJECT_URI:
    if (star && (star != v + n - 1))
      return cr__conf_fail(c, e->pos, ep, "bad wildcard '%s': '*' may only end a URI prefix (uri:spiffe://corp/*)",
                           cr__conf_sanitize(v, n, tmp, sizeof tmp));
    if (strstr(v, "://") == NULL || strstr(v, "://") == v || (star && star < strstr(v, "://") + 3))
      return cr__conf_fail(c, e->pos, ep, "'%s' is not a URI with a scheme and an authority (uri:spiffe://corp/...)",
                           cr__conf_sanitize(v, n, tmp, sizeof tmp));
    break;
  }
  out->wildcard = star != NULL;
  out->value = star && out->kind == CR_SUBJECT_DNS ? cr_strdup(v + 1) : cr_strndup(v, star ? n - 1 : n);
  return 0;
}

/* Every token of one token file: one per line, blank lines and '#' comments skipped. */
static int read_tokens(ctx_t *c, const cr_conf_file_t *f, const char *kp, cr_conf_callers_t *cl) {
  char *data = NULL, why[PATH_MAX + 64];
  size_t len = 0, found = 0;
  int rc = cr_fileio_read(f->path, MAX_SECRET_SIZE, &data, &len, why, sizeof why);
  if (rc != 0) {
    if (rc == CR_ELIMIT)
      return cr__conf_fail(c, f->pos, kp, "%s is larger than %d bytes; is it really a token file?", f->path,
                           MAX_SECRET_SIZE);
    return cr__conf_fail(c, f->pos, kp, "cannot read %s: %s", f->path, why);
  }
  for (char *line = data, *end = data + len; line < end && rc == 0;) {
    char *nl = memchr(line, '\n', (size_t)(end - line));
    char *stop = nl ? nl : end;
    size_t n = (size_t)(stop - line);
    if (n > 0 && line[n - 1] == '\r')
      n--;
    if (n > 0 && line[0] != '#') {
      size_t k;
      for (k = 0; k < n && (unsigned char)line[k] > 0x20 && (unsigned char)line[k] != 0x7f; k++)
        ;
      if (k < n)
        rc = cr__conf_fail(c, f->pos, kp, "%s: a token contains a space or control character", f->path);
      else if (n < CR_CONF_ADMIN_TOKEN_MIN)
        rc = cr__conf_fail(c, f->pos, kp, "%s: a token is %zu characters long, at least %d are needed "
                           "(e.g. openssl rand -hex 32)", f->path, n, CR_CONF_ADMIN_TOKEN_MIN);
      else {
        cl->tokens = cr_realloc(cl->tokens, (cl->ntokens + 1) * sizeof *cl->tokens);
        cl->tokens[cl->ntokens++] = cr_strndup(line, n);
        found++;
      }
    }
    line = stop + 1;
  }
  cr_wipe(data, len);
  free(data);
  if (rc == 0 && found == 0)
    rc = cr__conf_fail(c, f->pos, kp, "%s holds no token (one per line; '#' lines are comments)", f->path);
  return rc;
}

static int load_callers(ctx_t *c, const node_t *svc, const char *sp, const cr_conf_gateway_t *g, cr_conf_callers_t *cl) {
  const node_t *m, *list;
  char cp[PATH_LEN], kp[PATH_LEN], ep[PATH_LEN];
  if (cr__conf_get_map(c, svc, sp, "callers", OPT, callers_keys, CR_ARRAY_SIZE(callers_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  cl->present = 1;
  cl->pos = m->pos;
  cr__conf_join(cp, sp, "callers");
  if (cr__conf_get_file(c, m, cp, "client_ca", OPT, &cl->client_ca) != 0 ||
      get_cidrs(c, m, cp, "sources", &cl->sources, &cl->nsources) != 0 ||
      cr__conf_get_list(c, m, cp, "subjects", OPT, &list) != 0)
    return CR_ECONFIG;
  if (list != NULL) {
    cr__conf_join(kp, cp, "subjects");
    cl->subjects_pos = list->pos;
    cl->subjects = cr_calloc(list->n, sizeof *cl->subjects);
    for (size_t i = 0; i < list->n; i++) {
      cr__conf_join_index(ep, kp, i);
      if (cr__conf_scalar_str(c, list->items[i], ep, REQ) != 0 ||
          parse_subject(c, list->items[i], ep, &cl->subjects[i]) != 0)
        return CR_ECONFIG;
      cl->nsubjects++;
    }
    if (cl->client_ca.path == NULL && g->public_.client_ca.path == NULL)
      return cr__conf_fail(c, list->pos, kp, "names certificate subjects, but no client certificate is asked for: "
                           "set %s.client_ca or public.client_ca", cp);
  }
  if (cr__conf_get_list(c, m, cp, "token_files", OPT, &list) != 0)
    return CR_ECONFIG;
  if (list != NULL) {
    cr__conf_join(kp, cp, "token_files");
    for (size_t i = 0; i < list->n; i++) {
      cr_conf_file_t f = {0};
      int rc;
      cr__conf_join_index(ep, kp, i);
      rc = cr__conf_file_value(c, list->items[i], ep, &f);
      if (rc == 0)
        rc = read_tokens(c, &f, ep, cl);
      free(f.path);
      if (rc != 0)
        return CR_ECONFIG;
    }
  }
  return 0;
}


static int load_tunnel(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  const char *p = "tunnel";

  if (cr__conf_get_map(c, root, "", p, REQ, tunnel_keys, CR_ARRAY_SIZE(tunnel_keys), &m) != 0 ||
      cr__conf_get_listen(c, m, p, "listen", &g->tunnel.listen) != 0 ||
      cr__conf_get_identity(c, m, p, "identity", &g->tunnel.identity) != 0 ||
      cr__conf_get_file(c, m, p, "client_ca", REQ, &g->tunnel.client_ca) != 0 ||
      cr__conf_get_duration(c, m, p, "handshake_timeout", r_handshake, &g->tunnel.handshake_timeout_ms,
                   NULL) ||
      cr__conf_get_duration(c, m, p, "ping_interval", r_ping_interval, &g->tunnel.ping_interval_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "ping_timeout", r_ping_timeout, &g->tunnel.ping_timeout_ms, NULL) ||
      load_revocation(c, m, p, &g->tunnel.client_ca, &g->tunnel.crl, &g->tunnel.revocation,
                      &g->tunnel.revocation_set, &g->tunnel.revocation_pos) != 0 ||
      cr__conf_get_uint(c, m, p, "max_handshakes", CR_CONF_TUNNEL_HANDSHAKES_DEFAULT, 1, CR_CONF_CONNECTIONS_MAX,
                        &g->tunnel.max_handshakes) != 0 ||
      cr__conf_get_uint(c, m, p, "max_per_source", CR_CONF_TUNNEL_PER_SOURCE_DEFAULT, 1, CR_CONF_CONNECTIONS_MAX,
                        &g->tunnel.max_per_source) != 0)
    return CR_ECONFIG;
  return 0;
}

static int load_public(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  const char *p = "public";

  if (cr__conf_get_map(c, root, "", p, REQ, public_keys, CR_ARRAY_SIZE(public_keys), &m) != 0 ||
      cr__conf_get_listen(c, m, p, "listen", &g->public_.listen) != 0 ||
      cr__conf_get_identity(c, m, p, "identity", &g->public_.identity) != 0 ||
      cr__conf_get_file(c, m, p, "client_ca", OPT, &g->public_.client_ca) != 0 ||
      cr__conf_get_duration(c, m, p, "header_timeout", r_header_timeout, &g->public_.header_timeout_ms,
                   NULL) ||
      cr__conf_get_duration(c, m, p, "idle_timeout", r_pub_idle, &g->public_.idle_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, p, "request_timeout", r_request, &g->public_.request_timeout_ms, NULL) ||
      cr__conf_get_size(c, m, p, "max_header_size", r_header_size, &g->public_.max_header_size) != 0 ||
      cr__conf_get_uint(c, m, p, "max_header_fields", CR_CONF_HEADER_FIELDS_DEFAULT, CR_CONF_HEADER_FIELDS_MIN,
                        CR_CONF_HEADER_FIELDS_MAX, &g->public_.max_header_fields) != 0 ||
      cr__conf_get_uint(c, m, p, "max_connections", CR_CONF_PUBLIC_CONNECTIONS_DEFAULT, 1, CR_CONF_CONNECTIONS_MAX,
                        &g->public_.max_connections) != 0 ||
      cr__conf_get_uint(c, m, p, "max_handshakes", CR_CONF_PUBLIC_HANDSHAKES_DEFAULT, 1, CR_CONF_CONNECTIONS_MAX,
                        &g->public_.max_handshakes) != 0 ||
      cr__conf_get_uint(c, m, p, "max_per_source", CR_CONF_PUBLIC_PER_SOURCE_DEFAULT, 1, CR_CONF_CONNECTIONS_MAX,
                        &g->public_.max_per_source) != 0 ||
      cr__conf_get_duration(c, m, p, "send_timeout", r_send_timeout, &g->public_.send_timeout_ms, NULL) != 0 ||
      cr__conf_get_size(c, m, p, "min_send_rate", r_min_send_rate, &g->public_.min_send_rate) != 0 ||
      load_revocation(c, m, p, &g->public_.client_ca, &g->public_.crl, &g->public_.revocation,
                      &g->public_.revocation_set, &g->public_.revocation_pos) != 0 ||
      load_public_tls(c, m, g) != 0 ||
      get_cidrs(c, m, p, "trusted_proxies", &g->public_.trusted_proxies, &g->public_.ntrusted_proxies) != 0)
    return CR_ECONFIG;
  return 0;
}

static int load_groups(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *list, *agents;
  char gp[PATH_LEN], kp[PATH_LEN], ep[PATH_LEN];
  size_t i, j, k, l;

  if (cr__conf_get_list(c, root, "", "groups", REQ, &list) != 0)
    return CR_ECONFIG;
  g->groups = cr_calloc(list->n, sizeof(*g->groups));
  g->ngroups = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_group_t *grp = &g->groups[i];
    cr_conf_pos_t name_pos = {0, 0};
    cr__conf_join_index(gp, "groups", i);
    if (cr__conf_map_check(c, m, gp, group_keys, CR_ARRAY_SIZE(group_keys)) != 0)
      return CR_ECONFIG;
    grp->pos = m->pos;
    if (cr__conf_get_name(c, m, gp, &grp->name, &name_pos) != 0)
      return CR_ECONFIG;
    for (j = 0; j < i; j++)
      if (strcmp(g->groups[j].name, grp->name) == 0)
        return cr__conf_fail(c, name_pos, cr__conf_join(kp, gp, "name"),
                    "duplicate group name '%s' (groups[%zu] at %d:%d has it)", grp->name, j,
                    g->groups[j].pos.line, g->groups[j].pos.col);
    if (cr__conf_get_list(c, m, gp, "agents", REQ, &agents) != 0)
      return CR_ECONFIG;
    cr__conf_join(kp, gp, "agents");
    grp->agents = cr_calloc(agents->n, sizeof(char *));
    for (k = 0; k < agents->n; k++) {
      const node_t *e = agents->items[k];
      cr__conf_join_index(ep, kp, k);
      if (cr__conf_scalar_str(c, e, ep, REQ) != 0)
        return CR_ECONFIG;
      /* A certificate name in two groups would make the tunnel's group a coin toss. */
      for (j = 0; j <= i; j++) {
        size_t n = j == i ? grp->nagents : g->groups[j].nagents;
        for (l = 0; l < n; l++)
          if (strcmp(g->groups[j].agents[l], e->str) == 0)
            return cr__conf_fail(c, e->pos, ep, "agent '%s' is already listed in group '%s'", e->str,
                        g->groups[j].name);
      }
      grp->agents[grp->nagents++] = cr_strdup(e->str);
    }
  }
  return 0;
}

static int load_services(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *list;
  char sp[PATH_LEN], kp[PATH_LEN];
  const char *names[64];
  size_t i, j;

  if (cr__conf_get_list(c, root, "", "services", REQ, &list) != 0)
    return CR_ECONFIG;
  g->services = cr_calloc(list->n, sizeof(*g->services));
  g->nservices = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_service_t *s = &g->services[i];
    cr_conf_pos_t group_pos = {0, 0};
    const node_t *lim;
    char lp[PATH_LEN];
    cr__conf_join_index(sp, "services", i);
    if (cr__conf_map_check(c, m, sp, service_keys, CR_ARRAY_SIZE(service_keys)) != 0)
      return CR_ECONFIG;
    s->pos = m->pos;
    if (cr__conf_get_host(c, m, sp, "host", REQ, &s->host) != 0 ||
        cr__conf_get_prefix(c, m, sp, "path_prefix", &s->path_prefix) != 0 ||
        cr__conf_get_str(c, m, sp, "group", REQ, &s->group, &group_pos) != 0 ||
        load_callers(c, m, sp, g, &s->callers) != 0 ||
        cr__conf_get_map(c, m, sp, "limits", OPT, service_limits_keys, CR_ARRAY_SIZE(service_limits_keys), &lim) != 0 ||
        cr__conf_get_size(c, lim, cr__conf_join(lp, sp, "limits"), "max_body", r_max_body, &s->max_body) != 0 ||
        cr__conf_get_uint(c, lim, lp, "max_concurrent", CR_CONF_MAX_CONCURRENT_DEFAULT, 1, 1000000,
                          &s->max_concurrent) != 0 ||
        cr__conf_get_enum(c, m, sp, "mode", service_modes, CR_ARRAY_SIZE(service_modes), 0, &s->passthrough) != 0)
      return CR_ECONFIG;
    if (s->passthrough) {
      /* Nothing of the HTTP inside is seen: only what the TCP peer and the SNI say can be checked. */
      static const char *const http_only[] = {"path_prefix", "limits"};
      const node_t *v;
      for (j = 0; j < CR_ARRAY_SIZE(http_only); j++)
        if ((v = cr__conf_map_get(m, http_only[j])) != NULL)
          return cr__conf_fail(c, v->pos, cr__conf_join(kp, sp, http_only[j]),
                               "a passthrough service is routed by its TLS server name only; remove %s", http_only[j]);
      if (s->callers.client_ca.path || s->callers.nsubjects || s->callers.ntokens)
        return cr__conf_fail(c, s->callers.pos, cr__conf_join(kp, sp, "callers"),
                             "a passthrough service does not terminate TLS: of callers only sources can be checked "
                             "(the upstream checks client certificates itself)");
    }
    for (j = 0; j < g->ngroups; j++)
      if (strcmp(g->groups[j].name, s->group) == 0)
        break;
    if (j == g->ngroups) {
      size_t nn = CR_MIN(g->ngroups, CR_ARRAY_SIZE(names));
      const char *near;
      for (j = 0; j < nn; j++)
        names[j] = g->groups[j].name;
      near = cr__conf_nearest(s->group, names, nn);
      cr__conf_join(kp, sp, "group");
      if (near != NULL)
        return cr__conf_fail(c, group_pos, kp, "unknown group '%s' (did you mean '%s'?)", s->group, near);
      return cr__conf_fail(c, group_pos, kp, "unknown group '%s' (not in groups)", s->group);
    }
    s->group_index = j;
    for (j = 0; j < i; j++) {
      const cr_conf_service_t *o = &g->services[j];
      int same_prefix = (o->path_prefix == NULL && s->path_prefix == NULL) ||
                        (o->path_prefix && s->path_prefix && !strcmp(o->path_prefix, s->path_prefix));
      if (strcasecmp(o->host, s->host) == 0 && same_prefix)
        return cr__conf_fail(c, s->pos, sp, "duplicate service: services[%zu] at %d:%d has the same host%s",
                    j, o->pos.line, o->pos.col, s->path_prefix ? " and path_prefix" : "");
    }
  }
  return 0;
}

/* The admin endpoint changes trust on agents: it exists only with a token to authenticate its
 * callers, and a guessable token is refused. */
static int load_gateway_admin(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  char kp[PATH_LEN];
  const char *t;
  size_t n;

  if (cr__conf_get_map(c, root, "", "admin", OPT, gateway_admin_keys, CR_ARRAY_SIZE(gateway_admin_keys),
              &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  if (cr__conf_get_listen(c, m, "admin", "listen", &g->admin_listen) != 0)
    return CR_ECONFIG;
  if (cr__conf_map_get(m, "token_file") == NULL)
    return cr__conf_fail(c, m->pos, "admin.token_file",
                "missing required key: the admin endpoint authenticates its callers with a bearer "
                "token read from this file");
  if (cr__conf_read_secret_file(c, m, "admin", "token_file", "token", &g->admin_token,
                       &g->admin_token_pos) != 0)
    return CR_ECONFIG;
  cr__conf_join(kp, "admin", "token_file");
  n = strlen(g->admin_token);
  if (n < CR_CONF_ADMIN_TOKEN_MIN)
    return cr__conf_fail(c, g->admin_token_pos, kp,
                "the token is %zu characters long, at least %d are needed "
                "(e.g. openssl rand -hex 32 > FILE)", n, CR_CONF_ADMIN_TOKEN_MIN);
  /* It travels in an Authorization header: a space or control character would never match. */
  for (t = g->admin_token; *t; t++)
    if ((unsigned char)*t <= 0x20 || (unsigned char)*t == 0x7f)
      return cr__conf_fail(c, g->admin_token_pos, kp,
                  "the token contains a space or control character (only its one trailing "
                  "newline is removed)");
  return 0;
}

int cr_conf_replica_id_ok(const char *s, size_t len) {
  if (len == 0 || len > CR_CONF_REPLICA_ID_MAX)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (!(isalnum((unsigned char)s[i]) || strchr("._-:[]", s[i]) != NULL) || s[i] == '\0')
      return 0;
  return 1;
}

/* replicas.id with every ${NAME} replaced by the environment variable NAME (the pod's IP in
 * Kubernetes). NULL with the reason in why. */
static char *expand_env(const char *s, char *why, size_t whylen) {
  char out[CR_CONF_REPLICA_ID_MAX + 1];
  size_t n = 0;
  while (*s) {
    const char *val, *end;
    char name[64];
    size_t vlen;
    if (s[0] != '$' || s[1] != '{') {
      if (n + 1 >= sizeof out)
        goto long_;
      out[n++] = *s++;
      continue;
    }
    end = strchr(s + 2, '}');
    if (end == NULL || end == s + 2 || (size_t)(end - s - 2) >= sizeof name) {
      snprintf(why, whylen, "'${' without a variable name and '}'");
      return NULL;
    }
    memcpy(name, s + 2, (size_t)(end - s - 2));
    name[end - s - 2] = '\0';
    val = getenv(name);
    if (val == NULL || val[0] == '\0') {
      snprintf(why, whylen, "environment variable %.63s is not set (in Kubernetes: env from "
                            "fieldRef status.podIP)", name);
      return NULL;
    }
    vlen = strlen(val);
    if (n + vlen >= sizeof out)
      goto long_;
    memcpy(out + n, val, vlen);
    n += vlen;
    s = end + 1;
  }
  out[n] = '\0';
  return cr_strdup(out);
long_:
  snprintf(why, whylen, "longer than %d characters", CR_CONF_REPLICA_ID_MAX);
  return NULL;
}

static int bad_id(ctx_t *c, cr_conf_pos_t pos, const char *kp, const char *id) {
  char tmp[80];
  return cr__conf_fail(c, pos, kp, "bad replica id '%s': 1 to %d characters of A-Z a-z 0-9 . _ - : [ ]",
                       cr__conf_sanitize(id, strlen(id), tmp, sizeof tmp), CR_CONF_REPLICA_ID_MAX);
}

/* The replica set. A static set must hold this replica's id; in dns mode ids are IP:tunnel-port, so
 * the id must be one (it is checked against the answers at run time, when they exist). */
static int load_replicas(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m, *set, *v;
  const char *p = "replicas";
  char kp[PATH_LEN], ep[PATH_LEN], why[200];
  cr_conf_pos_t dns_pos = {0, 0};

  if (cr__conf_get_map(c, root, "", p, OPT, replicas_keys, CR_ARRAY_SIZE(replicas_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL) {
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !cr_conf_replica_id_ok(host, strnlen(host, sizeof host)))
      snprintf(host, sizeof host, "gateway");
    host[sizeof host - 1] = '\0';
    g->replicas.id = cr_strdup(host);
    g->replicas.refresh_ms = r_refresh.def;
    return 0;
  }
  g->replicas.pos = m->pos;
  if (cr__conf_get_list(c, m, p, "set", OPT, &set) != 0 ||
      cr__conf_get_host(c, m, p, "dns", OPT, &g->replicas.dns) != 0 ||
      cr__conf_get_duration(c, m, p, "refresh", r_refresh, &g->replicas.refresh_ms, NULL) != 0)
    return CR_ECONFIG;
  if ((v = cr__conf_map_get(m, "dns")) != NULL)
    dns_pos = v->pos;
  if (set != NULL && g->replicas.dns != NULL)
    return cr__conf_fail(c, dns_pos, "replicas.dns", "give replicas.set or replicas.dns, not both");
  if (set == NULL && g->replicas.dns == NULL)
    return cr__conf_fail(c, m->pos, p, "missing set (a list of replica ids) or dns (a name whose addresses are "
                                       "the replicas, e.g. a Kubernetes headless Service)");
  v = cr__conf_map_get(m, "id");
  cr__conf_join(kp, p, "id");
  if (v != NULL) {
    if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
      return CR_ECONFIG;
    g->replicas.id_pos = v->pos;
    if ((g->replicas.id = expand_env(v->str, why, sizeof why)) == NULL)
      return cr__conf_fail(c, v->pos, kp, "%s", why);
    if (!cr_conf_replica_id_ok(g->replicas.id, strlen(g->replicas.id)))
      return bad_id(c, v->pos, kp, g->replicas.id);
  } else if (g->replicas.dns != NULL) {
    return cr__conf_fail(c, m->pos, kp, "missing required key: with replicas.dns the set is IP:%u ids, so "
                                        "this replica's id must be given as one, e.g. \"${POD_IP}:%u\"",
                         g->tunnel.listen.port, g->tunnel.listen.port);
  } else {
    char host[256];
    if (gethostname(host, sizeof host) != 0)
      return cr__conf_fail(c, m->pos, kp, "missing, and the host name cannot be read: %s", strerror(errno));
    host[sizeof host - 1] = '\0';
    g->replicas.id = cr_strdup(host);
    if (!cr_conf_replica_id_ok(host, strlen(host)))
      return bad_id(c, m->pos, kp, host);
  }
  if (g->replicas.dns != NULL) {
    char *h = NULL;
    unsigned port = 0;
    unsigned char bin[16];
    const char *bad = cr__conf_split_hostport(g->replicas.id, strlen(g->replicas.id), 1, &h, &port);
    if (bad == NULL && inet_pton(AF_INET, h, bin) != 1 && inet_pton(AF_INET6, h, bin) != 1)
      bad = "the host is not an IP address";
    if (bad == NULL && port != g->tunnel.listen.port)
      bad = "the port is not tunnel.listen's";
    free(h);
    if (bad != NULL)
      return cr__conf_fail(c, g->replicas.id_pos, kp, "with replicas.dns the id is IP:%u as the name resolves "
                                                      "it ('%s': %s)", g->tunnel.listen.port, g->replicas.id, bad);
    return 0;
  }
  cr__conf_join(kp, p, "set");
  if (set->n == 0 || set->n > CR_CONF_REPLICAS_MAX)
    return cr__conf_fail(c, set->pos, kp, "a list of 1 to %d replica ids is needed, got %zu", CR_CONF_REPLICAS_MAX,
                         set->n);
  g->replicas.set = cr_calloc(set->n, sizeof(char *));
  for (size_t i = 0; i < set->n; i++) {
    const node_t *e = set->items[i];
    cr__conf_join_index(ep, kp, i);
    if (cr__conf_scalar_str(c, e, ep, REQ) != 0)
      return CR_ECONFIG;
    if (!cr_conf_replica_id_ok(e->str, e->len))
      return bad_id(c, e->pos, ep, e->str);
    for (size_t j = 0; j < i; j++)
      if (strcmp(g->replicas.set[j], e->str) == 0)
        return cr__conf_fail(c, e->pos, ep, "duplicate replica id '%s' (%s[%zu] at %d:%d has it)", e->str, kp, j,
                             set->items[j]->pos.line, set->items[j]->pos.col);
    g->replicas.set[g->replicas.nset++] = cr_strdup(e->str);
  }
  for (size_t i = 0; i < g->replicas.nset; i++)
    if (strcmp(g->replicas.set[i], g->replicas.id) == 0)
      return 0;
  return cr__conf_fail(c, g->replicas.id_pos.line ? g->replicas.id_pos : m->pos, "replicas.id",
                       "this replica's id '%s'%s is not in replicas.set", g->replicas.id,
                       g->replicas.id_pos.line ? "" : " (the host name)");
}

static int load_probe(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  if (cr__conf_get_map(c, root, "", "probe", OPT, probe_keys, CR_ARRAY_SIZE(probe_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  return cr__conf_get_listen(c, m, "probe", "listen", &g->probe_listen);
}

static int load_gateway(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  if (cr__conf_root_check(c, root, gateway_keys, CR_ARRAY_SIZE(gateway_keys), agent_only_keys,
                 CR_ARRAY_SIZE(agent_only_keys), "an agent") != 0 ||
      cr__conf_load_log(c, root, &g->log) != 0 || load_tunnel(c, root, g) != 0 ||
      load_public(c, root, g) != 0 || load_groups(c, root, g) != 0 ||
      load_services(c, root, g) != 0 ||
      cr__conf_get_duration(c, root, "", "drain_timeout", r_drain, &g->drain_timeout_ms, NULL) != 0 ||
      load_gateway_admin(c, root, g) != 0 || load_replicas(c, root, g) != 0 || load_probe(c, root, g) != 0)
    return CR_ECONFIG;
  return 0;
}

void cr_conf_gateway_free(cr_conf_gateway_t *g) {
  size_t i, j;

  if (g == NULL)
    return;
  free(g->path);
  free(g->tunnel.listen.host);
  identity_free(&g->tunnel.identity);
  free(g->tunnel.client_ca.path);
  free(g->tunnel.crl.path);
  free(g->public_.crl.path);
  free(g->public_.tls_ciphers);
  free(g->public_.listen.host);
  identity_free(&g->public_.identity);
  free(g->public_.client_ca.path);
  for (i = 0; i < g->ngroups; i++) {
    free(g->groups[i].name);
    for (j = 0; j < g->groups[i].nagents; j++)
      free(g->groups[i].agents[j]);
    free(g->groups[i].agents);
  }
  free(g->groups);
  for (i = 0; i < g->nservices; i++) {
    cr_conf_callers_t *cl = &g->services[i].callers;
    free(g->services[i].host);
    free(g->services[i].path_prefix);
    free(g->services[i].group);
    free(cl->client_ca.path);
    for (j = 0; j < cl->nsubjects; j++)
      free(cl->subjects[j].value);
    free(cl->subjects);
    for (j = 0; j < cl->ntokens; j++) {
      cr_wipe(cl->tokens[j], strlen(cl->tokens[j]));
      free(cl->tokens[j]);
    }
    free(cl->tokens);
    free(cl->sources);
  }
  free(g->public_.trusted_proxies);
  free(g->services);
  free(g->admin_listen.host);
  free(g->probe_listen.host);
  free(g->replicas.id);
  free(g->replicas.dns);
  for (i = 0; i < g->replicas.nset; i++)
    free(g->replicas.set[i]);
  free(g->replicas.set);
  if (g->admin_token != NULL) {
    cr_wipe(g->admin_token, strlen(g->admin_token));
    free(g->admin_token);
  }
  memset(g, 0, sizeof(*g));
}




/* ---------------------------------------------------------------- loading, for both roles */

/* What differs between the roles when a whole file is loaded. */
typedef struct role {
  size_t size;
  int (*load)(ctx_t *c, const node_t *root, void *out);
  void (*free)(void *out);
  char **(*path)(void *out);
} role_t;

static int from_mem(ctx_t *c, const role_t *role, const char *name, const char *data, size_t len, void *out) {
  node_t *root = NULL;
  int rc;
  memset(out, 0, role->size);
  rc = cr__conf_build_tree(c, data, len, &root);
  if (rc == 0) {
    *role->path(out) = cr_strdup(name);
    rc = role->load(c, root, out);
  }
  cr__conf_node_free(root);
  if (rc != 0)
    role->free(out);
  return rc;
}

static int load_mem(const role_t *role, const char *name, const char *data, size_t len, void *out, char *err,
                    size_t errlen) {
  ctx_t c;
  int rc;
  cr__conf_ctx_open(&c, name, err, errlen);
  rc = from_mem(&c, role, c.file, data, len, out);
  free(c.dir);
  return rc;
}

static int load_file(const role_t *role, const char *path, void *out, char *err, size_t errlen) {
  ctx_t c;
  char *data = NULL;
  size_t len = 0;
  int rc;
  memset(out, 0, role->size);
  cr__conf_ctx_open(&c, path, err, errlen);
  rc = cr__conf_read_config(&c, c.file, &data, &len);
  if (rc == 0)
    rc = from_mem(&c, role, c.file, data, len, out);
  free(data);
  free(c.dir);
  return rc;
}

static int agent_load(ctx_t *c, const node_t *root, void *out) { return load_agent(c, root, out); }
static void agent_free(void *out) { cr_conf_agent_free(out); }
static char **agent_path(void *out) { return &((cr_conf_agent_t *)out)->path; }
static const role_t agent_role = {sizeof(cr_conf_agent_t), agent_load, agent_free, agent_path};

static int gateway_load(ctx_t *c, const node_t *root, void *out) { return load_gateway(c, root, out); }
static void gateway_free(void *out) { cr_conf_gateway_free(out); }
static char **gateway_path(void *out) { return &((cr_conf_gateway_t *)out)->path; }
static const role_t gateway_role = {sizeof(cr_conf_gateway_t), gateway_load, gateway_free, gateway_path};

int cr_conf_agent_load(const char *path, cr_conf_agent_t *out, char *err, size_t errlen) {
  return load_file(&agent_role, path, out, err, errlen);
}

int cr_conf_agent_load_mem(const char *name, const char *data, size_t len, cr_conf_agent_t *out, char *err,
                           size_t errlen) {
  return load_mem(&agent_role, name, data, len, out, err, errlen);
}

int cr_conf_gateway_load(const char *path, cr_conf_gateway_t *out, char *err, size_t errlen) {
  return load_file(&gateway_role, path, out, err, errlen);
}

int cr_conf_gateway_load_mem(const char *name, const char *data, size_t len, cr_conf_gateway_t *out, char *err,
                             size_t errlen) {
  return load_mem(&gateway_role, name, data, len, out, err, errlen);
}

/* ---------------------------------------------------------------- role */

const char *cr_conf_detect_role(const char *path, char *err, size_t errlen) {
  ctx_t c;
  char *data = NULL;
  size_t len = 0;
  node_t *root = NULL;
  const char *role = NULL;

  cr__conf_ctx_open(&c, path, err, errlen);
  if (cr__conf_read_config(&c, c.file, &data, &len) == 0 && cr__conf_build_tree(&c, data, len, &root) == 0) {
    if (root->kind != N_MAP) {
      cr__conf_fail(&c, root->pos, ROOT_KEY, "expected a mapping of settings at the top, got %s",
           cr__conf_kind_name(root));
    } else {
      int agent = cr__conf_map_get(root, "routes") != NULL, gateway = cr__conf_map_get(root, "services") != NULL;
      /* Without the deciding key, the role's other sections still tell, so the loader can then
       * point at what is missing. */
      if (!agent && !gateway) {
        agent = cr__conf_map_get(root, "gateway") != NULL;
        gateway = cr__conf_map_get(root, "tunnel") != NULL || cr__conf_map_get(root, "public") != NULL ||
                  cr__conf_map_get(root, "groups") != NULL;
      }
      if (agent && gateway)
        cr__conf_fail(&c, root->pos, ROOT_KEY,
             "has both agent keys (routes, gateway) and gateway keys (services, tunnel, public, "
             "groups); a file configures one role");
      else if (!agent && !gateway)
        cr__conf_fail(&c, root->pos, ROOT_KEY,
             "cannot tell the role: an agent configuration has routes, a gateway configuration "
             "has services");
      else
        role = agent ? "agent" : "gateway";
    }
  }
  cr__conf_node_free(root);
  free(data);
  free(c.dir);
  return role;
}

/* Configuration schemas: the agent's and the gateway's keys, read into the plain structs of
 * config.h with the typed readers of config_read.c. */
#include "ccrelay/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "config_internal.h"

/* ---------------------------------------------------------------- agent */

static const char *const agent_keys[] = {"log",         "gateway",    "routes",
                                         "limits",      "drain_timeout", "trust_store",
                                         "revocation",  "expiry_warning", "admin",
                                         "remote_trust"};
static const char *const agent_admin_keys[] = {"listen"};
/* In cr_conf_revocation_t order. */
static const char *const revocation_names[] = {"off", "soft", "hard"};
static const char *const agent_only_keys[] = {"routes"};
static const char *const agent_gw_keys[] = {"address",       "server_name",  "ca",
                                            "identity",      "connections",  "connect_timeout",
                                            "ping_interval", "ping_timeout", "reconnect_min",
                                            "reconnect_max"};
static const char *const route_keys[] = {"name", "match", "upstream", "soap", "revocation"};
static const char *const match_keys[] = {"host", "path_prefix", "methods", "header", "soap_action"};
static const char *const header_keys[] = {"name", "value"};
static const char *const upstream_keys[] = {"url",          "server_name",     "ca",
                                            "identity",     "connect_timeout", "response_timeout",
                                            "idle_timeout", "max_idle"};
static const char *const limits_keys[] = {"max_header_size", "max_header_fields", "send_timeout", "min_send_rate"};

static const range_t r_connect = {10 * MS_PER_S, 1, MS_PER_H};
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

static int load_agent_gateway(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *m, *v;
  const char *p = "gateway", *why;
  char kp[PATH_LEN], tmp[80];
  cr_conf_pos_t min_pos = {0, 0}, max_pos = {0, 0};

  if (cr__conf_get_map(c, root, "", "gateway", REQ, agent_gw_keys, CR_ARRAY_SIZE(agent_gw_keys), &m) != 0)
    return CR_ECONFIG;
  v = cr__conf_map_get(m, "address");
  if (v == NULL)
    return cr__conf_missing(c, m, p, "address");
  cr__conf_join(kp, p, "address");
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  if ((why = cr__conf_split_hostport(v->str, v->len, 1, &a->gateway.host, &a->gateway.port)) != NULL)
    return cr__conf_fail(c, v->pos, kp, "bad address '%s': %s", cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)),
                why);
  a->gateway.pos = v->pos;
  if (cr__conf_get_host(c, m, p, "server_name", OPT, &a->gateway.server_name) != 0 ||
      cr__conf_get_file(c, m, p, "ca", REQ, &a->gateway.ca) != 0 ||
      cr__conf_get_identity(c, m, p, "identity", &a->gateway.identity) != 0 ||
      cr__conf_get_uint(c, m, p, "connections", 2, 1, 64, &a->gateway.connections) != 0 ||
      cr__conf_get_duration(c, m, p, "connect_timeout", r_connect, &a->gateway.connect_timeout_ms, NULL) ||
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
  if (a->gateway.server_name == NULL)
    a->gateway.server_name = cr_strdup(a->gateway.host);
  return 0;
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

static int load_upstream(ctx_t *c, const node_t *route, const char *rp, cr_conf_route_t *r) {
  const node_t *m, *v;
  char up[PATH_LEN], kp[PATH_LEN], tmp[80];
  const char *why;

  if (cr__conf_get_map(c, route, rp, "upstream", REQ, upstream_keys, CR_ARRAY_SIZE(upstream_keys), &m) != 0)
    return CR_ECONFIG;
  cr__conf_join(up, rp, "upstream");
  v = cr__conf_map_get(m, "url");
  if (v == NULL)
    return cr__conf_missing(c, m, up, "url");
  cr__conf_join(kp, up, "url");
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  why = cr__conf_parse_url(v->str, v->len, &r->upstream_host, &r->upstream_port, &r->upstream_base_path);
  if (why != NULL)
    return cr__conf_fail(c, v->pos, kp, "bad URL '%s': %s", cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)), why);
  r->upstream_url = cr_strdup(v->str);
  if (cr__conf_get_host(c, m, up, "server_name", OPT, &r->server_name) != 0 ||
      cr__conf_get_file(c, m, up, "ca", OPT, &r->ca) != 0 ||
      cr__conf_get_identity(c, m, up, "identity", &r->identity) != 0 ||
      cr__conf_get_duration(c, m, up, "connect_timeout", r_up_connect, &r->connect_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, up, "response_timeout", r_up_response, &r->response_timeout_ms, NULL) ||
      cr__conf_get_duration(c, m, up, "idle_timeout", r_up_idle, &r->idle_timeout_ms, NULL) ||
      cr__conf_get_uint(c, m, up, "max_idle", 64, 0, 1024, &r->max_idle) != 0)
    return CR_ECONFIG;
  if (r->server_name == NULL)
    r->server_name = cr_strdup(r->upstream_host);
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
    if (load_match(c, m, rp, r) != 0 || load_upstream(c, m, rp, r) != 0 ||
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
      load_routes(c, root, a) != 0 ||
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
  free(a->gateway.server_name);
  free(a->gateway.ca.path);
  identity_free(&a->gateway.identity);
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
  }
  free(a->routes);
  memset(a, 0, sizeof(*a));
}




/* ---------------------------------------------------------------- gateway */

static const char *const gateway_keys[] = {"log",      "tunnel",        "public", "groups",
                                           "services", "drain_timeout", "admin"};
static const char *const gateway_admin_keys[] = {"listen", "token_file"};
static const char *const tunnel_keys[] = {"listen",        "identity",     "client_ca",
                                          "handshake_timeout", "ping_interval", "ping_timeout"};
static const char *const public_keys[] = {"listen",          "identity",     "client_ca",
                                          "header_timeout",  "idle_timeout", "request_timeout",
                                          "max_header_size", "max_header_fields", "max_connections",
                                          "send_timeout", "min_send_rate"};
static const char *const group_keys[] = {"name", "agents"};
static const char *const service_keys[] = {"host", "path_prefix", "group"};

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
      cr__conf_get_duration(c, m, p, "ping_timeout", r_ping_timeout, &g->tunnel.ping_timeout_ms, NULL))
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
      cr__conf_get_uint(c, m, p, "max_connections", 10000, 1, 1000000, &g->public_.max_connections) != 0 ||
      cr__conf_get_duration(c, m, p, "send_timeout", r_send_timeout, &g->public_.send_timeout_ms, NULL) != 0 ||
      cr__conf_get_size(c, m, p, "min_send_rate", r_min_send_rate, &g->public_.min_send_rate) != 0)
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
    cr__conf_join_index(sp, "services", i);
    if (cr__conf_map_check(c, m, sp, service_keys, CR_ARRAY_SIZE(service_keys)) != 0)
      return CR_ECONFIG;
    s->pos = m->pos;
    if (cr__conf_get_host(c, m, sp, "host", REQ, &s->host) != 0 ||
        cr__conf_get_prefix(c, m, sp, "path_prefix", &s->path_prefix) != 0 ||
        cr__conf_get_str(c, m, sp, "group", REQ, &s->group, &group_pos) != 0)
      return CR_ECONFIG;
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

static int load_gateway(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  if (cr__conf_root_check(c, root, gateway_keys, CR_ARRAY_SIZE(gateway_keys), agent_only_keys,
                 CR_ARRAY_SIZE(agent_only_keys), "an agent") != 0 ||
      cr__conf_load_log(c, root, &g->log) != 0 || load_tunnel(c, root, g) != 0 ||
      load_public(c, root, g) != 0 || load_groups(c, root, g) != 0 ||
      load_services(c, root, g) != 0 ||
      cr__conf_get_duration(c, root, "", "drain_timeout", r_drain, &g->drain_timeout_ms, NULL) != 0 ||
      load_gateway_admin(c, root, g) != 0)
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
    free(g->services[i].host);
    free(g->services[i].path_prefix);
    free(g->services[i].group);
  }
  free(g->services);
  free(g->admin_listen.host);
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

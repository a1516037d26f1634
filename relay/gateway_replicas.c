/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's replica set: this replica's id and the ids of every replica of the deployment, told
 * to each agent on its tunnels so that the agent keeps tunnels to every replica behind the load
 * balancer (README, High availability).
 *
 * The set is static (replicas.set; a SIGHUP re-reads it from the config file) or the A/AAAA answers
 * of replicas.dns as IP:tunnel-port ids, re-resolved every replicas.refresh. A resolution that fails
 * or returns nothing keeps the last good set (logged). Each change moves the generation, the wall
 * clock in ms (strictly increasing per process), so an agent told different sets by replicas that
 * disagree (a rollout, a reload not yet applied everywhere) follows the most recent one. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "ccrelay/alloc.h"
#include "ccrelay/errpage.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "gateway_internal.h"

typedef struct resolve {
  uv_getaddrinfo_t req;
  cr__gw_replicas_t *owner; /* NULL once the owner closed: the answer is dropped */
} resolve_t;

struct cr__gw_replicas {
  uv_loop_t *loop;
  const cr_conf_gateway_t *conf;
  char id[CR_CONF_REPLICA_ID_MAX + 1];
  char instance[17]; /* random per process: two processes announcing one id are told apart */
  char **set;
  size_t nset;
  uint64_t generation;
  int draining;
  uv_timer_t timer; /* dns mode: the next resolution */
  resolve_t *resolving;
  void (*on_change)(void *arg);
  void *arg;
};

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void set_free(char **set, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(set[i]);
  free(set);
}

static int set_has(char *const *set, size_t n, const char *id) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(set[i], id) == 0)
      return 1;
  return 0;
}

static int set_equal(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb)
    return 0;
  for (size_t i = 0; i < na; i++)
    if (!set_has(b, nb, a[i]))
      return 0;
  return 1;
}

static void set_string(char *const *set, size_t n, char *out, size_t len) {
  size_t off = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n && off < len; i++)
    off += (size_t)snprintf(out + off, len - off, "%s%s", i ? "," : "", set[i]);
}

/* Takes set (owned) as the new set; 1 when it changed. */
static int adopt(cr__gw_replicas_t *r, char **set, size_t n, const char *why) {
  char list[2048];
  uint64_t now;
  if (set_equal(r->set, r->nset, set, n)) {
    set_free(set, n);
    return 0;
  }
  set_free(r->set, r->nset);
  r->set = set;
  r->nset = n;
  now = wall_ms();
  r->generation = now > r->generation ? now : r->generation + 1;
  set_string(r->set, r->nset, list, sizeof list);
  cr_log_info("replica set", "replica=%s set=\"%s\" generation=%llu source=%s", r->id, list,
              (unsigned long long)r->generation, why);
  if (!set_has(r->set, r->nset, r->id))
    cr_log_error("this replica is not in its own replica set: agents will not keep tunnels to it and its calls "
                 "will find no tunnel",
                 "replica=%s set=\"%s\" hint=\"in dns mode replicas.id must be this replica's IP:tunnel-port as "
                 "the name resolves it\"",
                 r->id, list);
  return 1;
}

static char **copy_set(char *const *set, size_t n) {
  char **out = cr_calloc(n ? n : 1, sizeof *out);
  for (size_t i = 0; i < n; i++)
    out[i] = cr_strdup(set[i]);
  return out;
}

/* ---------- dns mode ---------- */

static void resolve_start(cr__gw_replicas_t *r);
static void on_timer(uv_timer_t *t) { resolve_start(t->data); }

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  resolve_t *rv = req->data;
  cr__gw_replicas_t *r = rv->owner;
  char **set = NULL;
  size_t n = 0;
  free(rv);
  if (r == NULL) {
    uv_freeaddrinfo(res);
    return;
  }
  r->resolving = NULL;
  if (status == 0) {
    set = cr_calloc(CR_CONF_REPLICAS_MAX, sizeof *set);
    for (struct addrinfo *ai = res; ai && n < CR_CONF_REPLICAS_MAX; ai = ai->ai_next) {
      char ip[INET6_ADDRSTRLEN], id[CR_CONF_REPLICA_ID_MAX + 1];
      if (ai->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof ip);
      else if (ai->ai_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof ip);
      else
        continue;
      snprintf(id, sizeof id, ai->ai_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, r->conf->tunnel.listen.port);
      if (!set_has(set, n, id))
        set[n++] = cr_strdup(id);
    }
    uv_freeaddrinfo(res);
  }
  if (n == 0) {
    /* Keep serving with what was known: a resolver hiccup must not make agents drop replicas. */
    cr_log_warn("replica set not resolved: keeping the last good set",
                "replica=%s dns=%s reason=\"%s\" set_size=%zu", r->id, r->conf->replicas.dns,
                status < 0 ? cr_strerror(status) : "the name has no A or AAAA record", r->nset);
    set_free(set, 0);
  } else if (adopt(r, set, n, "dns") && r->on_change) {
    r->on_change(r->arg);
  }
  uv_timer_start(&r->timer, on_timer, r->conf->replicas.refresh_ms, 0);
}

static void resolve_start(cr__gw_replicas_t *r) {
  struct addrinfo hints;
  resolve_t *rv;
  int e;
  if (r->resolving || r->draining)
    return;
  uv_timer_stop(&r->timer);
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rv = cr_calloc(1, sizeof *rv);
  rv->owner = r;
  rv->req.data = rv;
  e = uv_getaddrinfo(r->loop, &rv->req, on_resolved, r->conf->replicas.dns, NULL, &hints);
  if (e < 0) {
    free(rv);
    cr_log_warn("replica set not resolved: keeping the last good set", "replica=%s dns=%s reason=\"%s\"", r->id,
                r->conf->replicas.dns, cr_strerror(e));
    uv_timer_start(&r->timer, on_timer, r->conf->replicas.refresh_ms, 0);
    return;
  }
  r->resolving = rv;
}

/* ---------- the module ---------- */

cr__gw_replicas_t *cr__gw_replicas_new(uv_loop_t *loop, const cr_conf_gateway_t *conf, void (*on_change)(void *),
                                       void *arg) {
  cr__gw_replicas_t *r = cr_calloc(1, sizeof *r);
  r->loop = loop;
  r->conf = conf;
  r->on_change = on_change;
  r->arg = arg;
  snprintf(r->id, sizeof r->id, "%s", conf->replicas.id);
  cr_errpage_request_id_new(r->instance);
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  if (conf->replicas.dns == NULL) {
    char *self = r->id;
    size_t n = conf->replicas.nset ? conf->replicas.nset : 1;
    adopt(r, conf->replicas.nset ? copy_set(conf->replicas.set, n) : copy_set(&self, 1), n,
          conf->replicas.nset ? "config" : "alone");
  } else {
    /* Until the first answer the set is this replica alone: agents cover it, and follow the full set
     * as soon as it is known. */
    char *self = r->id;
    adopt(r, copy_set(&self, 1), 1, "dns pending");
    uv_timer_start(&r->timer, on_timer, 0, 0);
  }
  return r;
}

const char *cr__gw_replicas_id(const cr__gw_replicas_t *r) { return r->id; }

void cr__gw_replicas_json(const cr__gw_replicas_t *r, cr_buf_t *out) {
  cr_buf_appendf(out, "{\"replica\":\"");
  cr_errpage_json_escape(out, r->id);
  cr_buf_appendf(out, "\",\"instance\":\"%s\",\"generation\":%llu,\"set\":[", r->instance,
                 (unsigned long long)r->generation);
  for (size_t i = 0; i < r->nset; i++) {
    cr_buf_appendf(out, "%s\"", i ? "," : "");
    cr_errpage_json_escape(out, r->set[i]);
    cr_buf_appendf(out, "\"");
  }
  cr_buf_appendf(out, "]}");
}

int cr__gw_replicas_reload(cr__gw_replicas_t *r) {
  cr_conf_gateway_t fresh;
  char err[1024];
  int rc = 0;
  if (r->draining)
    return 0;
  if (r->conf->replicas.dns != NULL) {
    cr_log_info("reload: resolving the replica set now",
                "config=%s dns=%s", r->conf->path, r->conf->replicas.dns);
    resolve_start(r);
    return 0;
  }
  if (cr_conf_gateway_load(r->conf->path, &fresh, err, sizeof err) != 0) {
    cr_log_error("SIGHUP: configuration not reloaded, the replica set stays as it was", "reason=\"%s\"", err);
    return -1;
  }
  if (strcmp(fresh.replicas.id, r->id) != 0 || fresh.replicas.dns != NULL) {
    cr_log_error("SIGHUP: replicas.id or replicas.dns changed: restart the gateway to apply that; the replica "
                 "set stays as it was",
                 "config=%s replica=%s", r->conf->path, r->id);
    rc = -1;
  } else {
    char *self = r->id;
    size_t n = fresh.replicas.nset ? fresh.replicas.nset : 1;
    int changed = adopt(r, fresh.replicas.nset ? copy_set(fresh.replicas.set, n) : copy_set(&self, 1), n, "reload");
    cr_log_info("reload: replica set reloaded",
                "config=%s changed=%s", r->conf->path, changed ? "true" : "false");
    if (changed && r->on_change)
      r->on_change(r->arg);
  }
  cr_conf_gateway_free(&fresh);
  return rc;
}

void cr__gw_replicas_status_json(const cr__gw_replicas_t *r, cr_buf_t *out) {
  cr_buf_appendf(out, "\"replica\":\"");
  cr_errpage_json_escape(out, r->id);
  cr_buf_appendf(out, "\",\"replica_set\":[");
  for (size_t i = 0; i < r->nset; i++) {
    cr_buf_appendf(out, "%s\"", i ? "," : "");
    cr_errpage_json_escape(out, r->set[i]);
    cr_buf_appendf(out, "\"");
  }
  cr_buf_appendf(out, "],\"replica_generation\":%llu,\"replica_source\":\"%s\"", (unsigned long long)r->generation,
                 r->conf->replicas.dns ? "dns" : "static");
}

static void timer_closed(uv_handle_t *h) {
  cr__gw_replicas_t *r = h->data;
  set_free(r->set, r->nset);
  free(r);
}

void cr__gw_replicas_stop(cr__gw_replicas_t *r) {
  r->draining = 1;
  uv_timer_stop(&r->timer);
  if (r->resolving) {
    r->resolving->owner = NULL;
    uv_cancel((uv_req_t *)&r->resolving->req);
    r->resolving = NULL;
  }
}

void cr__gw_replicas_free(cr__gw_replicas_t *r) {
  if (r == NULL)
    return;
  cr__gw_replicas_stop(r);
  uv_close((uv_handle_t *)&r->timer, timer_closed);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's agent tunnels, by relay group: a tunnel joins its group once its agent was admitted
 * (gateway.c maps the certificate to the group), leaves it when it closes, and public calls pick
 * the least busy usable tunnel of their service's group.
 *
 * Replica coverage: each new tunnel is told this replica's id and the replica set (a control call,
 * POST /.well-known/ccrelay/replicas), again whenever the set changes. The agent answers whether it
 * keeps the tunnel ({"kept":true}) or closes it because it already holds its tunnels to this replica
 * ({"kept":false}); until the answer the tunnel is "pending" and carries calls only if nothing
 * else can, so a tunnel about to close never takes a call. An agent that does not know the call
 * (404) or fails it keeps the tunnel as before. The answer also names the agent process
 * ({"instance":HEX}), kept per tunnel: the admin API sends a trust change once to each process of an
 * agent name, whatever the number of its tunnels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/route.h"
#include "gateway_internal.h"

#define ANSWER_MAX 4096
#define INSTANCE_MAX 32

typedef enum { COV_PENDING, COV_KEPT, COV_SURPLUS } coverage_t;
static const char *const coverage_names[] = {"pending", "kept", "surplus"};

typedef struct announce announce_t;

typedef struct gw_tunnel {
  cr_queue_t link; /* cr__gw_group_t.tunnels */
  cr__gw_group_t *group;
  cr_tunnel_t *tunnel;
  coverage_t coverage;
  announce_t *announce; /* the announcement in flight; NULL when none */
  char agent[128];
  char peer[64];
  char instance[INSTANCE_MAX + 1]; /* the agent process, once its answer told; "" before */
} gw_tunnel_t;

/* One announcement: its stream, and the agent's answer collected (bounded). It lives until its
 * stream closes, which happens before its tunnel's close. */
struct announce {
  gw_tunnel_t *gt; /* NULL once superseded by a newer announcement */
  cr_buf_t body;
  size_t off;
  cr_buf_t answer;
  int status;
};

/* ---------- the replica announcement ---------- */

static int contains(const char *hay, size_t len, const char *needle) {
  size_t n = strlen(needle);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(hay + i, needle, n) == 0)
      return 1;
  return 0;
}

/* The agent process's id in the answer: "instance":"HEX" (1 to 32 lowercase hex digits), else "". */
static void answer_instance(const char *ans, size_t len, char *out) {
  static const char key[] = "\"instance\":\"";
  size_t k = sizeof key - 1, n = 0;
  out[0] = '\0';
  for (size_t i = 0; i + k <= len; i++) {
    if (memcmp(ans + i, key, k) != 0)
      continue;
    for (i += k; i < len && n < INSTANCE_MAX && ((ans[i] >= '0' && ans[i] <= '9') || (ans[i] >= 'a' && ans[i] <= 'f'));
         i++)
      out[n++] = ans[i];
    if (i < len && ans[i] == '"')
      out[n] = '\0';
    else
      out[0] = '\0'; /* not a well-formed id: unknown rather than a wrong one */
    return;
  }
}

static void ann_on_head(cr_tstream_t *ts, cr_http_msg_t *head) {
  announce_t *an = cr_tstream_data(ts);
  an->status = head->status;
}

static void ann_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  announce_t *an = cr_tstream_data(ts);
  cr_tstream_consume(ts, len);
  (void)cr_buf_append(&an->answer, data, len); /* beyond ANSWER_MAX: ignored, judged as not "kept":false */
}

static void ann_pump(cr_tstream_t *ts) {
  announce_t *an = cr_tstream_data(ts);
  while (an->off < an->body.len) {
    size_t n = an->body.len - an->off;
    int r = cr_tstream_write(ts, an->body.base + an->off, n);
    if (r < 0) {
      cr_tstream_reset(ts);
      return;
    }
    an->off += n;
    if (r == 1)
      return;
  }
  cr_tstream_end(ts);
  an->off = an->body.len + 1; /* ended */
}

static void ann_on_writable(cr_tstream_t *ts) {
  announce_t *an = cr_tstream_data(ts);
  if (an->off <= an->body.len)
    ann_pump(ts);
}

static void ann_on_close(cr_tstream_t *ts, int error) {
  announce_t *an = cr_tstream_data(ts);
  gw_tunnel_t *gt = an->gt;
  if (gt != NULL) {
    int surplus = error == 0 && an->status == 200 && an->answer.len &&
                  contains(an->answer.base, an->answer.len, "\"kept\":false");
    gt->announce = NULL;
    if (error != 0 && !cr_tunnel_usable(gt->tunnel)) {
      /* The tunnel is going away (the agent's GOAWAY crossed the announcement): nothing to judge. */
      cr_buf_free(&an->body);
      cr_buf_free(&an->answer);
      free(an);
      return;
    }
    if (surplus && gt->coverage != COV_SURPLUS)
      cr_log_debug("tunnel not needed by its agent", "group=%s agent=%s peer=%s answer=\"%.*s\"",
                   gt->group->conf->name, gt->agent, gt->peer, (int)CR_MIN(an->answer.len, 200),
                   an->answer.base);
    else if (error != 0 || (an->status != 200 && an->status != 404))
      cr_log_warn("replica announcement failed; the tunnel is used anyway",
                  "group=%s agent=%s peer=%s status=%d reason=\"%s\"", gt->group->conf->name, gt->agent, gt->peer,
                  an->status, error ? cr_strerror(error) : "unexpected status");
    gt->coverage = surplus ? COV_SURPLUS : COV_KEPT;
    if (error == 0 && an->status == 200)
      answer_instance(an->answer.base, an->answer.len, gt->instance);
  }
  cr_buf_free(&an->body);
  cr_buf_free(&an->answer);
  free(an);
}

static const cr_tstream_callbacks_t ann_cbs = {
    .on_head = ann_on_head,
    .on_data = ann_on_data,
    .on_writable = ann_on_writable,
    .on_close = ann_on_close,
};

static void announce(gw_tunnel_t *gt) {
  static const char target[] = CR_CONTROL_PREFIX "replicas";
  announce_t *an;
  cr_http_msg_t h;
  cr_tstream_t *ts;
  int err = 0;
  if (gt->group->replicas == NULL || !cr_tunnel_usable(gt->tunnel))
    return;
  an = cr_calloc(1, sizeof *an);
  cr_buf_init(&an->body, 0);
  cr_buf_init(&an->answer, ANSWER_MAX);
  cr__gw_replicas_json(gt->group->replicas, &an->body);
  cr_http_msg_init(&h, 0);
  cr_http_msg_set_method(&h, "POST", 4);
  cr_http_msg_set_target(&h, target, strlen(target));
  cr_http_msg_add_header(&h, "Host", 4, "ccrelay-control", 15);
  cr_http_msg_add_header(&h, "content-type", 12, "application/json", 16);
  cr_http_msg_add_header(&h, "x-ccrelay-requested-by", 22, "gateway replica set", 19);
  h.content_length = (int64_t)an->body.len;
  ts = cr_tunnel_open_stream(gt->tunnel, &h, 1, &ann_cbs, an, &err);
  cr_http_msg_free(&h);
  if (ts == NULL) {
    cr_buf_free(&an->body);
    cr_buf_free(&an->answer);
    free(an);
    return;
  }
  if (gt->announce)
    gt->announce->gt = NULL; /* the newer answer decides */
  an->gt = gt;
  gt->announce = an;
  ann_pump(ts);
}

static void on_tunnel_close(cr_tunnel_t *t, int error) {
  gw_tunnel_t *gt = cr_tunnel_data(t);
  if (gt->announce)
    gt->announce->gt = NULL; /* (its stream closed first; kept for clarity) */
  cr_queue_remove(&gt->link);
  gt->group->ntunnels--;
  cr_log(error == 0 || error == UV_EOF ? CR_LOG_INFO : CR_LOG_WARN, "tunnel down",
         "group=%s agent=%s peer=%s reason=\"%s\" tunnels_left=%zu", gt->group->conf->name, gt->agent, gt->peer,
         error ? cr_strerror(error) : "closed", gt->group->ntunnels);
  free(gt);
}

static void on_tunnel_goaway(cr_tunnel_t *t) {
  gw_tunnel_t *gt = cr_tunnel_data(t);
  cr_log_info("tunnel draining", "group=%s agent=%s peer=%s", gt->group->conf->name, gt->agent, gt->peer);
}

static const cr_tunnel_callbacks_t tunnel_cbs = {
    .on_stream = NULL,
    .on_goaway = on_tunnel_goaway,
    .on_close = on_tunnel_close,
};

cr__gw_group_t *cr__gw_groups_new(const cr_conf_gateway_t *conf) {
  cr__gw_group_t *groups = cr_calloc(conf->ngroups, sizeof *groups);
  for (size_t i = 0; i < conf->ngroups; i++) {
    groups[i].conf = &conf->groups[i];
    cr_queue_init(&groups[i].tunnels);
  }
  return groups;
}

void cr__gw_groups_free(cr__gw_group_t *groups) { free(groups); }

static int agent_in_group(const cr_conf_group_t *g, const char *agent) {
  for (size_t i = 0; i < g->nagents; i++)
    if (strcmp(g->agents[i], agent) == 0)
      return 1;
  return 0;
}

size_t cr__gw_groups_carry(cr__gw_group_t *old, size_t nold, cr__gw_group_t *groups, size_t ngroups,
                           uint64_t deadline_ms) {
  size_t left = 0;
  for (size_t i = 0; i < nold; i++) {
    cr__gw_group_t *to = NULL;
    cr_queue_t *q, *n;
    for (size_t j = 0; j < ngroups && to == NULL; j++)
      if (strcmp(groups[j].conf->name, old[i].conf->name) == 0)
        to = &groups[j];
    cr_queue_foreach_safe(q, n, &old[i].tunnels) {
      gw_tunnel_t *gt = cr_queue_data(q, gw_tunnel_t, link);
      if (to != NULL && agent_in_group(to->conf, gt->agent)) {
        cr_queue_remove(&gt->link);
        old[i].ntunnels--;
        cr_queue_insert_tail(&to->tunnels, &gt->link);
        to->ntunnels++;
        gt->group = to;
        continue;
      }
      /* Its group is gone, or no longer names its agent: no new calls, and the calls in flight get
       * until the deadline; it stays in the old registry until it closes. */
      left++;
      if (cr_tunnel_usable(gt->tunnel)) {
        cr_log_warn("tunnel closed: its agent is no longer in this group after the reload",
                    "group=%s agent=%s peer=%s deadline_ms=%llu", old[i].conf->name, gt->agent, gt->peer,
                    (unsigned long long)deadline_ms);
        cr_tunnel_shutdown(gt->tunnel, deadline_ms);
      }
    }
  }
  return left;
}

void cr__gw_tunnel_add(cr__gw_group_t *g, cr_stream_t *tls, const char *agent, const cr_conf_gateway_t *conf) {
  gw_tunnel_t *gt = cr_calloc(1, sizeof *gt);
  cr_tunnel_opts_t opts;
  int r;
  gt->group = g;
  snprintf(gt->agent, sizeof gt->agent, "%s", agent);
  snprintf(gt->peer, sizeof gt->peer, "%s", tls->peer);
  memset(&opts, 0, sizeof opts);
  opts.role = CR_TUNNEL_GATEWAY;
  opts.ping_interval_ms = conf->tunnel.ping_interval_ms;
  opts.ping_timeout_ms = conf->tunnel.ping_timeout_ms;
  opts.rtt = g->rtt;
  gt->tunnel = cr_tunnel_new(tls, &opts, &tunnel_cbs, gt);
  cr_queue_insert_tail(&g->tunnels, &gt->link);
  g->ntunnels++;
  r = cr_tunnel_start(gt->tunnel);
  if (r < 0) {
    cr_tunnel_close(gt->tunnel, r);
    return;
  }
  cr_log_info("tunnel up", "group=%s agent=%s peer=%s tunnels=%zu", g->conf->name, gt->agent, gt->peer,
              g->ntunnels);
  if (g->replicas == NULL)
    gt->coverage = COV_KEPT;
  announce(gt);
}

/* Least busy first; among equals the rotation decides, so sequential calls visit every tunnel. */
cr_tunnel_t *cr__gw_group_pick(cr__gw_group_t *g) {
  cr_tunnel_t *best = NULL;
  size_t best_n = 0, best_rank = 0, i = 0, n_all = g->ntunnels ? g->ntunnels : 1;
  int best_kept = 0;
  cr_queue_t *q;
  cr_queue_foreach(q, &g->tunnels) {
    gw_tunnel_t *gt = cr_queue_data(q, gw_tunnel_t, link);
    size_t n, rank = (i + n_all - g->rr % n_all) % n_all;
    int kept = gt->coverage == COV_KEPT;
    i++;
    if (gt->coverage == COV_SURPLUS || !cr_tunnel_usable(gt->tunnel))
      continue;
    n = cr_tunnel_nstreams(gt->tunnel);
    if (best == NULL || kept > best_kept || (kept == best_kept && (n < best_n || (n == best_n && rank < best_rank)))) {
      best = gt->tunnel;
      best_n = n;
      best_rank = rank;
      best_kept = kept;
    }
  }
  g->rr++;
  return best;
}

void cr__gw_groups_announce(cr__gw_group_t *groups, size_t ngroups) {
  cr_queue_t *q, *n;
  for (size_t i = 0; i < ngroups; i++)
    cr_queue_foreach_safe(q, n, &groups[i].tunnels) announce(cr_queue_data(q, gw_tunnel_t, link));
}

size_t cr__gw_groups_ntunnels(const cr__gw_group_t *groups, size_t ngroups) {
  size_t tunnels = 0;
  for (size_t i = 0; i < ngroups; i++)
    tunnels += groups[i].ntunnels;
  return tunnels;
}

void cr__gw_groups_foreach(const cr__gw_group_t *groups, size_t ngroups,
                           void (*visit)(const cr__gw_tunnel_info_t *info, void *arg), void *arg) {
  cr_queue_t *q;
  for (size_t i = 0; i < ngroups; i++)
    cr_queue_foreach(q, &groups[i].tunnels) {
      gw_tunnel_t *gt = cr_queue_data(q, gw_tunnel_t, link);
      cr__gw_tunnel_info_t info = {gt->agent, gt->group->conf->name, gt->peer, gt->tunnel,
                                   coverage_names[gt->coverage], gt->instance};
      visit(&info, arg);
    }
}

void cr__gw_groups_shutdown(cr__gw_group_t *groups, size_t ngroups, uint64_t deadline_ms) {
  cr_queue_t *q, *n;
  for (size_t i = 0; i < ngroups; i++)
    cr_queue_foreach_safe(q, n, &groups[i].tunnels)
        cr_tunnel_shutdown(cr_queue_data(q, gw_tunnel_t, link)->tunnel, deadline_ms);
}

void cr__gw_groups_close(cr__gw_group_t *groups, size_t ngroups) {
  cr_queue_t *q, *n;
  for (size_t i = 0; i < ngroups; i++)
    cr_queue_foreach_safe(q, n, &groups[i].tunnels)
        cr_tunnel_close(cr_queue_data(q, gw_tunnel_t, link)->tunnel, CR_ECLOSED);
}

void cr__gw_groups_release_caches(cr__gw_group_t *groups, size_t ngroups) {
  cr_queue_t *q;
  for (size_t i = 0; i < ngroups; i++)
    cr_queue_foreach(q, &groups[i].tunnels) {
      cr_tunnel_release_caches(cr_queue_data(q, gw_tunnel_t, link)->tunnel);
    }
}

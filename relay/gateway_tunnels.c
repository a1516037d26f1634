/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway's agent tunnels, by relay group: a tunnel joins its group once its agent was admitted
 * (gateway.c maps the certificate to the group), leaves it when it closes, and public calls pick
 * the least busy usable tunnel of their service's group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "gateway_internal.h"

typedef struct gw_tunnel {
  cr_queue_t link; /* cr__gw_group_t.tunnels */
  cr__gw_group_t *group;
  cr_tunnel_t *tunnel;
  char agent[128];
  char peer[64];
} gw_tunnel_t;

static void on_tunnel_close(cr_tunnel_t *t, int error) {
  gw_tunnel_t *gt = cr_tunnel_data(t);
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
}

/* The usable tunnel of the group with the fewest streams in flight. */
cr_tunnel_t *cr__gw_group_pick(cr__gw_group_t *g) {
  cr_tunnel_t *best = NULL;
  size_t best_n = 0;
  cr_queue_t *q;
  cr_queue_foreach(q, &g->tunnels) {
    gw_tunnel_t *gt = cr_queue_data(q, gw_tunnel_t, link);
    size_t n;
    if (!cr_tunnel_usable(gt->tunnel))
      continue;
    n = cr_tunnel_nstreams(gt->tunnel);
    if (best == NULL || n < best_n) {
      best = gt->tunnel;
      best_n = n;
    }
  }
  return best;
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
      cr__gw_tunnel_info_t info = {gt->agent, gt->group->conf->name, gt->peer, gt->tunnel};
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

/* SPDX-License-Identifier: Apache-2.0 */
/* The inside-the-firewall side: dials `connections` tunnels to the gateway (HTTP/2 server role),
 * redials with backoff, and serves each stream by its routes through the routes' upstreams. */
#ifndef CCRELAY_AGENT_H
#define CCRELAY_AGENT_H

#include "ccrelay/config.h"

/* Runs until SIGTERM/SIGINT (then drains for drain_timeout). Returns a process exit code:
 * 0 after a clean drain, 1 when startup failed (the reason is logged). */
int cr_agent_run(const cr_conf_agent_t *conf);

/* One problem `ccrelay check` found: pos is the config position of key (line 0 when the key was
 * defaulted), msg the same text the agent logs when it meets the problem at start. */
typedef void (*cr_agent_check_cb)(void *arg, cr_conf_pos_t pos, const char *key, const char *msg);

/* What the agent validates at start, run without a loop or a socket and without changing anything:
 * the trust store opened with its safety checks (missing, not a directory, group/world-writable)
 * and read (every file it would leave out is a problem here), and every route's client identity
 * loaded and, unless the route has its own ca:, verified against the store for its revocation mode
 * (in date, chains to a trusted root, not revoked). A missing store is a problem only when a route
 * or remote_trust needs it. Calls report once per problem; returns how many there were. */
int cr_agent_check(const cr_conf_agent_t *conf, cr_agent_check_cb report, void *arg);

#endif

/* The inside-the-firewall side: dials `connections` tunnels to the gateway (HTTP/2 server role),
 * redials with backoff, and serves each stream by its routes through the routes' upstreams. */
#ifndef CCRELAY_AGENT_H
#define CCRELAY_AGENT_H

#include "ccrelay/config.h"

/* Runs until SIGTERM/SIGINT (then drains for drain_timeout). Returns a process exit code:
 * 0 after a clean drain, 1 when startup failed (the reason is logged). */
int cr_agent_run(const cr_conf_agent_t *conf);

#endif

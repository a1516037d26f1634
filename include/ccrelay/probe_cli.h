/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay probe -c AGENT.yaml [ROUTE...]` ("Test Connection"), and the route checks `ccrelay check`
 * shares with the agent. */
#ifndef CCRELAY_PROBE_CLI_H
#define CCRELAY_PROBE_CLI_H

#include <stddef.h>

#include "ccrelay/config.h"

/* argv[0] is "probe". Exit status: 0 every route probed was reachable, verified and answered; 1 one
 * was not; 2 usage or configuration error. */
int cr_probe_cli_main(int argc, char **argv);

/* `ccrelay check`'s test of route i of conf (loaded from path): the agent's own route check
 * (cr_agent_route_check), so check refuses what the agent would and accepts what the route's
 * settings allow. Prints `path:line:col: routes[i].upstream.KEY: reason` to stderr; 0 or -1. */
int cr_probe_cli_check_route(const char *path, const cr_conf_agent_t *conf, size_t i);

#endif

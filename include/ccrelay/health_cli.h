/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay health`: GET the admin listener's /readyz, exit 0 when it answers 2xx (container probes). */
#ifndef CCRELAY_HEALTH_CLI_H
#define CCRELAY_HEALTH_CLI_H

/* argv[0] is "health". Returns the exit status: 0 ready, 1 not ready or unreachable, 2 usage/config. */
int cr_health_cli_main(int argc, char **argv);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay trust ...`: manages the trusted-root store from the command line (see truststore.h). */
#ifndef CCRELAY_TRUST_CLI_H
#define CCRELAY_TRUST_CLI_H

/* argv[0] is "trust". Returns the exit status: 0 success, 1 failure, 2 usage or configuration error. */
int cr_trust_cli_main(int argc, char **argv);

#endif

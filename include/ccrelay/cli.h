/* SPDX-License-Identifier: Apache-2.0 */
/* Command line: subcommands, usage, exit codes (0 ok, 1 runtime failure, 2 usage or configuration; the roles
 * also 3: stopped with calls cut, see process.h). */
#ifndef CCRELAY_CLI_H
#define CCRELAY_CLI_H

enum { CR_EXIT_OK = 0, CR_EXIT_FAILURE = 1, CR_EXIT_USAGE = 2 };

int cr_cli_main(int argc, char **argv);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
#include <malloc.h>

#include "ccrelay/cli.h"

int main(int argc, char **argv) {
  /* One malloc arena: the event loop does all but a little of the allocating, and libuv's resolver
   * threads would otherwise each keep an arena of their own (hundreds of KiB resident per idle
   * process) for the few bytes a getaddrinfo needs. */
  mallopt(M_ARENA_MAX, 1);
  return cr_cli_main(argc, argv);
}

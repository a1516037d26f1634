/* SPDX-License-Identifier: Apache-2.0 */
/* Fuzzes the config loader: the input is a config file, loaded as an agent and as a gateway.
 * Files it names resolve under a directory that does not exist (so relative paths never touch
 * the disk); the seeds name /dev/null, which exists, to get past file checks into the rest. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/config.h"

#define NAME "/nonexistent-ccrelay-fuzz/fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every error must read NAME:LINE:COL: KEY: REASON. */
static void check_err(const char *err) {
  const char *p = err + strlen(NAME ":");
  if (strncmp(err, NAME ":", strlen(NAME ":")) != 0)
    abort();
  if (!isdigit((unsigned char)*p))
    abort();
  while (isdigit((unsigned char)*p))
    p++;
  if (*p++ != ':' || !isdigit((unsigned char)*p))
    abort();
  while (isdigit((unsigned char)*p))
    p++;
  if (p[0] != ':' || p[1] != ' ' || strstr(p + 2, ": ") == NULL)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_conf_agent_t a;
  cr_conf_gateway_t g;
  char err[1024];

  if (cr_conf_agent_load_mem(NAME, (const char *)data, size, &a, err, sizeof(err)) == 0)
    cr_conf_agent_free(&a);
  else
    check_err(err);
  if (cr_conf_gateway_load_mem(NAME, (const char *)data, size, &g, err, sizeof(err)) == 0)
    cr_conf_gateway_free(&g);
  else
    check_err(err);
  return 0;
}

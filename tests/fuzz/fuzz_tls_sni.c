/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: arbitrary bytes into the ClientHello SNI reader. Checks, beyond "no crash": the
 * answer for every prefix of the input is consistent with the whole (a prefix of a hello that
 * parses is "more", never an error: what the gateway sees read by read), a found name is a valid
 * NUL-terminated host name, and the hello's end lies within the input. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/error.h"
#include "ccrelay/tls_sni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char name[CR_TLS_SNI_NAME_MAX + 1], part[CR_TLS_SNI_NAME_MAX + 1];
  size_t end = 0, pend = 0;
  int r = cr_tls_sni_parse(data, size, name, sizeof name, &end);
  if (r != CR_TLS_SNI_FOUND && r != CR_TLS_SNI_NONE && r != CR_TLS_SNI_MORE && r != CR_EPROTO && r != CR_ELIMIT)
    abort();
  if (r == CR_TLS_SNI_FOUND) {
    size_t n = strlen(name);
    if (n == 0 || n > CR_TLS_SNI_NAME_MAX || name[n - 1] == '.')
      abort();
  } else if (name[0] != '\0') {
    abort();
  }
  if (r == CR_TLS_SNI_FOUND || r == CR_TLS_SNI_NONE) {
    if (end == 0 || end > size)
      abort();
    /* the hello's records alone give the same answer, and every shorter prefix asks for more */
    if (cr_tls_sni_parse(data, end, part, sizeof part, &pend) != r || pend != end || strcmp(part, name) != 0)
      abort();
    for (size_t i = end > 64 ? end - 64 : 0; i < end; i++)
      if (cr_tls_sni_parse(data, i, part, sizeof part, NULL) != CR_TLS_SNI_MORE)
        abort();
  }
  if (r == CR_TLS_SNI_MORE && size > 0 && cr_tls_sni_parse(data, size - 1, part, sizeof part, NULL) != CR_TLS_SNI_MORE)
    abort();
  return 0;
}

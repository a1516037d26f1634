/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: loading a TLS identity from PKCS#12 (the tunnel's, the public listener's, each
 * route's client identity), with arbitrary bytes as the file and a fixed password. The loader only
 * reads paths, so the bytes go to a memfd (fuzz_memfile.h): nothing touches the disk.
 *
 * Checks beyond "no crash, no leak": a loaded identity has a key, a certificate that matches it and
 * a chain (maybe empty, never NULL); an error leaves a NUL-terminated message and an empty identity.
 * The call is in load_identity() at the top, to be retargeted if decoding moves to another module. */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/tls.h"
#include "fuzz_memfile.h"

#define FUZZ_PASSWORD "fuzz-password" /* the PKCS#12 seeds' password (make_pki_seeds.sh) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int load_identity(const uint8_t *data, size_t size, cr_tls_identity_t *id, char *err, size_t errlen) {
  cr_tls_identity_src_t src = {.pkcs12 = fuzz_memfile(data, size), .password = FUZZ_PASSWORD};
  return cr_tls_identity_load(&src, id, err, errlen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int once;
  cr_tls_identity_t id;
  char err[1024];
  int r;

  if (!once) {
    once = 1;
    cr_log_setup(CR_LOG_ERROR, CR_LOG_LOGFMT);
    if (cr_tls_global_init(err, sizeof err) != 0)
      abort();
  }
  memset(err, 0xa5, sizeof err);
  r = load_identity(data, size, &id, err, sizeof err);
  if (r == 0) {
    if (id.key == NULL || id.cert == NULL || id.chain == NULL || X509_check_private_key(id.cert, id.key) != 1)
      __builtin_trap();
    cr_tls_identity_free(&id);
  } else {
    if (memchr(err, '\0', sizeof err) == NULL || err[0] == '\0')
      __builtin_trap();
    if (id.key != NULL || id.cert != NULL || id.chain != NULL)
      __builtin_trap(); /* nothing half-loaded is handed back */
  }
  ERR_clear_error();
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the trust store's input decoding, i.e. what `ccrelay trust add` / `add-crl` /
 * `verify` read from a file and what the remote-trust POST body carries: PEM (certificates, CRLs,
 * anything else), DER certificates and CRLs, PKCS#12 with or without a password. Arbitrary bytes go
 * through the three entry points below; nothing is written to disk (the CRL path refuses before
 * writing, since the store it checks against is empty, and the path-based reader gets a memfd).
 *
 * Checks beyond "no crash, no leak": success and failure match what the header promises (a batch
 * unchanged on error, at least one certificate on success; a CRL never accepted by an empty store;
 * a chain with a leaf), and every error leaves a NUL-terminated message.
 *
 * The decoding calls are gathered in decode_*() at the top so that a move of PEM/DER/PKCS#12
 * decoding into its own module only has to change these. */
#define _GNU_SOURCE /* memfd_create */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>

#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "fuzz_memfile.h"

#define FUZZ_PASSWORD "fuzz-password" /* the PKCS#12 seeds' password (make_pki_seeds.sh) */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the calls under test ---- */

/* `trust add FILE` and the remote-trust POST body: certificates into a batch. */
static int decode_certs(cr_trust_batch_t *b, const uint8_t *data, size_t size, const char *password, char *err,
                        size_t errlen) {
  return cr_trust_batch_add_mem(b, data, size, password, "fuzz input", err, errlen);
}

/* `trust add-crl FILE`: one CRL, checked against the store. */
static int decode_crl(cr_truststore_t *ts, const uint8_t *data, size_t size, char *err, size_t errlen) {
  char added[CR_TRUST_FP_HEX + 1];
  int present = 0;
  return cr_truststore_add_crl_mem(ts, data, size, "fuzz input", 0, added, &present, err, errlen);
}

/* `trust verify FILE`: a leaf and its untrusted intermediates. */
static int decode_chain(const uint8_t *data, size_t size, const char *password, X509 **leaf,
                        STACK_OF(X509) **untrusted, char *err, size_t errlen) {
  return cr_trust_load_chain(fuzz_memfile(data, size), password, leaf, untrusted, err, errlen);
}

/* ---- harness ---- */

static char store_dir[64];

static void remove_store(void) {
  if (store_dir[0])
    rmdir(store_dir);
}

static cr_truststore_t *empty_store(void) {
  static cr_truststore_t *ts;
  char err[512];
  if (ts)
    return ts;
  snprintf(store_dir, sizeof store_dir, "/tmp/ccrelay-fuzz-trust-XXXXXX");
  if (mkdtemp(store_dir) == NULL || chmod(store_dir, 0700) != 0) {
    perror("mkdtemp");
    abort();
  }
  atexit(remove_store);
  if (cr_truststore_open(store_dir, 0, &ts, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz: %s\n", err);
    abort();
  }
  return ts;
}

static void check_err(const char *err, size_t errlen) {
  if (memchr(err, '\0', errlen) == NULL || err[0] == '\0')
    __builtin_trap(); /* an error says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int once;
  char err[1024];
  cr_trust_batch_t *b;
  X509 *leaf;
  STACK_OF(X509) *untrusted;
  int r;

  if (!once) {
    once = 1;
    cr_log_setup(CR_LOG_ERROR, CR_LOG_LOGFMT);
    if (cr_tls_global_init(err, sizeof err) != 0)
      abort();
  }

  /* certificates: without a password, then as the user would retry, with one */
  b = cr_trust_batch_new();
  memset(err, 0xa5, sizeof err);
  r = decode_certs(b, data, size, NULL, err, sizeof err);
  if (r == CR_EP12_PASSWORD) {
    if (cr_trust_batch_count(b) != 0)
      __builtin_trap();
    memset(err, 0xa5, sizeof err);
    r = decode_certs(b, data, size, FUZZ_PASSWORD, err, sizeof err);
  }
  if (r == 0 && cr_trust_batch_count(b) == 0)
    __builtin_trap();
  if (r < 0) {
    check_err(err, sizeof err);
    if (cr_trust_batch_count(b) != 0)
      __builtin_trap(); /* on error the batch is unchanged */
  }
  cr_trust_batch_free(b);

  /* a CRL: nothing in an empty store can vouch for it */
  memset(err, 0xa5, sizeof err);
  r = decode_crl(empty_store(), data, size, err, sizeof err);
  if (r == 0)
    __builtin_trap();
  check_err(err, sizeof err);

  /* a chain to verify */
  memset(err, 0xa5, sizeof err);
  r = decode_chain(data, size, FUZZ_PASSWORD, &leaf, &untrusted, err, sizeof err);
  if (r == 0) {
    if (leaf == NULL || untrusted == NULL)
      __builtin_trap();
    X509_free(leaf);
    sk_X509_pop_free(untrusted, X509_free);
  } else {
    check_err(err, sizeof err);
  }
  ERR_clear_error();
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* tls_crl.c: the CRLs of a server context's client CAs. What loads (PEM, DER, several, inside the CA
 * file), what is refused and how it is told (missing, garbage, certificates, PKCS#12, a forged
 * signature, no CRL where one is needed), the AUTO mode, and reloads that keep the CRLs in force on
 * error. The handshakes themselves are in tests/e2e/test_e2e_gateway_crl.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ccrelay/error.h"
#include "ccrelay/tls.h"
#include "tls_pki.h"

static X509 *ca, *client, *client2;
static EVP_PKEY *ca_key, *other_key;
static X509 *other_ca;

static X509 *read_cert(const char *path) {
  FILE *f = fopen(path, "r");
  X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
  if (f)
    fclose(f);
  return x;
}

static X509_CRL *make_crl(X509 *issuer, EVP_PKEY *key, X509 *revoked, long this_days, long next_days) {
  X509_CRL *crl = X509_CRL_new();
  ASN1_TIME *t = ASN1_TIME_new();
  X509_CRL_set_version(crl, 1);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer));
  X509_time_adj_ex(t, (int)this_days, 0, NULL);
  X509_CRL_set1_lastUpdate(crl, t);
  X509_time_adj_ex(t, (int)next_days, 0, NULL);
  X509_CRL_set1_nextUpdate(crl, t);
  if (revoked) {
    X509_REVOKED *rv = X509_REVOKED_new();
    X509_time_adj_ex(t, (int)this_days, 0, NULL);
    X509_REVOKED_set_serialNumber(rv, X509_get_serialNumber(revoked));
    X509_REVOKED_set_revocationDate(rv, t);
    X509_CRL_add0_revoked(crl, rv);
  }
  X509_CRL_sort(crl);
  X509_CRL_sign(crl, key, EVP_sha256());
  ASN1_TIME_free(t);
  return crl;
}

/* Writes the CRLs (PEM, or the first as DER) to name, replacing it; returns its path. */
static const char *write_crls(const char *name, int der, X509_CRL *a, X509_CRL *b) {
  const char *path = pki(name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  if (der)
    i2d_X509_CRL_fp(f, a);
  else {
    PEM_write_X509_CRL(f, a);
    if (b)
      PEM_write_X509_CRL(f, b);
  }
  fclose(f);
  X509_CRL_free(a);
  X509_CRL_free(b);
  return path;
}

static const char *write_text(const char *name, const char *text) {
  const char *path = pki(name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static int setup(void **state) {
  FILE *f;
  char err[256];
  (void)state;
  if (cr_tls_global_init(err, sizeof err) < 0 || pki_make() != 0)
    return -1;
  ca = read_cert(pki("ca.pem"));
  client = read_cert(pki("client.pem"));
  client2 = read_cert(pki("client2.pem"));
  if ((f = fopen(pki("ca.key"), "r")) == NULL)
    return -1;
  ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  other_key = EVP_EC_gen("P-256");
  other_ca = pki_cert(other_key, "some unrelated CA", NULL, NULL, 1, NULL, -1, 3650);
  return ca && client && client2 && ca_key && other_ca ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  X509_free(ca);
  X509_free(client);
  X509_free(client2);
  X509_free(other_ca);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(other_key);
  pki_remove();
  return 0;
}

static void expect_err(const char *crl_file, int mode, int want, const char *want_text) {
  cr_tls_crl_info_t info;
  char err[600] = "";
  int r = cr_tls_crl_check(pki("ca.pem"), crl_file, mode, &info, err, sizeof err);
  if (r != want || strstr(err, want_text) == NULL)
    fail_msg("crl %s: got %d (%s), want %d with '%s'", crl_file ? crl_file : "-", r, err, want, want_text);
  assert_int_equal(info.mode, CR_TRUST_CRL_OFF);
}

static void test_load_errors(void **state) {
  (void)state;
  expect_err(pki("none.crl"), CR_TLS_CRL_AUTO, UV_ENOENT, "none.crl");
  expect_err(write_text("garbage.crl", "not a CRL\n"), CR_TRUST_CRL_HARD, CR_ENO_CERT, "no CRL found in");
  expect_err(write_text("empty.crl", ""), CR_TRUST_CRL_HARD, CR_ENO_CERT, "no CRL found in");
  expect_err(write_text("nocrl.pem", "# a comment, no PEM block\n"), CR_TRUST_CRL_SOFT, CR_ENO_CERT,
             "no CRL found in");
  expect_err(pki("client.pem"), CR_TRUST_CRL_HARD, CR_ENO_CERT, "holds certificates; it must hold CRLs only");
  expect_err(pki("client.p12"), CR_TRUST_CRL_HARD, CR_ETLS, "is PKCS#12, which holds no CRL");
  expect_err(write_text("bad-block.crl", "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"),
             CR_TRUST_CRL_HARD, CR_ETLS, "bad-block.crl");
  /* Signed by another key under the CA's name: forged or damaged. */
  expect_err(write_crls("forged.crl", 0, make_crl(ca, other_key, client, -1, 7), NULL), CR_TRUST_CRL_HARD, CR_ETLS,
             "its signature does not verify with the key of that CA in");
  /* The second CRL of the file is the bad one, and is named so. */
  expect_err(write_crls("second-forged.crl", 0, make_crl(ca, ca_key, NULL, -1, 7), make_crl(ca, other_key, NULL, -1, 7)),
             CR_TRUST_CRL_HARD, CR_ETLS, "CRL 2 in");
  /* soft or hard with no CRL in either file: every client would be refused (hard) or the checking
   * would be for show (soft). */
  expect_err(NULL, CR_TRUST_CRL_HARD, CR_ENO_CERT, "revocation is hard but neither");
  expect_err(NULL, CR_TRUST_CRL_SOFT, CR_ENO_CERT, "revocation is soft but neither");
}

static void test_load_ok(void **state) {
  cr_tls_crl_info_t info;
  char err[600] = "";
  const char *p;
  FILE *f;
  (void)state;
  /* AUTO without a crl file or a CRL in the CA file: off. */
  assert_int_equal(cr_tls_crl_check(pki("ca.pem"), NULL, CR_TLS_CRL_AUTO, &info, err, sizeof err), 0);
  assert_int_equal(info.mode, CR_TRUST_CRL_OFF);
  /* DER, one CRL; AUTO is hard with a file. */
  p = write_crls("one.der", 1, make_crl(ca, ca_key, client, -1, 7), NULL);
  assert_int_equal(cr_tls_crl_check(pki("ca.pem"), p, CR_TLS_CRL_AUTO, &info, err, sizeof err), 0);
  assert_int_equal(info.mode, CR_TRUST_CRL_HARD);
  assert_int_equal(info.ncrls, 1);
  assert_int_equal(info.nrevoked, 1);
  assert_int_equal(info.nstale, 0);
  assert_true(info.next_update > time(NULL));
  /* PEM, two CRLs, one stale and one from a CA that is not in the CA file: loaded, and said. */
  p = write_crls("two.pem", 0, make_crl(ca, ca_key, NULL, -10, -1), make_crl(other_ca, other_key, client, -1, 7));
  assert_int_equal(cr_tls_crl_check(pki("ca.pem"), p, CR_TRUST_CRL_SOFT, &info, err, sizeof err), 0);
  assert_int_equal(info.mode, CR_TRUST_CRL_SOFT);
  assert_int_equal(info.ncrls, 2);
  assert_int_equal(info.nstale, 1);
  assert_non_null(strstr(info.foreign, "some unrelated CA"));
  /* A CRL inside the CA file: AUTO turns checking on without a crl file. */
  p = write_crls("ca-crl.pem", 0, make_crl(ca, ca_key, client2, -1, 7), NULL);
  f = fopen(pki("ca-with-crl.pem"), "w");
  assert_non_null(f);
  PEM_write_X509(f, ca);
  fclose(f);
  {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cat '%s' >> '%s'", p, pki("ca-with-crl.pem"));
    assert_int_equal(system(cmd), 0);
  }
  assert_int_equal(cr_tls_crl_check(pki("ca-with-crl.pem"), NULL, CR_TLS_CRL_AUTO, &info, err, sizeof err), 0);
  assert_int_equal(info.mode, CR_TRUST_CRL_HARD);
  assert_int_equal(info.ncrls, 1);
  /* revocation: off loads nothing, whatever the files hold. */
  assert_int_equal(cr_tls_crl_check(pki("ca-with-crl.pem"), pki("garbage.crl"), CR_TRUST_CRL_OFF, &info, err,
                                    sizeof err),
                   0);
  assert_int_equal(info.mode, CR_TRUST_CRL_OFF);
}

static cr_tls_ctx_t *server_ctx(const char *crl_file, int mode) {
  cr_tls_identity_src_t id = {NULL, NULL, pki("server.pem"), pki("server.key")};
  cr_tls_ctx_opts_t o;
  cr_tls_ctx_t *ctx = NULL;
  char err[600] = "";
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.ca_file = pki("ca.pem");
  o.identity = &id;
  o.crl_file = crl_file;
  o.crl_mode = mode;
  if (cr_tls_ctx_new(&o, &ctx, err, sizeof err) != 0)
    fail_msg("cr_tls_ctx_new: %s", err);
  return ctx;
}

static void test_reload(void **state) {
  cr_tls_crl_info_t info;
  cr_tls_ctx_t *ctx;
  char err[600] = "", why[300] = "";
  const char *p;
  int changed = -1;
  (void)state;
  p = write_crls("live.pem", 0, make_crl(ca, ca_key, client, -1, 7), NULL);
  ctx = server_ctx(p, CR_TLS_CRL_AUTO);
  cr_tls_ctx_crl_info(ctx, &info);
  assert_int_equal(info.mode, CR_TRUST_CRL_HARD);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client, why, sizeof why), 1);
  assert_non_null(strstr(why, "certificate revoked (subject"));
  assert_non_null(strstr(why, "CN=agent-1"));
  assert_non_null(strstr(why, ", serial "));
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client2, why, sizeof why), 0);

  /* The same bytes: nothing to do, unless forced. */
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 0, &changed, err, sizeof err), 0);
  assert_int_equal(changed, 0);
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 1, &changed, err, sizeof err), 0);
  assert_int_equal(changed, 1);

  /* A bad file: an error naming it, and the CRLs in force stay. */
  write_text("live.pem", "-----BEGIN X509 CRL-----\ntruncated");
  assert_int_not_equal(cr_tls_ctx_reload_crls(ctx, 0, &changed, err, sizeof err), 0);
  assert_int_equal(changed, 0);
  assert_non_null(strstr(err, "live.pem"));
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client, why, sizeof why), 1);
  cr_tls_ctx_crl_info(ctx, &info);
  assert_int_equal(info.ncrls, 1);
  assert_int_equal(info.nrevoked, 1);

  /* A forged one is refused the same way. */
  write_crls("live.pem", 0, make_crl(ca, other_key, NULL, -1, 7), NULL);
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 0, &changed, err, sizeof err), CR_ETLS);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client, why, sizeof why), 1);

  /* A good new one: client released, client2 revoked. */
  write_crls("live.pem", 0, make_crl(ca, ca_key, client2, 0, 7), NULL);
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 0, &changed, err, sizeof err), 0);
  assert_int_equal(changed, 1);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client, why, sizeof why), 0);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client2, why, sizeof why), 1);
  /* The verify store holds the CAs and the new CRL, with revocation checking on. */
  {
    X509_STORE *st = SSL_CTX_get_cert_store(cr_tls_ctx_native(ctx));
    X509_STORE_CTX *sc = X509_STORE_CTX_new();
    X509_STORE_CTX_init(sc, st, client2, NULL);
    assert_int_equal(X509_verify_cert(sc), 0);
    assert_int_equal(X509_STORE_CTX_get_error(sc), X509_V_ERR_CERT_REVOKED);
    X509_STORE_CTX_cleanup(sc);
    X509_STORE_CTX_init(sc, st, client, NULL);
    assert_int_equal(X509_verify_cert(sc), 1);
    X509_STORE_CTX_free(sc);
  }

  /* The file gone: an error, nothing changes. */
  unlink(pki("live.pem"));
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 0, &changed, err, sizeof err), UV_ENOENT);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client2, why, sizeof why), 1);
  cr_tls_ctx_free(ctx);

  /* A context that checks no CRL has nothing to reload. */
  ctx = server_ctx(NULL, CR_TLS_CRL_AUTO);
  assert_int_equal(cr_tls_ctx_reload_crls(ctx, 1, &changed, err, sizeof err), UV_EINVAL);
  assert_int_equal(cr_tls_ctx_cert_revoked(ctx, client, why, sizeof why), 0);
  cr_tls_ctx_free(ctx);
}

static void test_new_refuses_bad_crl(void **state) {
  cr_tls_identity_src_t id = {NULL, NULL, pki("server.pem"), pki("server.key")};
  cr_tls_ctx_opts_t o;
  cr_tls_ctx_t *ctx = NULL;
  char err[600] = "";
  (void)state;
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.ca_file = pki("ca.pem");
  o.identity = &id;
  o.crl_file = pki("garbage.crl");
  o.crl_mode = CR_TLS_CRL_AUTO;
  assert_int_equal(cr_tls_ctx_new(&o, &ctx, err, sizeof err), CR_ENO_CERT);
  assert_null(ctx);
  assert_non_null(strstr(err, "garbage.crl"));
}

static void test_cipher_list(void **state) {
  char err[300] = "";
  (void)state;
  assert_int_equal(cr_tls_cipher_list_check(CR_TLS_CIPHERS_AEAD, err, sizeof err), 0);
  assert_int_equal(cr_tls_cipher_list_check("ECDHE+AESGCM:ECDHE+AES", err, sizeof err), 0);
  assert_int_equal(cr_tls_cipher_list_check("NO-SUCH-CIPHER", err, sizeof err), CR_ECONFIG);
  assert_non_null(strstr(err, "no TLS 1.2 cipher matches 'NO-SUCH-CIPHER'"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_load_errors),  cmocka_unit_test(test_load_ok),    cmocka_unit_test(test_reload),
      cmocka_unit_test(test_new_refuses_bad_crl), cmocka_unit_test(test_cipher_list),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

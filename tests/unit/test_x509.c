/* SPDX-License-Identifier: Apache-2.0 */
/* The X.509 helpers: the decoder (PEM bundles, DER certificates and CRLs, PKCS#12 modern and legacy,
 * right and wrong passwords, damage, unsupported algorithms), names, SANs, fingerprints checked
 * against a digest computed here, times, the date formatter, "is a CA", the chain a route presents,
 * the error drain, random bytes and digests. Certificates come from tls_pki.h (C API; the legacy
 * PKCS#12 by the openssl command line with -legacy) and a few made here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <uv.h>

#include "ccrelay/error.h"
#include "ccrelay/x509.h"
#include "tls_pki.h"

static EVP_PKEY *ca_key, *leaf_key;
static X509 *ca, *inter, *leaf, *leaf_by_inter;
static X509_CRL *crl;

static unsigned char *slurp(const char *path, size_t *len) {
  unsigned char *data = NULL;
  char err[256];
  assert_int_equal(cr_x509_read_file(path, NULL, 1 << 20, &data, len, err, sizeof err), 0);
  return data;
}

static char *pem_of_cert(X509 *x, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *p, *out;
  PEM_write_bio_X509(bio, x);
  *len = (size_t)BIO_get_mem_data(bio, &p);
  out = malloc(*len + 1);
  memcpy(out, p, *len);
  out[*len] = '\0';
  BIO_free(bio);
  return out;
}

static X509_CRL *make_crl(X509 *issuer, EVP_PKEY *key) {
  X509_CRL *c = X509_CRL_new();
  ASN1_TIME *t = ASN1_TIME_new();
  X509_CRL_set_version(c, 1);
  X509_CRL_set_issuer_name(c, X509_get_subject_name(issuer));
  X509_gmtime_adj(t, 0);
  X509_CRL_set1_lastUpdate(c, t);
  X509_gmtime_adj(t, 86400);
  X509_CRL_set1_nextUpdate(c, t);
  ASN1_TIME_free(t);
  X509_CRL_sign(c, key, EVP_sha256());
  return c;
}

static int group_setup(void **state) {
  EVP_PKEY *inter_key;
  char err[256];
  (void)state;
  if (cr_x509_init(err, sizeof err) != 0 || pki_make() != 0)
    return -1;
  ca_key = EVP_EC_gen("P-256");
  inter_key = EVP_EC_gen("P-256");
  leaf_key = EVP_EC_gen("P-256");
  ca = pki_cert(ca_key, "x509 root", NULL, NULL, 1, NULL, -1, 3650);
  inter = pki_cert(inter_key, "x509 intermediate", ca, ca_key, 1, NULL, -1, 3650);
  leaf = pki_cert(leaf_key, "leaf.example", ca, ca_key, 0, "DNS:leaf.example,DNS:Alt.Example,IP:127.0.0.1", -1, 30);
  leaf_by_inter = pki_cert(leaf_key, "deep.example", inter, inter_key, 0, NULL, -1, 30);
  crl = make_crl(ca, ca_key);
  EVP_PKEY_free(inter_key);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  X509_free(ca);
  X509_free(inter);
  X509_free(leaf);
  X509_free(leaf_by_inter);
  X509_CRL_free(crl);
  EVP_PKEY_free(ca_key);
  EVP_PKEY_free(leaf_key);
  pki_remove();
  return 0;
}

/* ---- decoder ---- */

static void test_decode_pem(void **state) {
  cr_x509_set_t set;
  char err[512], *a, *b, *bundle, fp[CR_X509_FP_HEX + 1], want[CR_X509_FP_HEX + 1];
  size_t alen, blen, n;
  BIO *bio = BIO_new(BIO_s_mem());
  char *crlpem;
  long crllen;
  (void)state;
  a = pem_of_cert(leaf, &alen);
  b = pem_of_cert(ca, &blen);
  PEM_write_bio_X509_CRL(bio, crl);
  PEM_write_bio_PrivateKey(bio, leaf_key, NULL, NULL, 0, NULL, NULL);
  crllen = BIO_get_mem_data(bio, &crlpem);
  /* text around the blocks, as a bundle pasted from a mail would have */
  bundle = malloc(alen + blen + (size_t)crllen + 64);
  n = (size_t)sprintf(bundle, "leaf below\n%s%s", a, b);
  memcpy(bundle + n, crlpem, (size_t)crllen);
  n += (size_t)crllen;

  assert_int_equal(cr_x509_decode(bundle, n, NULL, "bundle.pem", &set, err, sizeof err), 0);
  assert_int_equal(set.format, CR_X509_PEM);
  assert_int_equal(sk_X509_num(set.certs), 2);
  assert_int_equal(sk_X509_CRL_num(set.crls), 1);
  assert_int_equal(set.nother, 1); /* the key: counted, not decoded */
  assert_null(set.key);
  assert_null(set.leaf);
  cr_x509_fingerprint(sk_X509_value(set.certs, 0), fp);
  cr_x509_fingerprint(leaf, want);
  assert_string_equal(fp, want);
  cr_x509_set_free(&set);
  assert_null(set.certs);

  /* A PEM with no certificate at all is not an error: the caller decides. */
  assert_int_equal(cr_x509_decode("-----BEGIN NOTHING-----\nAAAA\n-----END NOTHING-----\n", 51, NULL, "x", &set, err,
                                  sizeof err),
                   0);
  assert_int_equal(sk_X509_num(set.certs), 0);
  assert_int_equal(set.nother, 1);
  cr_x509_set_free(&set);

  /* The second certificate damaged: named by its index; nothing is returned. */
  memcpy(strstr(bundle + alen, "MII") + 40, "!!!!", 4);
  assert_int_equal(cr_x509_decode(bundle, n, NULL, "bundle.pem", &set, err, sizeof err), CR_ETLS);
  assert_non_null(strstr(err, "bundle.pem"));
  assert_non_null(strstr(err, "block 2"));
  assert_null(set.certs);
  assert_int_equal(ERR_peek_error(), 0);
  free(a);
  free(b);
  free(bundle);
  BIO_free(bio);
}

static void test_decode_der(void **state) {
  cr_x509_set_t set;
  unsigned char *der = NULL;
  char err[512];
  int len;
  (void)state;
  len = i2d_X509(leaf, &der);
  assert_true(len > 0);
  assert_int_equal(cr_x509_decode(der, (size_t)len, NULL, "leaf.der", &set, err, sizeof err), 0);
  assert_int_equal(set.format, CR_X509_DER);
  assert_int_equal(sk_X509_num(set.certs), 1);
  assert_int_equal(X509_cmp(sk_X509_value(set.certs, 0), leaf), 0);
  cr_x509_set_free(&set);
  /* One byte more than the certificate: not a DER certificate any more (formats are told apart by
   * consuming all of the input). */
  der = OPENSSL_realloc(der, (size_t)len + 1);
  der[len] = 0;
  assert_int_equal(cr_x509_decode(der, (size_t)len + 1, NULL, "leaf.der", &set, err, sizeof err), CR_ENO_CERT);
  OPENSSL_free(der);

  der = NULL;
  len = i2d_X509_CRL(crl, &der);
  assert_int_equal(cr_x509_decode(der, (size_t)len, NULL, "ca.crl", &set, err, sizeof err), 0);
  assert_int_equal(set.format, CR_X509_DER);
  assert_int_equal(sk_X509_num(set.certs), 0);
  assert_int_equal(sk_X509_CRL_num(set.crls), 1);
  cr_x509_set_free(&set);
  OPENSSL_free(der);

  assert_int_equal(cr_x509_decode("plain text", 10, NULL, "notes.txt", &set, err, sizeof err), CR_ENO_CERT);
  assert_string_equal(err, "no certificate found in notes.txt (expected PEM, DER or PKCS#12)");
  assert_int_equal(cr_x509_decode("", 0, NULL, "empty", &set, err, sizeof err), CR_ENO_CERT);
  assert_int_equal(ERR_peek_error(), 0);
}

/* Decodes a PKCS#12 from the PKI directory both ways: by format detection and as PKCS#12. */
static int p12(const char *file, const char *pass, cr_x509_set_t *set, char *err, size_t errlen) {
  size_t len;
  unsigned char *data = slurp(pki(file), &len);
  cr_x509_set_t again;
  char err2[512];
  int r = cr_x509_decode_pkcs12(data, len, pass, pki(file), set, err, errlen);
  int r2 = cr_x509_decode(data, len, pass, pki(file), &again, err2, sizeof err2);
  /* Detection agrees except for input that is not PKCS#12 at all, which it reports as no certificate. */
  if (r == CR_EP12_CORRUPT && r2 == CR_ENO_CERT)
    r2 = r;
  assert_int_equal(r2, r);
  if (r2 == 0)
    assert_int_equal(again.format, CR_X509_PKCS12);
  cr_x509_set_free(&again);
  free(data);
  return r;
}

static void check_identity(cr_x509_set_t *set) {
  char cn[64];
  assert_int_equal(set->format, CR_X509_PKCS12);
  assert_non_null(set->key);
  assert_non_null(set->leaf);
  cr_x509_common_name(set->leaf, cn, sizeof cn);
  assert_string_equal(cn, "agent-1");
  assert_int_equal(X509_check_private_key(set->leaf, set->key), 1);
  assert_int_equal(sk_X509_num(set->certs), 1); /* the CA that came with it */
  assert_true(cr_x509_is_ca(sk_X509_value(set->certs, 0)));
  cr_x509_set_free(set);
}

static void test_decode_pkcs12(void **state) {
  cr_x509_set_t set;
  char err[512];
  (void)state;
  assert_int_equal(p12("client.p12", PKI_PASS, &set, err, sizeof err), 0);
  check_identity(&set);
  /* Legacy RC2-40/3DES, as made by the API and by `openssl pkcs12 -export -legacy` */
  assert_int_equal(p12("client_legacy_api.p12", PKI_PASS, &set, err, sizeof err), 0);
  check_identity(&set);
  assert_int_equal(p12("client_legacy_cli.p12", PKI_PASS, &set, err, sizeof err), 0);
  check_identity(&set);

  assert_int_equal(p12("client.p12", "wrong", &set, err, sizeof err), CR_EP12_PASSWORD);
  assert_non_null(strstr(err, pki("client.p12")));
  assert_non_null(strstr(err, "wrong PKCS#12 password"));
  assert_null(set.key);
  assert_int_equal(p12("client_legacy_cli.p12", NULL, &set, err, sizeof err), CR_EP12_PASSWORD);
  assert_null(strstr(err, PKI_PASS));

  assert_int_equal(p12("md2.p12", PKI_PASS, &set, err, sizeof err), CR_EP12_UNSUPPORTED);
  assert_non_null(strstr(err, pki("md2.p12")));
  assert_null(strstr(err, PKI_PASS));
  assert_int_equal(p12("corrupt.p12", PKI_PASS, &set, err, sizeof err), CR_EP12_CORRUPT);
  assert_non_null(strstr(err, "not a PKCS#12 file or is damaged"));
  {
    size_t len;
    unsigned char *data = slurp(pki("ca.pem"), &len);
    assert_int_equal(cr_x509_decode_pkcs12(data, len, PKI_PASS, "ca.pem", &set, err, sizeof err), CR_EP12_CORRUPT);
    free(data);
  }
  assert_int_equal(ERR_peek_error(), 0);
}

/* Empty and absent passwords are different bytes on the wire; either opens a file made with either. */
static void test_pkcs12_empty_password(void **state) {
  const char *passes[2] = {"", NULL};
  (void)state;
  for (int i = 0; i < 2; i++) {
    PKCS12 *p = PKCS12_create(passes[i], "x", leaf_key, leaf, NULL, NID_aes_256_cbc, NID_aes_256_cbc, 2048, 2048, 0);
    unsigned char *der = NULL;
    int len;
    assert_non_null(p);
    len = i2d_PKCS12(p, &der);
    PKCS12_free(p);
    for (int j = 0; j < 2; j++) {
      cr_x509_set_t set;
      char err[512];
      assert_int_equal(cr_x509_decode_pkcs12(der, (size_t)len, passes[j], "nopass.p12", &set, err, sizeof err), 0);
      assert_int_equal(X509_cmp(set.leaf, leaf), 0);
      assert_int_equal(sk_X509_num(set.certs), 0);
      cr_x509_set_free(&set);
    }
    OPENSSL_free(der);
  }
}

static void test_pem_key_and_read_file(void **state) {
  unsigned char *data;
  size_t len;
  char detail[256], err[512];
  EVP_PKEY *k;
  (void)state;
  data = slurp(pki("client_enc.key"), &len);
  k = cr_x509_pem_key(data, len, PKI_PASS, detail, sizeof detail);
  assert_non_null(k);
  assert_string_equal(detail, "");
  EVP_PKEY_free(k);
  assert_null(cr_x509_pem_key(data, len, NULL, detail, sizeof detail)); /* never a terminal prompt */
  assert_null(cr_x509_pem_key(data, len, "not-it", NULL, 0));
  assert_int_equal(ERR_peek_error(), 0);
  free(data);

  assert_int_equal(cr_x509_read_file(pki("missing.pem"), "CA file", 100, &data, &len, err, sizeof err), UV_ENOENT);
  assert_non_null(strstr(err, "CA file"));
  assert_non_null(strstr(err, pki("missing.pem")));
  assert_int_equal(cr_x509_read_file(pki("ca.pem"), NULL, 100, &data, &len, err, sizeof err), CR_ELIMIT);
  assert_non_null(strstr(err, "larger than 100 bytes"));
}

/* ---- certificates ---- */

static void test_names(void **state) {
  char out[256];
  (void)state;
  cr_x509_subject(leaf, out, sizeof out);
  assert_string_equal(out, "CN=leaf.example, O=ccrelay tests");
  cr_x509_issuer(leaf, out, sizeof out);
  assert_string_equal(out, "CN=x509 root, O=ccrelay tests");
  cr_x509_subject(leaf, out, 8);
  assert_string_equal(out, "CN=leaf");
  cr_x509_subject(NULL, out, sizeof out);
  assert_string_equal(out, "");
  cr_x509_common_name(leaf, out, sizeof out);
  assert_string_equal(out, "leaf.example");
}

static int collect(const char *dns, void *arg) {
  char *all = arg;
  strcat(all, dns);
  strcat(all, ";");
  return strcmp(dns, "stop.example") == 0 ? 7 : 0;
}

static void test_sans(void **state) {
  char all[256] = "";
  X509 *x;
  (void)state;
  assert_int_equal(cr_x509_each_dns_san(leaf, collect, all), 0);
  assert_string_equal(all, "leaf.example;Alt.Example;"); /* DNS names only, in order */
  assert_true(cr_x509_san_match(leaf, "leaf.example"));
  assert_true(cr_x509_san_match(leaf, "alt.example"));
  assert_false(cr_x509_san_match(leaf, "127.0.0.1"));
  assert_false(cr_x509_san_match(leaf, "example"));
  assert_false(cr_x509_san_match(leaf, ""));
  assert_false(cr_x509_san_match(ca, "x509 root")); /* no SAN extension: the CN is not a SAN */

  /* The walk stops at the first name the callback says yes to. */
  x = pki_cert(leaf_key, "s", ca, ca_key, 0, "DNS:a.example,DNS:stop.example,DNS:z.example", -1, 30);
  all[0] = '\0';
  assert_int_equal(cr_x509_each_dns_san(x, collect, all), 7);
  assert_string_equal(all, "a.example;stop.example;");
  X509_free(x);

  /* URI names (SPIFFE IDs) have their own walk, and the DNS walk does not see them. */
  x = pki_cert(leaf_key, "u", ca, ca_key, 0, "DNS:d.example,URI:spiffe://corp/ns/a,URI:stop.example", -1, 30);
  all[0] = '\0';
  assert_int_equal(cr_x509_each_uri_san(x, collect, all), 7);
  assert_string_equal(all, "spiffe://corp/ns/a;stop.example;");
  all[0] = '\0';
  assert_int_equal(cr_x509_each_dns_san(x, collect, all), 0);
  assert_string_equal(all, "d.example;");
  all[0] = '\0';
  assert_int_equal(cr_x509_each_uri_san(leaf, collect, all), 0);
  assert_string_equal(all, "");
  X509_free(x);

  /* A name with a NUL inside would match "evil.example" if cut short: it is skipped. */
  {
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    x = pki_cert(leaf_key, "nul", ca, ca_key, 0, NULL, -1, 30);
    ASN1_STRING_set(s, "evil.example\0.good.example", 26);
    GENERAL_NAME_set0_value(gn, GEN_DNS, s);
    sk_GENERAL_NAME_push(gens, gn);
    X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT);
    GENERAL_NAMES_free(gens);
    assert_false(cr_x509_san_match(x, "evil.example"));
    all[0] = '\0';
    assert_int_equal(cr_x509_each_dns_san(x, collect, all), 0);
    assert_string_equal(all, "");
    X509_free(x);
  }
}

/* A version 1 certificate (no extensions at all), self-signed when issuer is NULL. */
static X509 *v1_cert(EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key) {
  X509 *x = X509_new();
  X509_set_version(x, 0);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"v1", -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  X509_set_pubkey(x, key);
  X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
  return x;
}

static void test_is_ca(void **state) {
  EVP_PKEY *k = EVP_EC_gen("P-256");
  X509 *v1;
  (void)state;
  assert_true(cr_x509_is_ca(ca));
  assert_true(cr_x509_is_ca(inter));
  assert_false(cr_x509_is_ca(leaf));
  /* An old version 1 root carries no extensions at all, and is a CA all the same... */
  v1 = v1_cert(k, NULL, NULL);
  assert_true(cr_x509_is_ca(v1));
  X509_free(v1);
  /* ...but a version 1 certificate another CA issued is a leaf. */
  v1 = v1_cert(k, ca, ca_key);
  assert_false(cr_x509_is_ca(v1));
  X509_free(v1);
  EVP_PKEY_free(k);
}

static void hex_sha256(const unsigned char *der, int len, char out[65]) {
  unsigned char md[32];
  unsigned int n = 32;
  assert_int_equal(EVP_Digest(der, (size_t)len, md, &n, EVP_sha256(), NULL), 1);
  for (int i = 0; i < 32; i++)
    sprintf(out + 2 * i, "%02x", md[i]);
}

static void test_fingerprints(void **state) {
  unsigned char *der = NULL;
  char fp[CR_X509_FP_HEX + 1], want[65];
  int len;
  (void)state;
  len = i2d_X509(leaf, &der);
  hex_sha256(der, len, want);
  OPENSSL_free(der);
  cr_x509_fingerprint(leaf, fp);
  assert_int_equal(strlen(fp), CR_X509_FP_HEX);
  assert_string_equal(fp, want);
  der = NULL;
  len = i2d_X509_CRL(crl, &der);
  hex_sha256(der, len, want);
  OPENSSL_free(der);
  cr_x509_crl_fingerprint(crl, fp);
  assert_string_equal(fp, want);
  cr_x509_fingerprint(ca, want);
  assert_string_not_equal(fp, want);
}

static void test_times(void **state) {
  ASN1_TIME *t = ASN1_TIME_new();
  char out[CR_X509_TIME_MAX];
  time_t now = time(NULL), na;
  (void)state;
  assert_int_equal(ASN1_TIME_set_string(t, "20250131235959Z"), 1); /* GeneralizedTime */
  assert_int_equal(cr_x509_time(t), 1738367999);
  assert_int_equal(ASN1_TIME_set_string(t, "250131235959Z"), 1); /* UTCTime */
  assert_int_equal(cr_x509_time(t), 1738367999);
  assert_int_equal(ASN1_TIME_set_string(t, "20500101000000Z"), 1); /* past 2038 */
  assert_int_equal(cr_x509_time(t), 2524608000);
  ASN1_STRING_set(t, "not a time", 10);
  assert_int_equal(cr_x509_time(t), 0);
  assert_int_equal(cr_x509_time(NULL), 0);
  assert_int_equal(ERR_peek_error(), 0);
  ASN1_TIME_free(t);

  /* leaf: notBefore a day ago, notAfter in 30 days (X509_time_adj_ex, to the second) */
  na = cr_x509_not_after(leaf);
  assert_true(na >= now + 30 * 86400 - 5 && na <= now + 30 * 86400 + 5);
  assert_true(cr_x509_not_before(leaf) <= now - 86400 + 5);
  assert_int_equal(cr_x509_not_after(NULL), 0);

  assert_string_equal(cr_x509_fmt_time(1738367999, CR_X509_TIME_ISO, out, sizeof out), "2025-01-31T23:59:59Z");
  assert_string_equal(cr_x509_fmt_time(1738367999, CR_X509_TIME_DATE, out, sizeof out), "2025-01-31");
  assert_string_equal(cr_x509_fmt_time(2524608000, CR_X509_TIME_ISO, out, sizeof out), "2050-01-01T00:00:00Z");
  assert_string_equal(cr_x509_fmt_time(0, CR_X509_TIME_ISO, out, sizeof out), "-");
  assert_string_equal(cr_x509_fmt_time(1738367999, CR_X509_TIME_ISO, out, 5), ""); /* does not fit: nothing */
}

static void test_chain_after_leaf(void **state) {
  STACK_OF(X509) *verified = sk_X509_new_null(), *out;
  (void)state;
  sk_X509_push(verified, leaf_by_inter);
  sk_X509_push(verified, inter);
  sk_X509_push(verified, ca);
  out = cr_x509_chain_after_leaf(verified);
  assert_int_equal(sk_X509_num(out), 1); /* without the leaf and the self-signed root */
  assert_ptr_equal(sk_X509_value(out, 0), inter);
  cr_x509_chain_free(out);
  (void)sk_X509_pop(verified); /* anchored at the intermediate: it stays */
  out = cr_x509_chain_after_leaf(verified);
  assert_int_equal(sk_X509_num(out), 1);
  cr_x509_chain_free(out);
  sk_X509_free(verified);
  cr_x509_chain_free(NULL);
}

/* ---- errors, randomness, digests ---- */

static void test_drain_errors(void **state) {
  char out[256], small[12];
  int unsupported = -1;
  (void)state;
  ERR_clear_error();
  cr_x509_drain_errors(out, sizeof out, &unsupported);
  assert_string_equal(out, "");
  assert_int_equal(unsupported, 0);

  ERR_raise_data(ERR_LIB_PEM, PEM_R_NO_START_LINE, "file %s", "a.pem");
  ERR_raise(ERR_LIB_X509, X509_R_CERT_ALREADY_IN_HASH_TABLE);
  cr_x509_drain_errors(out, sizeof out, &unsupported);
  assert_string_equal(out, "no start line: file a.pem; cert already in hash table");
  assert_int_equal(unsupported, 0);
  assert_int_equal(ERR_peek_error(), 0);

  /* "unsupported" by code, or "unknown"/"unsupported" in the reason text in any case (a provider's
   * reasons are its own strings: one is made here in capitals) */
  {
    static ERR_STRING_DATA ours[] = {{0, "Unknown Cipher In Provider"}, {0, NULL}};
    static const struct {
      int lib, reason, unsupported;
      const char *text;
    } cases[] = {
        {ERR_LIB_EVP, ERR_R_UNSUPPORTED, 1, "unsupported"},
        {ERR_LIB_EVP, EVP_R_UNKNOWN_CIPHER, 1, "unknown cipher"},
        {0, 1, 1, "Unknown Cipher In Provider"},
        {ERR_LIB_PKCS12, PKCS12_R_MAC_VERIFY_FAILURE, 0, "mac verify failure"},
    };
    int lib = ERR_get_next_error_library();
    ours[0].error = ERR_PACK(lib, 0, 1);
    ERR_load_strings(lib, ours);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
      ERR_raise(cases[i].lib ? cases[i].lib : lib, cases[i].reason);
      cr_x509_drain_errors(out, sizeof out, &unsupported);
      assert_string_equal(out, cases[i].text);
      assert_int_equal(unsupported, cases[i].unsupported);
    }
  }

  /* What does not fit is cut, and drained all the same; a zero-sized buffer only drains. */
  ERR_raise(ERR_LIB_PKCS12, PKCS12_R_MAC_VERIFY_FAILURE);
  ERR_raise(ERR_LIB_EVP, ERR_R_UNSUPPORTED);
  cr_x509_drain_errors(small, sizeof small, &unsupported);
  assert_string_equal(small, "mac verify ");
  assert_int_equal(unsupported, 1);
  assert_int_equal(ERR_peek_error(), 0);
  ERR_raise(ERR_LIB_EVP, ERR_R_UNSUPPORTED);
  cr_x509_drain_errors(NULL, 0, NULL);
  assert_int_equal(ERR_peek_error(), 0);
}

static void test_random_and_digest(void **state) {
  unsigned char a[32], b[32], zero[32] = {0}, md[32];
  static const unsigned char abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  (void)state;
  assert_int_equal(cr_x509_random_bytes(a, sizeof a), 0);
  assert_int_equal(cr_x509_random_bytes(b, sizeof b), 0);
  assert_false(cr_x509_mem_equal(a, b, sizeof a));
  assert_false(cr_x509_mem_equal(a, zero, sizeof a));
  assert_true(cr_x509_mem_equal(a, a, sizeof a));
  cr_x509_sha256("abc", 3, md);
  assert_memory_equal(md, abc, 32);
  assert_true(cr_x509_mem_equal(md, abc, 32));
  md[31] ^= 1;
  assert_false(cr_x509_mem_equal(md, abc, 32));
  assert_non_null(strstr(cr_x509_openssl_version(), "OpenSSL"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_pem),
      cmocka_unit_test(test_decode_der),
      cmocka_unit_test(test_decode_pkcs12),
      cmocka_unit_test(test_pkcs12_empty_password),
      cmocka_unit_test(test_pem_key_and_read_file),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_sans),
      cmocka_unit_test(test_is_ca),
      cmocka_unit_test(test_fingerprints),
      cmocka_unit_test(test_times),
      cmocka_unit_test(test_chain_after_leaf),
      cmocka_unit_test(test_drain_errors),
      cmocka_unit_test(test_random_and_digest),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The trusted-root store: add/list/remove, prefixes, idempotence, refusals, atomicity under a write
 * that fails midway (RLIMIT_FSIZE makes the second file's write fail with EFBIG, as root too), CRLs,
 * X509_STORE export and OpenSSL's verification reasons. Certificates come from tls_pki.h (C API) and
 * a few made here; PKCS#12 files from pki_make (one of them by the openssl command line). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "tls_pki.h"

/* Our own certificates, in memory. */
static EVP_PKEY *root_key, *inter_key, *other_key, *leaf_key;
static X509 *root, *inter, *other_root, *expired_root, *big_root, *small_root;
static X509 *leaf_by_inter, *leaf_by_root, *leaf_revoked, *leaf_expired, *leaf_unknown, *leaf_server_only;
static char store_dir[64];

static void rm_store(void) {
  DIR *d = opendir(store_dir);
  struct dirent *e;
  char path[512];
  if (d == NULL)
    return;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    snprintf(path, sizeof path, "%s/%s", store_dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(store_dir);
}

/* A fresh, empty store directory for each test. */
static cr_truststore_t *fresh_store(void) {
  cr_truststore_t *ts = NULL;
  char err[512];
  rm_store();
  snprintf(store_dir, sizeof store_dir, "/tmp/ccrelay-trust-XXXXXX");
  assert_non_null(mkdtemp(store_dir));
  chmod(store_dir, 0700);
  assert_int_equal(cr_truststore_open(store_dir, 0, &ts, err, sizeof err), 0);
  return ts;
}

static char *pem_of(X509 *x, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *p, *out;
  long n;
  PEM_write_bio_X509(bio, x);
  n = BIO_get_mem_data(bio, &p);
  out = malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  *len = (size_t)n;
  BIO_free(bio);
  return out;
}

/* Adds the certificates through a batch of their concatenated PEM. */
static int add_pems(cr_truststore_t *ts, X509 **certs, int n, unsigned flags, cr_trust_report_t *rep, char *err,
                    size_t errlen) {
  cr_trust_batch_t *b = cr_trust_batch_new();
  char *all = NULL;
  size_t total = 0;
  int r;
  for (int i = 0; i < n; i++) {
    size_t len;
    char *p = pem_of(certs[i], &len);
    all = realloc(all, total + len + 1);
    memcpy(all + total, p, len + 1);
    total += len;
    free(p);
  }
  r = cr_trust_batch_add_mem(b, all, total, NULL, "bundle.pem", err, errlen);
  free(all);
  if (r == 0)
    r = cr_truststore_add(ts, b, flags, rep, err, errlen);
  cr_trust_batch_free(b);
  return r;
}

/* Every entry of the store directory, dot files included, with sizes and contents. */
static char *snapshot(void) {
  DIR *d = opendir(store_dir);
  struct dirent *e;
  char **names = NULL, *out = calloc(1, 1);
  size_t n = 0, len = 0;
  assert_non_null(d);
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    names = realloc(names, (n + 1) * sizeof *names);
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++)
      if (strcmp(names[i], names[j]) > 0) {
        char *t = names[i];
        names[i] = names[j];
        names[j] = t;
      }
  for (size_t i = 0; i < n; i++) {
    char path[512], buf[8192];
    FILE *f;
    size_t k;
    snprintf(path, sizeof path, "%s/%s", store_dir, names[i]);
    f = fopen(path, "rb");
    k = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
      fclose(f);
    out = realloc(out, len + strlen(names[i]) + k + 4);
    len += (size_t)sprintf(out + len, "%s\n", names[i]);
    memcpy(out + len, buf, k);
    len += k;
    out[len] = '\0';
    free(names[i]);
  }
  free(names);
  return out;
}

static int count_tmp_files(void) {
  DIR *d = opendir(store_dir);
  struct dirent *e;
  int n = 0;
  while (d && (e = readdir(d)) != NULL)
    n += strncmp(e->d_name, ".tmp-", 5) == 0;
  if (d)
    closedir(d);
  return n;
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
    X509_time_adj_ex(t, this_days, 0, NULL);
    X509_REVOKED_set_serialNumber(rv, X509_get_serialNumber(revoked));
    X509_REVOKED_set_revocationDate(rv, t);
    X509_CRL_add0_revoked(crl, rv);
  }
  X509_CRL_sort(crl);
  X509_CRL_sign(crl, key, EVP_sha256());
  ASN1_TIME_free(t);
  return crl;
}

static char *crl_pem(X509_CRL *crl, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *p, *out;
  long n;
  PEM_write_bio_X509_CRL(bio, crl);
  n = BIO_get_mem_data(bio, &p);
  out = malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  *len = (size_t)n;
  BIO_free(bio);
  return out;
}

static size_t count_files(const char *suffix) {
  cr_truststore_t *ts;
  cr_trust_list_t l;
  char err[256];
  size_t n;
  assert_int_equal(cr_truststore_open(store_dir, 0, &ts, err, sizeof err), 0);
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  n = strcmp(suffix, "crl") == 0 ? l.ncrls : l.ncerts;
  cr_trust_list_free(&l);
  cr_truststore_close(ts);
  return n;
}

/* ---- tests ---- */

static void test_open(void **state) {
  cr_truststore_t *ts = NULL;
  char err[512], path[128], file[160];
  struct stat st;
  FILE *f;
  ts = fresh_store();
  cr_truststore_close(ts);
  snprintf(path, sizeof path, "%s/sub", store_dir);
  assert_int_equal(cr_truststore_open(path, 0, &ts, err, sizeof err), UV_ENOENT);
  assert_non_null(strstr(err, path));
  assert_int_equal(cr_truststore_open(path, CR_TRUSTSTORE_CREATE, &ts, err, sizeof err), 0);
  assert_string_equal(cr_truststore_dir(ts), path);
  cr_truststore_close(ts);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  chmod(path, 0777);
  assert_int_equal(cr_truststore_open(path, 0, &ts, err, sizeof err), UV_EPERM);
  assert_non_null(strstr(err, "world-writable"));
  assert_non_null(strstr(err, "chmod go-w"));
  chmod(path, 0770);
  assert_int_equal(cr_truststore_open(path, 0, &ts, err, sizeof err), UV_EPERM);
  assert_non_null(strstr(err, "group-writable"));
  rmdir(path);
  snprintf(file, sizeof file, "%s/afile", store_dir);
  f = fopen(file, "w");
  fclose(f);
  assert_int_equal(cr_truststore_open(file, CR_TRUSTSTORE_CREATE, &ts, err, sizeof err), UV_ENOTDIR);
  unlink(file);
}

static void test_add_list_remove(void **state) {
  cr_truststore_t *ts = fresh_store();
  cr_trust_report_t rep;
  cr_trust_list_t l;
  cr_trust_batch_t *b;
  X509 *bundle[2] = {root, inter};
  char err[2048], fp[CR_TRUST_FP_HEX + 1], removed[CR_TRUST_FP_HEX + 1], prefix[8];
  unsigned char *der = NULL;
  int derlen;
  /* a PEM bundle: root and intermediate */
  assert_int_equal(add_pems(ts, bundle, 2, 0, &rep, err, sizeof err), 0);
  assert_int_equal(rep.n, 2);
  assert_int_equal(rep.v[0].status, CR_TRUST_ADDED);
  assert_int_equal(rep.v[0].intermediate, 0);
  assert_non_null(strstr(rep.v[0].source, "bundle.pem, certificate 1 of 2"));
  assert_int_equal(rep.v[1].status, CR_TRUST_ADDED);
  assert_int_equal(rep.v[1].intermediate, 1);
  assert_int_equal(rep.v[1].issuer_present, 1);
  cr_trust_report_free(&rep);
  /* duplicates are idempotent */
  assert_int_equal(add_pems(ts, bundle, 2, 0, &rep, err, sizeof err), 0);
  assert_int_equal(rep.v[0].status, CR_TRUST_PRESENT);
  assert_int_equal(rep.v[1].status, CR_TRUST_PRESENT);
  cr_trust_report_free(&rep);
  /* DER */
  derlen = i2d_X509(other_root, &der);
  b = cr_trust_batch_new();
  assert_int_equal(cr_trust_batch_add_mem(b, der, (size_t)derlen, NULL, "other.der", err, sizeof err), 0);
  OPENSSL_free(der);
  assert_int_equal(cr_truststore_add(ts, b, 0, NULL, err, sizeof err), 0);
  cr_trust_batch_free(b);
  /* PKCS#12 (modern, and legacy made by the openssl command line): only the CA it carries */
  b = cr_trust_batch_new();
  assert_int_equal(cr_trust_batch_add_file(b, pki("client.p12"), NULL, err, sizeof err), CR_EP12_PASSWORD);
  assert_non_null(strstr(err, "--password-file"));
  assert_int_equal(cr_trust_batch_add_file(b, pki("client.p12"), PKI_PASS, err, sizeof err), 0);
  assert_int_equal(cr_trust_batch_add_file(b, pki("client_legacy_cli.p12"), PKI_PASS, err, sizeof err), 0);
  assert_int_equal(cr_trust_batch_count(b), 2);
  assert_int_equal(cr_truststore_add(ts, b, 0, &rep, err, sizeof err), 0);
  assert_int_equal(rep.n, 2);
  assert_string_equal(rep.v[0].subject, "CN=ccrelay test CA, O=ccrelay tests");
  assert_int_equal(rep.v[0].status, CR_TRUST_ADDED);
  assert_int_equal(rep.v[1].status, CR_TRUST_PRESENT); /* the same CA twice in one batch */
  cr_trust_report_free(&rep);
  cr_trust_batch_free(b);

  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(l.ncerts, 4);
  assert_int_equal(l.nproblems, 0);
  for (size_t i = 0; i < l.ncerts; i++) {
    char name[128];
    assert_true(l.certs[i].is_ca);
    assert_false(l.certs[i].expired);
    assert_true(l.certs[i].days_left > 300);
    snprintf(name, sizeof name, "/%s.pem", l.certs[i].fingerprint);
    assert_non_null(strstr(l.certs[i].path, name));
    if (strstr(l.certs[i].subject, "trust intermediate"))
      assert_false(l.certs[i].self_signed);
  }
  cr_trust_list_free(&l);

  /* remove by prefix (upper case and colons accepted), then it is gone */
  cr_x509_fingerprint(other_root, fp);
  snprintf(prefix, sizeof prefix, "%c%c:%c%c%c", fp[0], fp[1], fp[2], fp[3], fp[4]);
  for (char *p = prefix; *p; p++)
    if (*p >= 'a' && *p <= 'f')
      *p = (char)(*p - 'a' + 'A');
  assert_int_equal(cr_truststore_remove(ts, prefix, removed, err, sizeof err), 0);
  assert_string_equal(removed, fp);
  assert_int_equal(cr_truststore_remove(ts, fp, removed, err, sizeof err), UV_ENOENT);
  assert_int_equal(cr_truststore_remove(ts, "abc", removed, err, sizeof err), UV_EINVAL);
  assert_int_equal(cr_truststore_remove(ts, "not-hex!", removed, err, sizeof err), UV_EINVAL);
  assert_int_equal(count_files("cert"), 3);
  assert_int_equal(count_tmp_files(), 0);
  cr_truststore_close(ts);
}

/* Two roots whose fingerprints share the first four hex digits, found by trying serials (a few
 * hundred on average: the birthday bound over 65536 prefixes). */
static void test_ambiguous_prefix(void **state) {
  static X509 *by_prefix[65536];
  cr_truststore_t *ts = fresh_store();
  X509 *twins[2] = {NULL, NULL};
  char err[4096], fp[CR_TRUST_FP_HEX + 1], prefix[8];
  for (int i = 0; i < 20000 && twins[0] == NULL; i++) {
    X509 *x = pki_cert(root_key, "prefix twin", NULL, NULL, 1, NULL, -1, 30);
    unsigned slot;
    cr_x509_fingerprint(x, fp);
    memcpy(prefix, fp, 4);
    prefix[4] = '\0';
    slot = (unsigned)strtoul(prefix, NULL, 16);
    if (by_prefix[slot]) {
      twins[0] = by_prefix[slot];
      twins[1] = x;
      by_prefix[slot] = NULL;
    } else {
      by_prefix[slot] = x;
    }
  }
  for (size_t i = 0; i < CR_ARRAY_SIZE(by_prefix); i++) {
    X509_free(by_prefix[i]);
    by_prefix[i] = NULL;
  }
  assert_non_null(twins[0]);
  assert_int_equal(add_pems(ts, twins, 2, 0, NULL, err, sizeof err), 0);
  assert_int_equal(cr_truststore_remove(ts, prefix, NULL, err, sizeof err), CR_EAMBIGUOUS);
  assert_non_null(strstr(err, "ambiguous"));
  assert_non_null(strstr(err, "CN=prefix twin"));
  cr_x509_fingerprint(twins[0], fp);
  assert_non_null(strstr(err, fp));
  cr_x509_fingerprint(twins[1], fp);
  assert_non_null(strstr(err, fp));
  /* the whole fingerprint is unique, and then so is the prefix */
  assert_int_equal(cr_truststore_remove(ts, fp, NULL, err, sizeof err), 0);
  assert_int_equal(cr_truststore_remove(ts, prefix, NULL, err, sizeof err), 0);
  assert_int_equal(count_files("cert"), 0);
  assert_int_equal(count_tmp_files(), 0);
  X509_free(twins[0]);
  X509_free(twins[1]);
  cr_truststore_close(ts);
}

static void test_refusals(void **state) {
  cr_truststore_t *ts = fresh_store();
  cr_trust_report_t rep;
  cr_trust_batch_t *b;
  X509 *bad_bundle[2] = {root, leaf_by_root};
  char err[2048], *before;
  before = snapshot();
  /* a leaf, alone and in a bundle: nothing is written, the message names index and subject */
  assert_int_equal(add_pems(ts, &leaf_by_root, 1, 0, NULL, err, sizeof err), CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "is not a CA certificate (basicConstraints CA:FALSE); add its issuing root instead"));
  assert_int_equal(add_pems(ts, bad_bundle, 2, 0, NULL, err, sizeof err), CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "bundle.pem, certificate 2 of 2: CN=trust leaf by root, O=ccrelay tests"));
  assert_int_equal(add_pems(ts, bad_bundle, 2, CR_TRUST_FORCE, NULL, err, sizeof err), CR_ETRUST_REFUSED);
  /* an expired root, unless forced */
  assert_int_equal(add_pems(ts, &expired_root, 1, 0, NULL, err, sizeof err), CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "has expired"));
  assert_non_null(strstr(err, "--force"));
  /* garbage, empty input, a CRL given to add */
  b = cr_trust_batch_new();
  assert_int_equal(cr_trust_batch_add_mem(b, "hello\n", 6, NULL, "garbage.txt", err, sizeof err), CR_ENO_CERT);
  assert_string_equal(err, "no certificate found in garbage.txt (expected PEM, DER or PKCS#12)");
  assert_int_equal(cr_trust_batch_add_mem(b, "", 0, NULL, "empty", err, sizeof err), CR_ENO_CERT);
  assert_int_equal(cr_trust_batch_add_file(b, pki("corrupt.p12"), PKI_PASS, err, sizeof err), CR_ENO_CERT);
  assert_int_equal(cr_trust_batch_add_file(b, "/nonexistent/x.pem", NULL, err, sizeof err), UV_ENOENT);
  assert_int_equal(cr_trust_batch_add_mem(b, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", 60,
                                          NULL, "broken.pem", err, sizeof err),
                   CR_ETLS);
  assert_non_null(strstr(err, "broken.pem: PEM block 1"));
  assert_int_equal(cr_trust_batch_count(b), 0);
  assert_int_equal(cr_truststore_add(ts, b, 0, NULL, err, sizeof err), CR_ENO_CERT);
  cr_trust_batch_free(b);
  {
    char *now = snapshot();
    assert_string_equal(now, before);
    free(now);
  }
  /* forced: added, flagged expired */
  assert_int_equal(add_pems(ts, &expired_root, 1, CR_TRUST_FORCE, &rep, err, sizeof err), 0);
  assert_int_equal(rep.v[0].expired, 1);
  cr_trust_report_free(&rep);
  free(before);
  cr_truststore_close(ts);
}

/* The second file's write fails (file size limit); the first file, already renamed into place, is
 * rolled back: the directory is byte-identical and holds no temporary file. */
static void test_atomic_failure(void **state) {
  cr_truststore_t *ts = fresh_store();
  X509 *batch[2] = {small_root, big_root};
  struct rlimit old, lim;
  char err[1024], *before, *after;
  size_t small_len, big_len;
  free(pem_of(small_root, &small_len));
  free(pem_of(big_root, &big_len));
  assert_true(small_len < 1500 && big_len > 1600);
  assert_int_equal(add_pems(ts, &root, 1, 0, NULL, err, sizeof err), 0);
  before = snapshot();
  signal(SIGXFSZ, SIG_IGN);
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 1550;
  setrlimit(RLIMIT_FSIZE, &lim);
  int r = add_pems(ts, batch, 2, 0, NULL, err, sizeof err);
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_DFL);
  assert_int_equal(r, UV_EFBIG);
  assert_non_null(strstr(err, "the store is unchanged"));
  assert_non_null(strstr(err, store_dir));
  after = snapshot();
  assert_string_equal(after, before);
  assert_int_equal(count_tmp_files(), 0);
  free(after);
  /* Without root privileges a read-only directory gives EACCES, with the same guarantee. */
  if (geteuid() != 0) {
    chmod(store_dir, 0500);
    assert_int_equal(add_pems(ts, &small_root, 1, 0, NULL, err, sizeof err), UV_EACCES);
    chmod(store_dir, 0700);
    after = snapshot();
    assert_string_equal(after, before);
    free(after);
  }
  /* and the same batch succeeds without the limit */
  assert_int_equal(add_pems(ts, batch, 2, 0, NULL, err, sizeof err), 0);
  assert_int_equal(count_files("cert"), 3);
  free(before);
  cr_truststore_close(ts);
}

static void expect_verify(cr_truststore_t *ts, X509 *leaf, int purpose, int mode, int want_x509_err,
                          const char *want_text) {
  STACK_OF(X509) *chain = NULL;
  char err[1024], warn[512];
  int x509_err = -1;
  int r = cr_truststore_verify(ts, leaf, NULL, purpose, mode, &chain, &x509_err, warn, sizeof warn, err, sizeof err);
  if (want_x509_err == X509_V_OK) {
    if (r != 0)
      fail_msg("expected success, got: %s", err);
    assert_non_null(chain);
    sk_X509_pop_free(chain, X509_free);
  } else {
    assert_int_equal(r, CR_ETLS_VERIFY);
    assert_null(chain);
    if (x509_err != want_x509_err)
      fail_msg("expected X509 error %d, got %d: %s", want_x509_err, x509_err, err);
    if (strstr(err, want_text) == NULL)
      fail_msg("'%s' not in '%s'", want_text, err);
  }
}

static void test_verify_reasons(void **state) {
  cr_truststore_t *ts = fresh_store();
  X509 *anchors[3] = {root, inter, expired_root};
  STACK_OF(X509) *chain = NULL, *untrusted;
  X509_STORE *st;
  X509_CRL *crl;
  char err[1024], warn[512], fp[CR_TRUST_FP_HEX + 1];
  size_t len;
  char *pem;
  assert_int_equal(cr_truststore_x509_store(ts, CR_TRUST_CRL_OFF, &st, err, sizeof err), CR_ENO_CERT);
  assert_int_equal(add_pems(ts, anchors, 2, 0, NULL, err, sizeof err), 0);
  /* the chain built: leaf, intermediate (from the store), root */
  assert_int_equal(cr_truststore_verify(ts, leaf_by_inter, NULL, CR_TRUST_PURPOSE_CLIENT, CR_TRUST_CRL_OFF, &chain,
                                        NULL, NULL, 0, err, sizeof err),
                   0);
  assert_int_equal(sk_X509_num(chain), 3);
  assert_int_equal(X509_cmp(sk_X509_value(chain, 1), inter), 0);
  assert_int_equal(X509_cmp(sk_X509_value(chain, 2), root), 0);
  sk_X509_pop_free(chain, X509_free);
  expect_verify(ts, leaf_by_root, CR_TRUST_PURPOSE_SERVER, CR_TRUST_CRL_OFF, X509_V_OK, NULL);
  expect_verify(ts, leaf_unknown, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                "unable to get local issuer certificate (depth 0: CN=trust leaf unknown, O=ccrelay tests)");
  expect_verify(ts, leaf_expired, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF, X509_V_ERR_CERT_HAS_EXPIRED,
                "certificate has expired (depth 0:");
  expect_verify(ts, leaf_server_only, CR_TRUST_PURPOSE_CLIENT, CR_TRUST_CRL_OFF, X509_V_ERR_INVALID_PURPOSE,
                "unsuitable certificate purpose");
  expect_verify(ts, leaf_server_only, CR_TRUST_PURPOSE_SERVER, CR_TRUST_CRL_OFF, X509_V_OK, NULL);
  /* an intermediate given by the caller instead of the store */
  assert_int_equal(cr_truststore_remove(ts, (cr_x509_fingerprint(inter, fp), fp), NULL, err, sizeof err), 0);
  expect_verify(ts, leaf_by_inter, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF,
                X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "unable to get local issuer certificate");
  untrusted = sk_X509_new_null();
  sk_X509_push(untrusted, inter);
  assert_int_equal(cr_truststore_verify(ts, leaf_by_inter, untrusted, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF, NULL,
                                        NULL, NULL, 0, err, sizeof err),
                   0);
  sk_X509_free(untrusted);
  /* an expired root in the store (forced in) */
  assert_int_equal(add_pems(ts, &anchors[2], 1, CR_TRUST_FORCE, NULL, err, sizeof err), 0);
  {
    X509 *by_expired = pki_cert(leaf_key, "leaf under expired root", expired_root, other_key, 0, NULL, -1, 30);
    expect_verify(ts, by_expired, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF, X509_V_ERR_CERT_HAS_EXPIRED,
                  "certificate has expired (depth 1: CN=trust expired root, O=ccrelay tests)");
    X509_free(by_expired);
  }
  /* revocation: the root's CRL revokes one leaf */
  crl = make_crl(root, root_key, leaf_revoked, -1, 7);
  pem = crl_pem(crl, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "root.crl", 0, NULL, NULL, err, sizeof err), 0);
  free(pem);
  X509_CRL_free(crl);
  expect_verify(ts, leaf_revoked, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_OFF, X509_V_OK, NULL);
  expect_verify(ts, leaf_revoked, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_HARD, X509_V_ERR_CERT_REVOKED,
                "certificate revoked (depth 0: CN=trust leaf revoked, O=ccrelay tests)");
  expect_verify(ts, leaf_revoked, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_SOFT, X509_V_ERR_CERT_REVOKED,
                "certificate revoked");
  expect_verify(ts, leaf_by_root, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_HARD, X509_V_OK, NULL);
  /* a chain through an intermediate without its CRL: hard fails, soft passes with a warning */
  assert_int_equal(add_pems(ts, &inter, 1, 0, NULL, err, sizeof err), 0);
  expect_verify(ts, leaf_by_inter, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_HARD, X509_V_ERR_UNABLE_TO_GET_CRL,
                "unable to get certificate CRL");
  assert_int_equal(cr_truststore_verify(ts, leaf_by_inter, NULL, CR_TRUST_PURPOSE_ANY, CR_TRUST_CRL_SOFT, NULL, NULL,
                                        warn, sizeof warn, err, sizeof err),
                   0);
  assert_non_null(strstr(warn, "unable to get certificate CRL (depth 0: CN=trust leaf by inter, O=ccrelay tests)"));
  /* the exported store carries the same rules */
  assert_int_equal(cr_truststore_x509_store(ts, CR_TRUST_CRL_HARD, &st, err, sizeof err), 0);
  assert_int_equal(cr_trust_verify_store(st, leaf_revoked, NULL, CR_TRUST_PURPOSE_ANY, NULL, NULL, NULL, 0, err,
                                         sizeof err),
                   CR_ETLS_VERIFY);
  assert_int_equal(cr_trust_verify_store(st, leaf_by_root, NULL, CR_TRUST_PURPOSE_ANY, NULL, NULL, NULL, 0, err,
                                         sizeof err),
                   0);
  X509_STORE_free(st);
  assert_true(cr_trust_crl_soft_error(X509_V_ERR_UNABLE_TO_GET_CRL));
  assert_true(cr_trust_crl_soft_error(X509_V_ERR_CRL_HAS_EXPIRED));
  assert_false(cr_trust_crl_soft_error(X509_V_ERR_CERT_REVOKED));
  assert_false(cr_trust_crl_soft_error(X509_V_ERR_CRL_SIGNATURE_FAILURE));
  cr_truststore_close(ts);
}

static void test_crls(void **state) {
  cr_truststore_t *ts = fresh_store();
  cr_trust_list_t l;
  X509_CRL *old_crl, *new_crl, *stale, *foreign, *forged;
  char err[1024], fp[CR_TRUST_FP_HEX + 1], fp2[CR_TRUST_FP_HEX + 1], *pem;
  size_t len;
  int present;
  old_crl = make_crl(root, root_key, NULL, -3, 7);
  new_crl = make_crl(root, root_key, leaf_revoked, -1, 7);
  stale = make_crl(root, root_key, NULL, -10, -1);
  foreign = make_crl(other_root, other_key, NULL, -1, 7);
  forged = make_crl(root, other_key, NULL, -1, 7);
  /* issuer not in the store */
  pem = crl_pem(old_crl, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "old.crl", 0, fp, &present, err, sizeof err),
                   CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "is not in the trust store; add that CA first"));
  assert_int_equal(add_pems(ts, &root, 1, 0, NULL, err, sizeof err), 0);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "old.crl", 0, fp, &present, err, sizeof err), 0);
  assert_int_equal(present, 0);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "old.crl", 0, fp2, &present, err, sizeof err), 0);
  assert_int_equal(present, 1);
  assert_string_equal(fp, fp2);
  free(pem);
  /* DER input, newer: replaces the old one */
  {
    unsigned char *der = NULL;
    int n = i2d_X509_CRL(new_crl, &der);
    assert_int_equal(cr_truststore_add_crl_mem(ts, der, (size_t)n, "new.der", 0, fp2, &present, err, sizeof err),
                     0);
    OPENSSL_free(der);
  }
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(l.ncrls, 1);
  assert_string_equal(l.crls[0].fingerprint, fp2);
  assert_int_equal(l.crls[0].nrevoked, 1);
  assert_false(l.crls[0].stale);
  assert_true(l.crls[0].days_left >= 6 && l.crls[0].days_left <= 7);
  assert_string_equal(l.crls[0].issuer, "CN=trust root, O=ccrelay tests");
  cr_trust_list_free(&l);
  /* the older one cannot come back, a stale one needs force, a forged one never passes */
  pem = crl_pem(old_crl, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "old.crl", 0, NULL, NULL, err, sizeof err),
                   CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "a newer CRL"));
  free(pem);
  pem = crl_pem(stale, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "stale.crl", 0, NULL, NULL, err, sizeof err),
                   CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "stale"));
  free(pem);
  pem = crl_pem(forged, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "forged.crl", CR_TRUST_FORCE, NULL, NULL, err, sizeof err),
                   CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "signature does not verify"));
  free(pem);
  pem = crl_pem(foreign, &len);
  assert_int_equal(cr_truststore_add_crl_mem(ts, pem, len, "foreign.crl", 0, NULL, NULL, err, sizeof err),
                   CR_ETRUST_REFUSED);
  free(pem);
  assert_int_equal(cr_truststore_add_crl_mem(ts, "nope", 4, "nope.crl", 0, NULL, NULL, err, sizeof err), CR_ENO_CERT);
  assert_non_null(strstr(err, "no CRL found in nope.crl"));
  /* a CRL handed to add says where it belongs */
  {
    cr_trust_batch_t *b = cr_trust_batch_new();
    pem = crl_pem(new_crl, &len);
    assert_int_equal(cr_trust_batch_add_mem(b, pem, len, NULL, "x.crl", err, sizeof err), CR_ENO_CERT);
    assert_non_null(strstr(err, "add-crl"));
    free(pem);
    cr_trust_batch_free(b);
  }
  /* remove works on CRLs too */
  assert_int_equal(cr_truststore_remove(ts, fp2, NULL, err, sizeof err), 0);
  assert_int_equal(count_files("crl"), 0);
  assert_int_equal(count_tmp_files(), 0);
  X509_CRL_free(old_crl);
  X509_CRL_free(new_crl);
  X509_CRL_free(stale);
  X509_CRL_free(foreign);
  X509_CRL_free(forged);
  cr_truststore_close(ts);
}

static void test_generation_and_problems(void **state) {
  cr_truststore_t *ts = fresh_store();
  cr_trust_list_t l;
  X509_STORE *st;
  uint64_t g0, g1, g2, g3;
  char err[1024], path[256], fp[CR_TRUST_FP_HEX + 1];
  FILE *f;
  assert_int_equal(cr_truststore_generation(ts, &g0, err, sizeof err), 0);
  assert_int_equal(add_pems(ts, &root, 1, 0, NULL, err, sizeof err), 0);
  assert_int_equal(cr_truststore_generation(ts, &g1, err, sizeof err), 0);
  assert_int_equal(cr_truststore_generation(ts, &g2, err, sizeof err), 0);
  assert_true(g0 != g1);
  assert_true(g1 == g2);
  /* files that are not ours are ignored, by listing and generation alike */
  snprintf(path, sizeof path, "%s/README", store_dir);
  f = fopen(path, "w");
  fputs("notes\n", f);
  fclose(f);
  assert_int_equal(cr_truststore_generation(ts, &g3, err, sizeof err), 0);
  assert_true(g3 == g1);
  assert_int_equal(cr_truststore_x509_store(ts, CR_TRUST_CRL_OFF, &st, err, sizeof err), 0);
  X509_STORE_free(st);
  /* a damaged store file is a problem: listed, and the store refuses to export */
  cr_x509_fingerprint(other_root, fp);
  snprintf(path, sizeof path, "%s/%s.pem", store_dir, fp);
  f = fopen(path, "w");
  fputs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f);
  fclose(f);
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(l.ncerts, 1);
  assert_int_equal(l.nproblems, 1);
  assert_string_equal(l.problems[0].path, path);
  cr_trust_list_free(&l);
  assert_int_equal(cr_truststore_x509_store(ts, CR_TRUST_CRL_OFF, &st, err, sizeof err), CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, path));
  /* the agent's loader leaves the damaged file out and keeps the rest: root still verifies */
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(cr_truststore_x509_store_list(ts, &l, CR_TRUST_CRL_SOFT, &st, err, sizeof err), 0);
  assert_int_equal(cr_trust_verify_store(st, root, NULL, CR_TRUST_PURPOSE_ANY, NULL, NULL, NULL, 0, err, sizeof err),
                   0);
  X509_STORE_free(st);
  cr_trust_list_free(&l);
  assert_int_equal(cr_truststore_generation(ts, &g3, err, sizeof err), 0);
  assert_true(g3 != g1);
  assert_int_equal(cr_truststore_remove(ts, fp, NULL, err, sizeof err), 0);
  /* a certificate under another file's name */
  {
    size_t len;
    char *pem = pem_of(other_root, &len);
    cr_x509_fingerprint(root, fp);
    snprintf(path, sizeof path, "%s/%s.pem", store_dir, fp);
    f = fopen(path, "w");
    fwrite(pem, 1, len, f);
    fclose(f);
    free(pem);
  }
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(l.nproblems, 1);
  assert_non_null(strstr(l.problems[0].why, "does not match its name"));
  cr_trust_list_free(&l);
  /* a group-writable store file */
  assert_int_equal(cr_truststore_remove(ts, fp, NULL, err, sizeof err), 0);
  assert_int_equal(add_pems(ts, &root, 1, 0, NULL, err, sizeof err), 0);
  chmod(path, 0664);
  assert_int_equal(cr_truststore_x509_store(ts, CR_TRUST_CRL_OFF, &st, err, sizeof err), CR_ETRUST_REFUSED);
  assert_non_null(strstr(err, "group/world-writable"));
  chmod(path, 0644);
  unlink(path);
  /* a FIFO under a store name is a problem, found without blocking on it; with nothing else
   * usable, the loader says the store holds no certificate */
  assert_int_equal(mkfifo(path, 0644), 0);
  assert_int_equal(cr_truststore_list(ts, &l, err, sizeof err), 0);
  assert_int_equal(l.ncerts, 0);
  assert_int_equal(l.nproblems, 1);
  assert_non_null(strstr(l.problems[0].why, "not a regular file"));
  assert_int_equal(cr_truststore_x509_store_list(ts, &l, CR_TRUST_CRL_OFF, &st, err, sizeof err), CR_ENO_CERT);
  assert_null(st);
  cr_trust_list_free(&l);
  unlink(path);
  cr_truststore_close(ts);
}

static void test_load_chain(void **state) {
  X509 *leaf;
  STACK_OF(X509) *untrusted;
  char err[1024], path[128];
  FILE *f;
  assert_int_equal(cr_trust_load_chain(pki("client.p12"), PKI_PASS, &leaf, &untrusted, err, sizeof err), 0);
  {
    char cn[64];
    cr_x509_common_name(leaf, cn, sizeof cn);
    assert_string_equal(cn, "agent-1");
  }
  assert_int_equal(sk_X509_num(untrusted), 1);
  X509_free(leaf);
  sk_X509_pop_free(untrusted, X509_free);
  assert_int_equal(cr_trust_load_chain(pki("client.p12"), "wrong", &leaf, &untrusted, err, sizeof err),
                   CR_EP12_PASSWORD);
  assert_int_equal(cr_trust_load_chain(pki("server.pem"), NULL, &leaf, &untrusted, err, sizeof err), 0);
  assert_int_equal(sk_X509_num(untrusted), 0);
  X509_free(leaf);
  sk_X509_free(untrusted);
  snprintf(path, sizeof path, "%s/garbage.bin", pki_dir);
  f = fopen(path, "w");
  fputs("\x30\x03garbage", f);
  fclose(f);
  assert_int_equal(cr_trust_load_chain(path, NULL, &leaf, &untrusted, err, sizeof err), CR_ENO_CERT);
  assert_non_null(strstr(err, "expected PEM, DER or PKCS#12"));
}

/* ---- setup ---- */

static X509 *server_only(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key) {
  X509 *x = pki_cert(key, cn, issuer, issuer_key, 0, NULL, -1, 30);
  int i = X509_get_ext_by_NID(x, NID_ext_key_usage, -1);
  X509_EXTENSION_free(X509_delete_ext(x, i));
  pki_add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
  X509_sign(x, issuer_key, EVP_sha256());
  return x;
}

static int group_setup(void **state) {
  char san[4096];
  char err[256];
  size_t used = 0;
  /* the legacy PKCS#12 pki_make writes needs the legacy provider */
  if (cr_tls_global_init(err, sizeof err) != 0 || pki_make() != 0) {
    fprintf(stderr, "PKI setup failed: %s\n", err);
    return -1;
  }
  root_key = EVP_EC_gen("P-256");
  inter_key = EVP_EC_gen("P-256");
  other_key = EVP_EC_gen("P-256");
  leaf_key = EVP_EC_gen("P-256");
  root = pki_cert(root_key, "trust root", NULL, NULL, 1, NULL, -1, 3650);
  inter = pki_cert(inter_key, "trust intermediate", root, root_key, 1, NULL, -1, 1825);
  other_root = pki_cert(other_key, "trust other root", NULL, NULL, 1, NULL, -1, 3650);
  expired_root = pki_cert(other_key, "trust expired root", NULL, NULL, 1, NULL, -400, -5);
  small_root = pki_cert(leaf_key, "trust small root", NULL, NULL, 1, NULL, -1, 3650);
  /* a root made large by its SAN list, so that a file size limit lets the small one through */
  for (int i = 0; i < 80 && used < sizeof san - 64; i++)
    used += (size_t)snprintf(san + used, sizeof san - used, "%sDNS:host-%02d.big.example", i ? "," : "", i);
  big_root = pki_cert(inter_key, "trust big root", NULL, NULL, 1, san, -1, 3650);
  leaf_by_inter = pki_cert(leaf_key, "trust leaf by inter", inter, inter_key, 0, NULL, -1, 30);
  leaf_by_root = pki_cert(leaf_key, "trust leaf by root", root, root_key, 0, NULL, -1, 30);
  leaf_revoked = pki_cert(leaf_key, "trust leaf revoked", root, root_key, 0, NULL, -1, 30);
  leaf_expired = pki_cert(leaf_key, "trust leaf expired", root, root_key, 0, NULL, -30, -1);
  leaf_unknown = pki_cert(leaf_key, "trust leaf unknown", other_root, other_key, 0, NULL, -1, 30);
  leaf_server_only = server_only(leaf_key, "trust leaf server only", root, root_key);
  return 0;
}

static int group_teardown(void **state) {
  X509 *all[] = {root,         inter,        other_root,   expired_root,  big_root,     small_root,
                 leaf_by_inter, leaf_by_root, leaf_revoked, leaf_expired, leaf_unknown, leaf_server_only};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    X509_free(all[i]);
  EVP_PKEY_free(root_key);
  EVP_PKEY_free(inter_key);
  EVP_PKEY_free(other_key);
  EVP_PKEY_free(leaf_key);
  rm_store();
  pki_remove();
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open),
      cmocka_unit_test(test_add_list_remove),
      cmocka_unit_test(test_ambiguous_prefix),
      cmocka_unit_test(test_refusals),
      cmocka_unit_test(test_atomic_failure),
      cmocka_unit_test(test_verify_reasons),
      cmocka_unit_test(test_crls),
      cmocka_unit_test(test_generation_and_problems),
      cmocka_unit_test(test_load_chain),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

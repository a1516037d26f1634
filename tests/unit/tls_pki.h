/* SPDX-License-Identifier: Apache-2.0 */
/* A throwaway PKI for test_tls.c, made with OpenSSL's C API in a mkdtemp directory (EC P-256 keys,
 * so it takes milliseconds). The legacy PKCS#12 is also made by the openssl command line with
 * -legacy, as an older PKI would hand it out. */
#ifndef CCRELAY_TESTS_TLS_PKI_H
#define CCRELAY_TESTS_TLS_PKI_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/x509v3.h>

#define PKI_PASS "s3cret-pass"

static char pki_dir[64];

/* Path of a file in the PKI directory; a few buffers rotate so several can be used in one call. */
static const char *pki(const char *name) {
  static char bufs[8][384];
  static unsigned next;
  char *b = bufs[next++ % 8];
  snprintf(b, sizeof bufs[0], "%s/%s", pki_dir, name);
  return b;
}

static int pki_add_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v3;
  X509_EXTENSION *ext;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  if (ext == NULL)
    return -1;
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  return 0;
}

/* days_from/days_to are relative to now; issuer NULL makes it self-signed. */
static X509 *pki_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int ca, const char *san,
                      long days_from, long days_to) {
  static long serial = 1000;
  X509 *x = X509_new();
  X509_NAME *name;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_time_adj_ex(X509_getm_notBefore(x), (int)days_from, 0, NULL);
  X509_time_adj_ex(X509_getm_notAfter(x), (int)days_to, 0, NULL);
  X509_set_pubkey(x, key);
  name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"ccrelay tests", -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
  if (ca) {
    pki_add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
    pki_add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    pki_add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    pki_add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
    pki_add_ext(x, issuer, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  if (san)
    pki_add_ext(x, issuer, NID_subject_alt_name, san);
  X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256());
  return x;
}

static int pki_write_pem(const char *base, X509 *cert, EVP_PKEY *key) {
  char name[64];
  FILE *f;
  snprintf(name, sizeof name, "%s.pem", base);
  if ((f = fopen(pki(name), "w")) == NULL)
    return -1;
  PEM_write_X509(f, cert);
  fclose(f);
  if (key) {
    snprintf(name, sizeof name, "%s.key", base);
    if ((f = fopen(pki(name), "w")) == NULL)
      return -1;
    PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
  }
  return 0;
}

static int pki_write_p12(const char *file, PKCS12 *p12) {
  FILE *f = fopen(pki(file), "wb");
  int ok;
  if (f == NULL || p12 == NULL)
    return -1;
  ok = i2d_PKCS12_fp(f, p12);
  fclose(f);
  PKCS12_free(p12);
  return ok ? 0 : -1;
}

/* A PKCS#12 whose MAC is correct but whose certificate bag names PBE-MD2-DES, which OpenSSL 3
 * cannot run with any provider (MD2 is compiled out): the "unsupported algorithm" case. It is made
 * with 3DES and the algorithm identifier is swapped before the MAC is computed. */
static PKCS12 *pki_p12_md2(X509 *cert, EVP_PKEY *key) {
  STACK_OF(PKCS12_SAFEBAG) *certbags = NULL, *keybags = NULL;
  STACK_OF(PKCS7) *safes = sk_PKCS7_new_null();
  PKCS7 *p7;
  X509_ALGOR *alg;
  PKCS12 *p12;
  PKCS12_add_cert(&certbags, cert);
  p7 = PKCS12_pack_p7encdata(NID_pbe_WithSHA1And3_Key_TripleDES_CBC, PKI_PASS, -1, NULL, 0, 2048, certbags);
  sk_PKCS12_SAFEBAG_pop_free(certbags, PKCS12_SAFEBAG_free);
  if (p7 == NULL)
    return NULL;
  alg = p7->d.encrypted->enc_data->algorithm;
  ASN1_OBJECT_free(alg->algorithm);
  alg->algorithm = OBJ_nid2obj(NID_pbeWithMD2AndDES_CBC);
  sk_PKCS7_push(safes, p7);
  PKCS12_add_key(&keybags, key, 0, 2048, NID_pbe_WithSHA1And3_Key_TripleDES_CBC, PKI_PASS);
  sk_PKCS7_push(safes, PKCS12_pack_p7data(keybags));
  sk_PKCS12_SAFEBAG_pop_free(keybags, PKCS12_SAFEBAG_free);
  p12 = PKCS12_add_safes(safes, 0);
  sk_PKCS7_pop_free(safes, PKCS7_free);
  if (p12 && !PKCS12_set_mac(p12, PKI_PASS, -1, NULL, 0, 2048, EVP_sha256())) {
    PKCS12_free(p12);
    return NULL;
  }
  return p12;
}

/* Files: ca, server (localhost + 127.0.0.1), client (CN=agent-1), stranger (CN=stranger-agent),
 * expired, wronghost, unknown (from another CA) as .pem/.key; client_enc.key (encrypted); ca_empty.pem; client.p12 (modern),
 * client_legacy_api.p12 and client_legacy_cli.p12 (RC2-40/3DES), md2.p12, corrupt.p12. */
static int pki_make(void) {
  EVP_PKEY *cak, *ca2k, *k[7];
  X509 *ca, *ca2, *c[7];
  STACK_OF(X509) *chain;
  const char *names[7] = {"server", "client", "stranger", "expired", "wronghost", "unknown", "client2"};
  char cmd[2048];
  FILE *f;
  int i, rc;
  snprintf(pki_dir, sizeof pki_dir, "/tmp/ccrelay-tls-XXXXXX");
  if (mkdtemp(pki_dir) == NULL)
    return -1;
  cak = EVP_EC_gen("P-256");
  ca2k = EVP_EC_gen("P-256");
  for (i = 0; i < 7; i++)
    k[i] = EVP_EC_gen("P-256");
  ca = pki_cert(cak, "ccrelay test CA", NULL, NULL, 1, NULL, -1, 3650);
  ca2 = pki_cert(ca2k, "some other CA", NULL, NULL, 1, NULL, -1, 3650);
  c[0] = pki_cert(k[0], "localhost", ca, cak, 0, "DNS:localhost,IP:127.0.0.1", -1, 365);
  c[1] = pki_cert(k[1], "agent-1", ca, cak, 0, NULL, -1, 365);
  c[2] = pki_cert(k[2], "stranger-agent", ca, cak, 0, NULL, -1, 365);
  c[3] = pki_cert(k[3], "localhost", ca, cak, 0, "DNS:localhost,IP:127.0.0.1", -30, -2);
  c[4] = pki_cert(k[4], "other.example", ca, cak, 0, "DNS:other.example", -1, 365);
  c[5] = pki_cert(k[5], "localhost", ca2, ca2k, 0, "DNS:localhost,IP:127.0.0.1", -1, 365);
  c[6] = pki_cert(k[6], "agent-2", ca, cak, 0, NULL, -1, 365);
  rc = pki_write_pem("ca", ca, cak);
  for (i = 0; i < 7 && rc == 0; i++)
    rc = pki_write_pem(names[i], c[i], k[i]);
  if ((f = fopen(pki("ca_empty.pem"), "w")) != NULL) {
    fputs("# no certificates here\n", f);
    fclose(f);
  }
  if ((f = fopen(pki("client_enc.key"), "w")) != NULL) {
    PEM_write_PrivateKey(f, k[1], EVP_aes_256_cbc(), NULL, 0, NULL, (void *)PKI_PASS);
    fclose(f);
  }
  chain = sk_X509_new_null();
  sk_X509_push(chain, ca);
  if (rc == 0)
    rc = pki_write_p12("client.p12", PKCS12_create(PKI_PASS, "agent-1", k[1], c[1], chain, NID_aes_256_cbc,
                                                   NID_aes_256_cbc, 2048, 2048, 0));
  if (rc == 0)
    rc = pki_write_p12("client_legacy_api.p12",
                       PKCS12_create(PKI_PASS, "agent-1", k[1], c[1], chain, NID_pbe_WithSHA1And3_Key_TripleDES_CBC,
                                     NID_pbe_WithSHA1And40BitRC2_CBC, 2048, 2048, 0));
  if (rc == 0)
    rc = pki_write_p12("md2.p12", pki_p12_md2(c[1], k[1]));
  if (rc == 0 && (f = fopen(pki("corrupt.p12"), "wb")) != NULL) {
    /* A real PKCS#12 cut in half: starts right, cannot decode. */
    FILE *in = fopen(pki("client.p12"), "rb");
    unsigned char buf[8192];
    size_t n = in ? fread(buf, 1, sizeof buf, in) : 0;
    if (in)
      fclose(in);
    fwrite(buf, 1, n / 2, f);
    fclose(f);
  }
  sk_X509_free(chain);
  snprintf(cmd, sizeof cmd,
           "openssl pkcs12 -export -legacy -in '%s' -inkey '%s' -certfile '%s' -passout pass:" PKI_PASS
           " -out '%s' 2>'%s'",
           pki("client.pem"), pki("client.key"), pki("ca.pem"), pki("client_legacy_cli.p12"), pki("openssl.err"));
  if (rc == 0 && system(cmd) != 0)
    rc = -1;
  X509_free(ca);
  X509_free(ca2);
  EVP_PKEY_free(cak);
  EVP_PKEY_free(ca2k);
  for (i = 0; i < 7; i++) {
    X509_free(c[i]);
    EVP_PKEY_free(k[i]);
  }
  return rc;
}

/* The directory is flat: remove its files, then it. */
static void pki_remove(void) {
  DIR *d;
  struct dirent *e;
  if (pki_dir[0] == '\0' || (d = opendir(pki_dir)) == NULL)
    return;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      unlink(pki(e->d_name));
  closedir(d);
  rmdir(pki_dir);
}

#endif

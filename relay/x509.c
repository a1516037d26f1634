/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 and OpenSSL helpers: providers, the error drain, the certificate file decoder, names, SANs,
 * fingerprints, times, randomness. See x509.h. */
#include "ccrelay/x509.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/fileio.h"

/* ---- setup ---- */

static OSSL_PROVIDER *prov_default, *prov_legacy;

/* Runs before OpenSSL's own exit cleanup (atexit order is reversed and OpenSSL registered first):
 * a provider still referenced then would never be torn down, and leak checkers would say so. */
static void unload_providers(void) {
  if (prov_legacy)
    OSSL_PROVIDER_unload(prov_legacy);
  if (prov_default)
    OSSL_PROVIDER_unload(prov_default);
  prov_legacy = prov_default = NULL;
}

int cr_x509_init(char *err, size_t errlen) {
  static int done;
  char detail[256];
  if (done)
    return 0;
  /* Loading any provider by hand turns off the implicit default one, so load both. */
  if ((prov_default = OSSL_PROVIDER_load(NULL, "default")) == NULL) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "cannot load OpenSSL's default provider (%s); check the OpenSSL installation", detail);
    return CR_ETLS;
  }
  if ((prov_legacy = OSSL_PROVIDER_load(NULL, "legacy")) == NULL) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen,
             "cannot load OpenSSL's legacy provider, which legacy PKCS#12 files (RC2/3DES) need (%s); "
             "install it (Debian: libssl3, file ossl-modules/legacy.so) or point OPENSSL_MODULES at it",
             detail);
    OSSL_PROVIDER_unload(prov_default);
    prov_default = NULL;
    return CR_ETLS;
  }
  atexit(unload_providers);
  done = 1;
  return 0;
}

const char *cr_x509_openssl_version(void) { return OpenSSL_version(OPENSSL_VERSION); }

/* ---- errors ---- */

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0)
      return 1;
  return 0;
}

void cr_x509_drain_errors(char *out, size_t outlen, int *unsupported) {
  const char *data, *reason;
  unsigned long e;
  size_t used = 0;
  int flags, n;
  char code[32];
  if (unsupported)
    *unsupported = 0;
  if (outlen > 0)
    out[0] = '\0';
  while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
    reason = ERR_reason_error_string(e);
    if (unsupported && (ERR_GET_REASON(e) == ERR_R_UNSUPPORTED ||
                        (reason && (contains_nocase(reason, "unsupported") || contains_nocase(reason, "unknown")))))
      *unsupported = 1;
    if (reason == NULL) {
      snprintf(code, sizeof code, "error %lx", e);
      reason = code;
    }
    if (outlen == 0 || used >= outlen - 1)
      continue; /* keep draining so the next failure does not inherit these */
    n = snprintf(out + used, outlen - used, "%s%s%s%s", used ? "; " : "", reason,
                 (flags & ERR_TXT_STRING) && data && *data ? ": " : "",
                 (flags & ERR_TXT_STRING) && data ? data : "");
    if (n > 0)
      used = CR_MIN(used + (size_t)n, outlen - 1);
  }
}

const char *cr_x509_why(char *out, size_t outlen, int *unsupported) {
  cr_x509_drain_errors(out, outlen, unsupported);
  if (outlen > 0 && out[0] == '\0')
    snprintf(out, outlen, "no detail from OpenSSL");
  return out;
}

/* ---- reading ---- */

int cr_x509_read_file(const char *path, const char *what, size_t max, unsigned char **out, size_t *outlen, char *err,
                      size_t errlen) {
  const char *sp = what ? " " : "";
  char why[PATH_MAX + 64];
  char *data;
  int r;
  what = what ? what : "";
  r = cr_fileio_read(path, max, &data, outlen, why, sizeof why);
  if (r == CR_ELIMIT) {
    snprintf(err, errlen, "%s%s%s is larger than %zu bytes; is it the right file?", what, sp, path, max);
    return r;
  }
  if (r == CR_ENOT_REGULAR) {
    snprintf(err, errlen, "%s%s%s; give the file itself", what, sp, why);
    return r;
  }
  if (r < 0) {
    snprintf(err, errlen, "cannot read %s%s%s: %s; check the path and its permissions", what, sp, path, why);
    return r;
  }
  *out = (unsigned char *)data;
  return 0;
}

/* ---- decoding ---- */

void cr_x509_set_free(cr_x509_set_t *s) {
  EVP_PKEY_free(s->key);
  X509_free(s->leaf);
  sk_X509_pop_free(s->certs, X509_free);
  sk_X509_CRL_pop_free(s->crls, X509_CRL_free);
  memset(s, 0, sizeof *s);
}

static void set_init(cr_x509_set_t *s, cr_x509_format_t format) {
  memset(s, 0, sizeof *s);
  s->format = format;
  s->certs = sk_X509_new_null();
  s->crls = sk_X509_CRL_new_null();
}

static int mac_ok(PKCS12 *p12, const char *pass) {
  /* Empty and absent passwords are different bytes on the wire; exporters use either. */
  if (pass == NULL || *pass == '\0')
    return PKCS12_verify_mac(p12, "", 0) || PKCS12_verify_mac(p12, NULL, 0);
  return PKCS12_verify_mac(p12, pass, -1);
}

/* strict: the PKCS#12 must fill all of data (cr_x509_decode tells formats apart by that). 1 when it
 * does not, nothing set and no message written. */
static int decode_p12(const unsigned char *data, size_t len, const char *pass, const char *label, int strict,
                      cr_x509_set_t *out, char *err, size_t errlen) {
  const unsigned char *p = data;
  STACK_OF(X509) *others = NULL;
  PKCS12 *p12;
  char detail[256];
  int r, unsupported;
  memset(out, 0, sizeof *out);
  r = cr_x509_init(err, errlen); /* legacy RC2/3DES files need the legacy provider */
  if (r < 0)
    return r;
  ERR_clear_error();
  p12 = len ? d2i_PKCS12(NULL, &p, (long)len) : NULL;
  if (strict && (p12 == NULL || p != data + len)) {
    PKCS12_free(p12);
    ERR_clear_error();
    return 1;
  }
  if (p12 == NULL) {
    snprintf(err, errlen, "%s is not a PKCS#12 file or is damaged (%s); export it again as PKCS#12 (.p12/.pfx, DER)",
             label, cr_x509_why(detail, sizeof detail, NULL));
    return CR_EP12_CORRUPT;
  }
  if (PKCS12_mac_present(p12) && !mac_ok(p12, pass)) {
    cr_x509_why(detail, sizeof detail, &unsupported);
    PKCS12_free(p12);
    if (unsupported) {
      snprintf(err, errlen,
               "%s: its PKCS#12 integrity check uses an algorithm this OpenSSL cannot load (%s); re-export it "
               "with modern algorithms (openssl pkcs12 -export, AES-256 and SHA-256)",
               label, detail);
      return CR_EP12_UNSUPPORTED;
    }
    snprintf(err, errlen, "%s: wrong PKCS#12 password (the integrity check failed)", label);
    return CR_EP12_PASSWORD;
  }
  set_init(out, CR_X509_PKCS12);
  if (!PKCS12_parse(p12, pass ? pass : "", &out->key, &out->leaf, &others)) {
    cr_x509_why(detail, sizeof detail, &unsupported);
    PKCS12_free(p12);
    cr_x509_set_free(out);
    if (unsupported) {
      snprintf(err, errlen,
               "%s uses an encryption algorithm this OpenSSL cannot load (%s); legacy RC2/3DES files need "
               "OpenSSL's legacy provider, otherwise re-export it (openssl pkcs12 -export, AES-256)",
               label, detail);
      return CR_EP12_UNSUPPORTED;
    }
    snprintf(err, errlen, "%s: the password is right but the PKCS#12 contents do not decode (%s); export it again",
             label, detail);
    return CR_EP12_CORRUPT;
  }
  PKCS12_free(p12);
  if (others) {
    sk_X509_free(out->certs);
    out->certs = others;
  }
  return 0;
}

int cr_x509_decode_pkcs12(const void *data, size_t len, const char *password, const char *label, cr_x509_set_t *out,
                          char *err, size_t errlen) {
  return decode_p12(data, len, password, label, 0, out, err, errlen);
}

static int looks_pem(const unsigned char *data, size_t len) {
  static const char tag[] = "-----BEGIN ";
  for (size_t i = 0; i + sizeof tag - 1 <= len; i++)
    if (memcmp(data + i, tag, sizeof tag - 1) == 0)
      return 1;
  return 0;
}

static int decode_pem(const unsigned char *data, size_t len, const char *label, cr_x509_set_t *out, char *err,
                      size_t errlen) {
  BIO *bio = BIO_new_mem_buf(data, (int)len);
  char *name = NULL, *header = NULL, detail[256];
  unsigned char *der = NULL;
  long derlen = 0;
  int block = 0, ncerts = 0, ncrls = 0, r = 0;
  set_init(out, CR_X509_PEM);
  ERR_clear_error();
  while (r == 0) {
    const unsigned char *p;
    if (!PEM_read_bio(bio, &name, &header, &der, &derlen)) {
      unsigned long e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error(); /* the normal end of the input */
        break;
      }
      snprintf(err, errlen, "%s: PEM block %d does not decode (%s); the file is damaged, export it again", label,
               block + 1, cr_x509_why(detail, sizeof detail, NULL));
      r = CR_ETLS;
      break;
    }
    block++;
    p = der;
    if (strcmp(name, PEM_STRING_X509) == 0 || strcmp(name, PEM_STRING_X509_OLD) == 0 ||
        strcmp(name, PEM_STRING_X509_TRUSTED) == 0) {
      X509 *x = strcmp(name, PEM_STRING_X509_TRUSTED) == 0 ? d2i_X509_AUX(NULL, &p, derlen)
                                                             : d2i_X509(NULL, &p, derlen);
      ncerts++;
      if (x == NULL) {
        snprintf(err, errlen, "%s: certificate %d (PEM block %d) does not decode (%s); the file is damaged", label,
                 ncerts, block, cr_x509_why(detail, sizeof detail, NULL));
        r = CR_ETLS;
      } else {
        sk_X509_push(out->certs, x);
      }
    } else if (strcmp(name, PEM_STRING_X509_CRL) == 0) {
      X509_CRL *c = d2i_X509_CRL(NULL, &p, derlen);
      ncrls++;
      if (c == NULL) {
        snprintf(err, errlen, "%s: CRL %d (PEM block %d) does not decode (%s); the file is damaged", label, ncrls,
                 block, cr_x509_why(detail, sizeof detail, NULL));
        r = CR_ETLS;
      } else {
        sk_X509_CRL_push(out->crls, c);
      }
    } else {
      out->nother++; /* keys and the like: not ours to read */
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(der);
    name = header = NULL;
    der = NULL;
  }
  BIO_free(bio);
  if (r < 0)
    cr_x509_set_free(out);
  return r;
}

int cr_x509_decode(const void *data, size_t len, const char *password, const char *label, cr_x509_set_t *out,
                   char *err, size_t errlen) {
  const unsigned char *d = data, *p;
  X509 *x;
  X509_CRL *crl;
  int r;
  memset(out, 0, sizeof *out);
  if (looks_pem(d, len))
    return decode_pem(d, len, label, out, err, errlen);
  if (len > 0) {
    ERR_clear_error();
    p = d;
    x = d2i_X509(NULL, &p, (long)len);
    if (x != NULL && p == d + len) {
      set_init(out, CR_X509_DER);
      sk_X509_push(out->certs, x);
      return 0;
    }
    X509_free(x);
    p = d;
    crl = d2i_X509_CRL(NULL, &p, (long)len);
    if (crl != NULL && p == d + len) {
      ERR_clear_error();
      set_init(out, CR_X509_DER);
      sk_X509_CRL_push(out->crls, crl);
      return 0;
    }
    X509_CRL_free(crl);
    ERR_clear_error();
    r = decode_p12(d, len, password, label, 1, out, err, errlen);
    if (r <= 0)
      return r;
  }
  snprintf(err, errlen, "no certificate found in %s (expected PEM, DER or PKCS#12)", label);
  return CR_ENO_CERT;
}

/* Never prompts on a terminal: an encrypted PEM key without a password is an error. */
static int pem_pass_cb(char *buf, int size, int rwflag, void *u) {
  const char *pass = u;
  size_t n;
  (void)rwflag;
  if (pass == NULL || *pass == '\0' || size <= 0)
    return -1;
  n = strlen(pass);
  if (n > (size_t)size)
    return -1;
  memcpy(buf, pass, n);
  return (int)n;
}

EVP_PKEY *cr_x509_pem_key(const void *data, size_t len, const char *password, char *detail, size_t detaillen) {
  BIO *bio;
  EVP_PKEY *key;
  ERR_clear_error();
  bio = BIO_new_mem_buf(data, (int)len);
  key = PEM_read_bio_PrivateKey(bio, NULL, pem_pass_cb, (void *)password);
  BIO_free(bio);
  if (key == NULL)
    cr_x509_drain_errors(detail, detail ? detaillen : 0, NULL);
  else if (detail && detaillen)
    detail[0] = '\0';
  return key;
}

/* ---- certificates ---- */

void cr_x509_name_oneline(const X509_NAME *name, char *out, size_t outlen) {
  BIO *bio;
  int n;
  if (outlen == 0)
    return;
  out[0] = '\0';
  if (name == NULL)
    return;
  bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, (XN_FLAG_RFC2253 & ~XN_FLAG_SEP_MASK & ~ASN1_STRFLGS_ESC_MSB) |
                                       XN_FLAG_SEP_CPLUS_SPC);
  n = BIO_read(bio, out, (int)CR_MIN(outlen - 1, (size_t)0x7fffffff));
  out[n > 0 ? n : 0] = '\0';
  BIO_free(bio);
}

void cr_x509_subject(const X509 *cert, char *out, size_t outlen) {
  cr_x509_name_oneline(cert ? X509_get_subject_name(cert) : NULL, out, outlen);
}

void cr_x509_issuer(const X509 *cert, char *out, size_t outlen) {
  cr_x509_name_oneline(cert ? X509_get_issuer_name(cert) : NULL, out, outlen);
}

void cr_x509_common_name(X509 *cert, char *out, size_t outlen) {
  X509_NAME *name;
  X509_NAME_ENTRY *entry;
  unsigned char *utf8 = NULL;
  int i, n;
  if (outlen == 0)
    return;
  out[0] = '\0';
  if (cert == NULL || (name = X509_get_subject_name(cert)) == NULL)
    return;
  i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0 || (entry = X509_NAME_get_entry(name, i)) == NULL)
    return;
  n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
  if (n < 0)
    return;
  /* The name goes into log lines and error prose: no control bytes. */
  for (i = 0; i < n && (size_t)i < outlen - 1; i++)
    out[i] = utf8[i] < 0x20 || utf8[i] == 0x7f ? '?' : (char)utf8[i];
  out[i] = '\0';
  OPENSSL_free(utf8);
}

/* Calls cb with each subjectAltName of this type (GEN_DNS, GEN_URI: both IA5Strings). */
static int each_san(X509 *cert, int type, cr_x509_name_cb cb, void *arg) {
  GENERAL_NAMES *sans;
  int r = 0;
  if (cert == NULL)
    return 0;
  sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  for (int j = 0; sans && r == 0 && j < sk_GENERAL_NAME_num(sans); j++) {
    GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, j);
    const unsigned char *dns;
    int n, k;
    if (gn->type != type)
      continue;
    dns = ASN1_STRING_get0_data(type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier);
    n = ASN1_STRING_length(type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier);
    for (k = 0; k < n && dns[k] >= 0x20 && dns[k] != 0x7f; k++)
      ;
    if (n > 0 && k == n)
      r = cb((const char *)dns, arg);
  }
  GENERAL_NAMES_free(sans);
  ERR_clear_error(); /* a damaged extension reads as none */
  return r;
}

int cr_x509_each_dns_san(X509 *cert, cr_x509_name_cb cb, void *arg) { return each_san(cert, GEN_DNS, cb, arg); }

int cr_x509_each_uri_san(X509 *cert, cr_x509_name_cb cb, void *arg) { return each_san(cert, GEN_URI, cb, arg); }

static int name_is(const char *dns, void *arg) { return strcasecmp(dns, arg) == 0; }

int cr_x509_san_match(X509 *cert, const char *name) {
  return name && *name && cr_x509_each_dns_san(cert, name_is, (void *)name);
}

int cr_x509_is_ca(X509 *cert) {
  int r = X509_check_ca(cert);
  return r == 1 || r == 3;
}

static void hex(const unsigned char *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = '\0';
}

/* The SHA-256 of obj's DER encoding as type it, in hex ("" when the digest cannot be made). */
static void fingerprint(const ASN1_ITEM *it, const void *obj, char *out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (obj == NULL || !ASN1_item_digest(it, EVP_sha256(), (void *)obj, md, &n)) {
    n = 0;
    ERR_clear_error();
  }
  hex(md, n, out);
}

void cr_x509_fingerprint(const X509 *cert, char out[CR_X509_FP_HEX + 1]) {
  fingerprint(ASN1_ITEM_rptr(X509), cert, out);
}

void cr_x509_crl_fingerprint(const X509_CRL *crl, char out[CR_X509_FP_HEX + 1]) {
  fingerprint(ASN1_ITEM_rptr(X509_CRL), crl, out);
}

time_t cr_x509_time(const ASN1_TIME *t) {
  struct tm tm;
  if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1) {
    ERR_clear_error();
    return 0;
  }
  return timegm(&tm);
}

time_t cr_x509_not_before(const X509 *cert) { return cert ? cr_x509_time(X509_get0_notBefore(cert)) : 0; }
time_t cr_x509_not_after(const X509 *cert) { return cert ? cr_x509_time(X509_get0_notAfter(cert)) : 0; }

char *cr_x509_fmt_time(time_t t, int style, char *out, size_t outlen) {
  struct tm tm;
  if (outlen == 0)
    return out;
  out[0] = '\0';
  if (t == 0)
    snprintf(out, outlen, "-");
  else if (gmtime_r(&t, &tm) == NULL ||
           strftime(out, outlen, style == CR_X509_TIME_DATE ? "%Y-%m-%d" : "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    out[0] = '\0'; /* strftime leaves out undefined when it does not fit */
  return out;
}

STACK_OF(X509) *cr_x509_chain_after_leaf(STACK_OF(X509) *verified) {
  STACK_OF(X509) *out = sk_X509_new_null();
  int n = sk_X509_num(verified);
  for (int i = 1; i < n; i++) {
    X509 *c = sk_X509_value(verified, i);
    if (i == n - 1 && X509_check_issued(c, c) == X509_V_OK)
      break;
    X509_up_ref(c);
    sk_X509_push(out, c);
  }
  return out;
}

void cr_x509_chain_free(STACK_OF(X509) *chain) { sk_X509_pop_free(chain, X509_free); }

/* ---- randomness and digests ---- */

int cr_x509_random_bytes(void *buf, size_t len) {
  if (len > 0x7fffffff || RAND_bytes(buf, (int)len) != 1) {
    memset(buf, 0, len);
    ERR_clear_error();
    return CR_ETLS;
  }
  return 0;
}

void cr_x509_sha256(const void *data, size_t len, unsigned char out[32]) {
  unsigned int n = 32;
  if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1) {
    memset(out, 0, 32);
    ERR_clear_error();
  }
}

int cr_x509_mem_equal(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n) == 0; }

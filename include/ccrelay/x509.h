/* SPDX-License-Identifier: Apache-2.0 */
/* X.509 and OpenSSL helpers every module above shares: provider setup, the one drain of OpenSSL's
 * error queue, the one decoder of certificate files (PEM, DER, PKCS#12 with legacy RC2/3DES), names,
 * subjectAltNames, fingerprints, times, random bytes and digests. Below tls_ctx and truststore; the
 * only modules besides those two (and the TLS stream) that include OpenSSL headers.
 *
 * Nothing here keeps state between calls except the providers loaded once by cr_x509_init. Every
 * function that fails leaves OpenSSL's error queue empty, so the next failure does not inherit it. */
#ifndef CCRELAY_X509_H
#define CCRELAY_X509_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

/* ---- setup ---- */

/* Loads OpenSSL's default and legacy providers (legacy PKCS#12 files use RC2-40 and 3DES); later
 * calls return at once. 0, or CR_ETLS with prose in err saying how to install the missing one. */
int cr_x509_init(char *err, size_t errlen);
/* "OpenSSL 3.0.x  dd Mon yyyy", for --version. */
const char *cr_x509_openssl_version(void);

/* ---- errors ---- */

/* Empties OpenSSL's error queue into out as one line ("reason: detail; reason2"), "" when it was
 * empty; entries that do not fit are still drained. *unsupported (optional) is set to 1 when an
 * entry says an algorithm is missing ("unsupported", "unknown", any case) rather than the data
 * being bad, else 0. outlen may be 0 (the queue is only emptied). */
void cr_x509_drain_errors(char *out, size_t outlen, int *unsupported);
/* The same for prose that puts OpenSSL's reasons in parentheses: "no detail from OpenSSL" instead
 * of "". Returns out (outlen > 0). */
const char *cr_x509_why(char *out, size_t outlen, int *unsupported);

/* ---- reading and decoding ---- */

/* Reads a whole file of at most max bytes into *out (malloc'ed; the caller frees it, and wipes it
 * first when it holds a key). what names the file in messages ("key file"), or NULL. Errors with
 * prose naming the path: UV_E* from open/read, CR_ELIMIT when the file is larger than max,
 * CR_ENOT_REGULAR when it is a FIFO, device, socket or directory (never waits on a FIFO). */
int cr_x509_read_file(const char *path, const char *what, size_t max, unsigned char **out, size_t *outlen, char *err,
                      size_t errlen);

typedef enum { CR_X509_PEM = 1, CR_X509_DER, CR_X509_PKCS12 } cr_x509_format_t;

/* What one input decoded to. Owned by the caller: cr_x509_set_free releases what is left in it;
 * take an object out by setting its field to NULL (or sk_X509_shift) first. */
typedef struct cr_x509_set {
  cr_x509_format_t format;
  EVP_PKEY *key;            /* PKCS#12 only: its private key, or NULL when it carries none */
  X509 *leaf;               /* PKCS#12 only: the certificate that goes with key, or NULL */
  STACK_OF(X509) *certs;    /* every other certificate, in input order; never NULL after success */
  STACK_OF(X509_CRL) *crls; /* PEM or DER CRLs, in input order; never NULL after success */
  int nother;               /* PEM blocks of other kinds (keys, parameters): counted, not decoded */
} cr_x509_set_t;

void cr_x509_set_free(cr_x509_set_t *s);

/* Decodes a PKCS#12 (DER; trailing bytes after it are ignored) with password (NULL or "" tries both
 * the empty and the absent password, since exporters use either). Checks the MAC first, so a wrong
 * password is told apart from damage. label names the input in messages. Errors, with prose in err
 * that never contains the password:
 *   CR_EP12_CORRUPT      not PKCS#12 or damaged, or the password is right but the contents do not
 *                        decode (err says what to do);
 *   CR_EP12_PASSWORD     "LABEL: wrong PKCS#12 password (the integrity check failed)": the caller adds
 *                        where the password comes from;
 *   CR_EP12_UNSUPPORTED  the MAC or the encryption uses an algorithm this OpenSSL cannot load;
 *   CR_ETLS              from cr_x509_init.
 * On error out holds nothing. */
int cr_x509_decode_pkcs12(const void *data, size_t len, const char *password, const char *label, cr_x509_set_t *out,
                          char *err, size_t errlen);

/* Decodes whatever data is: PEM (every CERTIFICATE, TRUSTED CERTIFICATE and X509 CRL block; other
 * blocks are counted in nother), else one DER certificate or one DER CRL filling all of data, else a
 * PKCS#12 filling all of data (as cr_x509_decode_pkcs12). A PEM input with no certificate or CRL is
 * not an error: the sets are empty. Errors: CR_ENO_CERT ("no certificate found in LABEL (expected PEM,
 * DER or PKCS#12)"), CR_ETLS (a PEM block that does not decode, named by its index), CR_EP12_*.
 * On error out holds nothing. */
int cr_x509_decode(const void *data, size_t len, const char *password, const char *label, cr_x509_set_t *out,
                   char *err, size_t errlen);

/* Reads the first PEM private key in data, decrypting it with password when it is encrypted (never a
 * terminal prompt: encrypted without a password fails). NULL when there is none or it does not
 * open; detail (optional) then says OpenSSL's reason, "" for none. */
EVP_PKEY *cr_x509_pem_key(const void *data, size_t len, const char *password, char *detail, size_t detaillen);

/* ---- certificates ---- */

/* Writes "CN=..., O=..." of name into out (RFC 2253 order, one line, no escaping of UTF-8). */
void cr_x509_name_oneline(const X509_NAME *name, char *out, size_t outlen);
/* The same for cert's subject or issuer; "" for a NULL cert. */
void cr_x509_subject(const X509 *cert, char *out, size_t outlen);
void cr_x509_issuer(const X509 *cert, char *out, size_t outlen);
/* The first commonName of cert's subject as UTF-8 with control bytes replaced by '?', or "". */
void cr_x509_common_name(X509 *cert, char *out, size_t outlen);

/* Calls cb with each DNS subjectAltName of cert, in order, until cb returns nonzero; returns that
 * value, or 0 when cb never did (or cert has none). A name with a NUL or control byte in it is
 * skipped: it could only match by being cut short. */
typedef int (*cr_x509_name_cb)(const char *dns, void *arg);
int cr_x509_each_dns_san(X509 *cert, cr_x509_name_cb cb, void *arg);
/* The same for each URI subjectAltName (e.g. a SPIFFE ID), with the same skipping rule. */
int cr_x509_each_uri_san(X509 *cert, cr_x509_name_cb cb, void *arg);
/* 1 when one of cert's DNS subjectAltNames is name (ASCII case-insensitive, no wildcards). */
int cr_x509_san_match(X509 *cert, const char *name);

/* 1 for a CA certificate: basicConstraints CA:TRUE, or a version 1 self-signed certificate (old
 * roots carry no extensions at all). */
int cr_x509_is_ca(X509 *cert);

#define CR_X509_FP_HEX 64 /* SHA-256 in hex */
/* SHA-256 of the DER of cert or crl, lower-case hex. */
void cr_x509_fingerprint(const X509 *cert, char out[CR_X509_FP_HEX + 1]);
void cr_x509_crl_fingerprint(const X509_CRL *crl, char out[CR_X509_FP_HEX + 1]);

/* An ASN1 time as seconds since the epoch (UTC); 0 for NULL or a time that does not parse. */
time_t cr_x509_time(const ASN1_TIME *t);
time_t cr_x509_not_before(const X509 *cert);
time_t cr_x509_not_after(const X509 *cert);

#define CR_X509_TIME_MAX 21 /* "2025-01-31T23:59:59Z" and its NUL */
enum { CR_X509_TIME_ISO = 0, CR_X509_TIME_DATE = 1 };
/* Writes t (UTC) as "2025-01-31T23:59:59Z" (CR_X509_TIME_ISO) or "2025-01-31" (CR_X509_TIME_DATE)
 * into out; t == 0 (unknown, as cr_x509_time returns for a time that does not parse) as "-";
 * "" when outlen is too small. Returns out. */
char *cr_x509_fmt_time(time_t t, int style, char *out, size_t outlen);

/* The certificates a verified chain (leaf first, anchor last) presents after its leaf: without the
 * leaf and without a self-signed anchor. A new stack holding its own references. */
STACK_OF(X509) *cr_x509_chain_after_leaf(STACK_OF(X509) *verified);
/* Frees a stack and the references it holds; NULL is fine. */
void cr_x509_chain_free(STACK_OF(X509) *chain);

/* ---- randomness and digests ---- */

/* Fills buf from OpenSSL's CSPRNG. 0, or CR_ETLS when it is not seeded (buf is then zeroed). */
int cr_x509_random_bytes(void *buf, size_t len);
/* SHA-256 of data; all zero bytes if the digest is unavailable. */
void cr_x509_sha256(const void *data, size_t len, unsigned char out[32]);
/* 1 when a and b hold the same n bytes, in time that depends only on n. */
int cr_x509_mem_equal(const void *a, const void *b, size_t n);

#endif

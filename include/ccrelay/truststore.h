/* SPDX-License-Identifier: Apache-2.0 */
/* The trusted-root store: a directory of CA certificates and CRLs that the agent trusts for route
 * identities and upstream servers, managed by `ccrelay trust`.
 *
 * Layout (flat, nothing else is read):
 *   <sha256-hex>.pem      one PEM certificate; the name is the SHA-256 of its DER (lower-case hex)
 *   <sha256-hex>.crl.pem  one PEM CRL; the name is the SHA-256 of the CRL's DER
 * Other names are ignored (a README, an editor's backup), and so are our own temporary files
 * (".tmp-*", left only by a crash). A file with one of our names that does not parse, whose content
 * does not match its name, that is not a regular file or that is group/world-writable is a
 * "problem": listing reports it; cr_truststore_x509_store fails closed on it, naming the file, and
 * cr_truststore_x509_store_list (the agent's loader) leaves it out.
 *
 * Every change is atomic and durable: a temporary file in the store directory (O_EXCL, 0644),
 * written, fsync'ed, renamed over its final name, then the directory fsync'ed. A change that fails
 * (bad input, ENOSPC, EACCES, ...) leaves the directory byte-identical with no temporary file: inputs
 * are validated before anything is written, and a batch that fails midway removes the files it had
 * created. Concurrent writers are safe (names are content hashes, renames atomic); a failed batch
 * racing another writer adding the same certificate may remove that file again.
 *
 * The directory itself must not be group- or world-writable (anyone who can write it decides what
 * the agent trusts), and must not be a regular file. The handle keeps only the path: every call
 * reads the directory afresh, so a long-lived handle sees changes made by others. */
#ifndef CCRELAY_TRUSTSTORE_H
#define CCRELAY_TRUSTSTORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "ccrelay/x509.h"

#define CR_TRUST_FP_HEX CR_X509_FP_HEX /* names are cr_x509_fingerprint values */
#define CR_TRUST_MIN_PREFIX 4 /* shortest fingerprint prefix cr_truststore_remove accepts */

typedef struct cr_truststore cr_truststore_t;

enum {
  CR_TRUSTSTORE_CREATE = 1 /* create the directory (mode 0700, parent must exist) when missing */
};

/* Opens the store at dir. Errors with prose in err: UV_ENOENT (missing and CREATE not given),
 * UV_ENOTDIR (a file, not a directory), UV_EPERM (group/world-writable: says which chmod fixes it),
 * other UV_E* from stat/mkdir. */
int cr_truststore_open(const char *dir, unsigned flags, cr_truststore_t **out, char *err, size_t errlen);
void cr_truststore_close(cr_truststore_t *ts);
const char *cr_truststore_dir(const cr_truststore_t *ts);

/* ---- listing ---- */

typedef struct cr_trust_cert {
  char fingerprint[CR_TRUST_FP_HEX + 1];
  char *path;              /* the store file */
  char *subject, *issuer;  /* one-line RFC 2253 style */
  time_t not_before, not_after;
  int is_ca;               /* basicConstraints CA:TRUE */
  int self_signed;         /* a root: issuer == subject and the signature verifies with its own key */
  int expired;             /* not_after is in the past */
  long days_left;          /* whole days until not_after; negative once expired */
  X509 *x509;              /* owned by the list */
} cr_trust_cert_t;

typedef struct cr_trust_crl {
  char fingerprint[CR_TRUST_FP_HEX + 1];
  char *path;
  char *issuer;
  time_t this_update;
  time_t next_update;      /* 0 when the CRL has none */
  int stale;               /* next_update is in the past */
  long days_left;          /* whole days until next_update (0 when none) */
  size_t nrevoked;
  X509_CRL *crl;           /* owned by the list */
} cr_trust_crl_t;

typedef struct cr_trust_problem {
  char *path;
  char *why;               /* e.g. "does not parse", "content does not match its name" */
} cr_trust_problem_t;

typedef struct cr_trust_list {
  cr_trust_cert_t *certs;  /* sorted by subject, then fingerprint */
  size_t ncerts;
  cr_trust_crl_t *crls;    /* sorted by issuer, then this_update */
  size_t ncrls;
  cr_trust_problem_t *problems;
  size_t nproblems;
} cr_trust_list_t;

/* Reads every store file. 0 (problems are reported in the list, not as an error) or UV_E* when the
 * directory cannot be read. */
int cr_truststore_list(cr_truststore_t *ts, cr_trust_list_t *out, char *err, size_t errlen);
void cr_trust_list_free(cr_trust_list_t *l);

/* A cheap summary of the directory (names, sizes, mtimes, inodes of the store files), so a reload
 * can tell whether anything changed without parsing. Equal values: nothing to reload. */
int cr_truststore_generation(cr_truststore_t *ts, uint64_t *gen, char *err, size_t errlen);

/* ---- input ---- */

/* Certificates parsed from files or bytes, each remembering where it came from for messages. */
typedef struct cr_trust_batch cr_trust_batch_t;

cr_trust_batch_t *cr_trust_batch_new(void);
void cr_trust_batch_free(cr_trust_batch_t *b);
/* Parses data (PEM with one or many certificates, DER, or PKCS#12 with password; NULL or "" tries
 * the empty password) and appends its certificates. label names the source in messages (a path).
 * From a PKCS#12 only its CA certificates are taken (its own leaf is not a trust anchor); one that
 * carries none is an error. Errors: CR_ENO_CERT ("no certificate found in LABEL (expected PEM, DER
 * or PKCS#12)"), CR_ETLS (a PEM block that does not decode, by index), CR_EP12_PASSWORD,
 * CR_EP12_CORRUPT, CR_EP12_UNSUPPORTED. On error the batch is unchanged. */
int cr_trust_batch_add_mem(cr_trust_batch_t *b, const void *data, size_t len, const char *password,
                           const char *label, char *err, size_t errlen);
/* The same for a file (at most 1 MiB); UV_E* when it cannot be read. */
int cr_trust_batch_add_file(cr_trust_batch_t *b, const char *path, const char *password, char *err, size_t errlen);
size_t cr_trust_batch_count(const cr_trust_batch_t *b);

/* ---- changes ---- */

enum {
  CR_TRUST_FORCE = 1 /* add: accept expired (or not yet valid) certificates; add_crl: a stale CRL */
};

typedef enum { CR_TRUST_ADDED = 1, CR_TRUST_PRESENT } cr_trust_add_status_t;

typedef struct cr_trust_added {
  char fingerprint[CR_TRUST_FP_HEX + 1];
  char *subject;
  char *source;             /* "FILE" or "FILE, certificate 2 of 3" */
  cr_trust_add_status_t status;
  int intermediate;         /* a CA that is not self-signed: its root must be in the store too */
  int issuer_present;       /* intermediate only: its issuer is (now) in the store */
  int expired;              /* only with CR_TRUST_FORCE */
} cr_trust_added_t;

typedef struct cr_trust_report {
  cr_trust_added_t *v;
  size_t n;
} cr_trust_report_t;

void cr_trust_report_free(cr_trust_report_t *r);

/* Adds every certificate of the batch, all or nothing. Each must be a CA (basicConstraints CA:TRUE)
 * and within its validity (unless CR_TRUST_FORCE). Certificates already present are reported
 * CR_TRUST_PRESENT and not rewritten. Errors: CR_ETRUST_REFUSED (a certificate breaks the rules;
 * err names its source, index and subject, and what to do), CR_ENO_CERT (empty batch), UV_E* from
 * the file system (ENOSPC, EACCES, ...; the store is left as it was). rep may be NULL; on error it
 * holds nothing. */
int cr_truststore_add(cr_truststore_t *ts, const cr_trust_batch_t *b, unsigned flags, cr_trust_report_t *rep,
                      char *err, size_t errlen);

/* Removes the certificate or CRL whose fingerprint is, or starts with, fp (hex, case-insensitive,
 * at least CR_TRUST_MIN_PREFIX digits; a "sha256:" prefix and ':' separators are allowed).
 * removed (optional) receives the full fingerprint. Errors: UV_ENOENT (nothing matches),
 * CR_EAMBIGUOUS (err lists the candidates), UV_EINVAL (not hex or too short), UV_E* from unlink. */
int cr_truststore_remove(cr_truststore_t *ts, const char *fp, char removed[CR_TRUST_FP_HEX + 1], char *err,
                         size_t errlen);

/* Adds a CRL (PEM or DER) read from data. Its issuer must be a CA in the store and its signature
 * must verify with that CA's key. A CRL older than one already stored for the same issuer is
 * refused; CRLs it supersedes are removed after it is written. A stale CRL (nextUpdate passed) is
 * refused unless CR_TRUST_FORCE. added (optional) receives the stored entry's fingerprint; *present
 * (optional) is set to 1 when the very same CRL was already there. Errors: CR_ENO_CERT ("no CRL
 * found in LABEL"), CR_ETRUST_REFUSED, UV_E* from the file system. */
int cr_truststore_add_crl_mem(cr_truststore_t *ts, const void *data, size_t len, const char *label, unsigned flags,
                              char added[CR_TRUST_FP_HEX + 1], int *present, char *err, size_t errlen);
int cr_truststore_add_crl_file(cr_truststore_t *ts, const char *path, unsigned flags,
                               char added[CR_TRUST_FP_HEX + 1], int *present, char *err, size_t errlen);

/* ---- use ---- */

/* Revocation checking, with the same values as the agent's `revocation: off | soft | hard`. */
typedef enum {
  CR_TRUST_CRL_OFF = 0, /* CRLs are not consulted */
  CR_TRUST_CRL_SOFT,    /* every certificate of the chain is checked; a missing or stale CRL is forgiven */
  CR_TRUST_CRL_HARD     /* every certificate of the chain is checked; a missing or stale CRL fails */
} cr_trust_crl_mode_t;

/* Builds a new X509_STORE holding every certificate of the store (roots and intermediates) and,
 * unless crl_mode is OFF, every CRL with X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL set.
 * For SOFT the store carries a verify callback that forgives cr_trust_crl_soft_error() errors; an
 * SSL_CTX verify callback replaces the store's, so a TLS user must apply that rule in its own
 * callback. The caller owns *out (X509_STORE_free, or SSL_CTX_set_cert_store which takes it over).
 * Errors: UV_E* (unreadable directory), CR_ETRUST_REFUSED (a problem file; err names it), CR_ENO_CERT
 * (the store holds no certificate: nothing could verify, which is surely a mistake). */
int cr_truststore_x509_store(cr_truststore_t *ts, int crl_mode, X509_STORE **out, char *err, size_t errlen);

/* The same from a listing already read (one cr_truststore_list serves every crl_mode, and every
 * route sees the same snapshot), leaving out the listing's problem files: the caller reports them.
 * This is how the agent loads, so one bad file costs only what it would have added. CR_ENO_CERT when
 * the listing holds no usable certificate. l stays the caller's; the store takes its own references. */
int cr_truststore_x509_store_list(const cr_truststore_t *ts, const cr_trust_list_t *l, int crl_mode, X509_STORE **out,
                                  char *err, size_t errlen);

/* 1 when soft revocation forgives this X509_V_ERR_* (no CRL for the issuer, CRL expired or not yet
 * valid, CRL issuer not found); a revoked certificate or a bad CRL signature is never forgiven. */
int cr_trust_crl_soft_error(int x509_err);

typedef enum {
  CR_TRUST_PURPOSE_ANY = 0, /* no extendedKeyUsage check */
  CR_TRUST_PURPOSE_CLIENT,  /* TLS client (route identities) */
  CR_TRUST_PURPOSE_SERVER   /* TLS server (upstreams) */
} cr_trust_purpose_t;

/* Verifies leaf (with untrusted intermediates, may be NULL) against store at the current time.
 * 0: *chain_out (optional; the caller frees it with sk_X509_pop_free(.., X509_free)) is the chain
 * built, leaf first, trust anchor last. CR_ETLS_VERIFY: *x509_err (optional) is the X509_V_ERR_*
 * code and err reads "<X509_verify_cert_error_string> (depth N: SUBJECT)", e.g. "certificate has
 * expired (depth 0: CN=cms.example)", "unable to get local issuer certificate (depth 0: ...)",
 * "certificate revoked (depth 0: ...)", "unsuitable certificate purpose (depth 0: ...)".
 * warnings (optional, may be NULL) receives the errors soft revocation forgave, "" when none;
 * soft applies when the store was built with CR_TRUST_CRL_SOFT. */
int cr_trust_verify_store(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, int purpose,
                          STACK_OF(X509) **chain_out, int *x509_err, char *warnings, size_t warnlen, char *err,
                          size_t errlen);

/* The same against the directory: builds a store (crl_mode as for cr_truststore_x509_store) and
 * verifies. Store errors are returned as they are. */
int cr_truststore_verify(cr_truststore_t *ts, X509 *leaf, STACK_OF(X509) *untrusted, int purpose, int crl_mode,
                         STACK_OF(X509) **chain_out, int *x509_err, char *warnings, size_t warnlen, char *err,
                         size_t errlen);

/* What to do about a verification failure with this X509_V_ERR_* code, one sentence for users
 * ("add the root CA that issued it with 'ccrelay trust add' ..."); a generic hint for other codes. */
const char *cr_trust_verify_hint(int x509_err);

/* Reads what `trust verify` checks: a PEM file (first certificate the leaf, the rest untrusted
 * intermediates), a DER certificate, or a PKCS#12 identity (its certificate with the key is the
 * leaf, the others untrusted). The caller frees *leaf and *untrusted (never NULL on success).
 * Errors as for cr_trust_batch_add_file. */
int cr_trust_load_chain(const char *path, const char *password, X509 **leaf, STACK_OF(X509) **untrusted, char *err,
                        size_t errlen);

#endif

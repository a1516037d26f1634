/* SPDX-License-Identifier: Apache-2.0 */
/* TLS contexts and identities: provider setup, PKCS#12 and PEM loading, the SSL_CTX policy, and the
 * callbacks (verify, ALPN, alerts) that report into each connection's notes (tls_internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "ccrelay/x509.h"
#include "tls_internal.h"

/* PKCS#12 and PEM files are small; anything larger is not what the user meant to point at. */
#define MAX_CRED_FILE (4 * 1024 * 1024)

struct cr_tls_ctx {
  SSL_CTX *ssl_ctx;
  unsigned refs;
  int server;
  char *alpn;
  int alpn_required;
  int crl_soft;
  cr_tls_peer_check_cb peer_check;
  void *peer_check_arg;
  int resume_sessions;
  SSL_SESSION *resume; /* the latest session a server gave, for resume_name; NULL when none */
  char *resume_name;
  cr__tls_crls_t crls;
};

static int notes_index = -1;

/* ---- global ---- */

int cr_tls_global_init(char *err, size_t errlen) {
  int r;
  if (notes_index >= 0)
    return 0;
  r = cr_x509_init(err, errlen);
  if (r < 0)
    return r;
  notes_index = SSL_get_ex_new_index(0, "ccrelay notes", NULL, NULL, NULL);
  return 0;
}

/* ---- identities ---- */

void cr_tls_identity_free(cr_tls_identity_t *id) {
  EVP_PKEY_free(id->key);
  X509_free(id->cert);
  if (id->chain)
    sk_X509_pop_free(id->chain, X509_free);
  memset(id, 0, sizeof *id);
}

static int load_pkcs12(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen) {
  cr_x509_set_t set;
  unsigned char *data;
  size_t len;
  int r;
  r = cr_x509_read_file(src->pkcs12, "PKCS#12 file", MAX_CRED_FILE, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = cr_x509_decode_pkcs12(data, len, src->password, src->pkcs12, &set, err, errlen);
  cr_wipe(data, len);
  free(data);
  if (r == CR_EP12_PASSWORD) {
    size_t n = strlen(err);
    snprintf(err + n, errlen - n, "; check password_file");
  }
  if (r < 0)
    return r;
  if (set.leaf == NULL || set.key == NULL) {
    snprintf(err, errlen, "%s holds no %s; export the certificate together with its private key", src->pkcs12,
             set.leaf == NULL ? "certificate" : "private key");
    cr_x509_set_free(&set);
    return CR_EP12_CORRUPT;
  }
  out->key = set.key;
  out->cert = set.leaf;
  out->chain = set.certs;
  set.key = NULL;
  set.leaf = NULL;
  set.certs = NULL;
  cr_x509_set_free(&set);
  return 0;
}

static int load_pem(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen) {
  cr_x509_set_t set;
  unsigned char *data;
  size_t len;
  char detail[256];
  int r;
  if (src->cert == NULL || src->key == NULL) {
    snprintf(err, errlen, "a TLS identity needs either pkcs12 or both cert and key");
    return CR_ECONFIG;
  }
  r = cr_x509_read_file(src->cert, "certificate file", MAX_CRED_FILE, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = cr_x509_decode(data, len, NULL, src->cert, &set, detail, sizeof detail);
  free(data);
  if (r == 0 && (set.format != CR_X509_PEM || sk_X509_num(set.certs) == 0)) {
    snprintf(detail, sizeof detail, "%s", set.format == CR_X509_PEM ? "no CERTIFICATE block" : "not PEM");
    cr_x509_set_free(&set);
    r = CR_ETLS;
  }
  if (r < 0) {
    snprintf(err, errlen, "%s holds no PEM certificate (%s); it must start with -----BEGIN CERTIFICATE-----",
             src->cert, r == CR_ETLS ? detail : "not PEM");
    return CR_ETLS;
  }
  out->cert = sk_X509_shift(set.certs);
  out->chain = set.certs;
  set.certs = NULL;
  cr_x509_set_free(&set);
  r = cr_x509_read_file(src->key, "key file", MAX_CRED_FILE, &data, &len, err, errlen);
  if (r < 0) {
    cr_tls_identity_free(out);
    return r;
  }
  out->key = cr_x509_pem_key(data, len, src->password, detail, sizeof detail);
  cr_wipe(data, len);
  free(data);
  if (out->key == NULL) {
    snprintf(err, errlen, "%s holds no usable PEM private key (%s); if it is encrypted, check password_file",
             src->key, detail[0] ? detail : "no detail from OpenSSL");
    cr_tls_identity_free(out);
    return CR_ETLS;
  }
  return 0;
}

int cr_tls_identity_load(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen) {
  int r;
  memset(out, 0, sizeof *out);
  /* A config check loads identities without making a context: legacy files still need the provider. */
  r = cr_tls_global_init(err, errlen);
  if (r < 0)
    return r;
  r = src->pkcs12 ? load_pkcs12(src, out, err, errlen) : load_pem(src, out, err, errlen);
  if (r < 0)
    return r;
  if (!X509_check_private_key(out->cert, out->key)) {
    char subject[256];
    ERR_clear_error();
    cr_x509_subject(out->cert, subject, sizeof subject);
    if (src->pkcs12)
      snprintf(err, errlen, "%s: the private key does not belong to certificate %s; export the pair again",
               src->pkcs12, subject);
    else
      snprintf(err, errlen, "%s does not belong to certificate %s in %s; check that cert and key are a pair",
               src->key, subject, src->cert);
    cr_tls_identity_free(out);
    return CR_EKEY_MISMATCH;
  }
  return 0;
}

int cr_tls_identity_check_current(const cr_tls_identity_t *id, const char *file, char *err, size_t errlen) {
  time_t now = time(NULL), nb = cr_x509_not_before(id->cert), na = cr_x509_not_after(id->cert);
  char subject[256], when[32];
  if (na != 0 && na < now) {
    cr_x509_subject(id->cert, subject, sizeof subject);
    cr_x509_fmt_time(na, CR_X509_TIME_ISO, when, sizeof when);
    snprintf(err, errlen, "certificate %s in %s expired at %s; no peer will accept it: renew it", subject, file,
             when);
    return CR_ETLS;
  }
  if (nb != 0 && nb > now) {
    cr_x509_subject(id->cert, subject, sizeof subject);
    cr_x509_fmt_time(nb, CR_X509_TIME_ISO, when, sizeof when);
    snprintf(err, errlen, "certificate %s in %s is not valid before %s; check the system clock", subject, file,
             when);
    return CR_ETLS;
  }
  return 0;
}

int cr_tls_identity_load_current(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err,
                                 size_t errlen) {
  int r = cr_tls_identity_load(src, out, err, errlen);
  if (r == 0 && (r = cr_tls_identity_check_current(out, src->pkcs12 ? src->pkcs12 : src->cert, err, errlen)) < 0)
    cr_tls_identity_free(out);
  return r;
}

/* ---- context ---- */

static cr__tls_notes_t *notes_of(SSL *ssl) { return ssl ? SSL_get_ex_data(ssl, notes_index) : NULL; }

static char *note_text(char **slot) {
  if (*slot == NULL)
    *slot = cr_malloc(CR__TLS_NOTE_MAX);
  return *slot;
}

void cr__tls_notes_release(cr__tls_notes_t *notes) {
  free(notes->verify_why);
  free(notes->verify_warn);
  notes->verify_why = notes->verify_warn = NULL;
}

static int verify_cb(int preverify_ok, X509_STORE_CTX *store) {
  SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
  cr_tls_ctx_t *ctx = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
  cr__tls_notes_t *notes = notes_of(ssl);
  X509 *cert = X509_STORE_CTX_get_current_cert(store);
  char subject[160];
  if (!preverify_ok && ctx && ctx->crl_soft && cr_trust_crl_soft_error(X509_STORE_CTX_get_error(store))) {
    if (notes && notes->verify_warn == NULL) {
      cr_x509_subject(cert, subject, sizeof subject);
      snprintf(note_text(&notes->verify_warn), CR__TLS_NOTE_MAX, "%s (depth %d, subject %s)",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)),
               X509_STORE_CTX_get_error_depth(store), subject[0] ? subject : "unknown");
    }
    return 1; /* soft revocation: a missing or stale CRL is logged by the caller, not fatal */
  }
  if (!preverify_ok) {
    if (notes && notes->verify_why == NULL) {
      int e = X509_STORE_CTX_get_error(store);
      if (e == X509_V_ERR_CERT_REVOKED) { /* the serial is what the CA's records know it by */
        char detail[260];
        cr__tls_revoked_detail(cert, detail, sizeof detail);
        snprintf(note_text(&notes->verify_why), CR__TLS_NOTE_MAX, "%s (depth %d, %s)",
                 X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(store), detail);
      } else {
        cr_x509_subject(cert, subject, sizeof subject);
        snprintf(note_text(&notes->verify_why), CR__TLS_NOTE_MAX, "%s (depth %d, subject %s)",
                 X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(store),
                 subject[0] ? subject : "unknown");
      }
    }
    return 0;
  }
  if (X509_STORE_CTX_get_error_depth(store) == 0 && ctx && ctx->peer_check) {
    char why[200] = "";
    if (ctx->peer_check(cert, ctx->peer_check_arg, why, sizeof why) != 0) {
      if (notes)
        snprintf(note_text(&notes->verify_why), CR__TLS_NOTE_MAX, "%s",
                 why[0] ? why : "peer certificate refused by policy");
      X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
      return 0;
    }
  }
  return 1;
}

/* 1 if the protocol id p[n] is one this context speaks: its own, or for an HTTP/1.1 server also
 * "http/1.0" (an HTTP/1.1 server answers HTTP/1.0 requests; `curl --http1.0` offers only that). */
int cr__tls_ctx_alpn_ok(const cr_tls_ctx_t *ctx, const unsigned char *p, size_t n) {
  size_t want = strlen(ctx->alpn);
  if (n == want && memcmp(p, ctx->alpn, n) == 0)
    return 1;
  return ctx->server && strcmp(ctx->alpn, "http/1.1") == 0 && n == 8 && memcmp(p, "http/1.0", 8) == 0;
}

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
  cr_tls_ctx_t *ctx = arg;
  size_t want = strlen(ctx->alpn);
  const unsigned char *other = NULL;
  unsigned i = 0;
  while (i < inlen) {
    unsigned n = in[i];
    if (i + 1 + n > inlen)
      break;
    if (n == want && memcmp(in + i + 1, ctx->alpn, n) == 0) {
      *out = in + i + 1;
      *outlen = (unsigned char)n;
      return SSL_TLSEXT_ERR_OK;
    }
    if (other == NULL && cr__tls_ctx_alpn_ok(ctx, in + i + 1, n))
      other = in + i;
    i += 1 + n;
  }
  if (other != NULL) { /* our own protocol is preferred wherever the client lists it */
    *out = other + 1;
    *outlen = other[0];
    return SSL_TLSEXT_ERR_OK;
  }
  {
    cr__tls_notes_t *notes = notes_of(ssl);
    if (notes)
      notes->alpn_refused = 1;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol */
}

/* A client that sends no ALPN extension never reaches alpn_select_cb: refuse it here. */
static int client_hello_cb(SSL *ssl, int *al, void *arg) {
  const unsigned char *ext;
  size_t len;
  cr__tls_notes_t *notes;
  (void)arg;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext, &len))
    return SSL_CLIENT_HELLO_SUCCESS;
  notes = notes_of(ssl);
  if (notes)
    notes->alpn_refused = 1;
  *al = SSL_AD_NO_APPLICATION_PROTOCOL;
  return SSL_CLIENT_HELLO_ERROR;
}

/* Client: keeps the newest session (TLS 1.3 sends it after the handshake, TLS 1.2 at its end). One per
 * context is enough: a context serves one upstream. The context keeps a copy, and each connection gets
 * a copy of that: OpenSSL marks a connection's session unresumable when the connection ends without
 * close_notify (a pooled connection the server dropped), which would otherwise spoil the one kept. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess) {
  cr_tls_ctx_t *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
  const cr__tls_notes_t *notes = SSL_get_ex_data(ssl, notes_index);
  SSL_SESSION *copy;
  if (ctx == NULL || !ctx->resume_sessions || notes == NULL || notes->server_name == NULL ||
      !SSL_SESSION_is_resumable(sess) || (copy = SSL_SESSION_dup(sess)) == NULL)
    return 0;
  SSL_SESSION_free(ctx->resume);
  free(ctx->resume_name);
  ctx->resume = copy;
  ctx->resume_name = cr_strdup(notes->server_name);
  return 0; /* OpenSSL keeps its own reference to sess */
}

void cr__tls_ctx_offer_session(cr_tls_ctx_t *ctx, SSL *ssl, const cr__tls_notes_t *notes) {
  SSL_SESSION *copy;
  /* Offered to several connections at once when they dial together: servers that keep no state for
   * tickets (OpenSSL, so nginx and HAProxy) accept that, and any other does a full handshake. */
  if (ctx->resume == NULL || notes->server_name == NULL || strcmp(ctx->resume_name, notes->server_name) != 0)
    return;
  copy = SSL_SESSION_dup(ctx->resume);
  if (copy == NULL)
    return; /* out of memory: a full handshake */
  SSL_set_session(ssl, copy); /* takes its own reference */
  SSL_SESSION_free(copy);
}

static void info_cb(const SSL *ssl, int where, int ret) {
  cr__tls_notes_t *notes;
  if (!(where & SSL_CB_ALERT) || (ret & 0xff) == SSL_AD_CLOSE_NOTIFY)
    return;
  notes = notes_of((SSL *)ssl);
  if (notes == NULL)
    return;
  if (where & SSL_CB_READ)
    notes->peer_alert = ret & 0xff;
  else
    notes->sent_alert = ret & 0xff;
}

/* Loads the PEM roots of path into the context's store (and, on a server, the list of acceptable
 * client CAs it sends). Read through cr_x509_read_file rather than OpenSSL's own file loaders, so a
 * FIFO or device given as ca_file is refused instead of blocking the process. */
/* A CA file decoded: PEM with at least one certificate (CRLs may ride along), or an error saying
 * what to put in it. Shared by the contexts' own roots and the per-service caller CAs. */
static int read_ca_pem(const char *path, cr_x509_set_t *set, char *err, size_t errlen) {
  unsigned char *data;
  size_t len;
  char detail[256];
  int r = cr_x509_read_file(path, "CA file", MAX_CRED_FILE, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = cr_x509_decode(data, len, NULL, path, set, detail, sizeof detail);
  free(data);
  if (r < 0 || set->format != CR_X509_PEM) {
    snprintf(err, errlen, "cannot load CA certificates from %s (%s); it must be a readable PEM file of root certificates",
             path, r < 0 ? detail : "not PEM");
    if (r == 0)
      cr_x509_set_free(set);
    return CR_ETLS;
  }
  if (sk_X509_num(set->certs) == 0) {
    snprintf(err, errlen, "%s contains no certificate; put the PEM roots the peer must chain to in it", path);
    cr_x509_set_free(set);
    return CR_ETLS;
  }
  return 0;
}

static int load_ca_file(SSL_CTX *sc, const char *path, int server, char *err, size_t errlen) {
  X509_STORE *store = SSL_CTX_get_cert_store(sc);
  cr_x509_set_t set;
  int r, n;
  if ((r = read_ca_pem(path, &set, err, errlen)) < 0)
    return r;
  n = sk_X509_num(set.certs);
  for (int i = 0; i < n; i++) {
    X509 *x = sk_X509_value(set.certs, i);
    X509_STORE_add_cert(store, x); /* a duplicate is not an error worth reporting */
    /* Tells clients which roots we accept, so one holding several identities picks the right one. */
    if (server)
      SSL_CTX_add_client_CA(sc, x);
  }
  for (int i = 0; i < sk_X509_CRL_num(set.crls); i++)
    X509_STORE_add_crl(store, sk_X509_CRL_value(set.crls, i));
  ERR_clear_error();
  cr_x509_set_free(&set);
  return 0;
}

/* ---- client policy (a route's upstream.tls) ---- */

const char *cr_tls_version_name(int v) {
  switch (v) {
  case TLS1_VERSION:
    return "TLSv1";
  case TLS1_1_VERSION:
    return "TLSv1.1";
  case TLS1_2_VERSION:
    return "TLSv1.2";
  case TLS1_3_VERSION:
    return "TLSv1.3";
  default:
    return "unknown";
  }
}

static int default_level = -1;

int cr_tls_policy_level(const cr_tls_policy_t *p) {
  if (p && p->security_level >= 0)
    return p->security_level;
  if (default_level < 0) {
    SSL_CTX *sc = SSL_CTX_new(TLS_client_method());
    default_level = sc ? SSL_CTX_get_security_level(sc) : 2;
    SSL_CTX_free(sc);
  }
  return default_level;
}

static int valid_version(int v) { return v == 0 || (v >= TLS1_VERSION && v <= TLS1_3_VERSION); }

/* Puts p on a client context. The cipher list and groups are refused here, by OpenSSL's own parser,
 * so `check` and the agent reject the same strings. */
static int client_policy_apply(SSL_CTX *sc, const cr_tls_policy_t *p, const char **key, char *err, size_t errlen) {
  char detail[256];
  int min = p->min_version ? p->min_version : TLS1_2_VERSION;
  *key = NULL;
  if (!valid_version(p->min_version) || !valid_version(p->max_version)) {
    *key = !valid_version(p->min_version) ? "min_version" : "max_version";
    snprintf(err, errlen, "unknown TLS version; use TLSv1, TLSv1.1, TLSv1.2 or TLSv1.3");
    return CR_ECONFIG;
  }
  if (p->max_version && p->max_version < min) {
    *key = "max_version";
    snprintf(err, errlen, "max_version %s is below min_version %s", cr_tls_version_name(p->max_version),
             cr_tls_version_name(min));
    return CR_ECONFIG;
  }
  if (p->security_level > 5) {
    *key = "security_level";
    snprintf(err, errlen, "security_level must be 0..5");
    return CR_ECONFIG;
  }
  ERR_clear_error();
  if (p->security_level >= 0)
    SSL_CTX_set_security_level(sc, p->security_level);
  if (!SSL_CTX_set_min_proto_version(sc, min) ||
      (p->max_version && !SSL_CTX_set_max_proto_version(sc, p->max_version))) {
    *key = "min_version";
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "this OpenSSL cannot use TLS versions %s..%s (%s)", cr_tls_version_name(min),
             p->max_version ? cr_tls_version_name(p->max_version) : "TLSv1.3", detail);
    return CR_ECONFIG;
  }
  if (p->ciphers && !SSL_CTX_set_cipher_list(sc, p->ciphers)) {
    *key = "ciphers";
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "OpenSSL accepts no cipher of '%s' (%s); see `openssl ciphers -v '%s'`", p->ciphers,
             detail, p->ciphers);
    return CR_ECONFIG;
  }
  if (p->curves && !SSL_CTX_set1_groups_list(sc, p->curves)) {
    *key = "curves";
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "OpenSSL does not know every group of '%s' (%s); see `openssl list -tls-groups`",
             p->curves, detail);
    return CR_ECONFIG;
  }
  return 0;
}

int cr_tls_policy_check(const cr_tls_policy_t *p, const char **key, char *err, size_t errlen) {
  SSL_CTX *sc;
  int r;
  *key = NULL;
  if (cr_tls_global_init(err, errlen) < 0)
    return CR_ETLS;
  sc = SSL_CTX_new(TLS_client_method());
  if (sc == NULL) {
    snprintf(err, errlen, "cannot create a TLS context");
    return CR_ETLS;
  }
  r = client_policy_apply(sc, p, key, err, errlen);
  SSL_CTX_free(sc);
  return r;
}

int cr_tls_policy_check_chain(const cr_tls_policy_t *p, X509 *leaf, STACK_OF(X509) *chain, char *err, size_t errlen) {
  static const cr_tls_policy_t strict = {0, 0, -1, NULL, NULL};
  char detail[256], subject[256];
  X509 *bad = leaf;
  SSL_CTX *sc;
  int ok, level = cr_tls_policy_level(p ? p : &strict);
  if (cr_tls_global_init(err, errlen) < 0)
    return CR_ETLS;
  sc = SSL_CTX_new(TLS_client_method());
  if (sc == NULL) {
    snprintf(err, errlen, "cannot create a TLS context");
    return CR_ETLS;
  }
  ERR_clear_error();
  SSL_CTX_set_security_level(sc, level);
  /* The same checks a context makes when it takes an identity (key size of every certificate, the
   * digest of every signature but a root's self-signature), without needing the private key. */
  ok = SSL_CTX_use_certificate(sc, leaf);
  for (int i = 0; ok && chain && i < sk_X509_num(chain); i++) {
    bad = sk_X509_value(chain, i);
    ok = SSL_CTX_add1_chain_cert(sc, bad);
  }
  SSL_CTX_free(sc);
  if (ok)
    return 0;
  cr_x509_drain_errors(detail, sizeof detail, NULL);
  cr_x509_subject(bad, subject, sizeof subject);
  snprintf(err, errlen,
           "certificate %s is too weak for TLS security level %d (%s); replace it, or allow it for this route "
           "with upstream.tls.security_level (a deliberate weakening; 0 accepts RSA-1024 and SHA-1)",
           subject[0] ? subject : "(no subject)", level, detail);
  return CR_ETLS;
}

void cr_tls_policy_set_verify_level(X509_STORE *st, const cr_tls_policy_t *p) {
  X509_VERIFY_PARAM_set_auth_level(X509_STORE_get0_param(st), cr_tls_policy_level(p));
}


int cr_tls_ctx_new(const cr_tls_ctx_opts_t *opts, cr_tls_ctx_t **out, char *err, size_t errlen) {
  cr_tls_ctx_t *ctx;
  SSL_CTX *sc;
  char detail[256];
  int r, mode;
  r = cr_tls_global_init(err, errlen);
  if (r < 0)
    return r;
  if (opts->server && opts->identity == NULL && opts->identity_loaded == NULL) {
    snprintf(err, errlen, "a TLS server needs an identity (cert and key, or pkcs12)");
    return CR_ECONFIG;
  }
  if (!opts->server && (opts->ca_file == NULL || *opts->ca_file == '\0') && opts->verify_store == NULL) {
    snprintf(err, errlen, "a TLS client needs ca_file or a trust store: the roots its server's certificate must chain to");
    return CR_ECONFIG;
  }
  if (opts->alpn && (strlen(opts->alpn) == 0 || strlen(opts->alpn) > 255)) {
    snprintf(err, errlen, "ALPN protocol id '%s' must be 1 to 255 bytes", opts->alpn);
    return CR_ECONFIG;
  }
  ERR_clear_error();
  sc = SSL_CTX_new(opts->server ? TLS_server_method() : TLS_client_method());
  if (sc == NULL) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "cannot create a TLS context: %s", detail);
    return CR_ETLS;
  }
  ctx = cr_calloc(1, sizeof *ctx);
  ctx->ssl_ctx = sc;
  ctx->refs = 1;
  ctx->server = opts->server;
  ctx->alpn = opts->alpn ? cr_strdup(opts->alpn) : NULL;
  ctx->alpn_required = opts->alpn_required;
  ctx->crl_soft = opts->crl_soft;
  ctx->peer_check = opts->peer_check;
  ctx->peer_check_arg = opts->peer_check_arg;
  ctx->resume_sessions = !opts->server && opts->resume_sessions;
  SSL_CTX_set_app_data(sc, ctx);

  SSL_CTX_set_min_proto_version(sc, opts->tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  if (opts->ciphers && !SSL_CTX_set_cipher_list(sc, opts->ciphers)) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "no TLS 1.2 cipher matches '%s' (%s); see `openssl ciphers -v '%s'`", opts->ciphers,
             detail[0] ? detail : "no detail from OpenSSL", opts->ciphers);
    cr_tls_ctx_free(ctx);
    return CR_ECONFIG;
  }
  if (!opts->server && opts->policy) {
    const char *key;
    /* Before the identity: the context judges the identity under the policy's level. */
    if ((r = client_policy_apply(sc, opts->policy, &key, err, errlen)) < 0) {
      cr_tls_ctx_free(ctx);
      return r;
    }
  }
  SSL_CTX_set_options(sc, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (opts->server) {
    /* Resumption is by stateless TLS 1.3 tickets; the server-side session cache only costs a
     * lookup, an insert and periodic sweeps of the whole table per handshake. One ticket per
     * handshake is enough for a client that reconnects one connection at a time. */
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(sc, 1);
    /* Without a session id context, a server that asks for client certificates answers a client
     * resuming its session with an internal-error alert instead of resuming or doing a full
     * handshake: every HTTPS client that reuses sessions would fail its second connection. */
    SSL_CTX_set_session_id_context(sc, (const unsigned char *)"ccrelay", 7);
    if (opts->peer_check) {
      /* The check (the tunnel's agent -> relay group) must see every handshake; a resumed one
       * carries no certificate exchange, so no tickets at all. */
      SSL_CTX_set_options(sc, SSL_OP_NO_TICKET);
      SSL_CTX_set_num_tickets(sc, 0);
    }
  } else if (ctx->resume_sessions) {
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(sc, new_session_cb);
  }
  /* No SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the record buffers for every record of a
   * busy connection. tls_stream.c gives them back once a connection has gone quiet instead. */
  SSL_CTX_set_info_callback(sc, info_cb);

  if (opts->verify_store && !(opts->ca_file && *opts->ca_file)) {
    X509_STORE_up_ref(opts->verify_store);
    SSL_CTX_set_cert_store(sc, opts->verify_store); /* takes the reference just made */
  }
  if (opts->ca_file && *opts->ca_file && (r = load_ca_file(sc, opts->ca_file, opts->server, err, errlen)) < 0) {
    cr_tls_ctx_free(ctx);
    return r;
  }
  for (size_t i = 0; opts->server && i < opts->nclient_ca_files; i++)
    if ((r = load_ca_file(sc, opts->client_ca_files[i], 1, err, errlen)) < 0) {
      cr_tls_ctx_free(ctx);
      return r;
    }
  if (opts->ca_file && *opts->ca_file && opts->server && opts->crl_mode != CR_TRUST_CRL_OFF) {
    r = cr__tls_crls_init(&ctx->crls, sc, opts->ca_file, opts->crl_file, opts->crl_mode, err, errlen);
    if (r < 0) {
      cr_tls_ctx_free(ctx);
      return r;
    }
    if (ctx->crls.mode == CR_TRUST_CRL_SOFT)
      ctx->crl_soft = 1;
    if (ctx->crls.mode != CR_TRUST_CRL_OFF && opts->nclient_ca_files > 0) {
      snprintf(err, errlen, "client certificates are checked against CRLs (from %s%s%s), which the other client "
               "CAs (%s%s) have none of; CRL checking and per-service client CAs cannot be combined yet",
               opts->ca_file, opts->crl_file ? " and " : "", opts->crl_file ? opts->crl_file : "",
               opts->client_ca_files[0], opts->nclient_ca_files > 1 ? ", ..." : "");
      cr_tls_ctx_free(ctx);
      return CR_ECONFIG;
    }
  }
  /* Verification is never off. A server without ca_file has nothing to check a client certificate
   * against, so it does not ask for one (asking would make browsers prompt the user). */
  mode = SSL_VERIFY_PEER;
  if (opts->server && opts->ca_file && *opts->ca_file)
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  if (!opts->server || (opts->ca_file && *opts->ca_file) || opts->nclient_ca_files > 0)
    SSL_CTX_set_verify(sc, mode, verify_cb);

  if (opts->identity_loaded) {
    const cr_tls_identity_t *li = opts->identity_loaded;
    if (!SSL_CTX_use_cert_and_key(sc, li->cert, li->key, li->chain, 1) || !SSL_CTX_check_private_key(sc)) {
      cr_x509_drain_errors(detail, sizeof detail, NULL);
      snprintf(err, errlen, "cannot use the identity (%s); check that it is a valid certificate and key", detail);
      cr_tls_ctx_free(ctx);
      return CR_ETLS;
    }
  } else if (opts->identity) {
    cr_tls_identity_t id;
    r = opts->identity_current ? cr_tls_identity_load_current(opts->identity, &id, err, errlen)
                               : cr_tls_identity_load(opts->identity, &id, err, errlen);
    if (r < 0) {
      cr_tls_ctx_free(ctx);
      return r;
    }
    if (!SSL_CTX_use_cert_and_key(sc, id.cert, id.key, id.chain, 1) || !SSL_CTX_check_private_key(sc)) {
      cr_x509_drain_errors(detail, sizeof detail, NULL);
      snprintf(err, errlen, "cannot use the identity from %s (%s); check that it is a valid certificate and key",
               opts->identity->pkcs12 ? opts->identity->pkcs12 : opts->identity->cert, detail);
      cr_tls_identity_free(&id);
      cr_tls_ctx_free(ctx);
      return CR_ETLS;
    }
    cr_tls_identity_free(&id);
  }

  if (ctx->alpn) {
    if (opts->server) {
      SSL_CTX_set_alpn_select_cb(sc, alpn_select_cb, ctx);
      if (opts->alpn_required)
        SSL_CTX_set_client_hello_cb(sc, client_hello_cb, ctx);
    } else {
      unsigned char wire[256];
      size_t n = strlen(ctx->alpn);
      wire[0] = (unsigned char)n;
      memcpy(wire + 1, ctx->alpn, n);
      if (SSL_CTX_set_alpn_protos(sc, wire, (unsigned)(n + 1)) != 0) { /* 0 is success here */
        cr_x509_drain_errors(detail, sizeof detail, NULL);
        snprintf(err, errlen, "cannot set ALPN '%s': %s", ctx->alpn, detail);
        cr_tls_ctx_free(ctx);
        return CR_ETLS;
      }
    }
  }
  *out = ctx;
  return 0;
}

void cr__tls_ctx_unref(cr_tls_ctx_t *ctx) {
  if (ctx == NULL || --ctx->refs > 0)
    return;
  SSL_CTX_free(ctx->ssl_ctx);
  cr__tls_crls_free(&ctx->crls);
  SSL_SESSION_free(ctx->resume);
  free(ctx->resume_name);
  free(ctx->alpn);
  free(ctx);
}

void cr_tls_ctx_free(cr_tls_ctx_t *ctx) { cr__tls_ctx_unref(ctx); }

cr_tls_ctx_t *cr_tls_ctx_ref(cr_tls_ctx_t *ctx) {
  ctx->refs++;
  return ctx;
}

SSL_CTX *cr_tls_ctx_native(cr_tls_ctx_t *ctx) { return ctx->ssl_ctx; }

time_t cr_tls_ctx_identity(const cr_tls_ctx_t *ctx, char *subject, size_t subjectlen) {
  X509 *leaf = SSL_CTX_get0_certificate(ctx->ssl_ctx);
  if (subject && subjectlen)
    subject[0] = '\0';
  if (leaf == NULL)
    return 0;
  if (subject && subjectlen)
    cr_x509_subject(leaf, subject, subjectlen);
  return cr_x509_not_after(leaf);
}

int cr_tls_ctx_serves_name(cr_tls_ctx_t *ctx, const char *host) {
  X509 *cert = SSL_CTX_get0_certificate(ctx->ssl_ctx);
  return cert != NULL && X509_check_host(cert, host, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1;
}

cr__tls_crls_t *cr__tls_ctx_crls(cr_tls_ctx_t *ctx) { return &ctx->crls; }

int cr_tls_cipher_list_check(const char *list, char *err, size_t errlen) {
  char detail[256];
  SSL_CTX *sc;
  int ok;
  int r = cr_tls_global_init(err, errlen);
  if (r < 0)
    return r;
  ERR_clear_error();
  if ((sc = SSL_CTX_new(TLS_server_method())) == NULL) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "cannot create a TLS context: %s", detail);
    return CR_ETLS;
  }
  ok = SSL_CTX_set_cipher_list(sc, list);
  cr_x509_drain_errors(detail, sizeof detail, NULL);
  SSL_CTX_free(sc);
  if (!ok) {
    snprintf(err, errlen, "no TLS 1.2 cipher matches '%s' (%s); see `openssl ciphers -v '%s'`", list,
             detail[0] ? detail : "no detail from OpenSSL", list);
    return CR_ECONFIG;
  }
  return 0;
}

SSL *cr__tls_ctx_ssl_new(cr_tls_ctx_t *ctx, cr__tls_notes_t *notes) {
  SSL *ssl = SSL_new(ctx->ssl_ctx);
  if (ssl == NULL)
    return NULL;
  cr__tls_notes_release(notes);
  notes->peer_alert = -1;
  notes->sent_alert = -1;
  notes->alpn_refused = 0;
  SSL_set_ex_data(ssl, notes_index, notes);
  ctx->refs++;
  return ssl;
}

int cr__tls_ctx_is_server(const cr_tls_ctx_t *ctx) { return ctx->server; }

const char *cr__tls_ctx_alpn(const cr_tls_ctx_t *ctx) { return ctx->alpn; }
int cr__tls_ctx_alpn_required(const cr_tls_ctx_t *ctx) { return ctx->alpn_required; }

/* ---------- roots checked after the handshake ---------- */

int cr_tls_ca_set_load(const char *path, cr_tls_ca_set_t **out, char *err, size_t errlen) {
  cr_x509_set_t set;
  int r, n;
  *out = NULL;
  if ((r = read_ca_pem(path, &set, err, errlen)) < 0)
    return r;
  n = sk_X509_num(set.certs);
  *out = cr_calloc(1, sizeof **out);
  if (((*out)->store = X509_STORE_new()) == NULL) {
    snprintf(err, errlen, "cannot make a certificate store for %s: out of memory", path);
    cr_x509_set_free(&set);
    free(*out);
    *out = NULL;
    return CR_ETLS;
  }
  for (int i = 0; i < n; i++)
    X509_STORE_add_cert((*out)->store, sk_X509_value(set.certs, i));
  ERR_clear_error();
  cr_x509_set_free(&set);
  return 0;
}

void cr_tls_ca_set_free(cr_tls_ca_set_t *cas) {
  if (cas == NULL)
    return;
  X509_STORE_free(cas->store);
  free(cas);
}

/* TLS contexts and identities: provider setup, PKCS#12 and PEM loading, the SSL_CTX policy, and the
 * callbacks (verify, ALPN, alerts) that report into each connection's notes (tls_internal.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>
#include <openssl/x509v3.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
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
};

static int notes_index = -1;

/* ---- errors ---- */

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  for (; *hay; hay++)
    if (strncasecmp(hay, needle, n) == 0)
      return 1;
  return 0;
}

/* Drains the queue into one line; *unsupported (when not NULL) tells whether an entry says an
 * algorithm is missing rather than the data being bad. */
static void drain_errors(char *out, size_t outlen, int *unsupported) {
  const char *data, *reason;
  unsigned long e;
  size_t used = 0;
  int flags, n;
  char code[32];
  if (unsupported)
    *unsupported = 0;
  if (outlen == 0)
    return;
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
    if (used >= outlen - 1)
      continue; /* keep draining so the next failure does not inherit these */
    n = snprintf(out + used, outlen - used, "%s%s%s%s", used ? "; " : "", reason,
                 (flags & ERR_TXT_STRING) && data && *data ? ": " : "",
                 (flags & ERR_TXT_STRING) && data ? data : "");
    if (n > 0)
      used = CR_MIN(used + (size_t)n, outlen - 1);
  }
}

void cr__tls_drain_errors(char *out, size_t outlen) { drain_errors(out, outlen, NULL); }

/* ---- global ---- */

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

int cr_tls_global_init(char *err, size_t errlen) {
  static int done;
  if (done)
    return 0;
  /* Loading any provider by hand turns off the implicit default one, so load both. */
  if ((prov_default = OSSL_PROVIDER_load(NULL, "default")) == NULL) {
    char detail[256];
    cr__tls_drain_errors(detail, sizeof detail);
    snprintf(err, errlen, "cannot load OpenSSL's default provider (%s); check the OpenSSL installation", detail);
    return CR_ETLS;
  }
  if ((prov_legacy = OSSL_PROVIDER_load(NULL, "legacy")) == NULL) {
    char detail[256];
    cr__tls_drain_errors(detail, sizeof detail);
    snprintf(err, errlen,
             "cannot load OpenSSL's legacy provider, which legacy PKCS#12 files (RC2/3DES) need (%s); "
             "install it (Debian: libssl3, file ossl-modules/legacy.so) or point OPENSSL_MODULES at it",
             detail);
    OSSL_PROVIDER_unload(prov_default);
    prov_default = NULL;
    return CR_ETLS;
  }
  notes_index = SSL_get_ex_new_index(0, "ccrelay notes", NULL, NULL, NULL);
  atexit(unload_providers);
  done = 1;
  return 0;
}

/* ---- identities ---- */

static int read_file(const char *path, unsigned char **out, size_t *outlen, const char *what, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  size_t len = 0, n;
  int r;
  if (f == NULL) {
    r = -errno;
    snprintf(err, errlen, "cannot read %s %s: %s; check the path and its permissions", what, path, strerror(errno));
    return r;
  }
  buf = cr_malloc(MAX_CRED_FILE + 1);
  while ((n = fread(buf + len, 1, MAX_CRED_FILE + 1 - len, f)) > 0 && len <= MAX_CRED_FILE)
    len += n;
  if (ferror(f)) {
    r = -errno;
    fclose(f);
    free(buf);
    snprintf(err, errlen, "cannot read %s %s: %s", what, path, strerror(-r));
    return r ? r : UV_EIO;
  }
  fclose(f);
  if (len > MAX_CRED_FILE) {
    free(buf);
    snprintf(err, errlen, "%s %s is larger than %d bytes; is it the right file?", what, path, MAX_CRED_FILE);
    return CR_ELIMIT;
  }
  *out = buf;
  *outlen = len;
  return 0;
}

void cr_tls_identity_free(cr_tls_identity_t *id) {
  EVP_PKEY_free(id->key);
  X509_free(id->cert);
  if (id->chain)
    sk_X509_pop_free(id->chain, X509_free);
  memset(id, 0, sizeof *id);
}

static int mac_ok(PKCS12 *p12, const char *pass) {
  /* Empty and absent passwords are different bytes on the wire; exporters use either. */
  if (pass == NULL || *pass == '\0')
    return PKCS12_verify_mac(p12, "", 0) || PKCS12_verify_mac(p12, NULL, 0);
  return PKCS12_verify_mac(p12, pass, -1);
}

static int load_pkcs12(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen) {
  const char *path = src->pkcs12;
  const char *pass = src->password;
  unsigned char *data;
  const unsigned char *p;
  size_t len;
  PKCS12 *p12;
  char detail[256];
  int r, unsupported;
  r = read_file(path, &data, &len, "PKCS#12 file", err, errlen);
  if (r < 0)
    return r;
  ERR_clear_error();
  p = data;
  p12 = d2i_PKCS12(NULL, &p, (long)len);
  free(data);
  if (p12 == NULL) {
    cr__tls_drain_errors(detail, sizeof detail);
    snprintf(err, errlen,
             "%s is not a PKCS#12 file or is damaged (%s); export the identity again as PKCS#12 (.p12/.pfx, "
             "DER), or give a PEM cert and key instead",
             path, detail);
    return CR_EP12_CORRUPT;
  }
  if (PKCS12_mac_present(p12) && !mac_ok(p12, pass)) {
    drain_errors(detail, sizeof detail, &unsupported);
    if (unsupported) {
      snprintf(err, errlen,
               "%s: its integrity check uses an algorithm this OpenSSL cannot load (%s); re-export it with "
               "modern algorithms (openssl pkcs12 -export, AES-256 and SHA-256)",
               path, detail);
      PKCS12_free(p12);
      return CR_EP12_UNSUPPORTED;
    }
    snprintf(err, errlen, "%s: wrong password (the PKCS#12 integrity check failed); check password_file", path);
    PKCS12_free(p12);
    return CR_EP12_PASSWORD;
  }
  if (!PKCS12_parse(p12, pass ? pass : "", &out->key, &out->cert, &out->chain)) {
    drain_errors(detail, sizeof detail, &unsupported);
    PKCS12_free(p12);
    cr_tls_identity_free(out);
    if (unsupported) {
      snprintf(err, errlen,
               "%s uses an encryption algorithm this OpenSSL cannot load (%s); legacy RC2/3DES files need "
               "OpenSSL's legacy provider, otherwise re-export it (openssl pkcs12 -export, AES-256)",
               path, detail);
      return CR_EP12_UNSUPPORTED;
    }
    snprintf(err, errlen, "%s: the password is right but the contents do not decode (%s); export it again", path,
             detail);
    return CR_EP12_CORRUPT;
  }
  PKCS12_free(p12);
  if (out->chain == NULL)
    out->chain = sk_X509_new_null();
  if (out->cert == NULL || out->key == NULL) {
    snprintf(err, errlen, "%s holds no %s; export the certificate together with its private key", path,
             out->cert == NULL ? "certificate" : "private key");
    cr_tls_identity_free(out);
    return CR_EP12_CORRUPT;
  }
  return 0;
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

static int load_pem(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen) {
  unsigned char *data;
  size_t len;
  char detail[256];
  BIO *bio;
  X509 *x;
  int r;
  if (src->cert == NULL || src->key == NULL) {
    snprintf(err, errlen, "a TLS identity needs either pkcs12 or both cert and key");
    return CR_ECONFIG;
  }
  r = read_file(src->cert, &data, &len, "certificate file", err, errlen);
  if (r < 0)
    return r;
  ERR_clear_error();
  bio = BIO_new_mem_buf(data, (int)len);
  out->cert = PEM_read_bio_X509(bio, NULL, pem_pass_cb, NULL);
  out->chain = sk_X509_new_null();
  while (out->cert != NULL && (x = PEM_read_bio_X509(bio, NULL, pem_pass_cb, NULL)) != NULL)
    sk_X509_push(out->chain, x);
  BIO_free(bio);
  free(data);
  if (out->cert == NULL) {
    cr__tls_drain_errors(detail, sizeof detail);
    snprintf(err, errlen, "%s holds no PEM certificate (%s); it must start with -----BEGIN CERTIFICATE-----",
             src->cert, detail);
    cr_tls_identity_free(out);
    return CR_ETLS;
  }
  ERR_clear_error(); /* the end of the chain reads as "no start line" */
  r = read_file(src->key, &data, &len, "key file", err, errlen);
  if (r < 0) {
    cr_tls_identity_free(out);
    return r;
  }
  bio = BIO_new_mem_buf(data, (int)len);
  out->key = PEM_read_bio_PrivateKey(bio, NULL, pem_pass_cb, (void *)src->password);
  BIO_free(bio);
  cr_wipe(data, len);
  free(data);
  if (out->key == NULL) {
    cr__tls_drain_errors(detail, sizeof detail);
    snprintf(err, errlen, "%s holds no usable PEM private key (%s); if it is encrypted, check password_file",
             src->key, detail);
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
    cr_x509_name_oneline(X509_get_subject_name(out->cert), subject, sizeof subject);
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

/* ---- names ---- */

void cr_x509_name_oneline(X509_NAME *name, char *out, size_t outlen) {
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
      cr_x509_name_oneline(cert ? X509_get_subject_name(cert) : NULL, subject, sizeof subject);
      snprintf(note_text(&notes->verify_warn), CR__TLS_NOTE_MAX, "%s (depth %d, subject %s)",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)),
               X509_STORE_CTX_get_error_depth(store), subject[0] ? subject : "unknown");
    }
    return 1; /* soft revocation: a missing or stale CRL is logged by the caller, not fatal */
  }
  if (!preverify_ok) {
    if (notes && notes->verify_why == NULL) {
      int e = X509_STORE_CTX_get_error(store);
      cr_x509_name_oneline(cert ? X509_get_subject_name(cert) : NULL, subject, sizeof subject);
      snprintf(note_text(&notes->verify_why), CR__TLS_NOTE_MAX, "%s (depth %d, subject %s)",
               X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(store),
               subject[0] ? subject : "unknown");
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

static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                          unsigned int inlen, void *arg) {
  cr_tls_ctx_t *ctx = arg;
  size_t want = strlen(ctx->alpn);
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
    i += 1 + n;
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

static int count_store_certs(X509_STORE *store) {
  STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
  int i, n = 0;
  for (i = 0; i < sk_X509_OBJECT_num(objs); i++)
    if (X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) == X509_LU_X509)
      n++;
  return n;
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
    cr__tls_drain_errors(detail, sizeof detail);
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
  if (opts->ca_file && *opts->ca_file) {
    if (!SSL_CTX_load_verify_locations(sc, opts->ca_file, NULL)) {
      cr__tls_drain_errors(detail, sizeof detail);
      snprintf(err, errlen, "cannot load CA certificates from %s (%s); it must be a readable PEM file of root certificates",
               opts->ca_file, detail);
      cr_tls_ctx_free(ctx);
      return CR_ETLS;
    }
    if (count_store_certs(SSL_CTX_get_cert_store(sc)) == 0) {
      snprintf(err, errlen, "%s contains no certificate; put the PEM roots the peer must chain to in it",
               opts->ca_file);
      cr_tls_ctx_free(ctx);
      return CR_ETLS;
    }
    if (opts->server) {
      /* Tells clients which roots we accept, so one holding several identities picks the right one. */
      STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(opts->ca_file);
      if (names)
        SSL_CTX_set_client_CA_list(sc, names);
      ERR_clear_error();
    }
  }
  /* Verification is never off. A server without ca_file has nothing to check a client certificate
   * against, so it does not ask for one (asking would make browsers prompt the user). */
  mode = SSL_VERIFY_PEER;
  if (opts->server && opts->ca_file && *opts->ca_file)
    mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  if (!opts->server || (opts->ca_file && *opts->ca_file))
    SSL_CTX_set_verify(sc, mode, verify_cb);

  if (opts->identity_loaded) {
    const cr_tls_identity_t *li = opts->identity_loaded;
    if (!SSL_CTX_use_cert_and_key(sc, li->cert, li->key, li->chain, 1) || !SSL_CTX_check_private_key(sc)) {
      cr__tls_drain_errors(detail, sizeof detail);
      snprintf(err, errlen, "cannot use the identity (%s); check that it is a valid certificate and key", detail);
      cr_tls_ctx_free(ctx);
      return CR_ETLS;
    }
  } else if (opts->identity) {
    cr_tls_identity_t id;
    r = cr_tls_identity_load(opts->identity, &id, err, errlen);
    if (r < 0) {
      cr_tls_ctx_free(ctx);
      return r;
    }
    if (!SSL_CTX_use_cert_and_key(sc, id.cert, id.key, id.chain, 1) || !SSL_CTX_check_private_key(sc)) {
      cr__tls_drain_errors(detail, sizeof detail);
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
        cr__tls_drain_errors(detail, sizeof detail);
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

/* TLS contexts and identities: provider setup, PKCS#12 and PEM loading, the SSL_CTX policy, and the
 * callbacks (verify, ALPN, alerts) that report into each connection's notes (tls_internal.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

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
      cr_x509_subject(cert, subject, sizeof subject);
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
      cr_x509_drain_errors(detail, sizeof detail, NULL);
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
      cr_x509_drain_errors(detail, sizeof detail, NULL);
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

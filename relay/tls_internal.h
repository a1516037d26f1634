/* SPDX-License-Identifier: Apache-2.0 */
/* Shared between tls_ctx.c and tls_stream.c only. The context installs the OpenSSL callbacks
 * (verify, ALPN selection, alerts); they leave their findings in the connection's notes, which
 * the stream turns into result codes and prose. */
#ifndef CCRELAY_TLS_INTERNAL_H
#define CCRELAY_TLS_INTERNAL_H

#include <openssl/ssl.h>

#include "ccrelay/tls.h"

/* Most connections verify cleanly, so the texts are allocated (CR__TLS_NOTE_MAX bytes) when first
 * written: inline they were 640 bytes of every idle connection. */
#define CR__TLS_NOTE_MAX 320
typedef struct cr__tls_notes {
  char *verify_why;     /* why the verify callback refused; NULL when it did not */
  char *verify_warn;    /* what soft revocation forgave; NULL when nothing */
  int peer_alert;       /* last fatal alert received, or -1 */
  int sent_alert;       /* last fatal alert we sent, or -1 */
  int alpn_refused;     /* the server found no protocol of ours in the client's offer */
  const char *server_name; /* client: the name the server is verified against (owned by the stream) */
} cr__tls_notes_t;

/* A server context's CRLs (tls_crl.c): what is in force and where it came from. */
typedef struct cr__tls_crls {
  int mode;                     /* in force, cr_trust_crl_mode_t; OFF: nothing below is set */
  char *ca_file, *crl_file;     /* crl_file may be NULL */
  STACK_OF(X509) *ca_certs;     /* the CAs of ca_file as read at creation */
  STACK_OF(X509_CRL) *crls;     /* in force */
  unsigned char digest[32];     /* of the file bytes they came from */
  cr_tls_crl_info_t info;
} cr__tls_crls_t;

/* At creation, after ca_file went into sc's store: resolves mode (CR_TLS_CRL_AUTO), reads the CRLs
 * and, unless the mode is OFF, gives sc a store with the CAs, the CRLs and the CRL flags. */
int cr__tls_crls_init(cr__tls_crls_t *c, SSL_CTX *sc, const char *ca_file, const char *crl_file, int mode,
                      char *err, size_t errlen);
int cr__tls_crls_reload(cr__tls_crls_t *c, SSL_CTX *sc, int force, int *changed, char *err, size_t errlen);
void cr__tls_crls_free(cr__tls_crls_t *c);
/* "subject ..., serial HEX" of cert, for messages about revocation. */
void cr__tls_revoked_detail(X509 *cert, char *out, size_t outlen);
/* The CRL state of a context (tls_ctx.c). */
cr__tls_crls_t *cr__tls_ctx_crls(cr_tls_ctx_t *ctx);

/* Frees the texts notes hold; the notes stay usable (as if nothing was written). */
void cr__tls_notes_release(cr__tls_notes_t *notes);
/* A new SSL on ctx's SSL_CTX with notes attached (the caller keeps notes alive as long as the SSL),
 * and one more reference on ctx, released with cr__tls_ctx_unref. */
SSL *cr__tls_ctx_ssl_new(cr_tls_ctx_t *ctx, cr__tls_notes_t *notes);
void cr__tls_ctx_unref(cr_tls_ctx_t *ctx);
/* Client with resume_sessions: offers the context's latest session for notes->server_name, if any. */
void cr__tls_ctx_offer_session(cr_tls_ctx_t *ctx, SSL *ssl, const cr__tls_notes_t *notes);
int cr__tls_ctx_is_server(const cr_tls_ctx_t *ctx);
/* The ALPN id the context insists on, or NULL. */
const char *cr__tls_ctx_alpn(const cr_tls_ctx_t *ctx);
int cr__tls_ctx_alpn_required(const cr_tls_ctx_t *ctx);
/* 1 if the negotiated protocol id p[n] is acceptable for ctx (ctx has an ALPN id): its own id, or
 * "http/1.0" on an "http/1.1" server. */
int cr__tls_ctx_alpn_ok(const cr_tls_ctx_t *ctx, const unsigned char *p, size_t n);

/* cr_tls_ca_set_t: the roots of one file in a store of their own. */
struct cr_tls_ca_set {
  X509_STORE *store;
};

#endif

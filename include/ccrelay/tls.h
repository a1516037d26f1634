/* TLS for every hop: contexts (tls_ctx.c) and a TLS stream layered over any cr_stream_t through a
 * memory BIO pair (tls_stream.c). libuv owns the socket; OpenSSL never sees a file descriptor.
 *
 * Policy, not options: peer verification is always on, TLS 1.2 is the floor, a client always sends
 * SNI and checks the host name, close_notify is sent on shutdown and required from the peer. */
#ifndef CCRELAY_TLS_H
#define CCRELAY_TLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <time.h>

#include "ccrelay/stream.h"
#include "ccrelay/x509.h"

/* Loads OpenSSL's providers (cr_x509_init) and sets up what TLS streams need. Call once at start;
 * 0 or CR_ETLS with prose in err. */
int cr_tls_global_init(char *err, size_t errlen);

/* Where a TLS identity comes from: a PKCS#12 file, or a PEM certificate (chain) plus a PEM key. */
typedef struct cr_tls_identity_src {
  const char *pkcs12;   /* path, or NULL */
  const char *password; /* PKCS#12 password; NULL or "" for none */
  const char *cert;     /* PEM path, leaf first then intermediates; used when pkcs12 is NULL */
  const char *key;      /* PEM path */
} cr_tls_identity_src_t;

typedef struct cr_tls_identity {
  EVP_PKEY *key;
  X509 *cert;
  STACK_OF(X509) *chain; /* intermediates carried with the identity; may be empty, never NULL */
} cr_tls_identity_t;

/* Loads and checks an identity (key matches certificate). Errors, with prose naming the file:
 * CR_EP12_PASSWORD (wrong password), CR_EP12_CORRUPT (not PKCS#12 / damaged),
 * CR_EP12_UNSUPPORTED (an algorithm this OpenSSL cannot load), CR_EKEY_MISMATCH, UV_ENOENT and
 * friends for unreadable files, CR_ETLS for PEM that does not parse. */
int cr_tls_identity_load(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err, size_t errlen);
void cr_tls_identity_free(cr_tls_identity_t *id);
/* cr_tls_identity_load, then the certificate must be within its validity period now: an identity a
 * process presents as itself (the agent's tunnel identity, the gateway's tunnel and public ones)
 * that has expired cannot work, so the role refuses to start and `ccrelay check` says so, both with
 * this message: "certificate SUBJECT in FILE expired at DATE; ..." (or "is not valid before DATE;
 * check the system clock"), CR_ETLS. cr_tls_ctx_new uses it for opts->identity when
 * opts->identity_current is set. */
int cr_tls_identity_load_current(const cr_tls_identity_src_t *src, cr_tls_identity_t *out, char *err,
                                 size_t errlen);
/* The date check alone, for an identity already loaded from file: 0 or CR_ETLS as above. */
int cr_tls_identity_check_current(const cr_tls_identity_t *id, const char *file, char *err, size_t errlen);

/* A hook the accepting side runs on the peer's leaf certificate after chain verification succeeded;
 * returning nonzero fails the handshake (the peer gets an alert), with why logged by the caller. */
typedef int (*cr_tls_peer_check_cb)(X509 *leaf, void *arg, char *why, size_t whylen);

typedef struct cr_tls_ctx_opts {
  int server;                          /* 1: accepting side */
  const char *ca_file;                 /* PEM roots the peer must chain to. Client: required.
                                          Server: if set, a client certificate is required;
                                          if NULL, none is asked for. */
  const cr_tls_identity_src_t *identity; /* server: required; client: optional (mTLS) */
  int identity_current;                /* with identity: refuse one that is expired or not yet valid
                                          (cr_tls_identity_load_current): the roles' own identities */
  int tls13_only;                      /* the tunnel uses TLS 1.3 only; others allow 1.2 */
  const char *alpn;                    /* one protocol id ("ccrelay/1", "http/1.1"), or NULL */
  int alpn_required;                   /* 1: a peer that negotiates no ALPN is refused (the tunnel);
                                          0: no ALPN is accepted as the default protocol (HTTP/1.1) */
  X509_STORE *verify_store;            /* client: roots (and CRLs) instead of ca_file, e.g. the trust
                                          store's; the context takes its own reference */
  int crl_soft;                        /* with verify_store: a missing or stale CRL is forgiven (the
                                          stream's cr_tls_stream_verify_warning says what was); a
                                          revoked certificate never is */
  const cr_tls_identity_t *identity_loaded; /* instead of identity: an identity already loaded (and
                                          its chain completed); the context takes references */
  cr_tls_peer_check_cb peer_check;     /* server only, optional */
  void *peer_check_arg;
  int resume_sessions;                 /* client: keep the latest session the server gave and offer
                                          it on the next connection to the same server name, which
                                          then skips the certificate exchange and its verification
                                          (the session was verified when made, by this context: a
                                          new trust store or CRL means a new context) */
} cr_tls_ctx_opts_t;

typedef struct cr_tls_ctx cr_tls_ctx_t;

/* 0, or a negative code with prose in err naming the file that failed and what to do. */
int cr_tls_ctx_new(const cr_tls_ctx_opts_t *opts, cr_tls_ctx_t **out, char *err, size_t errlen);
/* Contexts are reference counted: every TLS stream holds one, so freeing while streams live is safe. */
void cr_tls_ctx_free(cr_tls_ctx_t *ctx);
/* Another reference (released with cr_tls_ctx_free); returns ctx. */
cr_tls_ctx_t *cr_tls_ctx_ref(cr_tls_ctx_t *ctx);
/* The underlying SSL_CTX (borrowed), for settings policy does not cover, e.g. a test capping the
 * protocol version. Change it before the first stream is created. */
SSL_CTX *cr_tls_ctx_native(cr_tls_ctx_t *ctx);

/* Wraps lower (taking ownership: closing the TLS stream closes lower). Client side: server_name is
 * sent as SNI (unless an IP literal) and checked against the certificate (DNS name or IP).
 * Server side: server_name is NULL. No bytes move until cr_tls_stream_handshake. */
cr_stream_t *cr_tls_stream_new(cr_stream_t *lower, cr_tls_ctx_t *ctx, const char *server_name);

/* status 0: handshake done, stream usable. Otherwise CR_ETLS_VERIFY (peer certificate rejected;
 * cr_tls_stream_error says why, e.g. "certificate has expired"), CR_ETLS_ALPN, CR_ETLS, or a
 * transport error; the caller then closes the stream. Fires once; never after close.
 * Before it reported 0, read_start, write and shutdown return UV_ENOTCONN.
 * TLS 1.3: a client's handshake completes when it sends Finished, so a server that then refuses
 * the client's certificate is heard on the client's first read (CR_ETLS, "peer alert: ...").
 * Returns 0, or an error (cb then never fires): UV_EINVAL for a client without server_name. */
typedef void (*cr_tls_handshake_cb)(cr_stream_t *tls, int status);
int cr_tls_stream_handshake(cr_stream_t *tls, cr_tls_handshake_cb cb);

/* Like cr_stream_shutdown (the queued writes first, then the lower stream's shutdown: a TCP FIN), but
 * without close_notify, so the peer reads the connection as truncated (RFC 8446 6.1). For ending a
 * response that was cut short: the caller must not take what it got for all there is, not even a
 * body delimited by the connection's end. Same contract as shutdown; on a stream that is not TLS it
 * is cr_stream_shutdown. */
int cr_tls_stream_shutdown_truncated(cr_stream_t *s, cr_stream_write_cb cb, void *arg);

/* Prose for the last failure on this stream (verify reason, OpenSSL error queue, peer alert), or "". */
const char *cr_tls_stream_error(const cr_stream_t *tls);
/* The peer's leaf certificate (borrowed, valid until close), or NULL. */
X509 *cr_tls_stream_peer_cert(const cr_stream_t *tls);
/* The peer's leaf certificate as the subject line ("CN=..., O=...") and notAfter (0 when it cannot
 * be read). 0, or UV_ENOENT when there is no peer certificate. */
int cr_tls_stream_peer_summary(const cr_stream_t *tls, char *subject, size_t subjectlen, time_t *not_after);
/* What soft revocation forgave while verifying the peer ("unable to get certificate CRL (depth 0,
 * subject ...)"), or "" when nothing was. */
const char *cr_tls_stream_verify_warning(const cr_stream_t *tls);
/* Negotiated ALPN protocol, or "" when none. */
const char *cr_tls_stream_alpn(const cr_stream_t *tls);
/* 1 when the handshake resumed an earlier session (no certificate exchange). */
int cr_tls_stream_resumed(const cr_stream_t *tls);
int cr_stream_is_tls(const cr_stream_t *s);

/* Frees the process-wide buffers TLS streams keep for the next records (an idle process's memory trim).
 * Never from inside a TLS stream callback. */
void cr_tls_release_caches(void);

#endif

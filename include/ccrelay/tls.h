/* SPDX-License-Identifier: Apache-2.0 */
/* TLS for every hop: contexts (tls_ctx.c) and a TLS stream layered over any cr_stream_t through a
 * memory BIO pair (tls_stream.c). libuv owns the socket; OpenSSL never sees a file descriptor.
 *
 * Policy, not options: peer verification is always on, TLS 1.2 is the floor, a client always sends
 * SNI and checks the host name, close_notify is sent on shutdown and required from the peer. The one
 * exception is a client context given a cr_tls_policy_t (a route's upstream.tls, for old servers):
 * its versions, security level, ciphers and groups, on that context only. */
#ifndef CCRELAY_TLS_H
#define CCRELAY_TLS_H

#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <time.h>
#include <uv.h>

#include "ccrelay/stream.h"
#include "ccrelay/truststore.h"
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

/* TLS 1.2 suites a server offers when its caller names none (the gateway's public listener): forward
 * secret AEAD only, ECDSA and RSA certificates alike. TLS 1.3 suites are all AEAD and stay OpenSSL's. */
#define CR_TLS_CIPHERS_AEAD                                                                                    \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                  \
  "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Revocation of client certificates on a server context (crl_mode): the values of cr_trust_crl_mode_t,
 * or AUTO: HARD when crl_file is given or ca_file holds a CRL, else OFF. Decided once, at creation. */
#define CR_TLS_CRL_AUTO (-1)

/* A client's protocol policy toward one server (a route's upstream.tls). Everything left at its zero
 * value (or -1 for the level) keeps the strict default; each other value is a deliberate weakening
 * for an old server, set on that context only (never process-wide). */
typedef struct cr_tls_policy {
  int min_version;     /* TLS1_VERSION .. TLS1_3_VERSION; 0: TLS 1.2 */
  int max_version;     /* 0: the highest this OpenSSL speaks (TLS 1.3) */
  int security_level;  /* 0..5 (SSL_CTX_set_security_level); -1: OpenSSL's default (2 on Debian 12).
                          OpenSSL 3 refuses TLS 1.0/1.1, RSA keys under 2048 bits and SHA-1
                          signatures above level 0 (TLS 1.0/1.1) or 1 (the others) */
  const char *ciphers; /* TLS 1.2 and older, OpenSSL cipher-list syntax; NULL: OpenSSL's default */
  const char *curves;  /* key-exchange groups, "X25519:P-256:P-384"; NULL: OpenSSL's default */
} cr_tls_policy_t;

/* The level a policy puts into force: its own, or what a fresh context gets from OpenSSL. */
int cr_tls_policy_level(const cr_tls_policy_t *p);
/* "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3", or "unknown". */
const char *cr_tls_version_name(int version);
/* Checks that a policy can be put on a context (known versions, a cipher list and curves OpenSSL
 * accepts). 0, or CR_ECONFIG with *key the policy field at fault ("ciphers", "curves",
 * "min_version", "security_level") and prose in err. */
int cr_tls_policy_check(const cr_tls_policy_t *p, const char **key, char *err, size_t errlen);
/* Whether a certificate and its chain may be used as an identity under the policy's security level
 * (key sizes and signature digests, as OpenSSL judges them when a context takes them). This is the
 * check the agent makes on a route's identity before using it; `ccrelay check` and `trust verify`
 * call it too, so they refuse exactly what the agent would. p NULL: the default policy. 0, or
 * CR_ETLS with prose in err naming the certificate, the level and the fix. */
int cr_tls_policy_check_chain(const cr_tls_policy_t *p, X509 *leaf, STACK_OF(X509) *chain, char *err, size_t errlen);
/* Makes chain verification against st apply the policy's level to key sizes and signature digests,
 * as the handshake does for the server's certificate (X509_VERIFY_PARAM auth level). */
void cr_tls_policy_set_verify_level(X509_STORE *st, const cr_tls_policy_t *p);

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
  const char *ciphers;                 /* TLS 1.2 suites in OpenSSL cipher-list syntax; NULL: OpenSSL's
                                          default (CR_TLS_CIPHERS_AEAD is what the public listener uses) */
  const char *crl_file;                /* server with ca_file: PEM or DER CRLs (one or several) for the
                                          client certificates; CRLs inside ca_file count too. Each CRL
                                          whose issuer is a CA of ca_file must verify with its key. */
  int crl_mode;                        /* server with ca_file: cr_trust_crl_mode_t or CR_TLS_CRL_AUTO
                                          (0 is OFF). Not OFF: every certificate of the client's chain
                                          is checked against its issuer's CRL (X509_V_FLAG_CRL_CHECK_ALL;
                                          a self-signed root by its own CRL, so one root's CRL covers
                                          a chain root -> leaf); SOFT forgives a missing or stale CRL
                                          (cr_tls_stream_verify_warning says what), HARD refuses. A
                                          revoked certificate is refused under both. */
  const char *const *client_ca_files;  /* server: more PEM files of roots a client certificate may
                                          chain to (the gateway's per-service CAs). Their roots join
                                          the list of acceptable CAs the server sends and the verify
                                          store, so a certificate from any of them passes the
                                          handshake; a certificate is asked for but, unless ca_file is
                                          set, not required. Which CA a connection's certificate
                                          chains to is then the caller's to check
                                          (cr_tls_stream_peer_verify). Not together with CRL checking
                                          (crl_mode other than OFF, or AUTO finding a CRL): refused
                                          with CR_ECONFIG, since their chains have no CRLs. */
  size_t nclient_ca_files;
  int resume_sessions;                 /* client: keep the latest session the server gave and offer
                                          it on the next connection to the same server name, which
                                          then skips the certificate exchange and its verification
                                          (the session was verified when made, by this context: a
                                          new trust store or CRL means a new context) */
  const cr_tls_policy_t *policy;       /* client only, optional: versions, level, ciphers, curves
                                          (NULL: the strict default); an identity is judged under
                                          its level */
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
/* The notAfter of the certificate the context presents (0 when it has none), and its subject line
 * into subject ("" when none; subject may be NULL). */
time_t cr_tls_ctx_identity(const cr_tls_ctx_t *ctx, char *subject, size_t subjectlen);

/* 1 when the context's own certificate (a server's identity) is valid for host as a client checks
 * it (a DNS subjectAltName, exact or a leftmost wildcard; else the subject CN); 0 otherwise. */
int cr_tls_ctx_serves_name(cr_tls_ctx_t *ctx, const char *host);

/* Checks a TLS 1.2 cipher list (OpenSSL syntax) by compiling it: 0, or CR_ECONFIG with prose in err
 * ("no cipher matches ..."). For `ccrelay check` and start-up, which add the config position. */
int cr_tls_cipher_list_check(const char *list, char *err, size_t errlen);

/* ---- CRLs of a server context ---- */

typedef struct cr_tls_crl_info {
  int mode;            /* in force: cr_trust_crl_mode_t (OFF: the rest is zero) */
  int ncrls;           /* CRLs loaded, from crl_file and ca_file */
  int nstale;          /* of those, past nextUpdate (or before thisUpdate) now */
  long nrevoked;       /* serial numbers listed, summed over the CRLs */
  time_t next_update;  /* the earliest nextUpdate, 0 when none has one */
  char foreign[200];   /* issuers of CRLs that no CA of ca_file issued ("" when none): they apply
                          only when a client presents that CA as an intermediate */
} cr_tls_crl_info_t;

/* What a server context with these options would load, without making one (`ccrelay check`): 0 with
 * info filled (info->mode OFF when AUTO finds no CRL), or the error cr_tls_ctx_new would give. */
int cr_tls_crl_check(const char *ca_file, const char *crl_file, int mode, cr_tls_crl_info_t *info, char *err,
                     size_t errlen);

/* What the context's CRLs are now. */
void cr_tls_ctx_crl_info(const cr_tls_ctx_t *ctx, cr_tls_crl_info_t *info);

/* Reads crl_file and the CRLs of ca_file again. When their bytes are the ones in force (and force is
 * 0) nothing happens and *changed is 0; otherwise they are decoded and checked, and on success new
 * handshakes use them (*changed = 1): handshakes already done, and the connections they made, are
 * untouched. The CA certificates stay the ones read at creation. Errors (nothing changes): UV_E*
 * reading a file, CR_ETLS (a block that does not decode, a CRL whose signature does not verify with
 * its issuer's key in ca_file, a certificate in crl_file), CR_ENO_CERT (no CRL left where one is
 * needed), UV_EINVAL when the context checks no CRL. Prose in err names the file. */
int cr_tls_ctx_reload_crls(cr_tls_ctx_t *ctx, int force, int *changed, char *err, size_t errlen);

/* 1 when cert (a client certificate this context admitted) is revoked by a CRL in force now, with
 * "certificate revoked (subject ..., serial ...)" in why; 0 otherwise (also for a context without
 * CRLs). Checks the leaf only; for connections made before a reload. */
int cr_tls_ctx_cert_revoked(cr_tls_ctx_t *ctx, X509 *cert, char *why, size_t whylen);

/* Keeps a context's CRLs current: a reload (cr_tls_ctx_reload_crls) when crl_file or ca_file changes
 * (inotify on their directories, so an atomic rename-replace is seen at once, and a stat check every
 * interval_ms as a fallback for file systems without events) and when cr_tls_crl_watch_reload is
 * called (SIGHUP). Every reload is logged (what names the listener, e.g. "tunnel"), a failed one as an
 * error that keeps the CRLs in force. After a reload that changed them, on_reload(arg) runs (may be
 * NULL), e.g. to look at connections made before. */
typedef struct cr_tls_crl_watch cr_tls_crl_watch_t;
typedef void (*cr_tls_crl_reload_cb)(void *arg);
int cr_tls_crl_watch_start(uv_loop_t *loop, cr_tls_ctx_t *ctx, const char *what, uint64_t interval_ms,
                           cr_tls_crl_reload_cb on_reload, void *arg, cr_tls_crl_watch_t **out);
/* Reloads now, even when the files look unchanged; trigger names why in the log ("SIGHUP"). */
void cr_tls_crl_watch_reload(cr_tls_crl_watch_t *w, const char *trigger);
/* Stops watching and frees w once its handles closed (the loop must run on); NULL is fine. */
void cr_tls_crl_watch_stop(cr_tls_crl_watch_t *w);

/* ---- client certificates checked after the handshake ---- */

/* A set of PEM roots loaded from one file, for checking which CA a client certificate chains to after
 * a handshake that accepted several (client_ca_files). Immutable once loaded. */
typedef struct cr_tls_ca_set cr_tls_ca_set_t;
/* 0, or an error with prose in err naming the file (as for ca_file: UV_E*, CR_ETLS). */
int cr_tls_ca_set_load(const char *path, cr_tls_ca_set_t **out, char *err, size_t errlen);
void cr_tls_ca_set_free(cr_tls_ca_set_t *cas); /* NULL is fine */

/* Verifies the peer certificate of tls (a server-side TLS stream after its handshake), with the
 * intermediates the peer sent, against cas, now, for TLS client use. 0 when it chains to one of its
 * roots; UV_ENOENT when the peer sent no certificate; CR_ETLS_VERIFY with why ("unable to get local
 * issuer certificate (depth 0: CN=...)"). */
int cr_tls_stream_peer_verify(const cr_stream_t *tls, const cr_tls_ca_set_t *cas, char *why, size_t whylen);

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
/* The same for a server whose owner already read the first bytes from lower (the gateway peeks at the
 * ClientHello's server name before it decides to terminate TLS): first[0..len) (copied) are taken as
 * if read from lower before anything else. UV_EINVAL on a client, or after the handshake began. */
int cr_tls_stream_handshake_after(cr_stream_t *tls, cr_tls_handshake_cb cb, const char *first, size_t len);

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
/* What a probe reports about an established connection. */
typedef struct cr_tls_conn_info {
  char version[16];  /* "TLSv1.3" */
  char cipher[64];   /* "TLS_AES_256_GCM_SHA384" */
  char subject[256]; /* the peer's leaf certificate; "" when none */
  char issuer[256];
  time_t not_after;  /* 0 when none */
} cr_tls_conn_info_t;
/* 0, or UV_EINVAL for a stream that is not TLS or not yet handshaken. */
int cr_tls_stream_conn_info(const cr_stream_t *tls, cr_tls_conn_info_t *out);
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

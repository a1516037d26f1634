/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's side toward one on-prem service: a route's TLS client context (its PKCS#12 client
 * identity, its CA, its server name) and a keep-alive pool of HTTPS connections (upstream_pool.h), plus
 * one HTTP/1.1 exchange at a time on each connection (http1_client.h). The agent contacts nothing but
 * the upstreams built here.
 *
 * Bodies stream both ways through bounded buffers: cr_upstream_req_write() returns 1 when the
 * request body buffer is above its high-water mark (pause the producer until on_writable), and
 * cr_upstream_req_pause() stops reading the response (the caller's sink is full). */
#ifndef CCRELAY_UPSTREAM_H
#define CCRELAY_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "ccrelay/http_msg.h"

/* tls.h's types, by name only (a caller that builds contexts includes tls.h itself). */
typedef struct cr_tls_ctx cr_tls_ctx_t;
typedef struct cr_tls_identity_src cr_tls_identity_src_t;
typedef struct cr_tls_conn_info cr_tls_conn_info_t;

typedef struct cr_upstream cr_upstream_t;
typedef struct cr_upstream_req cr_upstream_req_t;

typedef struct cr_upstream_opts {
  const char *name;         /* route name, for log lines and errors */
  const char *host;         /* where to connect */
  unsigned port;
  const char *server_name;  /* SNI and the name the certificate must carry */
  const char *ca_file;      /* roots for the upstream's certificate */
  const cr_tls_identity_src_t *identity; /* the route's client identity */
  int plain_http;           /* 1: plain TCP, no TLS (ca_file, identity and tls ignored); a route
                               allows this explicitly (upstream.plain_http) */
  cr_tls_ctx_t *tls;        /* instead of ca_file + identity: a client context built by the caller
                               (e.g. verifying against the trust store); the upstream takes a
                               reference */
  uint64_t connect_timeout_ms;  /* TCP connect + TLS handshake */
  uint64_t response_timeout_ms; /* request fully sent -> response head; and max gap between body reads */
  uint64_t idle_timeout_ms;     /* pooled connection idle lifetime */
  unsigned max_idle;            /* pooled connections kept */
  uint64_t purge_interval_ms;   /* how often idle connections beyond recent demand are halved */
  size_t max_header_size;       /* response head limit */
  size_t max_header_fields;     /* response head field limit */
} cr_upstream_opts_t;
/* Zero timeouts mean the defaults (connect 5 s, response 30 s, idle 60 s, purge 1 s); max_header_size 0 means
 * 16 KiB; max_header_fields 0 means 100; max_idle 0 means no pooling (every connection closes after its exchange). */

/* Builds the TLS context (loading the identity). 0, or an error with prose in err. */
int cr_upstream_new(uv_loop_t *loop, const cr_upstream_opts_t *opts, cr_upstream_t **out, char *err,
                    size_t errlen);
/* Closes pooled connections and frees u once they are closed. Requests still in flight are
 * canceled (no callbacks). */
void cr_upstream_free(cr_upstream_t *u);
/* Replaces the TLS context new connections use (a trust store reload). Requests in flight are not
 * touched, but no connection made under an older context is reused afterwards: idle ones close now,
 * busy ones close when their request ends. Sessions of the old context are never resumed, since
 * they belong to it. Takes a reference to tls. */
void cr_upstream_set_tls(cr_upstream_t *u, cr_tls_ctx_t *tls);

/* The certificate the upstream presented on the latest successful handshake: its subject (one line)
 * and notAfter. 0, or UV_ENOENT before the first handshake. */
int cr_upstream_peer_cert(const cr_upstream_t *u, char *subject, size_t subjectlen, time_t *not_after);

/* The latest successful TLS handshake (version, cipher, server certificate). 0, or UV_ENOENT before
 * the first one and for a plain_http upstream. */
int cr_upstream_conn_info(const cr_upstream_t *u, cr_tls_conn_info_t *out);

/* Connections: idle in the pool / busy with a request. */
void cr_upstream_stats(const cr_upstream_t *u, size_t *idle, size_t *busy);
/* TLS handshakes toward the upstream since the route's upstream was made: full and resumed. */
void cr_upstream_handshakes(const cr_upstream_t *u, uint64_t *full, uint64_t *resumed);

typedef struct cr_upstream_req_callbacks {
  /* The final response head, valid only during the call; the callee may rewrite it in place. */
  void (*on_head)(cr_upstream_req_t *r, cr_http_msg_t *head);
  /* Response body bytes (de-chunked), valid only during the call. */
  void (*on_body)(cr_upstream_req_t *r, const char *data, size_t len);
  /* The response is complete. Final: r is freed when this returns. */
  void (*on_end)(cr_upstream_req_t *r);
  /* The exchange failed. Final: r is freed when this returns. err: UV_ETIMEDOUT (connect or
   * response timeout), CR_ETLS_VERIFY (the upstream's certificate was refused), CR_ETLS, a
   * connection error (UV_ECONNREFUSED, UV_ECONNRESET, UV_EOF), CR_EHTTP_PARSE (bad response).
   * detail is prose for the log line: what failed, with whom, and why ("TLS handshake with
   * 127.0.0.1:9443 (server name localhost) failed: certificate has expired"). on_error can fire
   * after on_head (a body cut short): the caller then resets its own stream. */
  void (*on_error)(cr_upstream_req_t *r, int err, const char *detail);
  /* The request body buffer drained below its low-water mark after a write returned 1. */
  void (*on_writable)(cr_upstream_req_t *r);
  /* Optional: a 1xx interim response head (100 Continue, 103 Early Hints...), before on_head, as
   * cr_h1client_callbacks_t.on_interim says (a bounded number per request). */
  void (*on_interim)(cr_upstream_req_t *r, const cr_http_msg_t *head);
} cr_upstream_req_callbacks_t;

/* Starts an exchange: takes a pooled connection or dials a new one, then sends head. head must be
 * stripped of hop-by-hop headers; framing toward the upstream comes from head->content_length
 * (>= 0: Content-Length) or, when has_body and the length is unknown, chunked encoding. A Host
 * header equal to server_name[:port] replaces any the head carries. head is rewritten in place to
 * what is sent (Host and framing headers) and serialised before the call returns: the caller may
 * reuse or free it afterwards. Callbacks never fire from inside this call. */
cr_upstream_req_t *cr_upstream_request(cr_upstream_t *u, cr_http_msg_t *head, int has_body,
                                       const cr_upstream_req_callbacks_t *cbs, void *data);
/* Request body bytes (copied). 0 below the high-water mark, 1 when the caller should pause until
 * on_writable, or a negative error: CR_EPROTO past the head's Content-Length, UV_EINVAL after the
 * end, CR_ELIMIT when the caller kept writing far beyond the high-water mark. Once on_error is due
 * the bytes are dropped and 0 is returned (on_error follows). Writing exactly Content-Length bytes
 * ends the body by itself. */
int cr_upstream_req_write(cr_upstream_req_t *r, const char *data, size_t len);
/* The request body is complete (a no-op when it already is). CR_EPROTO when fewer bytes than the
 * Content-Length were written: the exchange cannot go on; cancel it. */
int cr_upstream_req_end(cr_upstream_req_t *r);
/* Stops (1) or resumes (0) delivery of response bytes. Effective at once, also from inside on_head
 * or on_body; bytes already received are held and delivered after resume, on a later loop turn.
 * The response timeout does not run while paused. */
void cr_upstream_req_pause(cr_upstream_req_t *r, int paused);
/* Abandons the exchange: no callback fires afterwards; its connection is closed, not pooled. */
void cr_upstream_req_cancel(cr_upstream_req_t *r);
void *cr_upstream_req_data(const cr_upstream_req_t *r);
/* Request bytes (head and body as framed) whose write to the upstream connection completed, so far.
 * While cr_upstream_req_write() reports the buffer full, a count that stays put means the upstream
 * reads nothing; it moves in pieces of at most 64 KiB. */
uint64_t cr_upstream_req_sent(const cr_upstream_req_t *r);

/* Frees the request structures kept for the next burst (an idle process's memory trim). */
void cr_upstream_release_caches(cr_upstream_t *u);

#endif

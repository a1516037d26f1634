/* SPDX-License-Identifier: Apache-2.0 */
/* A keep-alive pool of TLS client connections to one server (host, port, server name): it dials
 * (TCP connect, then the TLS handshake under one connect timeout), hands out a ready cr_stream_t,
 * and takes it back after an exchange. It knows nothing of HTTP: whoever borrows a connection runs
 * the protocol on its stream (http1_client.h does).
 *
 * Connections handed out are the borrower's until it calls cr_upool_put (keep it) or cr_upool_close
 * (discard it); while lent, the stream's data field and read callback are the borrower's. An idle
 * connection is read by the pool, so a peer's close or stray bytes end it before the next exchange
 * would be written into a dead connection.
 *
 * Reuse is LIFO (the most recently used connection is the least likely to have been dropped by the
 * peer). Idle connections close after idle_timeout, beyond max_idle, and as demand falls (see
 * on_purge_timer). Each TLS context gets a generation: after cr_upool_set_tls no connection made
 * under an older context is reused. */
#ifndef CCRELAY_UPSTREAM_POOL_H
#define CCRELAY_UPSTREAM_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "ccrelay/stream.h"

/* tls.h's types, by name only: borrowers need no TLS header. */
typedef struct cr_tls_ctx cr_tls_ctx_t;
typedef struct cr_tls_identity_src cr_tls_identity_src_t;
typedef struct cr_tls_conn_info cr_tls_conn_info_t;

typedef struct cr_upool cr_upool_t;
typedef struct cr_upool_conn cr_upool_conn_t;

typedef struct cr_upool_opts {
  const char *name;        /* for log lines (the route's name) */
  const char *host;        /* where to connect (name or literal) */
  unsigned port;           /* 1..65535 */
  const char *server_name; /* SNI and the name the certificate must carry; NULL or "": host */
  uint64_t connect_timeout_ms; /* TCP connect + TLS handshake; 0: 5 s */
  uint64_t idle_timeout_ms;    /* pooled connection idle lifetime; 0: 60 s */
  uint64_t purge_interval_ms;  /* how often idle connections beyond recent demand are halved; 0: 1 s */
  unsigned max_idle;           /* idle connections kept; 0: none (every put closes) */
  cr_tls_ctx_t *tls;           /* the client context new connections use; the pool takes a reference */
  const char *ca_file;         /* without tls: the pool builds a context verifying against these roots */
  const cr_tls_identity_src_t *identity; /* ... presenting this client identity (optional) */
  int plain;                   /* 1: plain TCP, no TLS (tls, ca_file and identity are ignored): an
                                  upstream the route explicitly allows to be plain HTTP */
} cr_upool_opts_t;

/* 0, or an error with prose in err: CR_ECONFIG for a missing host or a port out of range, or what
 * building the TLS context failed with. */
int cr_upool_new(uv_loop_t *loop, const cr_upool_opts_t *opts, cr_upool_t **out, char *err, size_t errlen);
/* Closes idle connections and cancels connects in progress (their callbacks never fire). Connections
 * lent out stay the borrowers' until they put (which then closes) or close them; the pool's memory
 * goes once the last connection has closed. */
void cr_upool_free(cr_upool_t *p);
/* New connections use tls from now on (a trust store reload); idle ones close now, lent ones close
 * when put back. Takes a reference; the previous context is released (streams hold their own). */
void cr_upool_set_tls(cr_upool_t *p, cr_tls_ctx_t *tls);

/* status 0: c's stream is connected, handshaken and lent to the caller. status < 0: the connect
 * failed (UV_ETIMEDOUT, CR_ETLS_VERIFY, CR_ETLS, UV_ECONNREFUSED...) and c is already gone; detail
 * is prose for the log line ("TLS handshake with 127.0.0.1:9443 (server name localhost) failed:
 * certificate has expired"), valid during the call. */
typedef void (*cr_upool_connect_cb)(cr_upool_conn_t *c, int status, const char *detail, void *data);

/* Hands out a connection. Returns 1 with *out an idle connection, ready now (cb never fires); 0 with
 * *out a connection being dialled: cb fires once, on a later loop turn, unless cr_upool_close(*out)
 * cancels it first; or a negative error when the dial cannot start, with prose in err (cb never fires). */
int cr_upool_connect(cr_upool_t *p, cr_upool_connect_cb cb, void *data, cr_upool_conn_t **out, char *err,
                     size_t errlen);
/* Gives a lent connection back for reuse. The borrower must have stopped reading and have no write in
 * flight; the stream must be at a message boundary. Closes it instead when the pool is full, being
 * freed, or the connection belongs to an older TLS context. */
void cr_upool_put(cr_upool_conn_t *c);
/* Closes a lent connection, or cancels one being dialled (its callback never fires). */
void cr_upool_close(cr_upool_conn_t *c);

/* The connection's stream (NULL while dialling). */
cr_stream_t *cr_upool_conn_stream(const cr_upool_conn_t *c);
/* 1 when c served an earlier exchange (taken from the pool). */
int cr_upool_conn_reused(const cr_upool_conn_t *c);

/* "127.0.0.1:9443", "[::1]:9443" */
const char *cr_upool_hostport(const cr_upool_t *p);
/* "127.0.0.1:9443 (server name localhost)": how error prose names the server. */
const char *cr_upool_peer_name(const cr_upool_t *p);
/* The certificate the server presented on the latest successful handshake: subject (one line) and
 * notAfter. 0, or UV_ENOENT before the first handshake. */
int cr_upool_peer_cert(const cr_upool_t *p, char *subject, size_t subjectlen, time_t *not_after);
/* The latest successful TLS handshake: version, cipher, the server's certificate. 0, or UV_ENOENT
 * before the first one (and always for a plain pool). */
int cr_upool_conn_info(const cr_upool_t *p, cr_tls_conn_info_t *out);
/* Connections idle in the pool / busy (being dialled or lent). */
void cr_upool_stats(const cr_upool_t *p, size_t *idle, size_t *busy);
/* TLS handshakes completed since the pool was made: full ones and resumed sessions. */
void cr_upool_handshakes(const cr_upool_t *p, uint64_t *full, uint64_t *resumed);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The byte-stream interface every hop uses, so the tunnel and HTTP code never know whether they run
 * over TCP or TLS, and tests can run them on plain TCP. TCP lives in stream.c; TLS (tls.h) is a
 * stream layered on another stream.
 *
 * Contracts, for every implementation:
 * - read: cb(s, n > 0, data) with data valid only during the call; cb(s, UV_EOF, NULL) once on a
 *   clean end (TCP FIN; TLS close_notify); cb(s, err < 0, NULL) once on failure (a TLS peer that
 *   closes without close_notify is CR_ETLS_TRUNCATED, never UV_EOF). No callback after EOF or error.
 *   read_stop takes effect at once: no callback fires until read_start is called again.
 * - write: bufs' bytes must stay valid until cb fires. cb fires exactly once for each write that
 *   returned 0: status 0 when the bytes were handed to the kernel, or an error (UV_ECANCELED when the
 *   stream was closed first). A write that returns an error never calls cb. Writes complete in order.
 * - shutdown: after queued writes, ends our direction (TLS: close_notify, then TCP FIN).
 * - close: cancels everything; no read callback and no connect callback fire after it; pending write
 *   callbacks fire with UV_ECANCELED before close_cb; close_cb fires on a later loop turn, after which
 *   the stream memory is freed. Closing twice is a bug.
 * - error_detail: what the stream knows about its last failure beyond the error code (a TLS stream:
 *   the certificate verify reason, the peer's alert, OpenSSL's error queue), so log lines can say why
 *   without their code knowing which stream it has. Valid until close_cb.
 * Streams are single-threaded: every call happens on the loop's thread. */
#ifndef CCRELAY_STREAM_H
#define CCRELAY_STREAM_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <uv.h>

typedef struct cr_stream cr_stream_t;

typedef void (*cr_stream_read_cb)(cr_stream_t *s, ssize_t nread, const char *data);
typedef void (*cr_stream_write_cb)(cr_stream_t *s, int status, void *arg);
typedef void (*cr_stream_close_cb)(cr_stream_t *s);
/* status 0: s is connected and usable. status < 0: the connect failed; the caller still owns s and
 * must close it. */
typedef void (*cr_stream_connect_cb)(cr_stream_t *s, int status);

typedef struct cr_stream_vtbl {
  const char *name; /* "tcp", "tls" */
  /* 1: write is done with the caller's bytes when it returns (TLS encrypts or copies them at once),
   * so they need not outlive the call; cb still fires as the contract says. 0: keep them until cb. */
  int copies_writes;
  int (*read_start)(cr_stream_t *s, cr_stream_read_cb cb);
  int (*read_stop)(cr_stream_t *s);
  int (*write)(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg);
  int (*shutdown)(cr_stream_t *s, cr_stream_write_cb cb, void *arg);
  void (*close)(cr_stream_t *s, cr_stream_close_cb cb);
  /* Bytes accepted by write whose callback has not fired yet. */
  size_t (*write_queue_size)(const cr_stream_t *s);
  /* Writes prose about the last failure into buf (NUL-terminated, truncated to len) and returns its
   * length; 0 and "" when the stream knows nothing beyond the error code. NULL: never knows more. */
  size_t (*error_detail)(const cr_stream_t *s, char *buf, size_t len);
} cr_stream_vtbl_t;

struct cr_stream {
  const cr_stream_vtbl_t *vt;
  uv_loop_t *loop;
  void *data;      /* the owner's; never touched by the stream */
  char peer[64];   /* "127.0.0.1:8443" or "[::1]:443", for log lines; "" if unknown */
};

static inline int cr_stream_read_start(cr_stream_t *s, cr_stream_read_cb cb) { return s->vt->read_start(s, cb); }
static inline int cr_stream_read_stop(cr_stream_t *s) { return s->vt->read_stop(s); }
static inline int cr_stream_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned n, cr_stream_write_cb cb, void *arg) {
  return s->vt->write(s, bufs, n, cb, arg);
}
static inline int cr_stream_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) { return s->vt->shutdown(s, cb, arg); }
static inline void cr_stream_close(cr_stream_t *s, cr_stream_close_cb cb) { s->vt->close(s, cb); }
static inline size_t cr_stream_write_queue_size(const cr_stream_t *s) { return s->vt->write_queue_size(s); }
static inline int cr_stream_copies_writes(const cr_stream_t *s) { return s->vt->copies_writes; }
static inline size_t cr_stream_error_detail(const cr_stream_t *s, char *buf, size_t len) {
  if (s->vt->error_detail != NULL)
    return s->vt->error_detail(s, buf, len);
  if (len > 0)
    buf[0] = '\0';
  return 0;
}
/* The stream's error detail when it has one, else cr_strerror(err); written into buf, which is
 * returned. For log lines and error prose: "certificate has expired" rather than "TLS error". */
const char *cr_stream_strerror(const cr_stream_t *s, int err, char *buf, size_t len);

/* TCP. Every socket gets TCP_NODELAY and keepalive. */

/* Resolves host (name or literal) and connects to the first address that answers. On return *out is
 * a stream the caller owns (close it to cancel: cb then never fires). cb fires once. */
int cr_tcp_connect(uv_loop_t *loop, const char *host, unsigned port, cr_stream_connect_cb cb, void *data,
                   cr_stream_t **out);
/* The same, but the walk over the name's answers begins at answer (first mod their number) and wraps
 * around to the ones before it: a caller that counts its dials up spreads them over every A/AAAA
 * answer (every replica behind a DNS name), and still reaches any answer that connects. */
int cr_tcp_connect_rotated(uv_loop_t *loop, const char *host, unsigned port, unsigned first, cr_stream_connect_cb cb,
                           void *data, cr_stream_t **out);

typedef struct cr_listener cr_listener_t;
/* A new connection; the callee owns conn (and must close it). */
typedef void (*cr_listener_cb)(cr_listener_t *l, cr_stream_t *conn, void *arg);

/* Called with the peer's address for each accepted connection before anything is allocated for it:
 * 0 takes it (the listener callback then fires at once, in the same call, with its stream); a
 * negative value refuses it (its socket is closed). */
typedef int (*cr_listener_admit_cb)(cr_listener_t *l, const struct sockaddr *peer, void *arg);

/* Listens on host:port ("127.0.0.1", "::1", "0.0.0.0", "::"; port 0 picks a free port).
 * err gets prose for the user on failure. Accepts at most a burst per loop turn. When accept fails
 * for lack of file descriptors or memory (EMFILE, ENFILE, ENOBUFS) the pending connections stay in
 * the kernel's queue, accepting pauses for 100 ms, and the failure is logged (the first few, then
 * one summary line per 10 s). */
int cr_tcp_listen(uv_loop_t *loop, const char *host, unsigned port, int backlog, cr_listener_cb cb, void *arg,
                  cr_listener_t **out, char *err, size_t errlen);
/* Sets (or clears, with NULL) the admission check; it gets the listener's arg. */
void cr_listener_set_admit(cr_listener_t *l, cr_listener_admit_cb admit);
/* accept() failures for lack of resources since the start. */
uint64_t cr_listener_accept_failures(const cr_listener_t *l);
/* The bound port (useful after port 0). */
unsigned cr_listener_port(const cr_listener_t *l);
/* Stops accepting: the socket is closed at once (later connection attempts are refused) and the
 * listener freed on a later loop turn. Connections the kernel had already completed but nobody
 * accepted are reset. */
void cr_listener_close(cr_listener_t *l);
/* The same after first accepting (admit check and callback, as usual) up to max of those queued
 * connections: a graceful stop serves the callers a load balancer had already sent instead of
 * resetting them. Only a connection completed in the moment between the last accept and the close
 * can still be reset. */
void cr_listener_close_accepting_queued(cr_listener_t *l, int max);

/* Formats addr as "1.2.3.4:5" or "[::1]:5". */
void cr_sockaddr_format(const struct sockaddr *addr, char *out, size_t outlen);

/* Gives back the pages of the process-wide read buffer (an idle process's memory trim). */
void cr_stream_release_caches(void);
/* Splits "host:port", "[v6]:port" into host (brackets removed) and port. 0 or CR_ECONFIG. */
int cr_split_host_port(const char *s, char *host, size_t hostlen, unsigned *port);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Reaching a host through an HTTP proxy with CONNECT (RFC 9110 9.3.6), for the agent's tunnel.
 *
 * Two levels:
 * - cr_proxy_connect_start: the CONNECT exchange over a stream already connected to the proxy
 *   (TCP in the agent, an in-memory pair in tests): request, 407 rounds through an authentication
 *   scheme, and the answer head parsed by the http1 codec. On a 2xx the stream is a byte pipe to the
 *   target and goes back to the caller untouched: nothing read past the head, nothing left queued.
 * - cr_proxy_dial: TCP to the proxy, then the exchange, under one deadline, shaped like
 *   cr_tcp_connect so a dialer swaps one for the other.
 *
 * A proxy that answers 2xx and then sends bytes before the caller has sent any is refused: the
 * tunnel's TLS client speaks first, so such bytes cannot come from the target and are the proxy's
 * (a body it should not send); passing them on would feed them to the TLS handshake.
 *
 * Authentication schemes are a vtable, so connection-bound multi-round schemes (Negotiate, NTLM)
 * fit beside Basic: initial() may offer nothing and wait for the 407's challenge; respond() answers
 * each 407 with another round on the same connection (the 407's body is read to its end first);
 * done() sees the final 2xx (Negotiate's mutual authentication). */
#ifndef CCRELAY_PROXY_CONNECT_H
#define CCRELAY_PROXY_CONNECT_H

#include <stddef.h>
#include <stdint.h>

#include "ccrelay/buf.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/stream.h"

/* Longest answer head (status line and fields) taken from a proxy. */
#define CR_PROXY_MAX_HEAD (16 * 1024)
/* 407 rounds on one connection before giving up (a scheme that never converges). */
#define CR_PROXY_MAX_ROUNDS 4

typedef struct cr_proxy_auth cr_proxy_auth_t;

typedef struct cr_proxy_auth_vtbl {
  const char *scheme; /* as in Proxy-Authenticate: "Basic" */
  /* The first request's Proxy-Authorization value, appended to out; leave out empty to send none
   * (a scheme that needs the proxy's challenge first). 0 or a negative error. */
  int (*initial)(cr_proxy_auth_t *a, cr_buf_t *out);
  /* The proxy answered 407 (resp: its head, with every Proxy-Authenticate field). 1: out holds the
   * value for another round on this connection. 0: nothing more to offer (the credentials were
   * refused, or no challenge is for this scheme); why gets prose that never holds a secret. */
  int (*respond)(cr_proxy_auth_t *a, const cr_http_msg_t *resp, cr_buf_t *out, char *why, size_t whylen);
  /* The proxy answered 2xx. 0 to accept the tunnel, or a negative error with why (a scheme that
   * verifies the proxy). NULL: always accepted. */
  int (*done)(cr_proxy_auth_t *a, const cr_http_msg_t *resp, char *why, size_t whylen);
  void (*free)(cr_proxy_auth_t *a);
} cr_proxy_auth_vtbl_t;

struct cr_proxy_auth {
  const cr_proxy_auth_vtbl_t *vt;
};

/* Basic (RFC 7617), sent with the first request (a proxy that wants Basic answers 407 otherwise,
 * which costs a round trip and gains nothing). Copies both strings; the password is wiped on free. */
cr_proxy_auth_t *cr_proxy_auth_basic_new(const char *username, const char *password);
/* NULL is allowed. */
void cr_proxy_auth_free(cr_proxy_auth_t *a);

typedef struct cr_proxy_connect_opts {
  const char *host;        /* target: a name or an IP literal (IPv6 without brackets) */
  unsigned port;
  const char *proxy_label; /* "proxy.corp:3128", for messages */
  cr_proxy_auth_t *auth;   /* borrowed, may be NULL (no credentials); must outlive the exchange */
  const char *auth_hint;   /* where credentials are configured, for the 407 message:
                              "proxy.username / proxy.password_file"; NULL: "the proxy credentials" */
} cr_proxy_connect_opts_t;

typedef struct cr_proxy_connect cr_proxy_connect_t;

/* Fires once, unless the exchange was cancelled first. status 0: s is a tunnel to the target, not
 * reading, with nothing read past the proxy's answer (the callback of our last write may still fire
 * later; it touches only the exchange, which is freed then). Else CR_EPROXY_AUTH (407 that the scheme cannot answer),
 * CR_EPROXY (a refusal, an unreachable target, a malformed or oversized answer, bytes after the
 * 2xx, a close before the answer) or a stream error; detail is prose for the log, valid during the
 * call. The exchange is freed after cb returns; the stream remains the caller's either way. */
typedef void (*cr_proxy_connect_cb)(cr_proxy_connect_t *pc, int status, const char *detail, void *data);

/* Starts the exchange over s (connected to the proxy; the exchange reads and writes it until cb).
 * opts' strings are copied. Returns NULL only on a write error, with *err set. */
cr_proxy_connect_t *cr_proxy_connect_start(cr_stream_t *s, const cr_proxy_connect_opts_t *opts,
                                           cr_proxy_connect_cb cb, void *data, int *err);
/* Stops the exchange before cb: stops reading; cb never fires. Not after cb. */
void cr_proxy_connect_cancel(cr_proxy_connect_t *pc);

/* ---- a dial through the proxy ---- */

typedef struct cr_proxy_dial_opts {
  const char *proxy_host;      /* name or IP literal (IPv6 without brackets) */
  unsigned proxy_port;
  cr_proxy_auth_t *auth;       /* borrowed, may be NULL; must outlive the dial */
  const char *auth_hint;       /* as in cr_proxy_connect_opts_t */
  uint64_t timeout_ms;         /* TCP to the proxy plus its answer to CONNECT; 0: none */
} cr_proxy_dial_opts_t;

/* Like cr_tcp_connect, through the proxy: *out is a dial handle (a cr_stream_t that only closes
 * and reports error_detail) the caller owns; closing it cancels, and cb then never fires.
 * cb fires once:
 * - success: cb(tcp, 0) with tcp the TCP stream to the proxy, now a tunnel to host:port, its data
 *   set to *out's data and its peer to the proxy's address. The dial handle is gone: the caller
 *   owns tcp instead and must not touch *out again.
 * - failure: cb(*out, status < 0); cr_stream_error_detail(*out) says what happened, with the proxy's
 *   address (and the proxy's status and reason when it answered); the caller closes *out.
 * opts' strings are copied. A negative return (host:port not dialable) leaves nothing to close. */
int cr_proxy_dial(uv_loop_t *loop, const cr_proxy_dial_opts_t *opts, const char *host, unsigned port,
                  cr_stream_connect_cb cb, void *data, cr_stream_t **out);

#endif

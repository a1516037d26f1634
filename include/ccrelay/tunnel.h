/* SPDX-License-Identifier: Apache-2.0 */
/* The tunnel: HTTP/2 (libnghttp2; the only user) with reversed roles over a cr_stream_t. The agent
 * dialled the connection but is the HTTP/2 *server*; the gateway accepted it and is the HTTP/2
 * *client* that opens one stream per public call.
 *
 * Flow control is the backpressure, stream by stream: a stream's receive window is only reopened
 * when the receiver calls cr_tstream_consume() for bytes it has passed on, so a slow reader stops its
 * own sender and no side buffers a whole body. The connection's window is reopened as soon as bytes
 * are delivered by on_data, so a slow stream never stops the others; what a receiver holds per stream
 * is therefore at most stream_window (the tunnel's worst case is in tunnel.c). Each stream's send
 * buffer is bounded too: cr_tstream_write() reports when it is above its high-water mark and
 * on_writable() says when to produce again.
 *
 * Liveness: a PING every ping_interval; no ACK within ping_timeout closes the tunnel (ETIMEDOUT).
 * Shutdown: cr_tunnel_shutdown() sends GOAWAY, lets streams in flight finish until the deadline,
 * then closes.
 *
 * HTTP mapping: a request head travels as :method, :scheme "https", :authority (from Host), :path
 * (the target) and the remaining headers lower-cased; a response as :status and headers. Heads must
 * already be stripped of hop-by-hop headers (cr_http_msg_strip_hop_by_hop); the message's
 * content_length, when >= 0, travels as content-length. On receipt, the head is rebuilt into a
 * cr_http_msg_t with a Host header from :authority, content_length from content-length (else -1),
 * version_minor 1. Pseudo-headers that are missing, repeated or unknown reset the stream.
 * A CONNECT request travels as :method and :authority only (its authority-form target, else Host)
 * and arrives with target and Host both set to that authority. A received head whose header list
 * exceeds 64 KiB (RFC 9113 accounting) or 256 fields is refused with RST_STREAM; the agent's owner
 * never sees such a stream, the gateway's gets on_close(CR_EPROTO) for a bad response head. */
#ifndef CCRELAY_TUNNEL_H
#define CCRELAY_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "ccrelay/http_msg.h"
#include "ccrelay/metrics.h"
#include "ccrelay/stream.h"

#define CR_TUNNEL_ALPN "ccrelay/1"
/* Header fields a received head may carry; a stream with more is refused. */
#define CR_TUNNEL_MAX_HEADERS 256
/* Header fields the callee of on_stream may add to the head it was given (Host, framing). */
#define CR_TUNNEL_HEAD_ROOM 8

typedef struct cr_tunnel cr_tunnel_t;
typedef struct cr_tstream cr_tstream_t;

typedef enum {
  CR_TUNNEL_GATEWAY, /* HTTP/2 client: opens streams */
  CR_TUNNEL_AGENT    /* HTTP/2 server: receives streams */
} cr_tunnel_role_t;

typedef struct cr_tstream_callbacks {
  /* Gateway side: the final response head arrived (status and headers). head is valid only during
   * the call; it is the tunnel's scratch, which the callee may rewrite in place. Not used on the
   * agent side. */
  void (*on_head)(cr_tstream_t *ts, cr_http_msg_t *head);
  /* Body bytes, valid only during the call. The receiver calls cr_tstream_consume(ts, n) once it
   * has passed n bytes on; until then they count against the stream's window (never against the
   * connection's), so the receiver holds at most stream_window bytes of the stream. */
  void (*on_data)(cr_tstream_t *ts, const char *data, size_t len);
  /* The peer ended its side of the stream (no more on_data). */
  void (*on_end)(cr_tstream_t *ts);
  /* The send buffer fell below its low-water mark after cr_tstream_write reported it full. */
  void (*on_writable)(cr_tstream_t *ts);
  /* Final callback, exactly once per stream, also after a local cr_tstream_reset: error 0 when both
   * sides ended normally; otherwise UV_ECONNRESET (peer reset), CR_ECANCELED (local reset),
   * CR_ECLOSED (the tunnel went away) or CR_EPROTO. ts is freed when this returns. Not called from
   * inside any cr_tstream_* or cr_tunnel_* call (it runs from I/O or a deferred callback). */
  void (*on_close)(cr_tstream_t *ts, int error);
  /* Gateway side, optional: an interim (1xx) response head arrived, before on_head and in the order
   * the agent sent them; head is valid only during the call (version_minor 1, no content_length). */
  void (*on_interim)(cr_tstream_t *ts, const cr_http_msg_t *head);
} cr_tstream_callbacks_t;

typedef struct cr_tunnel_callbacks {
  /* Agent side: a new stream with its complete request head. The callee must call
   * cr_tstream_set_callbacks() before returning, then respond (or reset) whenever it likes.
   * head is valid only during the call: copy what must outlive it (cr_http_msg_copy). It is the
   * tunnel's scratch, reset at the next head: the callee may rewrite it in place (the agent turns
   * it into the upstream request without a copy). */
  void (*on_stream)(cr_tunnel_t *t, cr_tstream_t *ts, cr_http_msg_t *head);
  /* The peer's first SETTINGS frame arrived: it accepted the connection. Optional. On TLS 1.3 a
   * client's handshake completes before the server has judged the client's certificate, so the
   * agent counts a tunnel as up only from here. */
  void (*on_ready)(cr_tunnel_t *t);
  /* The peer sent GOAWAY: no new streams will be accepted on this tunnel. Optional. */
  void (*on_goaway)(cr_tunnel_t *t);
  /* The tunnel is finished (transport error or EOF, ping timeout, protocol error, shutdown
   * complete). Every stream's on_close has already fired. t is freed when this returns. */
  void (*on_close)(cr_tunnel_t *t, int error);
} cr_tunnel_callbacks_t;

typedef struct cr_tunnel_opts {
  cr_tunnel_role_t role;
  uint64_t ping_interval_ms;   /* 0 disables PING */
  uint64_t ping_timeout_ms;    /* 0 means ping_interval_ms */
  uint32_t stream_window;      /* receive window per stream (0 means 1 MiB) */
  uint32_t connection_window;  /* receive window for the connection (0 means 16 MiB): bounds the bytes
                                  in flight on the wire, not what receivers hold */
  size_t send_high_water;      /* per-stream send buffer mark (0 means 64 KiB) */
  uint32_t max_streams;        /* agent: SETTINGS_MAX_CONCURRENT_STREAMS (0 means 10000) */
  cr_metrics_hist_t *rtt;      /* optional, not owned, must outlive the tunnel: each PING's round trip
                                  (submit to ACK, seconds) is observed into it */
} cr_tunnel_opts_t;

/* Takes ownership of transport (an established, already-authenticated stream). Nothing happens
 * until cr_tunnel_start. */
cr_tunnel_t *cr_tunnel_new(cr_stream_t *transport, const cr_tunnel_opts_t *opts,
                           const cr_tunnel_callbacks_t *cbs, void *data);
/* Sends the preface/SETTINGS and starts reading. 0 or an error (then close the tunnel). */
int cr_tunnel_start(cr_tunnel_t *t);
void *cr_tunnel_data(const cr_tunnel_t *t);
/* Prose on why the transport failed (e.g. the TLS alert the peer sent), or "". Valid until the
 * tunnel is freed, so also during on_close. */
const char *cr_tunnel_error_detail(const cr_tunnel_t *t);
/* The transport (for peer address and certificate), owned by the tunnel. */
cr_stream_t *cr_tunnel_transport(const cr_tunnel_t *t);
/* Streams open on this tunnel right now. */
size_t cr_tunnel_nstreams(const cr_tunnel_t *t);
/* 1 while the tunnel may carry new streams (started, no GOAWAY either way, not closing). */
int cr_tunnel_usable(const cr_tunnel_t *t);
/* Graceful: GOAWAY now, close when the last stream ends or after deadline_ms (then streams are
 * closed with CR_ECLOSED). on_close fires at the end. */
void cr_tunnel_shutdown(cr_tunnel_t *t, uint64_t deadline_ms);
/* Abort now: on_close of every stream, then of the tunnel, fire on a later loop turn with error. */
void cr_tunnel_close(cr_tunnel_t *t, int error);

/* Gateway side: opens a stream carrying head. has_body 0 sends END_STREAM with the head. Returns
 * NULL with *err set (CR_ENO_TUNNEL when the tunnel is not usable, CR_EPROTO otherwise). */
cr_tstream_t *cr_tunnel_open_stream(cr_tunnel_t *t, const cr_http_msg_t *head, int has_body,
                                    const cr_tstream_callbacks_t *cbs, void *data, int *err);

/* Agent side: installs callbacks for a stream received in on_stream. */
void cr_tstream_set_callbacks(cr_tstream_t *ts, const cr_tstream_callbacks_t *cbs, void *data);
/* Agent side: sends the final response head (status 200..999); has_body 0 ends the stream with it.
 * Body bytes written before this are sent after it. 0 or an error. */
int cr_tstream_respond(cr_tstream_t *ts, const cr_http_msg_t *head, int has_body);
/* Agent side: sends an interim response head (status 100..199 but 101: a HEADERS frame without
 * END_STREAM, RFC 9113 8.1) before the final one; any number of them, in order. head's
 * content_length is ignored. 0, CR_EPROTO (a bad status, or the final head already went), or
 * CR_ECLOSED (the stream was reset or the tunnel is closing). */
int cr_tstream_respond_interim(cr_tstream_t *ts, const cr_http_msg_t *head);

/* Queues body bytes (copied). Returns 0 while the send buffer is below its high-water mark, 1 when
 * the producer should pause until on_writable, or a negative error: CR_ECLOSED (stream reset or
 * tunnel closing), CR_EPROTO (already ended), CR_ELIMIT (the producer kept writing after 1 until the
 * hard cap of 4 x high water + 64 KiB; nothing of this call was queued). */
int cr_tstream_write(cr_tstream_t *ts, const char *data, size_t len);
/* Ends our side after the queued bytes (END_STREAM). */
int cr_tstream_end(cr_tstream_t *ts);
/* Resets the stream (RST_STREAM CANCEL); on_close still fires later with CR_ECANCELED. */
void cr_tstream_reset(cr_tstream_t *ts);
/* Ends the stream as broken once the bytes already queued by cr_tstream_write are sent: DATA frames
 * for them (as the peer's window allows), then RST_STREAM INTERNAL_ERROR instead of END_STREAM, so
 * the peer gets everything written before a failure and still knows the body is incomplete. From
 * the call on the stream counts as reset (writes fail with CR_ECLOSED, received data is dropped);
 * on_close fires later with CR_ECANCELED. With nothing queued it is cr_tstream_reset. */
void cr_tstream_abort(cr_tstream_t *ts);
/* Reopens the receive window by n bytes of data delivered by on_data. */
void cr_tstream_consume(cr_tstream_t *ts, size_t n);

void *cr_tstream_data(const cr_tstream_t *ts);
cr_tunnel_t *cr_tstream_tunnel(const cr_tstream_t *ts);
int32_t cr_tstream_id(const cr_tstream_t *ts);

/* Frees the stream and output buffers kept for the next burst (an idle process's memory trim). */
void cr_tunnel_release_caches(cr_tunnel_t *t);

/* The nghttp2 library this process runs with ("1.52.0"), for `ccrelay version`. */
const char *cr_tunnel_nghttp2_version(void);

#endif

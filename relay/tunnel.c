/* SPDX-License-Identifier: Apache-2.0 */
/* The tunnel: libnghttp2 over a cr_stream_t, with nghttp2 never doing I/O itself.
 *
 * Input: every transport read goes straight into nghttp2_session_mem_recv. Output: an idle handle
 * (started by whatever produced work: a read, a submit, a consume, a write completion) pulls frames
 * with nghttp2_session_mem_send into one fixed-size output buffer and hands it to the transport in
 * ONE write per loop turn, so a burst of small requests costs one syscall, not one per frame. While
 * the transport's write queue is above WRITE_QUEUE_LIMIT nothing is pulled; the write callback
 * restarts the idle handle. Output buffers come from a small free list, so the steady state
 * allocates nothing per frame.
 *
 * DATA frames use NGHTTP2_DATA_FLAG_NO_COPY: the read callback only says how much may go, and the
 * send_data callback copies the frame header and the bytes from the stream's send buffer straight
 * into the output buffer (one copy instead of two).
 *
 * Receive flow control is manual (no_auto_window_update), and the two levels are kept apart. The
 * connection window is given back as soon as a DATA frame has been handed to its stream's owner
 * (on_data), so one stream whose consumer is slow can never hold it: it only bounds the bytes in
 * flight on the wire. A stream's own window is given back only by cr_tstream_consume, once its owner
 * has passed the bytes on: that is the per-stream backpressure the header promises. (Giving the
 * connection window back on consume let ~16 slow callers, each holding a 1 MiB stream window, fill
 * the 16 MiB connection window, and every other stream got a head and no body.)
 *
 * Memory, the worst case per tunnel: what a receiving owner holds for a stream is at most the stream
 * window (it only gets more once it consumes), what waits in a stream's send buffer at most send_max,
 * so streams x (stream_window + send_max) + WRITE_QUEUE_LIMIT + OUTBUF_SIZE x (1 + MAX_FREE_OUTBUFS);
 * with the defaults, streams x (1 MiB + 320 KiB) + 576 KiB. Streams are bounded by the agent's
 * SETTINGS_MAX_CONCURRENT_STREAMS (max_streams) and, at the gateway, by the public connections; the
 * roles' send timeouts bound how long a stream may hold its share without making progress.
 *
 * Closing: user callbacks must never run inside a cr_tunnel_* or cr_tstream_* call, and nghttp2
 * callbacks only run inside mem_recv/mem_send, which only run from I/O callbacks and the idle
 * handle. A close request therefore only marks the tunnel and starts the idle handle; the idle
 * callback then deletes the session, tells every open stream (CR_ECLOSED), closes the handles and
 * the transport, and the tunnel's own on_close fires when the last of them is closed. */
#include "ccrelay/tunnel.h"

#include <assert.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"

#define OUTBUF_SIZE (64 * 1024)          /* one transport write at most this big */
#define WRITE_QUEUE_LIMIT (256 * 1024)   /* stop pulling frames while this much is unwritten */
#define MAX_FREE_OUTBUFS 4
#define MAX_FREE_STREAMS 64 /* a busy loop turn's worth of ended streams, kept for the next ones */
#define MAX_HEADER_LIST (64 * 1024)      /* RFC 9113 accounting: name + value + 32 per field */
#define LINGER_MS 1000                   /* graceful transport shutdown gives up after this */
#define FRAME_HD_LEN 9

/* A stream's window is what one response can have in flight between the agent's upstream read and the
 * gateway's caller write: at 256 KiB a 1 MiB answer stopped three times for a WINDOW_UPDATE round
 * trip (1 MiB, c=16: 330-344 -> 378-415 MiB/s). The connection window still bounds the total. */
#define DEFAULT_STREAM_WINDOW (1024 * 1024)
#define DEFAULT_CONN_WINDOW (16 * 1024 * 1024)
#define DEFAULT_HIGH_WATER (64 * 1024)
#define DEFAULT_MAX_STREAMS 10000
#define MAX_WINDOW 0x7fffffff

/* Pseudo-headers seen in the header block being received. */
#define PS_METHOD 1u
#define PS_SCHEME 2u
#define PS_AUTHORITY 4u
#define PS_PATH 8u
#define PS_STATUS 16u

typedef struct outbuf {
  cr_queue_t node;
  size_t len;
  char data[OUTBUF_SIZE];
} outbuf_t;

/* A stream's bytes not yet framed, as a ring: framing from the front and appending at the back never
 * move what waits (compacting a half-sent buffer before each append copied up to 4x each byte of a
 * big response, 2 % of the agent's CPU). */
typedef struct sring {
  char *base;
  size_t cap;
  size_t head; /* first unsent byte */
  size_t len;  /* unsent bytes */
} sring_t;

struct cr_tstream {
  cr_queue_t node; /* in t->streams */
  cr_tunnel_t *t;
  int32_t id;
  cr_tstream_callbacks_t cbs;
  void *data;
  sring_t sbuf;
  size_t unconsumed; /* delivered by on_data, not yet given back by cr_tstream_consume */
  uint32_t rst_code; /* of a RST_STREAM from the peer */
  unsigned announced : 1;   /* the owner knows the stream, so it gets on_close */
  unsigned head_seen : 1;   /* request (agent) or final response (gateway) received */
  unsigned responded : 1;
  unsigned ended_local : 1;
  unsigned deferred : 1;    /* the data provider returned NGHTTP2_ERR_DEFERRED */
  unsigned want_writable : 1;
  unsigned remote_ended : 1;
  unsigned rejected : 1;    /* we reset it because of its head */
  unsigned local_reset : 1;
  unsigned reset_after_send : 1; /* cr_tstream_abort: RST_STREAM once sbuf is framed */
  unsigned peer_reset : 1;
  unsigned proto_error : 1;
};

struct cr_tunnel {
  cr_stream_t *transport;
  char error_detail[256]; /* why the transport failed (TLS alert, verify reason), kept past its close */
  int ready;               /* the peer's first SETTINGS arrived */
  uv_loop_t *loop;
  cr_tunnel_role_t role;
  cr_tunnel_opts_t opts;
  cr_tunnel_callbacks_t cbs;
  void *data;
  nghttp2_session *session;
  uv_idle_t idle;
  uv_timer_t ping_timer;
  uv_timer_t ping_deadline;
  uint64_t ping_sent_ns;     /* uv_hrtime() when the PING in flight was submitted */
  uv_timer_t drain_timer; /* shutdown deadline, then the linger of a graceful transport shutdown */
  cr_queue_t streams;
  size_t nstreams;
  size_t send_max; /* hard cap of a stream's send buffer */
  cr_freelist_t free_streams;
  /* output */
  cr_queue_t free_outbufs;
  size_t nfree_outbufs;
  outbuf_t *cur;        /* being filled, only during flush */
  const uint8_t *pend;  /* rest of the last mem_send chunk that did not fit */
  size_t pend_len;
  nghttp2_nv *nv;       /* reused for every head we send */
  size_t nv_cap;
  /* the header block being received (HEADERS + CONTINUATION are contiguous, so one suffices) */
  cr_http_msg_t rx;
  cr_tstream_t *rx_ts;
  size_t rx_bytes;
  unsigned rx_pseudo;
  unsigned rx_regular : 1;
  unsigned rx_trailer : 1;
  /* state */
  int close_err;
  int pending_closes;
  uint32_t goaway_error;
  unsigned started : 1;
  unsigned reading : 1;
  unsigned closing : 1;
  unsigned graceful : 1;
  unsigned transport_failed : 1;
  unsigned transport_closing : 1;
  unsigned goaway_sent : 1;
  unsigned goaway_recv : 1;
  unsigned ids_exhausted : 1;
  unsigned ping_outstanding : 1;
  unsigned wouldblock : 1;
};

static void idle_cb(uv_idle_t *h);

/* ---- small helpers ---- */

static int name_is(const uint8_t *name, size_t len, const char *lit) {
  size_t n = strlen(lit);
  return len == n && memcmp(name, lit, n) == 0;
}

static int ascii_ieq(const char *a, size_t alen, const char *lit) {
  size_t n = strlen(lit);
  if (alen != n)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z')
      c = (char)(c - 'A' + 'a');
    if (c != lit[i])
      return 0;
  }
  return 1;
}

/* Connection-specific fields (RFC 9113 8.2.2) and the ones we map ourselves. */
#define SKIP_ON_SEND                                                                                         \
  (CR_HDR_BIT(CR_HDR_HOST) | CR_HDR_BIT(CR_HDR_UPGRADE) | CR_HDR_BIT(CR_HDR_CONNECTION) |                    \
   CR_HDR_BIT(CR_HDR_KEEP_ALIVE) | CR_HDR_BIT(CR_HDR_CONTENT_LENGTH) | CR_HDR_BIT(CR_HDR_PROXY_CONNECTION) | \
   CR_HDR_BIT(CR_HDR_TRANSFER_ENCODING))

static int skip_on_send(const cr_http_header_t *h) {
  if (h->name_len == 0 || h->name[0] == ':')
    return 1;
  if (h->id == CR_HDR_TE)
    return !ascii_ieq(h->value, h->value_len, "trailers");
  return (SKIP_ON_SEND & CR_HDR_BIT(h->id)) != 0;
}

static void schedule_flush(cr_tunnel_t *t) {
  if (!t->closing && t->session != NULL && t->started)
    uv_idle_start(&t->idle, idle_cb);
}

static void request_close(cr_tunnel_t *t, int err, int graceful) {
  if (t->closing)
    return;
  t->closing = 1;
  t->close_err = err;
  if (err != 0)
    cr_stream_error_detail(t->transport, t->error_detail, sizeof t->error_detail);
  t->graceful = graceful && !t->transport_failed;
  if (t->reading) {
    cr_stream_read_stop(t->transport);
    t->reading = 0;
  }
  uv_timer_stop(&t->ping_timer);
  uv_timer_stop(&t->ping_deadline);
  uv_timer_stop(&t->drain_timer);
  uv_idle_start(&t->idle, idle_cb);
  cr_log_debug("tunnel closing", "peer=%s role=%s error=%s graceful=%d", t->transport->peer,
               t->role == CR_TUNNEL_AGENT ? "agent" : "gateway", err ? cr_err_name(err) : "none", t->graceful);
}

/* After a GOAWAY either way, the tunnel ends with its last stream. */
static void check_drained(cr_tunnel_t *t) {
  if (!t->closing && (t->goaway_sent || t->goaway_recv) && t->nstreams == 0)
    request_close(t, 0, 1);
}

/* ---- streams ---- */

static cr_tstream_t *tstream_new(cr_tunnel_t *t, int32_t id) {
  cr_tstream_t *ts = cr_freelist_get(&t->free_streams);
  ts->t = t;
  ts->id = id;
  cr_queue_insert_tail(&t->streams, &ts->node);
  t->nstreams++;
  return ts;
}

static void tstream_free(cr_tunnel_t *t, cr_tstream_t *ts) {
  cr_queue_remove(&ts->node);
  t->nstreams--;
  if (t->rx_ts == ts)
    t->rx_ts = NULL;
  free(ts->sbuf.base);
  cr_freelist_put(&t->free_streams, ts);
}

static cr_tstream_t *find_stream(cr_tunnel_t *t, int32_t id) {
  cr_queue_t *q;
  cr_queue_foreach(q, &t->streams) {
    cr_tstream_t *ts = cr_queue_data(q, cr_tstream_t, node);
    if (ts->id == id)
      return ts;
  }
  return NULL;
}

/* The stream is gone from nghttp2: tell the owner (once), free it. (Its bytes never held the
 * connection window: that was given back when they arrived.) */
static void tstream_finish(cr_tunnel_t *t, cr_tstream_t *ts, int err) {
  if (ts->announced && ts->cbs.on_close)
    ts->cbs.on_close(ts, err);
  tstream_free(t, ts);
  check_drained(t);
}

static size_t send_pending(const cr_tstream_t *ts) { return ts->sbuf.len; }

/* The unsent bytes that lie in one piece from the front. */
static size_t sring_front_len(const sring_t *r) { return CR_MIN(r->len, r->cap - r->head); }

static void sring_consume(sring_t *r, size_t n) {
  r->len -= n;
  r->head = r->len == 0 ? 0 : (r->head + n) % r->cap;
}

/* Appends, growing (by doubling, up to max) only when full. CR_ELIMIT past max. */
static int sring_append(sring_t *r, const char *data, size_t n, size_t max) {
  size_t tail, first;
  if (n > max || r->len > max - n)
    return CR_ELIMIT;
  if (r->cap - r->len < n) {
    size_t cap = r->cap ? r->cap : 256;
    char *base;
    while (cap - r->len < n)
      cap *= 2;
    cap = CR_MIN(cap, max);
    base = cr_malloc(cap);
    first = sring_front_len(r);
    if (r->len) {
      memcpy(base, r->base + r->head, first);
      memcpy(base + first, r->base, r->len - first);
    }
    free(r->base);
    r->base = base;
    r->cap = cap;
    r->head = 0;
  }
  tail = (r->head + r->len) % r->cap;
  first = CR_MIN(n, r->cap - tail);
  memcpy(r->base + tail, data, first);
  memcpy(r->base, data + first, n - first);
  r->len += n;
  return 0;
}

static void deliver_end(cr_tunnel_t *t, cr_tstream_t *ts) {
  if (t->closing || ts->remote_ended || ts->local_reset || ts->rejected || !ts->announced)
    return;
  ts->remote_ended = 1;
  if (ts->cbs.on_end)
    ts->cbs.on_end(ts);
}

static void resume_if_deferred(cr_tunnel_t *t, cr_tstream_t *ts) {
  if (ts->deferred) {
    ts->deferred = 0;
    nghttp2_session_resume_data(t->session, ts->id);
  }
  schedule_flush(t);
}

/* ---- output ---- */

static outbuf_t *outbuf_get(cr_tunnel_t *t) {
  outbuf_t *ob;
  if (!cr_queue_empty(&t->free_outbufs)) {
    cr_queue_t *q = cr_queue_head(&t->free_outbufs);
    cr_queue_remove(q);
    t->nfree_outbufs--;
    ob = cr_queue_data(q, outbuf_t, node);
  } else {
    ob = cr_malloc(sizeof *ob);
    cr_queue_init(&ob->node);
  }
  ob->len = 0;
  return ob;
}

static void outbuf_put(cr_tunnel_t *t, outbuf_t *ob) {
  if (t->nfree_outbufs >= MAX_FREE_OUTBUFS) {
    free(ob);
    return;
  }
  cr_queue_insert_head(&t->free_outbufs, &ob->node);
  t->nfree_outbufs++;
}

static void on_write(cr_stream_t *s, int status, void *arg) {
  cr_tunnel_t *t = s->data;
  outbuf_put(t, arg);
  if (t->closing)
    return;
  if (status < 0) {
    t->transport_failed = 1;
    request_close(t, status, 0);
    return;
  }
  schedule_flush(t);
}

/* Pulls frames into one output buffer and writes it. Returns 1 if there may be more to send right
 * away (the buffer filled up). `final` ignores the write-queue limit (last flush before a graceful
 * shutdown). */
static int flush(cr_tunnel_t *t, int final) {
  outbuf_t *ob;
  int more, r;
  if (t->session == NULL || t->transport_failed)
    return 0;
  if (!final && cr_stream_write_queue_size(t->transport) >= WRITE_QUEUE_LIMIT)
    return 0; /* on_write restarts us */
  ob = outbuf_get(t);
  t->cur = ob;
  t->wouldblock = 0;
  for (;;) {
    if (t->pend_len) {
      size_t n = CR_MIN(t->pend_len, OUTBUF_SIZE - ob->len);
      memcpy(ob->data + ob->len, t->pend, n);
      ob->len += n;
      t->pend += n;
      t->pend_len -= n;
      if (t->pend_len)
        break;
    }
    if (ob->len == OUTBUF_SIZE || t->wouldblock || (t->closing && !final))
      break;
    ssize_t n = nghttp2_session_mem_send(t->session, &t->pend);
    if (n < 0) {
      cr_log_warn("tunnel protocol failure", "peer=%s nghttp2=\"%s\"", t->transport->peer,
                  nghttp2_strerror((int)n));
      t->pend_len = 0;
      t->cur = NULL;
      outbuf_put(t, ob);
      request_close(t, CR_EPROTO, 0);
      return 0;
    }
    if (n == 0)
      break;
    t->pend_len = (size_t)n;
  }
  t->cur = NULL;
  more = t->pend_len > 0 || t->wouldblock || ob->len == OUTBUF_SIZE;
  if (ob->len == 0) {
    outbuf_put(t, ob);
    return 0;
  }
  r = cr_stream_write(t->transport, &(uv_buf_t){.base = ob->data, .len = ob->len}, 1, on_write, ob);
  if (r < 0) {
    outbuf_put(t, ob);
    t->transport_failed = 1;
    t->pend_len = 0;
    request_close(t, r, 0);
    return 0;
  }
  return more;
}

/* ---- closing ---- */

void cr_tunnel_release_caches(cr_tunnel_t *t) {
  cr_queue_t *q;
  while (!cr_queue_empty(&t->free_outbufs)) {
    q = cr_queue_head(&t->free_outbufs);
    cr_queue_remove(q);
    free(cr_queue_data(q, outbuf_t, node));
  }
  t->nfree_outbufs = 0;
  cr_freelist_drain(&t->free_streams);
}

static void final_free(cr_tunnel_t *t) {
  cr_tunnel_release_caches(t);
  cr_http_msg_free(&t->rx);
  free(t->nv);
  if (t->cbs.on_close)
    t->cbs.on_close(t, t->close_err);
  free(t);
}

static void handle_closed(uv_handle_t *h) {
  cr_tunnel_t *t = h->data;
  if (--t->pending_closes == 0)
    final_free(t);
}

static void transport_closed(cr_stream_t *s) {
  cr_tunnel_t *t = s->data;
  t->transport = NULL;
  if (--t->pending_closes == 0)
    final_free(t);
}

static void close_transport(cr_tunnel_t *t) {
  if (t->transport_closing)
    return;
  t->transport_closing = 1;
  uv_timer_stop(&t->drain_timer);
  uv_close((uv_handle_t *)&t->drain_timer, handle_closed);
  cr_stream_close(t->transport, transport_closed);
}

static void shutdown_done(cr_stream_t *s, int status, void *arg) {
  close_transport(arg);
}

static void linger_expired(uv_timer_t *h) {
  close_transport(h->data);
}

static void finish_close(cr_tunnel_t *t) {
  uv_idle_stop(&t->idle);
  if (t->graceful)
    flush(t, 1);
  /* nghttp2_session_del calls no callback; after it no nghttp2 callback can see a freed stream. */
  if (t->session) {
    nghttp2_session_del(t->session);
    t->session = NULL;
  }
  t->pend_len = 0;
  while (!cr_queue_empty(&t->streams)) {
    cr_tstream_t *ts = cr_queue_data(cr_queue_head(&t->streams), cr_tstream_t, node);
    ts->unconsumed = 0;
    tstream_finish(t, ts, ts->local_reset ? CR_ECANCELED : CR_ECLOSED);
  }
  /* All five closes are counted before the first: while a graceful shutdown is in flight the three
   * handles may close before close_transport runs, and must not free the tunnel under it. */
  t->pending_closes += 5; /* idle, two ping timers; drain timer and transport in close_transport */
  uv_close((uv_handle_t *)&t->idle, handle_closed);
  uv_close((uv_handle_t *)&t->ping_timer, handle_closed);
  uv_close((uv_handle_t *)&t->ping_deadline, handle_closed);
  if (t->graceful && cr_stream_shutdown(t->transport, shutdown_done, t) == 0) {
    uv_timer_start(&t->drain_timer, linger_expired, LINGER_MS, 0);
    return;
  }
  close_transport(t);
}

static void idle_cb(uv_idle_t *h) {
  cr_tunnel_t *t = h->data;
  if (t->closing) {
    finish_close(t);
    return;
  }
  if (flush(t, 0) || t->closing)
    return; /* keep the idle handle running: more to send next turn, or the close to finish */
  uv_idle_stop(&t->idle);
  if (!nghttp2_session_want_read(t->session) && !nghttp2_session_want_write(t->session)) {
    /* nghttp2 is done with the connection: after our GOAWAY that is the normal end, otherwise it
     * terminated the session on a protocol error */
    int err = t->goaway_sent && t->nstreams == 0 ? 0 : CR_EPROTO;
    request_close(t, err, err == 0);
  }
}

/* ---- transport input ---- */

static void on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  cr_tunnel_t *t = s->data;
  ssize_t rv;
  if (t->closing)
    return;
  if (nread < 0) {
    int err = (int)nread;
    t->reading = 0;
    t->transport_failed = 1;
    if (err == UV_EOF && (t->goaway_sent || (t->goaway_recv && t->goaway_error == NGHTTP2_NO_ERROR)))
      err = 0;
    request_close(t, err, 0);
    return;
  }
  rv = nghttp2_session_mem_recv(t->session, (const uint8_t *)data, (size_t)nread);
  if (rv < 0) {
    if (!t->closing)
      cr_log_warn("tunnel protocol failure", "peer=%s nghttp2=\"%s\"", t->transport->peer,
                  nghttp2_strerror((int)rv));
    request_close(t, CR_EPROTO, 0);
    return;
  }
  schedule_flush(t);
}

/* ---- nghttp2 callbacks ---- */

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data) {
  cr_tstream_t *ts = source->ptr;
  size_t avail = sring_front_len(&ts->sbuf), n;
  if (avail == 0) {
    if (ts->reset_after_send)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2 resets the stream (INTERNAL_ERROR) */
    if (ts->ended_local) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    ts->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  n = CR_MIN(avail, length);
  *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  if (n == send_pending(ts) && ts->ended_local && !ts->reset_after_send)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd, size_t length,
                        nghttp2_data_source *source, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts = source->ptr;
  outbuf_t *ob = t->cur;
  size_t padlen = frame->data.padlen; /* includes the Pad Length octet */
  if (ob == NULL || OUTBUF_SIZE - ob->len < FRAME_HD_LEN + length + padlen) {
    /* nghttp2 calls again with the same frame on the next mem_send, into a fresh buffer */
    t->wouldblock = 1;
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  memcpy(ob->data + ob->len, framehd, FRAME_HD_LEN);
  ob->len += FRAME_HD_LEN;
  if (padlen)
    ob->data[ob->len++] = (char)(padlen - 1);
  memcpy(ob->data + ob->len, ts->sbuf.base + ts->sbuf.head, length);
  ob->len += length;
  sring_consume(&ts->sbuf, length);
  if (padlen > 1) {
    memset(ob->data + ob->len, 0, padlen - 1);
    ob->len += padlen - 1;
  }
  if (ts->want_writable && send_pending(ts) <= t->opts.send_high_water / 4 && !t->closing && !ts->local_reset) {
    ts->want_writable = 0;
    if (ts->cbs.on_writable)
      ts->cbs.on_writable(ts);
  }
  return 0;
}

/* Resets a stream whose head we refuse; the agent's owner never hears of it, the gateway's gets
 * CR_EPROTO. */
static int rx_reject(cr_tunnel_t *t, cr_tstream_t *ts, uint32_t code, const char *why) {
  cr_log_debug("tunnel stream refused", "peer=%s stream=%d reason=\"%s\"", t->transport->peer, ts->id, why);
  ts->rejected = 1;
  ts->proto_error = 1;
  nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, ts->id, code);
  return 0;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts;
  t->rx_ts = NULL;
  if (t->closing || frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  if (t->role == CR_TUNNEL_AGENT && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    ts = tstream_new(t, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, ts);
  } else {
    ts = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  }
  if (ts == NULL || ts->rejected)
    return 0;
  t->rx_ts = ts;
  t->rx_trailer = ts->head_seen;
  cr_http_msg_reset(&t->rx);
  t->rx.status = 0;
  t->rx.content_length = -1;
  t->rx_bytes = 0;
  t->rx_pseudo = 0;
  t->rx_regular = 0;
  return 0;
}

static unsigned pseudo_bit(cr_tunnel_role_t role, const uint8_t *name, size_t len) {
  if (role == CR_TUNNEL_AGENT) {
    if (name_is(name, len, ":method"))
      return PS_METHOD;
    if (name_is(name, len, ":scheme"))
      return PS_SCHEME;
    if (name_is(name, len, ":authority"))
      return PS_AUTHORITY;
    if (name_is(name, len, ":path"))
      return PS_PATH;
    return 0;
  }
  return name_is(name, len, ":status") ? PS_STATUS : 0;
}

static int parse_u64(const uint8_t *s, size_t len, int64_t *out) {
  int64_t v = 0;
  if (len == 0 || len > 18)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

/* A received field into the head; past CR_TUNNEL_MAX_HEADERS the stream is refused, and the
 * head keeps CR_TUNNEL_HEAD_ROOM more for the callee that rewrites it in place. */
static int rx_add(cr_tunnel_t *t, cr_http_hdr_t id, const char *name, size_t nlen, const char *value, size_t vlen) {
  if (t->rx.nheaders >= CR_TUNNEL_MAX_HEADERS)
    return CR_ELIMIT;
  return cr_http_msg_add_header_id(&t->rx, id, name, nlen, value, vlen);
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts = t->rx_ts;
  const char *n = (const char *)name, *v = (const char *)value;
  cr_http_hdr_t id;
  int64_t num;
  if (t->closing || ts == NULL || ts->id != frame->hd.stream_id || ts->rejected || t->rx_trailer)
    return 0;
  t->rx_bytes += namelen + valuelen + 32;
  if (t->rx_bytes > MAX_HEADER_LIST)
    return rx_reject(t, ts, NGHTTP2_REFUSED_STREAM, "header list too large");
  if (namelen > 0 && name[0] == ':') {
    unsigned bit = pseudo_bit(t->role, name, namelen);
    if (bit == 0 || (t->rx_pseudo & bit) || t->rx_regular)
      return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "bad pseudo-header");
    t->rx_pseudo |= bit;
    switch (bit) {
    case PS_METHOD:
      cr_http_msg_set_method(&t->rx, v, valuelen);
      break;
    case PS_PATH:
      if (valuelen == 0)
        return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "empty :path");
      cr_http_msg_set_target(&t->rx, v, valuelen);
      break;
    case PS_AUTHORITY:
      if (rx_add(t, CR_HDR_HOST, "Host", 4, v, valuelen) < 0)
        return rx_reject(t, ts, NGHTTP2_REFUSED_STREAM, "too many headers");
      break;
    case PS_SCHEME:
      if (valuelen == 0)
        return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "empty :scheme");
      break;
    case PS_STATUS:
      if (valuelen != 3 || parse_u64(value, valuelen, &num) < 0 || num < 100)
        return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "bad :status");
      t->rx.status = (int)num;
      break;
    }
    return 0;
  }
  t->rx_regular = 1;
  id = cr_http_hdr_id(n, namelen); /* nghttp2 has refused upper case in a name */
  if (id == CR_HDR_CONTENT_LENGTH) {
    if (parse_u64(value, valuelen, &num) < 0 || (t->rx.content_length >= 0 && t->rx.content_length != num))
      return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "bad content-length");
    t->rx.content_length = num;
    return 0;
  }
  if (id == CR_HDR_HOST) {
    if (t->rx_pseudo & PS_AUTHORITY)
      return 0; /* :authority wins (RFC 9113 8.3.1) */
    if (cr_http_msg_find_id(&t->rx, CR_HDR_HOST) != NULL)
      return rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "repeated host");
    n = "Host";
    namelen = 4;
  } else {
    /* nghttp2 already refuses these; dropping them again costs nothing */
    cr_http_header_t h = {.name = n, .value = v, .name_len = namelen, .value_len = valuelen, .id = (unsigned char)id};
    if (skip_on_send(&h))
      return 0;
  }
  if (rx_add(t, id, n, namelen, v, valuelen) < 0)
    return rx_reject(t, ts, NGHTTP2_REFUSED_STREAM, "too many headers");
  return 0;
}

static void on_headers_done(cr_tunnel_t *t, cr_tstream_t *ts, const nghttp2_frame *frame) {
  t->rx_ts = NULL;
  if (!t->rx_trailer) {
    if (t->role == CR_TUNNEL_AGENT) {
      int connect = t->rx.method && strcmp(t->rx.method, "CONNECT") == 0;
      unsigned need = connect ? (PS_METHOD | PS_AUTHORITY) : (PS_METHOD | PS_SCHEME | PS_PATH);
      if ((t->rx_pseudo & need) != need || (connect && (t->rx_pseudo & (PS_SCHEME | PS_PATH)))) {
        rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "missing pseudo-header");
        return;
      }
      if (connect) {
        const char *auth = cr_http_msg_get_id(&t->rx, CR_HDR_HOST);
        cr_http_msg_set_target(&t->rx, auth, strlen(auth));
      }
      t->rx.version_minor = 1;
      ts->head_seen = 1;
      ts->announced = 1;
      if (t->cbs.on_stream)
        t->cbs.on_stream(t, ts, &t->rx);
    } else {
      if (!(t->rx_pseudo & PS_STATUS)) {
        rx_reject(t, ts, NGHTTP2_PROTOCOL_ERROR, "missing :status");
        return;
      }
      if (t->rx.status < 200) {
        /* interim response: the final one follows (nghttp2 refuses END_STREAM on it) */
        t->rx.version_minor = 1;
        t->rx.content_length = -1;
        if (t->rx.status != 101 && ts->cbs.on_interim && !ts->local_reset)
          ts->cbs.on_interim(ts, &t->rx);
        return;
      }
      t->rx.version_minor = 1;
      ts->head_seen = 1;
      if (ts->cbs.on_head && !ts->local_reset)
        ts->cbs.on_head(ts, &t->rx);
    }
  }
  if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
    deliver_end(t, ts);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts;
  if (t->closing)
    return 0;
  switch (frame->hd.type) {
  case NGHTTP2_HEADERS:
    ts = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (ts != NULL && !ts->rejected && ts == t->rx_ts)
      on_headers_done(t, ts, frame);
    break;
  case NGHTTP2_DATA:
    ts = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (ts != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      deliver_end(t, ts);
    break;
  case NGHTTP2_RST_STREAM:
    ts = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (ts != NULL) {
      ts->peer_reset = 1;
      ts->rst_code = frame->rst_stream.error_code;
    }
    break;
  case NGHTTP2_SETTINGS:
    if (!(frame->hd.flags & NGHTTP2_FLAG_ACK) && !t->ready) {
      t->ready = 1;
      if (t->cbs.on_ready)
        t->cbs.on_ready(t);
    }
    break;
  case NGHTTP2_PING:
    if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
      if (t->ping_outstanding && t->opts.rtt)
        cr_metrics_hist_observe(t->opts.rtt, (double)(uv_hrtime() - t->ping_sent_ns) / 1e9);
      t->ping_outstanding = 0;
      uv_timer_stop(&t->ping_deadline);
    }
    break;
  case NGHTTP2_GOAWAY:
    if (!t->goaway_recv) {
      t->goaway_recv = 1;
      t->goaway_error = frame->goaway.error_code;
      if (t->cbs.on_goaway)
        t->cbs.on_goaway(t);
    }
    if (frame->goaway.error_code != NGHTTP2_NO_ERROR)
      request_close(t, CR_EPROTO, 0);
    else
      check_drained(t);
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts = nghttp2_session_get_stream_user_data(session, stream_id);
  /* The connection's share comes back at once, whatever the stream's owner does with the bytes. */
  nghttp2_session_consume_connection(session, len);
  if (t->closing || ts == NULL || !ts->announced || !ts->head_seen || ts->rejected || ts->local_reset ||
      ts->cbs.on_data == NULL) {
    /* nobody will consume these: give the stream's window back now too */
    nghttp2_session_consume_stream(session, stream_id, len);
    return 0;
  }
  ts->unconsumed += len;
  ts->cbs.on_data(ts, (const char *)data, len);
  return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts = nghttp2_session_get_stream_user_data(session, stream_id);
  int err;
  if (ts == NULL || t->closing)
    return 0; /* when closing, finish_close tells every stream */
  if (ts->local_reset)
    err = CR_ECANCELED;
  else if (ts->proto_error)
    err = CR_EPROTO;
  else if (ts->peer_reset)
    /* RST_STREAM(NO_ERROR) after a complete response only stops the rest of our body (RFC 9113 8.1) */
    err = ts->rst_code == NGHTTP2_NO_ERROR && ts->remote_ended ? 0 : UV_ECONNRESET;
  else if (error_code == NGHTTP2_NO_ERROR)
    err = 0;
  else if (error_code == NGHTTP2_REFUSED_STREAM)
    err = CR_ECLOSED; /* beyond the peer's GOAWAY last_stream_id: the tunnel went away under it */
  else
    err = CR_EPROTO;
  tstream_finish(t, ts, err);
  return 0;
}

static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame, int lib_error_code,
                             void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_tstream_t *ts;
  if (t->closing || frame->hd.type != NGHTTP2_HEADERS)
    return 0;
  ts = find_stream(t, frame->hd.stream_id);
  if (ts == NULL)
    return 0;
  if (lib_error_code != NGHTTP2_ERR_STREAM_CLOSING && lib_error_code != NGHTTP2_ERR_START_STREAM_NOT_ALLOWED &&
      lib_error_code != NGHTTP2_ERR_STREAM_CLOSED) {
    cr_log_debug("tunnel head not sent", "peer=%s stream=%d nghttp2=\"%s\"", t->transport->peer, ts->id,
                 nghttp2_strerror(lib_error_code));
    ts->proto_error = 1;
  }
  /* A request canceled or refused while still queued never opened a stream in nghttp2, so no
   * stream-close callback will come for it. */
  if (nghttp2_session_find_stream(session, frame->hd.stream_id) == NULL)
    tstream_finish(t, ts, ts->local_reset ? CR_ECANCELED : ts->proto_error ? CR_EPROTO : CR_ECLOSED);
  return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len, void *user_data) {
  cr_tunnel_t *t = user_data;
  cr_log_debug("tunnel nghttp2", "peer=%s detail=\"%.*s\"", t->transport->peer, (int)len, msg);
  return 0;
}

/* ---- heads out ---- */

static nghttp2_nv *nv_slot(cr_tunnel_t *t, size_t i) {
  if (i >= t->nv_cap) {
    t->nv_cap = t->nv_cap ? t->nv_cap * 2 : 32;
    t->nv = cr_realloc(t->nv, t->nv_cap * sizeof *t->nv);
  }
  return &t->nv[i];
}

static void nv_set(cr_tunnel_t *t, size_t i, const char *name, size_t nlen, const char *value, size_t vlen) {
  nghttp2_nv *nv = nv_slot(t, i);
  nv->name = (uint8_t *)name;
  nv->namelen = nlen;
  nv->value = (uint8_t *)value;
  nv->valuelen = vlen;
  nv->flags = NGHTTP2_NV_FLAG_NONE;
}

#define NV_LIT(t, i, lit, v, vlen) nv_set(t, i, lit, sizeof(lit) - 1, v, vlen)

/* Values that are new on (nearly) every message: indexing them in the HPACK dynamic table would only
 * evict the entries that do repeat (and cost an insert and an eviction each time). */
static int never_repeats(const cr_http_header_t *h) {
  return ((CR_HDR_BIT(CR_HDR_X_REQUEST_ID) | CR_HDR_BIT(CR_HDR_FORWARDED) | CR_HDR_BIT(CR_HDR_DATE)) &
          CR_HDR_BIT(h->id)) != 0;
}

/* Fills t->nv with the regular headers and content-length, after `n` pseudo-headers. nghttp2
 * copies and lower-cases names when the frame is submitted, so t->nv and clbuf only need to live
 * until then. */
static int nv_headers(cr_tunnel_t *t, const cr_http_msg_t *m, size_t n, char *clbuf, size_t cllen, size_t *out) {
  for (size_t i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *h = &m->headers[i];
    if (skip_on_send(h))
      continue;
    if (!cr_http_header_name_valid(h) || !cr_http_field_value_valid(h->value, h->value_len))
      return CR_EPROTO;
    nv_set(t, n++, h->name, h->name_len, h->value, h->value_len);
    if (never_repeats(h))
      nv_slot(t, n - 1)->flags = NGHTTP2_NV_FLAG_NO_INDEX;
  }
  if (m->content_length >= 0) {
    size_t len;
    assert(cllen >= 21); /* cr_u64_dec writes up to 20 digits and a NUL */
    len = cr_u64_dec(clbuf, (uint64_t)m->content_length);
    NV_LIT(t, n++, "content-length", clbuf, len);
  }
  *out = n;
  return 0;
}

static int nv_request(cr_tunnel_t *t, const cr_http_msg_t *m, char *clbuf, size_t cllen, size_t *out) {
  const char *host = cr_http_msg_get_id(m, CR_HDR_HOST);
  size_t n = 0;
  if (m->method == NULL || !cr_http_token_valid(m->method, strlen(m->method)))
    return CR_EPROTO;
  NV_LIT(t, n++, ":method", m->method, strlen(m->method));
  if (strcmp(m->method, "CONNECT") == 0) {
    const char *auth = m->target && m->target[0] && m->target[0] != '/' ? m->target : host;
    if (auth == NULL || !cr_http_field_value_valid(auth, strlen(auth)))
      return CR_EPROTO;
    NV_LIT(t, n++, ":authority", auth, strlen(auth));
  } else {
    /* nghttp2 (RFC 9113 8.3.1) refuses a request with neither :authority nor host */
    if (host == NULL || m->target == NULL || m->target[0] == '\0' || !cr_http_field_value_valid(host, strlen(host)) ||
        !cr_http_field_value_valid(m->target, strlen(m->target)))
      return CR_EPROTO;
    NV_LIT(t, n++, ":scheme", "https", 5);
    NV_LIT(t, n++, ":authority", host, strlen(host));
    NV_LIT(t, n++, ":path", m->target, strlen(m->target));
  }
  return nv_headers(t, m, n, clbuf, cllen, out);
}

/* ---- liveness ---- */

static void ping_expired(uv_timer_t *h) {
  cr_tunnel_t *t = h->data;
  cr_log_info("tunnel ping timeout", "peer=%s timeout_ms=%llu", t->transport->peer,
              (unsigned long long)t->opts.ping_timeout_ms);
  request_close(t, UV_ETIMEDOUT, 0);
}

static void ping_tick(uv_timer_t *h) {
  cr_tunnel_t *t = h->data;
  if (t->closing || t->ping_outstanding)
    return; /* the deadline of the PING in flight decides */
  if (nghttp2_submit_ping(t->session, NGHTTP2_FLAG_NONE, NULL) != 0)
    return;
  t->ping_outstanding = 1;
  t->ping_sent_ns = uv_hrtime(); /* nghttp2 sends it at the flush scheduled below, this turn */
  uv_timer_start(&t->ping_deadline, ping_expired, t->opts.ping_timeout_ms, 0);
  schedule_flush(t);
}

/* ---- public API ---- */

cr_tunnel_t *cr_tunnel_new(cr_stream_t *transport, const cr_tunnel_opts_t *opts, const cr_tunnel_callbacks_t *cbs,
                           void *data) {
  cr_tunnel_t *t = cr_calloc(1, sizeof *t);
  nghttp2_session_callbacks *ncb;
  nghttp2_option *nopt;
  t->transport = transport;
  t->loop = transport->loop;
  transport->data = t;
  t->opts = *opts;
  t->role = opts->role;
  cr_freelist_init(&t->free_streams, sizeof(cr_tstream_t), MAX_FREE_STREAMS);
  if (cbs)
    t->cbs = *cbs;
  t->data = data;
  if (t->opts.stream_window == 0)
    t->opts.stream_window = DEFAULT_STREAM_WINDOW;
  if (t->opts.connection_window == 0)
    t->opts.connection_window = DEFAULT_CONN_WINDOW;
  t->opts.stream_window = CR_MIN(t->opts.stream_window, (uint32_t)MAX_WINDOW);
  t->opts.connection_window = CR_MIN(t->opts.connection_window, (uint32_t)MAX_WINDOW);
  if (t->opts.send_high_water == 0)
    t->opts.send_high_water = DEFAULT_HIGH_WATER;
  if (t->opts.max_streams == 0)
    t->opts.max_streams = DEFAULT_MAX_STREAMS;
  if (t->opts.ping_timeout_ms == 0)
    t->opts.ping_timeout_ms = t->opts.ping_interval_ms;
  /* Above high water a producer gets 1 but its bytes are still kept; only one that ignores that
   * for long hits this cap (CR_ELIMIT). */
  t->send_max = t->opts.send_high_water * 4 + 64 * 1024;
  cr_queue_init(&t->streams);
  cr_queue_init(&t->free_outbufs);
  cr_http_msg_init(&t->rx, CR_TUNNEL_MAX_HEADERS + CR_TUNNEL_HEAD_ROOM);

  uv_idle_init(t->loop, &t->idle);
  uv_timer_init(t->loop, &t->ping_timer);
  uv_timer_init(t->loop, &t->ping_deadline);
  uv_timer_init(t->loop, &t->drain_timer);
  t->idle.data = t->ping_timer.data = t->ping_deadline.data = t->drain_timer.data = t;

  if (nghttp2_session_callbacks_new(&ncb) != 0 || nghttp2_option_new(&nopt) != 0) {
    fprintf(stderr, "ccrelay: out of memory\n");
    abort();
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(ncb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(ncb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(ncb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ncb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(ncb, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(ncb, on_frame_not_send);
  nghttp2_session_callbacks_set_send_data_callback(ncb, send_data_cb);
  nghttp2_session_callbacks_set_error_callback2(ncb, on_error);
  nghttp2_option_set_no_auto_window_update(nopt, 1);
  /* closed streams are kept only for RFC 7540 priorities, which we do not use */
  nghttp2_option_set_no_closed_streams(nopt, 1);
  if (t->role == CR_TUNNEL_AGENT) {
    if (nghttp2_session_server_new2(&t->session, ncb, t, nopt) != 0)
      t->session = NULL;
  } else {
    if (nghttp2_session_client_new2(&t->session, ncb, t, nopt) != 0)
      t->session = NULL;
  }
  nghttp2_session_callbacks_del(ncb);
  nghttp2_option_del(nopt);
  if (t->session == NULL) {
    fprintf(stderr, "ccrelay: out of memory\n");
    abort();
  }
  return t;
}

int cr_tunnel_start(cr_tunnel_t *t) {
  nghttp2_settings_entry iv[4];
  size_t n = 0;
  int r;
  if (t->started || t->closing)
    return CR_EPROTO;
  if (t->role == CR_TUNNEL_AGENT) {
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, t->opts.max_streams};
  } else {
    iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
  }
  iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, t->opts.stream_window};
  iv[n++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST};
  if (nghttp2_submit_settings(t->session, NGHTTP2_FLAG_NONE, iv, n) != 0)
    return CR_EPROTO;
  if (t->opts.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE &&
      nghttp2_session_set_local_window_size(t->session, NGHTTP2_FLAG_NONE, 0, (int32_t)t->opts.connection_window) != 0)
    return CR_EPROTO;
  r = cr_stream_read_start(t->transport, on_read);
  if (r < 0)
    return r;
  t->started = 1;
  t->reading = 1;
  if (t->opts.ping_interval_ms)
    uv_timer_start(&t->ping_timer, ping_tick, t->opts.ping_interval_ms, t->opts.ping_interval_ms);
  schedule_flush(t);
  return 0;
}

const char *cr_tunnel_error_detail(const cr_tunnel_t *t) { return t->error_detail; }

void *cr_tunnel_data(const cr_tunnel_t *t) { return t->data; }

cr_stream_t *cr_tunnel_transport(const cr_tunnel_t *t) { return t->transport; }

size_t cr_tunnel_nstreams(const cr_tunnel_t *t) { return t->nstreams; }

int cr_tunnel_usable(const cr_tunnel_t *t) {
  return t->started && !t->closing && !t->goaway_sent && !t->goaway_recv && !t->ids_exhausted;
}

static void drain_expired(uv_timer_t *h) {
  cr_tunnel_t *t = h->data;
  cr_log_debug("tunnel drain deadline", "peer=%s streams=%zu", t->transport->peer, t->nstreams);
  request_close(t, 0, 1);
}

void cr_tunnel_shutdown(cr_tunnel_t *t, uint64_t deadline_ms) {
  if (t->closing)
    return;
  if (!t->started) {
    request_close(t, 0, 0);
    return;
  }
  if (!t->goaway_sent) {
    int32_t last = t->role == CR_TUNNEL_AGENT ? nghttp2_session_get_last_proc_stream_id(t->session) : 0;
    t->goaway_sent = 1;
    nghttp2_submit_goaway(t->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
    uv_timer_start(&t->drain_timer, drain_expired, deadline_ms, 0);
    schedule_flush(t);
  }
  check_drained(t);
}

void cr_tunnel_close(cr_tunnel_t *t, int error) { request_close(t, error, 0); }

cr_tstream_t *cr_tunnel_open_stream(cr_tunnel_t *t, const cr_http_msg_t *head, int has_body,
                                    const cr_tstream_callbacks_t *cbs, void *data, int *err) {
  char clbuf[24];
  size_t n;
  nghttp2_data_provider prd;
  cr_tstream_t *ts;
  int32_t id;
  int r;
  if (t->role != CR_TUNNEL_GATEWAY) {
    *err = CR_EPROTO;
    return NULL;
  }
  if (!cr_tunnel_usable(t)) {
    *err = CR_ENO_TUNNEL;
    return NULL;
  }
  r = nv_request(t, head, clbuf, sizeof clbuf, &n);
  if (r < 0) {
    *err = r;
    return NULL;
  }
  ts = tstream_new(t, 0);
  ts->announced = 1;
  if (cbs)
    ts->cbs = *cbs;
  ts->data = data;
  ts->ended_local = !has_body;
  prd.source.ptr = ts;
  prd.read_callback = data_read_cb;
  id = nghttp2_submit_request(t->session, NULL, t->nv, n, has_body ? &prd : NULL, ts);
  if (id < 0) {
    tstream_free(t, ts);
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      t->ids_exhausted = 1;
      *err = CR_ENO_TUNNEL;
    } else {
      *err = CR_EPROTO;
    }
    return NULL;
  }
  ts->id = id;
  schedule_flush(t);
  *err = 0;
  return ts;
}

void cr_tstream_set_callbacks(cr_tstream_t *ts, const cr_tstream_callbacks_t *cbs, void *data) {
  ts->cbs = *cbs;
  ts->data = data;
}

int cr_tstream_respond(cr_tstream_t *ts, const cr_http_msg_t *head, int has_body) {
  cr_tunnel_t *t = ts->t;
  char status[4], clbuf[24];
  nghttp2_data_provider prd;
  size_t n = 0;
  int r;
  /* a head sent here is the final one: interim (1xx) heads go by cr_tstream_respond_interim */
  if (t->role != CR_TUNNEL_AGENT || ts->responded || head->status < 200 || head->status > 999)
    return CR_EPROTO;
  if (t->closing || ts->local_reset)
    return CR_ECLOSED;
  status[0] = (char)('0' + head->status / 100);
  status[1] = (char)('0' + head->status / 10 % 10);
  status[2] = (char)('0' + head->status % 10);
  status[3] = '\0';
  NV_LIT(t, n++, ":status", status, 3);
  r = nv_headers(t, head, n, clbuf, sizeof clbuf, &n);
  if (r < 0)
    return r;
  prd.source.ptr = ts;
  prd.read_callback = data_read_cb;
  if (nghttp2_submit_response(t->session, ts->id, t->nv, n, has_body ? &prd : NULL) != 0)
    return CR_EPROTO;
  ts->responded = 1;
  if (!has_body)
    ts->ended_local = 1;
  schedule_flush(t);
  return 0;
}

int cr_tstream_respond_interim(cr_tstream_t *ts, const cr_http_msg_t *head) {
  cr_tunnel_t *t = ts->t;
  cr_http_msg_t m = *head; /* read only: a view without the length a 1xx must not carry */
  char status[4], clbuf[24];
  size_t n = 0;
  int r;
  if (t->role != CR_TUNNEL_AGENT || ts->responded || head->status < 100 || head->status > 199 ||
      head->status == 101)
    return CR_EPROTO;
  if (t->closing || ts->local_reset)
    return CR_ECLOSED;
  m.content_length = -1;
  status[0] = (char)('0' + head->status / 100);
  status[1] = (char)('0' + head->status / 10 % 10);
  status[2] = (char)('0' + head->status % 10);
  status[3] = '\0';
  NV_LIT(t, n++, ":status", status, 3);
  r = nv_headers(t, &m, n, clbuf, sizeof clbuf, &n);
  if (r < 0)
    return r;
  /* Without END_STREAM: the final head (cr_tstream_respond) follows on the same stream. */
  if (nghttp2_submit_headers(t->session, NGHTTP2_FLAG_NONE, ts->id, NULL, t->nv, n, NULL) < 0)
    return CR_EPROTO;
  schedule_flush(t);
  return 0;
}

int cr_tstream_write(cr_tstream_t *ts, const char *data, size_t len) {
  cr_tunnel_t *t = ts->t;
  int r;
  if (t->closing || ts->local_reset)
    return CR_ECLOSED;
  if (ts->ended_local)
    return CR_EPROTO;
  if (len) {
    r = sring_append(&ts->sbuf, data, len, t->send_max);
    if (r < 0)
      return r;
    resume_if_deferred(t, ts);
  }
  if (send_pending(ts) >= t->opts.send_high_water) {
    ts->want_writable = 1;
    return 1;
  }
  return 0;
}

int cr_tstream_end(cr_tstream_t *ts) {
  cr_tunnel_t *t = ts->t;
  if (t->closing || ts->local_reset)
    return CR_ECLOSED;
  if (ts->ended_local)
    return 0;
  ts->ended_local = 1;
  resume_if_deferred(t, ts);
  return 0;
}

void cr_tstream_reset(cr_tstream_t *ts) {
  cr_tunnel_t *t = ts->t;
  if (ts->local_reset)
    return;
  ts->local_reset = 1;
  if (t->closing || t->session == NULL)
    return;
  nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, ts->id, NGHTTP2_CANCEL);
  schedule_flush(t);
}

void cr_tstream_abort(cr_tstream_t *ts) {
  cr_tunnel_t *t = ts->t;
  if (ts->local_reset)
    return;
  /* Without bytes queued, or without a data provider to frame them yet (an agent that has not
   * responded), there is nothing to send first. */
  if (send_pending(ts) == 0 || (t->role == CR_TUNNEL_AGENT && !ts->responded) || t->closing ||
      t->session == NULL) {
    cr_tstream_reset(ts);
    return;
  }
  ts->local_reset = 1;
  ts->reset_after_send = 1;
  resume_if_deferred(t, ts);
}

void cr_tstream_consume(cr_tstream_t *ts, size_t n) {
  cr_tunnel_t *t = ts->t;
  if (n > ts->unconsumed)
    n = ts->unconsumed;
  if (n == 0 || t->closing || t->session == NULL)
    return;
  ts->unconsumed -= n;
  nghttp2_session_consume_stream(t->session, ts->id, n);
  schedule_flush(t);
}

void *cr_tstream_data(const cr_tstream_t *ts) { return ts->data; }

cr_tunnel_t *cr_tstream_tunnel(const cr_tstream_t *ts) { return ts->t; }

int32_t cr_tstream_id(const cr_tstream_t *ts) { return ts->id; }

const char *cr_tunnel_nghttp2_version(void) { return nghttp2_version(0)->version_str; }

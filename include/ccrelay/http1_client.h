/* SPDX-License-Identifier: Apache-2.0 */
/* One HTTP/1.1 exchange (a request, its response) over any cr_stream_t: the head and a bounded,
 * flow-controlled body go out while the response is parsed (http1.h) and delivered with pause and
 * resume. It knows nothing of pools or TLS: whoever attaches a stream gets it back through the
 * release callback, saying whether it may carry another exchange.
 *
 * Callbacks never fire from inside a cr_h1client_* call: what would (a failure, held bytes after a
 * resume) is deferred to a later loop turn through the context's queue.
 *
 * Prose in on_error names the server the way the context was told ("127.0.0.1:9443 (server name
 * localhost)") and the phase that failed ("waiting for response head from ..."). */
#ifndef CCRELAY_HTTP1_CLIENT_H
#define CCRELAY_HTTP1_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ccrelay/common.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/stream.h"

typedef struct cr_h1client_ctx cr_h1client_ctx_t;

/* Interim responses one exchange passes on: a server that keeps sending 1xx cannot make the relay
 * queue heads without bound. */
#define CR_H1CLIENT_INTERIM_MAX 16
typedef struct cr_h1client cr_h1client_t;

typedef struct cr_h1client_ctx_opts {
  const char *name;             /* for log lines (a route's name) */
  const char *peer;             /* the server, as error prose names it */
  const char *peer_log;         /* the server, as log lines name it ("127.0.0.1:9443") */
  uint64_t response_timeout_ms; /* request fully sent -> response head; and max gap between body reads.
                                   0: 30 s */
  size_t max_header_size;       /* response head limit; 0: 16 KiB */
  size_t max_header_fields;     /* response head field limit; 0: the codec's default (100) */
} cr_h1client_ctx_opts_t;

/* What exchanges with one server share: timeouts, limits, the deferral queue, recycled exchanges. */
cr_h1client_ctx_t *cr_h1client_ctx_new(uv_loop_t *loop, const cr_h1client_ctx_opts_t *opts);
/* Exchanges still attached to a stream (finishing a request body after their response) are aborted:
 * their streams are released as not reusable. Live exchanges must have been canceled or have ended
 * first. The memory goes on a later loop turn. */
void cr_h1client_ctx_free(cr_h1client_ctx_t *ctx);
/* Frees the exchanges kept for the next burst (an idle process's memory trim). */
void cr_h1client_ctx_release_caches(cr_h1client_ctx_t *ctx);

typedef struct cr_h1client_callbacks {
  /* The final response head, valid only during the call; the parser's own, which the callee may
   * rewrite in place (its fields no longer matter to the exchange). */
  void (*on_head)(cr_h1client_t *c, cr_http_msg_t *head);
  /* Response body bytes (de-chunked), valid only during the call. */
  void (*on_body)(cr_h1client_t *c, const char *data, size_t len);
  /* The response is complete. Final: c is not to be used after this returns. */
  void (*on_end)(cr_h1client_t *c);
  /* The exchange failed. Final, like on_end. err: UV_ETIMEDOUT (response timeout), CR_EHTTP_PARSE (bad
   * response), a stream error (UV_EOF, UV_ECONNRESET, CR_ETLS...), or what cr_h1client_fail was given.
   * May fire after on_head (a body cut short). */
  void (*on_error)(cr_h1client_t *c, int err, const char *detail);
  /* The request body buffer drained below its low-water mark after a write returned 1. */
  void (*on_writable)(cr_h1client_t *c);
  /* Optional: a 1xx interim response head (100 Continue, 103 Early Hints...; never 101), in the order
   * received and always before on_head; possibly while the request body is still being sent (the
   * server's answer to Expect: 100-continue). head is valid only during the call. At most
   * CR_H1CLIENT_INTERIM_MAX per exchange are passed on; later ones are dropped. */
  void (*on_interim)(cr_h1client_t *c, const cr_http_msg_t *head);
} cr_h1client_callbacks_t;

/* The client is done with s for good: it reads and writes it no more, has stopped reading it, and has
 * no write in flight on it when reusable is 1. reusable 1: s sits at a message boundary and may carry
 * another exchange; 0: close it. Fires once per attached stream, possibly before on_end (so that on_end
 * may already reuse s), or after it (the rest of a request answered early is still being sent). */
typedef void (*cr_h1client_release_cb)(cr_stream_t *s, int reusable, void *arg);

/* Starts an exchange that waits for a stream. head must be stripped of hop-by-hop headers; its framing
 * comes from cr_http_body_framing as for a message of a stream-delimited carrier: Content-Length when
 * head->content_length >= 0, else chunked when has_body, else none ("Content-Length: 0" for a POST,
 * PUT or PATCH without body). head is rewritten in place to what is sent (HTTP/1.1, framing headers)
 * and serialised before the call returns. Returns 0, or the error that makes the head unsendable
 * (on_error then follows, and the exchange needs no stream); *out is set either way. */
int cr_h1client_new(cr_h1client_ctx_t *ctx, cr_http_msg_t *head, int has_body, const cr_h1client_callbacks_t *cbs,
                    void *data, cr_h1client_t **out);
/* Gives the exchange its stream; head and body go out from here (with the body bytes written in the same
 * loop turn when the body is still open). reused: s served an earlier exchange, which error prose
 * mentions for a close. The client owns s's data field and read callback until release fires. */
void cr_h1client_attach(cr_h1client_t *c, cr_stream_t *s, int reused, cr_h1client_release_cb release, void *arg);
/* The exchange cannot go on (no stream could be had): on_error(err, detail) follows on a later loop
 * turn, unless the exchange already failed or ended. */
void cr_h1client_fail(cr_h1client_t *c, int err, const char *fmt, ...) CR_PRINTF(3, 4);

/* Request body bytes (copied). 0 below the high-water mark, 1 when the caller should pause until
 * on_writable, or a negative error: CR_EPROTO past the head's Content-Length, UV_EINVAL after the
 * end, CR_ELIMIT when the caller kept writing far beyond the high-water mark. Once on_error is due
 * the bytes are dropped and 0 is returned. Writing exactly Content-Length bytes ends the body. */
int cr_h1client_write(cr_h1client_t *c, const char *data, size_t len);
/* The request body is complete (a no-op when it already is). CR_EPROTO when fewer bytes than the
 * Content-Length were written. */
int cr_h1client_end(cr_h1client_t *c);
/* Stops (1) or resumes (0) delivery of response bytes; effective at once, also from inside on_head or
 * on_body. Bytes already received are held and delivered after resume, on a later loop turn. The
 * response timeout does not run while paused. */
void cr_h1client_pause(cr_h1client_t *c, int paused);
/* Abandons the exchange: no callback fires afterwards; an attached stream is released as not reusable
 * (from inside this call). A no-op from inside on_end or on_error. */
void cr_h1client_cancel(cr_h1client_t *c);
void *cr_h1client_data(const cr_h1client_t *c);
/* Request bytes (head and body as framed) whose write to the stream completed, so far. While
 * cr_h1client_write() reports the buffer full, a count that stays put means the server reads nothing;
 * it moves in pieces of at most 64 KiB. */
uint64_t cr_h1client_sent(const cr_h1client_t *c);

#endif

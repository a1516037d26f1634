/* SPDX-License-Identifier: Apache-2.0 */
/* Passthrough services: the caller's TLS bytes go untouched over a tunnel stream to the agent (see
 * gateway_internal.h). The gateway never holds more than one stream window of the upstream's bytes
 * (they are consumed from the stream only once they reached the caller's socket) and never reads the
 * caller while the stream's send buffer is above its high-water mark. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/tls_sni.h"
#include "gateway_internal.h"

struct cr__gw_pt {
  cr_tstream_t *ts;        /* NULL once closed or abandoned */
  cr_stream_t *caller;
  cr__gw_pt_owner_t owner;
  uint64_t from_caller;
  uint64_t to_caller;
  unsigned writes;         /* writes and the shutdown given to the caller's stream, callbacks due */
  int status;              /* the agent's answer to the CONNECT; 0 until it came */
  unsigned caller_ended : 1; /* the caller's FIN went on as END_STREAM */
  unsigned stream_ended : 1; /* the agent's END_STREAM arrived; the caller gets our FIN */
  unsigned shut_done : 1;    /* the caller's shutdown completed */
  unsigned ts_closed : 1;
  unsigned finished : 1;     /* done was called (or is no longer wanted) */
  unsigned freed : 1;        /* the owner let go; freed with the last callback */
  unsigned paused : 1;
  char why[160];
};

typedef struct pt_write {
  cr__gw_pt_t *pt;
  size_t len;
  char data[]; /* the caller's TCP stream keeps the caller's bytes until its callback */
} pt_write_t;

static void maybe_free(cr__gw_pt_t *pt) {
  if (pt->freed && pt->writes == 0)
    free(pt);
}

static void finish(cr__gw_pt_t *pt, const char *fmt, ...) CR_PRINTF(2, 3);
static void finish(cr__gw_pt_t *pt, const char *fmt, ...) {
  if (pt->finished || pt->freed)
    return;
  pt->finished = 1;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pt->why, sizeof pt->why, fmt, ap);
    va_end(ap);
  }
  pt->owner.done(pt->owner.arg, fmt ? pt->why : NULL);
}

/* Over once both directions ended: the stream closed cleanly and the caller got our FIN. */
static void check_done(cr__gw_pt_t *pt) {
  if (pt->ts_closed && pt->shut_done)
    finish(pt, NULL);
}

static void caller_write_done(cr_stream_t *s, int status, void *arg) {
  pt_write_t *w = arg;
  cr__gw_pt_t *pt = w->pt;
  (void)s;
  /* writes counts this one until the end: a finish here may make the owner free the relay */
  if (!pt->freed) {
    if (status < 0)
      finish(pt, "writing to the caller: %s", cr_strerror(status));
    else if (pt->ts) {
      cr_tstream_consume(pt->ts, w->len); /* the window reopens only for bytes the caller took */
      pt->owner.activity(pt->owner.arg);
    }
  }
  free(w);
  pt->writes--;
  maybe_free(pt);
}

static void caller_shutdown_done(cr_stream_t *s, int status, void *arg) {
  cr__gw_pt_t *pt = arg;
  (void)s;
  if (!pt->freed) {
    if (status < 0) {
      finish(pt, "ending the caller's direction: %s", cr_strerror(status));
    } else {
      pt->shut_done = 1;
      check_done(pt);
    }
  }
  pt->writes--;
  maybe_free(pt);
}

static void ts_on_head(cr_tstream_t *ts, cr_http_msg_t *head) {
  cr__gw_pt_t *pt = cr_tstream_data(ts);
  pt->status = head->status;
  if (head->status != 200) {
    const char *why = cr_http_msg_get_id(head, CR_HDR_X_CCRELAY_ERROR);
    finish(pt, "the agent answered %d%s%s", head->status, why ? ": " : "", why ? why : "");
  }
}

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  cr__gw_pt_t *pt = cr_tstream_data(ts);
  pt_write_t *w;
  uv_buf_t b;
  int r;
  if (pt->status != 200 || pt->finished) {
    cr_tstream_consume(ts, len);
    return;
  }
  w = cr_malloc(sizeof *w + len);
  w->pt = pt;
  w->len = len;
  memcpy(w->data, data, len);
  b = uv_buf_init(w->data, (unsigned)len);
  r = cr_stream_write(pt->caller, &b, 1, caller_write_done, w);
  if (r < 0) {
    free(w);
    finish(pt, "writing to the caller: %s", cr_strerror(r));
    return;
  }
  pt->writes++;
  pt->to_caller += len;
}

static void ts_on_end(cr_tstream_t *ts) {
  cr__gw_pt_t *pt = cr_tstream_data(ts);
  int r;
  if (pt->finished || pt->stream_ended)
    return;
  pt->stream_ended = 1;
  /* The upstream's FIN: the caller gets ours after the bytes before it, and may still send. */
  r = cr_stream_shutdown(pt->caller, caller_shutdown_done, pt);
  if (r < 0) {
    finish(pt, "ending the caller's direction: %s", cr_strerror(r));
    return;
  }
  pt->writes++;
}

static void ts_on_writable(cr_tstream_t *ts) {
  cr__gw_pt_t *pt = cr_tstream_data(ts);
  if (pt->paused && !pt->finished) {
    pt->paused = 0;
    pt->owner.resume_caller(pt->owner.arg);
  }
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  cr__gw_pt_t *pt = cr_tstream_data(ts);
  pt->ts = NULL;
  pt->ts_closed = 1;
  if (error != 0)
    finish(pt, "tunnel stream: %s", cr_strerror(error));
  else if (pt->status != 200)
    finish(pt, "the agent ended the stream without opening the connection");
  else
    check_done(pt);
}

static const cr_tstream_callbacks_t pt_cbs = {
    .on_head = ts_on_head,
    .on_data = ts_on_data,
    .on_end = ts_on_end,
    .on_writable = ts_on_writable,
    .on_close = ts_on_close,
};

static void detached_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  (void)data;
  cr_tstream_consume(ts, len);
}
static void detached_on_head(cr_tstream_t *ts, cr_http_msg_t *head) { (void)ts, (void)head; }
static void detached_on_event(cr_tstream_t *ts) { (void)ts; }
static void detached_on_close(cr_tstream_t *ts, int error) { (void)ts, (void)error; }
static const cr_tstream_callbacks_t detached_cbs = {
    .on_head = detached_on_head,
    .on_data = detached_on_data,
    .on_end = detached_on_event,
    .on_writable = detached_on_event,
    .on_close = detached_on_close,
};

/* Caller bytes go into the stream; a full send buffer stops the caller's reads until on_writable. */
static int to_stream(cr__gw_pt_t *pt, const char *data, size_t len) {
  int r = cr_tstream_write(pt->ts, data, len);
  if (r < 0)
    return r;
  pt->from_caller += len;
  if (r == 1 && !pt->paused) {
    pt->paused = 1;
    pt->owner.pause_caller(pt->owner.arg);
  }
  return 0;
}

int cr__gw_pt_start(cr_tunnel_t *t, cr_stream_t *caller, const char *sni, const char *first, size_t len,
                    const cr__gw_pt_owner_t *owner, cr__gw_pt_t **out) {
  cr__gw_pt_t *pt;
  cr_http_msg_t head;
  char authority[CR_TLS_SNI_NAME_MAX + 8];
  int err = 0, r;
  *out = NULL;
  snprintf(authority, sizeof authority, "%s:443", sni);
  cr_http_msg_init(&head, 4);
  cr_http_msg_set_method(&head, "CONNECT", 7);
  cr_http_msg_set_target(&head, authority, strlen(authority));
  pt = cr_calloc(1, sizeof *pt);
  pt->caller = caller;
  pt->owner = *owner;
  pt->ts = cr_tunnel_open_stream(t, &head, 1, &pt_cbs, pt, &err);
  cr_http_msg_free(&head);
  if (pt->ts == NULL) {
    free(pt);
    return err < 0 ? err : CR_EPROTO;
  }
  r = len > 0 ? to_stream(pt, first, len) : 0;
  if (r < 0) {
    cr_tstream_set_callbacks(pt->ts, &detached_cbs, NULL);
    cr_tstream_reset(pt->ts);
    free(pt);
    return r;
  }
  *out = pt;
  return 0;
}

void cr__gw_pt_caller_read(cr__gw_pt_t *pt, ssize_t nread, const char *data) {
  int r;
  if (pt->finished || pt->ts == NULL)
    return;
  if (nread > 0) {
    if ((r = to_stream(pt, data, (size_t)nread)) < 0) {
      finish(pt, "tunnel stream: %s", cr_strerror(r));
      return;
    }
    pt->owner.activity(pt->owner.arg);
    return;
  }
  if (nread == UV_EOF && !pt->caller_ended) {
    pt->caller_ended = 1; /* the caller's FIN: the upstream's write side ends, it may still answer */
    if ((r = cr_tstream_end(pt->ts)) < 0)
      finish(pt, "tunnel stream: %s", cr_strerror(r));
    return;
  }
  finish(pt, "caller connection: %s", cr_strerror((int)nread));
}

void cr__gw_pt_counts(const cr__gw_pt_t *pt, uint64_t *from_caller, uint64_t *to_caller) {
  *from_caller = pt->from_caller;
  *to_caller = pt->to_caller;
}

void cr__gw_pt_free(cr__gw_pt_t *pt) {
  if (pt == NULL)
    return;
  if (pt->ts) {
    cr_tstream_set_callbacks(pt->ts, &detached_cbs, NULL);
    cr_tstream_reset(pt->ts);
    pt->ts = NULL;
  }
  pt->freed = 1;
  maybe_free(pt);
}

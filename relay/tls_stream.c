/* A TLS stream layered on any cr_stream_t. OpenSSL talks to two memory BIOs; the lower stream
 * (libuv) moves the ciphertext: lower reads are written into the read BIO, and whatever OpenSSL
 * leaves in the write BIO goes out as one lower write per call.
 *
 * Memory: the write BIO's buffer is handed to the lower write as is (no copy) and a fresh empty BIO
 * takes its place; the read BIO is replaced once drained; plaintext is delivered from one static
 * buffer. An idle connection therefore holds no I/O buffer at all.
 *
 * Batching: user writes are encrypted at once but their ciphertext leaves in one lower write per
 * loop turn (a prepare handle flushes before the loop blocks), so a response head and body written
 * separately cost one system call, not two. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/tls.h"
#include "tls_internal.h"

/* One full TLS record of plaintext. Delivered synchronously and never kept, so one buffer serves
 * every connection of the (single-threaded) process. */
static char plain_buf[16 * 1024];

typedef struct completion {
  cr_stream_write_cb cb;
  void *arg;
} completion_t;

typedef struct tls_stream {
  cr_stream_t base;
  cr_stream_t *lower;
  cr_tls_ctx_t *ctx;
  SSL *ssl;
  BIO *rbio; /* ciphertext from the peer, owned by ssl */
  BIO *wbio; /* ciphertext for the peer, owned by ssl */
  cr__tls_notes_t notes;
  cr_tls_handshake_cb hs_cb;
  cr_stream_read_cb read_cb;
  cr_stream_close_cb close_cb;
  uv_idle_t idle;        /* defers work that must not run inside the caller's call */
  uv_prepare_t prep;     /* flushes batched writes before the loop next blocks */
  completion_t *pend;    /* user writes encrypted but not yet handed to the lower stream */
  unsigned npend;
  unsigned pend_cap;
  size_t pend_plain;
  int flush_err;         /* a failed lower write: pending user writes complete with it */
  size_t write_queued;   /* plaintext bytes whose ciphertext the lower stream has not written */
  int lower_end;         /* the lower stream's UV_EOF or error, once it reported one */
  int hs_result;         /* handshake outcome waiting for the idle callback to report it */
  unsigned pending_closes;
  unsigned hs_started : 1;
  unsigned hs_finished : 1;
  unsigned hs_report : 1; /* hs_result is waiting */
  unsigned established : 1;
  unsigned reading : 1;    /* the user wants data */
  unsigned lower_reading : 1;
  unsigned read_done : 1;  /* EOF or error delivered */
  unsigned fatal : 1;      /* OpenSSL failed: never call it again except to free */
  unsigned shut : 1;       /* shutdown was called */
  unsigned closing : 1;
  unsigned idle_init : 1;
  unsigned prep_init : 1;
  unsigned need_name : 1;  /* a client created without a server name */
  char alpn[64];
  char err[512];
} tls_stream_t;

/* One lower write: the ciphertext it carries and the user writes it completes. */
typedef struct flush {
  tls_stream_t *t;
  BUF_MEM *mem; /* NULL for an empty write */
  size_t plain;
  unsigned n;
  completion_t *items; /* inline_items, or an array for longer batches */
  completion_t inline_items[4];
} flush_t;

typedef struct shutdown_req {
  tls_stream_t *t;
  cr_stream_write_cb cb;
  void *arg;
} shutdown_req_t;

static const cr_stream_vtbl_t tls_vtbl;

static void pump(tls_stream_t *t);
static void prepare_cb(uv_prepare_t *h);

static void set_err(tls_stream_t *t, const char *fmt, ...) CR_PRINTF(2, 3);
static void set_err(tls_stream_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t->err, sizeof t->err, fmt, ap);
  va_end(ap);
}

/* ---- ciphertext out ---- */

static void flush_done(cr_stream_t *lower, int status, void *arg) {
  flush_t *f = arg;
  tls_stream_t *t = f->t;
  (void)lower;
  t->write_queued -= f->plain;
  for (unsigned i = 0; i < f->n; i++)
    f->items[i].cb(&t->base, status, f->items[i].arg);
  if (f->items != f->inline_items)
    free(f->items);
  BUF_MEM_free(f->mem);
  free(f);
}

/* Completes every pending user write with status (a failed flush, or the stream closed). */
static void fail_pending(tls_stream_t *t, int status) {
  while (t->npend > 0) {
    completion_t c = t->pend[0];
    memmove(t->pend, t->pend + 1, (t->npend - 1) * sizeof *t->pend);
    t->npend--;
    c.cb(&t->base, status, c.arg);
  }
  t->write_queued -= t->pend_plain;
  t->pend_plain = 0;
}

/* Sends what OpenSSL wrote so far as one lower write, which completes every pending user write. The
 * write BIO's buffer travels with the write; a new empty BIO takes its place. */
static int flush(tls_stream_t *t) {
  BUF_MEM *mem = NULL;
  flush_t *f;
  uv_buf_t buf;
  int r;
  if (t->flush_err)
    return t->flush_err;
  if (BIO_ctrl_pending(t->wbio) > 0) {
    BIO *fresh = BIO_new(BIO_s_mem());
    if (fresh == NULL)
      abort(); /* out of memory, as cr_malloc would */
    BIO_get_mem_ptr(t->wbio, &mem);
    (void)BIO_set_close(t->wbio, BIO_NOCLOSE);
    SSL_set0_wbio(t->ssl, fresh); /* frees the old BIO, not its buffer */
    t->wbio = fresh;
  } else if (t->npend == 0) {
    return 0;
  }
  f = cr_malloc(sizeof *f);
  f->t = t;
  f->mem = mem;
  f->plain = t->pend_plain;
  f->n = t->npend;
  f->items = f->n <= CR_ARRAY_SIZE(f->inline_items) ? f->inline_items : cr_malloc(f->n * sizeof *f->items);
  if (f->n)
    memcpy(f->items, t->pend, f->n * sizeof *f->items);
  buf = uv_buf_init(mem ? mem->data : plain_buf, mem ? (unsigned)mem->length : 0);
  r = cr_stream_write(t->lower, &buf, 1, flush_done, f);
  if (r < 0) {
    /* The records are gone with the buffer: the session cannot continue. The pending user writes
     * complete with the error from the prepare callback, never inside a user call. */
    if (f->items != f->inline_items)
      free(f->items);
    BUF_MEM_free(mem);
    free(f);
    t->fatal = 1;
    t->flush_err = r;
    if (t->npend && t->prep_init)
      uv_prepare_start(&t->prep, prepare_cb);
    return r;
  }
  t->npend = 0;
  t->pend_plain = 0;
  return 0;
}

static void prepare_cb(uv_prepare_t *h) {
  tls_stream_t *t = h->data;
  uv_prepare_stop(h);
  if (t->closing)
    return;
  if (flush(t) < 0)
    fail_pending(t, t->flush_err);
}

/* ---- deferred work ---- */

static void idle_cb(uv_idle_t *h) {
  tls_stream_t *t = h->data;
  uv_idle_stop(h);
  if (t->closing)
    return;
  if (t->hs_report) {
    cr_tls_handshake_cb cb = t->hs_cb;
    t->hs_report = 0;
    t->hs_cb = NULL;
    if (cb)
      cb(&t->base, t->hs_result);
    if (t->closing)
      return;
  }
  pump(t);
}

static void defer(tls_stream_t *t) {
  if (!t->idle_init) {
    uv_idle_init(t->base.loop, &t->idle);
    t->idle.data = t;
    t->idle_init = 1;
  }
  uv_idle_start(&t->idle, idle_cb);
}

/* ---- reads ---- */

static void lower_read_cb(cr_stream_t *lower, ssize_t nread, const char *data);

static void lower_read_stop(tls_stream_t *t) {
  if (t->lower_reading) {
    cr_stream_read_stop(t->lower);
    t->lower_reading = 0;
  }
}

static int lower_read_start(tls_stream_t *t) {
  int r;
  if (t->lower_reading || t->lower_end)
    return 0;
  r = cr_stream_read_start(t->lower, lower_read_cb);
  if (r == 0)
    t->lower_reading = 1;
  return r;
}

/* A drained read BIO gives its buffer back, so an idle connection holds none. */
static void release_rbio(tls_stream_t *t) {
  BUF_MEM *mem = NULL;
  BIO *fresh;
  if (BIO_ctrl_pending(t->rbio) > 0)
    return;
  BIO_get_mem_ptr(t->rbio, &mem);
  if (mem == NULL || mem->max == 0)
    return;
  fresh = BIO_new(BIO_s_mem());
  if (fresh == NULL)
    return;
  BIO_set_mem_eof_return(fresh, -1);
  SSL_set0_rbio(t->ssl, fresh);
  t->rbio = fresh;
}

static void deliver_end(tls_stream_t *t, int status) {
  t->read_done = 1;
  lower_read_stop(t);
  t->read_cb(&t->base, status, NULL);
}

/* OpenSSL 3.0 names no TLS 1.3 alert ("unknown"); these are the ones a peer sends us in practice. */
static const char *alert_text(int desc) {
  switch (desc) {
  case 109:
    return "missing extension";
  case 115:
    return "unknown PSK identity";
  case 116:
    return "certificate required";
  case SSL_AD_NO_APPLICATION_PROTOCOL:
    return "no application protocol";
  default:
    return SSL_alert_desc_string_long(desc);
  }
}

/* Describes a fatal OpenSSL failure in t->err. The peer's alert is its whole story (our queue only
 * repeats it); when we sent the alert, our queue says why. */
static void describe_failure(tls_stream_t *t, const char *what) {
  char queue[320];
  size_t n;
  cr__tls_drain_errors(queue, sizeof queue);
  n = (size_t)snprintf(t->err, sizeof t->err, "%s", what);
  if (t->notes.peer_alert >= 0 && n < sizeof t->err)
    snprintf(t->err + n, sizeof t->err - n, "%speer alert: %s", n ? ": " : "", alert_text(t->notes.peer_alert));
  else if (n < sizeof t->err)
    snprintf(t->err + n, sizeof t->err - n, "%s%s%s%s%s", n && queue[0] ? ": " : "", queue,
             t->notes.sent_alert >= 0 ? (queue[0] || n ? " (we sent alert: " : "(we sent alert: ") : "",
             t->notes.sent_alert >= 0 ? alert_text(t->notes.sent_alert) : "", t->notes.sent_alert >= 0 ? ")" : "");
}

static void pump(tls_stream_t *t) {
  int n, e;
  if (!t->established || t->read_done)
    return;
  while (t->reading && !t->closing && !t->read_done) {
    ERR_clear_error();
    n = SSL_read(t->ssl, plain_buf, sizeof plain_buf);
    if (n > 0) {
      t->read_cb(&t->base, n, plain_buf);
      continue;
    }
    e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ) {
      /* Post-handshake messages (tickets, key updates) may have produced an answer. */
      if (flush(t) < 0) {
        snprintf(t->err, sizeof t->err, "cannot write to the peer");
        deliver_end(t, CR_ETLS);
        return;
      }
      release_rbio(t);
      if (t->lower_end) {
        if (t->lower_end == UV_EOF)
          snprintf(t->err, sizeof t->err, "peer closed the connection without close_notify");
        else
          snprintf(t->err, sizeof t->err, "connection failed: %s", cr_strerror(t->lower_end));
        deliver_end(t, t->lower_end == UV_EOF ? CR_ETLS_TRUNCATED : t->lower_end);
      } else if (lower_read_start(t) < 0) {
        snprintf(t->err, sizeof t->err, "cannot read from the peer");
        deliver_end(t, CR_ETLS);
      }
      return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      deliver_end(t, UV_EOF);
      return;
    }
    t->fatal = 1;
    describe_failure(t, "");
    flush(t); /* our alert tells the peer why */
    deliver_end(t, CR_ETLS);
    return;
  }
  if (!t->closing && !t->fatal)
    flush(t);
}

/* ---- handshake ---- */

static int handshake_status(tls_stream_t *t) {
  long vr = SSL_get_verify_result(t->ssl);
  const char *want = cr__tls_ctx_alpn(t->ctx);
  char queue[320];
  if (t->notes.alpn_refused || t->notes.peer_alert == SSL_AD_NO_APPLICATION_PROTOCOL) {
    cr__tls_drain_errors(queue, sizeof queue);
    if (t->notes.alpn_refused)
      set_err(t, "the client does not offer application protocol '%s'", want ? want : "");
    else if (want)
      set_err(t, "the server refused application protocol '%s' (peer alert: no application protocol)", want);
    else
      set_err(t, "the server requires an application protocol (ALPN) and this client offers none "
                 "(peer alert: no application protocol)");
    return CR_ETLS_ALPN;
  }
  if (vr != X509_V_OK) {
    cr__tls_drain_errors(queue, sizeof queue);
    if (t->notes.verify_why[0])
      set_err(t, "%s", t->notes.verify_why);
    else
      set_err(t, "%s", X509_verify_cert_error_string(vr));
    return CR_ETLS_VERIFY;
  }
  describe_failure(t, "");
  return CR_ETLS;
}

static int check_alpn(tls_stream_t *t) {
  const char *want = cr__tls_ctx_alpn(t->ctx);
  const unsigned char *p = NULL;
  unsigned len = 0;
  SSL_get0_alpn_selected(t->ssl, &p, &len);
  if (len > 0 && len < sizeof t->alpn) {
    memcpy(t->alpn, p, len);
    t->alpn[len] = '\0';
  }
  if (want == NULL || strcmp(t->alpn, want) == 0)
    return 0;
  /* A peer that does not speak ALPN at all is fine for HTTP/1.1 (RFC 7301: no ALPN, no opinion);
   * only the tunnel insists. A different protocol is always refused. */
  if (t->alpn[0] == '\0' && !cr__tls_ctx_alpn_required(t->ctx))
    return 0;
  if (cr__tls_ctx_is_server(t->ctx))
    set_err(t, "the client offered no application protocol; this port speaks only '%s'", want);
  else
    set_err(t, "the server did not select application protocol '%s'%s", want,
            t->alpn[0] ? " (it chose another)" : "");
  return CR_ETLS_ALPN;
}

/* Reports the outcome: through the callback, or, when still inside cr_tls_stream_handshake, on the
 * next loop turn (a failure found that early is returned directly instead). */
static int handshake_finish(tls_stream_t *t, int status, int sync) {
  cr_tls_handshake_cb cb;
  t->hs_finished = 1;
  if (status < 0) {
    lower_read_stop(t);
    if (sync) {
      t->hs_cb = NULL;
      return status;
    }
  } else {
    t->established = 1;
    if (sync) {
      t->hs_result = 0;
      t->hs_report = 1;
      defer(t);
      return 0;
    }
  }
  cb = t->hs_cb;
  t->hs_cb = NULL;
  if (cb)
    cb(&t->base, status);
  if (status == 0 && !t->closing && !t->reading)
    lower_read_stop(t); /* backpressure: nothing is read until the user asks */
  return 0;
}

static int handshake_step(tls_stream_t *t, int sync) {
  int r, e, status;
  ERR_clear_error();
  r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    status = flush(t);
    if (status < 0) {
      set_err(t, "cannot write to the peer: %s", cr_strerror(status));
      return handshake_finish(t, status, sync);
    }
    status = check_alpn(t);
    if (status < 0)
      t->fatal = 1;
    return handshake_finish(t, status, sync);
  }
  e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    status = flush(t);
    if (status < 0) {
      set_err(t, "cannot write to the peer: %s", cr_strerror(status));
      return handshake_finish(t, status, sync);
    }
    if (t->lower_end) {
      if (t->lower_end == UV_EOF)
        set_err(t, "the peer closed the connection during the TLS handshake");
      else
        set_err(t, "connection failed during the TLS handshake: %s", cr_strerror(t->lower_end));
      return handshake_finish(t, t->lower_end, sync);
    }
    release_rbio(t);
    return 0;
  }
  t->fatal = 1;
  status = handshake_status(t);
  flush(t); /* our alert, so the peer learns why */
  return handshake_finish(t, status, sync);
}

/* ---- lower stream events ---- */

static void lower_read_cb(cr_stream_t *lower, ssize_t nread, const char *data) {
  tls_stream_t *t = lower->data;
  if (t->closing || nread == 0)
    return;
  if (nread > 0) {
    if (t->fatal || t->read_done) {
      lower_read_stop(t);
      return;
    }
    BIO_write(t->rbio, data, (int)nread);
  } else {
    t->lower_end = (int)nread;
    t->lower_reading = 0; /* the lower stream reports an end once and stops */
  }
  if (!t->established) {
    if (t->hs_started && !t->hs_finished)
      handshake_step(t, 0);
    return;
  }
  pump(t);
}

/* ---- stream interface ---- */

static int tls_read_start(cr_stream_t *s, cr_stream_read_cb cb) {
  tls_stream_t *t = (tls_stream_t *)s;
  if (t->closing)
    return UV_EINVAL;
  if (!t->established)
    return UV_ENOTCONN;
  t->read_cb = cb;
  t->reading = 1;
  if (t->read_done)
    return 0;
  /* Whatever arrived while stopped is delivered on the next loop turn, not inside this call. */
  if (BIO_ctrl_pending(t->rbio) > 0 || SSL_has_pending(t->ssl) || t->lower_end)
    defer(t);
  return lower_read_start(t);
}

static int tls_read_stop(cr_stream_t *s) {
  tls_stream_t *t = (tls_stream_t *)s;
  t->reading = 0;
  if (t->established)
    lower_read_stop(t); /* the handshake keeps reading whatever the user says */
  if (t->idle_init && !t->hs_report)
    uv_idle_stop(&t->idle);
  return 0;
}

static void noop_write_cb(cr_stream_t *s, int status, void *arg) {}

static int tls_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg) {
  tls_stream_t *t = (tls_stream_t *)s;
  size_t total = 0, done;
  unsigned i;
  if (t->closing || t->shut || t->fatal)
    return UV_EPIPE;
  if (!t->established)
    return UV_ENOTCONN;
  ERR_clear_error();
  for (i = 0; i < nbufs; i++) {
    if (bufs[i].len == 0)
      continue;
    /* The write BIO grows as needed, so SSL_write takes everything or fails for good. */
    if (SSL_write_ex(t->ssl, bufs[i].base, bufs[i].len, &done) != 1 || done != bufs[i].len) {
      t->fatal = 1;
      describe_failure(t, "encrypting failed");
      return CR_ETLS;
    }
    total += bufs[i].len;
  }
  if (t->npend == t->pend_cap) {
    t->pend_cap = t->pend_cap ? t->pend_cap * 2 : 4;
    t->pend = cr_realloc(t->pend, t->pend_cap * sizeof *t->pend);
  }
  t->pend[t->npend].cb = cb ? cb : noop_write_cb;
  t->pend[t->npend].arg = arg;
  t->npend++;
  t->pend_plain += total;
  t->write_queued += total;
  if (!t->prep_init) {
    uv_prepare_init(t->base.loop, &t->prep);
    t->prep.data = t;
    t->prep_init = 1;
  }
  uv_prepare_start(&t->prep, prepare_cb);
  return 0;
}

static void shutdown_done(cr_stream_t *lower, int status, void *arg) {
  shutdown_req_t *sd = arg;
  (void)lower;
  if (sd->cb)
    sd->cb(&sd->t->base, status, sd->arg);
  free(sd);
}

static int tls_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  tls_stream_t *t = (tls_stream_t *)s;
  shutdown_req_t *sd;
  int r;
  if (t->closing || t->shut)
    return UV_EPIPE;
  if (!t->established)
    return UV_ENOTCONN;
  t->shut = 1;
  if (!t->fatal) {
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* queues close_notify; the peer's may come later or never */
    ERR_clear_error();
    r = flush(t);
    if (r < 0)
      return r;
  }
  sd = cr_malloc(sizeof *sd);
  sd->t = t;
  sd->cb = cb;
  sd->arg = arg;
  r = cr_stream_shutdown(t->lower, shutdown_done, sd);
  if (r < 0)
    free(sd);
  return r;
}

static size_t tls_write_queue_size(const cr_stream_t *s) { return ((const tls_stream_t *)s)->write_queued; }

static void close_step(tls_stream_t *t) {
  cr_stream_close_cb cb;
  if (--t->pending_closes > 0)
    return;
  cb = t->close_cb;
  fail_pending(t, UV_ECANCELED); /* batched writes that never reached the lower stream */
  free(t->pend);
  SSL_free(t->ssl);
  cr__tls_ctx_unref(t->ctx);
  if (cb)
    cb(&t->base);
  free(t);
}

static void lower_closed(cr_stream_t *lower) { close_step(lower->data); }

static void idle_closed(uv_handle_t *h) { close_step(h->data); }

static void tls_close(cr_stream_t *s, cr_stream_close_cb cb) {
  tls_stream_t *t = (tls_stream_t *)s;
  t->closing = 1;
  t->close_cb = cb;
  t->hs_cb = NULL;
  t->pending_closes = 1;
  if (t->idle_init) {
    t->pending_closes++;
    uv_close((uv_handle_t *)&t->idle, idle_closed);
  }
  if (t->prep_init) {
    t->pending_closes++;
    uv_close((uv_handle_t *)&t->prep, idle_closed);
  }
  cr_stream_close(t->lower, lower_closed);
}

static const cr_stream_vtbl_t tls_vtbl = {
    .name = "tls",
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .write_queue_size = tls_write_queue_size,
};

/* ---- public ---- */

static int is_ip_literal(const char *name) {
  unsigned char addr[16];
  return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

cr_stream_t *cr_tls_stream_new(cr_stream_t *lower, cr_tls_ctx_t *ctx, const char *server_name) {
  tls_stream_t *t = cr_calloc(1, sizeof *t);
  t->base.vt = &tls_vtbl;
  t->base.loop = lower->loop;
  memcpy(t->base.peer, lower->peer, sizeof t->base.peer);
  t->lower = lower;
  lower->data = t;
  t->ctx = ctx;
  t->ssl = cr__tls_ctx_ssl_new(ctx, &t->notes);
  if (t->ssl == NULL)
    abort(); /* only out of memory makes SSL_new fail on a good context */
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->rbio == NULL || t->wbio == NULL)
    abort();
  BIO_set_mem_eof_return(t->rbio, -1); /* empty means "wait for more", not end of stream */
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  if (cr__tls_ctx_is_server(ctx)) {
    SSL_set_accept_state(t->ssl);
  } else {
    SSL_set_connect_state(t->ssl);
    if (server_name == NULL || *server_name == '\0') {
      t->need_name = 1;
    } else if (is_ip_literal(server_name)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name);
    } else {
      SSL_set_tlsext_host_name(t->ssl, server_name);
      SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      SSL_set1_host(t->ssl, server_name);
    }
  }
  return &t->base;
}

int cr_tls_stream_handshake(cr_stream_t *tls, cr_tls_handshake_cb cb) {
  tls_stream_t *t = (tls_stream_t *)tls;
  int r;
  if (t->closing)
    return UV_EINVAL;
  if (t->hs_started)
    return UV_EALREADY;
  if (t->need_name) {
    snprintf(t->err, sizeof t->err, "a TLS client needs the server name it must verify");
    return UV_EINVAL;
  }
  t->hs_started = 1;
  t->hs_cb = cb;
  r = lower_read_start(t);
  if (r < 0) {
    t->hs_cb = NULL;
    return r;
  }
  return handshake_step(t, 1);
}

const char *cr_tls_stream_error(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->err : "";
}

X509 *cr_tls_stream_peer_cert(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) ? SSL_get0_peer_certificate(((const tls_stream_t *)tls)->ssl) : NULL;
}

const char *cr_tls_stream_verify_warning(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->notes.verify_warn : "";
}

const char *cr_tls_stream_alpn(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->alpn : "";
}

int cr_stream_is_tls(const cr_stream_t *s) { return s != NULL && s->vt == &tls_vtbl; }

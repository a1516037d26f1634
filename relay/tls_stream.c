/* SPDX-License-Identifier: Apache-2.0 */
/* A TLS stream layered on any cr_stream_t. OpenSSL talks to one BIO of our own (bio_* below); the
 * lower stream (libuv) moves the ciphertext.
 *
 * Input: a lower read is handed to OpenSSL where it lies (the lower stream's read buffer); only bytes
 * OpenSSL has not taken when the read callback returns (the user stopped reading) are copied aside.
 * Output: OpenSSL's records are appended to an output buffer that travels with the lower write as is,
 * and comes back to a small process-wide free list when the write completes.
 *
 * Batching: small user writes are copied into a plaintext stage and encrypted together, once per
 * loop turn (a prepare handle flushes before the loop blocks), so a response head and body written
 * separately become one TLS record and one system call. Large writes are encrypted at once.
 *
 * Memory: an idle connection holds no I/O buffer of ours, and a periodic sweep gives OpenSSL's record
 * buffers back once a connection has been quiet for a sweep interval (SSL_MODE_RELEASE_BUFFERS would
 * free and reallocate them for every record of a busy connection). A server does not run OpenSSL
 * until the client's first record (its hello) is here whole: OpenSSL's first handshake call makes
 * its read and write buffers (about 35 KiB), which a connection that sends nothing, or its hello a
 * byte at a time, would otherwise hold until its deadline. Until then it holds only the bytes it
 * sent. */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/queue.h"
#include "ccrelay/tls.h"
#include "ccrelay/x509.h"
#include "tls_internal.h"

/* Plaintext of the records one lower read brought (up to four full ones). Delivered synchronously and
 * never kept, so one buffer serves every connection of the (single-threaded) process. */
#define PLAIN_BUF_SIZE (64 * 1024)
#define RECORD_PLAIN_MAX (16 * 1024)
/* page-aligned so an idle process can give its pages back (cr_tls_release_caches) */
static char plain_buf[PLAIN_BUF_SIZE] __attribute__((aligned(4096)));

#define STAGE_MAX (16 * 1024)      /* plaintext of one full record */
#define DIRECT_MIN (8 * 1024)      /* writes this big are encrypted at once, never staged */
/* Every connection that writes in a loop turn holds a stage until its flush and an output buffer until
 * the lower write completes (the next turn), so the free lists must cover a turn's worth of busy
 * connections or each one pays a 16 KiB malloc and free. A sweep with no use shrinks them again. */
#define FREE_STAGES_MAX 128
#define FREE_OBUFS_MAX 128
#define FREE_KEEP_IDLE 2
#define OBUF_MIN (STAGE_MAX + 1024)
#define OBUF_KEEP_MAX (80 * 1024)  /* a bigger first segment is freed, not kept */
#define OBUF_SEGS 32               /* then the last segment grows instead */
#define OBUF_SEG (64 * 1024)       /* every segment after the first, recycled */
#define FREE_SEGS_MAX 32
#define SWEEP_MS 1000

typedef struct completion {
  cr_stream_write_cb cb;
  void *arg;
} completion_t;

typedef struct tls_stream tls_stream_t;

/* Ciphertext for one lower write, and the user writes it completes. A turn's records go into
 * segments written with one writev: growing one buffer would copy everything written so far each time
 * it doubled, which cost a big transfer about 5 % of the gateway's CPU. Segments after the first are
 * all OBUF_SEG and come from a free list: segments doubling in size were fresh allocations each turn
 * (past glibc's mmap threshold), so every byte of a big response was written to a page that faulted
 * in and was cold in cache. */
typedef struct obuf {
  struct obuf *next_free;
  tls_stream_t *t;
  size_t plain;
  unsigned n;
  completion_t *items; /* inline_items, or an array for longer batches */
  completion_t inline_items[4];
  size_t len;          /* over every segment */
  unsigned nseg;       /* segments in use; seg[0] is kept with a recycled obuf */
  uv_buf_t seg[OBUF_SEGS];
  size_t cap[OBUF_SEGS];
} obuf_t;

/* Per loop: the TLS streams whose idle record buffers a timer gives back. */
typedef struct sweeper {
  struct sweeper *next;
  uv_loop_t *loop;
  uv_timer_t timer;
  cr_queue_t streams;
  size_t n;
} sweeper_t;

struct tls_stream {
  cr_stream_t base;
  cr_stream_t *lower;
  cr_tls_ctx_t *ctx;
  SSL *ssl;
  BIO *bio;          /* ours (bio_*), owned by ssl */
  const char *in;    /* the lower read being handed to OpenSSL, during lower_read_cb only */
  size_t in_len;
  char *held;        /* ciphertext read but not yet taken by OpenSSL; NULL when none */
  size_t held_off;
  size_t held_len;
  size_t held_cap;
  obuf_t *out;       /* records OpenSSL wrote since the last flush */
  char *stage;       /* plaintext of small user writes, encrypted together at flush */
  size_t stage_len;
  sweeper_t *sweeper;
  cr_queue_t sweep_link;
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
  int read_end;          /* SSL_read's end (SSL_ERROR_*) found behind data still to deliver; 0 if none */
  unsigned pending_closes;
  unsigned hs_started : 1;
  unsigned hello_wait : 1; /* a server waiting for the client's first record before OpenSSL runs */
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
  unsigned io_active : 1;  /* I/O since the last sweep */
  unsigned bufs_idle : 1;  /* the sweep gave OpenSSL's buffers back */
  char alpn[64];
  char *err; /* why it failed (ERR_MAX bytes), allocated on the first failure: most streams never fail */
  char *server_name; /* client: what the server is verified against; NULL on a server */
};

typedef struct shutdown_req {
  tls_stream_t *t;
  cr_stream_write_cb cb;
  void *arg;
} shutdown_req_t;

static const cr_stream_vtbl_t tls_vtbl;

static void pump(tls_stream_t *t);
static void prepare_cb(uv_prepare_t *h);
static void make_ssl(tls_stream_t *t);
static void describe_failure(tls_stream_t *t, const char *what);

#define ERR_MAX 512

static char *err_buf(tls_stream_t *t) {
  if (t->err == NULL)
    t->err = cr_calloc(1, ERR_MAX);
  return t->err;
}

static void set_err(tls_stream_t *t, const char *fmt, ...) CR_PRINTF(2, 3);
static void set_err(tls_stream_t *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err_buf(t), ERR_MAX, fmt, ap);
  va_end(ap);
}

/* ---- buffers ---- */

/* Process-wide free lists (the process is single-threaded): busy connections reuse a few buffers,
 * idle ones hold none. */
static char *free_stages[FREE_STAGES_MAX];
static unsigned nfree_stages;
static char *free_segs[FREE_SEGS_MAX];
static unsigned nfree_segs;
static obuf_t *free_obufs;
static unsigned nfree_obufs;
static char empty_write[1];

static unsigned free_list_uses; /* buffers taken since the last sweep */

static char *stage_get(void) {
  free_list_uses++;
  return nfree_stages ? free_stages[--nfree_stages] : cr_malloc(STAGE_MAX);
}

static void stage_put(char *p) {
  if (nfree_stages < FREE_STAGES_MAX)
    free_stages[nfree_stages++] = p;
  else
    free(p);
}

static char *seg_get(void) {
  free_list_uses++;
  return nfree_segs ? free_segs[--nfree_segs] : cr_malloc(OBUF_SEG);
}

/* A segment that had to grow past OBUF_SEG is not the free list's size: freed. */
static void seg_put(char *p, size_t cap) {
  if (cap == OBUF_SEG && nfree_segs < FREE_SEGS_MAX)
    free_segs[nfree_segs++] = p;
  else
    free(p);
}

static obuf_t *obuf_get(void) {
  obuf_t *o = free_obufs;
  free_list_uses++;
  if (o != NULL) {
    free_obufs = o->next_free;
    nfree_obufs--;
  } else {
    o = cr_malloc(sizeof *o);
    o->seg[0] = uv_buf_init(NULL, 0);
    o->cap[0] = 0;
  }
  o->len = 0;
  o->nseg = 1;
  o->seg[0].len = 0;
  o->n = 0;
  o->items = o->inline_items;
  return o;
}

static void obuf_put(obuf_t *o) {
  if (o->items != o->inline_items)
    free(o->items);
  for (unsigned i = 1; i < o->nseg; i++)
    seg_put(o->seg[i].base, o->cap[i]);
  if (nfree_obufs >= FREE_OBUFS_MAX || o->cap[0] > OBUF_KEEP_MAX) {
    free(o->seg[0].base);
    free(o);
    return;
  }
  o->next_free = free_obufs;
  free_obufs = o;
  nfree_obufs++;
}

/* A quiet second gives the free lists back but for a couple. */
static void free_lists_shrink(void) {
  if (free_list_uses > 0) {
    free_list_uses = 0;
    return;
  }
  while (nfree_stages > FREE_KEEP_IDLE)
    free(free_stages[--nfree_stages]);
  while (nfree_segs > FREE_KEEP_IDLE)
    free(free_segs[--nfree_segs]);
  while (nfree_obufs > FREE_KEEP_IDLE) {
    obuf_t *o = free_obufs;
    free_obufs = o->next_free;
    nfree_obufs--;
    free(o->seg[0].base);
    free(o);
  }
}

void cr_tls_release_caches(void) {
  while (nfree_stages > 0)
    free(free_stages[--nfree_stages]);
  while (nfree_segs > 0)
    free(free_segs[--nfree_segs]);
  while (free_obufs != NULL) {
    obuf_t *o = free_obufs;
    free_obufs = o->next_free;
    free(o->seg[0].base);
    free(o);
  }
  nfree_obufs = 0;
  /* Never in use outside a read callback; the next use finds zeroed pages. Advice, so a failure only
   * means the pages stay. */
  (void)madvise(plain_buf, sizeof plain_buf, MADV_DONTNEED);
}

/* ---- the BIO OpenSSL reads from and writes to ---- */

static size_t input_pending(const tls_stream_t *t) { return t->held_len - t->held_off + t->in_len; }

static int bio_write_cb(BIO *b, const char *data, int len) {
  tls_stream_t *t = BIO_get_data(b);
  obuf_t *o;
  uv_buf_t *seg;
  size_t *cap;
  BIO_clear_retry_flags(b);
  if (t == NULL || len <= 0)
    return len == 0 ? 0 : -1;
  if (t->out == NULL)
    t->out = obuf_get();
  o = t->out;
  seg = &o->seg[o->nseg - 1];
  cap = &o->cap[o->nseg - 1];
  if (*cap - seg->len < (size_t)len) {
    size_t want = seg->len + (size_t)len;
    if (seg->len == 0) {
      /* nothing to keep: a fresh allocation, never a copying realloc */
      free(seg->base);
      *cap = CR_MAX(want, (size_t)OBUF_MIN);
      seg->base = cr_malloc(*cap);
    } else if (o->nseg < OBUF_SEGS) {
      /* OpenSSL writes a record at a time, so a record never needs more than one segment */
      o->nseg++;
      seg++;
      cap++;
      *cap = CR_MAX((size_t)len, (size_t)OBUF_SEG);
      *seg = uv_buf_init(*cap == OBUF_SEG ? seg_get() : cr_malloc(*cap), 0);
    } else {
      *cap = CR_MAX(want, *cap * 2);
      seg->base = cr_realloc(seg->base, *cap);
    }
  }
  memcpy(seg->base + seg->len, data, (size_t)len);
  seg->len += (size_t)len;
  o->len += (size_t)len;
  return len;
}

static int bio_read_cb(BIO *b, char *out, int len) {
  tls_stream_t *t = BIO_get_data(b);
  size_t n;
  BIO_clear_retry_flags(b);
  if (t == NULL || len <= 0)
    return 0;
  if (t->held_off < t->held_len) {
    n = CR_MIN((size_t)len, t->held_len - t->held_off);
    memcpy(out, t->held + t->held_off, n);
    t->held_off += n;
    if (t->held_off == t->held_len) {
      free(t->held);
      t->held = NULL;
      t->held_off = t->held_len = t->held_cap = 0;
    }
    return (int)n;
  }
  if (t->in_len > 0) {
    n = CR_MIN((size_t)len, t->in_len);
    memcpy(out, t->in, n);
    t->in += n;
    t->in_len -= n;
    return (int)n;
  }
  BIO_set_retry_read(b); /* empty means "wait for more", not end of stream */
  return -1;
}

static long bio_ctrl_cb(BIO *b, int cmd, long num, void *ptr) {
  tls_stream_t *t = BIO_get_data(b);
  (void)num;
  (void)ptr;
  switch (cmd) {
  case BIO_CTRL_FLUSH:
    return 1; /* flush() sends once per turn */
  case BIO_CTRL_PENDING:
    return t ? (long)input_pending(t) : 0;
  case BIO_CTRL_WPENDING:
    return t && t->out ? (long)t->out->len : 0;
  default:
    return 0;
  }
}

static int bio_create_cb(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static int bio_destroy_cb(BIO *b) {
  BIO_set_data(b, NULL);
  return 1;
}

static BIO_METHOD *bio_method(void) {
  static BIO_METHOD *m;
  if (m == NULL) {
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ccrelay stream");
    if (m == NULL || !BIO_meth_set_write(m, bio_write_cb) || !BIO_meth_set_read(m, bio_read_cb) ||
        !BIO_meth_set_ctrl(m, bio_ctrl_cb) || !BIO_meth_set_create(m, bio_create_cb) ||
        !BIO_meth_set_destroy(m, bio_destroy_cb))
      abort(); /* out of memory, as cr_malloc would */
  }
  return m;
}

/* Whatever OpenSSL did not take from the lower read is copied aside before the read buffer goes. */
static void keep_input(tls_stream_t *t) {
  if (t->in_len > 0 && !t->closing && !t->fatal && !t->read_done) {
    size_t have = t->held_len - t->held_off;
    if (t->held != NULL && t->held_cap - t->held_len >= t->in_len) {
      /* room behind what is held: a hello arriving in small pieces is not copied again each time */
      memcpy(t->held + t->held_len, t->in, t->in_len);
      t->held_len += t->in_len;
    } else {
      size_t cap = CR_MAX(have + t->in_len, 2 * have);
      char *p = cr_malloc(cap);
      if (have)
        memcpy(p, t->held + t->held_off, have);
      memcpy(p + have, t->in, t->in_len);
      free(t->held);
      t->held = p;
      t->held_off = 0;
      t->held_len = have + t->in_len;
      t->held_cap = cap;
    }
  }
  t->in = NULL;
  t->in_len = 0;
}

/* OpenSSL's error queue must be empty before a call whose failure SSL_get_error will classify;
 * clearing an empty queue costs more than looking at it. */
static void clear_errors(void) {
  if (ERR_peek_error() != 0)
    ERR_clear_error();
}

/* ---- idle sweep ---- */

static sweeper_t *sweepers;

static void sweep_cb(uv_timer_t *h) {
  sweeper_t *sw = h->data;
  cr_queue_t *q;
  free_lists_shrink();
  cr_queue_foreach(q, &sw->streams) {
    tls_stream_t *t = cr_queue_data(q, tls_stream_t, sweep_link);
    if (t->io_active) {
      t->io_active = 0;
      continue;
    }
    /* SSL_free_buffers refuses while a record is partly read or written; the next sweep retries. */
    if (!t->bufs_idle && t->established && !t->fatal && !t->closing && t->out == NULL && t->stage == NULL &&
        !SSL_has_pending(t->ssl) && SSL_free_buffers(t->ssl))
      t->bufs_idle = 1;
  }
}

static void sweeper_closed(uv_handle_t *h) { free(h->data); }

static void sweep_join(tls_stream_t *t) {
  sweeper_t *sw;
  for (sw = sweepers; sw != NULL && sw->loop != t->base.loop; sw = sw->next)
    ;
  if (sw == NULL) {
    sw = cr_calloc(1, sizeof *sw);
    sw->loop = t->base.loop;
    cr_queue_init(&sw->streams);
    uv_timer_init(sw->loop, &sw->timer);
    sw->timer.data = sw;
    uv_timer_start(&sw->timer, sweep_cb, SWEEP_MS, SWEEP_MS);
    uv_unref((uv_handle_t *)&sw->timer); /* never keeps the loop alive by itself */
    sw->next = sweepers;
    sweepers = sw;
  }
  cr_queue_insert_tail(&sw->streams, &t->sweep_link);
  sw->n++;
  t->sweeper = sw;
}

static void sweep_leave(tls_stream_t *t) {
  sweeper_t *sw = t->sweeper, **pp;
  if (sw == NULL)
    return;
  t->sweeper = NULL;
  cr_queue_remove(&t->sweep_link);
  if (--sw->n > 0)
    return;
  free_list_uses = 0;
  free_lists_shrink();
  for (pp = &sweepers; *pp != sw; pp = &(*pp)->next)
    ;
  *pp = sw->next;
  uv_timer_stop(&sw->timer);
  uv_close((uv_handle_t *)&sw->timer, sweeper_closed);
}

/* ---- ciphertext out ---- */

static void flush_done(cr_stream_t *lower, int status, void *arg) {
  obuf_t *o = arg;
  tls_stream_t *t = o->t;
  (void)lower;
  t->write_queued -= o->plain;
  for (unsigned i = 0; i < o->n; i++)
    o->items[i].cb(&t->base, status, o->items[i].arg);
  obuf_put(o);
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

static int encrypt(tls_stream_t *t, const char *data, size_t len) {
  size_t done;
  clear_errors();
  /* The BIO takes every record, so SSL_write takes everything or fails for good. */
  if (SSL_write_ex(t->ssl, data, len, &done) != 1 || done != len) {
    t->fatal = 1;
    describe_failure(t, "encrypting failed");
    return CR_ETLS;
  }
  return 0;
}

/* Encrypts the staged small writes as one record and gives the stage back. */
static int encrypt_stage(tls_stream_t *t) {
  int r = 0;
  if (t->stage == NULL)
    return 0;
  if (t->stage_len > 0 && !t->fatal)
    r = encrypt(t, t->stage, t->stage_len);
  stage_put(t->stage);
  t->stage = NULL;
  t->stage_len = 0;
  return r;
}

/* Sends what OpenSSL wrote so far as one lower write, which completes every pending user write. The
 * output buffer travels with the write. */
static int flush(tls_stream_t *t) {
  obuf_t *o;
  uv_buf_t empty;
  int r;
  if (t->flush_err)
    return t->flush_err;
  r = encrypt_stage(t);
  if (r < 0) {
    t->flush_err = r;
    if (t->npend && t->prep_init)
      uv_prepare_start(&t->prep, prepare_cb);
    return r;
  }
  o = t->out;
  if (o == NULL) {
    if (t->npend == 0)
      return 0;
    o = obuf_get(); /* an empty write, so completions keep their order */
  }
  t->out = NULL;
  o->t = t;
  o->plain = t->pend_plain;
  o->n = t->npend;
  o->items = o->n <= CR_ARRAY_SIZE(o->inline_items) ? o->inline_items : cr_malloc(o->n * sizeof *o->items);
  if (o->n)
    memcpy(o->items, t->pend, o->n * sizeof *o->items);
  if (o->len > 0) {
    r = cr_stream_write(t->lower, o->seg, o->nseg, flush_done, o);
  } else {
    empty = uv_buf_init(empty_write, 0);
    r = cr_stream_write(t->lower, &empty, 1, flush_done, o);
  }
  if (r < 0) {
    /* The records are gone with the buffer: the session cannot continue. The pending user writes
     * complete with the error from the prepare callback, never inside a user call. */
    obuf_put(o);
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
  cr_x509_drain_errors(queue, sizeof queue, NULL);
  n = (size_t)snprintf(err_buf(t), ERR_MAX, "%s", what);
  if (t->notes.peer_alert >= 0 && n < ERR_MAX)
    snprintf(t->err + n, ERR_MAX - n, "%speer alert: %s", n ? ": " : "", alert_text(t->notes.peer_alert));
  else if (n < ERR_MAX)
    snprintf(t->err + n, ERR_MAX - n, "%s%s%s%s%s", n && queue[0] ? ": " : "", queue,
             t->notes.sent_alert >= 0 ? (queue[0] || n ? " (we sent alert: " : "(we sent alert: ") : "",
             t->notes.sent_alert >= 0 ? alert_text(t->notes.sent_alert) : "", t->notes.sent_alert >= 0 ? ")" : "");
}

/* Decrypts the records already here into plain_buf, as many as fit. *e is SSL_ERROR_NONE when more
 * may be decrypted, SSL_ERROR_WANT_READ when nothing is left to decrypt, or the SSL_read failure that
 * ended it; a fatal one is described now, while OpenSSL's error queue still says why. */
static size_t decrypt_ready(tls_stream_t *t, int *e) {
  size_t fill = 0;
  int n;
  *e = SSL_ERROR_NONE;
  do {
    clear_errors();
    n = SSL_read(t->ssl, plain_buf + fill, (int)(sizeof plain_buf - fill));
    if (n <= 0) {
      *e = SSL_get_error(t->ssl, n);
      if (*e != SSL_ERROR_WANT_READ && *e != SSL_ERROR_ZERO_RETURN) {
        t->fatal = 1;
        describe_failure(t, "");
      }
      return fill;
    }
    fill += (size_t)n;
  } while (sizeof plain_buf - fill >= RECORD_PLAIN_MAX && (input_pending(t) > 0 || SSL_has_pending(t->ssl)));
  /* With no ciphertext left on either side of the BIO the next SSL_read can only ask for more: skip
   * that call (a few hundred ns of OpenSSL state and error-queue checks per read event). */
  if (input_pending(t) == 0 && !SSL_has_pending(t->ssl))
    *e = SSL_ERROR_WANT_READ;
  return fill;
}

/* Hands the user every record a read brought in one call (one nghttp2_session_mem_recv, whole DATA
 * frames encrypted straight through instead of pieces staged and copied) rather than one per record. */
static void pump(tls_stream_t *t) {
  int e;
  size_t fill;
  if (!t->established || t->read_done)
    return;
  while (t->reading && !t->closing && !t->read_done) {
    if (t->read_end) {
      e = t->read_end;
      t->read_end = 0;
    } else {
      fill = decrypt_ready(t, &e);
      if (fill > 0) {
        if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ)
          t->read_end = e; /* the data before the end is delivered first */
        t->read_cb(&t->base, (ssize_t)fill, plain_buf);
        if (e != SSL_ERROR_WANT_READ || !t->reading || t->closing || t->read_done)
          continue;
      }
    }
    if (e == SSL_ERROR_WANT_READ) {
      /* Post-handshake messages (tickets, key updates) may have produced an answer. */
      if (flush(t) < 0) {
        snprintf(err_buf(t), ERR_MAX, "cannot write to the peer");
        deliver_end(t, CR_ETLS);
        return;
      }
      if (t->lower_end) {
        if (t->lower_end == UV_EOF)
          snprintf(err_buf(t), ERR_MAX, "peer closed the connection without close_notify");
        else
          snprintf(err_buf(t), ERR_MAX, "connection failed: %s", cr_strerror(t->lower_end));
        deliver_end(t, t->lower_end == UV_EOF ? CR_ETLS_TRUNCATED : t->lower_end);
      } else if (lower_read_start(t) < 0) {
        snprintf(err_buf(t), ERR_MAX, "cannot read from the peer");
        deliver_end(t, CR_ETLS);
      }
      return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      deliver_end(t, UV_EOF);
      return;
    }
    /* decrypt_ready marked the stream fatal and said why */
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
    cr_x509_drain_errors(queue, sizeof queue, NULL);
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
    cr_x509_drain_errors(queue, sizeof queue, NULL);
    if (t->notes.verify_why)
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
  if (want == NULL || (t->alpn[0] && cr__tls_ctx_alpn_ok(t->ctx, (const unsigned char *)t->alpn, strlen(t->alpn))))
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
  clear_errors();
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
    return 0;
  }
  t->fatal = 1;
  status = handshake_status(t);
  flush(t); /* our alert, so the peer learns why */
  return handshake_finish(t, status, sync);
}

/* ---- lower stream events ---- */

/* Byte i of the input not yet given to OpenSSL (i < input_pending). */
static unsigned char input_at(const tls_stream_t *t, size_t i) {
  size_t held = t->held_len - t->held_off;
  return (unsigned char)(i < held ? t->held[t->held_off + i] : t->in[i - held]);
}

/* A server's first record: 1 once OpenSSL should see the input (the record is whole, or it is no
 * handshake record and OpenSSL will refuse it, or the peer ended), 0 while more is to come. */
#define RECORD_HEADER 5
#define HELLO_RECORD_MAX (16 * 1024 + 256)
static int hello_ready(const tls_stream_t *t) {
  size_t have = input_pending(t), len;
  if (t->lower_end)
    return 1;
  if (have < RECORD_HEADER)
    return have > 0 && input_at(t, 0) != 22; /* 22: handshake */
  len = (size_t)input_at(t, 3) << 8 | input_at(t, 4);
  return input_at(t, 0) != 22 || len > HELLO_RECORD_MAX || have >= RECORD_HEADER + len;
}

static void lower_read_cb(cr_stream_t *lower, ssize_t nread, const char *data) {
  tls_stream_t *t = lower->data;
  if (t->closing || nread == 0)
    return;
  if (nread > 0) {
    if (t->fatal || t->read_done) {
      lower_read_stop(t);
      return;
    }
    t->in = data;
    t->in_len = (size_t)nread;
    t->io_active = 1;
    t->bufs_idle = 0;
  } else {
    t->lower_end = (int)nread;
    t->lower_reading = 0; /* the lower stream reports an end once and stops */
  }
  if (!t->established) {
    if (t->hello_wait && hello_ready(t)) {
      t->hello_wait = 0;
      make_ssl(t);
    }
    if (t->hs_started && !t->hs_finished && !t->hello_wait)
      handshake_step(t, 0);
  } else {
    pump(t);
  }
  keep_input(t);
  if (t->established && !t->reading && input_pending(t) > 0)
    lower_read_stop(t); /* backpressure: unwanted bytes are held, no more are read */
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
  if (input_pending(t) > 0 || SSL_has_pending(t->ssl) || t->lower_end || t->read_end)
    defer(t);
  return lower_read_start(t);
}

/* The lower stream keeps reading: owners stop and restart reads around every exchange (a pooled
 * upstream connection is stopped when lent, restarted by the exchange, stopped at its end, restarted
 * idle), and each restart of a stopped socket costs libuv two epoll_ctl calls. lower_read_cb stops it
 * once bytes arrive that nobody asked for, so at most one read is held. */
static int tls_read_stop(cr_stream_t *s) {
  tls_stream_t *t = (tls_stream_t *)s;
  t->reading = 0;
  if (t->idle_init && !t->hs_report)
    uv_idle_stop(&t->idle);
  return 0;
}

static void noop_write_cb(cr_stream_t *s, int status, void *arg) {}

static int tls_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg) {
  tls_stream_t *t = (tls_stream_t *)s;
  size_t total = 0, len;
  unsigned i;
  int r;
  if (t->closing || t->shut || t->fatal)
    return UV_EPIPE;
  if (!t->established)
    return UV_ENOTCONN;
  for (i = 0; i < nbufs; i++) {
    const char *p = bufs[i].base;
    len = bufs[i].len;
    total += len;
    if (len >= DIRECT_MIN) {
      /* Big enough for records of its own: no copy. What was staged goes first, topped up from this
       * buffer so a small prefix (a chunk header) does not become a record of its own. */
      if (t->stage != NULL && t->stage_len > 0) {
        size_t top = CR_MIN(len, STAGE_MAX - t->stage_len);
        memcpy(t->stage + t->stage_len, p, top);
        t->stage_len += top;
        p += top;
        len -= top;
        if ((r = encrypt_stage(t)) < 0)
          return r;
      }
      if (len >= DIRECT_MIN) {
        if ((r = encrypt(t, p, len)) < 0)
          return r;
        continue;
      }
    }
    if (len == 0)
      continue;
    if (t->stage != NULL && t->stage_len + len > STAGE_MAX && (r = encrypt_stage(t)) < 0)
      return r;
    if (t->stage == NULL)
      t->stage = stage_get();
    memcpy(t->stage + t->stage_len, p, len);
    t->stage_len += len;
  }
  t->io_active = 1;
  t->bufs_idle = 0;
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

/* notify 0 leaves close_notify out: the peer then reads a truncated connection. */
static int shutdown_impl(tls_stream_t *t, cr_stream_write_cb cb, void *arg, int notify) {
  shutdown_req_t *sd;
  int r;
  if (t->closing || t->shut)
    return UV_EPIPE;
  if (!t->established)
    return UV_ENOTCONN;
  t->shut = 1;
  if (!t->fatal) {
    r = encrypt_stage(t); /* staged writes go before close_notify and the FIN */
    if (r < 0)
      return r;
    if (notify) {
      ERR_clear_error();
      SSL_shutdown(t->ssl); /* queues close_notify; the peer's may come later or never */
      ERR_clear_error();
    }
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

static int tls_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  return shutdown_impl((tls_stream_t *)s, cb, arg, 1);
}

int cr_tls_stream_shutdown_truncated(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  if (!cr_stream_is_tls(s))
    return cr_stream_shutdown(s, cb, arg);
  return shutdown_impl((tls_stream_t *)s, cb, arg, 0);
}

static size_t tls_write_queue_size(const cr_stream_t *s) { return ((const tls_stream_t *)s)->write_queued; }

static void close_step(tls_stream_t *t) {
  cr_stream_close_cb cb;
  if (--t->pending_closes > 0)
    return;
  cb = t->close_cb;
  fail_pending(t, UV_ECANCELED); /* batched writes that never reached the lower stream */
  free(t->pend);
  sweep_leave(t);
  if (t->stage)
    stage_put(t->stage);
  if (t->out)
    obuf_put(t->out);
  free(t->held);
  if (t->ssl != NULL) {
    SSL_free(t->ssl); /* frees the BIO, whose callbacks no longer see t */
    cr__tls_ctx_unref(t->ctx);
  }
  cr__tls_ctx_unref(t->ctx);
  if (cb)
    cb(&t->base); /* may still ask cr_tls_stream_error */
  free(t->err);
  free(t->server_name);
  cr__tls_notes_release(&t->notes);
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

/* What this layer recorded (verify reason, alert, OpenSSL queue), else what the lower stream knows. */
static size_t tls_error_detail(const cr_stream_t *s, char *buf, size_t len) {
  const tls_stream_t *t = (const tls_stream_t *)s;
  int n;
  if (t->err == NULL || t->err[0] == '\0')
    return cr_stream_error_detail(t->lower, buf, len);
  n = snprintf(buf, len, "%s", t->err);
  return n < 0 ? 0 : CR_MIN((size_t)n, len > 0 ? len - 1 : 0);
}

static const cr_stream_vtbl_t tls_vtbl = {
    .name = "tls",
    .copies_writes = 1,
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .write_queue_size = tls_write_queue_size,
    .error_detail = tls_error_detail,
};

/* ---- public ---- */

/* A server's SSL object waits for the client's hello (see the top of the file); a client's is made
 * with the stream. */
static void make_ssl(tls_stream_t *t) {
  t->ssl = cr__tls_ctx_ssl_new(t->ctx, &t->notes);
  if (t->ssl == NULL)
    abort(); /* only out of memory makes SSL_new fail on a good context */
  t->bio = BIO_new(bio_method());
  if (t->bio == NULL)
    abort();
  BIO_set_data(t->bio, t);
  SSL_set_bio(t->ssl, t->bio, t->bio); /* one BIO both ways: ssl takes the one reference */
  if (cr__tls_ctx_is_server(t->ctx))
    SSL_set_accept_state(t->ssl);
}

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
  t->ctx = cr_tls_ctx_ref(ctx); /* the SSL object, made later on a server, takes one of its own */
  t->notes.peer_alert = -1;
  t->notes.sent_alert = -1;
  sweep_join(t);
  if (!cr__tls_ctx_is_server(ctx)) {
    make_ssl(t);
    SSL_set_connect_state(t->ssl);
    if (server_name == NULL || *server_name == '\0') {
      t->need_name = 1;
    } else {
      if (is_ip_literal(server_name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), server_name);
      } else {
        SSL_set_tlsext_host_name(t->ssl, server_name);
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        SSL_set1_host(t->ssl, server_name);
      }
      t->server_name = cr_strdup(server_name);
      t->notes.server_name = t->server_name;
      cr__tls_ctx_offer_session(ctx, t->ssl, &t->notes);
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
    snprintf(err_buf(t), ERR_MAX, "a TLS client needs the server name it must verify");
    return UV_EINVAL;
  }
  t->hs_started = 1;
  t->hs_cb = cb;
  r = lower_read_start(t);
  if (r < 0) {
    t->hs_cb = NULL;
    return r;
  }
  if (t->ssl == NULL) {
    if (input_pending(t) == 0 || !hello_ready(t)) {
      t->hello_wait = 1; /* nothing to answer yet: OpenSSL would only make its buffers and wait */
      return 0;
    }
    make_ssl(t); /* the hello came whole with the bytes the owner read first */
  }
  return handshake_step(t, 1);
}

int cr_tls_stream_handshake_after(cr_stream_t *tls, cr_tls_handshake_cb cb, const char *first, size_t len) {
  tls_stream_t *t = (tls_stream_t *)tls;
  if (len > 0) {
    if (t->closing || t->hs_started || t->ssl != NULL)
      return UV_EINVAL;
    t->in = first;
    t->in_len = len;
    keep_input(t); /* copied: held until OpenSSL takes it, as bytes read while it waited are */
  }
  return cr_tls_stream_handshake(tls, cb);
}

const char *cr_tls_stream_error(const cr_stream_t *tls) {
  const char *err = cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->err : NULL;
  return err ? err : "";
}

int cr_tls_stream_resumed(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) && ((const tls_stream_t *)tls)->ssl != NULL &&
         SSL_session_reused(((const tls_stream_t *)tls)->ssl);
}

X509 *cr_tls_stream_peer_cert(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) && ((const tls_stream_t *)tls)->ssl != NULL
             ? SSL_get0_peer_certificate(((const tls_stream_t *)tls)->ssl)
             : NULL;
}

int cr_tls_stream_peer_verify(const cr_stream_t *tls, const cr_tls_ca_set_t *cas, char *why, size_t whylen) {
  X509 *leaf = cr_tls_stream_peer_cert(tls);
  if (leaf == NULL) {
    snprintf(why, whylen, "no client certificate");
    return UV_ENOENT;
  }
  /* On the server side the peer's chain holds what it sent after its leaf: the intermediates. */
  return cr_trust_verify_store(cas->store, leaf, SSL_get_peer_cert_chain(((const tls_stream_t *)tls)->ssl),
                               CR_TRUST_PURPOSE_CLIENT, NULL, NULL, NULL, 0, why, whylen);
}

int cr_tls_stream_peer_summary(const cr_stream_t *tls, char *subject, size_t subjectlen, time_t *not_after) {
  X509 *peer = cr_tls_stream_peer_cert(tls);
  if (peer == NULL)
    return UV_ENOENT;
  cr_x509_subject(peer, subject, subjectlen);
  *not_after = cr_x509_not_after(peer);
  return 0;
}

const char *cr_tls_stream_verify_warning(const cr_stream_t *tls) {
  const char *warn = cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->notes.verify_warn : NULL;
  return warn ? warn : "";
}

const char *cr_tls_stream_alpn(const cr_stream_t *tls) {
  return cr_stream_is_tls(tls) ? ((const tls_stream_t *)tls)->alpn : "";
}

int cr_stream_is_tls(const cr_stream_t *s) { return s != NULL && s->vt == &tls_vtbl; }

int cr_tls_stream_conn_info(const cr_stream_t *s, cr_tls_conn_info_t *out) {
  const tls_stream_t *t = (const tls_stream_t *)s;
  X509 *peer;
  memset(out, 0, sizeof *out);
  if (!cr_stream_is_tls(s) || t->ssl == NULL || !SSL_is_init_finished(t->ssl))
    return UV_EINVAL;
  snprintf(out->version, sizeof out->version, "%s", SSL_get_version(t->ssl));
  snprintf(out->cipher, sizeof out->cipher, "%s", SSL_get_cipher_name(t->ssl));
  peer = SSL_get0_peer_certificate(t->ssl);
  if (peer) {
    cr_x509_subject(peer, out->subject, sizeof out->subject);
    cr_x509_issuer(peer, out->issuer, sizeof out->issuer);
    out->not_after = cr_x509_not_after(peer);
  }
  return 0;
}

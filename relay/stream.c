/* SPDX-License-Identifier: Apache-2.0 */
/* TCP implementation of cr_stream_t, plus listening and connecting. */
#define _GNU_SOURCE /* accept4 */
#include "ccrelay/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/queue.h"

/* Reads are delivered synchronously and never kept, so one buffer serves every connection of the
 * (single-threaded) process: idle connections then cost no read buffer at all. */
#define READ_BUF_SIZE (64 * 1024)
static char shared_read_buf[READ_BUF_SIZE] __attribute__((aligned(4096))); /* see cr_stream_release_caches */
static int shared_read_buf_busy;
/* Full reads in a row before the loop is given back: libuv would read up to 32 times (2 MiB) per
 * readiness event, and everything read is processed, re-encrypted and queued before this turn's
 * writes go out. A bounded burst keeps a busy stream's output flowing every 256 KiB and its working
 * set in cache; epoll reports the socket again on the next turn. */
#define READ_BURST_MAX 4

typedef struct tcp_write {
  uv_write_t req;
  cr_stream_write_cb cb;
  void *arg;
  size_t len;
  int status;       /* for a completion waiting in `done` */
  cr_queue_t node;  /* in tcp_stream_t.done */
} tcp_write_t;

typedef struct tcp_stream {
  cr_stream_t base;
  uv_tcp_t handle;
  uv_getaddrinfo_t gai;
  uv_connect_t connect_req;
  cr_stream_read_cb read_cb;
  cr_stream_connect_cb connect_cb;
  cr_stream_close_cb close_cb;
  struct addrinfo *addrs; /* remaining addresses to try while connecting */
  struct addrinfo *next_addr;
  struct addrinfo *first_addr; /* where the walk began (the rotation); it wraps to addrs once */
  unsigned rotate;             /* the answer to try first: rotate mod the number of answers */
  unsigned wrapped : 1;
  unsigned port;
  int last_err;
  size_t write_queued;
  /* Writes that went out whole through uv_try_write skip uv_write, whose completion costs an
   * epoll_ctl (libuv 1.44 drops and re-arms POLLOUT each time). Their callbacks, and any uv_write
   * completion behind them, wait in `done` (in order) until the check handle runs after this
   * turn's poll; the idle handle keeps poll from blocking while any wait. Both handles are made on
   * the first such write and stopped whenever `done` is empty. */
  cr_queue_t done;
  uv_check_t done_check;
  uv_idle_t done_idle;
  unsigned uv_writes; /* uv_write requests whose write_done has not run */
  unsigned read_burst; /* full reads since libuv last found the socket drained */
  unsigned closes_pending;
  tcp_write_t wr; /* the usual single write in flight needs no allocation */
  unsigned wr_busy : 1;
  unsigned done_handles : 1;
  unsigned resolving : 1;
  unsigned connecting : 1;
  unsigned handle_open : 1;
  unsigned closing : 1;
} tcp_stream_t;

typedef struct tcp_shutdown {
  uv_shutdown_t req;
  cr_stream_write_cb cb;
  void *arg;
} tcp_shutdown_t;

struct cr_listener {
  uv_loop_t *loop;
  uv_poll_t poll;
  uv_timer_t pause; /* accepting again after a failure */
  int fd;
  cr_listener_cb cb;
  cr_listener_admit_cb admit;
  void *arg;
  unsigned port;
  unsigned closes_pending;
  unsigned closing : 1;
  uint64_t accept_failures;
  cr_log_limit_t fail_log;
  char name[64]; /* "host:port", for log lines */
};

static void listener_resume_cb(uv_timer_t *h);
static void listener_io(uv_poll_t *h, int status, int events);

static const cr_stream_vtbl_t tcp_vtbl;

void cr_sockaddr_format(const struct sockaddr *addr, char *out, size_t outlen) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)addr;
    uv_ip6_name(a6, ip, sizeof ip);
    snprintf(out, outlen, "[%s]:%u", ip, ntohs(a6->sin6_port));
  } else if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)addr;
    uv_ip4_name(a4, ip, sizeof ip);
    snprintf(out, outlen, "%s:%u", ip, ntohs(a4->sin_port));
  } else {
    snprintf(out, outlen, "unknown");
  }
}

int cr_split_host_port(const char *s, char *host, size_t hostlen, unsigned *port) {
  const char *colon, *hend;
  char *end;
  unsigned long p;
  if (s == NULL || *s == '\0')
    return CR_ECONFIG;
  if (*s == '[') {
    hend = strchr(s, ']');
    if (hend == NULL || hend[1] != ':')
      return CR_ECONFIG;
    s++;
    colon = hend + 1;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
      return CR_ECONFIG; /* unbracketed IPv6 is ambiguous */
    hend = colon;
  }
  if (hend == s || (size_t)(hend - s) >= hostlen)
    return CR_ECONFIG;
  p = strtoul(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || p > 65535)
    return CR_ECONFIG;
  memcpy(host, s, (size_t)(hend - s));
  host[hend - s] = '\0';
  *port = (unsigned)p;
  return 0;
}

static void tune_socket(uv_tcp_t *h) {
  /* Small requests must leave at once: Nagle plus delayed ACK costs 40 ms per exchange. */
  uv_tcp_nodelay(h, 1);
  uv_tcp_keepalive(h, 1, 60);
}

static void record_peer(tcp_stream_t *t) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&t->handle, (struct sockaddr *)&ss, &len) == 0)
    cr_sockaddr_format((struct sockaddr *)&ss, t->base.peer, sizeof t->base.peer);
}

static tcp_stream_t *tcp_alloc(uv_loop_t *loop) {
  tcp_stream_t *t = cr_calloc(1, sizeof *t);
  t->base.vt = &tcp_vtbl;
  t->base.loop = loop;
  t->handle.data = t;
  cr_queue_init(&t->done);
  return t;
}

void cr_stream_release_caches(void) {
  /* Advice, so a failure only means the pages stay; the next read finds zeroed pages. */
  if (!shared_read_buf_busy)
    (void)madvise(shared_read_buf, sizeof shared_read_buf, MADV_DONTNEED);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tcp_stream_t *t = h->data;
  (void)suggested;
  if (t->read_burst >= READ_BURST_MAX) {
    t->read_burst = 0;
    *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: read_cb ignores it, libuv reads on the next turn */
    return;
  }
  if (shared_read_buf_busy) {
    /* A read callback started another read synchronously: libuv then reports UV_ENOBUFS, which
     * read_cb below ignores, so the socket is read again on the next turn. It cannot happen with
     * the current callers; this keeps it safe if it ever does. */
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  shared_read_buf_busy = 1;
  *buf = uv_buf_init(shared_read_buf, READ_BUF_SIZE);
}

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  tcp_stream_t *t = h->data;
  if (buf->base == shared_read_buf)
    shared_read_buf_busy = 0;
  /* libuv keeps reading only after a read that filled the buffer */
  t->read_burst = nread == READ_BUF_SIZE ? t->read_burst + 1 : 0;
  if (nread == 0 || (nread == UV_ENOBUFS && buf->base == NULL))
    return; /* EAGAIN, or alloc_cb declined this turn: libuv reads again on the next one */
  if (nread < 0) {
    uv_read_stop(h);
    t->read_cb(&t->base, nread, NULL);
    return;
  }
  t->read_cb(&t->base, nread, buf->base);
}

static int tcp_read_start(cr_stream_t *s, cr_stream_read_cb cb) {
  tcp_stream_t *t = (tcp_stream_t *)s;
  if (t->closing || !t->handle_open)
    return UV_EINVAL;
  t->read_cb = cb;
  return uv_read_start((uv_stream_t *)&t->handle, alloc_cb, read_cb);
}

static int tcp_read_stop(cr_stream_t *s) {
  tcp_stream_t *t = (tcp_stream_t *)s;
  if (!t->handle_open)
    return 0;
  return uv_read_stop((uv_stream_t *)&t->handle);
}

static void release_write(tcp_stream_t *t, tcp_write_t *w) {
  if (w == &t->wr)
    t->wr_busy = 0;
  else
    free(w);
}

static tcp_write_t *alloc_write(tcp_stream_t *t) {
  if (!t->wr_busy) {
    t->wr_busy = 1;
    return &t->wr;
  }
  return cr_malloc(sizeof(tcp_write_t));
}

static void complete(tcp_stream_t *t, tcp_write_t *w, int status) {
  cr_stream_write_cb cb = w->cb;
  void *arg = w->arg;
  t->write_queued -= w->len;
  /* released before the callback, which may write again */
  release_write(t, w);
  if (cb)
    cb(&t->base, status, arg);
}

static void done_run(tcp_stream_t *t) {
  /* Only the completions queued before this run: one that a callback queues now waits for the
   * next turn, so a writer that keeps writing from its callback cannot starve the loop. */
  cr_queue_t *last = t->done.prev;
  cr_queue_t *q;
  tcp_write_t *w;
  while (!t->closing && !cr_queue_empty(&t->done)) {
    q = cr_queue_head(&t->done);
    cr_queue_remove(q);
    w = cr_queue_data(q, tcp_write_t, node);
    complete(t, w, w->status);
    if (q == last)
      break;
  }
  if (!t->closing && cr_queue_empty(&t->done)) {
    uv_check_stop(&t->done_check);
    uv_idle_stop(&t->done_idle);
  }
}

static void done_check_cb(uv_check_t *h) { done_run(h->data); }
static void done_idle_cb(uv_idle_t *h) { done_run(h->data); }

static void defer_completion(tcp_stream_t *t, tcp_write_t *w, int status) {
  w->status = status;
  cr_queue_insert_tail(&t->done, &w->node);
  if (!t->done_handles) {
    uv_check_init(t->base.loop, &t->done_check);
    uv_idle_init(t->base.loop, &t->done_idle);
    t->done_check.data = t;
    t->done_idle.data = t;
    t->done_handles = 1;
  }
  if (!t->closing) {
    uv_check_start(&t->done_check, done_check_cb);
    uv_idle_start(&t->done_idle, done_idle_cb);
  }
}

static void write_done(uv_write_t *req, int status) {
  tcp_write_t *w = cr_container_of(req, tcp_write_t, req);
  tcp_stream_t *t = req->handle->data;
  t->uv_writes--;
  if (!cr_queue_empty(&t->done)) {
    defer_completion(t, w, status); /* behind earlier writes' callbacks */
    return;
  }
  complete(t, w, status);
}

/* Writes what the socket takes now. Returns the bytes written (all of len or fewer), or 0 when
 * nothing could be written or it failed: uv_write then reports the error through the callback as
 * before. */
static size_t try_write(tcp_stream_t *t, const uv_buf_t bufs[], unsigned nbufs) {
  int r = uv_try_write((uv_stream_t *)&t->handle, bufs, nbufs);
  return r > 0 ? (size_t)r : 0;
}

static int tcp_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned nbufs, cr_stream_write_cb cb, void *arg) {
  tcp_stream_t *t = (tcp_stream_t *)s;
  tcp_write_t *w;
  uv_buf_t small[8];
  uv_buf_t *rest = NULL;
  const uv_buf_t *wbufs = bufs;
  unsigned wn = nbufs;
  size_t len = 0, sent = 0;
  int r;
  if (t->closing || !t->handle_open)
    return UV_EPIPE;
  for (unsigned i = 0; i < nbufs; i++)
    len += bufs[i].len;
  /* With a uv_write outstanding its callback is still due, and ours must come after it. */
  if (t->uv_writes == 0 && len > 0)
    sent = try_write(t, bufs, nbufs);
  w = alloc_write(t);
  w->cb = cb;
  w->arg = arg;
  w->len = len;
  if (len > 0 && sent == len) {
    t->write_queued += len;
    defer_completion(t, w, 0);
    return 0;
  }
  if (sent > 0) {
    unsigned i = 0;
    while (sent >= bufs[i].len) {
      sent -= bufs[i].len;
      i++;
    }
    wn = nbufs - i;
    rest = wn <= sizeof small / sizeof small[0] ? small : cr_malloc(wn * sizeof *rest);
    memcpy(rest, bufs + i, wn * sizeof *rest);
    rest[0].base += sent;
    rest[0].len -= sent;
    wbufs = rest;
  }
  r = uv_write(&w->req, (uv_stream_t *)&t->handle, wbufs, wn, write_done);
  if (rest != NULL && rest != small)
    free(rest);
  if (r < 0) {
    if (wbufs == bufs) {
      release_write(t, w);
      return r;
    }
    /* Part of it already went out, so the caller must not retry it: report the failure through
     * the callback instead. */
    t->write_queued += len;
    defer_completion(t, w, r);
    return 0;
  }
  t->uv_writes++;
  t->write_queued += len;
  return 0;
}

static void shutdown_done(uv_shutdown_t *req, int status) {
  tcp_shutdown_t *sd = cr_container_of(req, tcp_shutdown_t, req);
  tcp_stream_t *t = req->handle->data;
  if (sd->cb)
    sd->cb(&t->base, status, sd->arg);
  free(sd);
}

static int tcp_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  tcp_stream_t *t = (tcp_stream_t *)s;
  tcp_shutdown_t *sd;
  int r;
  if (t->closing || !t->handle_open)
    return UV_EPIPE;
  sd = cr_malloc(sizeof *sd);
  sd->cb = cb;
  sd->arg = arg;
  r = uv_shutdown(&sd->req, (uv_stream_t *)&t->handle, shutdown_done);
  if (r < 0)
    free(sd);
  return r;
}

static size_t tcp_write_queue_size(const cr_stream_t *s) { return ((const tcp_stream_t *)s)->write_queued; }

static void tcp_free(tcp_stream_t *t) {
  cr_stream_close_cb cb = t->close_cb;
  if (t->addrs)
    uv_freeaddrinfo(t->addrs);
  if (cb)
    cb(&t->base);
  free(t);
}

/* The TCP handle and, when they exist, the completion handles close in the same turn; the stream
 * goes with the last of them, and completions still waiting then are canceled like uv_write's. */
static void part_closed(uv_handle_t *h) {
  tcp_stream_t *t = h->data;
  cr_queue_t *q;
  if (t->closes_pending > 1) {
    t->closes_pending--;
    return;
  }
  t->closes_pending = 0;
  while (!cr_queue_empty(&t->done)) {
    q = cr_queue_head(&t->done);
    cr_queue_remove(q);
    complete(t, cr_queue_data(q, tcp_write_t, node), UV_ECANCELED);
  }
  tcp_free(t);
}

static void handle_closed(uv_handle_t *h) { part_closed(h); }

static void tcp_close(cr_stream_t *s, cr_stream_close_cb cb) {
  tcp_stream_t *t = (tcp_stream_t *)s;
  t->closing = 1;
  t->close_cb = cb;
  if (t->resolving) {
    /* getaddrinfo runs in the thread pool; its callback sees `closing` and finishes the close. */
    uv_cancel((uv_req_t *)&t->gai);
    return;
  }
  if (t->handle_open) {
    /* A handle already closing belongs to a connect retry; retry_after_close sees `closing`. */
    if (!uv_is_closing((uv_handle_t *)&t->handle)) {
      t->closes_pending = 1;
      if (t->done_handles) {
        t->closes_pending += 2;
        uv_close((uv_handle_t *)&t->done_check, part_closed);
        uv_close((uv_handle_t *)&t->done_idle, part_closed);
      }
      uv_close((uv_handle_t *)&t->handle, handle_closed);
    }
    return;
  }
  /* Every address failed and no handle is left: close one anyway so close_cb still fires on a
   * later loop turn, as the contract promises. */
  uv_tcp_init(t->base.loop, &t->handle);
  t->handle_open = 1;
  uv_close((uv_handle_t *)&t->handle, handle_closed);
}

/* TCP knows nothing beyond the libuv code. */
static size_t tcp_error_detail(const cr_stream_t *s, char *buf, size_t len) {
  (void)s;
  if (len > 0)
    buf[0] = '\0';
  return 0;
}

static const cr_stream_vtbl_t tcp_vtbl = {
    .name = "tcp",
    .copies_writes = 0,
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .write_queue_size = tcp_write_queue_size,
    .error_detail = tcp_error_detail,
};

const char *cr_stream_strerror(const cr_stream_t *s, int err, char *buf, size_t len) {
  if (len == 0)
    return cr_strerror(err);
  if (s == NULL || cr_stream_error_detail(s, buf, len) == 0)
    snprintf(buf, len, "%s", cr_strerror(err));
  return buf;
}

/* ---- connect ---- */

static void try_next_addr(tcp_stream_t *t, int last_err);

static void connect_done(uv_connect_t *req, int status) {
  tcp_stream_t *t = req->handle->data;
  t->connecting = 0;
  if (t->closing)
    return; /* canceled: the close completes in handle_closed */
  if (status == 0) {
    tune_socket(&t->handle);
    record_peer(t);
    t->connect_cb(&t->base, 0);
    return;
  }
  try_next_addr(t, status);
}

static void retry_after_close(uv_handle_t *h) {
  tcp_stream_t *t = h->data;
  t->handle_open = 0;
  if (t->closing) {
    tcp_free(t);
    return;
  }
  try_next_addr(t, t->last_err);
}

static void try_next_addr(tcp_stream_t *t, int last_err) {
  struct addrinfo *ai;
  int r;
  if (t->handle_open) {
    /* A socket whose connect failed cannot be reused: close it and go on from its close callback. */
    t->last_err = last_err;
    uv_close((uv_handle_t *)&t->handle, retry_after_close);
    return;
  }
  for (;;) {
    ai = t->next_addr;
    if (ai == NULL && !t->wrapped && t->first_addr != t->addrs) {
      t->wrapped = 1; /* the answers before the first one tried, in order */
      ai = t->addrs;
    }
    if (ai == NULL || (t->wrapped && ai == t->first_addr))
      break;
    t->next_addr = ai->ai_next;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    r = uv_tcp_init(t->base.loop, &t->handle);
    if (r < 0) {
      last_err = r;
      break;
    }
    t->handle_open = 1;
    cr_sockaddr_format(ai->ai_addr, t->base.peer, sizeof t->base.peer);
    r = uv_tcp_connect(&t->connect_req, &t->handle, ai->ai_addr, connect_done);
    if (r == 0) {
      t->connecting = 1;
      return;
    }
    try_next_addr(t, r);
    return;
  }
  t->connect_cb(&t->base, last_err ? last_err : UV_EADDRNOTAVAIL);
}

static void gai_done(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  tcp_stream_t *t = req->data;
  t->resolving = 0;
  t->addrs = res;
  t->next_addr = res;
  if (status == 0 && t->rotate) {
    unsigned n = 0, k;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
      n++;
    k = n ? t->rotate % n : 0;
    while (k--)
      t->next_addr = t->next_addr->ai_next;
  }
  t->first_addr = t->next_addr;
  if (t->closing) {
    /* Closed while resolving: no handle was ever initialised, so free directly (a later turn than
     * the close call, as the contract promises). */
    tcp_free(t);
    return;
  }
  if (status < 0) {
    t->connect_cb(&t->base, status);
    return;
  }
  try_next_addr(t, 0);
}

int cr_tcp_connect(uv_loop_t *loop, const char *host, unsigned port, cr_stream_connect_cb cb, void *data,
                   cr_stream_t **out) {
  return cr_tcp_connect_rotated(loop, host, port, 0, cb, data, out);
}

int cr_tcp_connect_rotated(uv_loop_t *loop, const char *host, unsigned port, unsigned first, cr_stream_connect_cb cb,
                           void *data, cr_stream_t **out) {
  tcp_stream_t *t = tcp_alloc(loop);
  struct addrinfo hints;
  unsigned char lit[16];
  char portstr[8];
  int r;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  /* AI_ADDRCONFIG ignores loopback interfaces, so on an IPv4-only host it would refuse "::1" (and
   * "127.0.0.1" on an IPv6-only one): literals skip it. */
  hints.ai_flags = uv_inet_pton(AF_INET, host, lit) == 0 || uv_inet_pton(AF_INET6, host, lit) == 0
                       ? AI_NUMERICHOST
                       : AI_ADDRCONFIG;
  snprintf(portstr, sizeof portstr, "%u", port);
  snprintf(t->base.peer, sizeof t->base.peer, "%s:%u", host, port);
  t->base.data = data;
  t->connect_cb = cb;
  t->port = port;
  t->rotate = first;
  t->gai.data = t;
  r = uv_getaddrinfo(loop, &t->gai, gai_done, host, portstr, &hints);
  if (r < 0) {
    free(t);
    return r;
  }
  t->resolving = 1;
  *out = &t->base;
  return 0;
}

/* ---- listen ----
 *
 * The listener accepts by itself (a poll handle on its own socket) rather than through uv_listen:
 * libuv answers EMFILE by accepting and closing (resetting) every pending connection and then
 * polls again at once, which resets callers that would have been served a moment later and spins
 * while the limit lasts. Here the pending connections stay in the kernel's queue and accepting
 * pauses for ACCEPT_PAUSE_MS. Accepting ourselves also shows the peer's address before any
 * allocation, so the owner's admit callback can refuse a connection for the price of close(). */

#define ACCEPT_BURST 64       /* accepts per readiness event: a flood cannot hold the loop */
#define ACCEPT_PAUSE_MS 100
#define ACCEPT_LOG_WINDOW_MS 10000
#define ACCEPT_LOG_BURST 3

static void listener_pause(cr_listener_t *l, int err) {
  struct rlimit rl;
  uint64_t now = uv_now(l->loop), n;
  unsigned long long lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (unsigned long long)rl.rlim_cur : 0;
  l->accept_failures++;
  if ((n = cr_log_limit_due(&l->fail_log, now)) > 0)
    cr_log_warn("accept failures", "listen=%s count=%llu interval_s=%u reason=\"%s\" fd_limit=%llu", l->name,
                (unsigned long long)n, ACCEPT_LOG_WINDOW_MS / 1000, uv_strerror(err), lim);
  if (cr_log_limit_hit(&l->fail_log, now))
    cr_log_warn("accept failed; pausing accepts", "listen=%s reason=\"%s\" fd_limit=%llu pause_ms=%u", l->name,
                uv_strerror(err), lim, ACCEPT_PAUSE_MS);
  uv_poll_stop(&l->poll);
  uv_timer_start(&l->pause, listener_resume_cb, ACCEPT_PAUSE_MS, 0);
}

static void listener_resume_cb(uv_timer_t *h) {
  cr_listener_t *l = h->data;
  if (!l->closing)
    uv_poll_start(&l->poll, UV_READABLE, listener_io);
}

/* Accepts up to max queued connections, handing each the admit check and the callback. */
static void accept_queued(cr_listener_t *l, int max) {
  for (int i = 0; i < max && !l->closing; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    tcp_stream_t *t;
    int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC), r;
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
        continue; /* that caller left before we took it: the next one may be there */
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      listener_pause(l, uv_translate_sys_error(errno)); /* EMFILE, ENFILE, ENOBUFS, ENOMEM */
      return;
    }
    if (l->admit != NULL && l->admit(l, (const struct sockaddr *)&ss, l->arg) < 0) {
      close(fd);
      continue;
    }
    t = tcp_alloc(l->loop);
    uv_tcp_init(l->loop, &t->handle);
    t->handle_open = 1;
    if ((r = uv_tcp_open(&t->handle, fd)) < 0) {
      close(fd);
      uv_close((uv_handle_t *)&t->handle, handle_closed);
      continue;
    }
    tune_socket(&t->handle);
    cr_sockaddr_format((const struct sockaddr *)&ss, t->base.peer, sizeof t->base.peer);
    l->cb(l, &t->base, l->arg);
  }
}

static void listener_io(uv_poll_t *h, int status, int events) {
  (void)events;
  if (status < 0)
    return; /* the listening socket itself failed: nothing to accept; the next event says more */
  accept_queued(h->data, ACCEPT_BURST);
}

static void listener_part_closed(uv_handle_t *h) {
  cr_listener_t *l = h->data;
  if (--l->closes_pending > 0)
    return;
  if (l->fd >= 0)
    close(l->fd);
  free(l);
}

int cr_tcp_listen(uv_loop_t *loop, const char *host, unsigned port, int backlog, cr_listener_cb cb, void *arg,
                  cr_listener_t **out, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  struct sockaddr_storage bound;
  socklen_t blen = sizeof bound;
  cr_listener_t *l;
  int one = 1, fd, r = 0;
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "listen address '%s' is not an IP literal; use e.g. 0.0.0.0, 127.0.0.1 or ::1", host);
    return CR_ECONFIG;
  }
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(fd, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                 : sizeof(struct sockaddr_in)) < 0 ||
      listen(fd, backlog) < 0)
    r = uv_translate_sys_error(errno);
  if (r < 0) {
    snprintf(err, errlen, "cannot listen on %s port %u: %s%s", host, port, uv_strerror(r),
             r == UV_EADDRINUSE ? " (another process uses it; pick another port)"
             : r == UV_EACCES  ? " (ports below 1024 need privileges)"
                               : "");
    if (fd >= 0)
      close(fd);
    return r;
  }
  l = cr_calloc(1, sizeof *l);
  l->loop = loop;
  l->fd = fd;
  l->cb = cb;
  l->arg = arg;
  l->fail_log.window_ms = ACCEPT_LOG_WINDOW_MS;
  l->fail_log.burst = ACCEPT_LOG_BURST;
  snprintf(l->name, sizeof l->name, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
  if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0) {
    l->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    snprintf(l->name, sizeof l->name, ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, l->port);
  }
  uv_poll_init_socket(loop, &l->poll, fd);
  l->poll.data = l;
  uv_timer_init(loop, &l->pause);
  l->pause.data = l;
  uv_poll_start(&l->poll, UV_READABLE, listener_io);
  *out = l;
  return 0;
}

void cr_listener_set_admit(cr_listener_t *l, cr_listener_admit_cb admit) { l->admit = admit; }

uint64_t cr_listener_accept_failures(const cr_listener_t *l) { return l->accept_failures; }

unsigned cr_listener_port(const cr_listener_t *l) { return l->port; }

void cr_listener_close_accepting_queued(cr_listener_t *l, int max) {
  if (!l->closing)
    accept_queued(l, max);
  cr_listener_close(l);
}

void cr_listener_close(cr_listener_t *l) {
  l->closing = 1;
  l->closes_pending = 2;
  uv_close((uv_handle_t *)&l->poll, listener_part_closed);
  uv_close((uv_handle_t *)&l->pause, listener_part_closed);
  /* uv_close has taken the socket out of the poll set already; closing it now, not when the
   * handles' callbacks run at the end of this loop turn, stops the kernel at once from completing
   * connections nobody will accept (a busy turn took 13 ms): new callers are refused, and a load
   * balancer tries another server, instead of being reset later. */
  close(l->fd);
  l->fd = -1;
}

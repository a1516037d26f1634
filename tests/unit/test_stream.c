/* SPDX-License-Identifier: Apache-2.0 */
/* TCP stream tests over 127.0.0.1 on a real libuv loop: the write contract (callbacks later, never
 * inside write; in order; exactly once; canceled ones before close_cb) for writes that complete at
 * once and for writes the socket cannot take whole. Every wait is bounded in time, and every test
 * ends with uv_loop_close() == 0. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ccrelay/alloc.h"
#include "ccrelay/stream.h"

#define MAX_CBS 4096
#define BIG_SIZE (8u * 1024 * 1024)

typedef struct ctx {
  uv_loop_t loop;
  uv_timer_t guard; /* keeps UV_RUN_ONCE from blocking forever */
  cr_listener_t *lis;
  cr_stream_t *client, *server;
  int connected;
  int in_write;
  int cb_inside_write;
  int order[MAX_CBS];
  int status[MAX_CBS];
  int ncb;
  int closed_client, closed_server;
  int cbs_at_close; /* callbacks seen when the client's close_cb ran */
  size_t rx;
  int rx_bad;
  int chain_left; /* writes still to issue from the write callback */
  int chain_next;
  char byte;
  uv_prepare_t turn_prep; /* counts loop turns, for the read burst test */
  unsigned turn, rx_turn;
  size_t rx_this_turn, rx_turn_max;
} ctx_t;

static unsigned char *big;

static void guard_cb(uv_timer_t *t) { (void)t; }

static void server_read(cr_stream_t *s, ssize_t n, const char *data) {
  ctx_t *c = s->data;
  if (n <= 0)
    return;
  for (ssize_t i = 0; i < n; i++)
    if ((unsigned char)data[i] != (unsigned char)((c->rx + (size_t)i) * 7 % 251))
      c->rx_bad = 1;
  c->rx += (size_t)n;
  if (c->rx_turn != c->turn) {
    c->rx_turn = c->turn;
    c->rx_this_turn = 0;
  }
  c->rx_this_turn += (size_t)n;
  if (c->rx_this_turn > c->rx_turn_max)
    c->rx_turn_max = c->rx_this_turn;
}

static void on_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  ctx_t *c = arg;
  (void)l;
  c->server = conn;
  conn->data = c;
  assert_int_equal(cr_stream_read_start(conn, server_read), 0);
}

static void on_connect(cr_stream_t *s, int status) {
  ctx_t *c = s->data;
  assert_int_equal(status, 0);
  c->connected = 1;
}

static void run_until(ctx_t *c, int *flag, int want) {
  uint64_t deadline = uv_hrtime() + 5000000000ull;
  while (*flag < want && uv_hrtime() < deadline)
    uv_run(&c->loop, UV_RUN_ONCE);
  assert_true(*flag >= want);
}

static void run_until_rx(ctx_t *c, size_t want) {
  uint64_t deadline = uv_hrtime() + 10000000000ull;
  while (c->rx < want && uv_hrtime() < deadline)
    uv_run(&c->loop, UV_RUN_ONCE);
  assert_int_equal(c->rx, want);
  assert_false(c->rx_bad);
}

static void setup_pair(ctx_t *c) {
  char err[256];
  memset(c, 0, sizeof *c);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  uv_timer_init(&c->loop, &c->guard);
  uv_timer_start(&c->guard, guard_cb, 50, 50);
  assert_int_equal(cr_tcp_listen(&c->loop, "127.0.0.1", 0, 16, on_accept, c, &c->lis, err, sizeof err), 0);
  assert_int_equal(cr_tcp_connect(&c->loop, "127.0.0.1", cr_listener_port(c->lis), on_connect, c, &c->client), 0);
  run_until(c, &c->connected, 1);
  while (c->server == NULL)
    uv_run(&c->loop, UV_RUN_ONCE);
}

static void client_closed(cr_stream_t *s) {
  ctx_t *c = s->data;
  c->closed_client = 1;
  c->cbs_at_close = c->ncb;
}

static void server_closed(cr_stream_t *s) {
  ctx_t *c = s->data;
  c->closed_server = 1;
}

static void teardown_pair(ctx_t *c) {
  if (!c->closed_client && c->client)
    cr_stream_close(c->client, client_closed);
  cr_stream_close(c->server, server_closed);
  cr_listener_close(c->lis);
  uv_close((uv_handle_t *)&c->guard, NULL);
  run_until(c, &c->closed_server, 1);
  run_until(c, &c->closed_client, 1);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void wcb(cr_stream_t *s, int status, void *arg) {
  ctx_t *c = s->data;
  if (c->in_write)
    c->cb_inside_write = 1;
  assert_true(c->ncb < MAX_CBS);
  c->order[c->ncb] = (int)(intptr_t)arg;
  c->status[c->ncb] = status;
  c->ncb++;
}

static int write_pattern(ctx_t *c, const unsigned char *from, size_t len, cr_stream_write_cb cb, int id) {
  uv_buf_t b = uv_buf_init((char *)from, (unsigned)len);
  int r;
  c->in_write = 1;
  r = cr_stream_write(c->client, &b, 1, cb, (void *)(intptr_t)id);
  c->in_write = 0;
  return r;
}

static void test_small_writes_complete_later_in_order(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  assert_int_equal(write_pattern(&c, big, 100, wcb, 1), 0);
  assert_int_equal(write_pattern(&c, big + 100, 200, wcb, 2), 0);
  assert_int_equal(write_pattern(&c, big + 300, 300, wcb, 3), 0);
  assert_int_equal(c.ncb, 0);
  assert_int_equal(cr_stream_write_queue_size(c.client), 600);
  /* Nothing else happens on the loop: the callbacks must still come without waiting for I/O. */
  uv_timer_stop(&c.guard);
  uint64_t t0 = uv_hrtime();
  uv_run(&c.loop, UV_RUN_ONCE);
  assert_true(uv_hrtime() - t0 < 40000000ull);
  assert_int_equal(c.ncb, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(c.order[i], i + 1);
    assert_int_equal(c.status[i], 0);
  }
  assert_int_equal(cr_stream_write_queue_size(c.client), 0);
  assert_false(c.cb_inside_write);
  uv_timer_start(&c.guard, guard_cb, 50, 50);
  run_until_rx(&c, 600);
  teardown_pair(&c);
}

static void test_big_then_small_in_order(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  /* More than the socket buffers hold: part goes out at once, the rest through the queue. */
  assert_int_equal(write_pattern(&c, big, BIG_SIZE - 1000, wcb, 1), 0);
  assert_int_equal(write_pattern(&c, big + BIG_SIZE - 1000, 1000, wcb, 2), 0);
  assert_int_equal(c.ncb, 0);
  run_until_rx(&c, BIG_SIZE);
  run_until(&c, &c.ncb, 2);
  assert_int_equal(c.order[0], 1);
  assert_int_equal(c.order[1], 2);
  assert_int_equal(c.status[0], 0);
  assert_int_equal(c.status[1], 0);
  assert_false(c.cb_inside_write);
  /* Several buffers in one write, after the queue drained. */
  uv_buf_t bufs[3] = {uv_buf_init((char *)big, 10), uv_buf_init((char *)big + 10, 20), uv_buf_init((char *)big + 30, 5)};
  c.rx = 0;
  c.in_write = 1;
  assert_int_equal(cr_stream_write(c.client, bufs, 3, wcb, (void *)(intptr_t)3), 0);
  c.in_write = 0;
  run_until(&c, &c.ncb, 3);
  run_until_rx(&c, 35);
  teardown_pair(&c);
}

/* The stream API hides the socket: find the accepted one (local port lport, connected). */
static void grow_accepted_rcvbuf(unsigned lport) {
  int size = 4 * 1024 * 1024, found = 0;
  for (int fd = 3; fd < 1024 && !found; fd++) {
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &alen) != 0 || a.sin_family != AF_INET || ntohs(a.sin_port) != lport)
      continue;
    alen = sizeof a;
    if (getpeername(fd, (struct sockaddr *)&a, &alen) != 0)
      continue; /* the listener */
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size), 0);
    found = 1;
  }
  assert_true(found);
}

static void count_turn(uv_prepare_t *h) {
  ctx_t *c = h->data;
  c->turn++;
}

/* Megabytes waiting in the socket are read a bounded burst per loop turn (4 reads of 64 KiB), so the
 * rest of the loop (the writes this data causes) runs between bursts. */
static void test_read_burst_bounded(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  uv_prepare_init(&c.loop, &c.turn_prep);
  c.turn_prep.data = &c;
  uv_prepare_start(&c.turn_prep, count_turn);
  /* A receive buffer big enough to hold megabytes while the server is not reading. */
  grow_accepted_rcvbuf(cr_listener_port(c.lis));
  assert_int_equal(cr_stream_read_stop(c.server), 0);
  assert_int_equal(write_pattern(&c, big, BIG_SIZE, wcb, 1), 0);
  for (int i = 0; i < 10; i++) /* let the socket buffers fill */
    uv_run(&c.loop, UV_RUN_ONCE);
  assert_int_equal(cr_stream_read_start(c.server, server_read), 0);
  run_until_rx(&c, BIG_SIZE);
  assert_true(c.rx_turn_max > 64 * 1024);       /* more than one read per turn happened */
  assert_true(c.rx_turn_max <= 4 * 64 * 1024);  /* and no more than the burst */
  run_until(&c, &c.ncb, 1);
  uv_close((uv_handle_t *)&c.turn_prep, NULL);
  teardown_pair(&c);
}

static void chain_cb(cr_stream_t *s, int status, void *arg) {
  ctx_t *c = s->data;
  wcb(s, status, arg);
  if (status == 0 && c->chain_left > 0) {
    c->chain_left--;
    c->chain_next++;
    assert_int_equal(write_pattern(c, big + c->chain_next * 64, 64, chain_cb, c->chain_next), 0);
  }
}

static void test_write_from_callback_chain(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  c.chain_left = 1999;
  assert_int_equal(write_pattern(&c, big, 64, chain_cb, 0), 0);
  run_until(&c, &c.ncb, 2000);
  for (int i = 0; i < 2000; i++) {
    assert_int_equal(c.order[i], i);
    assert_int_equal(c.status[i], 0);
  }
  assert_false(c.cb_inside_write);
  run_until_rx(&c, 2000 * 64);
  teardown_pair(&c);
}

static void test_close_with_completions_pending(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  assert_int_equal(write_pattern(&c, big, 100, wcb, 1), 0);
  assert_int_equal(write_pattern(&c, big + 100, BIG_SIZE - 100, wcb, 2), 0);
  assert_int_equal(write_pattern(&c, big + BIG_SIZE, 0, wcb, 3), 0);
  cr_stream_close(c.client, client_closed);
  assert_int_equal(c.ncb, 0);
  assert_int_equal(write_pattern(&c, big, 10, wcb, 4), UV_EPIPE);
  run_until(&c, &c.closed_client, 1);
  /* every accepted write completed once, in order, before close_cb */
  assert_int_equal(c.cbs_at_close, 3);
  assert_int_equal(c.ncb, 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(c.order[i], i + 1);
    assert_int_equal(c.status[i], UV_ECANCELED);
  }
  teardown_pair(&c);
}

static void test_close_after_completions(void **state) {
  ctx_t c;
  (void)state;
  setup_pair(&c);
  assert_int_equal(write_pattern(&c, big, 100, wcb, 1), 0);
  run_until(&c, &c.ncb, 1);
  assert_int_equal(c.status[0], 0);
  /* the stream made its completion handles: closing must still free everything */
  cr_stream_close(c.client, client_closed);
  run_until(&c, &c.closed_client, 1);
  assert_int_equal(c.ncb, 1);
  teardown_pair(&c);
}

/* ---- listener: admission and running out of file descriptors ---- */

typedef struct lctx {
  uv_loop_t loop;
  uv_timer_t guard;
  cr_listener_t *lis;
  int admitted, refused, accepted;
  int refuse;
} lctx_t;

static int lis_admit(cr_listener_t *l, const struct sockaddr *peer, void *arg) {
  lctx_t *c = arg;
  (void)l;
  assert_int_equal(peer->sa_family, AF_INET);
  if (c->refuse) {
    c->refused++;
    return -1;
  }
  c->admitted++;
  return 0;
}

static void lis_accept(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  lctx_t *c = arg;
  (void)l;
  c->accepted++;
  assert_int_equal(c->accepted, c->admitted); /* the callback follows its admission at once */
  cr_stream_close(conn, NULL);
}

static int raw_connect(unsigned port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

/* errno of a blocking connect to 127.0.0.1:port, 0 when it connected. */
static int connect_errno(unsigned port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), e = 0;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_true(fd >= 0);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
    e = errno;
  close(fd);
  return e;
}

static void run_ms(lctx_t *c, uint64_t ms) {
  uint64_t end = uv_hrtime() + ms * 1000000ull;
  while (uv_hrtime() < end)
    uv_run(&c->loop, UV_RUN_ONCE);
}

static void lis_setup(lctx_t *c) {
  char err[256];
  memset(c, 0, sizeof *c);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  uv_timer_init(&c->loop, &c->guard);
  uv_timer_start(&c->guard, guard_cb, 10, 10);
  assert_int_equal(cr_tcp_listen(&c->loop, "127.0.0.1", 0, 16, lis_accept, c, &c->lis, err, sizeof err), 0);
  cr_listener_set_admit(c->lis, lis_admit);
}

static void lis_teardown(lctx_t *c) {
  if (c->lis != NULL)
    cr_listener_close(c->lis);
  uv_close((uv_handle_t *)&c->guard, NULL);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&c->loop), 0);
}

/* A refused connection costs the listener nothing but close(): the peer reads the end at once. */
static void test_listener_admit_refuses(void **state) {
  lctx_t c;
  char b;
  int fd;
  (void)state;
  lis_setup(&c);
  c.refuse = 1;
  fd = raw_connect(cr_listener_port(c.lis));
  run_ms(&c, 100);
  assert_int_equal(c.refused, 1);
  assert_int_equal(c.accepted, 0);
  assert_true(read(fd, &b, 1) <= 0);
  close(fd);
  c.refuse = 0;
  fd = raw_connect(cr_listener_port(c.lis));
  run_ms(&c, 100);
  assert_int_equal(c.accepted, 1);
  close(fd);
  lis_teardown(&c);
}

/* Out of file descriptors, the listener pauses (a few failed accepts, not a spin), keeps the caller
 * queued instead of resetting it, and accepts it once descriptors are free again. */
static void test_listener_emfile_pauses(void **state) {
  lctx_t c;
  struct rlimit saved, low;
  int fillers[64], nfill = 0, fd, probe;
  char b;
  (void)state;
  lis_setup(&c);
  fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
  /* the lowest free descriptor tells how many are open (give or take a hole) */
  probe = dup(0);
  assert_true(probe >= 0);
  close(probe);
  low = saved;
  low.rlim_cur = (rlim_t)probe + 8;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  while (nfill < 64 && (fillers[nfill] = dup(0)) >= 0)
    nfill++;
  assert_true(nfill < 64);
  {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)cr_listener_port(c.lis));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0); /* queued by the kernel */
  }
  run_ms(&c, 350);
  assert_int_equal(c.accepted, 0);
  assert_true(cr_listener_accept_failures(c.lis) >= 1);
  assert_true(cr_listener_accept_failures(c.lis) <= 6); /* ~100 ms apart, not a spin */
  while (nfill > 0)
    close(fillers[--nfill]);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
  run_ms(&c, 300);
  assert_int_equal(c.accepted, 1);
  assert_int_equal(read(fd, &b, 1), 0); /* our close: an orderly end, not a reset */
  close(fd);
  lis_teardown(&c);
}

/* A graceful close takes the connections the kernel completed but nobody accepted yet (they are
 * served and end in order); a plain close resets them. This is the drain of a gateway behind a load
 * balancer that still sends it callers until its health check notices. */
static void test_listener_close_accepting_queued(void **state) {
  lctx_t c;
  int fds[5], late, errno_saved;
  unsigned port;
  char b;
  (void)state;
  lis_setup(&c);
  for (int i = 0; i < 5; i++)
    fds[i] = raw_connect(cr_listener_port(c.lis)); /* queued: the loop has not run */
  port = cr_listener_port(c.lis);
  cr_listener_close_accepting_queued(c.lis, 3);
  c.lis = NULL;
  assert_int_equal(c.accepted, 3); /* at most max */
  assert_int_equal(connect_errno(port), ECONNREFUSED); /* closed now, not at the end of the turn */
  run_ms(&c, 100);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(read(fds[i], &b, 1), 0); /* accepted, then closed by the callback: in order */
    close(fds[i]);
  }
  for (int i = 3; i < 5; i++) { /* beyond max: reset with the socket, as by a plain close */
    assert_int_equal(read(fds[i], &b, 1), -1);
    close(fds[i]);
  }
  lis_teardown(&c);

  lis_setup(&c);
  port = cr_listener_port(c.lis);
  late = raw_connect(port);
  cr_listener_close(c.lis);
  c.lis = NULL;
  assert_int_equal(connect_errno(port), ECONNREFUSED);
  run_ms(&c, 50);
  assert_int_equal(c.accepted, 0);
  assert_int_equal(read(late, &b, 1), -1);
  errno_saved = errno;
  assert_int_equal(errno_saved, ECONNRESET);
  close(late);
  lis_teardown(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_small_writes_complete_later_in_order),
      cmocka_unit_test(test_listener_admit_refuses),
      cmocka_unit_test(test_listener_emfile_pauses),
      cmocka_unit_test(test_listener_close_accepting_queued),
      cmocka_unit_test(test_big_then_small_in_order),
      cmocka_unit_test(test_read_burst_bounded),
      cmocka_unit_test(test_write_from_callback_chain),
      cmocka_unit_test(test_close_with_completions_pending),
      cmocka_unit_test(test_close_after_completions),
  };
  int r;
  big = cr_malloc(BIG_SIZE + 16);
  for (size_t i = 0; i < BIG_SIZE + 16; i++)
    big[i] = (unsigned char)(i * 7 % 251);
  r = cmocka_run_group_tests(tests, NULL, NULL);
  free(big);
  return r;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the tunnel's HTTP/2 frame intake on the agent side (the HTTP/2 server), as a
 * compromised or broken gateway would drive it. The tunnel runs over an in-memory stream
 * (fuzz_memstream.h) on a uv loop: the stream reads the client preface and an empty SETTINGS frame,
 * then the input as raw frames in splits the input chooses; what the tunnel writes is discarded.
 * The owner side acts like an agent would, each stream picking its behaviour from the input:
 * answer at once, answer with a body of some size (flow control, on_writable), answer after the
 * request body, reset, or hold the stream until the end; body bytes are consumed fully, partly or
 * not at all. After the bytes are in the loop runs until idle, the tunnel is closed (abruptly or
 * gracefully), and the checks are: no crash or sanitizer report, every announced stream's on_close
 * exactly once and before the tunnel's, the tunnel's on_close exactly once, uv_loop_close() == 0.
 *
 * fuzz_tunnel_gateway.c includes this file with FUZZ_TUNNEL_GATEWAY defined: the gateway side (the
 * HTTP/2 client, which opens streams and reads responses) against a compromised agent.
 *
 * First input byte (knobs): bit 0-1 the end of input (silent, EOF, reset), bit 2 random splits,
 * bit 3 writes fail after a few, bit 4 small windows and send buffers, bit 5 graceful shutdown at
 * the end, bit 6 no prologue (the preface and SETTINGS come from the input too), bit 7 few streams
 * (agent: SETTINGS_MAX_CONCURRENT_STREAMS 3; gateway: one stream opened instead of four). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/tunnel.h"
#include "fuzz_memstream.h"

#ifdef FUZZ_TUNNEL_GATEWAY
#define FUZZ_ROLE CR_TUNNEL_GATEWAY
#else
#define FUZZ_ROLE CR_TUNNEL_AGENT
#endif

#define MAX_TRACKED 64
#define BODY_CHUNK 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef enum { ACT_RESPOND, ACT_RESPOND_BODY, ACT_AFTER_END, ACT_RESET, ACT_HOLD, ACT_COUNT } act_t;

typedef struct sctx {
  struct fctx *f;
  cr_tstream_t *ts;
  act_t act;
  size_t body_left;    /* bytes still to send */
  unsigned consume;    /* 0 all, 1 half, 2 none */
  unsigned responded : 1;
  unsigned ended : 1;  /* our side ended */
  unsigned peer_ended : 1;
  unsigned blocked : 1; /* waiting for on_writable */
  unsigned in_use : 1;
} sctx_t;

typedef struct fctx {
  uint32_t rng;
  uv_idle_t actor; /* performs what streams decided, one loop turn later */
  cr_tunnel_t *t;
  sctx_t s[MAX_TRACKED];
  size_t announced, closed;
  size_t opened_total;
  int tunnel_closed;
  int actor_closed;
} fctx_t;

static uint32_t rnd(fctx_t *f) { return fuzz_mem_rand(&f->rng); }

static sctx_t *sctx_new(fctx_t *f) {
  for (size_t i = 0; i < MAX_TRACKED; i++)
    if (!f->s[i].in_use) {
      sctx_t *s = &f->s[i];
      memset(s, 0, sizeof *s);
      s->f = f;
      s->in_use = 1;
      return s;
    }
  return NULL;
}

static void actor_cb(uv_idle_t *h);

static void wake_actor(fctx_t *f) {
  if (!f->actor_closed)
    uv_idle_start(&f->actor, actor_cb);
}

/* Sends body bytes until the body is done or the send buffer is full. */
static void pump_body(sctx_t *s) {
  static const char filler[BODY_CHUNK] = {0};
  while (!s->blocked && s->body_left > 0) {
    size_t n = s->body_left < BODY_CHUNK ? s->body_left : BODY_CHUNK;
    int r = cr_tstream_write(s->ts, filler, n);
    if (r < 0)
      return; /* reset or closing: on_close follows */
    s->body_left -= n;
    if (r == 1)
      s->blocked = 1;
  }
  if (s->body_left == 0 && !s->ended) {
    s->ended = 1;
    cr_tstream_end(s->ts);
  }
}

static void on_data(cr_tstream_t *ts, const char *d, size_t len) {
  sctx_t *s = cr_tstream_data(ts);
  volatile char sink = 0;
  if (len == 0)
    __builtin_trap();
  sink ^= d[0];
  sink ^= d[len - 1];
  (void)sink;
  if (s->consume == 0)
    cr_tstream_consume(ts, len);
  else if (s->consume == 1)
    cr_tstream_consume(ts, len / 2);
  if ((rnd(s->f) & 63) == 0)
    cr_tstream_reset(ts);
}

static void on_end(cr_tstream_t *ts) {
  sctx_t *s = cr_tstream_data(ts);
  if (s->peer_ended)
    __builtin_trap(); /* on_end fires once */
  s->peer_ended = 1;
  wake_actor(s->f);
}

static void on_writable(cr_tstream_t *ts) {
  sctx_t *s = cr_tstream_data(ts);
  s->blocked = 0;
  wake_actor(s->f);
}

static void on_close(cr_tstream_t *ts, int error) {
  sctx_t *s = cr_tstream_data(ts);
  if (s == NULL || !s->in_use || s->ts != ts || s->f->tunnel_closed)
    __builtin_trap(); /* on_close exactly once per stream, before the tunnel's */
  s->f->closed++;
  s->in_use = 0;
  s->ts = NULL;
}

#ifdef FUZZ_TUNNEL_GATEWAY
static void on_head(cr_tstream_t *ts, cr_http_msg_t *head) {
  sctx_t *s = cr_tstream_data(ts);
  if (head->status < 200 || head->status > 999 || s->responded)
    __builtin_trap(); /* one final head per stream */
  s->responded = 1;
  for (size_t i = 0; i < head->nheaders; i++)
    if (head->headers[i].name_len == 0 || head->headers[i].name[head->headers[i].name_len] != '\0')
      __builtin_trap();
}

static const cr_tstream_callbacks_t stream_cbs = {on_head, on_data, on_end, on_writable, on_close};

/* Opens one request stream, with or without a body. */
static void open_one(fctx_t *f) {
  sctx_t *s;
  cr_http_msg_t h;
  int err = 0, body = rnd(f) & 1;
  if (f->opened_total >= 8 || !cr_tunnel_usable(f->t) || (s = sctx_new(f)) == NULL)
    return;
  cr_http_msg_init(&h, 0);
  cr_http_msg_set_method(&h, body ? "POST" : "GET", body ? 4 : 3);
  cr_http_msg_set_target(&h, "/fuzz?q=1", 9);
  cr_http_msg_add_header(&h, "Host", 4, "cms.example", 11);
  cr_http_msg_add_header(&h, "x-request-id", 12, "0123456789abcdef", 16);
  if (body)
    h.content_length = (int64_t)(rnd(f) % 3 == 0 ? 0 : rnd(f) % 4 == 0 ? 70000 : 1 + rnd(f) % 5000);
  s->ts = cr_tunnel_open_stream(f->t, &h, body, &stream_cbs, s, &err);
  cr_http_msg_free(&h);
  if (s->ts == NULL) {
    if (err == 0)
      __builtin_trap();
    s->in_use = 0;
    return;
  }
  f->opened_total++;
  f->announced++;
  s->consume = rnd(f) % 3;
  s->body_left = body ? (size_t)h.content_length : 0;
  s->ended = !body;
  s->act = (act_t)(rnd(f) % ACT_COUNT);
  if (body)
    pump_body(s);
}

static void act_on(fctx_t *f, sctx_t *s) {
  if (s->act == ACT_RESET && !s->responded && (rnd(f) & 3) == 0) {
    cr_tstream_reset(s->ts);
    s->act = ACT_HOLD;
    return;
  }
  if (!s->blocked && !s->ended)
    pump_body(s);
}
#else
static const cr_tstream_callbacks_t stream_cbs = {NULL, on_data, on_end, on_writable, on_close};

static void respond(sctx_t *s, size_t body) {
  cr_http_msg_t h;
  cr_http_msg_init(&h, 0);
  h.status = 200 + (int)(rnd(s->f) % 400);
  cr_http_msg_add_header(&h, "Content-Type", 12, "application/json", 16);
  cr_http_msg_add_header(&h, "date", 4, "Mon, 01 Jan 2024 00:00:00 GMT", 29);
  h.content_length = (int64_t)body;
  s->responded = 1;
  if (cr_tstream_respond(s->ts, &h, body > 0) == 0) {
    s->body_left = body;
    s->ended = body == 0;
    pump_body(s);
  }
  cr_http_msg_free(&h);
}

static void on_stream(cr_tunnel_t *t, cr_tstream_t *ts, cr_http_msg_t *head) {
  fctx_t *f = cr_tunnel_data(t);
  sctx_t *s = sctx_new(f);
  if (head->method == NULL || head->target == NULL || head->target[0] == '\0')
    __builtin_trap(); /* the tunnel checked the pseudo-headers */
  if (s == NULL) {
    /* more than we track: refuse it as an overloaded agent would */
    static const cr_tstream_callbacks_t none = {0};
    cr_tstream_set_callbacks(ts, &none, NULL);
    cr_tstream_reset(ts);
    f->announced++;
    f->closed++; /* without callbacks its on_close cannot count itself */
    return;
  }
  s->ts = ts;
  s->act = (act_t)(rnd(f) % ACT_COUNT);
  s->consume = rnd(f) % 3;
  f->announced++;
  cr_tstream_set_callbacks(ts, &stream_cbs, s);
  if (s->act == ACT_RESPOND && (rnd(f) & 1))
    respond(s, 0); /* at once, from inside the callback */
  else
    wake_actor(f);
}

static void act_on(fctx_t *f, sctx_t *s) {
  switch (s->act) {
  case ACT_RESPOND:
    if (!s->responded)
      respond(s, 0);
    break;
  case ACT_RESPOND_BODY:
    if (!s->responded)
      respond(s, rnd(f) % 4 == 0 ? 70000 : rnd(f) % 5000);
    else if (!s->blocked && !s->ended)
      pump_body(s);
    break;
  case ACT_AFTER_END:
    if (s->peer_ended && !s->responded)
      respond(s, rnd(f) % 3000);
    else if (s->responded && !s->blocked && !s->ended)
      pump_body(s);
    break;
  case ACT_RESET:
    cr_tstream_reset(s->ts);
    s->act = ACT_HOLD;
    break;
  default:
    break;
  }
}
#endif

static void actor_cb(uv_idle_t *h) {
  fctx_t *f = h->data;
  uv_idle_stop(h);
  if (f->tunnel_closed)
    return;
  for (size_t i = 0; i < MAX_TRACKED; i++)
    if (f->s[i].in_use && f->s[i].ts)
      act_on(f, &f->s[i]);
#ifdef FUZZ_TUNNEL_GATEWAY
  if ((rnd(f) & 7) == 0)
    open_one(f);
#endif
}

static void on_ready(cr_tunnel_t *t) { wake_actor(cr_tunnel_data(t)); }

static void on_goaway(cr_tunnel_t *t) {
  if (cr_tunnel_usable(t))
    __builtin_trap(); /* after GOAWAY no new streams */
}

static void on_tunnel_close(cr_tunnel_t *t, int error) {
  fctx_t *f = cr_tunnel_data(t);
  if (f->tunnel_closed)
    __builtin_trap();
  f->tunnel_closed = 1;
  f->t = NULL;
}

static void actor_closed(uv_handle_t *h) {
  fctx_t *f = h->data;
  f->actor_closed = 1;
}

static const uint8_t client_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
static const uint8_t empty_settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int once;
#ifdef FUZZ_TUNNEL_GATEWAY
  cr_tunnel_callbacks_t tcbs = {NULL, on_ready, on_goaway, on_tunnel_close};
#else
  cr_tunnel_callbacks_t tcbs = {on_stream, on_ready, on_goaway, on_tunnel_close};
#endif
  cr_tunnel_opts_t opts;
  uv_loop_t loop;
  fctx_t *f;
  fuzz_mem_t *m;
  uint8_t *in, mode;
  size_t inlen = 0, bytes_out = 0;
  unsigned flags = 0;

  if (!once) {
    once = 1;
    cr_log_setup(getenv("FUZZ_LOG") ? CR_LOG_DEBUG : CR_LOG_ERROR, CR_LOG_LOGFMT);
  }
  if (size < 1)
    return 0;
  mode = data[0];
  data++;
  size--;

  /* the prologue a well-behaved peer sends first, then the input */
  in = malloc(sizeof client_preface + sizeof empty_settings + size + 1);
  if (!(mode & 64)) {
    if (FUZZ_ROLE == CR_TUNNEL_AGENT) {
      memcpy(in, client_preface, sizeof client_preface - 1);
      inlen += sizeof client_preface - 1;
    }
    memcpy(in + inlen, empty_settings, sizeof empty_settings);
    inlen += sizeof empty_settings;
  }
  memcpy(in + inlen, data, size);
  inlen += size;

  if ((mode & 3) == 1)
    flags |= FUZZ_MEM_EOF;
  else if ((mode & 3) == 2)
    flags |= FUZZ_MEM_RESET;
  if (mode & 4)
    flags |= FUZZ_MEM_SPLIT;
  if (mode & 8)
    flags |= FUZZ_MEM_WRITE_FAIL;

  f = calloc(1, sizeof *f);
  f->rng = 0x9e3779b9u ^ mode ^ ((uint32_t)size << 8) ^ (size ? (uint32_t)data[size - 1] << 16 : 0);
  if (uv_loop_init(&loop) != 0)
    abort();
  uv_idle_init(&loop, &f->actor);
  f->actor.data = f;

  memset(&opts, 0, sizeof opts);
  opts.role = FUZZ_ROLE;
  if (mode & 16) {
    opts.stream_window = 1024;
    opts.connection_window = 4096;
    opts.send_high_water = 512;
  }
  if (mode & 128)
    opts.max_streams = 3;
  m = fuzz_mem_new(&loop, in, inlen, flags, f->rng);
  m->bytes_written = &bytes_out;
  f->t = cr_tunnel_new(&m->s, &opts, &tcbs, f);
  if (cr_tunnel_start(f->t) != 0)
    __builtin_trap();
#ifdef FUZZ_TUNNEL_GATEWAY
  open_one(f);
  if (!(mode & 128)) {
    open_one(f);
    open_one(f);
    open_one(f);
  }
#endif
  fuzz_run_until_quiet(&loop, 4 * (int)inlen + 2000);

  if (!f->tunnel_closed) {
    if (mode & 32)
      cr_tunnel_shutdown(f->t, 0);
    else
      cr_tunnel_close(f->t, CR_ECLOSED);
  }
  uv_close((uv_handle_t *)&f->actor, actor_closed);
  uv_run(&loop, UV_RUN_NOWAIT); /* a graceful shutdown's deadline (0 ms) is due on the next turn */
  fuzz_run_to_end(&loop);
  if (!f->tunnel_closed || f->closed != f->announced)
    __builtin_trap();
  if (getenv("FUZZ_LOG")) {
    fprintf(stderr, "fuzz: streams=%zu bytes_out=%zu\n", f->announced, bytes_out);
    cr_log_flush();
  }
  if (uv_loop_close(&loop) != 0)
    __builtin_trap(); /* a handle or request left behind */
  free(f);
  free(in);
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP CONNECT through a proxy: the exchange over a stream (state machine below), Basic as the one
 * authentication scheme so far, and the dial that puts TCP to the proxy and the exchange under one
 * deadline. See proxy_connect.h for the contracts. */
#include "ccrelay/proxy_connect.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"

/* The request head: the CONNECT line, Host, one Proxy-Authorization, User-Agent. */
#define MAX_REQUEST 8192
#define DETAIL_LEN 512

/* ---------------------------------------------------------------- Basic */

typedef struct basic {
  cr_proxy_auth_t base;
  char *username;
  char *password;
  int sent;
} basic_t;

static void base64_append(cr_buf_t *out, const unsigned char *in, size_t n) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
    char q[4] = {tbl[v >> 18 & 63], tbl[v >> 12 & 63], i + 1 < n ? tbl[v >> 6 & 63] : '=', i + 2 < n ? tbl[v & 63] : '='};
    cr_buf_append(out, q, 4);
  }
}

static int basic_initial(cr_proxy_auth_t *a, cr_buf_t *out) {
  basic_t *b = (basic_t *)a;
  size_t ul = strlen(b->username), pl = strlen(b->password);
  unsigned char *pair = cr_malloc(ul + 1 + pl);
  memcpy(pair, b->username, ul);
  pair[ul] = ':';
  memcpy(pair + ul + 1, b->password, pl);
  cr_buf_append(out, "Basic ", 6);
  base64_append(out, pair, ul + 1 + pl);
  cr_wipe(pair, ul + 1 + pl);
  free(pair);
  b->sent = 1;
  return 0;
}

/* Whether one of resp's Proxy-Authenticate fields offers scheme (the first token of each field;
 * a proxy lists one challenge per field in practice). */
static int offers(const cr_http_msg_t *resp, const char *scheme) {
  size_t n = strlen(scheme);
  for (size_t i = 0; i < resp->nheaders; i++) {
    const cr_http_header_t *h = &resp->headers[i];
    if (strcasecmp(h->name, "proxy-authenticate") == 0 && strncasecmp(h->value, scheme, n) == 0 &&
        (h->value[n] == '\0' || h->value[n] == ' ' || h->value[n] == ','))
      return 1;
  }
  return 0;
}

static int basic_respond(cr_proxy_auth_t *a, const cr_http_msg_t *resp, cr_buf_t *out, char *why, size_t whylen) {
  basic_t *b = (basic_t *)a;
  (void)out;
  if (!offers(resp, "Basic"))
    snprintf(why, whylen, "the proxy does not offer Basic authentication");
  else if (b->sent)
    snprintf(why, whylen, "the proxy refused the credentials of user '%s'", b->username);
  else
    snprintf(why, whylen, "the proxy asked again");
  /* The credentials went with the first request: a challenge after them is a refusal. */
  return 0;
}

static void basic_free(cr_proxy_auth_t *a) {
  basic_t *b = (basic_t *)a;
  cr_wipe(b->password, strlen(b->password));
  free(b->password);
  free(b->username);
  free(b);
}

static const cr_proxy_auth_vtbl_t basic_vt = {"Basic", basic_initial, basic_respond, NULL, basic_free};

cr_proxy_auth_t *cr_proxy_auth_basic_new(const char *username, const char *password) {
  basic_t *b = cr_calloc(1, sizeof *b);
  b->base.vt = &basic_vt;
  b->username = cr_strdup(username);
  b->password = cr_strdup(password);
  return &b->base;
}

void cr_proxy_auth_free(cr_proxy_auth_t *a) {
  if (a != NULL)
    a->vt->free(a);
}

/* ---------------------------------------------------------------- the exchange */

/* Where the answer being parsed leads; set by the parser callbacks, acted on after each parse. */
typedef enum {
  P_WAIT,   /* reading an answer */
  P_TUNNEL, /* a 2xx head: the tunnel is open */
  P_ROUND,  /* a 407 was read to its end and the scheme has another round */
  P_FAIL    /* an answer that ends the exchange: status and detail are set */
} phase_t;

struct cr_proxy_connect {
  cr_stream_t *s;
  void *saved_data; /* s->data while the exchange borrows it */
  char *host;
  unsigned port;
  char *label;
  char *hint;
  cr_proxy_auth_t *auth;
  cr_http1_parser_t *parser;
  cr_buf_t req;     /* the request being written; kept until its write callback */
  cr_buf_t next;    /* the next round's Proxy-Authorization */
  phase_t phase;
  unsigned rounds;
  int fail_status;
  unsigned writing : 1;      /* a write of ours has not called back yet */
  unsigned send_pending : 1; /* the next round waits for that write */
  unsigned done : 1;         /* cb fired or the exchange was cancelled */
  cr_proxy_connect_cb cb;
  void *data;
  char detail[DETAIL_LEN];
};

static void pc_free(cr_proxy_connect_t *pc) {
  cr_http1_parser_free(pc->parser);
  if (pc->req.base)
    cr_wipe(pc->req.base, pc->req.len);
  if (pc->next.base)
    cr_wipe(pc->next.base, pc->next.len);
  cr_buf_free(&pc->req);
  cr_buf_free(&pc->next);
  free(pc->host);
  free(pc->label);
  free(pc->hint);
  free(pc);
}

static void set_fail(cr_proxy_connect_t *pc, int status, const char *fmt, ...) CR_PRINTF(3, 4);
static void set_fail(cr_proxy_connect_t *pc, int status, const char *fmt, ...) {
  va_list ap;
  if (pc->phase == P_FAIL)
    return;
  pc->phase = P_FAIL;
  pc->fail_status = status;
  va_start(ap, fmt);
  vsnprintf(pc->detail, sizeof pc->detail, fmt, ap);
  va_end(ap);
}

/* Ends the exchange: the stream goes back as it was, cb fires, and the exchange is freed once no
 * write of ours is pending. Nothing touches the stream after cb (the caller may have closed it). */
static void finish(cr_proxy_connect_t *pc, int status) {
  cr_stream_read_stop(pc->s);
  pc->s->data = pc->saved_data;
  pc->done = 1;
  pc->cb(pc, status, status == 0 ? "" : pc->detail, pc->data);
  if (!pc->writing)
    pc_free(pc);
}

static void on_write(cr_stream_t *s, int status, void *arg);

static int send_request(cr_proxy_connect_t *pc, const cr_buf_t *auth) {
  const char *lb = strchr(pc->host, ':') ? "[" : "", *rb = strchr(pc->host, ':') ? "]" : "";
  uv_buf_t b;
  int r;
  if (pc->req.base)
    cr_wipe(pc->req.base, pc->req.len);
  cr_buf_reset(&pc->req);
  r = cr_buf_appendf(&pc->req, "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n", lb, pc->host, rb, pc->port, lb,
                     pc->host, rb, pc->port);
  if (r == 0 && auth->len > 0)
    r = cr_buf_appendf(&pc->req, "Proxy-Authorization: %.*s\r\n", (int)auth->len, auth->base);
  if (r == 0)
    r = cr_buf_appendf(&pc->req, "User-Agent: ccrelay/%s\r\n\r\n", CCRELAY_VERSION);
  if (r < 0)
    return r;
  b = uv_buf_init(pc->req.base, (unsigned)pc->req.len);
  r = cr_stream_write(pc->s, &b, 1, on_write, pc);
  if (r == 0)
    pc->writing = 1;
  return r;
}

static void next_round(cr_proxy_connect_t *pc) {
  int r;
  pc->phase = P_WAIT;
  cr_http1_parser_resume(pc->parser);
  if (pc->writing) { /* the proxy answered before our write called back: send from on_write */
    pc->send_pending = 1;
    return;
  }
  r = send_request(pc, &pc->next);
  cr_wipe(pc->next.base, pc->next.len);
  cr_buf_reset(&pc->next);
  if (r < 0) {
    set_fail(pc, r, "cannot send CONNECT to proxy %s: %s", pc->label, cr_strerror(r));
    finish(pc, pc->fail_status);
  }
}

static void on_write(cr_stream_t *s, int status, void *arg) {
  cr_proxy_connect_t *pc = arg;
  (void)s;
  pc->writing = 0;
  if (pc->done) {
    pc_free(pc);
    return;
  }
  if (status < 0) {
    set_fail(pc, status, "cannot send CONNECT to proxy %s: %s", pc->label, cr_strerror(status));
    finish(pc, pc->fail_status);
    return;
  }
  if (pc->send_pending) {
    pc->send_pending = 0;
    next_round(pc);
  }
}

/* The first token of every Proxy-Authenticate field, "Negotiate, NTLM", for messages. */
static void schemes_offered(const cr_http_msg_t *m, char *out, size_t len) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < m->nheaders && o + 1 < len; i++) {
    const cr_http_header_t *h = &m->headers[i];
    size_t n = strcspn(h->value, " ,");
    if (strcasecmp(h->name, "proxy-authenticate") != 0 || n == 0)
      continue;
    o += (size_t)snprintf(out + o, len - o, "%s%.*s", o ? ", " : "", (int)CR_MIN(n, 32), h->value);
  }
  if (o == 0)
    snprintf(out, len, "no scheme");
}

static int on_head(void *ud, cr_http_msg_t *m) {
  cr_proxy_connect_t *pc = ud;
  const char *lb = strchr(pc->host, ':') ? "[" : "", *rb = strchr(pc->host, ':') ? "]" : "";
  char why[256] = "";
  if (m->status >= 200 && m->status < 300) {
    if (pc->auth && pc->auth->vt->done && pc->auth->vt->done(pc->auth, m, why, sizeof why) < 0)
      set_fail(pc, CR_EPROXY_AUTH, "proxy %s opened the tunnel, but %s authentication did not verify it: %s",
               pc->label, pc->auth->vt->scheme, why);
    else
      pc->phase = P_TUNNEL;
    return CR_HTTP1_PAUSE;
  }
  if (m->status == 407) {
    char offered[128];
    int more = 0;
    schemes_offered(m, offered, sizeof offered);
    cr_buf_reset(&pc->next);
    if (pc->auth == NULL) {
      set_fail(pc, CR_EPROXY_AUTH, "407 from %s: the proxy asks for authentication (it offers %s); set %s",
               pc->label, offered, pc->hint ? pc->hint : "proxy credentials");
      return CR_HTTP1_PAUSE;
    }
    if (++pc->rounds < CR_PROXY_MAX_ROUNDS)
      more = pc->auth->vt->respond(pc->auth, m, &pc->next, why, sizeof why);
    else
      snprintf(why, sizeof why, "no tunnel after %d rounds", CR_PROXY_MAX_ROUNDS);
    if (more <= 0) {
      set_fail(pc, CR_EPROXY_AUTH, "407 from %s: %s (it offers %s); check %s", pc->label, why, offered,
               pc->hint ? pc->hint : "the proxy credentials");
      return CR_HTTP1_PAUSE;
    }
    if (!m->keep_alive) {
      set_fail(pc, CR_EPROXY_AUTH,
               "407 from %s: the proxy closes the connection after its challenge, so %s authentication "
               "cannot answer it",
               pc->label, pc->auth->vt->scheme);
      return CR_HTTP1_PAUSE;
    }
    return 0; /* read the 407's body to its end, then the next round (on_end) */
  }
  if (m->status == 403)
    set_fail(pc, CR_EPROXY,
             "the proxy refused the CONNECT to %s%s%s:%u (403 from %s): its rules do not allow this destination",
             lb, pc->host, rb, pc->port, pc->label);
  else if (m->status == 502 || m->status == 503 || m->status == 504)
    set_fail(pc, CR_EPROXY, "the proxy could not reach the gateway %s%s%s:%u (%d from %s)", lb, pc->host, rb,
             pc->port, m->status, pc->label);
  else
    set_fail(pc, CR_EPROXY, "proxy %s answered the CONNECT to %s%s%s:%u with %d", pc->label, lb, pc->host, rb,
             pc->port, m->status);
  return CR_HTTP1_PAUSE;
}

static int on_end(void *ud) {
  cr_proxy_connect_t *pc = ud;
  if (pc->phase != P_WAIT)
    return 0;
  pc->phase = P_ROUND;
  return CR_HTTP1_PAUSE;
}

static const cr_http1_callbacks_t parser_cbs = {.on_head = on_head, .on_end = on_end};

static void on_read(cr_stream_t *s, ssize_t n, const char *data) {
  cr_proxy_connect_t *pc = s->data;
  ssize_t used;
  if (n < 0) {
    if (n == UV_EOF)
      set_fail(pc, CR_EPROXY, "proxy %s closed the connection %s", pc->label,
               cr_http1_parser_in_message(pc->parser) ? "in the middle of its answer to CONNECT"
                                                      : "without answering CONNECT");
    else
      set_fail(pc, (int)n, "reading from proxy %s: %s", pc->label, cr_strerror((int)n));
    finish(pc, pc->fail_status);
    return;
  }
  used = cr_http1_parse(pc->parser, data, (size_t)n);
  if (used < 0) {
    if (used == CR_EHTTP_TOO_LARGE)
      set_fail(pc, CR_EPROXY, "proxy %s sent an answer head larger than %d bytes", pc->label, CR_PROXY_MAX_HEAD);
    else
      set_fail(pc, CR_EPROXY, "proxy %s sent a malformed answer to CONNECT: %s", pc->label,
               cr_http1_parser_error(pc->parser));
    finish(pc, pc->fail_status);
    return;
  }
  switch (pc->phase) {
  case P_WAIT:
    return;
  case P_FAIL:
    finish(pc, pc->fail_status);
    return;
  case P_TUNNEL:
    if (used < n) {
      set_fail(pc, CR_EPROXY,
               "proxy %s sent %zd bytes after its 2xx answer, before the TLS handshake began (a tunnel "
               "carries nothing there)",
               pc->label, n - used);
      finish(pc, pc->fail_status);
      return;
    }
    finish(pc, 0);
    return;
  case P_ROUND:
    if (used < n) {
      set_fail(pc, CR_EPROXY, "proxy %s sent %zd bytes after its 407 answer", pc->label, n - used);
      finish(pc, pc->fail_status);
      return;
    }
    next_round(pc);
    return;
  }
}

cr_proxy_connect_t *cr_proxy_connect_start(cr_stream_t *s, const cr_proxy_connect_opts_t *o, cr_proxy_connect_cb cb,
                                           void *data, int *err) {
  cr_proxy_connect_t *pc = cr_calloc(1, sizeof *pc);
  cr_http1_limits_t lim = {CR_PROXY_MAX_HEAD, 100, 0, 0};
  int r;
  pc->s = s;
  pc->host = cr_strdup(o->host);
  pc->port = o->port;
  pc->label = cr_strdup(o->proxy_label ? o->proxy_label : s->peer);
  pc->hint = o->auth_hint ? cr_strdup(o->auth_hint) : NULL;
  pc->auth = o->auth;
  pc->cb = cb;
  pc->data = data;
  cr_buf_init(&pc->req, MAX_REQUEST);
  cr_buf_init(&pc->next, MAX_REQUEST / 2);
  pc->parser = cr_http1_parser_new(CR_HTTP1_RESPONSE, &lim, &parser_cbs, pc);
  pc->saved_data = s->data;
  s->data = pc;
  if (pc->auth != NULL)
    r = pc->auth->vt->initial(pc->auth, &pc->next);
  else
    r = 0;
  if (r == 0)
    r = send_request(pc, &pc->next);
  cr_wipe(pc->next.base, pc->next.len);
  cr_buf_reset(&pc->next);
  if (r == 0)
    r = cr_stream_read_start(s, on_read);
  if (r < 0) {
    s->data = pc->saved_data;
    pc->done = 1;
    if (!pc->writing)
      pc_free(pc);
    *err = r;
    return NULL;
  }
  return pc;
}

void cr_proxy_connect_cancel(cr_proxy_connect_t *pc) {
  cr_stream_read_stop(pc->s);
  pc->s->data = pc->saved_data;
  pc->done = 1;
  if (!pc->writing)
    pc_free(pc);
}

/* ---------------------------------------------------------------- the dial */

/* The dial handle: a cr_stream_t that stands for the connection until the tunnel is open. */
typedef struct dial {
  cr_stream_t base;
  cr_stream_t *tcp;
  cr_proxy_connect_t *pc;
  uv_timer_t timer;
  cr_stream_connect_cb cb;
  cr_stream_close_cb close_cb;
  cr_proxy_auth_t *auth;
  char *host;
  unsigned port;
  char *hint;
  char label[300];
  uint64_t timeout_ms;
  unsigned connected : 1; /* TCP to the proxy is up */
  unsigned ended : 1;     /* cb fired, or the handle was closed */
  char detail[DETAIL_LEN + 64];
} dial_t;

static void dial_timer_closed(uv_handle_t *h) {
  dial_t *d = h->data;
  if (d->close_cb)
    d->close_cb(&d->base);
  free(d->host);
  free(d->hint);
  free(d);
}

static void dial_fail(dial_t *d, int status, const char *fmt, ...) CR_PRINTF(3, 4);
static void dial_fail(dial_t *d, int status, const char *fmt, ...) {
  va_list ap;
  if (d->ended)
    return;
  d->ended = 1;
  uv_timer_stop(&d->timer);
  va_start(ap, fmt);
  vsnprintf(d->detail, sizeof d->detail, fmt, ap);
  va_end(ap);
  if (d->pc) {
    cr_proxy_connect_cancel(d->pc);
    d->pc = NULL;
  }
  d->cb(&d->base, status);
}

static void on_dial_timeout(uv_timer_t *t) {
  dial_t *d = t->data;
  if (d->connected)
    dial_fail(d, UV_ETIMEDOUT, "proxy %s did not answer CONNECT within %llu ms (proxy.connect_timeout)", d->label,
              (unsigned long long)d->timeout_ms);
  else
    dial_fail(d, UV_ETIMEDOUT, "no TCP connection to proxy %s within %llu ms (proxy.connect_timeout)", d->label,
              (unsigned long long)d->timeout_ms);
}

static void on_exchange(cr_proxy_connect_t *pc, int status, const char *detail, void *data) {
  dial_t *d = data;
  cr_stream_t *tcp = d->tcp;
  cr_stream_connect_cb cb = d->cb;
  (void)pc;
  d->pc = NULL;
  if (status < 0) {
    dial_fail(d, status, "%s", detail);
    return;
  }
  /* The TCP stream is the caller's from here; the handle closes itself. */
  d->ended = 1;
  d->tcp = NULL;
  tcp->data = d->base.data;
  uv_close((uv_handle_t *)&d->timer, dial_timer_closed);
  cb(tcp, 0);
}

static void on_proxy_connected(cr_stream_t *tcp, int status) {
  dial_t *d = tcp->data;
  cr_proxy_connect_opts_t o = {d->host, d->port, d->label, d->auth, d->hint};
  int err = 0;
  if (status < 0) {
    dial_fail(d, status, "cannot connect to proxy %s: %s", d->label, cr_strerror(status));
    return;
  }
  d->connected = 1;
  d->pc = cr_proxy_connect_start(tcp, &o, on_exchange, d, &err);
  if (d->pc == NULL)
    dial_fail(d, err, "cannot send CONNECT to proxy %s: %s", d->label, cr_strerror(err));
}

static int dial_not_connected(void) { return UV_ENOTCONN; }
static int dial_read_start(cr_stream_t *s, cr_stream_read_cb cb) {
  (void)s;
  (void)cb;
  return dial_not_connected();
}
static int dial_read_stop(cr_stream_t *s) {
  (void)s;
  return 0;
}
static int dial_write(cr_stream_t *s, const uv_buf_t bufs[], unsigned n, cr_stream_write_cb cb, void *arg) {
  (void)s, (void)bufs, (void)n, (void)cb, (void)arg;
  return dial_not_connected();
}
static int dial_shutdown(cr_stream_t *s, cr_stream_write_cb cb, void *arg) {
  (void)s, (void)cb, (void)arg;
  return dial_not_connected();
}
static size_t dial_queue(const cr_stream_t *s) {
  (void)s;
  return 0;
}
static size_t dial_detail(const cr_stream_t *s, char *buf, size_t len) {
  const dial_t *d = cr_container_of(s, dial_t, base);
  return len ? cr_strlcpy(buf, d->detail, len) : 0;
}

static void dial_close(cr_stream_t *s, cr_stream_close_cb cb) {
  dial_t *d = cr_container_of(s, dial_t, base);
  d->ended = 1;
  d->close_cb = cb;
  if (d->pc) {
    cr_proxy_connect_cancel(d->pc);
    d->pc = NULL;
  }
  if (d->tcp) {
    cr_stream_close(d->tcp, NULL);
    d->tcp = NULL;
  }
  uv_close((uv_handle_t *)&d->timer, dial_timer_closed);
}

static const cr_stream_vtbl_t dial_vt = {
    "proxy-dial", 0, dial_read_start, dial_read_stop, dial_write, dial_shutdown, dial_close, dial_queue, dial_detail,
};

int cr_proxy_dial(uv_loop_t *loop, const cr_proxy_dial_opts_t *opts, const char *host, unsigned port,
                  cr_stream_connect_cb cb, void *data, cr_stream_t **out) {
  dial_t *d = cr_calloc(1, sizeof *d);
  const char *lb = strchr(opts->proxy_host, ':') ? "[" : "", *rb = strchr(opts->proxy_host, ':') ? "]" : "";
  int r;
  snprintf(d->label, sizeof d->label, "%s%s%s:%u", lb, opts->proxy_host, rb, opts->proxy_port);
  r = cr_tcp_connect(loop, opts->proxy_host, opts->proxy_port, on_proxy_connected, d, &d->tcp);
  if (r < 0) {
    free(d);
    return r;
  }
  d->base.vt = &dial_vt;
  d->base.loop = loop;
  d->base.data = data;
  cr_strlcpy(d->base.peer, d->label, sizeof d->base.peer);
  d->cb = cb;
  d->auth = opts->auth;
  d->host = cr_strdup(host);
  d->port = port;
  d->hint = opts->auth_hint ? cr_strdup(opts->auth_hint) : NULL;
  d->timeout_ms = opts->timeout_ms;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  if (opts->timeout_ms > 0)
    uv_timer_start(&d->timer, on_dial_timeout, opts->timeout_ms, 0);
  *out = &d->base;
  return 0;
}

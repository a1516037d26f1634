/* SPDX-License-Identifier: Apache-2.0 */
/* The gateway: agent tunnels in, public HTTPS calls in, each call down one tunnel stream.
 *
 * Public connection life (one exchange at a time; a pipelined request waits in `pending` until the
 * exchange before it is finished):
 *   HANDSHAKE -> WAIT_HEAD -> EXCHANGE -> WAIT_HEAD (keep-alive) ... -> closed
 * An exchange ends when the request was read to its end, the tunnel stream is closed and every
 * response byte has been flushed to the caller. */
#include "ccrelay/gateway.h"

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/deadline.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/http1.h"
#include "ccrelay/http_msg.h"
#include "ccrelay/log.h"
#include "ccrelay/process.h"
#include "ccrelay/queue.h"
#include "ccrelay/route.h"
#include "ccrelay/srcmap.h"
#include "ccrelay/stream.h"
#include "ccrelay/tls.h"
#include "ccrelay/tls_sni.h"
#include "ccrelay/tunnel.h"
#include "gateway_internal.h"
#include "ccrelay_revision.h"

#define PENDING_MAX (64 * 1024)
/* With a passthrough service, what the gateway reads of a caller before it knows where the
 * connection goes: the ClientHello (at most CR_TLS_SNI_HELLO_MAX), its record headers and a little
 * slack for a hello cut into many records. A hello that does not fit is terminated here. */
#define PEEK_MAX (CR_TLS_SNI_HELLO_MAX + 1024)
/* Reading stops once this much of the next request(s) is held: one more TLS record (16 KiB) still
 * fits under PENDING_MAX. */
#define PENDING_STOP (16 * 1024)

typedef struct gateway gateway_t;

typedef cr__gw_group_t group_t; /* the tunnel registry's (gateway_tunnels.c) */

/* A tunnel connection between accept and a finished TLS handshake. */
typedef struct tunnel_handshake {
  cr_queue_t link;
  gateway_t *gw;
  cr_stream_t *tls;
  uv_timer_t timer;
  cr_srckey_t src; /* counted in gw->tunnel_src until the handshake ends */
} tunnel_handshake_t;

/* Connections refused at accept (and tunnel handshakes that failed), per listener: the first few of
 * each REFUSE_LOG_WINDOW_MS are logged one by one, the rest in one summary line per window. */
enum { L_TUNNEL, L_PUBLIC, L_COUNT };
enum { R_MAX_CONNECTIONS, R_MAX_HANDSHAKES, R_MAX_PER_SOURCE, R_HS_TIMEOUT, R_HS_FAILED, R_UNKNOWN_SNI, R_SOURCES,
       R_COUNT };
static const char *const listener_names[L_COUNT] = {"tunnel", "public"};
static const char *const reason_keys[R_COUNT] = {"max_connections", "max_handshakes", "max_per_source",
                                                 "handshake_timeout", "handshake_failed", "unknown_server_name",
                                                 "sources"};
#define REFUSE_LOG_WINDOW_MS 10000
#define REFUSE_LOG_BURST 5
/* Descriptors the gateway needs beyond its public connections and tunnel handshakes: tunnels, the
 * admin API, listeners, log and config files. */
#define FD_RESERVE 256

typedef struct refusals {
  cr_log_limit_t log;
  uint64_t by_reason[R_COUNT]; /* in the current window, for the summary */
  uint64_t total[R_COUNT];     /* ever, for metrics */
} refusals_t;

/* What the gateway counts for /metrics, on the loop thread only (cr__gateway_metrics renders it). */
enum { RULE_SOURCES, RULE_CLIENT_CA, RULE_SUBJECTS, RULE_TOKEN, RULE_COUNT };
static const char *const rule_names[RULE_COUNT] = {"sources", "client_ca", "subjects", "token"};
enum { LIM_MAX_BODY, LIM_MAX_CONCURRENT, LIM_COUNT };
static const char *const limit_names[LIM_COUNT] = {"max_body", "max_concurrent"};
/* A service's counters. Blocks are made per service name (host + path prefix) and kept until the
 * gateway ends, so an exchange may hold a pointer to its block across a configuration reload, and
 * a counter keeps counting when its service is reordered. */
typedef struct svc_metrics {
  char *name;                   /* NULL for the unrouted block */
  cr_metrics_calls_t calls;
  uint64_t refused[RULE_COUNT]; /* callers refused by each callers rule */
  uint64_t limits[LIM_COUNT];   /* calls refused or cut by each limit */
} svc_metrics_t;
typedef struct gw_metrics {
  svc_metrics_t **blocks;       /* every service block made, in order (grow-only) */
  size_t nblocks;
  svc_metrics_t **by_service;   /* gw->conf->nservices: the block of each configured service */
  svc_metrics_t unrouted;       /* requests no service took (bad target, no service) */
  uint64_t reloads_ok, reloads_failed;
  time_t reload_last_ok;
  cr_metrics_hist_t rtt;        /* PING round trips of every agent tunnel */
} gw_metrics_t;

/* PC_SHUTDOWN: our close_notify and FIN are out; we read and drop until the caller's EOF (a short
 * lingering close, so an unread request tail does not turn into a reset that destroys our answer).
 * A response cut short enters it with its exchange still set (x->truncated): the FIN, without
 * close_notify, waits behind the bytes still queued for the caller, and the exchange is logged
 * once they are out (or the flush gave up). */
/* PC_PASSTHROUGH: the connection is a passthrough service's; its bytes go untouched to a tunnel
 * stream (gateway_passthrough.c). PC_HANDSHAKE covers the peek at the ClientHello before it. */
typedef enum { PC_HANDSHAKE, PC_WAIT_HEAD, PC_EXCHANGE, PC_SHUTDOWN, PC_CLOSING, PC_PASSTHROUGH } pconn_state_t;
#define LINGER_MS 2000
#define MAX_FREE_EXCHANGES 64 /* a busy loop turn's worth of ended exchanges, kept for the next ones */
#define SCRATCH_EXTRA_HEADERS 8 /* the scratch head copies 1xx heads from the tunnel's: room to spare */
#define PARSER_HEAD_ROOM 4      /* what exchange_begin adds to a request head: request id, Forwarded, XFF */
/* listen(2) backlog of the public listener, and how many queued callers a drain still accepts */
#define PUBLIC_BACKLOG 1024
#define INTERIM_MAX 16 /* 1xx heads relayed per exchange; the agent relays no more either */

typedef struct pconn pconn_t;

/* One configuration in force, or retired by a reload and kept while something still uses it: the
 * exchanges that began under it (their service and group names, their policy slot) and the tunnels a
 * reload could not carry over (its registry). Freed once neither is left. */
typedef struct gw_gen {
  cr_queue_t link;               /* gateway.retired, once retired */
  const cr_conf_gateway_t *conf;
  cr_conf_gateway_t *owned;      /* conf when a reload loaded it; NULL for the caller's (start) */
  cr__gw_policy_t *policy;
  group_t *groups;               /* conf->ngroups */
  size_t refs;                   /* exchanges begun under it, not yet ended */
  uint64_t number;               /* 1 at start, +1 per reload applied */
} gw_gen_t;

typedef struct exchange {
  pconn_t *pc;
  gw_gen_t *gen;         /* the configuration the exchange began under (a reference) */
  cr_tstream_t *ts;      /* NULL once the stream closed (or never opened for a local answer) */
  char request_id[65];
  char method[16];
  const char *service;   /* host of the service, for the access log */
  const char *group;
  svc_metrics_t *m;      /* the block the call counts in (its service's, or unrouted); NULL once counted */
  int status;
  int soap;              /* our own errors as SOAP Faults: the caller's version (cr_http_soap_t) */
  unsigned ninterim;     /* 1xx heads relayed to the caller */
  uint64_t start_ms;
  uint64_t bytes_in;
  uint64_t bytes_out;     /* response body bytes that reached the caller's socket */
  unsigned req_ended : 1;
  unsigned head_sent : 1;
  unsigned resp_ended : 1;
  unsigned resp_chunked : 1;
  unsigned resp_no_body : 1;
  unsigned client_paused : 1; /* we stopped reading the caller because the stream's buffer is full */
  unsigned head_request : 1;
  unsigned keep_alive : 1;
  unsigned http10 : 1;
  unsigned truncated : 1; /* the response was cut short after its head went out */
  unsigned holds_slot : 1; /* counts against its service's max_concurrent (released with its stream) */
  size_t si;             /* the service, when holds_slot */
  uint64_t max_body;     /* the service's limits.max_body; 0: none */
  unsigned expect_continue : 1; /* the caller sent Expect: 100-continue and may hold its body back */
  unsigned continue_sent : 1;   /* a 100 Continue went to the caller */
  char error[160];       /* why the exchange failed, for the access log */
} exchange_t;

struct pconn {
  cr_queue_t link;
  gateway_t *gw;
  cr_srckey_t src; /* counted in gw->public_src while the connection lives */
  cr_stream_t *s;
  cr_http1_parser_t *parser;
  cr_deadline_t deadline; /* header, request, idle or linger timeout, by state */
  pconn_state_t state;
  exchange_t *x;
  cr_buf_t pending;        /* bytes read but not parsed while an exchange is in progress */
  cr_buf_t peek;           /* the caller's first bytes while its server name decides (passthrough) */
  cr__gw_pt_t *pt;         /* PC_PASSTHROUGH: the relay */
  const char *pt_service;  /* its service host and group, for the log */
  const char *pt_group;
  uint64_t pt_start_ms;
  size_t writes_inflight;  /* response bytes handed to the stream, not yet flushed */
  uint64_t flushed;        /* response bytes flushed, ever */
  uint64_t send_mark;      /* flushed when the current send_timeout window began */
  unsigned reading : 1;
  unsigned close_after : 1;
  unsigned stream_closed : 1;
  unsigned timer_closed : 1;
  unsigned eof_seen : 1;
  unsigned shut_done : 1; /* the shutdown's callback fired */
};

struct gateway {
  uv_loop_t loop;
  gw_gen_t *gen;            /* the configuration in force; conf, groups and policy below are its */
  cr_queue_t retired;       /* gw_gen_t.link: earlier generations still in use */
  uv_timer_t retired_timer; /* sweeps them while any is left (their tunnels close on their own) */
  uint64_t reloads_ok;      /* reloads applied / refused (a counter for metrics) */
  uint64_t reloads_failed;
  uint64_t last_reload_ok;  /* wall-clock seconds of the last applied reload; 0: none */
  const cr_conf_gateway_t *conf;
  cr_tls_ctx_t *tunnel_tls;
  cr_tls_ctx_t *public_tls;
  cr_tls_crl_watch_t *tunnel_crls; /* NULL when the listener checks no CRL, and once draining */
  cr_tls_crl_watch_t *public_crls;
  cr_listener_t *tunnel_listener;
  cr_listener_t *public_listener;
  group_t *groups;
  cr_queue_t handshakes;
  cr_queue_t pconns;
  size_t npconns;
  size_t public_handshakes; /* pconns in PC_HANDSHAKE */
  size_t tunnel_handshakes; /* entries of handshakes */
  cr_srcmap_t *public_src;  /* every pconn, by source */
  cr_srcmap_t *tunnel_src;  /* every tunnel handshake, by source */
  cr_srckey_t admitted;     /* the source the admit callback just let in, for the connection callback */
  refusals_t refusals[L_COUNT];
  uv_timer_t refuse_timer;  /* writes the summary lines when a window with suppressed lines ends */
  uint64_t pconns_begun; /* ever; memtrim's busy check compares it with pconns_seen */
  uint64_t pconns_seen;
  cr_process_t *proc; /* signals, drain deadline, log flush, heap trim; NULL until the listeners are up */
  int draining;
  int tunnels_shut;      /* draining, and the tunnels got their GOAWAY */
  cr__gw_admin_t *admin; /* NULL unless admin.listen is set (and after the drain began) */
  cr__gw_replicas_t *replicas; /* this replica's id and the set told to agents */
  cr_admin_t *probe;     /* NULL unless probe.listen is set; open until the process ends */
  cr__gw_probe_ops_t probe_ops;
  /* Reused for every forwarded request head and every response head (no allocation per request
   * once warm); the two uses never nest, since no callback fires inside the calls they feed. */
  cr_http_msg_t scratch_head;
  cr_buf_t scratch_out;
  cr_freelist_t free_exchanges;
  cr__gw_policy_t *policy; /* services' callers rules and limits (gateway_policy.c) */
  gw_metrics_t metrics;
  int has_passthrough;     /* some service is mode: passthrough: callers' ClientHellos are peeked at */
};

static void pconn_close(pconn_t *pc);
static void pconn_after_shutdown(pconn_t *pc);
static void on_idle_timeout(cr_deadline_t *d);
static void on_flush_timeout(cr_deadline_t *d);
static void pconn_try_finish(pconn_t *pc);
static int pconn_start_reading(pconn_t *pc);
static void on_send_timeout(cr_deadline_t *d);

/* Callers connected (or connecting), or arrived since the previous check: heap they freed is likely
 * to be wanted again soon (callers opening a connection per request leave instants with none). */
static int gateway_busy(void *arg) {
  gateway_t *gw = arg;
  int busy = gw->npconns > 0 || !cr_queue_empty(&gw->handshakes) || gw->pconns_begun != gw->pconns_seen;
  gw->pconns_seen = gw->pconns_begun;
  return busy;
}

/* Idle: the caches kept for the next burst go back, so the heap trim can return their pages (the
 * process module adds the lower modules' own). */
static void gateway_release_caches(void *arg) {
  gateway_t *gw = arg;
  cr_freelist_drain(&gw->free_exchanges);
  cr__gw_groups_release_caches(gw->groups, gw->conf->ngroups);
}

static void gens_sweep(gateway_t *gw);

/* An exchange is over: it goes back to the free list and lets go of its generation. */
static void exchange_put(gateway_t *gw, exchange_t *x) {
  if (x != NULL && x->gen != NULL) {
    gw_gen_t *g = x->gen;
    x->gen = NULL;
    if (--g->refs == 0 && g != gw->gen)
      gens_sweep(gw);
  }
  cr_freelist_put(&gw->free_exchanges, x);
}

/* ---------- agent identity -> relay group ---------- */

static int name_in_group(const cr_conf_group_t *g, const char *name) {
  for (size_t i = 0; i < g->nagents; i++)
    if (strcmp(g->agents[i], name) == 0)
      return 1;
  return 0;
}

typedef struct group_match {
  gateway_t *gw;
  group_t *found;
} group_match_t;

static int group_of_name(const char *name, void *arg) {
  group_match_t *m = arg;
  for (size_t i = 0; i < m->gw->conf->ngroups; i++)
    if (name_in_group(&m->gw->conf->groups[i], name)) {
      m->found = &m->gw->groups[i];
      return 1;
    }
  return 0;
}

/* The group whose agents list names this certificate's CN or one of its DNS SANs; NULL if none. */
static group_t *group_for_cert(gateway_t *gw, X509 *cert, char *cn, size_t cnlen) {
  group_match_t m = {gw, NULL};
  cr_x509_common_name(cert, cn, cnlen);
  if (!(cn[0] && group_of_name(cn, &m)))
    cr_x509_each_dns_san(cert, group_of_name, &m);
  return m.found;
}

static int tunnel_peer_check(X509 *leaf, void *arg, char *why, size_t whylen) {
  gateway_t *gw = arg;
  char cn[128];
  if (group_for_cert(gw, leaf, cn, sizeof cn) != NULL)
    return 0;
  snprintf(why, whylen,
           "agent certificate CN=%s maps to no relay group; add it to a group's agents list in %s", cn,
           gw->conf->path);
  return 1;
}

/* ---------- refused connections: counted, and logged at a bounded rate ---------- */

static void refusals_summary(gateway_t *gw, int which, uint64_t n) {
  refusals_t *rf = &gw->refusals[which];
  char fields[256];
  size_t off = 0;
  for (int r = 0; r < R_COUNT; r++) {
    if (rf->by_reason[r] > 0 && off < sizeof fields)
      off += (size_t)snprintf(fields + off, sizeof fields - off, " %s=%llu", reason_keys[r],
                              (unsigned long long)rf->by_reason[r]);
    rf->by_reason[r] = 0;
  }
  if (n > 0)
    cr_log_warn("connections refused", "listener=%s count=%llu not_logged=%llu interval_s=%u%s",
                listener_names[which], (unsigned long long)(n + rf->log.burst), (unsigned long long)n,
                REFUSE_LOG_WINDOW_MS / 1000, fields);
}

/* Writes the summary of every window that is over; re-arms for a window still open. */
static void refuse_timer_cb(uv_timer_t *h) {
  gateway_t *gw = h->data;
  uint64_t now = uv_now(&gw->loop), next = 0;
  for (int i = 0; i < L_COUNT; i++) {
    refusals_t *rf = &gw->refusals[i];
    uint64_t n;
    if (rf->log.suppressed == 0)
      continue;
    if ((n = cr_log_limit_due(&rf->log, now)) > 0) {
      refusals_summary(gw, i, n);
      continue;
    }
    if (next == 0 || rf->log.start_ms + REFUSE_LOG_WINDOW_MS - now < next)
      next = rf->log.start_ms + REFUSE_LOG_WINDOW_MS - now;
  }
  if (next > 0)
    uv_timer_start(&gw->refuse_timer, refuse_timer_cb, next, 0);
}

/* Counts one refusal; 1 when it may be logged on its own line. */
static int refusal(gateway_t *gw, int which, int reason) {
  refusals_t *rf = &gw->refusals[which];
  uint64_t now = uv_now(&gw->loop), n;
  if ((n = cr_log_limit_due(&rf->log, now)) > 0)
    refusals_summary(gw, which, n);
  else if (rf->log.in_window == 0)
    for (int r = 0; r < R_COUNT; r++)
      rf->by_reason[r] = 0;
  rf->by_reason[reason]++;
  rf->total[reason]++;
  if (cr_log_limit_hit(&rf->log, now))
    return 1;
  if (!uv_is_active((uv_handle_t *)&gw->refuse_timer))
    uv_timer_start(&gw->refuse_timer, refuse_timer_cb, rf->log.start_ms + REFUSE_LOG_WINDOW_MS - now, 0);
  return 0;
}

static void log_refused(gateway_t *gw, int which, int reason, const struct sockaddr *peer, unsigned limit) {
  char addr[64];
  if (!refusal(gw, which, reason))
    return;
  cr_sockaddr_format(peer, addr, sizeof addr);
  cr_log_warn("connection refused", "listener=%s peer=%s reason=\"%s (%u) reached\"", listener_names[which], addr,
              reason_keys[reason], limit);
}

/* ---------- agent tunnels: handshake and admission (the registry: gateway_tunnels.c) ---------- */

static void handshake_timer_closed(uv_handle_t *h) {
  tunnel_handshake_t *hs = h->data;
  free(hs);
}

static void handshake_done(tunnel_handshake_t *hs) {
  cr_queue_remove(&hs->link);
  hs->gw->tunnel_handshakes--;
  cr_srcmap_release(hs->gw->tunnel_src, &hs->src);
  uv_timer_stop(&hs->timer);
  uv_close((uv_handle_t *)&hs->timer, handshake_timer_closed);
}

static void on_tunnel_handshake(cr_stream_t *tls, int status) {
  tunnel_handshake_t *hs = tls->data;
  gateway_t *gw = hs->gw;
  group_t *g;
  char cn[128];
  X509 *cert;

  handshake_done(hs);
  if (status < 0) {
    if (refusal(gw, L_TUNNEL, R_HS_FAILED))
      cr_log_warn("agent refused", "peer=%s reason=\"%s: %s\"", tls->peer, cr_strerror(status),
                  cr_tls_stream_error(tls));
    cr_stream_close(tls, NULL);
    return;
  }
  cert = cr_tls_stream_peer_cert(tls);
  g = cert ? group_for_cert(gw, cert, cn, sizeof cn) : NULL;
  if (g == NULL) { /* the peer check already refused these; kept as a second lock */
    cr_log_warn("agent refused", "peer=%s reason=\"certificate maps to no relay group\"", tls->peer);
    cr_stream_close(tls, NULL);
    return;
  }
  if (gw->draining) {
    cr_stream_close(tls, NULL);
    return;
  }
  if (cr_tls_stream_verify_warning(tls)[0]) /* tunnel.revocation: soft */
    cr_log_warn("agent admitted without a current CRL", "peer=%s agent=%s reason=\"%s\"", tls->peer, cn,
                cr_tls_stream_verify_warning(tls));
  cr__gw_tunnel_add(g, tls, cn, gw->conf);
}

static void on_tunnel_handshake_timeout(uv_timer_t *timer) {
  tunnel_handshake_t *hs = timer->data;
  if (refusal(hs->gw, L_TUNNEL, R_HS_TIMEOUT))
    cr_log_warn("agent refused", "peer=%s reason=\"TLS handshake not finished within %llu ms\"", hs->tls->peer,
                (unsigned long long)hs->gw->conf->tunnel.handshake_timeout_ms);
  cr_stream_close(hs->tls, NULL);
  handshake_done(hs);
}

/* Before anything is allocated: the caps on connections not yet authenticated. */
static int tunnel_admit(cr_listener_t *l, const struct sockaddr *peer, void *arg) {
  gateway_t *gw = arg;
  const unsigned max_hs = gw->conf->tunnel.max_handshakes;
  (void)l;
  if (gw->draining || cr_srcmap_key(peer, &gw->admitted) < 0)
    return CR_ECLOSED;
  if (gw->tunnel_handshakes >= max_hs) {
    log_refused(gw, L_TUNNEL, R_MAX_HANDSHAKES, peer, max_hs);
    return CR_ELIMIT;
  }
  if (cr_srcmap_acquire(gw->tunnel_src, &gw->admitted) < 0) {
    log_refused(gw, L_TUNNEL, R_MAX_PER_SOURCE, peer, gw->conf->tunnel.max_per_source);
    return CR_ELIMIT;
  }
  return 0;
}

static void on_tunnel_connection(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  gateway_t *gw = arg;
  tunnel_handshake_t *hs;
  cr_stream_t *tls;
  (void)l;
  hs = cr_calloc(1, sizeof *hs);
  hs->gw = gw;
  hs->src = gw->admitted; /* tunnel_admit counted it */
  gw->tunnel_handshakes++;
  tls = cr_tls_stream_new(conn, gw->tunnel_tls, NULL);
  tls->data = hs;
  hs->tls = tls;
  uv_timer_init(&gw->loop, &hs->timer);
  hs->timer.data = hs;
  uv_timer_start(&hs->timer, on_tunnel_handshake_timeout, gw->conf->tunnel.handshake_timeout_ms, 0);
  cr_queue_insert_tail(&gw->handshakes, &hs->link);
  if (cr_tls_stream_handshake(tls, on_tunnel_handshake) < 0) {
    cr_stream_close(tls, NULL);
    handshake_done(hs);
  }
}

/* ---------- writing to the caller ---------- */

typedef struct pwrite {
  pconn_t *pc;
  size_t consume; /* body bytes: counted as delivered and given back to the stream's window once flushed */
  size_t len;
  char data[];
} pwrite_t;

/* A caller that stops taking its response: while response bytes wait for it, a send_timeout window
 * runs from when they began to wait, and it is dropped once the caller has taken them all
 * (pconn_write_done), so a window that ends had bytes waiting throughout. The caller must have taken
 * some of them by then (at least one write, and min_send_rate x send_timeout bytes), else it is cut.
 * The connection's deadline is free for this: from the response head to the end of the exchange
 * nothing else uses it, and a deadline already set (the header timeout that bounds reading the rest
 * of a request answered early) is left alone. */
static void send_watch(pconn_t *pc) {
  uint64_t ms = pc->gw->conf->public_.send_timeout_ms;
  if (ms == 0 || pc->x == NULL || !pc->x->head_sent || cr_deadline_is_set(&pc->deadline))
    return;
  pc->send_mark = pc->flushed;
  cr_deadline_set(&pc->deadline, on_send_timeout, ms);
}

static void on_send_timeout(cr_deadline_t *d) {
  pconn_t *pc = d->timer.data;
  const cr_conf_gateway_t *conf = pc->gw->conf;
  exchange_t *x = pc->x;
  uint64_t ms = conf->public_.send_timeout_ms, took = pc->flushed - pc->send_mark;
  uint64_t need = conf->public_.min_send_rate * ms / 1000;
  if (x == NULL || pc->state != PC_EXCHANGE || pc->writes_inflight == 0)
    return;
  if (took >= (need ? need : 1)) {
    send_watch(pc); /* the next window */
    return;
  }
  cr_log_warn("caller too slow",
              "request_id=%s peer=%s took=%llu waiting=%zu send_timeout_ms=%llu min_send_rate=%llu", x->request_id,
              pc->s->peer, (unsigned long long)took, pc->writes_inflight, (unsigned long long)ms,
              (unsigned long long)conf->public_.min_send_rate);
  snprintf(x->error, sizeof x->error,
           "caller took %llu response bytes in %llu ms (send_timeout, min_send_rate %llu B/s)",
           (unsigned long long)took, (unsigned long long)ms, (unsigned long long)conf->public_.min_send_rate);
  pconn_close(pc); /* resets the tunnel stream too */
}

static void pconn_write_done(cr_stream_t *s, int status, void *arg) {
  pwrite_t *w = arg;
  pconn_t *pc = w->pc;
  pc->writes_inflight -= w->len;
  if (status == 0)
    pc->flushed += w->len;
  if (pc->writes_inflight == 0 && pc->deadline.cb == on_send_timeout)
    cr_deadline_clear(&pc->deadline); /* everything taken: no window until bytes wait again */
  if (status == 0 && pc->x) {
    pc->x->bytes_out += w->consume;
    if (pc->x->ts && w->consume)
      cr_tstream_consume(pc->x->ts, w->consume);
    if (pc->x->truncated) /* flushing a cut response: each write done is progress */
      cr_deadline_set(&pc->deadline, on_flush_timeout, pc->gw->conf->public_.idle_timeout_ms);
  }
  free(w);
  if (status < 0) {
    if (pc->state != PC_CLOSING) {
      if (pc->x)
        snprintf(pc->x->error, sizeof pc->x->error, "writing to caller: %s", cr_strerror(status));
      pconn_close(pc);
    }
    return;
  }
  if (pc->state == PC_SHUTDOWN && pc->shut_done)
    pconn_after_shutdown(pc);
  else
    pconn_try_finish(pc);
}

/* Sends prefix + data + suffix as one write; consume is credited back to the stream when flushed. */
static int pconn_send(pconn_t *pc, const char *prefix, size_t plen, const char *data, size_t len,
                      const char *suffix, size_t slen, size_t consume) {
  pwrite_t *w;
  uv_buf_t bufs[3];
  unsigned n = 0;
  int r;
  if (pc->state == PC_CLOSING)
    return UV_EPIPE;
  if (cr_stream_copies_writes(pc->s)) {
    /* TLS takes the bytes during the call: the tunnel's buffer is written from, not copied. */
    w = cr_malloc(sizeof *w);
    if (plen)
      bufs[n++] = uv_buf_init((char *)prefix, (unsigned)plen);
    if (len)
      bufs[n++] = uv_buf_init((char *)data, (unsigned)len);
    if (slen)
      bufs[n++] = uv_buf_init((char *)suffix, (unsigned)slen);
  } else {
    w = cr_malloc(sizeof *w + plen + len + slen);
    if (plen)
      memcpy(w->data, prefix, plen);
    if (len)
      memcpy(w->data + plen, data, len);
    if (slen)
      memcpy(w->data + plen + len, suffix, slen);
    bufs[n++] = uv_buf_init(w->data, (unsigned)(plen + len + slen));
  }
  w->pc = pc;
  w->consume = consume;
  w->len = plen + len + slen;
  r = cr_stream_write(pc->s, bufs, n, pconn_write_done, w);
  if (r < 0) {
    free(w);
    return r;
  }
  pc->writes_inflight += w->len;
  send_watch(pc);
  return 0;
}

/* Sets the connection headers for the caller and serialises head into out. */
static int write_response_head(pconn_t *pc, cr_http_msg_t *head, cr_buf_t *out) {
  exchange_t *x = pc->x;
  /* A final answer to a caller that waits for 100 Continue before its body: it may send the body
   * or not (RFC 9110 10.1.1), so the connection cannot carry another request; say so and close. */
  if (x->expect_continue && !x->continue_sent && !x->req_ended)
    pc->close_after = 1;
  if (!x->keep_alive || pc->close_after || pc->gw->draining) {
    pc->close_after = 1;
    cr_http_msg_add_header_id(head, CR_HDR_CONNECTION, "Connection", 10, "close", 5);
  } else if (x->http10) {
    cr_http_msg_add_header_id(head, CR_HDR_CONNECTION, "Connection", 10, "keep-alive", 10);
  }
  return cr_http1_write_response_head(out, head);
}

/* Answers the current exchange ourselves (no tunnel stream involved). */
static void pconn_local_answer(pconn_t *pc, int status, const char *code, const char *message,
                               const char *extra_name, const char *extra_value) {
  exchange_t *x = pc->x;
  cr_http_msg_t head;
  cr_buf_t body, out;
  cr_http_msg_init(&head, 0);
  cr_buf_init(&body, 0);
  cr_buf_init(&out, 0);
  cr_errpage_build(status, code, message, x->request_id, x->soap, &head, &body);
  if (extra_name)
    cr_http_msg_add_header(&head, extra_name, strlen(extra_name), extra_value, strlen(extra_value));
  cr_http_msg_add_header(&head, "X-Request-Id", 12, x->request_id, strlen(x->request_id));
  if (!x->req_ended) /* the rest of the body is read and dropped, within the header timeout */
    cr_deadline_set(&pc->deadline, on_idle_timeout, pc->gw->conf->public_.header_timeout_ms);
  x->status = head.status; /* a SOAP Fault goes with 500 */
  x->head_sent = 1;
  x->resp_ended = 1;
  if (write_response_head(pc, &head, &out) == 0)
    pconn_send(pc, out.base, out.len, x->head_request ? NULL : body.base, x->head_request ? 0 : body.len, NULL,
               0, 0);
  snprintf(x->error, sizeof x->error, "%s", message);
  cr_buf_free(&out);
  cr_buf_free(&body);
  cr_http_msg_free(&head);
}

/* ---------- the tunnel stream of an exchange ---------- */

static void pconn_end_truncated(pconn_t *pc);
static void exchange_abandon_stream(exchange_t *x);

/* The tunnel's head becomes the caller's in place (CR_TUNNEL_HEAD_ROOM leaves room for the framing
 * field added here): no copy per response. */
static void ts_on_head(cr_tstream_t *ts, cr_http_msg_t *head) {
  exchange_t *x = cr_tstream_data(ts);
  pconn_t *pc = x->pc;
  cr_buf_t *out = &pc->gw->scratch_out;
  char len[24];
  cr_http_body_t framing;
  int rc = 0;
  cr_deadline_clear(&pc->deadline);
  cr_buf_reset(out);
  x->status = head->status;
  framing = cr_http_body_framing(head, x->method, 1);
  x->resp_no_body = framing == CR_HTTP_BODY_NONE;
  cr_http_msg_strip_hop_by_hop(head);
  if (framing == CR_HTTP_BODY_LENGTH || (framing == CR_HTTP_BODY_NONE && head->content_length >= 0)) {
    /* A HEAD's or 304's answer carries the length the full response would have had. */
    size_t n = cr_u64_dec(len, (uint64_t)head->content_length);
    if (head->status != 204)
      rc = cr_http_msg_add_header_id(head, CR_HDR_CONTENT_LENGTH, "Content-Length", 14, len, n);
  } else if (framing != CR_HTTP_BODY_NONE) {
    if (!x->http10) {
      x->resp_chunked = 1;
      rc = cr_http_msg_add_header_id(head, CR_HDR_TRANSFER_ENCODING, "Transfer-Encoding", 17, "chunked", 7);
    } else {
      pc->close_after = 1; /* HTTP/1.0 caller: the body ends with the connection */
    }
  }
  if (rc < 0 || write_response_head(pc, head, out) < 0) {
    /* Nothing reached the caller yet: it gets our error answer, never an empty reply. */
    char msg[160];
    snprintf(msg, sizeof msg, "the response head from the agent cannot be sent on HTTP/1.1%s",
             rc < 0 ? ": more header fields than the gateway forwards" : "");
    exchange_abandon_stream(x);
    x->resp_chunked = 0;
    pconn_local_answer(pc, 502, "bad_response_head", msg, NULL, NULL);
    pconn_try_finish(pc);
    return;
  }
  x->head_sent = 1;
  if (pconn_send(pc, out->base, out->len, NULL, 0, NULL, 0, 0) < 0) {
    snprintf(x->error, sizeof x->error, "writing the response head to the caller failed");
    cr_tstream_reset(ts);
    pconn_close(pc);
  }
}

/* An interim response (100 Continue, 103 Early Hints...) goes to the caller before the final head,
 * as RFC 9110 15.2 asks of a proxy; never to an HTTP/1.0 caller, which cannot parse one. */
static void ts_on_interim(cr_tstream_t *ts, const cr_http_msg_t *resp) {
  exchange_t *x = cr_tstream_data(ts);
  pconn_t *pc = x->pc;
  cr_http_msg_t *head = &pc->gw->scratch_head;
  cr_buf_t *out = &pc->gw->scratch_out;
  if (x->http10 || x->head_sent || pc->state != PC_EXCHANGE || x->ninterim >= INTERIM_MAX)
    return;
  cr_buf_reset(out);
  if (cr_http_msg_copy(head, resp) < 0)
    return;
  cr_http_msg_strip_hop_by_hop(head);
  head->version_minor = 1;
  if (cr_http1_write_response_head(out, head) < 0)
    return;
  x->ninterim++;
  if (resp->status == 100)
    x->continue_sent = 1;
  if (pconn_send(pc, out->base, out->len, NULL, 0, NULL, 0, 0) < 0) {
    snprintf(x->error, sizeof x->error, "writing an interim response to the caller failed");
    pconn_close(pc);
  }
}

static void ts_on_data(cr_tstream_t *ts, const char *data, size_t len) {
  exchange_t *x = cr_tstream_data(ts);
  pconn_t *pc = x->pc;
  char chunk[24];
  size_t clen;
  if (x->resp_no_body || pc->state == PC_CLOSING) {
    cr_tstream_consume(ts, len);
    return;
  }
  if (x->resp_chunked) {
    clen = cr_http1_chunk_header(chunk, len);
    pconn_send(pc, chunk, clen, data, len, CR_HTTP1_CHUNK_TRAILER, 2, len);
  } else {
    pconn_send(pc, NULL, 0, data, len, NULL, 0, len);
  }
}

static void ts_on_end(cr_tstream_t *ts) {
  exchange_t *x = cr_tstream_data(ts);
  if (x->resp_chunked)
    pconn_send(x->pc, CR_HTTP1_LAST_CHUNK, 5, NULL, 0, NULL, 0, 0);
  x->resp_ended = 1;
  /* The stream stays open while the request is; a caller that may never send its body (it waited
   * for a 100 and got the final answer) must not wait for that: the exchange can end now. */
  if (x->expect_continue && !x->continue_sent && !x->req_ended)
    pconn_try_finish(x->pc);
}

static void ts_on_writable(cr_tstream_t *ts) {
  exchange_t *x = cr_tstream_data(ts);
  if (x->client_paused) {
    x->client_paused = 0;
    pconn_start_reading(x->pc);
  }
}

static void exchange_release_slot(exchange_t *x) {
  if (x->holds_slot)
    cr__gw_policy_release(x->gen->policy, x->si);
  x->holds_slot = 0;
}

static void ts_on_close(cr_tstream_t *ts, int error) {
  exchange_t *x = cr_tstream_data(ts);
  pconn_t *pc = x->pc;
  x->ts = NULL;
  exchange_release_slot(x);
  if (error != 0 && !x->resp_ended && pc->gw->draining)
    cr_process_note_cut(pc->gw->proc); /* the drain ended this call: not a clean stop */
  if (error != 0 && pc->state != PC_CLOSING) {
    if (!x->head_sent) {
      char msg[200];
      snprintf(msg, sizeof msg, "the tunnel stream to the agent failed: %s", cr_strerror(error));
      pconn_local_answer(pc, 502, "tunnel_stream_failed", msg, NULL, NULL);
    } else if (!x->resp_ended) {
      /* Part of the body is out: the caller must see a truncated response, never a clean end. */
      snprintf(x->error, sizeof x->error, "tunnel stream failed mid-response: %s", cr_strerror(error));
      pconn_end_truncated(pc);
      return;
    }
  }
  pconn_try_finish(pc);
}

static const cr_tstream_callbacks_t ts_cbs = {
    .on_head = ts_on_head,
    .on_interim = ts_on_interim,
    .on_data = ts_on_data,
    .on_end = ts_on_end,
    .on_writable = ts_on_writable,
    .on_close = ts_on_close,
};

/* A stream whose exchange gave up on it (timeout, caller gone) still gets callbacks until its
 * on_close: these keep its window open and touch nothing else. */
static void detached_on_data(cr_tstream_t *ts, const char *data, size_t len) { cr_tstream_consume(ts, len); }
static void detached_on_head(cr_tstream_t *ts, cr_http_msg_t *head) {}
static void detached_on_event(cr_tstream_t *ts) {}
static void detached_on_close(cr_tstream_t *ts, int error) {}
static const cr_tstream_callbacks_t detached_cbs = {
    .on_head = detached_on_head,
    .on_data = detached_on_data,
    .on_end = detached_on_event,
    .on_writable = detached_on_event,
    .on_close = detached_on_close,
};

static void exchange_abandon_stream(exchange_t *x) {
  cr_tstream_t *ts = x->ts;
  if (ts == NULL)
    return;
  x->ts = NULL;
  exchange_release_slot(x);
  cr_tstream_set_callbacks(ts, &detached_cbs, NULL);
  cr_tstream_reset(ts);
}

/* ---------- parsing the caller's requests ---------- */

static uint64_t now_ms(pconn_t *pc) { return uv_now(&pc->gw->loop); }

static void on_request_timeout(cr_deadline_t *d);

/* The service's callers rules, then its limits: a refused request reaches no agent. 0 when the call
 * may go on (holding one of the service's concurrent slots), else 1 once answered. */
static int exchange_admit(pconn_t *pc, exchange_t *x, size_t si, const cr_http_msg_t *m) {
  gateway_t *gw = pc->gw;
  const cr_conf_service_t *svc = &gw->conf->services[si];
  cr__gw_refusal_t r;
  char msg[160];
  if (cr__gw_policy_check(gw->policy, si, pc->s, m, &r)) {
    for (int k = 0; k < RULE_COUNT; k++)
      if (strcmp(r.rule, rule_names[k]) == 0)
        gw->metrics.by_service[si]->refused[k]++;
    cr_log_warn("caller refused", "request_id=%s service=%s%s rule=%s peer=%s status=%d reason=\"%s\"",
                x->request_id, svc->host, svc->path_prefix ? svc->path_prefix : "", r.rule, pc->s->peer, r.status,
                r.reason);
    pconn_local_answer(pc, r.status, r.code, r.status == 401 ? "the caller did not authenticate as this service requires"
                                                             : "the caller is not allowed to call this service",
                       r.www_authenticate ? "WWW-Authenticate" : NULL, r.www_authenticate);
    snprintf(x->error, sizeof x->error, "refused by callers.%s", r.rule);
    return 1;
  }
  x->max_body = svc->max_body;
  if (x->max_body && cr_http_body_framing(m, NULL, 0) == CR_HTTP_BODY_LENGTH &&
      (uint64_t)m->content_length > x->max_body) {
    snprintf(msg, sizeof msg, "the request body (%lld bytes) is larger than this service accepts (%llu bytes)",
             (long long)m->content_length, (unsigned long long)x->max_body);
    pc->close_after = 1; /* the body is not read: the connection goes once the answer is out */
    gw->metrics.by_service[si]->limits[LIM_MAX_BODY]++;
    pconn_local_answer(pc, 413, "too_large", msg, NULL, NULL);
    return 1;
  }
  if (cr__gw_policy_acquire(gw->policy, si) < 0) {
    gw->metrics.by_service[si]->limits[LIM_MAX_CONCURRENT]++;
    cr_log_warn("call refused", "request_id=%s service=%s%s rule=max_concurrent peer=%s max_concurrent=%u",
                x->request_id, svc->host, svc->path_prefix ? svc->path_prefix : "", pc->s->peer, svc->max_concurrent);
    pconn_local_answer(pc, 503, "too_busy", "this service has as many calls in flight as it accepts; retry later",
                       "Retry-After", "1");
    return 1;
  }
  x->holds_slot = 1;
  x->si = si;
  return 0;
}

/* 1 if the request carries the 100-continue expectation (its only defined one). */
static int expects_continue(const cr_http_msg_t *m) {
  const char *v = cr_http_msg_get_id(m, CR_HDR_EXPECT);
  return v != NULL && strcasecmp(v, "100-continue") == 0;
}

/* Starts the exchange for a request head: a local answer, or a tunnel stream carrying the head. */
static int exchange_begin(pconn_t *pc, cr_http_msg_t *m) {
  gateway_t *gw = pc->gw;
  const cr_conf_gateway_t *conf = gw->conf;
  exchange_t *x = cr_freelist_get(&gw->free_exchanges);
  const char *why, *rid;
  const char *host;
  cr_tunnel_t *t;
  long si;
  cr_http_body_t framing;
  int err = 0, has_body, rc;

  pc->x = x;
  pc->state = PC_EXCHANGE;
  x->pc = pc;
  x->gen = gw->gen;
  gw->gen->refs++;
  x->start_ms = now_ms(pc);
  x->m = &gw->metrics.unrouted;
  x->m->calls.in_flight++;
  x->keep_alive = m->keep_alive;
  x->http10 = m->version_minor == 0;
  x->head_request = strcmp(m->method, "HEAD") == 0;
  x->expect_continue = !x->http10 && expects_continue(m) && cr_http_body_framing(m, NULL, 0) != CR_HTTP_BODY_NONE;
  cr_strlcpy(x->method, m->method, sizeof x->method);
  rid = cr_http_msg_get_id(m, CR_HDR_X_REQUEST_ID);
  if (rid && cr_errpage_request_id_valid(rid))
    cr_strlcpy(x->request_id, rid, sizeof x->request_id);
  else
    cr_errpage_request_id_new(x->request_id);
  cr_deadline_clear(&pc->deadline);
  x->soap = cr_http_soap_version(m);

  if ((why = cr_route_target_unsafe_reason(m->target)) != NULL) {
    pconn_local_answer(pc, 400, "bad_request_target", why, NULL, NULL);
    return 0;
  }
  if (cr_route_path_has_prefix(m->target, CR_CONTROL_PREFIX) || strncmp(m->target, "/.well-known/ccrelay", 20) == 0) {
    pconn_local_answer(pc, 404, "not_found", "no service serves this path", NULL, NULL);
    return 0;
  }
  si = cr_route_service_match(conf->services, conf->nservices, m);
  if (si < 0) {
    pconn_local_answer(pc, 404, "no_service", "no service is configured for this host and path", NULL, NULL);
    return 0;
  }
  x->service = conf->services[si].host;
  x->group = gw->groups[conf->services[si].group_index].conf->name;
  x->m->calls.in_flight--;
  x->m = gw->metrics.by_service[si];
  x->m->calls.in_flight++;
  if (exchange_admit(pc, x, (size_t)si, m))
    return 0;
  t = cr__gw_group_pick(&gw->groups[conf->services[si].group_index]);
  if (t == NULL) {
    exchange_release_slot(x);
    pconn_local_answer(pc, 503, "no_tunnel", "no agent of this service's relay group is connected; retry later",
                       "Retry-After", "5");
    return 0;
  }

  /* The parser's head becomes the forwarded one in place (it is released when this returns, and the
   * parser left PARSER_HEAD_ROOM fields of room for what is added here): no copy per request.
   * Framing is read before the hop-by-hop fields that state it go. */
  framing = cr_http_body_framing(m, NULL, 0);
  has_body = framing != CR_HTTP_BODY_NONE;
  host = cr_http_msg_get_id(m, CR_HDR_HOST);
  cr_http_msg_strip_hop_by_hop(m);
  /* The caller's request id is replaced by ours, and its token when the gateway checked it. */
  cr_http_msg_remove_ids(m, CR_HDR_BIT(CR_HDR_X_REQUEST_ID) |
                                (cr__gw_policy_strips_authorization(gw->policy, (size_t)si)
                                     ? CR_HDR_BIT(CR_HDR_AUTHORIZATION)
                                     : 0));
  rc = cr_http_msg_add_header_id(m, CR_HDR_X_REQUEST_ID, "x-request-id", 12, x->request_id, strlen(x->request_id));
  if (rc == 0)
    rc = cr__gw_forwarded(m, conf, pc->s->peer, host);
  if (rc < 0) {
    exchange_release_slot(x);
    pconn_local_answer(pc, 431, "bad_request", "the request has more header fields than the gateway forwards",
                       NULL, NULL);
    return 0;
  }
  /* Expect goes on toward the upstream, whose 100 Continue (or final answer) comes back through
   * ts_on_interim (RFC 9110 10.1.1: a proxy forwards the head at once). An HTTP/1.0 request's
   * expectation is ignored (ibid.), and a 100 could not reach that caller anyway. */
  if (x->http10)
    cr_http_msg_remove_ids(m, CR_HDR_BIT(CR_HDR_EXPECT));
  if (framing != CR_HTTP_BODY_LENGTH)
    m->content_length = framing == CR_HTTP_BODY_NONE ? 0 : -1;
  x->ts = cr_tunnel_open_stream(t, m, has_body, &ts_cbs, x, &err);
  if (x->ts == NULL) {
    char msg[160];
    exchange_release_slot(x);
    snprintf(msg, sizeof msg, "could not open a tunnel stream: %s", cr_strerror(err));
    pconn_local_answer(pc, 503, "no_tunnel", msg, "Retry-After", "5");
    return 0;
  }
  cr_deadline_set(&pc->deadline, on_request_timeout, conf->public_.request_timeout_ms);
  return 0;
}

static int on_req_head(void *ud, cr_http_msg_t *m) {
  pconn_t *pc = ud;
  int r = exchange_begin(pc, m);
  /* Everything needed later was copied into the exchange or the tunnel: a caller waiting for its
   * answer holds no head storage (about 4.5 KiB of each idle stream). */
  cr_http1_parser_release_head(pc->parser);
  return r;
}

static int on_req_body(void *ud, const char *data, size_t len) {
  pconn_t *pc = ud;
  exchange_t *x = pc->x;
  int r;
  x->bytes_in += len;
  if (x->ts == NULL)
    return 0; /* answered locally: the body is read and dropped */
  if (x->max_body && x->bytes_in > x->max_body) {
    /* A body without Content-Length crossed the service's limit: what went down is cut off. */
    char msg[160];
    snprintf(msg, sizeof msg, "the request body is larger than this service accepts (%llu bytes)",
             (unsigned long long)x->max_body);
    exchange_abandon_stream(x);
    if (x->m)
      x->m->limits[LIM_MAX_BODY]++;
    if (x->head_sent) {
      snprintf(x->error, sizeof x->error, "%s", msg);
      pconn_close(pc);
      return 0;
    }
    pc->close_after = 1;
    x->client_paused = 0;
    pconn_local_answer(pc, 413, "too_large", msg, NULL, NULL);
    return 0;
  }
  r = cr_tstream_write(x->ts, data, len);
  if (r == 1 && !x->client_paused) {
    x->client_paused = 1;
    cr_stream_read_stop(pc->s);
    pc->reading = 0;
  }
  return 0;
}

static int on_req_end(void *ud) {
  pconn_t *pc = ud;
  exchange_t *x = pc->x;
  x->req_ended = 1;
  if (x->ts)
    cr_tstream_end(x->ts);
  /* One exchange at a time: whatever follows waits until this one is answered. pconn_feed checks
   * for an already finished exchange once the parser has returned (never from inside it). */
  return CR_HTTP1_PAUSE;
}

static const cr_http1_callbacks_t req_cbs = {
    .on_head = on_req_head,
    .on_body = on_req_body,
    .on_end = on_req_end,
};

/* ---------- the caller's connection ---------- */

static void pconn_free_if_done(pconn_t *pc) {
  if (!pc->stream_closed || !pc->timer_closed)
    return;
  cr_http1_parser_free(pc->parser);
  cr_buf_free(&pc->pending);
  cr_buf_free(&pc->peek);
  exchange_put(pc->gw, pc->x);
  free(pc);
}

static void pconn_stream_closed(cr_stream_t *s) {
  pconn_t *pc = s->data;
  pc->stream_closed = 1;
  pconn_free_if_done(pc);
}

static void pconn_timer_closed(uv_handle_t *h) {
  pconn_t *pc = h->data;
  pc->timer_closed = 1;
  pconn_free_if_done(pc);
}

/* bytes_out counts the body bytes whose write reached the caller's socket; truncated=1 marks a
 * response the caller got only part of (its head went out, its end did not). */
static void access_log(pconn_t *pc) {
  exchange_t *x = pc->x;
  if (x->m) {
    x->m->calls.in_flight--;
    cr_metrics_calls_end(&x->m->calls, x->method, x->status, x->bytes_in, x->bytes_out,
                         (double)(now_ms(pc) - x->start_ms) / 1000.0);
    x->m = NULL;
  }
  cr_log_info("access",
              "request_id=%s peer=%s method=%s service=%s group=%s status=%d bytes_in=%llu bytes_out=%llu "
              "duration_ms=%llu ?truncated=%d ?error=\"%s\"",
              x->request_id, pc->s->peer, x->method, x->service ? x->service : "-", x->group ? x->group : "-",
              x->status, (unsigned long long)x->bytes_in, (unsigned long long)x->bytes_out,
              (unsigned long long)(now_ms(pc) - x->start_ms), x->truncated ? 1 : 0, x->error);
}

static void pconn_close(pconn_t *pc) {
  if (pc->state == PC_CLOSING)
    return;
  if (pc->state == PC_HANDSHAKE)
    pc->gw->public_handshakes--;
  cr_srcmap_release(pc->gw->public_src, &pc->src);
  if (pc->pt) {
    uint64_t in, out;
    cr__gw_pt_counts(pc->pt, &in, &out);
    cr_log_info("passthrough", "peer=%s service=%s group=%s bytes_in=%llu bytes_out=%llu duration_ms=%llu",
                pc->s->peer, pc->pt_service, pc->pt_group, (unsigned long long)in, (unsigned long long)out,
                (unsigned long long)(uv_now(&pc->gw->loop) - pc->pt_start_ms));
    cr__gw_pt_free(pc->pt);
    pc->pt = NULL;
  }
  pc->state = PC_CLOSING;
  if (pc->x) {
    exchange_abandon_stream(pc->x);
    if (pc->x->status == 0)
      pc->x->status = 499; /* the caller went away before an answer */
    access_log(pc);
  }
  cr_queue_remove(&pc->link);
  pc->gw->npconns--;
  cr_deadline_close(&pc->deadline, pconn_timer_closed);
  cr_stream_close(pc->s, pconn_stream_closed);
}

/* Our FIN is out. A cut response is logged once the callbacks of its last writes have fired too
 * (a TLS stream may report them after the shutdown), then the connection lingers like any other. */
static void pconn_after_shutdown(pconn_t *pc) {
  if (pc->x) {
    if (pc->writes_inflight > 0)
      return;
    access_log(pc);
    exchange_put(pc->gw, pc->x);
    pc->x = NULL;
    cr_deadline_set(&pc->deadline, on_idle_timeout, LINGER_MS);
  }
  if (pc->eof_seen)
    pconn_close(pc);
}

static void pconn_shutdown_done(cr_stream_t *s, int status, void *arg) {
  pconn_t *pc = arg;
  (void)s;
  if (pc->state == PC_CLOSING)
    return;
  if (status < 0) {
    pconn_close(pc);
    return;
  }
  pc->shut_done = 1;
  pconn_after_shutdown(pc);
}

/* The tunnel stream failed after the response head went out. What is queued for the caller still
 * goes out; then our direction ends with a FIN and no close_notify, so the caller must read the
 * response as incomplete whatever its framing: no last chunk, fewer bytes than Content-Length, and
 * for a body delimited by the close, a TLS connection truncated. (A reset would be as clear but
 * would destroy the queued bytes in the kernel.) A caller that stops reading is closed once no
 * write completed for idle_timeout. */
static void pconn_end_truncated(pconn_t *pc) {
  pc->x->truncated = 1;
  pc->state = PC_SHUTDOWN;
  pc->x->client_paused = 0; /* the stream is gone: the rest of the request is read and dropped */
  cr_deadline_set(&pc->deadline, on_flush_timeout, pc->gw->conf->public_.idle_timeout_ms);
  if (cr_tls_stream_shutdown_truncated(pc->s, pconn_shutdown_done, pc) < 0) {
    pconn_close(pc);
    return;
  }
  if (!pc->eof_seen)
    pconn_start_reading(pc);
}

static void pconn_feed(pconn_t *pc, const char *data, size_t len);

static void pconn_try_finish(pconn_t *pc) {
  exchange_t *x = pc->x;
  if (x == NULL || pc->state != PC_EXCHANGE)
    return;
  if (x->ts != NULL && x->resp_ended && !x->req_ended && x->expect_continue && !x->continue_sent)
    exchange_abandon_stream(x); /* answered, and the rest of the request goes nowhere: the caller
                                   may never send it (a body held back for a 100 Continue) */
  if (x->ts != NULL || !x->resp_ended || pc->writes_inflight > 0)
    return;
  if (!x->req_ended && !pc->close_after)
    return; /* answered early; the caller is still sending the request body */
  access_log(pc);
  exchange_put(pc->gw, x);
  pc->x = NULL;
  if (pc->close_after || pc->gw->draining || pc->eof_seen) {
    /* close_notify first: a caller reading to EOF must see a clean end, not a truncation. */
    pc->state = PC_SHUTDOWN;
    cr_deadline_set(&pc->deadline, on_idle_timeout, LINGER_MS);
    if (cr_stream_shutdown(pc->s, pconn_shutdown_done, pc) < 0)
      pconn_close(pc);
    else if (!pc->eof_seen)
      pconn_start_reading(pc);
    return;
  }
  pc->state = PC_WAIT_HEAD;
  cr_http1_parser_resume(pc->parser);
  cr_deadline_set(&pc->deadline, on_idle_timeout, pc->gw->conf->public_.idle_timeout_ms);
  if (pc->pending.len > 0) {
    cr_buf_t held = pc->pending;
    cr_buf_init(&pc->pending, PENDING_MAX);
    pconn_feed(pc, held.base, held.len);
    cr_buf_free(&held);
  }
  if (pc->state == PC_WAIT_HEAD || (pc->state == PC_EXCHANGE && !pc->x->client_paused && !pc->x->req_ended))
    pconn_start_reading(pc);
}

static void pconn_bad_request(pconn_t *pc, int err) {
  char msg[256];
  exchange_t *x = pc->x;
  snprintf(msg, sizeof msg, "malformed request: %s",
           err == CR_EHTTP_TOO_LARGE ? "header section too large" : cr_http1_parser_error(pc->parser));
  cr_log_warn("bad request", "peer=%s reason=\"%s\"", pc->s->peer, msg);
  pc->close_after = 1;
  if (x == NULL) {
    x = pc->x = cr_freelist_get(&pc->gw->free_exchanges);
    x->pc = pc;
    x->start_ms = now_ms(pc);
    cr_errpage_request_id_new(x->request_id);
    snprintf(x->method, sizeof x->method, "-");
    pc->state = PC_EXCHANGE;
  } else if (x->head_sent) {
    pconn_close(pc);
    return;
  }
  exchange_abandon_stream(x);
  x->req_ended = 1;
  pconn_local_answer(pc, err == CR_EHTTP_TOO_LARGE ? 431 : 400, "bad_request", msg, NULL, NULL);
  pconn_try_finish(pc);
}

static void pconn_feed(pconn_t *pc, const char *data, size_t len) {
  ssize_t n;
  if (pc->state == PC_WAIT_HEAD && !cr_http1_parser_in_message(pc->parser))
    cr_deadline_set(&pc->deadline, on_idle_timeout, pc->gw->conf->public_.header_timeout_ms);
  n = cr_http1_parse(pc->parser, data, len);
  if (n < 0) {
    pconn_bad_request(pc, (int)n);
    return;
  }
  if (pc->state == PC_EXCHANGE && pc->x->req_ended && (size_t)n == len) {
    pconn_try_finish(pc);
    return;
  }
  if ((size_t)n < len && pc->state != PC_CLOSING) {
    /* Paused after a complete request: hold the rest (a pipelined request) until it is answered. */
    if (cr_buf_append(&pc->pending, data + n, len - (size_t)n) < 0) {
      pconn_close(pc);
      return;
    }
    if (pc->reading && pc->pending.len >= PENDING_STOP) {
      cr_stream_read_stop(pc->s);
      pc->reading = 0;
    }
    pconn_try_finish(pc);
  }
}

static void pconn_on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  pconn_t *pc = s->data;
  if (pc->state == PC_PASSTHROUGH) {
    if (nread < 0)
      pc->reading = 0; /* a stream reports its end once and stops */
    cr__gw_pt_caller_read(pc->pt, nread, data);
    return;
  }
  if (nread < 0) {
    pc->reading = 0;
    pc->eof_seen = 1;
    if (pc->state == PC_SHUTDOWN) {
      /* A half-close may still read what we flush: the shutdown's callback closes then. */
      if (!(pc->x && nread == UV_EOF))
        pconn_close(pc);
      return;
    }
    if (pc->x && pc->x->req_ended && nread == UV_EOF)
      return; /* the caller half-closed after its request: answer, then close */
    if (pc->x && !pc->x->error[0])
      snprintf(pc->x->error, sizeof pc->x->error, "caller connection: %s", cr_strerror((int)nread));
    pconn_close(pc);
    return;
  }
  if (pc->state == PC_SHUTDOWN)
    return; /* lingering: drop */
  if (pc->state == PC_EXCHANGE && pc->x->req_ended) {
    /* The next request, early (the caller may already have our answer while our write callback is
     * still due). Keep it, and keep reading until a little is held: stopping and restarting the
     * read for every request costs two epoll_ctl calls per request. */
    if (cr_buf_append(&pc->pending, data, (size_t)nread) < 0) {
      pconn_close(pc);
      return;
    }
    if (pc->pending.len >= PENDING_STOP) {
      cr_stream_read_stop(s);
      pc->reading = 0;
    }
    return;
  }
  pconn_feed(pc, data, (size_t)nread);
}

static int pconn_start_reading(pconn_t *pc) {
  int r;
  if (pc->reading || pc->state == PC_CLOSING)
    return 0;
  r = cr_stream_read_start(pc->s, pconn_on_read);
  if (r == 0)
    pc->reading = 1;
  return r;
}

static void on_idle_timeout(cr_deadline_t *d) {
  pconn_t *pc = d->timer.data;
  if (pc->state == PC_WAIT_HEAD && cr_http1_parser_in_message(pc->parser)) {
    cr_log_warn("bad request", "peer=%s reason=\"request head not complete within %llu ms\"", pc->s->peer,
                (unsigned long long)pc->gw->conf->public_.header_timeout_ms);
  }
  pconn_close(pc);
}

static void on_flush_timeout(cr_deadline_t *d) {
  pconn_t *pc = d->timer.data;
  if (pc->x) {
    size_t n = strlen(pc->x->error);
    snprintf(pc->x->error + n, sizeof pc->x->error - n, "%scaller read nothing for %llu ms; %zu bytes not sent",
             n ? "; " : "", (unsigned long long)pc->gw->conf->public_.idle_timeout_ms, pc->writes_inflight);
  }
  pconn_close(pc);
}

static void on_request_timeout(cr_deadline_t *d) {
  pconn_t *pc = d->timer.data;
  exchange_t *x = pc->x;
  char msg[160];
  if (x == NULL || x->head_sent)
    return;
  exchange_abandon_stream(x);
  snprintf(msg, sizeof msg, "no answer from the agent within %llu ms",
           (unsigned long long)pc->gw->conf->public_.request_timeout_ms);
  pconn_local_answer(pc, 504, "gateway_timeout", msg, NULL, NULL);
  pconn_try_finish(pc);
}

static void on_public_handshake(cr_stream_t *s, int status) {
  pconn_t *pc = s->data;
  if (status < 0) {
    cr_log_debug("public TLS handshake failed", "peer=%s reason=\"%s: %s\"", s->peer, cr_strerror(status),
                 cr_tls_stream_error(s));
    pconn_close(pc);
    return;
  }
  pc->gw->public_handshakes--;
  pc->state = PC_WAIT_HEAD;
  if (pconn_start_reading(pc) < 0)
    pconn_close(pc);
}

/* ---------- passthrough: routing by the ClientHello's server name ---------- */

static void pt_pause(void *arg) {
  pconn_t *pc = arg;
  if (pc->reading) {
    cr_stream_read_stop(pc->s);
    pc->reading = 0;
  }
}

static void pt_resume(void *arg) {
  pconn_t *pc = arg;
  if (pconn_start_reading(pc) < 0)
    pconn_close(pc);
}

static void pt_activity(void *arg) {
  pconn_t *pc = arg;
  cr_deadline_set(&pc->deadline, on_idle_timeout, pc->gw->conf->public_.idle_timeout_ms);
}

static void pt_done(void *arg, const char *why) {
  pconn_t *pc = arg;
  if (why)
    cr_log_info("passthrough ended", "peer=%s service=%s reason=\"%s\"", pc->s->peer, pc->pt_service, why);
  pconn_close(pc);
}

/* Not a passthrough connection: TLS is terminated here, beginning with the bytes already read. */
static void pconn_terminate(pconn_t *pc) {
  gateway_t *gw = pc->gw;
  cr_stream_t *conn = pc->s;
  int r;
  cr_stream_read_stop(conn);
  pc->reading = 0;
  pc->s = cr_tls_stream_new(conn, gw->public_tls, NULL);
  pc->s->data = pc;
  r = cr_tls_stream_handshake_after(pc->s, on_public_handshake, pc->peek.base, pc->peek.len);
  cr_buf_free(&pc->peek);
  if (r < 0)
    pconn_close(pc);
}

static long passthrough_service(const cr_conf_gateway_t *conf, const char *sni, int *named) {
  *named = 0;
  for (size_t i = 0; i < conf->nservices; i++)
    if (strcasecmp(conf->services[i].host, sni) == 0) {
      if (conf->services[i].passthrough)
        return (long)i;
      *named = 1;
    }
  return -1;
}

static void pconn_passthrough(pconn_t *pc, size_t si, const char *sni) {
  gateway_t *gw = pc->gw;
  const cr_conf_service_t *svc = &gw->conf->services[si];
  cr__gw_pt_owner_t owner = {pt_pause, pt_resume, pt_activity, pt_done, pc};
  cr_tunnel_t *t;
  char ip[64];
  int r;
  pc->pt_service = svc->host;
  pc->pt_group = gw->groups[svc->group_index].conf->name;
  if (!cr__gw_policy_source_allowed(gw->conf, si, pc->s->peer, ip, sizeof ip)) {
    if (refusal(gw, L_PUBLIC, R_SOURCES))
      cr_log_warn("connection refused", "listener=public peer=%s service=%s rule=sources reason=\"the caller's "
                  "address %s is not in this service's sources\"", pc->s->peer, svc->host, ip);
    pconn_close(pc);
    return;
  }
  t = cr__gw_group_pick(&gw->groups[svc->group_index]);
  if (t == NULL) {
    cr_log_warn("passthrough refused", "peer=%s service=%s group=%s reason=\"no agent of the group is connected\"",
                pc->s->peer, svc->host, pc->pt_group);
    pconn_close(pc);
    return;
  }
  r = cr__gw_pt_start(t, pc->s, sni, pc->peek.base, pc->peek.len, &owner, &pc->pt);
  cr_buf_free(&pc->peek);
  if (r < 0) {
    cr_log_warn("passthrough refused", "peer=%s service=%s reason=\"could not open a tunnel stream: %s\"",
                pc->s->peer, svc->host, cr_strerror(r));
    pconn_close(pc);
    return;
  }
  gw->public_handshakes--; /* no handshake of ours: the caller's is with the upstream */
  pc->state = PC_PASSTHROUGH;
  pc->pt_start_ms = uv_now(&gw->loop);
  pt_activity(pc);
}

static void peek_on_read(cr_stream_t *s, ssize_t nread, const char *data) {
  pconn_t *pc = s->data;
  const cr_conf_gateway_t *conf = pc->gw->conf;
  char sni[CR_TLS_SNI_NAME_MAX + 1];
  long si;
  int r, named;
  if (nread < 0) {
    pc->reading = 0;
    pconn_close(pc);
    return;
  }
  if (cr_buf_append(&pc->peek, data, (size_t)nread) < 0) {
    pconn_terminate(pc); /* more than any hello we route: OpenSSL decides */
    return;
  }
  r = cr_tls_sni_parse((const unsigned char *)pc->peek.base, pc->peek.len, sni, sizeof sni, NULL);
  if (r == CR_TLS_SNI_MORE)
    return;
  if (r != CR_TLS_SNI_FOUND) {
    pconn_terminate(pc); /* no server name, or no hello we understand: as without passthrough */
    return;
  }
  si = passthrough_service(conf, sni, &named);
  if (si >= 0) {
    cr_stream_read_stop(s);
    pc->reading = 0;
    pconn_passthrough(pc, (size_t)si, sni);
    if (pc->state == PC_PASSTHROUGH && pconn_start_reading(pc) < 0)
      pconn_close(pc);
    return;
  }
  if (!named && !cr_tls_ctx_serves_name(pc->gw->public_tls, sni)) {
    /* With passthrough in use a name that neither a service nor the gateway's own certificate has
     * is refused: it could only be a mistake or a probe, and the gateway does not serve it. */
    if (refusal(pc->gw, L_PUBLIC, R_UNKNOWN_SNI))
      cr_log_warn("connection refused", "listener=public peer=%s reason=\"no service is named %s\"", s->peer, sni);
    pconn_close(pc);
    return;
  }
  pconn_terminate(pc);
}

/* Before anything is allocated: the connection caps, in the order that names the tightest one. */
static int public_admit(cr_listener_t *l, const struct sockaddr *peer, void *arg) {
  gateway_t *gw = arg;
  (void)l;
  if (gw->draining || cr_srcmap_key(peer, &gw->admitted) < 0)
    return CR_ECLOSED;
  if (gw->npconns >= gw->conf->public_.max_connections) {
    log_refused(gw, L_PUBLIC, R_MAX_CONNECTIONS, peer, gw->conf->public_.max_connections);
    return CR_ELIMIT;
  }
  if (gw->public_handshakes >= gw->conf->public_.max_handshakes) {
    log_refused(gw, L_PUBLIC, R_MAX_HANDSHAKES, peer, gw->conf->public_.max_handshakes);
    return CR_ELIMIT;
  }
  if (cr_srcmap_acquire(gw->public_src, &gw->admitted) < 0) {
    log_refused(gw, L_PUBLIC, R_MAX_PER_SOURCE, peer, gw->conf->public_.max_per_source);
    return CR_ELIMIT;
  }
  return 0;
}

static void on_public_connection(cr_listener_t *l, cr_stream_t *conn, void *arg) {
  gateway_t *gw = arg;
  cr_http1_limits_t limits = {gw->conf->public_.max_header_size, gw->conf->public_.max_header_fields, 0,
                              PARSER_HEAD_ROOM};
  pconn_t *pc;
  (void)l;
  pc = cr_calloc(1, sizeof *pc);
  pc->gw = gw;
  pc->src = gw->admitted; /* public_admit counted it */
  gw->public_handshakes++;
  pc->state = PC_HANDSHAKE;
  pc->parser = cr_http1_parser_new(CR_HTTP1_REQUEST, &limits, &req_cbs, pc);
  cr_buf_init(&pc->pending, PENDING_MAX);
  cr_deadline_init(&gw->loop, &pc->deadline);
  pc->deadline.timer.data = pc;
  cr_queue_insert_tail(&gw->pconns, &pc->link);
  gw->npconns++;
  gw->pconns_begun++;
  cr_deadline_set(&pc->deadline, on_idle_timeout, gw->conf->public_.header_timeout_ms);
  if (gw->has_passthrough) {
    /* Where the connection goes depends on its ClientHello: read it first (within header_timeout). */
    pc->s = conn;
    conn->data = pc;
    cr_buf_init(&pc->peek, PEEK_MAX);
    if (cr_stream_read_start(conn, peek_on_read) < 0)
      pconn_close(pc);
    else
      pc->reading = 1;
    return;
  }
  pc->s = cr_tls_stream_new(conn, gw->public_tls, NULL);
  pc->s->data = pc;
  if (cr_tls_stream_handshake(pc->s, on_public_handshake) < 0)
    pconn_close(pc);
}

/* ---------- for the admin API (gateway_admin.c) ---------- */

void cr__gateway_foreach_tunnel(struct gateway *gw, void (*visit)(const cr__gw_tunnel_info_t *info, void *arg),
                                void *arg) {
  cr_queue_t *q;
  cr__gw_groups_foreach(gw->groups, gw->conf->ngroups, visit, arg);
  cr_queue_foreach(q, &gw->retired) {
    gw_gen_t *g = cr_queue_data(q, gw_gen_t, link);
    cr__gw_groups_foreach(g->groups, g->conf->ngroups, visit, arg);
  }
}

/* Tunnels a reload left in a retired generation's registry (shutting down). */
static size_t retired_tunnels(gateway_t *gw) {
  cr_queue_t *q;
  size_t n = 0;
  cr_queue_foreach(q, &gw->retired) {
    gw_gen_t *g = cr_queue_data(q, gw_gen_t, link);
    n += cr__gw_groups_ntunnels(g->groups, g->conf->ngroups);
  }
  return n;
}

/* ---------- start, drain, stop ---------- */

static void force_close_all(gateway_t *gw) {
  cr_queue_t *q, *n;
  cr_queue_foreach_safe(q, n, &gw->pconns) pconn_close(cr_queue_data(q, pconn_t, link));
  cr__gw_groups_close(gw->groups, gw->conf->ngroups);
  cr_queue_foreach(q, &gw->retired) {
    gw_gen_t *g = cr_queue_data(q, gw_gen_t, link);
    cr__gw_groups_close(g->groups, g->conf->ngroups);
  }
  cr_queue_foreach_safe(q, n, &gw->handshakes) {
    tunnel_handshake_t *hs = cr_queue_data(q, tunnel_handshake_t, link);
    cr_stream_close(hs->tls, NULL);
    handshake_done(hs);
  }
}

/* The drain deadline passed, or a second stop signal: callers and tunnels still busy close now. */
static void gateway_cut(void *arg, cr_process_end_t why) {
  (void)why;
  force_close_all(arg);
}

static size_t gateway_in_flight(void *arg) {
  gateway_t *gw = arg;
  return gw->npconns;
}

/* Asked every loop turn while draining. The tunnels stay usable while callers are still connected
 * (a caller accepted before the drain may send its request after it: it is served, not refused), and
 * get their GOAWAY once the last caller is gone; then the agents move to the other replicas. */
static int gateway_drained(void *arg) {
  gateway_t *gw = arg;
  if (gw->npconns == 0 && cr_queue_empty(&gw->handshakes) && !gw->tunnels_shut) {
    gw->tunnels_shut = 1;
    cr__gw_groups_shutdown(gw->groups, gw->conf->ngroups, gw->conf->drain_timeout_ms);
  }
  return gw->npconns == 0 && cr__gw_groups_ntunnels(gw->groups, gw->conf->ngroups) == 0 && retired_tunnels(gw) == 0;
}

static void gateway_drain(void *arg) {
  gateway_t *gw = arg;
  cr_queue_t *q, *n;
  /* Callers whose connection the kernel completed but this process had not yet accepted (a load
   * balancer still sending here until its health check sees /readyz fail) are taken and served,
   * not reset by the close: under load a loop turn leaves dozens in the queue. */
  cr_listener_close_accepting_queued(gw->public_listener, PUBLIC_BACKLOG);
  gw->draining = 1;
  cr__gw_replicas_stop(gw->replicas);
  cr_listener_close(gw->tunnel_listener);
  gw->tunnel_listener = gw->public_listener = NULL;
  cr__gw_crl_stop(gw);
  if (gw->admin)
    cr__gw_admin_stop(gw->admin);
  gw->admin = NULL;
  /* Idle keep-alive callers go now; those mid-exchange close after their answer, and those that
   * connected but have not yet sent their first request are served once (a load balancer sent them
   * here before it saw the drain). */
  cr_queue_foreach_safe(q, n, &gw->pconns) {
    pconn_t *pc = cr_queue_data(q, pconn_t, link);
    if (pc->state == PC_WAIT_HEAD && !cr_http1_parser_in_message(pc->parser) && pc->flushed > 0)
      pconn_close(pc);
  }
  gateway_drained(gw); /* no caller left: the tunnels' GOAWAY goes now */
}

/* SIGHUP (and POST /reload of the admin API) reloads the whole configuration: see cr_gateway_reload. */
static void gateway_sighup(void *arg) {
  gateway_t *gw = arg;
  char err[1200];
  (void)cr__gateway_reload(gw, "SIGHUP", err, sizeof err);
}

static void on_replicas_change(void *arg) {
  gateway_t *gw = arg;
  cr__gw_groups_announce(gw->groups, gw->conf->ngroups);
}

/* Ready: configuration loaded and both listeners up; tunnels are not required (agents could never
 * reach a replica that is not ready to take them). */
static int probe_ready(void *arg, char *why, size_t whylen) {
  gateway_t *gw = arg;
  if (gw->draining) {
    snprintf(why, whylen, "draining: stopping after the calls in flight");
    return 0;
  }
  if (gw->tunnel_listener == NULL || gw->public_listener == NULL) {
    snprintf(why, whylen, "listeners not up");
    return 0;
  }
  return 1;
}

typedef struct status_walk {
  const char *group;
  size_t tunnels, usable, kept, streams;
  const char *agents[64];
  size_t agent_tunnels[64];
  size_t nagents;
} status_walk_t;

static void status_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  status_walk_t *w = arg;
  size_t i;
  if (strcmp(info->group, w->group) != 0)
    return;
  w->tunnels++;
  w->usable += cr_tunnel_usable(info->tunnel) != 0;
  w->kept += strcmp(info->coverage, "kept") == 0;
  w->streams += cr_tunnel_nstreams(info->tunnel);
  for (i = 0; i < w->nagents; i++)
    if (strcmp(w->agents[i], info->agent) == 0)
      break;
  if (i == w->nagents) {
    if (w->nagents == CR_ARRAY_SIZE(w->agents))
      return;
    w->agents[w->nagents++] = info->agent;
    w->agent_tunnels[i] = 0;
  }
  w->agent_tunnels[i]++;
}

static void tunnel_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  cr_buf_t *out = arg;
  if (out->len && out->base[out->len - 1] == '}')
    cr_buf_appendf(out, ",");
  cr_buf_appendf(out, "{\"agent\":\"");
  cr_errpage_json_escape(out, info->agent);
  cr_buf_appendf(out, "\",\"group\":\"");
  cr_errpage_json_escape(out, info->group);
  cr_buf_appendf(out, "\",\"peer\":\"");
  cr_errpage_json_escape(out, info->peer);
  cr_buf_appendf(out, "\",\"streams\":%zu,\"usable\":%s,\"coverage\":\"%s\"}", cr_tunnel_nstreams(info->tunnel),
                 cr_tunnel_usable(info->tunnel) ? "true" : "false", info->coverage);
}

/* The probe listener's status document: this replica, its set, and its tunnels per group and agent. */
static void probe_status(void *arg, cr_buf_t *out) {
  gateway_t *gw = arg;
  char why[128];
  int ready = probe_ready(gw, why, sizeof why);
  cr_buf_appendf(out, "\"version\":\"%s\",\"ready\":%s,\"draining\":%s,", CCRELAY_VERSION,
                 ready ? "true" : "false", gw->draining ? "true" : "false");
  cr__gw_replicas_status_json(gw->replicas, out);
  cr_buf_appendf(out, ",\"config_generation\":%llu,\"reloads_ok\":%llu,\"reloads_failed\":%llu,\"last_reload_ok\":%llu",
                 (unsigned long long)gw->gen->number, (unsigned long long)gw->reloads_ok,
                 (unsigned long long)gw->reloads_failed, (unsigned long long)gw->last_reload_ok);
  cr_buf_appendf(out, ",\"connections\":%zu,\"groups\":[", gw->npconns);
  for (size_t g = 0; g < gw->conf->ngroups; g++) {
    status_walk_t w;
    memset(&w, 0, sizeof w);
    w.group = gw->conf->groups[g].name;
    cr__gw_groups_foreach(gw->groups, gw->conf->ngroups, status_visit, &w);
    cr_buf_appendf(out, "%s{\"group\":\"", g ? "," : "");
    cr_errpage_json_escape(out, w.group);
    cr_buf_appendf(out, "\",\"tunnels\":%zu,\"usable\":%zu,\"kept\":%zu,\"streams\":%zu,\"agents\":{",
                   w.tunnels, w.usable, w.kept, w.streams);
    for (size_t i = 0; i < w.nagents; i++) {
      cr_buf_appendf(out, "%s\"", i ? "," : "");
      cr_errpage_json_escape(out, w.agents[i]);
      cr_buf_appendf(out, "\":%zu", w.agent_tunnels[i]);
    }
    cr_buf_appendf(out, "}}");
  }
  cr_buf_appendf(out, "],\"tunnels\":[");
  cr__gw_groups_foreach(gw->groups, gw->conf->ngroups, tunnel_visit, out);
  cr_buf_appendf(out, "]");
}

/* ---------- metrics ---------- */

typedef struct tunnel_count {
  const char *group, *agent;
  uint64_t n;
} tunnel_count_t;

typedef struct metrics_walk {
  tunnel_count_t *c;
  size_t n, cap;
} metrics_walk_t;

/* Tunnels by group and admitting agent name: every configured (group, agent) pair is listed, with 0
 * when none is connected, so that an alert on a missing agent has a series to look at. */
static void metrics_visit(const cr__gw_tunnel_info_t *info, void *arg) {
  metrics_walk_t *w = arg;
  for (size_t i = 0; i < w->n; i++)
    if (strcmp(w->c[i].group, info->group) == 0 && strcmp(w->c[i].agent, info->agent) == 0) {
      w->c[i].n++;
      return;
    }
  if (w->n == w->cap) {
    w->cap = w->cap * 2 + 8;
    w->c = cr_realloc(w->c, w->cap * sizeof *w->c);
  }
  w->c[w->n++] = (tunnel_count_t){info->group, info->agent, 1};
}

void cr__gateway_count_reload(gateway_t *gw, int ok) {
  if (ok) {
    gw->metrics.reloads_ok++;
    gw->metrics.reload_last_ok = time(NULL);
  } else {
    gw->metrics.reloads_failed++;
  }
}

static void identity_sample(cr_buf_t *out, const char *name, const cr_tls_ctx_t *ctx) {
  char subject[256];
  time_t na = ctx ? cr_tls_ctx_identity(ctx, subject, sizeof subject) : 0;
  cr_metrics_label_t l[3] = {{"kind", "gateway"}, {"name", name}, {"subject", subject}};
  if (na)
    cr_metrics_u64(out, "ccrelay_certificate_not_after_seconds", l, 3, (uint64_t)na);
}

static void crl_sample(cr_buf_t *out, const char *name, const cr_tls_ctx_t *ctx) {
  cr_tls_crl_info_t info;
  cr_metrics_label_t l[2] = {{"name", name}, {"issuer", ""}};
  if (ctx == NULL)
    return;
  cr_tls_ctx_crl_info(ctx, &info);
  if (info.next_update)
    cr_metrics_u64(out, "ccrelay_crl_next_update_seconds", l, 2, (uint64_t)info.next_update);
}

void cr__gateway_metrics_conf(gateway_t *gw) {
  const cr_conf_gateway_t *conf = gw->conf;
  gw_metrics_t *gm = &gw->metrics;
  char name[1024];
  free(gm->by_service);
  gm->by_service = cr_calloc(conf->nservices ? conf->nservices : 1, sizeof *gm->by_service);
  for (size_t i = 0; i < conf->nservices; i++) {
    size_t b = 0;
    /* A service is named by its host and path prefix, both from the configuration. */
    snprintf(name, sizeof name, "%s%s", conf->services[i].host,
             conf->services[i].path_prefix ? conf->services[i].path_prefix : "");
    while (b < gm->nblocks && strcmp(gm->blocks[b]->name, name) != 0)
      b++;
    if (b == gm->nblocks) {
      svc_metrics_t *m = cr_calloc(1, sizeof *m);
      m->name = cr_strdup(name);
      cr_metrics_calls_init(&m->calls);
      gm->blocks = cr_realloc(gm->blocks, (gm->nblocks + 1) * sizeof *gm->blocks);
      gm->blocks[gm->nblocks++] = m;
    }
    gm->by_service[i] = gm->blocks[b];
  }
}

void cr__gateway_metrics(gateway_t *gw, cr_buf_t *out) {
  size_t n = gw->metrics.nblocks;
  const char **names = cr_calloc(n + 1, sizeof *names);
  const cr_metrics_calls_t **blocks = cr_calloc(n + 1, sizeof *blocks);
  const cr_conf_gateway_t *conf = gw->conf;
  metrics_walk_t w = {NULL, 0, 0};
  cr_metrics_label_t l[3];

  cr_metrics_build_info(out, CCRELAY_VERSION, CCRELAY_REVISION);
  for (size_t i = 0; i < n; i++) {
    names[i] = gw->metrics.blocks[i]->name;
    blocks[i] = &gw->metrics.blocks[i]->calls;
  }
  cr_metrics_calls_render(out, "ccrelay_gateway", "service", names, blocks, n, "call_duration_seconds",
                          "Time from a request's head to the end of its answer to the caller, in seconds.");
  cr_metrics_family(out, "ccrelay_gateway_unrouted_calls_total", "counter",
                    "Requests that no service took (no service for the host and path, or a target refused).");
  {
    uint64_t sum = 0;
    for (unsigned m = 0; m < CR_METRICS_NMETHODS; m++)
      for (unsigned c = 0; c < CR_METRICS_NCLASSES; c++)
        sum += gw->metrics.unrouted.calls.calls[m][c];
    cr_metrics_u64(out, "ccrelay_gateway_unrouted_calls_total", NULL, 0, sum);
  }
  cr_metrics_family(out, "ccrelay_gateway_callers_refused_total", "counter",
                    "Callers refused by a service's callers rule (sources, client_ca, subjects, token).");
  for (size_t i = 0; i < n; i++)
    for (unsigned k = 0; k < RULE_COUNT; k++) {
      l[0] = (cr_metrics_label_t){"service", names[i]};
      l[1] = (cr_metrics_label_t){"rule", rule_names[k]};
      cr_metrics_u64(out, "ccrelay_gateway_callers_refused_total", l, 2, gw->metrics.blocks[i]->refused[k]);
    }
  cr_metrics_family(out, "ccrelay_gateway_limits_hit_total", "counter",
                    "Calls refused or cut by a service limit (max_body, max_concurrent).");
  for (size_t i = 0; i < n; i++)
    for (unsigned k = 0; k < LIM_COUNT; k++) {
      l[0] = (cr_metrics_label_t){"service", names[i]};
      l[1] = (cr_metrics_label_t){"limit", limit_names[k]};
      cr_metrics_u64(out, "ccrelay_gateway_limits_hit_total", l, 2, gw->metrics.blocks[i]->limits[k]);
    }
  free(names);
  free(blocks);
  cr_metrics_family(out, "ccrelay_gateway_connections_refused_total", "counter",
                    "Connections refused before authentication (pre-auth caps) and failed or late TLS handshakes, "
                    "by listener and reason.");
  for (int li = 0; li < L_COUNT; li++)
    for (int r = 0; r < R_COUNT; r++) {
      l[0] = (cr_metrics_label_t){"listener", listener_names[li]};
      l[1] = (cr_metrics_label_t){"reason", reason_keys[r]};
      cr_metrics_u64(out, "ccrelay_gateway_connections_refused_total", l, 2, gw->refusals[li].total[r]);
    }
  cr_metrics_family(out, "ccrelay_gateway_public_connections", "gauge", "Caller connections open.");
  cr_metrics_u64(out, "ccrelay_gateway_public_connections", NULL, 0, gw->npconns);

  for (size_t g = 0; g < conf->ngroups; g++)
    for (size_t a = 0; a < conf->groups[g].nagents; a++)
      metrics_visit(&(cr__gw_tunnel_info_t){.agent = conf->groups[g].agents[a], .group = conf->groups[g].name}, &w);
  for (size_t i = 0; i < w.n; i++)
    w.c[i].n = 0; /* the configured pairs, counted from zero */
  cr__gw_groups_foreach(gw->groups, conf->ngroups, metrics_visit, &w);
  cr_metrics_family(out, "ccrelay_gateway_tunnels_up", "gauge",
                    "Agent tunnels connected (usable or draining), by relay group and agent name.");
  for (size_t i = 0; i < w.n; i++) {
    l[0] = (cr_metrics_label_t){"group", w.c[i].group};
    l[1] = (cr_metrics_label_t){"agent", w.c[i].agent};
    cr_metrics_u64(out, "ccrelay_gateway_tunnels_up", l, 2, w.c[i].n);
  }
  free(w.c);
  cr_metrics_family(out, "ccrelay_tunnel_ping_rtt_seconds", "histogram",
                    "Round trip of the tunnels' HTTP/2 PINGs, from sending to the ACK, in seconds.");
  cr_metrics_hist(out, "ccrelay_tunnel_ping_rtt_seconds", NULL, 0, &gw->metrics.rtt);

  cr_metrics_family(out, "ccrelay_certificate_not_after_seconds", "gauge",
                    "When a certificate expires (notAfter), in seconds since the Unix epoch.");
  identity_sample(out, "public", gw->public_tls);
  identity_sample(out, "tunnel", gw->tunnel_tls);
  cr_metrics_family(out, "ccrelay_crl_next_update_seconds", "gauge",
                    "When a CRL is due to be replaced (the earliest nextUpdate of a listener's CRLs), in seconds "
                    "since the Unix epoch.");
  crl_sample(out, "public", gw->public_tls);
  crl_sample(out, "tunnel", gw->tunnel_tls);

  cr_metrics_family(out, "ccrelay_reloads_total", "counter", "Reloads on SIGHUP, by result.");
  l[0] = (cr_metrics_label_t){"result", "ok"};
  cr_metrics_u64(out, "ccrelay_reloads_total", l, 1, gw->metrics.reloads_ok);
  l[0] = (cr_metrics_label_t){"result", "failed"};
  cr_metrics_u64(out, "ccrelay_reloads_total", l, 1, gw->metrics.reloads_failed);
  cr_metrics_family(out, "ccrelay_reload_last_success_timestamp_seconds", "gauge",
                    "When the last reload succeeded, in seconds since the Unix epoch (0: never).");
  cr_metrics_u64(out, "ccrelay_reload_last_success_timestamp_seconds", NULL, 0, (uint64_t)gw->metrics.reload_last_ok);
}

static void probe_metrics(void *arg, cr_buf_t *out) { cr__gateway_metrics(arg, out); }

/* Drained (or cut): the handles that outlive the drain go, so the loop can end. */
static void gateway_stop(void *arg) {
  gateway_t *gw = arg;
  if (gw->probe)
    cr_admin_close(gw->probe);
  gw->probe = NULL;
  for (size_t i = 0; i < gw->conf->ngroups; i++)
    gw->groups[i].replicas = NULL;
  cr__gw_replicas_free(gw->replicas);
  gw->replicas = NULL;
}

static const cr_process_handlers_t process_handlers = {
    .stop = gateway_stop,
    .drain = gateway_drain,
    .drained = gateway_drained,
    .cut = gateway_cut,
    .in_flight = gateway_in_flight,
    .busy = gateway_busy,
};

/* ---------- CRLs ---------- */

/* After the tunnel's CRLs changed: a tunnel made before, whose agent certificate is now revoked, gets
 * no new calls and goes within drain_timeout (GOAWAY; calls in flight may finish). Its redial is
 * refused at the handshake. Found through the registry's walk, shut down after it. */
typedef struct revoked_tunnels {
  gateway_t *gw;
  cr_tunnel_t **v;
  size_t n;
} revoked_tunnels_t;

static void find_revoked(const cr__gw_tunnel_info_t *info, void *arg) {
  revoked_tunnels_t *rt = arg;
  X509 *cert = cr_tls_stream_peer_cert(cr_tunnel_transport(info->tunnel));
  char why[300];
  if (!cr_tunnel_usable(info->tunnel) || !cr_tls_ctx_cert_revoked(rt->gw->tunnel_tls, cert, why, sizeof why))
    return;
  cr_log_warn("tunnel closed: agent certificate revoked", "group=%s agent=%s peer=%s reason=\"%s\" deadline_ms=%llu",
              info->group, info->agent, info->peer, why, (unsigned long long)rt->gw->conf->drain_timeout_ms);
  rt->v = cr_realloc(rt->v, (rt->n + 1) * sizeof *rt->v);
  rt->v[rt->n++] = info->tunnel;
}

static void on_tunnel_crls_reloaded(void *arg) {
  revoked_tunnels_t rt = {arg, NULL, 0};
  cr__gateway_foreach_tunnel(rt.gw, find_revoked, &rt);
  for (size_t i = 0; i < rt.n; i++)
    cr_tunnel_shutdown(rt.v[i], rt.gw->conf->drain_timeout_ms);
  free(rt.v);
}

static void crl_watch(gateway_t *gw, cr_tls_ctx_t *tls, const char *what, cr_tls_crl_reload_cb cb,
                      cr_tls_crl_watch_t **out) {
  cr_tls_crl_info_t info;
  cr_tls_ctx_crl_info(tls, &info);
  if (info.mode != CR_TRUST_CRL_OFF)
    cr_tls_crl_watch_start(&gw->loop, tls, what, CR_GW_CRL_CHECK_MS, cb, gw, out);
}

void cr__gw_crl_reload(gateway_t *gw) {
  cr_tls_crl_watch_reload(gw->tunnel_crls, "SIGHUP");
  cr_tls_crl_watch_reload(gw->public_crls, "SIGHUP");
}

void cr__gw_crl_stop(gateway_t *gw) {
  cr_tls_crl_watch_stop(gw->tunnel_crls);
  cr_tls_crl_watch_stop(gw->public_crls);
  gw->tunnel_crls = gw->public_crls = NULL;
}

static int crl_mode(int set, cr_conf_revocation_t r) {
  if (!set && r == CR_REVOCATION_OFF)
    return CR_TLS_CRL_AUTO; /* not given and no crl: CRLs in client_ca still count */
  return r == CR_REVOCATION_HARD ? CR_TRUST_CRL_HARD : r == CR_REVOCATION_SOFT ? CR_TRUST_CRL_SOFT : CR_TRUST_CRL_OFF;
}

/* The two listeners' TLS contexts for configuration c (policy: its services' rules). Nothing else
 * changes: at start and on a reload alike. 0, or an error with *key the config key at fault, *pos its
 * position (line 0: none) and err the prose. */
static int build_tls(gateway_t *gw, const cr_conf_gateway_t *c, cr__gw_policy_t *policy, cr_tls_ctx_t **tunnel,
                     cr_tls_ctx_t **public_, const char **key, cr_conf_pos_t *pos, char *err, size_t errlen) {
  cr_tls_identity_src_t tid = {c->tunnel.identity.pkcs12.path, c->tunnel.identity.password,
                               c->tunnel.identity.cert.path, c->tunnel.identity.key.path};
  cr_tls_identity_src_t pid = {c->public_.identity.pkcs12.path, c->public_.identity.password,
                               c->public_.identity.cert.path, c->public_.identity.key.path};
  static const cr_conf_pos_t none = {0, 0};
  cr_tls_ctx_opts_t o;
  int r;
  *tunnel = *public_ = NULL;
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.ca_file = c->tunnel.client_ca.path;
  o.identity = &tid;
  o.identity_current = 1;
  o.tls13_only = 1;
  o.alpn = CR_TUNNEL_ALPN;
  o.alpn_required = 1;
  o.peer_check = tunnel_peer_check;
  o.peer_check_arg = gw;
  o.crl_file = c->tunnel.crl.path;
  o.crl_mode = crl_mode(c->tunnel.revocation_set, c->tunnel.revocation);
  if ((r = cr_tls_ctx_new(&o, tunnel, err, errlen)) < 0) {
    *key = "tunnel";
    *pos = c->tunnel.identity.pos.line ? c->tunnel.identity.pos : none;
    return r;
  }
  memset(&o, 0, sizeof o);
  o.server = 1;
  o.ca_file = c->public_.client_ca.path;
  o.identity = &pid;
  o.identity_current = 1;
  o.alpn = "http/1.1";
  o.client_ca_files = cr__gw_policy_client_cas(policy, &o.nclient_ca_files);
  o.tls13_only = c->public_.tls_min_version == 13;
  o.ciphers = c->public_.tls_ciphers ? c->public_.tls_ciphers : CR_TLS_CIPHERS_AEAD;
  if (c->public_.tls_ciphers && cr_tls_cipher_list_check(o.ciphers, err, errlen) < 0) {
    *key = "public.tls.ciphers";
    *pos = c->public_.tls_ciphers_pos;
    r = CR_ECONFIG;
  } else {
    if (c->public_.client_ca.path) {
      o.crl_file = c->public_.crl.path;
      o.crl_mode = crl_mode(c->public_.revocation_set, c->public_.revocation);
    }
    if ((r = cr_tls_ctx_new(&o, public_, err, errlen)) < 0) {
      *key = "public";
      *pos = c->public_.identity.pos.line ? c->public_.identity.pos : none;
    }
  }
  if (r < 0) {
    cr_tls_ctx_free(*tunnel);
    *tunnel = NULL;
  }
  return r;
}

static int make_tls_contexts(gateway_t *gw) {
  const cr_conf_gateway_t *c = gw->conf;
  const char *key;
  cr_conf_pos_t pos;
  char err[1024];
  int r;
  if ((r = build_tls(gw, c, gw->policy, &gw->tunnel_tls, &gw->public_tls, &key, &pos, err, sizeof err)) < 0) {
    if (pos.line)
      cr_log_error("cannot start", "config=%s:%d:%d key=%s reason=\"%s\"", c->path, pos.line, pos.col, key, err);
    else
      cr_log_error("cannot start", "config=%s key=%s reason=\"%s\"", c->path, key, err);
    return r;
  }
  crl_watch(gw, gw->tunnel_tls, "tunnel", on_tunnel_crls_reloaded, &gw->tunnel_crls);
  crl_watch(gw, gw->public_tls, "public", NULL, &gw->public_crls);
  return 0;
}

/* ---------- reload ---------- */

static void gen_free(gw_gen_t *g) {
  cr__gw_groups_free(g->groups);
  cr__gw_policy_free(g->policy);
  if (g->owned) {
    cr_conf_gateway_free(g->owned);
    free(g->owned);
  }
  free(g);
}

/* Frees the retired generations nothing uses any more. */
static void gens_sweep(gateway_t *gw) {
  cr_queue_t *q, *n;
  cr_queue_foreach_safe(q, n, &gw->retired) {
    gw_gen_t *g = cr_queue_data(q, gw_gen_t, link);
    if (g->refs > 0 || cr__gw_groups_ntunnels(g->groups, g->conf->ngroups) > 0)
      continue;
    cr_queue_remove(&g->link);
    cr_log_debug("configuration generation freed", "generation=%llu", (unsigned long long)g->number);
    gen_free(g);
  }
  if (cr_queue_empty(&gw->retired))
    uv_timer_stop(&gw->retired_timer);
}

static void on_retired_timer(uv_timer_t *h) { gens_sweep(h->data); }

static int str_differs(const char *x, const char *y) { return (x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0); }

static int listen_differs(const cr_conf_listen_t *o, const cr_conf_listen_t *n) {
  return str_differs(o->host, n->host) || o->port != n->port;
}

/* Whether callers' ClientHellos must be peeked at: decided again at every reload. */
static int any_passthrough(const cr_conf_gateway_t *conf) {
  for (size_t i = 0; i < conf->nservices; i++)
    if (conf->services[i].passthrough)
      return 1;
  return 0;
}

/* What a reload cannot change in a running process: said in the log, and the old value stays. */
static void report_restart_needed(const cr_conf_gateway_t *o, const cr_conf_gateway_t *n) {
  static const struct {
    const char *key;
    size_t off;
  } listens[] = {{"tunnel.listen", offsetof(cr_conf_gateway_t, tunnel.listen)},
                 {"public.listen", offsetof(cr_conf_gateway_t, public_.listen)},
                 {"admin.listen", offsetof(cr_conf_gateway_t, admin_listen)},
                 {"probe.listen", offsetof(cr_conf_gateway_t, probe_listen)}};
  for (size_t i = 0; i < CR_ARRAY_SIZE(listens); i++) {
    const cr_conf_listen_t *lo = (const void *)((const char *)o + listens[i].off);
    const cr_conf_listen_t *ln = (const void *)((const char *)n + listens[i].off);
    if (listen_differs(lo, ln))
      cr_log_warn("configuration reload: listener address changed: restart to apply",
                  "key=%s config=%s:%d:%d in_force=%s:%u", listens[i].key, n->path, ln->pos.line, ln->pos.col,
                  lo->host ? lo->host : "none", lo->port);
  }
  if (o->public_.max_connections != n->public_.max_connections ||
      o->public_.max_per_source != n->public_.max_per_source || o->tunnel.max_handshakes != n->tunnel.max_handshakes ||
      o->tunnel.max_per_source != n->tunnel.max_per_source)
    cr_log_warn("configuration reload: per-source connection tables keep their size: restart to apply",
                "keys=\"public.max_connections public.max_per_source tunnel.max_handshakes tunnel.max_per_source\" "
                "config=%s",
                n->path);
  if (str_differs(o->admin_token, n->admin_token) && o->admin_listen.host == NULL)
    cr_log_warn("configuration reload: admin API not running: restart to apply", "key=admin config=%s", n->path);
}

/* Logs a refused reload with the place of the fault and counts it. */
static int reload_refused(gateway_t *gw, const char *trigger, int rc, char *err, size_t errlen, const char *fmt,
                          ...) CR_PRINTF(6, 7);
static int reload_refused(gateway_t *gw, const char *trigger, int rc, char *err, size_t errlen, const char *fmt,
                          ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  gw->reloads_failed++;
  cr__gateway_count_reload(gw, 0);
  cr_log_error("configuration reload failed; the configuration in force stays", "trigger=%s reason=\"%s\" failed=%llu",
               trigger, err, (unsigned long long)gw->reloads_failed);
  return rc;
}

int cr__gateway_reload(gateway_t *gw, const char *trigger, char *err, size_t errlen) {
  static const char *const level_names[] = {"debug", "info", "warn", "error"};
  cr_conf_gateway_t *n;
  cr__gw_policy_t *policy = NULL;
  cr_tls_ctx_t *ttls = NULL, *ptls = NULL;
  gw_gen_t *g, *old = gw->gen;
  const char *key;
  cr_conf_pos_t pos;
  char why[1024];
  int r;

  if (gw->draining)
    return reload_refused(gw, trigger, CR_ECONFIG, err, errlen, "draining");
  cr_log_info("configuration reload", "trigger=%s config=%s", trigger, gw->conf->path);
  /* Everything is built before anything changes: any fault leaves the process as it was. */
  n = cr_calloc(1, sizeof *n);
  if ((r = cr_conf_gateway_load(gw->conf->path, n, why, sizeof why)) < 0) {
    free(n);
    return reload_refused(gw, trigger, r, err, errlen, "%s", why);
  }
  if ((r = cr__gw_policy_new(n, "configuration reload refused", &policy)) < 0) {
    cr__gw_policy_free(policy);
    cr_conf_gateway_free(n);
    free(n);
    return reload_refused(gw, trigger, r, err, errlen, "%s: services' callers rules cannot be loaded (logged above)",
                          gw->conf->path);
  }
  if ((r = build_tls(gw, n, policy, &ttls, &ptls, &key, &pos, why, sizeof why)) < 0) {
    cr__gw_policy_free(policy);
    cr_conf_gateway_free(n);
    free(n);
    if (pos.line)
      return reload_refused(gw, trigger, r, err, errlen, "%s:%d:%d: %s: %s", gw->conf->path, pos.line, pos.col, key,
                            why);
    return reload_refused(gw, trigger, r, err, errlen, "%s: %s: %s", gw->conf->path, key, why);
  }
  report_restart_needed(gw->conf, n);

  /* The swap. New connections take the new contexts; a connection accepted before holds its own
   * reference to the old one, so a handshake in progress finishes under what it began with. */
  g = cr_calloc(1, sizeof *g);
  g->conf = g->owned = n;
  g->policy = policy;
  g->groups = cr__gw_groups_new(n);
  g->number = old->number + 1;
  for (size_t i = 0; i < n->ngroups; i++)
    g->groups[i].replicas = gw->replicas;
  (void)cr__gw_groups_carry(old->groups, old->conf->ngroups, g->groups, n->ngroups, n->drain_timeout_ms);
  gw->gen = g;
  gw->conf = n;
  gw->policy = policy;
  gw->groups = g->groups;
  for (size_t i = 0; i < n->ngroups; i++)
    g->groups[i].rtt = &gw->metrics.rtt;
  cr__gateway_metrics_conf(gw); /* counter blocks follow services by name */
  if (any_passthrough(n) != gw->has_passthrough)
    cr_log_info("configuration reload: public listener", "config=%s peek_client_hello=%s", n->path,
                any_passthrough(n) ? "on (a passthrough service is configured)" : "off (no passthrough service)");
  /* New connections peek at their ClientHello from now on (or stop); those accepted before keep the
   * path they took. */
  gw->has_passthrough = any_passthrough(n);
  cr__gw_crl_stop(gw);
  cr_tls_ctx_free(gw->tunnel_tls);
  cr_tls_ctx_free(gw->public_tls);
  gw->tunnel_tls = ttls;
  gw->public_tls = ptls;
  crl_watch(gw, gw->tunnel_tls, "tunnel", on_tunnel_crls_reloaded, &gw->tunnel_crls);
  crl_watch(gw, gw->public_tls, "public", NULL, &gw->public_crls);
  /* Logged as a reload of the CRLs, and a tunnel whose agent is now revoked goes. */
  cr_tls_crl_watch_reload(gw->tunnel_crls, trigger);
  cr_tls_crl_watch_reload(gw->public_crls, trigger);
  if (gw->admin)
    cr__gw_admin_set_conf(gw->admin, n);
  cr_log_setup(n->log.level, n->log.format);
  if (gw->proc)
    cr_process_set_drain_timeout(gw->proc, n->drain_timeout_ms);
  cr__gw_replicas_reload(gw->replicas);
  cr_queue_insert_tail(&gw->retired, &old->link);
  gens_sweep(gw);
  if (!cr_queue_empty(&gw->retired) && !uv_is_active((uv_handle_t *)&gw->retired_timer))
    uv_timer_start(&gw->retired_timer, on_retired_timer, 1000, 1000);
  gw->reloads_ok++;
  gw->last_reload_ok = (uint64_t)time(NULL);
  cr__gateway_count_reload(gw, 1);
  snprintf(err, errlen, "reloaded");
  cr_log_info("configuration reloaded", "trigger=%s config=%s generation=%llu groups=%zu services=%zu "
              "log_level=%s retired_in_use=%d",
              trigger, n->path, (unsigned long long)g->number, n->ngroups, n->nservices,
              level_names[n->log.level], !cr_queue_empty(&gw->retired));
  return 0;
}

static int admin_reload(void *arg, char *msg, size_t msglen, uint64_t *ok, uint64_t *failed) {
  gateway_t *gw = arg;
  int r = cr__gateway_reload(gw, "admin", msg, msglen);
  *ok = gw->reloads_ok;
  *failed = gw->reloads_failed;
  return r;
}

/* Raises the soft descriptor limit to the hard one, and refuses to start when even that cannot hold
 * what the configuration admits: past it accept fails, and callers and agents would be turned away
 * while the configured caps promise room. */
static int check_fd_limit(const cr_conf_gateway_t *conf) {
  struct rlimit rl;
  unsigned long long need = (unsigned long long)conf->public_.max_connections + conf->tunnel.max_handshakes +
                            FD_RESERVE;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return 0; /* nothing to compare with */
  if (rl.rlim_cur < rl.rlim_max) {
    struct rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0)
      rl = want;
  }
  if (rl.rlim_cur != RLIM_INFINITY && (unsigned long long)rl.rlim_cur < need) {
    cr_log_error("cannot start",
                 "config=%s key=public.max_connections reason=\"public.max_connections (%u) + tunnel.max_handshakes "
                 "(%u) + %u reserved need %llu file descriptors, but the limit (RLIMIT_NOFILE, hard limit %llu) is "
                 "%llu; raise the limit (systemd LimitNOFILE=, ulimit -n) or lower public.max_connections\"",
                 conf->path, conf->public_.max_connections, conf->tunnel.max_handshakes, FD_RESERVE, need,
                 (unsigned long long)rl.rlim_max, (unsigned long long)rl.rlim_cur);
    return CR_ECONFIG;
  }
  cr_log_info("file descriptor limit", "limit=%llu needed=%llu",
              rl.rlim_cur == RLIM_INFINITY ? 0ull : (unsigned long long)rl.rlim_cur, need);
  return 0;
}

int cr_gateway_run(const cr_conf_gateway_t *conf) {
  gateway_t *gw = cr_calloc(1, sizeof *gw);
  char err[512];
  int r, code = 1;
  cr_process_end_t end;

  gw->gen = cr_calloc(1, sizeof *gw->gen);
  gw->gen->conf = conf;
  gw->gen->number = 1;
  cr_queue_init(&gw->retired);
  gw->conf = conf;
  /* a tunnel response's fields (or a request's, fewer) plus the ones a rewrite adds */
  cr_http_msg_init(&gw->scratch_head, CR_TUNNEL_MAX_HEADERS + SCRATCH_EXTRA_HEADERS);
  cr_freelist_init(&gw->free_exchanges, sizeof(exchange_t), MAX_FREE_EXCHANGES);
  cr_buf_init(&gw->scratch_out, 0);
  uv_loop_init(&gw->loop);
  cr_queue_init(&gw->handshakes);
  cr_queue_init(&gw->pconns);
  gw->groups = gw->gen->groups = cr__gw_groups_new(conf);
  cr_metrics_calls_init(&gw->metrics.unrouted.calls);
  cr__gateway_metrics_conf(gw);
  cr_metrics_hist_init(&gw->metrics.rtt, cr_metrics_rtt_bounds, cr_metrics_rtt_nbounds);
  for (size_t i = 0; i < conf->ngroups; i++)
    gw->groups[i].rtt = &gw->metrics.rtt;
  gw->public_src = cr_srcmap_new(conf->public_.max_connections, conf->public_.max_per_source);
  gw->tunnel_src = cr_srcmap_new(conf->tunnel.max_handshakes, conf->tunnel.max_per_source);
  for (int i = 0; i < L_COUNT; i++) {
    gw->refusals[i].log.window_ms = REFUSE_LOG_WINDOW_MS;
    gw->refusals[i].log.burst = REFUSE_LOG_BURST;
  }
  uv_timer_init(&gw->loop, &gw->refuse_timer);
  gw->refuse_timer.data = gw;
  uv_timer_init(&gw->loop, &gw->retired_timer);
  gw->retired_timer.data = gw;
  uv_unref((uv_handle_t *)&gw->retired_timer);
  uv_unref((uv_handle_t *)&gw->refuse_timer); /* a summary never keeps the process alive */
  gw->replicas = cr__gw_replicas_new(&gw->loop, conf, on_replicas_change, gw);
  for (size_t i = 0; i < conf->ngroups; i++)
    gw->groups[i].replicas = gw->replicas;
  gw->probe_ops.ready = probe_ready;
  gw->probe_ops.status = probe_status;
  gw->probe_ops.metrics = probe_metrics;
  gw->probe_ops.arg = gw;
  gw->has_passthrough = any_passthrough(conf);
  if (check_fd_limit(conf) < 0 || cr__gw_policy_new(conf, "cannot start", &gw->policy) < 0 ||
      (gw->gen->policy = gw->policy, make_tls_contexts(gw) < 0))
    goto out;
  r = cr_tcp_listen(&gw->loop, conf->tunnel.listen.host, conf->tunnel.listen.port, 512, on_tunnel_connection, gw,
                    &gw->tunnel_listener, err, sizeof err);
  if (r < 0) {
    cr_log_error("cannot start", "config=%s:%d:%d key=tunnel.listen reason=\"%s\"", conf->path,
                 conf->tunnel.listen.pos.line, conf->tunnel.listen.pos.col, err);
    goto out;
  }
  cr_listener_set_admit(gw->tunnel_listener, tunnel_admit);
  r = cr_tcp_listen(&gw->loop, conf->public_.listen.host, conf->public_.listen.port, PUBLIC_BACKLOG,
                    on_public_connection, gw, &gw->public_listener, err, sizeof err);
  if (r < 0) {
    cr_log_error("cannot start", "config=%s:%d:%d key=public.listen reason=\"%s\"", conf->path,
                 conf->public_.listen.pos.line, conf->public_.listen.pos.col, err);
    cr_listener_close(gw->tunnel_listener);
    goto out;
  }
  cr_listener_set_admit(gw->public_listener, public_admit);
  if ((conf->admin_listen.host && cr__gw_admin_start(gw, &gw->loop, conf, &gw->admin) < 0) ||
      (conf->probe_listen.host && cr__gw_probe_start(&gw->loop, conf, &gw->probe_ops, &gw->probe) < 0)) {
    cr_listener_close(gw->tunnel_listener);
    cr_listener_close(gw->public_listener);
    gw->tunnel_listener = gw->public_listener = NULL;
    if (gw->admin)
      cr__gw_admin_stop(gw->admin);
    gw->admin = NULL;
    goto out;
  }
  if (gw->admin)
    cr__gw_admin_on_reload(gw->admin, admin_reload, gw);
  gw->proc = cr_process_new(&gw->loop, &process_handlers, gw, conf->drain_timeout_ms, 0);
  cr_process_on_release(gw->proc, gateway_release_caches, gw);
  cr_process_on_reload(gw->proc, gateway_sighup, gw);
  cr_process_start(gw->proc);
  cr_log_info("gateway listening", "tunnel=%s:%u public=%s:%u groups=%zu services=%zu replica=%s version=%s",
              conf->tunnel.listen.host, cr_listener_port(gw->tunnel_listener), conf->public_.listen.host,
              cr_listener_port(gw->public_listener), conf->ngroups, conf->nservices,
              cr__gw_replicas_id(gw->replicas), CCRELAY_VERSION);

  /* A stop that cut calls in flight (drain deadline, second signal) is not a clean one: the exit
   * status says so, for supervisors and scripts (README, Operations). */
  end = cr_process_run(gw->proc);
  cr_log_info("gateway stopped", "");
  code = end == CR_PROCESS_DRAINED || end == CR_PROCESS_RUNNING ? 0 : CR_PROCESS_EXIT_CUT;
out:
  cr__gw_crl_stop(gw); /* a start that failed after the watches began */
  gateway_stop(gw); /* when the process never ran */
  for (int i = 0; i < L_COUNT; i++) /* the last window's summary, cut short */
    if (gw->refusals[i].log.suppressed > 0)
      refusals_summary(gw, i, gw->refusals[i].log.suppressed);
  uv_close((uv_handle_t *)&gw->refuse_timer, NULL);
  uv_close((uv_handle_t *)&gw->retired_timer, NULL);
  uv_run(&gw->loop, UV_RUN_DEFAULT); /* let closing handles finish */
  cr_log_flush();
  if (uv_loop_close(&gw->loop) != 0)
    cr_log_warn("event loop closed with handles still open", "");
  cr_process_free(gw->proc);
  cr_tls_ctx_free(gw->tunnel_tls);
  cr_tls_ctx_free(gw->public_tls);
  gw->gen->policy = gw->policy;
  while (!cr_queue_empty(&gw->retired)) { /* every exchange and tunnel is gone with the loop */
    gw_gen_t *g = cr_queue_data(gw->retired.next, gw_gen_t, link);
    cr_queue_remove(&g->link);
    gen_free(g);
  }
  gen_free(gw->gen);
  for (size_t i = 0; i < gw->metrics.nblocks; i++) {
    free(gw->metrics.blocks[i]->name);
    free(gw->metrics.blocks[i]);
  }
  free(gw->metrics.blocks);
  free(gw->metrics.by_service);
  cr_srcmap_free(gw->public_src);
  cr_srcmap_free(gw->tunnel_src);
  cr_http_msg_free(&gw->scratch_head);
  cr_buf_free(&gw->scratch_out);
  cr_freelist_drain(&gw->free_exchanges);
  free(gw);
  return code;
}

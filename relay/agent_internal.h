/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the agent's files: agent.c (tunnels, exchanges), agent_trust.c (routes' TLS state from
 * the trust store, reloads, expiry) and agent_ops.c (status, readiness, admin listener, control
 * channel). Not a contract for anyone else. */
#ifndef CCRELAY_AGENT_INTERNAL_H
#define CCRELAY_AGENT_INTERNAL_H

#include <time.h>
#include <uv.h>

#include "ccrelay/admin.h"
#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/config.h"
#include "ccrelay/metrics.h"
#include "ccrelay/process.h"
#include "ccrelay/queue.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "ccrelay/tunnel.h"
#include "ccrelay/upstream.h"

typedef struct agent agent_t;

/* The gateway's replica announcement (POST CR_CONTROL_PREFIX "replicas"), the bytes from the network
 * parsed strictly: {"replica":ID,"instance":HEX,"generation":N,"set":[ID,...]} (instance optional;
 * other keys with scalar values are skipped for later gateways; no nesting, no escapes). */
#define CR__AGENT_ANNOUNCE_MAX 16384
typedef struct cr__agent_announce {
  char replica[CR_CONF_REPLICA_ID_MAX + 1];
  char instance[33];
  uint64_t generation;
  char set[CR_CONF_REPLICAS_MAX][CR_CONF_REPLICA_ID_MAX + 1];
  size_t nset;
} cr__agent_announce_t;

/* The agent process's instance id: 16 random bytes as 32 lowercase hex digits. */
#define CR__AGENT_INSTANCE_LEN 32

/* A route's live state. A route is usable only when its client identity chains to a trusted root
 * of the store; otherwise it answers 503 with `why` and the agent is not ready. */
typedef struct route_rt {
  const cr_conf_route_t *conf;
  const cr_conf_identity_t *identity; /* the identity in force: conf's, or a SIGHUP re-read's */
  cr_upstream_t *up;       /* NULL until the route was usable once; kept while refused so that
                              requests in flight finish */
  int usable;
  char why[768];           /* why the route is refused */
  char id_subject[256];    /* the client identity's subject and expiry, once loaded */
  time_t id_not_after;
  cr_metrics_calls_t *m;   /* the route's calls, bytes and upstream time: agent_metrics_t's block of
                              the route's name (cr__agent_metrics_conf) */
} route_rt_t;

/* One configuration: in force, or retired by a reload and kept while exchanges that began under it
 * still run (they use its routes' names, limits and upstreams). Freed, upstreams and all, from a later
 * loop turn once the last of them ended. */
typedef struct cr__agent_gen {
  cr_queue_t link;            /* agent.retired, once retired */
  const cr_conf_agent_t *conf;
  cr_conf_agent_t *owned;     /* conf when a reload loaded it; NULL for the caller's (start) */
  route_rt_t *routes;         /* conf->nroutes */
  size_t refs;                /* exchanges begun under it, not yet ended */
  uint64_t number;            /* 1 at start, +1 per reload applied */
} cr__agent_gen_t;

typedef struct agent_trust {
  cr_truststore_t *store;  /* NULL when the directory cannot be opened (error says why) */
  char error[1024];        /* why the last load failed and the last good state was kept, or "" */
  uint64_t generation;     /* of the directory at the last load; 0 = never loaded */
  int loaded;              /* a listing was loaded once: reload failures keep it */
  cr_trust_problem_t *bad; /* the store files left out at the last load (path, why), reported */
  size_t nbad;
  uint64_t bad_reported;   /* bad files reported since start (each file once per distinct reason) */
  uint64_t kept_last_good; /* reloads that failed and kept the last good state */
  uv_fs_event_t watch;     /* the store directory; a change schedules a reload */
  uv_timer_t debounce;     /* coalesces the burst of events one `trust add` makes */
  uv_timer_t expiry;       /* re-checks expiry warnings twice a day */
  cr_queue_t changes;      /* remote changes (trust_change_t.link), oldest first; the first runs */
  unsigned watching : 1;
  unsigned stopped : 1;    /* cr__agent_trust_stop ran: routes and upstreams are gone */
} agent_trust_t;

/* What the agent counts for /metrics (agent_ops.c renders it), on the loop thread only. */
enum { AM_STEP_CONNECT, AM_STEP_PROXY, AM_STEP_TLS, AM_NSTEPS };
enum { AM_WHY_TIMEOUT, AM_WHY_REFUSED, AM_WHY_CLOSED, AM_WHY_TLS, AM_WHY_OTHER, AM_NWHYS };
/* How a passthrough relay ended (ccrelay_agent_tcp_relays_total's result label). */
typedef enum { TCP_OK, TCP_CONNECT_FAILED, TCP_TIMEOUT, TCP_ERROR, TCP_NRESULTS } tcp_result_t;

/* One tcp route's relays and bytes, by route name (grow-only, like the calls blocks). */
typedef struct tcp_route_metrics {
  uint64_t relays[TCP_NRESULTS]; /* ended */
  uint64_t active;               /* running now */
  uint64_t bytes_in;             /* gateway -> upstream */
  uint64_t bytes_out;            /* upstream -> gateway */
} tcp_route_metrics_t;

typedef struct agent_metrics {
  uint64_t dials;                              /* tunnel dials begun */
  uint64_t dial_failures[AM_NSTEPS][AM_NWHYS]; /* by the step that failed and a fixed reason class */
  uint64_t reloads_ok;                         /* trust-store (and route) reloads that loaded */
  uint64_t reloads_failed;                     /* ... that failed and kept the last good state */
  time_t reload_last_ok;                       /* wall time of the last that loaded; 0: none */
  cr_metrics_calls_t unrouted;                 /* requests that no route matched */
  /* One block per route name, kept until the agent ends (grow-only): an exchange holds a pointer to
   * its block across a configuration reload, and a route keeps its counters when reordered. */
  cr_metrics_calls_t **blocks;
  char **block_names;
  size_t nblocks;
  cr_metrics_hist_t rtt;                       /* tunnel PING round trips, all tunnels */
  tcp_route_metrics_t **tcp_blocks;            /* one per tcp route name ever configured */
  char **tcp_block_names;
  size_t ntcp_blocks;
  uint64_t tcp_refused_no_route;               /* CONNECT streams no tcp route serves (404) */
  uint64_t tcp_refused_draining;               /* ... that came while the agent stopped (503) */
} agent_metrics_t;

struct agent {
  uv_loop_t loop;
  agent_metrics_t metrics;
  const cr_conf_agent_t *conf; /* the configuration in force (gen's); routes below are gen's too */
  const cr_conf_agent_t *boot; /* the one started with: gateway.address, proxy, connections, timers of the
                                  dials, admin.listen and trust_store stay as it says until a restart */
  cr__agent_gen_t *gen;
  cr_queue_t retired;          /* cr__agent_gen_t.link */
  uv_timer_t retired_timer;    /* frees retired generations nothing uses, off the exchanges' callbacks */
  uint64_t reloads_ok;         /* configuration reloads applied / refused (a counter for metrics) */
  uint64_t reloads_failed;
  uint64_t last_reload_ok;     /* wall-clock seconds; 0: none */
  cr_tls_ctx_t *tunnel_tls;
  struct cr_proxy_auth *proxy_auth; /* gateway.proxy's credentials; NULL without a username */
  route_rt_t *routes;      /* conf->nroutes */
  cr_queue_t slots;         /* slot_t.link: tunnels and dials (agent.c) */
  size_t nslots;
  unsigned slot_ids;        /* numbers slots for the log */
  /* Replica coverage (agent.c): the set the gateways announced, the newest generation wins. NULL
   * until one announced (an older gateway never does: then `connections` tunnels in all). */
  cr__agent_announce_t *set;
  /* Random per process (cr__agent_instance_init), told to the gateway in the answer to its replica
   * announcement: the gateway groups this process's tunnels by it, so a remote trust change reaches
   * every process sharing the certificate name once each. "" until set. */
  char instance[CR__AGENT_INSTANCE_LEN + 1];
  unsigned dials;           /* ever: rotates over gateway.address entries and their answers */
  unsigned surplus_streak;  /* dials in a row that landed on a replica already covered */
  uint64_t miss_logged_ms;  /* rate limits of the coverage warnings */
  uint64_t dup_logged_ms;
  uint64_t notin_logged_ms;
  int handles_closed;
  cr_queue_t exchanges;
  uint64_t exchanges_begun; /* ever; memtrim's busy check compares it with exchanges_seen */
  uint64_t exchanges_seen;
  uv_timer_t send_watch;    /* runs while an exchange waits for its upstream to take body bytes */
  size_t tunnels_up;
  agent_trust_t trust;
  cr_admin_t *admin;
  /* Reused for every request's upstream head and response head (no allocation per request once
   * warm); neither use can nest in the other, since no callback fires inside the calls they feed. */
  cr_http_msg_t scratch_head;
  cr_buf_t scratch_buf;
  cr_freelist_t free_exchanges;
  cr_process_t *proc;      /* signals, drain deadline, log flush, heap trim */
  /* Appends the ccrelay_agent_tunnels_up family: agent.c sets it, since only it knows the tunnels
   * (agent_ops.c stays linkable without agent.c). NULL: the family is left out. */
  void (*tunnels_metrics)(agent_t *a, cr_buf_t *out);
  int draining;
  cr_queue_t tcp_relays;   /* passthrough connections (agent_tcp.c) */
};

/* agent.c */
/* The tunnel's TLS context for c's gateway.ca and gateway.identity. */
int cr__agent_tunnel_tls_new(const cr_conf_agent_t *c, cr_tls_ctx_t **out, char *err, size_t errlen);
/* agent_tcp.c */
/* A CONNECT stream from the gateway (a passthrough service's caller): relayed to the tcp_routes[]
 * entry whose host is the stream's authority (its port ignored), else answered 404 (503 while
 * draining, 502 when the upstream cannot be reached) with the reason in x-ccrelay-error. */
void cr__agent_tcp_stream(agent_t *a, cr_tstream_t *ts, const cr_http_msg_t *req);
/* Ends every relay now (the agent stops). */
void cr__agent_tcp_close_all(agent_t *a);

/* agent_trust.c */
/* An exchange that held g ended. */
void cr__agent_gen_release(agent_t *a, cr__agent_gen_t *g);
/* Closing: the retired generations' upstreams are freed (their exchanges are gone or being cut). */
void cr__agent_gens_close(agent_t *a);
/* After the loop closed: every generation freed. */
void cr__agent_gens_free(agent_t *a);
/* Reloads the configuration file (SIGHUP, POST /reload): parsed and validated as `ccrelay check`
 * validates it (tls settings and identities of every route, their chains to the trust store, the
 * tunnel's identity and CA), then put in force: routes (new upstreams; the old ones finish their calls
 * and are freed), identities and their passwords, limits, log level and format, the tunnel identity
 * (for the next dial). gateway.address, gateway.proxy, gateway.connections and the dial timers,
 * admin.listen and trust_store need a restart (logged, the old value stays). On any fault nothing
 * changes: logged with file:line:col and counted. The trust store is reloaded too. 0 ("reloaded" in
 * msg) or an error with the reason in msg. */
int cr__agent_reload(agent_t *a, const char *trigger, char *msg, size_t msglen);
/* Opens the store, starts watching it, and loads every route. 0, or -1 when the agent cannot run at
 * all (logged). Routes that cannot be used are refused, not fatal. */
int cr__agent_trust_start(agent_t *a);
/* The agent's SIGHUP handler (arg: the agent_t): cr__agent_reload, then reloads the store and restarts
 * a failed watch. */
void cr__agent_trust_sighup(void *arg);
/* (Re)loads routes from the store: at start, on SIGHUP, on a file event, after a remote change.
 * force: reload even if the directory looks unchanged. why: for the log line. */
void cr__agent_trust_reload(agent_t *a, const char *why, int force);
/* Closes the watch and timers. Remote changes still running finish without a reload or answer. */
void cr__agent_trust_stop(agent_t *a);
/* The client identity route r presents, validated as the agent does before using the route: its tls
 * settings and identity (idc, or the route's own when NULL) judged by cr_agent_route_check; then a route
 * with its own ca: needs only an identity in date (it never depends on the store), any other one an
 * identity that chains to store (NULL: the store is unusable, and store_error says why). 0: *id holds
 * the identity with the chain to present (nothing for a plain_http route), subject its subject, warn
 * what soft revocation forgave (""); else err is the reason the route is refused and *stage where it
 * failed: 0 the tls settings, 1 loading or judging the identity, 2 its date or its chain. Shared with
 * `ccrelay check` (cr_agent_check) and `probe`. conf may be NULL (the store is then named generically). */
int cr__agent_route_identity(const cr_conf_agent_t *conf, const cr_conf_route_t *r, const cr_conf_identity_t *idc,
                             X509_STORE *store, const char *store_error, cr_tls_identity_t *id, char *subject,
                             size_t sublen, char *warn, size_t warnlen, int *stage, char *err, size_t errlen);
/* Appends the files the last load left out and the counters for them (for metrics):
 * "bad_files":[{"file","why"}],"bad_files_reported":N,"reloads_kept_last_good":N */
void cr__agent_trust_bad_json(agent_t *a, cr_buf_t *out);
/* Frees what the trust state holds (the store handle, the bad-file list); after the loop closed. */
void cr__agent_trust_free(agent_t *a);
/* Builds route r's upstream TLS context as the agent uses it: cr_agent_route_check with id, the
 * identity chained to a trusted root of store (the chain it then presents), verification against the
 * route's ca or store. 0 with *out, the identity's subject and notAfter and any soft-revocation
 * warning; or an error with prose in err (what the agent logs). *stage: 0 the route's tls settings,
 * 1 loading or judging the identity, 2 its chain, 3 the context. */
int cr__agent_route_tls(const cr_conf_route_t *r, const cr_conf_identity_t *id, X509_STORE *store,
                        cr_trust_crl_mode_t mode, int resume, cr_tls_ctx_t **out, char *subject, size_t subjectlen,
                        time_t *not_after, char *warn, size_t warnlen, int *stage, char *err, size_t errlen);
cr_trust_crl_mode_t cr__agent_crl_mode(cr_conf_revocation_t r);
/* Appends a JSON array of the store's certificates and CRLs: "certs":[...],"crls":[...] */
void cr__agent_trust_json(agent_t *a, cr_buf_t *out);
/* Logs expiry warnings for roots, CRLs, route identities and upstream certificates within the
 * configured window. */
void cr__agent_trust_check_expiry(agent_t *a);

/* agent_ops.c */
/* Draws a's instance id (32 hex digits from the OpenSSL RNG). 0, or a negative error (a->instance is
 * then "" and the agent runs without one: the gateway treats its tunnels as of an unknown process). */
int cr__agent_instance_init(agent_t *a);
/* 1 when at least one tunnel is up and every route is usable; otherwise appends the reasons to why
 * (a JSON array body). */
int cr__agent_ready(agent_t *a, cr_buf_t *why);
/* The status document (JSON object). */
void cr__agent_status_json(agent_t *a, cr_buf_t *out);
/* Starts the admin listener when configured. 0 or -1 (logged). */
int cr__agent_admin_start(agent_t *a);
/* Points every route of a->routes (a->conf->nroutes) at its metrics block by route name, making
 * blocks for new names. At start, and by a configuration reload after a->routes changed. */
void cr__agent_metrics_conf(agent_t *a);
/* The counters of the tcp route of this name (created at first use, kept until the agent ends). */
tcp_route_metrics_t *cr__agent_tcp_metrics(agent_t *a, const char *name);
/* Frees the blocks (at exit, after the loop closed). */
void cr__agent_metrics_free(agent_t *a);
/* The Prometheus exposition of the agent's metrics (GET /metrics). */
void cr__agent_metrics(agent_t *a, cr_buf_t *out);
/* Counts a failed tunnel dial: step "connect", "proxy" or "tls", err its error code. */
void cr__agent_count_dial_failure(agent_t *a, const char *step, int err);
/* A trust-store change in progress (agent_ops.c). */
typedef struct cr__agent_change cr__agent_change_t;
/* A control call's late answer: status and a JSON body (valid during the call). */
typedef void (*cr__agent_control_cb)(void *data, int status, const cr_buf_t *body);
/* A control call from the gateway (the path is under CR_CONTROL_PREFIX). requested_by: the
 * gateway's x-ccrelay-requested-by, for the log. body is read during the call only.
 * Returns NULL when answered now: status and out are filled. A trust change (POST trust, DELETE
 * trust/FP) instead returns the change: its file-system work runs off the loop thread and
 * done(data, ...) fires from a later loop turn, after the routes reloaded; status and out stay
 * untouched. A caller that goes away first cancels it with cr__agent_control_cancel, after which done
 * never fires. */
cr__agent_change_t *cr__agent_control(agent_t *a, const char *method, const char *target, const char *body,
                                      size_t len, const char *requested_by, int *status, cr_buf_t *out,
                                      cr__agent_control_cb done, void *data);
/* Withdraws the caller of a pending change (c is freed by the module, never by the caller): one
 * that has not started is dropped and writes nothing; one already writing completes, is logged and
 * reloads the routes, unanswered. */
void cr__agent_control_cancel(cr__agent_change_t *c);

/* 0, or -1 with why (for the answer and the log): not that JSON, an id not valid as a replica id, a
 * duplicate id in the set, more than CR_CONF_REPLICAS_MAX ids, more than CR__AGENT_ANNOUNCE_MAX bytes. */
int cr__agent_announce_parse(const char *body, size_t len, cr__agent_announce_t *out, char *why, size_t whylen);

#endif

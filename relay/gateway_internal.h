/* SPDX-License-Identifier: Apache-2.0 */
/* Shared between the files of the gateway module: gateway.c (admitting agents, public calls),
 * gateway_tunnels.c (the registry of agent tunnels by relay group) and gateway_admin.c (the
 * operators' admin API, which drives control calls down agent tunnels). */
#ifndef CCRELAY_GATEWAY_INTERNAL_H
#define CCRELAY_GATEWAY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "ccrelay/admin.h"
#include "ccrelay/buf.h"
#include "ccrelay/config.h"
#include "ccrelay/metrics.h"
#include "ccrelay/queue.h"
#include "ccrelay/stream.h"
#include "ccrelay/tunnel.h"

struct gateway;

typedef struct cr__gw_tunnel_info {
  const char *agent; /* the certificate CN that admitted it */
  const char *group;
  const char *peer;
  cr_tunnel_t *tunnel;
  const char *coverage; /* "kept" (the agent counts it toward this replica), "pending" (no answer to the
                           replica announcement yet), "surplus" (the agent is closing it) */
  const char *instance; /* the agent process's instance id from its answer to the replica announcement
                           (hex); "" when not known (no answer yet, or an agent that does not tell) */
} cr__gw_tunnel_info_t;

/* ---- the replica set (gateway_replicas.c) ---- */

typedef struct cr__gw_replicas cr__gw_replicas_t;
/* This replica's id and set from conf: static, or resolved from replicas.dns now and every refresh.
 * on_change(arg) fires (from the loop) each time the set changes after creation. */
cr__gw_replicas_t *cr__gw_replicas_new(uv_loop_t *loop, const cr_conf_gateway_t *conf, void (*on_change)(void *arg),
                                       void *arg);
const char *cr__gw_replicas_id(const cr__gw_replicas_t *r);
/* The announcement sent to agents: {"replica":ID,"instance":HEX,"generation":N,"set":[ID,...]}. */
void cr__gw_replicas_json(const cr__gw_replicas_t *r, cr_buf_t *out);
/* Fields for a status document: "replica":..,"replica_set":[..],"replica_generation":N,.. (no braces). */
void cr__gw_replicas_status_json(const cr__gw_replicas_t *r, cr_buf_t *out);
/* SIGHUP: static mode re-reads replicas.set from the config file (a bad file keeps the set, logged);
 * dns mode resolves now. on_change fires when the set changed. 0, or -1 when the file could not be
 * used (the set stays; logged). A resolution started counts as 0: its outcome is logged later. */
int cr__gw_replicas_reload(cr__gw_replicas_t *r);
/* Stops resolving (the drain): no more on_change. */
void cr__gw_replicas_stop(cr__gw_replicas_t *r);
/* Stops and frees r on a later loop turn. NULL is fine. */
void cr__gw_replicas_free(cr__gw_replicas_t *r);

/* Calls visit for every accepted tunnel (usable or draining), group by group. info is valid only
 * during the call; visit must not open, close or shut down tunnels. */
void cr__gateway_foreach_tunnel(struct gateway *gw, void (*visit)(const cr__gw_tunnel_info_t *info, void *arg),
                                void *arg);

/* ---- metrics (gateway.c) ---- */

/* Appends the gateway's Prometheus exposition (the probe listener's and the admin API's /metrics). */
void cr__gateway_metrics(struct gateway *gw, cr_buf_t *out);
/* Maps gw's configured services to their metrics blocks by name (host + path prefix), making blocks
 * for new names. Run at start, and by a configuration reload right after gw->conf changed: blocks
 * of services no longer configured stay (calls in flight end in them; their series stay exposed). */
void cr__gateway_metrics_conf(struct gateway *gw);
/* Counts a reload (SIGHUP or the admin API) that succeeded (ok 1) or kept the old state (ok 0). */
void cr__gateway_count_reload(struct gateway *gw, int ok);

/* ---- the agent-tunnel registry (gateway_tunnels.c) ---- */

/* A relay group and its live tunnels. The gateway keeps one per configured group, in config order. */
typedef struct cr__gw_group {
  const cr_conf_group_t *conf;
  cr_queue_t tunnels; /* the registry's entries, in arrival order */
  size_t ntunnels;    /* usable or draining */
  unsigned rr;        /* rotates picks among equally busy tunnels */
  cr__gw_replicas_t *replicas; /* announced to every agent on its tunnels; NULL: none */
  cr_metrics_hist_t *rtt;      /* the gateway's PING round-trip histogram for its tunnels; NULL: none */
} cr__gw_group_t;

/* One group per conf->groups entry, none with a tunnel. */
cr__gw_group_t *cr__gw_groups_new(const cr_conf_gateway_t *conf);
/* Frees the array; every tunnel must have closed (their close callbacks unregister them). */
void cr__gw_groups_free(cr__gw_group_t *groups);
/* A reload: every tunnel of old (nold groups) moves to the group of groups (the new registry) of
 * the same name when that group still names its agent; the others stay in old, are shut down (GOAWAY:
 * calls in flight get deadline_ms) and leave old as they close. Returns how many stayed in old (old
 * may be freed once cr__gw_groups_ntunnels(old, nold) is 0). */
size_t cr__gw_groups_carry(cr__gw_group_t *old, size_t nold, cr__gw_group_t *groups, size_t ngroups,
                           uint64_t deadline_ms);
/* Registers an admitted agent: runs a tunnel over tls (its handshake done; the tunnel owns it from
 * here) in group g. The tunnel leaves the group by itself when it closes, and logs both. agent: the
 * certificate name that admitted it (copied). */
void cr__gw_tunnel_add(cr__gw_group_t *g, cr_stream_t *tls, const char *agent, const cr_conf_gateway_t *conf);
/* The usable tunnel of g with the fewest streams in flight, rotating among equally busy ones, so
 * calls spread over every agent and tunnel of the group; NULL when none is usable. A tunnel whose
 * agent has not yet answered the replica announcement is picked only when no answered one is usable
 * (an agent closes a tunnel it does not need right after answering). */
cr_tunnel_t *cr__gw_group_pick(cr__gw_group_t *g);
/* Tunnels of all groups, usable or draining. */
size_t cr__gw_groups_ntunnels(const cr__gw_group_t *groups, size_t ngroups);
/* Calls visit for every tunnel, group by group, as cr__gateway_foreach_tunnel says. */
void cr__gw_groups_foreach(const cr__gw_group_t *groups, size_t ngroups,
                           void (*visit)(const cr__gw_tunnel_info_t *info, void *arg), void *arg);
/* Sends the replica announcement (g->replicas) on every usable tunnel: after the set changed. */
void cr__gw_groups_announce(cr__gw_group_t *groups, size_t ngroups);
/* GOAWAY on every tunnel: streams in flight get until deadline_ms. */
void cr__gw_groups_shutdown(cr__gw_group_t *groups, size_t ngroups, uint64_t deadline_ms);
/* Closes every tunnel now (their close callbacks run later and unregister them). */
void cr__gw_groups_close(cr__gw_group_t *groups, size_t ngroups);
/* Gives back every tunnel's caches kept for the next burst (an idle process's memory trim). */
void cr__gw_groups_release_caches(cr__gw_group_t *groups, size_t ngroups);

/* The CRLs of tunnel.client_ca and public.client_ca (tunnel.crl, public.crl) are also checked for a
 * change this often (inotify sees most changes at once). */
#define CR_GW_CRL_CHECK_MS 10000

/* SIGHUP: reloads the CRLs of both listeners that check any (new handshakes use them; a tunnel whose
 * agent certificate is now revoked is shut down), logging the outcome; a bad file keeps the CRLs in
 * force. Nothing when neither listener checks CRLs. */
void cr__gw_crl_reload(struct gateway *gw);
/* Stops watching the CRL files (the drain, or a failed start). Idempotent. */
void cr__gw_crl_stop(struct gateway *gw);

typedef struct cr__gw_admin cr__gw_admin_t;

/* Reloads the configuration file (SIGHUP, POST /reload): parsed and validated completely, the
 * services' rules and both listeners' TLS contexts built, and only then put in force: routes to
 * services and groups, callers rules, limits, certificates (the next handshake on either listener
 * presents the new ones), log level and format. Calls and tunnels in flight keep the configuration
 * they began with until they end; a tunnel whose agent left its group is shut down gracefully.
 * Listener addresses and the per-source tables' sizes need a restart (logged). On any fault nothing
 * changes, the fault is logged with file:line:col and counted. 0 ("reloaded" in msg), or an error
 * with the reason in msg. trigger names the cause for the log ("SIGHUP", "admin"). */
int cr__gateway_reload(struct gateway *gw, const char *trigger, char *msg, size_t msglen);

/* Starts the admin API on conf->admin_listen (the caller checked host is set). 0, or an error
 * already logged with the config position. */
int cr__gw_admin_start(struct gateway *gw, uv_loop_t *loop, const cr_conf_gateway_t *conf, cr__gw_admin_t **out);
/* POST /reload: reloads as SIGHUP does; 0 when applied, else an error; msg says what happened (the
 * reason of a refusal); *ok and *failed are the reload counters after it. */
typedef int (*cr__gw_admin_reload_fn)(void *arg, char *msg, size_t msglen, uint64_t *ok, uint64_t *failed);
void cr__gw_admin_on_reload(cr__gw_admin_t *ga, cr__gw_admin_reload_fn reload, void *arg);
/* A reload put conf in force: the admin token is checked against conf's from now on. */
void cr__gw_admin_set_conf(cr__gw_admin_t *ga, const cr_conf_gateway_t *conf);
/* The bound port (admin.listen may say port 0 in tests). */
unsigned cr__gw_admin_port(const cr__gw_admin_t *ga);
/* The listener behind the API, for feeding it connections directly (fuzz_admin). */
cr_admin_t *cr__gw_admin_listener(const cr__gw_admin_t *ga);
/* Stops listening and aborts admin calls in flight (their control streams are reset); frees ga. */
void cr__gw_admin_stop(cr__gw_admin_t *ga);

/* The probe listener (probe.listen): /healthz, /readyz and /status without authentication (ops must
 * outlive the listener). ready()
 * says whether the replica is ready (0: why gets the reason); status() appends the status document's
 * fields. 0, or an error already logged with the config position. */
typedef struct cr__gw_probe_ops {
  int (*ready)(void *arg, char *why, size_t whylen);
  void (*status)(void *arg, cr_buf_t *out);
  void (*metrics)(void *arg, cr_buf_t *out); /* the Prometheus exposition (GET /metrics) */
  void *arg;
} cr__gw_probe_ops_t;
int cr__gw_probe_start(uv_loop_t *loop, const cr_conf_gateway_t *conf, const cr__gw_probe_ops_t *ops,
                       cr_admin_t **out);

/* ---- caller policy and limits per service (gateway_policy.c) ---- */

typedef struct cr__gw_policy cr__gw_policy_t;

/* Loads what the services' callers rules need (their client CAs, token digests). 0, or an error
 * already logged as event ("cannot start", "reload refused") with the config position; *out is set
 * either way (free it). conf outlives it. */
int cr__gw_policy_new(const cr_conf_gateway_t *conf, const char *event, cr__gw_policy_t **out);
void cr__gw_policy_free(cr__gw_policy_t *p); /* NULL is fine */
/* Every services[].callers.client_ca, for the public listener's client_ca_files (borrowed). */
const char *const *cr__gw_policy_client_cas(const cr__gw_policy_t *p, size_t *n);

/* Why a caller was refused: the answer's status (401 or 403) and code, the rule that refused it
 * (sources, client_ca, subjects, token) for the log, and for 401 on a token rule the
 * WWW-Authenticate value. reason never contains the token. */
typedef struct cr__gw_refusal {
  int status;
  const char *rule;
  const char *code;
  const char *www_authenticate; /* NULL unless the token rule refused */
  char reason[400];
} cr__gw_refusal_t;

/* 0 when the caller on stream caller (the public TLS stream) may send req to service si; else 1 with
 * r filled. */
int cr__gw_policy_check(cr__gw_policy_t *p, size_t si, const cr_stream_t *caller, const cr_http_msg_t *req,
                        cr__gw_refusal_t *r);
/* 1 when service si checks bearer tokens: their Authorization field is the gateway's, not forwarded. */
int cr__gw_policy_strips_authorization(const cr__gw_policy_t *p, size_t si);
/* One call of service si begins (0), or CR_ELIMIT when max_concurrent are in flight; every 0 is
 * matched by one release when the call's tunnel stream is gone. */
int cr__gw_policy_acquire(cr__gw_policy_t *p, size_t si);
void cr__gw_policy_release(cr__gw_policy_t *p, size_t si);

/* Sets the request's Forwarded and X-Forwarded-For for the agent: from a peer in
 * public.trusted_proxies the caller's values are kept and the peer appended; from any other peer they
 * are replaced (and X-Forwarded-Host and X-Forwarded-Proto dropped). Forwarded gets
 * for="PEER";proto=https;host="HOST" (RFC 7239), X-Forwarded-For the peer's address. peer is the
 * stream's "ip:port". 0, or CR_ELIMIT when fwd has no room for the fields. */
int cr__gw_forwarded(cr_http_msg_t *fwd, const cr_conf_gateway_t *conf, const char *peer, const char *host);

/* The caller's address (the TCP peer "ip:port") is in service si's callers.sources, or the service
 * has none: 1; else 0. ip gets the address, for the log. */
int cr__gw_policy_source_allowed(const cr_conf_gateway_t *conf, size_t si, const char *peer, char *ip, size_t iplen);

/* ---- passthrough services: end-to-end TLS (gateway_passthrough.c) ---- */

/* One caller's TLS connection relayed untouched over a tunnel stream: a CONNECT whose authority is
 * the service host (the SNI), which the agent's tcp_routes entry of that host connects to its fixed
 * upstream. Bytes move both ways with the stream's flow control as backpressure: the caller is read
 * only while the stream's send buffer has room, and the stream's window is given back only when the
 * bytes reached the caller's socket. Each direction's end (the caller's FIN, the stream's END_STREAM)
 * is passed on as the other's, so a half-closed connection keeps working. */
typedef struct cr__gw_pt cr__gw_pt_t;
typedef struct cr__gw_pt_owner {
  void (*pause_caller)(void *arg);  /* stop reading the caller */
  void (*resume_caller)(void *arg); /* read the caller again (its bytes go to cr__gw_pt_caller_read) */
  void (*activity)(void *arg);      /* bytes moved: the idle timeout starts over */
  void (*done)(void *arg, const char *why); /* over (why NULL: both sides ended cleanly); the owner
                                               closes the caller and frees the relay (it may, inside
                                               the call: the relay touches nothing after). Fires once */
  void *arg;
} cr__gw_pt_owner_t;
/* Opens the stream on t and sends first[0..len) (the caller's bytes already read: its ClientHello).
 * caller stays the owner's; the relay writes to it and shuts it down. 0, or an error with *out NULL. */
int cr__gw_pt_start(cr_tunnel_t *t, cr_stream_t *caller, const char *sni, const char *first, size_t len,
                    const cr__gw_pt_owner_t *owner, cr__gw_pt_t **out);
/* What the owner read from the caller (nread > 0 bytes, or UV_EOF, or an error). */
void cr__gw_pt_caller_read(cr__gw_pt_t *pt, ssize_t nread, const char *data);
/* Bytes moved so far, for the log. */
void cr__gw_pt_counts(const cr__gw_pt_t *pt, uint64_t *from_caller, uint64_t *to_caller);
/* Resets the stream if still open and frees the relay once the writes it gave the caller's stream
 * have completed (close the caller to cancel them). The owner is never called again. */
void cr__gw_pt_free(cr__gw_pt_t *pt);

#endif

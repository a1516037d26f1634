/* SPDX-License-Identifier: Apache-2.0 */
/* The inside-the-firewall side: dials `connections` tunnels to the gateway (HTTP/2 server role),
 * redials with backoff, and serves each stream by its routes through the routes' upstreams. */
#ifndef CCRELAY_AGENT_H
#define CCRELAY_AGENT_H

#include <stdint.h>
#include <uv.h>

#include "ccrelay/config.h"
#include "ccrelay/tls.h"

/* Runs until SIGTERM/SIGINT (then drains for drain_timeout). Returns a process exit code:
 * 0 after a clean drain, 1 when startup failed (the reason is logged). */
int cr_agent_run(const cr_conf_agent_t *conf);

/* One problem `ccrelay check` found: pos is the config position of key (line 0 when the key was
 * defaulted), msg the same text the agent logs when it meets the problem at start. */
typedef void (*cr_agent_check_cb)(void *arg, cr_conf_pos_t pos, const char *key, const char *msg);

/* What the agent validates at start, run without a loop or a socket and without changing anything:
 * the trust store opened with its safety checks (missing, not a directory, group/world-writable)
 * and read (every file it would leave out is a problem here), and every route's client identity
 * loaded and, unless the route has its own ca:, verified against the store for its revocation mode
 * (in date, chains to a trusted root, not revoked). A missing store is a problem only when a route
 * or remote_trust needs it. Calls report once per problem; returns how many there were. */
int cr_agent_check(const cr_conf_agent_t *conf, cr_agent_check_cb report, void *arg);

/* ---- a route's upstream TLS, as the agent builds it (agent_trust.c) ----
 * The agent, `ccrelay check` and `ccrelay probe` all go through these, so they refuse the same
 * routes with the same words. */

/* The route's upstream.tls as the tls module takes it (strings borrowed from r). */
void cr_agent_route_policy(const cr_conf_route_t *r, cr_tls_policy_t *out);

/* The checks made on a route before its upstream is used, in order: its tls settings, its identity
 * (loads, key matches), and the identity's certificates under the route's security level. id: the
 * identity to use instead of r's (a reload's), or NULL. On success *out holds the loaded identity
 * (the caller frees it; all NULL for a plain_http route). On failure: CR_ECONFIG (tls settings),
 * an identity loading error, or CR_ETLS (too weak for the level); *key is the config key at fault
 * relative to the route's upstream ("tls.ciphers", "identity"), *pos its position, err the prose.
 * *loading is 1 when the identity could not be loaded at all. */
int cr_agent_route_check(const cr_conf_route_t *r, const cr_conf_identity_t *id, cr_tls_identity_t *out,
                         const char **key, cr_conf_pos_t *pos, int *loading, char *err, size_t errlen);

/* ---- "Test Connection" (agent_probe.c) ---- */

typedef struct cr_agent_probe_result {
  const char *route;         /* the route's name */
  const char *upstream;      /* its url */
  const char *server_name;
  int plain;                 /* plain_http: no TLS, nothing verified */
  int reachable;             /* TCP connected (and, with TLS, the server took part in a handshake) */
  int verified;              /* the server's certificate was verified (always 0 for plain) */
  int status;                /* HTTP status of the probe request; 0 when none came */
  int ok;                    /* reachable, verified (or plain) and answered */
  cr_tls_conn_info_t tls;    /* the handshake (version "" when none) */
  char verify[512];          /* "ok", or why the certificate was refused, or "" when not reached */
  char verify_source[16];    /* "ca_file" or "trust_store" */
  char error[1024];          /* what failed, "" when ok */
  char warning[400];         /* soft revocation, deliberate TLS weakenings */
} cr_agent_probe_result_t;

typedef struct cr_agent_probe cr_agent_probe_t;
/* Fires once, from a later loop turn than the start; res is valid during the call; the probe is
 * freed after the callback returns. */
typedef void (*cr_agent_probe_cb)(const cr_agent_probe_result_t *res, void *data);

typedef struct cr_agent_probe_opts {
  const cr_conf_agent_t *conf;
  size_t route;              /* index into conf->routes */
  const cr_conf_identity_t *identity; /* instead of the route's own (a reload's), or NULL */
  X509_STORE *store;         /* the trust store's roots for the route's revocation mode; NULL when the
                                store cannot be opened (then only a route with its own ca works) */
  const char *store_error;   /* why store is NULL, for the result */
  const char *method;        /* "HEAD" when NULL */
  const char *path;          /* "/" when NULL; the route's base path is prepended */
  uint64_t max_timeout_ms;   /* caps the route's connect and response timeouts; 0: none */
} cr_agent_probe_opts_t;

/* Dials the route's upstream as the agent does (the route checks, its identity chained to a trusted
 * root, its TLS settings, the upstream pool), on a fresh pool and with a full handshake so that the
 * server's certificate is always seen, and sends one request with no body. NULL never: a failure is
 * reported through cb. */
cr_agent_probe_t *cr_agent_probe_start(uv_loop_t *loop, const cr_agent_probe_opts_t *opts, cr_agent_probe_cb cb,
                                       void *data);
/* cb never fires afterwards; the probe's handles close on later loop turns. */
void cr_agent_probe_cancel(cr_agent_probe_t *p);

#endif

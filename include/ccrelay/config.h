/* Configuration: YAML files parsed (libyaml; the only user) into plain structs, with no side effect
 * but reading the files they name, so `ccrelay check` costs nothing extra. Every error reads
 * `file:line:col: key: reason` (key is the dotted path, e.g. routes[1].upstream.url).
 *
 * Conventions: durations "250ms", "5s", "2m", "1h", "30d" (stored in milliseconds); sizes "512",
 * "16KiB", "1MiB", "1GiB" (bytes); paths relative to the config file's directory (stored resolved);
 * secrets from `password_file: PATH` or `password_env: NAME` (the gateway's admin token from
 * `token_file: PATH`), never written to logs. Unknown keys are errors
 * with a suggestion of the nearest known key. Errors about no particular key use "(root)" (the
 * file itself, its top level, a missing file) or "(syntax)" (YAML the parser rejects) as key. */
#ifndef CCRELAY_CONFIG_H
#define CCRELAY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "ccrelay/log.h"

typedef struct cr_conf_pos {
  int line; /* 1-based; 0 when the value was defaulted */
  int col;  /* 1-based */
} cr_conf_pos_t;

/* A file named by the config, resolved against the config's directory and checked to exist and be
 * readable at load time. path is NULL when the key was absent. */
typedef struct cr_conf_file {
  char *path;
  cr_conf_pos_t pos;
} cr_conf_file_t;

/* A TLS identity: exactly one of pkcs12, or cert + key.
 *   identity: { pkcs12: FILE, password_file: FILE | password_env: NAME }
 *   identity: { cert: FILE, key: FILE } */
typedef struct cr_conf_identity {
  cr_conf_file_t pkcs12;
  cr_conf_file_t cert;
  cr_conf_file_t key;
  char *password;    /* PKCS#12 password (trailing newline of a password_file removed); NULL if none;
                        wiped on free */
  cr_conf_pos_t pos; /* the identity mapping itself */
} cr_conf_identity_t;

typedef struct cr_conf_log {
  cr_log_level_t level;   /* log.level: debug|info|warn|error (info) */
  cr_log_format_t format; /* log.format: logfmt|json (logfmt) */
} cr_conf_log_t;

typedef struct cr_conf_listen {
  char *host;        /* "127.0.0.1", "::1", "0.0.0.0" */
  unsigned port;
  cr_conf_pos_t pos;
} cr_conf_listen_t;

/* ---- agent ---- */

/* How certificate revocation lists from the trust store are applied when the agent validates a
 * chain (upstream server certificates, route identities). A certificate a current CRL lists as
 * revoked fails under soft and hard alike; they differ only when the CRL is missing or past its
 * nextUpdate. */
typedef enum cr_conf_revocation {
  CR_REVOCATION_OFF = 0, /* "off": CRLs are not consulted */
  CR_REVOCATION_SOFT,    /* "soft": a missing or stale CRL is logged as a warning and the chain passes */
  CR_REVOCATION_HARD     /* "hard": fail closed: a missing or stale CRL fails the chain */
} cr_conf_revocation_t;

typedef struct cr_conf_route {
  char *name; /* routes[].name, required, unique */
  cr_conf_pos_t pos;
  /* routes[].match: every present field must match; absent fields match anything. */
  char *match_host;          /* match.host: exact, case-insensitive, port ignored */
  char *match_path_prefix;   /* match.path_prefix: must start with "/" */
  char **match_methods;      /* match.methods: [POST, GET]; upper-cased */
  size_t nmatch_methods;
  char *match_header_name;   /* match.header: { name: SOAPAction, value: "..." } exact value */
  char *match_header_value;
  char *match_soap_action;   /* match.soap_action: "urn:..." exact, whichever way the request carries
                                its SOAP action (SOAPAction header without its quotes, SOAP 1.1; the
                                action parameter of application/soap+xml, SOAP 1.2) */
  /* routes[].upstream */
  char *upstream_url;        /* upstream.url: https://host[:port][/base]; required */
  char *upstream_host;       /* parsed from url */
  unsigned upstream_port;    /* parsed from url (443 by default) */
  char *upstream_base_path;  /* parsed from url: "" or "/base" without trailing slash; prepended */
  char *server_name;         /* upstream.server_name: verified name and SNI (default: url host) */
  cr_conf_file_t ca;         /* upstream.ca: PEM roots for the upstream's certificate; optional:
                                when absent (path NULL) the agent's trust_store verifies it */
  cr_conf_identity_t identity; /* upstream.identity: client identity; required */
  uint64_t connect_timeout_ms;  /* upstream.connect_timeout (5s): TCP + TLS handshake */
  uint64_t response_timeout_ms; /* upstream.response_timeout (30s): request sent -> response head,
                                   and between body reads */
  uint64_t idle_timeout_ms;     /* upstream.idle_timeout (60s): pooled connection lifetime idle */
  unsigned max_idle;            /* upstream.max_idle (64): pooled connections kept; at least the calls expected in flight, or busy periods pay a TLS handshake per call */
  int soap;                     /* routes[].soap (false): the agent's own failures are answered as SOAP
                                   Faults (HTTP 500) in the caller's SOAP version (1.2 when it sent
                                   application/soap+xml, else 1.1) */
  cr_conf_revocation_t revocation; /* routes[].revocation: off|soft|hard; the value in force for this
                                      route: its own when given, else the agent's revocation */
  int revocation_set;              /* 1 when the route gave its own revocation */
} cr_conf_route_t;

/* Where the agent's trusted roots and CRLs live unless trust_store says otherwise. */
#define CR_CONF_TRUST_STORE_DEFAULT "/var/lib/ccrelay/trust"

typedef struct cr_conf_agent {
  char *path; /* the config file as given */
  cr_conf_log_t log;
  /* trust_store: DIR (CR_CONF_TRUST_STORE_DEFAULT). Never NULL after a load. When given it is
   * resolved against the config's directory and must exist as a directory at load (`check` catches
   * a typo); when defaulted it is kept unchecked, so a fresh install loads and the agent (or
   * `ccrelay trust`) reports a missing store itself. Permissions are the trust store's to judge. */
  char *trust_store;
  cr_conf_pos_t trust_store_pos;  /* line 0 when defaulted */
  cr_conf_revocation_t revocation; /* revocation: off|soft|hard (off); routes[].revocation overrides */
  uint64_t expiry_warning_ms;     /* expiry_warning (30d), 0s..3650d: a trusted root, CRL, route
                                     identity or upstream certificate this close to its notAfter is
                                     logged as a warning; 0s: never warn */
  cr_conf_listen_t admin_listen;  /* admin.listen: IP:port serving /healthz, /readyz and /status (JSON);
                                     optional: host NULL when admin is absent (no listener). It has no
                                     authentication: keep it on loopback or a private network */
  int remote_trust;               /* remote_trust (false): the gateway may list, add and remove trust
                                     anchors in trust_store through the tunnel's control prefix */
  struct {
    char *host;                   /* gateway.address: host:port; required */
    unsigned port;
    cr_conf_pos_t pos;
    char *server_name;            /* gateway.server_name (default: address host) */
    cr_conf_file_t ca;            /* gateway.ca: roots for the gateway's tunnel certificate; required */
    cr_conf_identity_t identity;  /* gateway.identity: the agent's tunnel identity; required */
    unsigned connections;         /* gateway.connections (2), 1..64 */
    uint64_t connect_timeout_ms;  /* gateway.connect_timeout (10s): TCP + TLS */
    uint64_t ping_interval_ms;    /* gateway.ping_interval (15s) */
    uint64_t ping_timeout_ms;     /* gateway.ping_timeout (10s) */
    uint64_t reconnect_min_ms;    /* gateway.reconnect_min (250ms) */
    uint64_t reconnect_max_ms;    /* gateway.reconnect_max (30s) */
  } gateway;
  cr_conf_route_t *routes;        /* routes: list, at least one */
  size_t nroutes;
  uint64_t max_header_size;       /* limits.max_header_size (16KiB) */
  unsigned max_header_fields;     /* limits.max_header_fields (100): upstream response heads */
  uint64_t send_timeout_ms;       /* limits.send_timeout (30s), 0s..1h, 0s: off. While request body
                                     bytes wait for an upstream, it must take some of them (at least
                                     min_send_rate x send_timeout, and at least one write) in every
                                     send_timeout, or the exchange is cut: 504 before the response
                                     head, else the tunnel stream is reset; the upstream connection
                                     is closed and the cut logged with the request id */
  uint64_t min_send_rate;         /* limits.min_send_rate (0), bytes per second, 0..1GiB; 0: any
                                     progress will do */
  uint64_t drain_timeout_ms;      /* drain_timeout (10s): SIGTERM -> streams in flight may finish */
} cr_conf_agent_t;

/* Header fields per head, both roles (limits.max_header_fields, public.max_header_fields). The
 * ceiling leaves room under the tunnel's own per-stream limit (CR_TUNNEL_MAX_HEADERS, 256) for the
 * fields a role adds (request id, Forwarded), so any head a role accepts can cross the tunnel. */
#define CR_CONF_HEADER_FIELDS_DEFAULT 100
#define CR_CONF_HEADER_FIELDS_MIN 10
#define CR_CONF_HEADER_FIELDS_MAX 250

/* ---- gateway ---- */

typedef struct cr_conf_group {
  char *name;          /* groups[].name, unique */
  char **agents;       /* groups[].agents: certificate common names (or DNS SANs) of its agents */
  size_t nagents;
  cr_conf_pos_t pos;
} cr_conf_group_t;

typedef struct cr_conf_service {
  char *host;          /* services[].host: Host header, exact, case-insensitive, port ignored */
  char *path_prefix;   /* services[].path_prefix: optional, must start with "/" */
  char *group;         /* services[].group: a groups[].name */
  size_t group_index;  /* index into groups, resolved at load */
  cr_conf_pos_t pos;
} cr_conf_service_t;

/* Shortest admin token accepted, in characters (`openssl rand -hex 32` makes 64). */
#define CR_CONF_ADMIN_TOKEN_MIN 16

typedef struct cr_conf_gateway {
  char *path;
  cr_conf_log_t log;
  struct {
    cr_conf_listen_t listen;      /* tunnel.listen: host:port; required */
    cr_conf_identity_t identity;  /* tunnel.identity: the gateway's tunnel certificate; required */
    cr_conf_file_t client_ca;     /* tunnel.client_ca: agents must chain to it; required */
    uint64_t handshake_timeout_ms;/* tunnel.handshake_timeout (10s) */
    uint64_t ping_interval_ms;    /* tunnel.ping_interval (15s) */
    uint64_t ping_timeout_ms;     /* tunnel.ping_timeout (10s) */
  } tunnel;
  struct {
    cr_conf_listen_t listen;      /* public.listen: host:port; required */
    cr_conf_identity_t identity;  /* public.identity: the public HTTPS certificate; required */
    cr_conf_file_t client_ca;     /* public.client_ca: optional; if set callers need a certificate */
    uint64_t header_timeout_ms;   /* public.header_timeout (10s): connection/keep-alive -> full head */
    uint64_t idle_timeout_ms;     /* public.idle_timeout (60s): keep-alive idle */
    uint64_t request_timeout_ms;  /* public.request_timeout (60s): head forwarded -> response head */
    uint64_t max_header_size;     /* public.max_header_size (16KiB) */
    unsigned max_header_fields;   /* public.max_header_fields (100): more fields get 431 */
    unsigned max_connections;     /* public.max_connections (10000) */
    uint64_t send_timeout_ms;     /* public.send_timeout (30s), 0s..1h, 0s: off. While response
                                     bytes wait for a caller, it must take some of them (at least
                                     min_send_rate x send_timeout, and at least one write) in every
                                     send_timeout, or its connection is closed, the tunnel stream
                                     reset and the cut logged with the request id */
    uint64_t min_send_rate;       /* public.min_send_rate (0), bytes per second, 0..1GiB; 0: any
                                     progress will do */
  } public_;
  cr_conf_group_t *groups;        /* groups: list, at least one */
  size_t ngroups;
  cr_conf_service_t *services;    /* services: list, at least one */
  size_t nservices;
  uint64_t drain_timeout_ms;      /* drain_timeout (10s) */
  /* admin: { listen: IP:port, token_file: FILE }, optional (absent: no admin endpoint). The
   * operator endpoint that drives remote trust management on agents; every call must carry
   * `Authorization: Bearer <token>`, so listen without token_file is an error. */
  cr_conf_listen_t admin_listen;  /* admin.listen; host NULL when admin is absent */
  char *admin_token;              /* admin.token_file's content, one trailing newline (or CRLF)
                                     removed; at least CR_CONF_ADMIN_TOKEN_MIN characters, no spaces
                                     or control characters; wiped on free; never printed */
  cr_conf_pos_t admin_token_pos;  /* admin.token_file's value */
} cr_conf_gateway_t;

/* Load, parse and validate. 0, or CR_ECONFIG with `file:line:col: key: reason` in err.
 * On failure *out holds nothing that needs freeing (but freeing it is harmless). */
int cr_conf_agent_load(const char *path, cr_conf_agent_t *out, char *err, size_t errlen);
void cr_conf_agent_free(cr_conf_agent_t *c);
int cr_conf_gateway_load(const char *path, cr_conf_gateway_t *out, char *err, size_t errlen);
void cr_conf_gateway_free(cr_conf_gateway_t *c);

/* The same from bytes in memory (tests, fuzzing): name is the file name errors print and the
 * place relative paths resolve against (its directory); data need not be NUL-terminated. */
int cr_conf_agent_load_mem(const char *name, const char *data, size_t len, cr_conf_agent_t *out,
                           char *err, size_t errlen);
int cr_conf_gateway_load_mem(const char *name, const char *data, size_t len,
                             cr_conf_gateway_t *out, char *err, size_t errlen);

/* Which role a file configures, from its top-level keys ("agent" if it has `routes`, "gateway" if it
 * has `services`); NULL with err set when it is neither or unreadable. */
const char *cr_conf_detect_role(const char *path, char *err, size_t errlen);

/* Value parsers, exposed for tests. 0 or CR_ECONFIG. */
int cr_conf_parse_duration(const char *s, uint64_t *ms);
int cr_conf_parse_size(const char *s, uint64_t *bytes);

/* The libyaml this process runs with ("0.2.5"), for `ccrelay version`. */
const char *cr_conf_libyaml_version(void);

#endif

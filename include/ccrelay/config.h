/* SPDX-License-Identifier: Apache-2.0 */
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

/* One gateway address of the agent: host (name or IP literal) and port. */
typedef struct cr_conf_addr {
  char *host;
  unsigned port;
  cr_conf_pos_t pos;
} cr_conf_addr_t;
#define CR_CONF_ADDRS_MAX 16

/* How certificate revocation lists from the trust store are applied when the agent validates a
 * chain (upstream server certificates, route identities). A certificate a current CRL lists as
 * revoked fails under soft and hard alike; they differ only when the CRL is missing or past its
 * nextUpdate. */
typedef enum cr_conf_revocation {
  CR_REVOCATION_OFF = 0, /* "off": CRLs are not consulted */
  CR_REVOCATION_SOFT,    /* "soft": a missing or stale CRL is logged as a warning and the chain passes */
  CR_REVOCATION_HARD     /* "hard": fail closed: a missing or stale CRL fails the chain */
} cr_conf_revocation_t;

/* A request body ceiling (routes[].limits.max_body, services[].limits.max_body): 10 MiB. The
 * connector bodies ccrelay carries are small (SOAP and JSON calls, SCEP requests: kilobytes), so this
 * leaves ample room while keeping one caller from pushing an unbounded upload through a small
 * gateway and agent; raise it per route or service for bulk transfers. 0 turns the check off. */
#define CR_CONF_MAX_BODY_DEFAULT (UINT64_C(10) * 1024 * 1024)

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
  cr_conf_identity_t identity; /* upstream.identity: client identity; required, except with plain_http
                                  (where it is refused: all fields NULL) */
  int plain_http;            /* upstream.plain_http (false): true allows (and requires) an http:// url:
                                no TLS at all, so no identity, ca or tls (SCEP, NDES) */
  /* upstream.tls: the client's protocol policy toward this upstream. Every field left out keeps the
   * strict default; the others are deliberate weakenings for old servers (logged at start). */
  struct {
    int min_version;         /* tls.min_version: TLSv1|TLSv1.1|TLSv1.2|TLSv1.3, as the wire number
                                (0x0301..0x0304); 0 when absent (TLSv1.2) */
    int max_version;         /* tls.max_version; 0 when absent (TLSv1.3) */
    int security_level;      /* tls.security_level 0..5; -1 when absent (OpenSSL's default, 2) */
    char *ciphers;           /* tls.ciphers: OpenSSL cipher list (TLS 1.2 and older); NULL: default */
    char *curves;            /* tls.curves: key-exchange groups, "X25519:P-256"; NULL: default */
    cr_conf_pos_t pos;       /* the tls mapping; line 0 when absent */
    cr_conf_pos_t min_pos, max_pos, level_pos, ciphers_pos, curves_pos;
  } tls;
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
  uint64_t max_body;               /* routes[].limits.max_body (CR_CONF_MAX_BODY_DEFAULT), 0..1TiB, 0:
                                      off. A Content-Length above it is answered 413 before the
                                      upstream is contacted; a chunked body that crosses it ends the
                                      upstream request (413 when no response head was sent yet, else
                                      the tunnel stream is reset) */
} cr_conf_route_t;

/* gateway.proxy: the HTTP proxy the tunnel is dialed through (HTTP CONNECT; the TLS to the gateway
 * runs end to end inside it). Either url, or from_environment: true, which takes the proxy from
 * https_proxy / HTTPS_PROXY at load unless no_proxy / NO_PROXY matches the gateway's host.
 *   proxy: { url: http://proxy.corp:3128, username: NAME, password_file: FILE | password_env: NAME,
 *            connect_timeout: 10s }
 * When host is NULL the gateway is dialed directly (no proxy key, or from_environment found no
 * proxy for the gateway). */
typedef struct cr_conf_proxy {
  char *host;             /* the proxy in force (IPv6 without brackets); NULL: none */
  unsigned port;
  const char *source;     /* static: "gateway.proxy.url", "https_proxy" or "HTTPS_PROXY"; NULL with host */
  int from_environment;   /* proxy.from_environment (false) */
  char *no_proxy_entry;   /* from_environment: the no_proxy entry that matched the gateway (so no proxy
                             is used), for the start log; else NULL */
  char *username;         /* proxy.username: Basic credentials; NULL: none sent */
  char *password;         /* proxy.password_file's content (trailing newline removed) or password_env's
                             value; set exactly when username is; wiped on free; never logged */
  int password_from_env;  /* 1: password came from password_env (for hints in error messages) */
  uint64_t connect_timeout_ms; /* proxy.connect_timeout (10s): TCP to the proxy + its CONNECT answer */
  cr_conf_pos_t pos;      /* the proxy mapping; line 0 when absent */
} cr_conf_proxy_t;

/* 1 when a no_proxy list (curl's syntax: comma-separated names, each matching itself and its
 * subdomains, a leading "." ignored; "*" matching everything; IP literals exact or as CIDR) covers
 * host (a name, or an IP literal without brackets); the entry that matched is copied into
 * matched (may be NULL). Case-insensitive, ports ignored. */
int cr_conf_no_proxy_match(const char *no_proxy, const char *host, char *matched, size_t matchedlen);

/* tcp_routes[]: the agent's side of a gateway passthrough service (end-to-end TLS). The gateway sends
 * the caller's TLS bytes, untouched, on a tunnel stream named by the SNI; the route whose host is that
 * name connects plain TCP to connect and moves the bytes both ways. ccrelay never sees plaintext:
 * the upstream's own certificate and its client-certificate check reach the caller end to end.
 *   tcp_routes: [{ name: cms-tls, host: cms.example.com, connect: cms.corp:443,
 *                  connect_timeout: 5s, idle_timeout: 5m }] */
typedef struct cr_conf_tcp_route {
  char *name;                /* tcp_routes[].name: required, unique among routes and tcp_routes */
  char *host;                /* tcp_routes[].host: the SNI name, exact, case-insensitive; unique */
  char *connect_host;        /* tcp_routes[].connect: host:port; required */
  unsigned connect_port;
  uint64_t connect_timeout_ms; /* tcp_routes[].connect_timeout (5s) */
  uint64_t idle_timeout_ms;    /* tcp_routes[].idle_timeout (5m), 1ms..24h: no byte either way for this
                                  long ends the connection */
  cr_conf_pos_t pos;
} cr_conf_tcp_route_t;

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
    char *host;                   /* gateway.address: host:port, or a list of them; required. host,
                                     port and pos are the first entry's (for logs) */
    unsigned port;
    cr_conf_pos_t pos;
    cr_conf_addr_t *addrs;        /* every entry, in order (naddrs >= 1, at most CR_CONF_ADDRS_MAX);
                                     every A/AAAA answer of each name is a dial candidate */
    size_t naddrs;
    char *server_name;            /* gateway.server_name (default: the host of the entry dialled;
                                     stored as the address host when there is one entry) */
    cr_conf_file_t ca;            /* gateway.ca: roots for the gateway's tunnel certificate; required */
    cr_conf_identity_t identity;  /* gateway.identity: the agent's tunnel identity; required */
    unsigned connections;         /* gateway.connections (2), 1..64 */
    uint64_t connect_timeout_ms;  /* gateway.connect_timeout (10s): TCP + TLS */
    uint64_t dial_timeout_ms;     /* gateway.dial_timeout (3s): the TCP connect alone must finish within
                                     min(dial_timeout, connect_timeout), so a dial into a black-holed
                                     path is given up (and redialled) early; the TLS handshake gets
                                     the rest of connect_timeout */
    uint64_t ping_interval_ms;    /* gateway.ping_interval (15s) */
    uint64_t ping_timeout_ms;     /* gateway.ping_timeout (10s) */
    uint64_t reconnect_min_ms;    /* gateway.reconnect_min (250ms) */
    uint64_t reconnect_max_ms;    /* gateway.reconnect_max (30s) */
    cr_conf_proxy_t proxy;        /* gateway.proxy: optional */
  } gateway;
  cr_conf_route_t *routes;        /* routes: list, at least one */
  size_t nroutes;
  cr_conf_tcp_route_t *tcp_routes; /* tcp_routes: optional list */
  size_t ntcp_routes;
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
 * fields a role adds (request id, Forwarded, X-Forwarded-For), so any head a role accepts can cross the tunnel. */
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

/* An address range of a source allow-list or of trusted proxies: "192.0.2.0/24", "2001:db8::/32", or
 * one address ("192.0.2.7" is /32, "::1" is /128). The address is stored with its host bits zero; a
 * CIDR whose host bits are not zero is refused, since it is most likely a typo. */
typedef struct cr_conf_cidr {
  int family;              /* 4 or 6 */
  unsigned char addr[16];  /* network byte order; the first 4 bytes for IPv4 */
  unsigned prefix;         /* 0..32 or 0..128 */
} cr_conf_cidr_t;

/* One entry of services[].callers.subjects, written "cn:NAME", "dns:NAME" or "uri:URI".
 *   cn:   the certificate's subject commonName, exact (case-sensitive);
 *   dns:  a DNS subjectAltName, ASCII case-insensitive; "dns:*.example.com" matches exactly one
 *         label in place of the '*' (a.example.com, not example.com nor a.b.example.com);
 *   uri:  a URI subjectAltName, exact; a trailing '*' makes the rest a prefix
 *         (uri:spiffe://corp/ followed by a star matches spiffe://corp/ and everything under it). */
typedef enum { CR_SUBJECT_CN = 1, CR_SUBJECT_DNS, CR_SUBJECT_URI } cr_conf_subject_kind_t;
typedef struct cr_conf_subject {
  cr_conf_subject_kind_t kind;
  char *value;   /* without the "kind:" prefix; for a wildcard, without the '*' (".example.com",
                    "spiffe://corp/") */
  int wildcard;  /* dns "*." or uri trailing "*" */
} cr_conf_subject_t;

/* services[].callers: who may call the service. Absent: anyone who reaches the public listener
 * (public.client_ca still applies to every caller). Every rule given must pass:
 *   sources      the caller's address (the TCP peer, never X-Forwarded-For) is in one of the ranges,
 *                else 403;
 *   client_ca    the caller's certificate must chain to this CA (PEM roots), else 401 without a
 *                certificate, 403 with one from another CA. The public listener then asks every
 *                caller for a certificate from any configured CA (public.client_ca and every
 *                service's client_ca); only public.client_ca makes one mandatory at the handshake.
 *   subjects     the certificate (checked against client_ca, else public.client_ca, one of which
 *                must be set) has one of these names, else 403;
 *   token_files  "Authorization: Bearer TOKEN" must carry one of the tokens of these files (one
 *                token per line, '#' lines and blank lines skipped; several tokens or files for
 *                rotation; read at start), else 401 with WWW-Authenticate: Bearer. The header is
 *                not forwarded to the agent. */
typedef struct cr_conf_callers {
  int present;                   /* the callers key was given */
  cr_conf_pos_t pos;
  cr_conf_file_t client_ca;      /* callers.client_ca: optional */
  cr_conf_subject_t *subjects;   /* callers.subjects: optional list */
  size_t nsubjects;
  cr_conf_pos_t subjects_pos;
  char **tokens;                 /* from callers.token_files: every token of every file; wiped on
                                    free, never printed */
  size_t ntokens;
  cr_conf_cidr_t *sources;       /* callers.sources: optional list */
  size_t nsources;
} cr_conf_callers_t;

/* services[].limits.max_concurrent default: calls of one service in flight at once (tunnel streams
 * open). A flood on one service then leaves room for the others within public.max_connections. */
#define CR_CONF_MAX_CONCURRENT_DEFAULT 1000

typedef struct cr_conf_service {
  char *host;          /* services[].host: Host header, exact, case-insensitive, port ignored */
  char *path_prefix;   /* services[].path_prefix: optional, must start with "/" */
  char *group;         /* services[].group: a groups[].name */
  size_t group_index;  /* index into groups, resolved at load */
  cr_conf_pos_t pos;
  cr_conf_callers_t callers; /* services[].callers: optional */
  uint64_t max_body;         /* services[].limits.max_body (CR_CONF_MAX_BODY_DEFAULT), 0..1TiB, 0: off.
                                A Content-Length above it gets 413 before anything is forwarded; a
                                chunked body that crosses it resets the tunnel stream and gets 413
                                (no response head sent yet) or the connection closed */
  unsigned max_concurrent;   /* services[].limits.max_concurrent (CR_CONF_MAX_CONCURRENT_DEFAULT),
                                1..1000000: one call more gets 503 with Retry-After: 1 */
  int passthrough;           /* services[].mode: http (0, the default) | passthrough (1): routed by the
                                SNI of the caller's ClientHello without terminating TLS, to the agent's
                                tcp_routes[] entry of the same host. Matched by host only: no
                                path_prefix, no limits, and of callers only sources */
} cr_conf_service_t;

/* Replica ids: 1..CR_CONF_REPLICA_ID_MAX characters of A-Z a-z 0-9 . _ - : [ ]; sets hold at most
 * CR_CONF_REPLICAS_MAX ids. The agent parses the same bounds from the wire. */
#define CR_CONF_REPLICA_ID_MAX 128
#define CR_CONF_REPLICAS_MAX 64
/* 1 when s[0..len) is a valid replica id. */
int cr_conf_replica_id_ok(const char *s, size_t len);

/* Shortest admin token accepted, in characters (`openssl rand -hex 32` makes 64). */
#define CR_CONF_ADMIN_TOKEN_MIN 16

/* Connection caps of the gateway's listeners (1..CR_CONF_CONNECTIONS_MAX each). "In handshake": accepted,
 * TLS not finished. A source is an IPv4 address or an IPv6 /64 (srcmap.h). */
#define CR_CONF_CONNECTIONS_MAX 1000000
#define CR_CONF_PUBLIC_CONNECTIONS_DEFAULT 10000
#define CR_CONF_PUBLIC_HANDSHAKES_DEFAULT 1000
#define CR_CONF_PUBLIC_PER_SOURCE_DEFAULT 500
#define CR_CONF_TUNNEL_HANDSHAKES_DEFAULT 1000
#define CR_CONF_TUNNEL_PER_SOURCE_DEFAULT 32

typedef struct cr_conf_gateway {
  char *path;
  cr_conf_log_t log;
  struct {
    cr_conf_listen_t listen;      /* tunnel.listen: host:port; required */
    cr_conf_identity_t identity;  /* tunnel.identity: the gateway's tunnel certificate; required */
    cr_conf_file_t client_ca;     /* tunnel.client_ca: agents must chain to it; required */
    cr_conf_file_t crl;           /* tunnel.crl: PEM or DER CRLs of the agents' CAs; optional. CRLs
                                     inside client_ca count as well. Reloaded when changed and on
                                     SIGHUP */
    cr_conf_revocation_t revocation; /* tunnel.revocation: off|soft|hard; the value given, else hard
                                     when crl is given; see revocation_set */
    int revocation_set;           /* 0: not given: hard when crl is given or client_ca holds a CRL
                                     (decided at start), else off */
    cr_conf_pos_t revocation_pos; /* of the value given, or of crl */
    uint64_t handshake_timeout_ms;/* tunnel.handshake_timeout (10s) */
    uint64_t ping_interval_ms;    /* tunnel.ping_interval (15s) */
    uint64_t ping_timeout_ms;     /* tunnel.ping_timeout (10s) */
    unsigned max_handshakes;      /* tunnel.max_handshakes (1000): connections in handshake at once; more
                                     are closed at accept */
    unsigned max_per_source;      /* tunnel.max_per_source (32): of those, from one source */
  } tunnel;
  struct {
    cr_conf_listen_t listen;      /* public.listen: host:port; required */
    cr_conf_identity_t identity;  /* public.identity: the public HTTPS certificate; required */
    cr_conf_file_t client_ca;     /* public.client_ca: optional; if set callers need a certificate */
    cr_conf_file_t crl;           /* public.crl: as tunnel.crl, for callers' certificates; needs client_ca */
    cr_conf_revocation_t revocation; /* public.revocation: as tunnel.revocation; needs client_ca */
    int revocation_set;
    cr_conf_pos_t revocation_pos;
    char *tls_ciphers;            /* public.tls.ciphers: TLS 1.2 suites, OpenSSL cipher-list syntax;
                                     NULL: AEAD with ECDHE only (CR_TLS_CIPHERS_AEAD). The syntax is
                                     checked here, the list compiled by `check` and at start */
    cr_conf_pos_t tls_ciphers_pos;
    int tls_min_version;          /* public.tls.min_version: TLSv1.2|TLSv1.3 (TLSv1.2), as 12 or 13 */
    uint64_t header_timeout_ms;   /* public.header_timeout (10s): connection/keep-alive -> full head */
    uint64_t idle_timeout_ms;     /* public.idle_timeout (60s): keep-alive idle */
    uint64_t request_timeout_ms;  /* public.request_timeout (60s): head forwarded -> response head */
    uint64_t max_header_size;     /* public.max_header_size (16KiB) */
    unsigned max_header_fields;   /* public.max_header_fields (100): more fields get 431 */
    unsigned max_connections;     /* public.max_connections (10000): every state; more are closed at accept */
    unsigned max_handshakes;      /* public.max_handshakes (1000): of those, in TLS handshake */
    unsigned max_per_source;      /* public.max_per_source (500): of those, from one source */
    uint64_t send_timeout_ms;     /* public.send_timeout (30s), 0s..1h, 0s: off. While response
                                     bytes wait for a caller, it must take some of them (at least
                                     min_send_rate x send_timeout, and at least one write) in every
                                     send_timeout, or its connection is closed, the tunnel stream
                                     reset and the cut logged with the request id */
    uint64_t min_send_rate;       /* public.min_send_rate (0), bytes per second, 0..1GiB; 0: any
                                     progress will do */
    cr_conf_cidr_t *trusted_proxies; /* public.trusted_proxies ([]): front proxies whose
                                     X-Forwarded-For and Forwarded are kept and extended with the
                                     peer; from any other caller both (and X-Forwarded-Host,
                                     X-Forwarded-Proto) are dropped and replaced by the gateway's */
    size_t ntrusted_proxies;
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
  /* replicas: the replica set this gateway belongs to (README, High availability). Optional: absent,
   * the gateway is a set of one whose id is the host name. Exactly one of set or dns:
   *   set: [ID, ...]  static ids (unique, must hold id); a SIGHUP re-reads the file's set
   *   dns: NAME       the set is every A/AAAA answer as IP:tunnel-port (IPv6 as [IP]:port),
   *                   re-resolved every refresh; id is then required, e.g. "${POD_IP}:8443" */
  struct {
    char *id;                     /* replicas.id: ${NAME} takes environment variable NAME (unset:
                                     error); default: the host name (static set only) */
    cr_conf_pos_t id_pos;         /* line 0 when defaulted */
    char **set;                   /* replicas.set; NULL in dns mode or when replicas is absent
                                     (then the set is { id }) */
    size_t nset;
    char *dns;                    /* replicas.dns; NULL unless dns mode */
    uint64_t refresh_ms;          /* replicas.refresh (10s), 1s..1h */
    cr_conf_pos_t pos;            /* the replicas mapping; line 0 when absent */
  } replicas;
  /* probe: { listen: IP:port }, optional: plain HTTP /healthz, /readyz and /status (JSON: tunnels per
   * group and agent, the replica set) without authentication, for load balancers and Kubernetes
   * probes. host NULL when absent. */
  cr_conf_listen_t probe_listen;
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
int cr_conf_parse_cidr(const char *s, cr_conf_cidr_t *out, const char **why);
/* 1 when ip (a textual IPv4 or IPv6 address, no port) is in one of the n ranges; an IPv4-mapped IPv6
 * address (::ffff:192.0.2.7) counts as the IPv4 address. 0 for anything else. */
int cr_conf_cidr_match(const cr_conf_cidr_t *list, size_t n, const char *ip);
int cr_conf_parse_duration(const char *s, uint64_t *ms);
int cr_conf_parse_size(const char *s, uint64_t *bytes);

/* The libyaml this process runs with ("0.2.5"), for `ccrelay version`. */
const char *cr_conf_libyaml_version(void);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Config loader: values and defaults of full and minimal files, durations and sizes, path
 * resolution, secrets, and every error with its exact file:line:col and dotted key. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ccrelay/config.h"
#include "ccrelay/error.h"
#include "ccrelay/tunnel.h"

/* A head at the configured field ceiling, plus what the gateway adds (request id, Forwarded,
 * X-Forwarded-For) and a margin, still fits the tunnel's per-stream header limit at the other role. */
_Static_assert(CR_CONF_HEADER_FIELDS_MAX + 6 <= CR_TUNNEL_MAX_HEADERS, "max_header_fields ceiling above the tunnel's");

static char data_dir[PATH_MAX]; /* tests/unit/data/config, resolved */
static char inline_name[PATH_MAX + 32];
/* Table-like tests report every wrong case before failing, not just the first. */
static int nbad;

static void find_data_dir(void) {
  const char *env = getenv("CCRELAY_TEST_DATA");
  char guess[PATH_MAX];

  if (env != NULL && env[0] != '\0') {
    snprintf(guess, sizeof(guess), "%s/unit/data/config", env);
  } else {
    const char *slash = strrchr(__FILE__, '/');
    int n = slash ? (int)(slash - __FILE__) : 1;
    snprintf(guess, sizeof(guess), "%.*s/data/config", n, slash ? __FILE__ : ".");
  }
  if (realpath(guess, data_dir) == NULL) {
    fprintf(stderr, "test_config: data directory %s: %s\n", guess, strerror(errno));
    exit(1);
  }
  /* Inline YAML is "in" a file of the data directory so that files/... resolve there. */
  snprintf(inline_name, sizeof(inline_name), "%s/inline.yaml", data_dir);
}

static void data_path(char *out, size_t len, const char *name) {
  snprintf(out, len, "%s/%s", data_dir, name);
}

/* err must read "<file>:<where>: <reason...>" with reason containing want_reason. */
static void check_err(const char *err, const char *file, const char *where, const char *want_reason,
                      const char *label) {
  char prefix[PATH_MAX + 256];
  size_t n = (size_t)snprintf(prefix, sizeof(prefix), "%s:%s: ", file, where);

  if (strncmp(err, prefix, n) != 0 || strstr(err + n, want_reason) == NULL) {
    print_error("case %s\n  got:  %s\n  want: %s...%s...\n", label, err, prefix, want_reason);
    nbad++;
  }
}

static void agent_err(const char *yaml, const char *where, const char *reason) {
  cr_conf_agent_t a;
  char err[1024] = "";
  int rc = cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err));
  if (rc != CR_ECONFIG) {
    print_error("case %s: loaded (rc %d), expected an error\n", where, rc);
    cr_conf_agent_free(&a);
    nbad++;
    return;
  }
  check_err(err, inline_name, where, reason, where);
  /* Failure leaves nothing to free, and freeing is harmless. */
  cr_conf_agent_free(&a);
}

static void gateway_err(const char *yaml, const char *where, const char *reason) {
  cr_conf_gateway_t g;
  char err[1024] = "";
  int rc = cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), &g, err, sizeof(err));
  if (rc != CR_ECONFIG) {
    print_error("case %s: loaded (rc %d), expected an error\n", where, rc);
    cr_conf_gateway_free(&g);
    nbad++;
    return;
  }
  check_err(err, inline_name, where, reason, where);
  cr_conf_gateway_free(&g);
}

/* ---------------------------------------------------------------- fragments */

/* Six lines: a valid agent `gateway:` section. */
#define GW                                                                                         \
  "gateway:\n"                                                                                     \
  "  address: gw.example.com:8443\n"                                                               \
  "  ca: files/ca.pem\n"                                                                           \
  "  identity:\n"                                                                                  \
  "    cert: files/agent.pem\n"                                                                    \
  "    key: files/agent.key\n"

/* Six lines: a valid route `upstream:` section at route indentation. */
#define UP                                                                                         \
  "    upstream:\n"                                                                                \
  "      url: https://up.example.com\n"                                                            \
  "      ca: files/ca.pem\n"                                                                       \
  "      identity:\n"                                                                              \
  "        pkcs12: files/conn.p12\n"                                                               \
  "        password_file: files/conn.pass\n"

/* Lines 7-8 after GW: the routes list with one named route; UP follows at line 9. */
#define ROUTE "routes:\n  - name: r1\n"

/* Lines 1-6: valid gateway tunnel section. */
#define TUN                                                                                        \
  "tunnel:\n"                                                                                      \
  "  listen: 0.0.0.0:8443\n"                                                                       \
  "  identity: {cert: files/agent.pem, key: files/agent.key}\n"                                    \
  "  client_ca: files/ca.pem\n"                                                                    \
  "public:\n"                                                                                      \
  "  listen: 0.0.0.0:443\n"
/* Line 7: the public identity. */
#define PUBID "  identity: {cert: files/agent.pem, key: files/agent.key}\n"
/* Lines 8-10: one group `acme`. */
#define GROUPS "groups:\n  - name: acme\n    agents: [a1]\n"

/* ---------------------------------------------------------------- values */

static void test_duration(void **state) {
  static const struct {
    const char *s;
    uint64_t ms;
  } ok[] = {{"250ms", 250}, {"5s", 5000},       {"2m", 120000},
            {"1h", 3600000}, {"0s", 0},         {"0010s", 10000},
            {"30d", UINT64_C(30) * 86400000},   {"0d", 0},
            {"5124095576030h", UINT64_C(5124095576030) * 3600000},
            {"213503982334d", UINT64_C(213503982334) * 86400000}};
  static const char *const bad[] = {"",     "5",    "5x",   "s",    "-1s",  "+1s",
                                    "1.5s", " 5s",  "5 s",  "5S",   "5sec", "1m30s",
                                    "30x",  "30D",  "1d12h", "d",   "1dd",  "1day",
                                    "5124095576031h",   "213503982335d", "18446744073709551616ms",
                                    "99999999999999999999999s"};
  size_t i;
  uint64_t v;

  for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    v = 1;
    assert_int_equal(cr_conf_parse_duration(ok[i].s, &v), 0);
    assert_true(v == ok[i].ms);
  }
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    v = 7;
    if (cr_conf_parse_duration(bad[i], &v) != CR_ECONFIG) {
      print_error("duration '%s' parsed\n", bad[i]);
      fail();
    }
    assert_true(v == 7);
  }
  assert_int_equal(cr_conf_parse_duration("18446744073709551615ms", &v), 0);
  assert_true(v == UINT64_MAX);
}

static void test_size(void **state) {
  static const struct {
    const char *s;
    uint64_t b;
  } ok[] = {{"0", 0},           {"512", 512},         {"512B", 512},
            {"16KiB", 16384},   {"1MiB", 1048576},    {"3GiB", UINT64_C(3) << 30},
            {"17179869183GiB", UINT64_C(17179869183) << 30}};
  static const char *const bad[] = {"",     "KiB",  "1KB",    "1MB",  "1GB",   "1kib", "1K",
                                    "1.5KiB", "1 KiB", "-1",   "1TiB",  "1b",
                                    "17179869184GiB", "18446744073709551616"};
  size_t i;
  uint64_t v;

  for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
    v = 1;
    assert_int_equal(cr_conf_parse_size(ok[i].s, &v), 0);
    assert_true(v == ok[i].b);
  }
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (cr_conf_parse_size(bad[i], &v) != CR_ECONFIG) {
      print_error("size '%s' parsed\n", bad[i]);
      fail();
    }
  }
}

static void test_agent_full(void **state) {
  cr_conf_agent_t a;
  char path[PATH_MAX + 64], want[PATH_MAX + 64], err[1024] = "";
  const cr_conf_route_t *r;

  setenv("CCRELAY_TEST_CONFIG_PW", "env-secret", 1);
  data_path(path, sizeof(path), "agent-full.yaml");
  if (cr_conf_agent_load(path, &a, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_string_equal(a.path, path);
  assert_int_equal(a.log.level, CR_LOG_DEBUG);
  assert_int_equal(a.log.format, CR_LOG_JSON);
  assert_string_equal(a.gateway.host, "::1");
  assert_int_equal(a.gateway.port, 9443);
  assert_int_equal(a.gateway.pos.line, 6);
  assert_int_equal(a.gateway.pos.col, 12);
  assert_string_equal(a.gateway.server_name, "tunnel.test");
  data_path(want, sizeof(want), "files/ca.pem");
  assert_string_equal(a.gateway.ca.path, want);
  assert_int_equal(a.gateway.ca.pos.line, 8);
  assert_int_equal(a.gateway.ca.pos.col, 7);
  data_path(want, sizeof(want), "files/conn.p12");
  assert_string_equal(a.gateway.identity.pkcs12.path, want);
  assert_int_equal(a.gateway.identity.pkcs12.pos.line, 10);
  assert_int_equal(a.gateway.identity.pkcs12.pos.col, 13);
  assert_int_equal(a.gateway.identity.pos.line, 10);
  assert_int_equal(a.gateway.identity.pos.col, 5);
  assert_null(a.gateway.identity.cert.path);
  assert_string_equal(a.gateway.identity.password, "s3cret-from-file");
  assert_int_equal(a.gateway.connections, 4);
  assert_true(a.gateway.connect_timeout_ms == 3000);
  assert_true(a.gateway.ping_interval_ms == 20000);
  assert_true(a.gateway.ping_timeout_ms == 5000);
  assert_true(a.gateway.reconnect_min_ms == 100);
  assert_true(a.gateway.reconnect_max_ms == 120000);

  assert_int_equal(a.nroutes, 2);
  r = &a.routes[0];
  assert_string_equal(r->name, "cms-json");
  assert_int_equal(r->pos.line, 19);
  assert_int_equal(r->pos.col, 5);
  assert_string_equal(r->match_host, "cms.example.com");
  assert_string_equal(r->match_path_prefix, "/connector/mdm.cgi");
  assert_int_equal(r->nmatch_methods, 2);
  assert_string_equal(r->match_methods[0], "POST");
  assert_string_equal(r->match_methods[1], "GET");
  assert_string_equal(r->match_header_name, "SOAPAction");
  assert_string_equal(r->match_header_value, "\"\"");
  assert_null(r->match_soap_action);
  assert_string_equal(r->upstream_url, "https://cms.example.internal:8443/base/");
  assert_string_equal(r->upstream_host, "cms.example.internal");
  assert_int_equal(r->upstream_port, 8443);
  assert_string_equal(r->upstream_base_path, "/base");
  assert_string_equal(r->server_name, "cms.internal");
  data_path(want, sizeof(want), "files/ca.pem"); /* "./files/ca.pem" */
  assert_string_equal(r->ca.path, want);
  data_path(want, sizeof(want), "files/agent.pem");
  assert_string_equal(r->identity.cert.path, want);
  assert_int_equal(r->identity.cert.pos.line, 32);
  assert_int_equal(r->identity.cert.pos.col, 15);
  data_path(want, sizeof(want), "files/agent.key");
  assert_string_equal(r->identity.key.path, want);
  assert_null(r->identity.pkcs12.path);
  assert_null(r->identity.password);
  assert_true(r->connect_timeout_ms == 1000);
  assert_true(r->response_timeout_ms == 45000);
  assert_true(r->idle_timeout_ms == 3600000);
  assert_int_equal(r->max_idle, 0);
  assert_int_equal(r->soap, 0);
  assert_int_equal(r->revocation, CR_REVOCATION_SOFT); /* its own, over the global hard */
  assert_int_equal(r->revocation_set, 1);

  r = &a.routes[1];
  assert_string_equal(r->name, "pki-soap");
  assert_null(r->match_host);
  assert_null(r->match_methods);
  assert_int_equal(r->nmatch_methods, 0);
  assert_null(r->match_header_name);
  assert_string_equal(r->match_soap_action, "urn:pki/GetProfiles"); /* its quotes stripped */
  assert_string_equal(r->upstream_host, "pki.example.internal");
  assert_int_equal(r->upstream_port, 443);
  assert_string_equal(r->upstream_base_path, "");
  assert_string_equal(r->server_name, "pki.example.internal");
  assert_string_equal(r->identity.password, "env-secret");
  assert_int_equal(r->soap, 1);
  assert_null(r->ca.path); /* verified against the trust store */
  assert_int_equal(r->ca.pos.line, 0);
  assert_int_equal(r->revocation, CR_REVOCATION_HARD); /* the global one */
  assert_int_equal(r->revocation_set, 0);
  assert_true(r->connect_timeout_ms == 5000);
  assert_true(r->response_timeout_ms == 30000);
  assert_true(r->idle_timeout_ms == 60000);
  assert_int_equal(r->max_idle, 64);

  assert_true(a.max_header_size == 32768);
  assert_int_equal(a.max_header_fields, 200);
  assert_true(a.drain_timeout_ms == 0);
  data_path(want, sizeof(want), "files"); /* "./files/" */
  assert_string_equal(a.trust_store, want);
  assert_int_equal(a.trust_store_pos.line, 52);
  assert_int_equal(a.trust_store_pos.col, 14);
  assert_int_equal(a.revocation, CR_REVOCATION_HARD);
  assert_true(a.expiry_warning_ms == UINT64_C(7) * 24 * 3600 * 1000);
  assert_string_equal(a.admin_listen.host, "::1");
  assert_int_equal(a.admin_listen.port, 9091);
  assert_int_equal(a.admin_listen.pos.line, 56);
  assert_int_equal(a.admin_listen.pos.col, 11);
  assert_int_equal(a.remote_trust, 1);
  cr_conf_agent_free(&a);
  assert_null(a.routes);
  cr_conf_agent_free(&a); /* twice is harmless */
  unsetenv("CCRELAY_TEST_CONFIG_PW");
}

static void test_agent_defaults(void **state) {
  cr_conf_agent_t a;
  char path[PATH_MAX + 64], err[1024] = "";
  const cr_conf_route_t *r;

  data_path(path, sizeof(path), "agent-min.yaml");
  if (cr_conf_agent_load(path, &a, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(a.log.level, CR_LOG_INFO);
  assert_int_equal(a.log.format, CR_LOG_LOGFMT);
  assert_string_equal(a.gateway.host, "gw.example.com");
  assert_int_equal(a.gateway.port, 443);
  assert_string_equal(a.gateway.server_name, "gw.example.com");
  assert_int_equal(a.gateway.identity.pos.line, 5);
  assert_int_equal(a.gateway.identity.pos.col, 13); /* the flow mapping's '{' */
  assert_null(a.gateway.identity.password);
  assert_int_equal(a.gateway.connections, 2);
  assert_true(a.gateway.connect_timeout_ms == 10000);
  assert_true(a.gateway.ping_interval_ms == 15000);
  assert_true(a.gateway.ping_timeout_ms == 10000);
  assert_true(a.gateway.reconnect_min_ms == 250);
  assert_true(a.gateway.reconnect_max_ms == 30000);
  assert_int_equal(a.nroutes, 1);
  r = &a.routes[0];
  assert_null(r->match_host);
  assert_null(r->match_path_prefix);
  assert_int_equal(r->upstream_port, 443);
  assert_null(r->identity.password); /* a pkcs12 without password */
  assert_true(r->connect_timeout_ms == 5000);
  assert_true(r->response_timeout_ms == 30000);
  assert_true(r->idle_timeout_ms == 60000);
  assert_int_equal(r->max_idle, 64);
  assert_int_equal(r->soap, 0);
  assert_true(a.max_header_size == 16384);
  assert_int_equal(a.max_header_fields, 100);
  assert_true(a.send_timeout_ms == 30000);
  assert_true(a.min_send_rate == 0);
  assert_true(a.drain_timeout_ms == 10000);
  /* Defaulted, the store is neither resolved nor required to exist. */
  assert_string_equal(a.trust_store, "/var/lib/ccrelay/trust");
  assert_int_equal(a.trust_store_pos.line, 0);
  assert_int_equal(a.revocation, CR_REVOCATION_OFF);
  assert_int_equal(r->revocation, CR_REVOCATION_OFF);
  assert_int_equal(r->revocation_set, 0);
  assert_non_null(r->ca.path); /* agent-min still names one */
  assert_true(a.expiry_warning_ms == UINT64_C(30) * 24 * 3600 * 1000);
  assert_null(a.admin_listen.host);
  assert_int_equal(a.admin_listen.port, 0);
  assert_int_equal(a.remote_trust, 0);
  cr_conf_agent_free(&a);
}

static void test_gateway_full(void **state) {
  cr_conf_gateway_t g;
  char path[PATH_MAX + 64], want[PATH_MAX + 64], err[1024] = "";

  data_path(path, sizeof(path), "gateway-full.yaml");
  if (cr_conf_gateway_load(path, &g, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_string_equal(g.path, path);
  assert_int_equal(g.log.level, CR_LOG_WARN);
  assert_int_equal(g.log.format, CR_LOG_LOGFMT);
  assert_string_equal(g.tunnel.listen.host, "::");
  assert_int_equal(g.tunnel.listen.port, 7443);
  assert_int_equal(g.tunnel.listen.pos.line, 5);
  assert_int_equal(g.tunnel.listen.pos.col, 11);
  data_path(want, sizeof(want), "files/agent.pem");
  assert_string_equal(g.tunnel.identity.cert.path, want);
  data_path(want, sizeof(want), "files/ca.pem");
  assert_string_equal(g.tunnel.client_ca.path, want);
  assert_true(g.tunnel.handshake_timeout_ms == 4000);
  assert_true(g.tunnel.ping_interval_ms == 30000);
  assert_true(g.tunnel.ping_timeout_ms == 3000);
  assert_string_equal(g.public_.listen.host, "127.0.0.1");
  assert_int_equal(g.public_.listen.port, 8443);
  assert_string_equal(g.public_.identity.password, "crlf-secret");
  assert_int_equal(g.public_.identity.pos.line, 16);
  assert_int_equal(g.public_.identity.pos.col, 5);
  assert_string_equal(g.public_.client_ca.path, want);
  assert_true(g.public_.header_timeout_ms == 5000);
  assert_true(g.public_.idle_timeout_ms == 120000);
  assert_true(g.public_.request_timeout_ms == 90000);
  assert_true(g.public_.max_header_size == 8192);
  assert_int_equal(g.public_.max_header_fields, 150);
  assert_int_equal(g.public_.max_connections, 500);
  assert_int_equal(g.ngroups, 2);
  assert_string_equal(g.groups[0].name, "acme");
  assert_int_equal(g.groups[0].nagents, 2);
  assert_string_equal(g.groups[0].agents[0], "acme-agent-1");
  assert_string_equal(g.groups[0].agents[1], "acme-agent-2");
  assert_int_equal(g.groups[0].pos.line, 26);
  assert_int_equal(g.groups[0].pos.col, 5);
  assert_string_equal(g.groups[1].name, "other");
  assert_int_equal(g.groups[1].nagents, 1);
  assert_string_equal(g.groups[1].agents[0], "other-agent");
  assert_int_equal(g.nservices, 3);
  assert_string_equal(g.services[0].host, "cms.example.com");
  assert_null(g.services[0].path_prefix);
  assert_string_equal(g.services[0].group, "acme");
  assert_int_equal(g.services[0].group_index, 0);
  assert_int_equal(g.services[0].pos.line, 32);
  assert_string_equal(g.services[1].path_prefix, "/policyService");
  assert_int_equal(g.services[1].group_index, 1);
  assert_int_equal(g.services[2].group_index, 0);
  assert_true(g.drain_timeout_ms == 60000);
  assert_string_equal(g.admin_listen.host, "127.0.0.1");
  assert_int_equal(g.admin_listen.port, 9090);
  assert_int_equal(g.admin_listen.pos.line, 41);
  assert_string_equal(g.admin_token, "0123456789abcdef-token"); /* CRLF removed */
  assert_int_equal(g.admin_token_pos.line, 42);
  assert_int_equal(g.admin_token_pos.col, 15);
  cr_conf_gateway_free(&g);
  assert_null(g.admin_token);
}

static void test_gateway_defaults(void **state) {
  cr_conf_gateway_t g;
  char path[PATH_MAX + 64], err[1024] = "";

  data_path(path, sizeof(path), "gateway-min.yaml");
  if (cr_conf_gateway_load(path, &g, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(g.log.level, CR_LOG_INFO);
  assert_int_equal(g.log.format, CR_LOG_LOGFMT);
  assert_true(g.tunnel.handshake_timeout_ms == 10000);
  assert_true(g.tunnel.ping_interval_ms == 15000);
  assert_true(g.tunnel.ping_timeout_ms == 10000);
  assert_null(g.public_.client_ca.path);
  assert_int_equal(g.public_.client_ca.pos.line, 0);
  /* An empty password file is an empty password, not "no password". */
  assert_non_null(g.public_.identity.password);
  assert_string_equal(g.public_.identity.password, "");
  assert_true(g.public_.header_timeout_ms == 10000);
  assert_true(g.public_.idle_timeout_ms == 60000);
  assert_true(g.public_.request_timeout_ms == 60000);
  assert_true(g.public_.max_header_size == 16384);
  assert_int_equal(g.public_.max_header_fields, 100);
  assert_int_equal(g.public_.max_connections, 10000);
  assert_true(g.public_.send_timeout_ms == 30000);
  assert_true(g.public_.min_send_rate == 0);
  assert_true(g.drain_timeout_ms == 10000);
  assert_null(g.admin_listen.host);
  assert_null(g.admin_token);
  assert_int_equal(g.admin_token_pos.line, 0);
  cr_conf_gateway_free(&g);
}

static void test_samples(void **state) {
  /* The annotated samples parse; their files (and the trust store directory) exist only after
   * config/make-sample-certs.sh, so a missing file or directory is the only error tolerated. */
  char path[PATH_MAX + 64], err[1024];
  cr_conf_agent_t a;
  cr_conf_gateway_t g;

  snprintf(path, sizeof(path), "%s/../../../../config/agent.yaml", data_dir);
  if (access(path, R_OK) != 0)
    skip();
  if (cr_conf_agent_load(path, &a, err, sizeof(err)) == 0) {
    assert_int_equal(a.nroutes, 2);
    assert_string_equal(a.routes[0].name, "cms-json");
    assert_string_equal(a.routes[0].match_path_prefix, "/connector/mdm.cgi");
    assert_string_equal(a.routes[1].name, "pki-soap");
    assert_int_equal(a.routes[1].soap, 1);
    /* Both forms are shown: a route's own CA file, and the trust store. */
    assert_non_null(a.routes[0].ca.path);
    assert_null(a.routes[1].ca.path);
    assert_non_null(strstr(a.trust_store, "/config/trust"));
    assert_int_equal(a.revocation, CR_REVOCATION_OFF);
    assert_true(a.expiry_warning_ms == UINT64_C(30) * 24 * 3600 * 1000);
    assert_string_equal(a.admin_listen.host, "127.0.0.1");
    assert_int_equal(a.remote_trust, 0);
    cr_conf_agent_free(&a);
  } else if (strstr(err, "no such file") == NULL && strstr(err, "no such directory") == NULL) {
    print_error("%s\n", err);
    fail();
  }
  snprintf(path, sizeof(path), "%s/../../../../config/gateway.yaml", data_dir);
  if (cr_conf_gateway_load(path, &g, err, sizeof(err)) == 0) {
    assert_int_equal(g.ngroups, 1);
    assert_int_equal(g.nservices, 2);
    assert_null(g.admin_listen.host); /* off unless uncommented */
    cr_conf_gateway_free(&g);
  } else if (strstr(err, "no such file") == NULL) {
    print_error("%s\n", err);
    fail();
  }
}

/* ---------------------------------------------------------------- paths and secrets */

static void test_relative_to_config_dir(void **state) {
  /* Loaded by a relative name from another directory: paths still resolve against the file's. */
  char cwd[PATH_MAX], want[PATH_MAX + 64], err[1024] = "";
  cr_conf_agent_t a;

  assert_non_null(getcwd(cwd, sizeof(cwd)));
  assert_int_equal(chdir(data_dir), 0);
  assert_int_equal(chdir(".."), 0);
  assert_int_equal(cr_conf_agent_load("config/agent-min.yaml", &a, err, sizeof(err)), 0);
  assert_int_equal(chdir(cwd), 0);
  data_path(want, sizeof(want), "files/ca.pem");
  assert_string_equal(a.gateway.ca.path, want);
  assert_string_equal(a.path, "config/agent-min.yaml");
  cr_conf_agent_free(&a);
}

static char *write_file(const char *dir, const char *name, const char *text) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  FILE *f;
  sprintf(p, "%s/%s", dir, name);
  f = fopen(p, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  return p;
}

static void test_tempdir_files(void **state) {
  char tmpl[] = "/tmp/ccrelay-config-XXXXXX", yaml[4096], err[1024] = "", where[64];
  char *dir = mkdtemp(tmpl), *conf, *ca, *p12, *pass, *sub;
  cr_conf_agent_t a;

  assert_non_null(dir);
  ca = write_file(dir, "ca.pem", "x\n");
  p12 = write_file(dir, "id.p12", "x\n");
  pass = write_file(dir, "id.pass", "temp-secret\n");
  sub = malloc(strlen(dir) + 8);
  sprintf(sub, "%s/sub", dir);
  assert_int_equal(mkdir(sub, 0700), 0);
  /* Absolute paths are taken as they are. */
  snprintf(yaml, sizeof(yaml),
           "gateway:\n  address: g:1\n  ca: %s\n  identity: {pkcs12: id.p12, password_file: %s}\n"
           "routes:\n  - name: r\n    upstream:\n      url: https://u\n      ca: ca.pem\n"
           "      identity: {pkcs12: %s}\n",
           ca, pass, p12);
  conf = write_file(dir, "agent.yaml", yaml);
  assert_int_equal(cr_conf_agent_load(conf, &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.ca.path, ca);
  assert_string_equal(a.gateway.identity.pkcs12.path, p12); /* relative: dir/id.p12 */
  assert_string_equal(a.gateway.identity.password, "temp-secret");
  assert_string_equal(a.routes[0].ca.path, ca);
  cr_conf_agent_free(&a);
  unlink(conf);
  free(conf);

  /* A directory where a file is expected. */
  conf = write_file(dir, "agent2.yaml", "gateway:\n  address: g:1\n  ca: sub\n");
  assert_int_equal(cr_conf_agent_load(conf, &a, err, sizeof(err)), CR_ECONFIG);
  snprintf(where, sizeof(where), "%s is a directory, expected a file", sub);
  check_err(err, conf, "3:7: gateway.ca", where, "directory");
  unlink(conf);
  free(conf);

  /* Password files: too large to be one, or binary. */
  {
    char *big = malloc(5001), *nul, *gconf, *bigp;
    memset(big, 'p', 5000);
    big[5000] = '\0';
    bigp = write_file(dir, "big.pass", big);
    free(big);
    conf = write_file(dir, "agent4.yaml",
                      "gateway:\n  address: g:1\n  ca: ca.pem\n  identity:\n"
                      "    pkcs12: id.p12\n    password_file: big.pass\n");
    assert_int_equal(cr_conf_agent_load(conf, &a, err, sizeof(err)), CR_ECONFIG);
    check_err(err, conf, "6:20: gateway.identity.password_file", "is larger than 4096 bytes",
              "big password");
    assert_null(strstr(err, "ppp"));
    unlink(conf);
    free(conf);
    nul = malloc(strlen(dir) + 16);
    sprintf(nul, "%s/nul.pass", dir);
    {
      FILE *f = fopen(nul, "w");
      assert_non_null(f);
      fwrite("ab\0cd", 1, 5, f);
      fclose(f);
    }
    conf = write_file(dir, "agent5.yaml",
                      "gateway:\n  address: g:1\n  ca: ca.pem\n  identity:\n"
                      "    pkcs12: id.p12\n    password_file: nul.pass\n");
    assert_int_equal(cr_conf_agent_load(conf, &a, err, sizeof(err)), CR_ECONFIG);
    check_err(err, conf, "6:20: gateway.identity.password_file", "contains a NUL byte", "nul");
    unlink(conf);
    free(conf);
    unlink(nul);
    free(nul);
    /* A config file past the 1 MiB cap is refused before parsing. */
    big = malloc(1100001);
    memset(big, '#', 1100000);
    big[1100000] = '\0';
    gconf = write_file(dir, "huge.yaml", big);
    free(big);
    assert_int_equal(cr_conf_agent_load(gconf, &a, err, sizeof(err)), CR_ECONFIG);
    check_err(err, gconf, "1:1: (root)", "the file is larger than 1048576 bytes", "huge");
    unlink(gconf);
    free(gconf);
    unlink(bigp);
    free(bigp);
  }

  /* A file that cannot be read (only meaningful when not root: root reads everything). */
  if (geteuid() != 0) {
    char want[PATH_MAX];
    assert_int_equal(chmod(pass, 0), 0);
    conf = write_file(dir, "agent3.yaml",
                      "gateway:\n  address: g:1\n  ca: ca.pem\n  identity:\n"
                      "    pkcs12: id.p12\n    password_file: id.pass\n");
    assert_int_equal(cr_conf_agent_load(conf, &a, err, sizeof(err)), CR_ECONFIG);
    snprintf(want, sizeof(want), "cannot read %s: Permission denied", pass);
    check_err(err, conf, "6:20: gateway.identity.password_file", want, "unreadable");
    unlink(conf);
    free(conf);
  }
  unlink(ca);
  unlink(p12);
  unlink(pass);
  rmdir(sub);
  rmdir(dir);
  free(ca);
  free(p12);
  free(pass);
  free(sub);
}

static void test_password_file_newlines(void **state) {
  cr_conf_agent_t a;
  char err[1024];
  const char *yaml = GW ROUTE
      "    upstream:\n      url: https://u\n      ca: files/ca.pem\n"
      "      identity: {pkcs12: files/conn.p12, password_file: files/twolines.pass}\n";

  /* Only the one final newline goes: the rest is the password as written. */
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_string_equal(a.routes[0].identity.password, "two\nlines\n");
  cr_conf_agent_free(&a);
}

static void test_password_never_in_errors(void **state) {
  cr_conf_agent_t a;
  char err[1024];
  /* Loads a password from a file and one from the environment, then fails after both. */
  const char *yaml = "gateway:\n  address: g:1\n  ca: files/ca.pem\n"
                     "  identity: {pkcs12: files/conn.p12, password_file: files/conn.pass}\n"
                     "routes:\n  - name: r\n    upstream:\n      url: https://u\n"
                     "      ca: files/ca.pem\n"
                     "      identity: {pkcs12: files/conn.p12, password_env: CCRELAY_TEST_CONFIG_PW}\n"
                     "    soap: s3cret-from-file\n";
  /* A password pasted where the variable's name goes is not echoed either. */
  const char *pasted = GW ROUTE
      "    upstream:\n      url: https://u\n      ca: files/ca.pem\n"
      "      identity: {pkcs12: files/conn.p12, password_env: 'hunter2!'}\n";

  setenv("CCRELAY_TEST_CONFIG_PW", "env-secret", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)),
                   CR_ECONFIG);
  check_err(err, inline_name, "11:11: routes[0].soap", "expected a boolean", "soap");
  assert_null(strstr(err, "s3cret"));
  assert_null(strstr(err, "env-secret"));
  assert_null(a.gateway.identity.password);
  unsetenv("CCRELAY_TEST_CONFIG_PW");

  assert_int_equal(
      cr_conf_agent_load_mem(inline_name, pasted, strlen(pasted), &a, err, sizeof(err)), CR_ECONFIG);
  check_err(err, inline_name, "12:56: routes[0].upstream.identity.password_env",
            "not a valid environment variable name", "pasted");
  assert_null(strstr(err, "hunter2"));
}

/* ---------------------------------------------------------------- errors: agent */

static void test_agent_errors(void **state) {
  char want[PATH_MAX + 128];

  /* unknown keys, with and without a suggestion */
  agent_err(GW "routez:\n", "7:1: routez", "unknown key (did you mean 'routes'?)");
  agent_err(GW ROUTE "    upstream:\n      urll: https://u\n", "10:7: routes[0].upstream.urll",
            "unknown key (did you mean 'url'?)");
  agent_err(GW ROUTE UP "    bogus: 1\n", "15:5: routes[0].bogus", "unknown key");
  agent_err("gateway:\n  adress: x:1\n", "2:3: gateway.adress", "did you mean 'address'?");
  agent_err("gateway:\n  CONNECTIONS: 2\n", "2:3: gateway.CONNECTIONS",
            "did you mean 'connections'?");
  agent_err(GW ROUTE "    upstream:\n      url: https://u\n      ca: files/ca.pem\n"
                     "      identity:\n        pasword_file: x\n",
            "13:9: routes[0].upstream.identity.pasword_file", "did you mean 'password_file'?");
  agent_err(GW "services: []\n", "7:1: services", "this looks like a gateway configuration");

  /* wrong types */
  agent_err("gateway: [1]\n", "1:10: gateway", "expected a mapping, got a list");
  agent_err(GW "routes: all\n", "7:9: routes", "expected a list, got a plain scalar");
  agent_err(GW "routes: []\n", "7:9: routes", "must not be empty");
  agent_err(GW "routes:\n  - r1\n", "8:5: routes[0]", "expected a mapping, got a plain scalar");
  agent_err(GW "  connections: two\n" ROUTE UP, "7:16: gateway.connections",
            "expected a number, got 'two'");
  agent_err(GW "  connections: \"2\"\n" ROUTE UP, "7:16: gateway.connections",
            "expected a number, got a quoted string");
  agent_err(GW ROUTE UP "    soap: yes\n", "15:11: routes[0].soap", "expected a boolean (true or false)");
  agent_err(GW ROUTE "    match:\n      methods: POST\n", "10:16: routes[0].match.methods",
            "expected a list, got a plain scalar");
  agent_err(GW ROUTE "    upstream:\n      url: [https://u]\n", "10:12: routes[0].upstream.url",
            "expected a string, got a list");
  agent_err(GW ROUTE "    upstream:\n      url:\n      ca: x\n", "10:11: routes[0].upstream.url",
            "expected a string, got an empty value");
  agent_err("log:\n  level: verbose\n", "2:10: log.level",
            "'verbose' is not one of: debug, info, warn, error");
  agent_err("log: {format: text}\n", "1:15: log.format", "is not one of: logfmt, json");

  /* durations and sizes */
  agent_err(GW "  connect_timeout: 5\n", "7:20: gateway.connect_timeout",
            "bad duration '5': missing unit (ms, s, m, h or d)");
  agent_err(GW "  ping_interval: 5sec\n", "7:18: gateway.ping_interval",
            "bad duration '5sec': unknown unit (use ms, s, m, h or d)");
  agent_err(GW "  ping_timeout: 99999999999999999999h\n", "7:17: gateway.ping_timeout",
            "out of range");
  agent_err(GW "  ping_timeout: {}\n", "7:17: gateway.ping_timeout",
            "expected a duration, got a mapping");
  agent_err(GW ROUTE UP "limits:\n  max_header_size: 16KB\n", "16:20: limits.max_header_size",
            "bad size '16KB': unknown unit (use bytes, B, KiB, MiB or GiB)");
  agent_err(GW ROUTE UP "limits:\n  max_header_size: 1.5KiB\n", "16:20: limits.max_header_size",
            "bad size");

  /* ranges */
  agent_err(GW "  connections: 65\n", "7:16: gateway.connections",
            "value out of range: 65 is not between 1 and 64");
  agent_err(GW "  connections: 0\n", "7:16: gateway.connections", "value out of range");
  agent_err(GW "  connections: 99999999999999999999999\n", "7:16: gateway.connections",
            "value out of range");
  agent_err(GW ROUTE UP "limits:\n  max_header_size: 2MiB\n", "16:20: limits.max_header_size",
            "value out of range: 2MiB is not between 1KiB and 1MiB");
  agent_err(GW ROUTE UP "limits:\n  max_header_fields: 9\n", "16:22: limits.max_header_fields",
            "value out of range: 9 is not between 10 and 250");
  agent_err(GW ROUTE UP "limits:\n  max_header_fields: 251\n", "16:22: limits.max_header_fields",
            "value out of range: 251 is not between 10 and 250");
  agent_err(GW ROUTE UP "limits:\n  max_header_fields: 1e2\n", "16:22: limits.max_header_fields",
            "expected a number, got '1e2'");
  agent_err(GW ROUTE UP "limits:\n  max_header_fields: '100'\n", "16:22: limits.max_header_fields",
            "expected a number");
  agent_err(GW ROUTE UP "limits:\n  max_header_field: 100\n", "16:3: limits.max_header_field",
            "did you mean 'max_header_fields'?");
  agent_err(GW "  ping_interval: 50ms\n", "7:18: gateway.ping_interval",
            "value out of range: 50ms is not between 100ms and 1h");
  agent_err(GW ROUTE UP "drain_timeout: 2h\n", "15:16: drain_timeout", "value out of range");
  agent_err(GW "  reconnect_min: 10s\n  reconnect_max: 5s\n", "8:18: gateway.reconnect_max",
            "reconnect_min must not exceed reconnect_max");
  agent_err(GW "  reconnect_min: 1m\n", "7:18: gateway.reconnect_min",
            "reconnect_min must not exceed reconnect_max");

  /* missing required keys: the position is the mapping that lacks them */
  agent_err("log: {level: info}\n", "1:1: gateway", "missing required key");
  agent_err(GW, "1:1: routes", "missing required key");
  agent_err("gateway:\n  ca: files/ca.pem\n", "2:3: gateway.address", "missing required key");
  agent_err(GW ROUTE "    upstream:\n      ca: files/ca.pem\n", "10:7: routes[0].upstream.url",
            "missing required key");
  agent_err(GW "routes:\n  - upstream: {}\n", "8:5: routes[0].name", "missing required key");
  agent_err(GW ROUTE, "8:5: routes[0].upstream", "missing required key");
  agent_err(GW ROUTE "    upstream:\n      url: https://u\n      ca: files/ca.pem\n",
            "10:7: routes[0].upstream.identity", "missing required key");

  /* files */
  snprintf(want, sizeof(want), "no such file: %s/files/nope.pem", data_dir);
  agent_err("gateway:\n  address: g:1\n  ca: files/nope.pem\n", "3:7: gateway.ca", want);
  agent_err("gateway:\n  address: g:1\n  ca: /nonexistent/ca.pem\n", "3:7: gateway.ca",
            "no such file: /nonexistent/ca.pem");
  snprintf(want, sizeof(want), "no such file: %s/nope.pass", data_dir);
  agent_err(GW ROUTE "    upstream:\n      url: https://u\n      ca: files/ca.pem\n"
                     "      identity:\n        pkcs12: files/conn.p12\n        password_file: ./nope.pass\n",
            "14:24: routes[0].upstream.identity.password_file", want);
  snprintf(want, sizeof(want), "%s is a directory", data_dir);
  agent_err("gateway:\n  address: g:1\n  ca: .\n", "3:7: gateway.ca", "is a directory");
  snprintf(want, sizeof(want), "no such directory: %s/nope", data_dir);
  agent_err(GW ROUTE UP "trust_store: nope\n", "15:14: trust_store", want);
  agent_err(GW ROUTE UP "trust_store: /nonexistent/trust\n", "15:14: trust_store",
            "no such directory: /nonexistent/trust");
  snprintf(want, sizeof(want), "%s/files/ca.pem is not a directory", data_dir);
  agent_err(GW ROUTE UP "trust_store: files/ca.pem\n", "15:14: trust_store", want);
  agent_err(GW ROUTE UP "trust_store:\n", "15:13: trust_store", "expected a string, got an empty value");

  /* duplicates */
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  ca: files/ca.pem\n", "4:3: gateway.ca",
            "duplicate key (first at 3:3)");
  agent_err(GW ROUTE UP GW, "15:1: gateway", "duplicate key (first at 1:1)");
  agent_err(GW ROUTE UP "  - name: r1\n", "15:11: routes[1].name",
            "duplicate route name 'r1' (routes[0] at 8:5 has it)");

  /* URLs */
  agent_err(GW ROUTE "    upstream:\n      url: http://u\n", "10:12: routes[0].upstream.url",
            "an http:// upstream is plain HTTP");
  agent_err(GW ROUTE "    upstream:\n      url: https://u\n      plain_http: true\n",
            "11:19: routes[0].upstream.plain_http", "plain_http: true needs an http:// url");
  agent_err(GW ROUTE "    upstream:\n      url: http://u\n      plain_http: true\n      identity: {}\n",
            "12:17: routes[0].upstream.identity", "a plain_http upstream has no TLS, so no identity");
  /* upstream.tls */
  agent_err(GW ROUTE UP "      tls: { min_version: TLSv1.4 }\n", "15:27: routes[0].upstream.tls.min_version",
            "'TLSv1.4' is not one of: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3");
  agent_err(GW ROUTE UP "      tls: { security_level: 6 }\n", "15:30: routes[0].upstream.tls.security_level",
            "6 is not between 0 and 5");
  agent_err(GW ROUTE UP "      tls: { max_version: TLSv1.1 }\n", "15:27: routes[0].upstream.tls.max_version",
            "TLSv1.1 is below min_version (TLSv1.2 by default)");
  agent_err(GW ROUTE UP "      tls: { sec_level: 0 }\n", "15:14: routes[0].upstream.tls.sec_level",
            "did you mean 'security_level'?");
  agent_err(GW ROUTE "    upstream:\n      url: u.example.com\n", "10:12: routes[0].upstream.url",
            "expected https://host[:port][/path]");
  agent_err(GW ROUTE "    upstream:\n      url: https://me@u\n", "10:12: routes[0].upstream.url",
            "user information (user@) is not allowed");
  agent_err(GW ROUTE "    upstream:\n      url: https://u/a?b=1\n", "10:12: routes[0].upstream.url",
            "a query (?...) is not allowed");
  agent_err(GW ROUTE "    upstream:\n      url: https://u/a#top\n", "10:12: routes[0].upstream.url",
            "a fragment (#...) is not allowed");
  agent_err(GW ROUTE "    upstream:\n      url: https://\n", "10:12: routes[0].upstream.url",
            "missing host");
  agent_err(GW ROUTE "    upstream:\n      url: https://u:0\n", "10:12: routes[0].upstream.url",
            "port must be between 1 and 65535");
  agent_err(GW ROUTE "    upstream:\n      url: https://u:70000\n", "10:12: routes[0].upstream.url",
            "port must be between 1 and 65535");
  agent_err(GW ROUTE "    upstream:\n      url: https://u:x\n", "10:12: routes[0].upstream.url",
            "port must be a number");
  agent_err(GW ROUTE "    upstream:\n      url: https://::1/\n", "10:12: routes[0].upstream.url",
            "an IPv6 address needs brackets");
  agent_err(GW ROUTE "    upstream:\n      url: 'https://[::g]/'\n", "10:12: routes[0].upstream.url",
            "bad IPv6 address");
  agent_err("gateway:\n  address: gw.example.com\n", "2:12: gateway.address",
            "bad address 'gw.example.com': missing port (expected host:port)");

  /* identities */
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity:\n    pkcs12: files/conn.p12\n"
            "    cert: files/agent.pem\n",
            "5:5: gateway.identity", "give either pkcs12 or cert and key, not both");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity:\n    password_file: x\n",
            "5:5: gateway.identity", "needs pkcs12, or cert and key");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity: {cert: files/agent.pem}\n",
            "4:13: gateway.identity.key", "missing required key");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity: {}\n", "4:13: gateway.identity",
            "needs pkcs12, or cert and key");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity:\n    pkcs12: files/conn.p12\n"
            "    password_file: files/conn.pass\n    password_env: HOME\n",
            "7:19: gateway.identity.password_env", "give password_file or password_env, not both");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity:\n    pkcs12: files/conn.p12\n"
            "    password_env: CCRELAY_TEST_SURELY_UNSET_VAR\n",
            "6:19: gateway.identity.password_env",
            "environment variable CCRELAY_TEST_SURELY_UNSET_VAR is not set");
  agent_err("gateway:\n  address: g:1\n  ca: files/ca.pem\n  identity:\n    cert: files/agent.pem\n"
            "    key: files/agent.key\n    password_file: files/conn.pass\n",
            "7:20: gateway.identity.password_file", "only a pkcs12 identity takes a password");

  /* match */
  agent_err(GW ROUTE "    match:\n      path_prefix: connector\n", "10:20: routes[0].match.path_prefix",
            "must start with '/'");
  agent_err(GW ROUTE "    match:\n      methods: [POST, 'GE T']\n",
            "10:23: routes[0].match.methods[1]", "not an HTTP method name");
  agent_err(GW ROUTE "    match:\n      methods: []\n", "10:16: routes[0].match.methods",
            "must not be empty");
  agent_err(GW ROUTE "    match:\n      header: {name: SOAPAction}\n",
            "10:15: routes[0].match.header.value", "missing required key");
  agent_err(GW ROUTE "    match:\n      header: {name: 'SOAP Action', value: x}\n",
            "10:22: routes[0].match.header.name", "not a valid header name");
  agent_err(GW "routes:\n  - name: 'r 1'\n", "8:11: routes[0].name",
            "may contain only letters, digits");
}

/* ---------------------------------------------------------------- trust, revocation, admin */

static void test_route_revocation_override(void **state) {
  cr_conf_agent_t a;
  char err[1024] = "";
  const char *yaml = "revocation: hard\n" GW ROUTE UP "    revocation: 'off'\n"
                     "  - name: r2\n" UP "  - name: r3\n" UP "    revocation: hard\n";

  if (cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(a.revocation, CR_REVOCATION_HARD);
  assert_int_equal(a.nroutes, 3);
  assert_int_equal(a.routes[0].revocation, CR_REVOCATION_OFF);
  assert_int_equal(a.routes[0].revocation_set, 1);
  assert_int_equal(a.routes[1].revocation, CR_REVOCATION_HARD);
  assert_int_equal(a.routes[1].revocation_set, 0);
  /* Set to the same value as the global: still the route's own. */
  assert_int_equal(a.routes[2].revocation, CR_REVOCATION_HARD);
  assert_int_equal(a.routes[2].revocation_set, 1);
  cr_conf_agent_free(&a);

  /* A global soft reaches routes without their own; the order of keys in the file is free. */
  yaml = GW ROUTE UP "    revocation: hard\n  - name: r2\n" UP "revocation: soft\n";
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_int_equal(a.routes[0].revocation, CR_REVOCATION_HARD);
  assert_int_equal(a.routes[1].revocation, CR_REVOCATION_SOFT);
  cr_conf_agent_free(&a);
}

static void test_trust_errors(void **state) {
  /* revocation */
  agent_err(GW ROUTE UP "revocation: strict\n", "15:13: revocation",
            "'strict' is not one of: off, soft, hard");
  agent_err(GW ROUTE UP "revocation: [hard]\n", "15:13: revocation", "expected a string, got a list");
  agent_err(GW ROUTE UP "    revocation: HARD\n", "15:17: routes[0].revocation",
            "'HARD' is not one of: off, soft, hard");
  agent_err(GW ROUTE UP "    revocation:\n", "15:16: routes[0].revocation",
            "expected a string, got an empty value");
  agent_err(GW ROUTE UP "    revokation: soft\n", "15:5: routes[0].revokation",
            "unknown key (did you mean 'revocation'?)");

  /* expiry_warning */
  agent_err(GW ROUTE UP "expiry_warning: 30x\n", "15:17: expiry_warning",
            "bad duration '30x': unknown unit (use ms, s, m, h or d)");
  agent_err(GW ROUTE UP "expiry_warning: 30\n", "15:17: expiry_warning",
            "missing unit (ms, s, m, h or d)");
  agent_err(GW ROUTE UP "expiry_warning: 3651d\n", "15:17: expiry_warning",
            "value out of range: 3651d is not between 0ms and 3650d");

  /* admin (agent): listen only, an IP address */
  agent_err(GW ROUTE UP "admin: {}\n", "15:8: admin.listen", "missing required key");
  agent_err(GW ROUTE UP "admin: 9091\n", "15:8: admin", "expected a mapping, got a plain scalar");
  agent_err(GW ROUTE UP "admin:\n  listen: localhost:9091\n", "16:11: admin.listen",
            "bad listen address 'localhost:9091': the host must be an IP address");
  agent_err(GW ROUTE UP "admin:\n  listen: 127.0.0.1\n", "16:11: admin.listen", "missing port");
  agent_err(GW ROUTE UP "admin:\n  listen: 127.0.0.1:9091\n  token_file: files/admin.token\n",
            "17:3: admin.token_file", "unknown key");
  agent_err(GW ROUTE UP "admn:\n  listen: 127.0.0.1:9091\n", "15:1: admn",
            "unknown key (did you mean 'admin'?)");

  /* remote_trust */
  agent_err(GW ROUTE UP "remote_trust: yes\n", "15:15: remote_trust",
            "expected a boolean (true or false)");
  agent_err(GW ROUTE UP "remote_trusted: true\n", "15:1: remote_trusted",
            "did you mean 'remote_trust'?");

  /* upstream.ca is optional, but when given it must still exist */
  agent_err(GW ROUTE "    upstream:\n      url: https://u\n      ca: files/none.pem\n"
                     "      identity: {pkcs12: files/conn.p12}\n",
            "11:11: routes[0].upstream.ca", "no such file");
}

/* The gateway's admin endpoint exists only with a usable bearer token. */
static void test_gateway_admin(void **state) {
  char err[1024], want[PATH_MAX + 64];
  cr_conf_gateway_t g;
  const char *yaml;
#define SVC "services:\n  - host: a.example\n    group: acme\n"

  /* Absent, or present but empty (every line commented out): no endpoint. */
  yaml = TUN PUBID GROUPS SVC "admin:\n";
  assert_int_equal(cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), &g, err, sizeof(err)),
                   0);
  assert_null(g.admin_listen.host);
  assert_null(g.admin_token);
  cr_conf_gateway_free(&g);

  yaml = TUN PUBID GROUPS SVC "admin: {listen: '[::1]:9090', token_file: files/admin.token}\n";
  assert_int_equal(cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), &g, err, sizeof(err)),
                   0);
  assert_string_equal(g.admin_listen.host, "::1");
  assert_int_equal(g.admin_listen.port, 9090);
  assert_string_equal(g.admin_token, "0123456789abcdef-token");
  cr_conf_gateway_free(&g);

  gateway_err(TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n", "15:3: admin.token_file",
              "missing required key: the admin endpoint authenticates its callers with a bearer token");
  gateway_err(TUN PUBID GROUPS SVC "admin:\n  token_file: files/admin.token\n", "15:3: admin.listen",
              "missing required key");
  gateway_err(TUN PUBID GROUPS SVC "admin:\n  listen: 9090\n  token_file: files/admin.token\n",
              "15:11: admin.listen", "bad listen address '9090'");
  gateway_err(TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n  token_fle: x\n",
              "16:3: admin.token_fle", "did you mean 'token_file'?");
  snprintf(want, sizeof(want), "no such file: %s/files/none.token", data_dir);
  gateway_err(TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n  token_file: files/none.token\n",
              "16:15: admin.token_file", want);
  gateway_err(TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n  token_file: files/empty.pass\n",
              "16:15: admin.token_file", "the token is 0 characters long, at least 16 are needed");
  gateway_err(TUN PUBID GROUPS SVC "admin: [127.0.0.1:9090]\n", "14:8: admin",
              "expected a mapping, got a list");

  /* A bad token is described, never shown. */
  yaml = TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n  token_file: files/short.token\n";
  assert_int_equal(cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), &g, err, sizeof(err)),
                   CR_ECONFIG);
  check_err(err, inline_name, "16:15: admin.token_file",
            "the token is 11 characters long, at least 16 are needed", "short token");
  assert_null(strstr(err, "short-token"));
  assert_null(g.admin_token);
  yaml = TUN PUBID GROUPS SVC "admin:\n  listen: 127.0.0.1:9090\n  token_file: files/space.token\n";
  assert_int_equal(cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), &g, err, sizeof(err)),
                   CR_ECONFIG);
  check_err(err, inline_name, "16:15: admin.token_file", "the token contains a space or control character",
            "spaced token");
  assert_null(strstr(err, "abcdef"));
#undef SVC
}

/* ---------------------------------------------------------------- errors: YAML itself */

static void test_yaml_errors(void **state) {
  /* the parser's own problem mark */
  agent_err("gateway:\n  address: x: y\n", "2:13: (syntax)",
            "mapping values are not allowed in this context");
  agent_err("gateway:\n  address: [g:1\n", "3:1: (syntax)",
            "did not find expected ',' or ']' (while parsing a flow sequence at 2:12)");
  agent_err("gateway:\n\taddress: g:1\n", "2:1: (syntax)", "found character that cannot start any token");
  agent_err("gateway: \"\xff\"\n", "1:11: (syntax)", "invalid leading UTF-8 octet");
  /* refused YAML features, at the exact node */
  agent_err("gateway: &gw\n  address: g:1\n", "1:10: gateway", "anchors (&gw) are not supported");
  agent_err(GW "routes:\n  - name: r1\n    upstream: *up\n", "9:15: routes[0].upstream",
            "aliases are not supported");
  agent_err("gateway:\n  address: !!str g:1\n", "2:12: gateway.address",
            "tags (tag:yaml.org,2002:str) are not supported");
  agent_err("? [a]\n: b\n", "1:3: (root)", "keys must be plain strings");
  /* document shape */
  agent_err("", "1:1: (root)", "the file is empty");
  agent_err("# only a comment\n", "1:1: (root)", "the file is empty");
  agent_err("- a\n- b\n", "1:1: (root)", "expected a mapping of settings at the top, got a list");
  agent_err("log: {}\n---\nlog: {}\n", "2:1: (root)", "only one YAML document is allowed");
  agent_err("a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]\n",
            "1:35: a[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]",
            "nested deeper than 32 levels");
  agent_err("gateway:\n  \"address\\0x\": 1\n", "2:3: gateway.address\\x00x", "unknown key");
}

/* ---------------------------------------------------------------- errors: gateway */

static void test_gateway_errors(void **state) {
  gateway_err(TUN PUBID GROUPS "services:\n  - host: a.example\n    group: acmee\n",
              "13:12: services[0].group", "unknown group 'acmee' (did you mean 'acme'?)");
  gateway_err(TUN PUBID GROUPS "services:\n  - host: a.example\n    group: zzz\n",
              "13:12: services[0].group", "unknown group 'zzz'");
  gateway_err(TUN PUBID GROUPS "  - name: acme\n    agents: [a2]\n", "11:11: groups[1].name",
              "duplicate group name 'acme' (groups[0] at 9:5 has it)");
  gateway_err(TUN PUBID GROUPS "  - name: b\n    agents: [a2, a1]\n", "12:18: groups[1].agents[1]",
              "agent 'a1' is already listed in group 'acme'");
  gateway_err(TUN PUBID "groups:\n  - name: g\n    agents: [a1, a1]\n", "10:18: groups[0].agents[1]",
              "agent 'a1' is already listed in group 'g'");
  gateway_err(TUN PUBID "groups:\n  - name: g\n    agents: []\n", "10:13: groups[0].agents",
              "must not be empty");
  gateway_err(TUN PUBID GROUPS
              "services:\n  - host: a.example\n    group: acme\n  - host: A.EXAMPLE\n    group: acme\n",
              "14:5: services[1]", "duplicate service: services[0] at 12:5 has the same host");
  gateway_err(TUN PUBID GROUPS "services:\n  - host: a\n    path_prefix: x\n    group: acme\n",
              "13:18: services[0].path_prefix", "must start with '/'");
  gateway_err(TUN PUBID GROUPS "services: {}\n", "11:11: services", "expected a list, got a mapping");
  gateway_err(TUN PUBID GROUPS, "1:1: services", "missing required key");
  gateway_err(TUN, "6:3: public.identity", "missing required key");
  gateway_err("tunnel:\n  listen: localhost:8443\n", "2:11: tunnel.listen",
              "bad listen address 'localhost:8443': the host must be an IP address");
  gateway_err("tunnel:\n  listen: 0.0.0.0\n", "2:11: tunnel.listen", "missing port");
  gateway_err("tunnel:\n  listen: '::1:8443'\n", "2:11: tunnel.listen", "an IPv6 address needs brackets");
  gateway_err("tunnel:\n  listen: '[::1]8443'\n", "2:11: tunnel.listen", "expected ':' after ']'");
  gateway_err("tunnel:\n  listen: 0.0.0.0:8443\n  client_ca: files/ca.pem\n", "2:3: tunnel.identity",
              "missing required key");
  gateway_err(TUN PUBID "  max_connections: 0\n", "8:20: public.max_connections", "value out of range");
  gateway_err(TUN PUBID "  max_header_fields: 0\n", "8:22: public.max_header_fields",
              "value out of range: 0 is not between 10 and 250");
  gateway_err(TUN PUBID "  max_header_fields: 1000\n", "8:22: public.max_header_fields",
              "value out of range: 1000 is not between 10 and 250");
  gateway_err(TUN PUBID "  max_header_fields: -5\n", "8:22: public.max_header_fields", "expected a number");
  gateway_err(TUN PUBID "  max_header_fields: []\n", "8:22: public.max_header_fields",
              "expected a number, got a list");
  gateway_err(TUN PUBID "  header_timeout: 0s\n", "8:19: public.header_timeout",
              "value out of range: 0s is not between 1ms and 1h");
  gateway_err(TUN PUBID "  idle_timeout: 10\n", "8:17: public.idle_timeout", "missing unit");
  gateway_err(TUN PUBID "  max_header_size: 64MB\n", "8:20: public.max_header_size", "bad size");
  gateway_err(TUN PUBID "  client_ca: files/none.pem\n", "8:14: public.client_ca", "no such file");
  gateway_err("routes: []\n", "1:1: routes", "this looks like an agent configuration");
  gateway_err(TUN PUBID "  listen: 0.0.0.0:1\n", "8:3: public.listen", "duplicate key (first at 6:3)");
  gateway_err(TUN PUBID "groups:\n  - name: g\n    agent: [a]\n", "10:5: groups[0].agent",
              "did you mean 'agents'?");
}

/* tunnel.crl / public.crl, the revocation keys, public.tls. */
#define TUN_CRL(extra)                                                                             \
  "tunnel:\n"                                                                                      \
  "  listen: 0.0.0.0:8443\n"                                                                       \
  "  identity: {cert: files/agent.pem, key: files/agent.key}\n"                                    \
  "  client_ca: files/ca.pem\n" extra
#define REST_OF_GW                                                                                 \
  "public:\n  listen: 0.0.0.0:443\n" PUBID GROUPS "services:\n  - host: a.example\n    group: acme\n"

static int gateway_ok(const char *yaml, cr_conf_gateway_t *g) {
  char err[1024] = "";
  int rc = cr_conf_gateway_load_mem(inline_name, yaml, strlen(yaml), g, err, sizeof(err));
  if (rc != 0)
    print_error("unexpected error: %s\n", err);
  return rc;
}

static void test_gateway_revocation_and_tls(void **state) {
  cr_conf_gateway_t g;
  (void)state;
  /* Defaults: nothing given. */
  assert_int_equal(gateway_ok(TUN_CRL("") REST_OF_GW, &g), 0);
  assert_null(g.tunnel.crl.path);
  assert_int_equal(g.tunnel.revocation_set, 0);
  assert_int_equal(g.tunnel.revocation, CR_REVOCATION_OFF);
  assert_int_equal(g.public_.revocation_set, 0);
  assert_null(g.public_.tls_ciphers);
  assert_int_equal(g.public_.tls_min_version, 12);
  cr_conf_gateway_free(&g);
  /* A crl makes hard the default; its position is where the revocation came from. */
  assert_int_equal(gateway_ok(TUN_CRL("  crl: files/ca.pem\n") REST_OF_GW, &g), 0);
  assert_non_null(g.tunnel.crl.path);
  assert_non_null(strstr(g.tunnel.crl.path, "files/ca.pem"));
  assert_int_equal(g.tunnel.crl.pos.line, 5);
  assert_int_equal(g.tunnel.revocation_set, 0);
  assert_int_equal(g.tunnel.revocation, CR_REVOCATION_HARD);
  cr_conf_gateway_free(&g);
  assert_int_equal(gateway_ok(TUN_CRL("  crl: files/ca.pem\n  revocation: soft\n") REST_OF_GW, &g), 0);
  assert_int_equal(g.tunnel.revocation_set, 1);
  assert_int_equal(g.tunnel.revocation, CR_REVOCATION_SOFT);
  assert_int_equal(g.tunnel.revocation_pos.line, 6);
  cr_conf_gateway_free(&g);
  assert_int_equal(gateway_ok(TUN_CRL("  revocation: off\n") REST_OF_GW, &g), 0);
  assert_int_equal(g.tunnel.revocation_set, 1);
  assert_int_equal(g.tunnel.revocation, CR_REVOCATION_OFF);
  cr_conf_gateway_free(&g);
  /* The public side, with client_ca; and public.tls. */
  assert_int_equal(gateway_ok(TUN "  identity: {cert: files/agent.pem, key: files/agent.key}\n"
                                  "  client_ca: files/ca.pem\n  crl: files/ca.pem\n"
                                  "  tls: {ciphers: 'ECDHE+AESGCM:ECDHE+AES', min_version: TLSv1.3}\n" GROUPS
                                  "services:\n  - host: a.example\n    group: acme\n",
                              &g),
                   0);
  assert_int_equal(g.public_.revocation, CR_REVOCATION_HARD);
  assert_string_equal(g.public_.tls_ciphers, "ECDHE+AESGCM:ECDHE+AES");
  assert_int_equal(g.public_.tls_ciphers_pos.line, 10);
  assert_int_equal(g.public_.tls_min_version, 13);
  cr_conf_gateway_free(&g);

  gateway_err(TUN_CRL("  crl: files/none.pem\n"), "5:8: tunnel.crl", "no such file");
  gateway_err(TUN_CRL("  crl: files\n"), "5:8: tunnel.crl", "is a directory, expected a file");
  gateway_err(TUN_CRL("  revocation: strict\n"), "5:15: tunnel.revocation", "'strict' is not one of: off, soft, hard");
  gateway_err(TUN_CRL("  crls: files/ca.pem\n"), "5:3: tunnel.crls", "did you mean 'crl'?");
  gateway_err(TUN PUBID "  crl: files/ca.pem\n" GROUPS, "8:8: public.crl",
              "checks client certificates, but public.client_ca is not set");
  gateway_err(TUN PUBID "  revocation: hard\n" GROUPS, "8:15: public.revocation",
              "checks client certificates, but public.client_ca is not set");
  gateway_err(TUN PUBID "  tls: {min_version: TLSv1.1}\n", "8:22: public.tls.min_version",
              "'TLSv1.1' is not one of: TLSv1.2, TLSv1.3");
  gateway_err(TUN PUBID "  tls: {ciphers: ''}\n", "8:18: public.tls.ciphers", "");
  gateway_err(TUN PUBID "  tls: {ciphers: 'AES128;rm'}\n", "8:18: public.tls.ciphers",
              "'AES128;rm' is not an OpenSSL cipher list (character 7)");
  gateway_err(TUN PUBID "  tls: {cipher: x}\n", "8:9: public.tls.cipher", "did you mean 'ciphers'?");
  gateway_err(TUN PUBID "  tls: TLSv1.3\n", "8:8: public.tls", "expected a mapping");
}

/* ---------------------------------------------------------------- files and roles */

static void test_load_file_errors(void **state) {
  char path[PATH_MAX + 64], err[1024];
  cr_conf_agent_t a;
  cr_conf_gateway_t g;

  data_path(path, sizeof(path), "syntax-error.yaml");
  assert_int_equal(cr_conf_agent_load(path, &a, err, sizeof(err)), CR_ECONFIG);
  check_err(err, path, "3:19: (syntax)", "mapping values are not allowed", "syntax file");
  data_path(path, sizeof(path), "does-not-exist.yaml");
  assert_int_equal(cr_conf_gateway_load(path, &g, err, sizeof(err)), CR_ECONFIG);
  check_err(err, path, "1:1: (root)", "cannot read the file: No such file or directory", "no file");
  /* err may be NULL: the code still says what happened. */
  assert_int_equal(cr_conf_gateway_load(path, &g, NULL, 0), CR_ECONFIG);
}

static void test_detect_role(void **state) {
  char path[PATH_MAX + 64], err[1024];
  const char *role;

  data_path(path, sizeof(path), "agent-min.yaml");
  role = cr_conf_detect_role(path, err, sizeof(err));
  assert_non_null(role);
  assert_string_equal(role, "agent");
  data_path(path, sizeof(path), "gateway-full.yaml");
  role = cr_conf_detect_role(path, err, sizeof(err));
  assert_non_null(role);
  assert_string_equal(role, "gateway");
  data_path(path, sizeof(path), "no-role.yaml");
  assert_null(cr_conf_detect_role(path, err, sizeof(err)));
  check_err(err, path, "1:1: (root)", "cannot tell the role", "no role");
  data_path(path, sizeof(path), "syntax-error.yaml");
  assert_null(cr_conf_detect_role(path, err, sizeof(err)));
  check_err(err, path, "3:19: (syntax)", "mapping values", "detect syntax");
  data_path(path, sizeof(path), "does-not-exist.yaml");
  assert_null(cr_conf_detect_role(path, err, sizeof(err)));
  check_err(err, path, "1:1: (root)", "No such file", "detect missing");
}

static void test_detect_role_partial(void **state) {
  char tmpl[] = "/tmp/ccrelay-role-XXXXXX", err[1024];
  char *dir = mkdtemp(tmpl), *p;
  const char *role;

  assert_non_null(dir);
  /* Without routes/services, the other sections still tell (so the loader reports the gap). */
  p = write_file(dir, "a.yaml", "gateway: {address: 'g:1'}\n");
  role = cr_conf_detect_role(p, err, sizeof(err));
  assert_non_null(role);
  assert_string_equal(role, "agent");
  unlink(p);
  free(p);
  p = write_file(dir, "g.yaml", "tunnel: {}\n");
  role = cr_conf_detect_role(p, err, sizeof(err));
  assert_non_null(role);
  assert_string_equal(role, "gateway");
  unlink(p);
  free(p);
  p = write_file(dir, "b.yaml", "routes: []\nservices: []\n");
  assert_null(cr_conf_detect_role(p, err, sizeof(err)));
  check_err(err, p, "1:1: (root)", "a file configures one role", "both");
  unlink(p);
  free(p);
  p = write_file(dir, "l.yaml", "- routes\n");
  assert_null(cr_conf_detect_role(p, err, sizeof(err)));
  check_err(err, p, "1:1: (root)", "expected a mapping", "list");
  unlink(p);
  free(p);
  rmdir(dir);
}

static void test_small_err_buffer(void **state) {
  cr_conf_agent_t a;
  char err[16];
  const char *yaml = "gateway: [1]\n";

  memset(err, 'x', sizeof(err));
  assert_int_equal(cr_conf_agent_load_mem("n.yaml", yaml, strlen(yaml), &a, err, sizeof(err)),
                   CR_ECONFIG);
  assert_int_equal(strlen(err), sizeof(err) - 1);
  assert_int_equal(strncmp(err, "n.yaml:1:10: ga", 15), 0);
}

/* limits.send_timeout / min_send_rate (agent) and public.send_timeout / min_send_rate (gateway). */
static void test_send_limits(void **state) {
  static const char agent_yaml[] = GW ROUTE UP "limits:\n  send_timeout: 45s\n  min_send_rate: 2KiB\n";
  static const char agent_off[] = GW ROUTE UP "limits: {send_timeout: 0s}\n";
  static const char gw_yaml[] = TUN PUBID "  send_timeout: 2500ms\n  min_send_rate: 512\n" GROUPS
                                          "services:\n  - host: a.example\n    group: acme\n";
  cr_conf_agent_t a;
  cr_conf_gateway_t g;
  char err[1024] = "";

  assert_int_equal(cr_conf_agent_load_mem(inline_name, agent_yaml, strlen(agent_yaml), &a, err, sizeof(err)), 0);
  assert_true(a.send_timeout_ms == 45000);
  assert_true(a.min_send_rate == 2048);
  cr_conf_agent_free(&a);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, agent_off, strlen(agent_off), &a, err, sizeof(err)), 0);
  assert_true(a.send_timeout_ms == 0);
  assert_true(a.min_send_rate == 0);
  cr_conf_agent_free(&a);
  if (cr_conf_gateway_load_mem(inline_name, gw_yaml, strlen(gw_yaml), &g, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_true(g.public_.send_timeout_ms == 2500);
  assert_true(g.public_.min_send_rate == 512);
  cr_conf_gateway_free(&g);

  agent_err(GW ROUTE UP "limits:\n  send_timeout: 2h\n", "16:17: limits.send_timeout",
            "value out of range: 2h is not between 0ms and 1h");
  agent_err(GW ROUTE UP "limits:\n  send_timeout: 30\n", "16:17: limits.send_timeout", "missing unit");
  agent_err(GW ROUTE UP "limits:\n  min_send_rate: 1KB\n", "16:18: limits.min_send_rate", "bad size");
  agent_err(GW ROUTE UP "limits:\n  min_send_rate: 2GiB\n", "16:18: limits.min_send_rate",
            "value out of range");
  agent_err(GW ROUTE UP "limits:\n  send_timout: 5s\n", "16:3: limits.send_timout",
            "did you mean 'send_timeout'?");
  gateway_err(TUN PUBID "  send_timeout: -1s\n", "8:17: public.send_timeout", "bad duration");
  gateway_err(TUN PUBID "  send_timeout: 61m\n", "8:17: public.send_timeout", "value out of range");
  gateway_err(TUN PUBID "  min_send_rate: fast\n", "8:18: public.min_send_rate", "bad size");
  gateway_err(TUN PUBID "  min_send_rate: 4GiB\n", "8:18: public.min_send_rate", "value out of range");
}


/* Lines 1-13: a valid gateway without replicas; what follows starts at line 14. */
#define GW_OK TUN PUBID GROUPS "services:\n  - host: a.example\n    group: acme\n"

static void test_replicas(void **state) {
  static const char stat[] = GW_OK "replicas:\n  id: gw-2\n  set: [gw-1, gw-2, gw-3]\nprobe: {listen: 127.0.0.1:9090}\n";
  static const char dns[] = GW_OK "replicas:\n  id: \"${CR_TEST_POD_IP}:8443\"\n  dns: gw-headless.ns.svc\n"
                                  "  refresh: 5s\n";
  static const char alone[] = GW_OK;
  static const char agent_list[] = "gateway:\n  address: [lb1.example:8443, \"[::1]:9443\"]\n  ca: files/ca.pem\n"
                                   "  identity: {cert: files/agent.pem, key: files/agent.key}\n" ROUTE UP;
  cr_conf_gateway_t g;
  cr_conf_agent_t a;
  char err[1024] = "", host[256];

  if (cr_conf_gateway_load_mem(inline_name, stat, strlen(stat), &g, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_string_equal(g.replicas.id, "gw-2");
  assert_int_equal(g.replicas.nset, 3);
  assert_string_equal(g.replicas.set[2], "gw-3");
  assert_null(g.replicas.dns);
  assert_int_equal(g.replicas.id_pos.line, 15);
  assert_string_equal(g.probe_listen.host, "127.0.0.1");
  assert_int_equal(g.probe_listen.port, 9090);
  cr_conf_gateway_free(&g);

  setenv("CR_TEST_POD_IP", "10.1.2.3", 1);
  if (cr_conf_gateway_load_mem(inline_name, dns, strlen(dns), &g, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_string_equal(g.replicas.id, "10.1.2.3:8443");
  assert_string_equal(g.replicas.dns, "gw-headless.ns.svc");
  assert_true(g.replicas.refresh_ms == 5000);
  assert_int_equal(g.replicas.nset, 0);
  cr_conf_gateway_free(&g);

  /* Absent: a set of one, the host name. */
  assert_int_equal(cr_conf_gateway_load_mem(inline_name, alone, strlen(alone), &g, err, sizeof(err)), 0);
  assert_int_equal(gethostname(host, sizeof host), 0);
  if (cr_conf_replica_id_ok(host, strlen(host)))
    assert_string_equal(g.replicas.id, host);
  assert_int_equal(g.replicas.nset, 0);
  assert_null(g.probe_listen.host);
  cr_conf_gateway_free(&g);

  if (cr_conf_agent_load_mem(inline_name, agent_list, strlen(agent_list), &a, err, sizeof(err)) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(a.gateway.naddrs, 2);
  assert_string_equal(a.gateway.addrs[0].host, "lb1.example");
  assert_int_equal(a.gateway.addrs[1].port, 9443);
  assert_string_equal(a.gateway.addrs[1].host, "::1");
  assert_string_equal(a.gateway.host, "lb1.example");
  assert_null(a.gateway.server_name); /* each entry's own host */
  cr_conf_agent_free(&a);

  gateway_err(GW_OK "replicas:\n  id: gw-1\n  set: [gw-1, gw-2, gw-1]\n", "16:21: replicas.set[2]",
              "duplicate replica id 'gw-1' (replicas.set[0] at 16:9 has it)");
  gateway_err(GW_OK "replicas:\n  id: gw-9\n  set: [gw-1, gw-2]\n", "15:7: replicas.id",
              "this replica's id 'gw-9' is not in replicas.set");
  gateway_err(GW_OK "replicas:\n  set: [gw-1]\n  dns: gw.example\n", "16:8: replicas.dns",
              "give replicas.set or replicas.dns, not both");
  gateway_err(GW_OK "replicas:\n  refresh: 5s\n", "15:3: replicas", "missing set");
  gateway_err(GW_OK "replicas:\n  dns: gw.example\n", "15:3: replicas.id", "this replica's id must be given");
  gateway_err(GW_OK "replicas:\n  id: gw-1:8443\n  dns: gw.example\n", "15:7: replicas.id",
              "the host is not an IP address");
  gateway_err(GW_OK "replicas:\n  id: 10.0.0.1:9999\n  dns: gw.example\n", "15:7: replicas.id",
              "the port is not tunnel.listen's");
  unsetenv("CR_TEST_UNSET_VAR");
  gateway_err(GW_OK "replicas:\n  id: \"${CR_TEST_UNSET_VAR}:8443\"\n  dns: gw.example\n", "15:7: replicas.id",
              "environment variable CR_TEST_UNSET_VAR is not set");
  gateway_err(GW_OK "replicas:\n  id: gw 1\n  set: [gw 1]\n", "15:7: replicas.id", "bad replica id 'gw 1'");
  gateway_err(GW_OK "replicas:\n  id: gw-1\n  set: []\n", "16:8: replicas.set", "must not be empty");
  gateway_err(GW_OK "replicas:\n  id: gw-1\n  set: [gw-1]\n  refresh: 10ms\n", "17:12: replicas.refresh",
              "value out of range");
  gateway_err(GW_OK "probe:\n  listen: localhost:9090\n", "15:11: probe.listen", "must be an IP address");
  gateway_err(GW_OK "probe:\n  port: 9090\n", "15:3: probe.port", "unknown key");
  agent_err("gateway:\n  address: [a.example:1, b.example:2, a.example:1]\n", "2:39: gateway.address[2]",
            "duplicate address (gateway.address[0] at 2:13 has it)");
  agent_err("gateway:\n  address: []\n", "2:12: gateway.address", "a list of 1 to 16 host:port entries");
  agent_err("gateway:\n  address: [a.example]\n", "2:13: gateway.address[0]", "bad address 'a.example'");
}

static int reset_bad(void **state) {
  nbad = 0;
  return 0;
}

static int no_bad_case(void **state) { return nbad == 0 ? 0 : -1; }


/* services[].callers, services[].limits, public.trusted_proxies, routes[].limits. */
#define SVC "services:\n  - host: a.example\n    group: acme\n" /* lines 11-13 after TUN PUBID GROUPS */

static void test_callers_and_limits(void **state) {
  cr_conf_gateway_t g;
  cr_conf_agent_t a;
  char err[1024] = "", want[PATH_MAX + 64];
  const char *yaml = TUN PUBID "  trusted_proxies: [10.0.0.0/8, '2001:db8::/32', 192.0.2.7]\n" GROUPS SVC
                     "    callers:\n"
                     "      client_ca: files/ca.pem\n"
                     "      subjects: ['cn:CMS Admin', 'dns:*.corp.example', 'DNS:host.example', 'uri:spiffe://corp/*',"
                     " 'uri:urn:x://a']\n"
                     "      token_files: [files/callers.tokens, files/admin.token]\n"
                     "      sources: [127.0.0.2, '::1', 0.0.0.0/0]\n"
                     "    limits: { max_body: 64KiB, max_concurrent: 3 }\n"
                     "  - host: b.example\n    group: acme\n";

  assert_int_equal(gateway_ok(yaml, &g), 0);
  assert_int_equal(g.public_.ntrusted_proxies, 3);
  assert_int_equal(g.public_.trusted_proxies[0].family, 4);
  assert_int_equal(g.public_.trusted_proxies[0].prefix, 8);
  assert_int_equal(g.public_.trusted_proxies[1].family, 6);
  assert_int_equal(g.public_.trusted_proxies[1].prefix, 32);
  assert_int_equal(g.public_.trusted_proxies[2].prefix, 32);
  assert_true(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "10.200.1.1"));
  assert_true(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "::ffff:10.1.2.3"));
  assert_true(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "2001:db8:ffff::1"));
  assert_true(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "192.0.2.7"));
  assert_false(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "192.0.2.8"));
  assert_false(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "11.0.0.1"));
  assert_false(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "2001:db9::1"));
  assert_false(cr_conf_cidr_match(g.public_.trusted_proxies, 3, "not-an-ip"));
  {
    const cr_conf_callers_t *cl = &g.services[0].callers;
    assert_true(cl->present);
    data_path(want, sizeof want, "files/ca.pem");
    assert_string_equal(cl->client_ca.path, want);
    assert_int_equal(cl->nsubjects, 5);
    assert_int_equal(cl->subjects[0].kind, CR_SUBJECT_CN);
    assert_string_equal(cl->subjects[0].value, "CMS Admin");
    assert_int_equal(cl->subjects[1].kind, CR_SUBJECT_DNS);
    assert_string_equal(cl->subjects[1].value, ".corp.example");
    assert_true(cl->subjects[1].wildcard);
    assert_int_equal(cl->subjects[2].kind, CR_SUBJECT_DNS);
    assert_false(cl->subjects[2].wildcard);
    assert_int_equal(cl->subjects[3].kind, CR_SUBJECT_URI);
    assert_string_equal(cl->subjects[3].value, "spiffe://corp/");
    assert_true(cl->subjects[3].wildcard);
    assert_string_equal(cl->subjects[4].value, "urn:x://a");
    assert_int_equal(cl->ntokens, 3);
    assert_string_equal(cl->tokens[0], "0123456789abcdef-current");
    assert_string_equal(cl->tokens[1], "fedcba9876543210-next"); /* CRLF removed */
    assert_string_equal(cl->tokens[2], "0123456789abcdef-token");
    assert_int_equal(cl->nsources, 3);
    assert_true(cr_conf_cidr_match(cl->sources, 1, "127.0.0.2"));
    assert_false(cr_conf_cidr_match(cl->sources, 1, "127.0.0.1"));
    assert_true(cr_conf_cidr_match(cl->sources + 1, 1, "::1"));
    assert_true(cr_conf_cidr_match(cl->sources + 2, 1, "203.0.113.5"));
    assert_true(g.services[0].max_body == 64 * 1024);
    assert_int_equal(g.services[0].max_concurrent, 3);
  }
  assert_false(g.services[1].callers.present);
  assert_true(g.services[1].max_body == CR_CONF_MAX_BODY_DEFAULT);
  assert_int_equal(g.services[1].max_concurrent, CR_CONF_MAX_CONCURRENT_DEFAULT);
  cr_conf_gateway_free(&g);

  /* Defaults: no trusted proxies; a service without limits gets the protective ones. */
  yaml = TUN PUBID GROUPS SVC;
  assert_int_equal(gateway_ok(yaml, &g), 0);
  assert_int_equal(g.public_.ntrusted_proxies, 0);
  assert_true(g.services[0].max_body == 10 * 1024 * 1024);
  assert_int_equal(g.services[0].max_concurrent, 1000);
  cr_conf_gateway_free(&g);

  /* Subjects with public.client_ca instead of the service's own. */
  yaml = TUN PUBID "  client_ca: files/ca.pem\n" GROUPS SVC "    callers: { subjects: ['cn:x'] }\n";
  assert_int_equal(gateway_ok(yaml, &g), 0);
  cr_conf_gateway_free(&g);

  /* Agent: routes[].limits.max_body, default and 0 (off). */
  yaml = GW ROUTE UP "    limits: { max_body: 1MiB }\n  - name: r2\n" UP "  - name: r3\n" UP "    limits: { max_body: 0 }\n";
  if (cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_true(a.routes[0].max_body == 1024 * 1024);
  assert_true(a.routes[1].max_body == CR_CONF_MAX_BODY_DEFAULT);
  assert_true(a.routes[2].max_body == 0);
  cr_conf_agent_free(&a);
}

static void test_callers_errors(void **state) {
#define C TUN PUBID GROUPS SVC "    callers:\n" /* rules from line 15 */
  gateway_err(C "      sources: [10.0.0.1/8]\n", "15:17: services[0].callers.sources[0]",
              "bad address range '10.0.0.1/8': host bits are set after the prefix length");
  gateway_err(C "      sources: [10.0.0.0/33]\n", "15:17: services[0].callers.sources[0]",
              "an IPv4 prefix length is at most 32");
  gateway_err(C "      sources: ['::1/129']\n", "15:17: services[0].callers.sources[0]",
              "an IPv6 prefix length is at most 128");
  gateway_err(C "      sources: [10.0.0.0/x]\n", "15:17: services[0].callers.sources[0]",
              "the prefix length must be a number");
  gateway_err(C "      sources: [localhost]\n", "15:17: services[0].callers.sources[0]", "not an IPv4 or IPv6 address");
  gateway_err(C "      sources: [10.0.0.0/8, 300.1.1.1]\n", "15:29: services[0].callers.sources[1]",
              "bad address range '300.1.1.1'");
  gateway_err(C "      token_files: [files/none.tokens]\n", "15:21: services[0].callers.token_files[0]", "no such file");
  gateway_err(C "      token_files: [files/short.tokens]\n", "15:21: services[0].callers.token_files[0]",
              "a token is 5 characters long, at least 16 are needed");
  gateway_err(C "      token_files: [files/empty.pass]\n", "15:21: services[0].callers.token_files[0]", "holds no token");
  gateway_err(C "      token_files: [files/space.token]\n", "15:21: services[0].callers.token_files[0]",
              "a token contains a space or control character");
  gateway_err(C "      token_files: files/admin.token\n", "15:20: services[0].callers.token_files", "expected a list");
  gateway_err(C "      token: [files/admin.token]\n", "15:7: services[0].callers.token", "unknown key");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['dns:a.*.example']\n",
              "16:18: services[0].callers.subjects[0]", "bad wildcard 'a.*.example'");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['dns:*.com']\n", "16:18: services[0].callers.subjects[0]",
              "at least two labels must follow '*.'");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['dns:x*.a.example']\n",
              "16:18: services[0].callers.subjects[0]", "bad wildcard");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['uri:spiffe://*/x']\n",
              "16:18: services[0].callers.subjects[0]", "'*' may only end a URI prefix");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['uri:*']\n", "16:18: services[0].callers.subjects[0]",
              "is not a URI with a scheme and an authority");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['cn:*.x']\n", "16:18: services[0].callers.subjects[0]",
              "'*' is no wildcard there");
  gateway_err(C "      client_ca: files/ca.pem\n      subjects: ['CMS Admin']\n", "16:18: services[0].callers.subjects[0]",
              "names no kind: write cn:NAME, dns:NAME or uri:URI");
  gateway_err(C "      subjects: ['cn:x']\n", "15:17: services[0].callers.subjects",
              "no client certificate is asked for: set services[0].callers.client_ca or public.client_ca");
  gateway_err(C "      client_ca: files/nope.pem\n", "15:18: services[0].callers.client_ca", "no such file");
  gateway_err(TUN PUBID GROUPS SVC "    limits: { max_concurrent: 0 }\n", "14:31: services[0].limits.max_concurrent",
              "value out of range");
  gateway_err(TUN PUBID GROUPS SVC "    limits: { max_bdy: 1 }\n", "14:15: services[0].limits.max_bdy",
              "did you mean 'max_body'?");
  gateway_err(TUN PUBID GROUPS SVC "    limits: { max_body: 1MB }\n", "14:25: services[0].limits.max_body", "bad size");
  gateway_err(TUN PUBID "  trusted_proxies: [1.2.3.4/24]\n" GROUPS SVC, "8:21: public.trusted_proxies[0]",
              "host bits are set");
  agent_err(GW ROUTE UP "    limits: { max_body: -1 }\n", "15:25: routes[0].limits.max_body", "bad size");
  agent_err(GW ROUTE UP "    limits: { max_size: 1 }\n", "15:15: routes[0].limits.max_size", "unknown key");
#undef C
}

/* ---------------------------------------------------------------- passthrough */

static void test_passthrough(void **state) {
  cr_conf_gateway_t g;
  cr_conf_agent_t a;
  char err[1024] = "";
  const char *yaml = TUN PUBID GROUPS SVC "  - host: cms.example\n    mode: passthrough\n    group: acme\n"
                     "    callers: { sources: [10.0.0.0/8] }\n  - host: b.example\n    mode: http\n    group: acme\n";
  (void)state;
  assert_int_equal(gateway_ok(yaml, &g), 0);
  assert_false(g.services[0].passthrough);
  assert_true(g.services[1].passthrough);
  assert_int_equal(g.services[1].callers.nsources, 1);
  assert_false(g.services[2].passthrough);
  cr_conf_gateway_free(&g);

  yaml = GW ROUTE UP "tcp_routes:\n  - name: cms-tls\n    host: cms.example\n    connect: 10.1.2.3:443\n"
                     "  - name: other\n    host: other.example\n    connect: '[::1]:8443'\n"
                     "    connect_timeout: 2s\n    idle_timeout: 10m\n";
  if (cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(a.ntcp_routes, 2);
  assert_string_equal(a.tcp_routes[0].name, "cms-tls");
  assert_string_equal(a.tcp_routes[0].host, "cms.example");
  assert_string_equal(a.tcp_routes[0].connect_host, "10.1.2.3");
  assert_int_equal(a.tcp_routes[0].connect_port, 443);
  assert_true(a.tcp_routes[0].connect_timeout_ms == 5000);
  assert_true(a.tcp_routes[0].idle_timeout_ms == 5 * 60 * 1000);
  assert_string_equal(a.tcp_routes[1].connect_host, "::1");
  assert_int_equal(a.tcp_routes[1].connect_port, 8443);
  assert_true(a.tcp_routes[1].connect_timeout_ms == 2000);
  assert_true(a.tcp_routes[1].idle_timeout_ms == 10 * 60 * 1000);
  cr_conf_agent_free(&a);
}

static void test_passthrough_errors(void **state) {
#define PT TUN PUBID GROUPS SVC "  - host: cms.example\n    mode: passthrough\n    group: acme\n" /* lines 14-16 */
  (void)state;
  gateway_err(TUN PUBID GROUPS SVC "    mode: tls\n", "14:11: services[0].mode", "passthrough");
  gateway_err(PT "    path_prefix: /x\n", "17:18: services[1].path_prefix", "routed by its TLS server name only");
  gateway_err(PT "    limits: { max_body: 1KiB }\n", "17:13: services[1].limits", "routed by its TLS server name only");
  gateway_err(PT "    callers: { token_files: [files/admin.token] }\n", "17:14: services[1].callers",
              "of callers only sources can be checked");
  gateway_err(PT "    callers: { client_ca: files/ca.pem }\n", "17:14: services[1].callers",
              "of callers only sources can be checked");
#undef PT
#define TR GW ROUTE UP "tcp_routes:\n  - name: t1\n    host: cms.example\n" /* lines 15-17 */
  agent_err(TR, "16:5: tcp_routes[0].connect", "missing required key");
  agent_err(TR "    connect: cms.corp\n", "18:14: tcp_routes[0].connect", "bad address");
  agent_err(TR "    connect: cms.corp:0\n", "18:14: tcp_routes[0].connect", "bad address");
  agent_err(TR "    connect: cms.corp:443\n    idle_timeout: 0s\n", "19:19: tcp_routes[0].idle_timeout", "out of range");
  agent_err(TR "    connect: cms.corp:443\n    url: x\n", "19:5: tcp_routes[0].url", "unknown key");
  agent_err(TR "    connect: a:1\n  - name: t2\n    host: CMS.example\n    connect: b:2\n", "19:5: tcp_routes[1]",
            "duplicate host 'CMS.example'");
  agent_err(TR "    connect: a:1\n  - name: r1\n    host: x.example\n    connect: b:2\n", "19:11: tcp_routes[1].name",
            "duplicate route name 'r1'");
#undef TR
}

#define T(f) cmocka_unit_test_setup_teardown(f, reset_bad, no_bad_case)

/* ---------------------------------------------------------------- gateway.proxy */

/* Lines 7-: a proxy mapping under GW (line 7 is "  proxy:"). */
#define PROXY "  proxy:\n"

static void unset_proxy_env(void) {
  unsetenv("https_proxy");
  unsetenv("HTTPS_PROXY");
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
}

static void test_proxy(void **state) {
  cr_conf_agent_t a;
  char err[1024];
  const char *yaml = GW PROXY "    url: http://proxy.corp:3128/\n    username: svc-ccrelay\n"
                     "    password_file: files/conn.pass\n    connect_timeout: 3s\n" ROUTE UP;
  const char *v6 = GW PROXY "    url: http://[fd00::3]:8080\n    username: u\n"
                   "    password_env: CCRELAY_TEST_PROXY_PW\n" ROUTE UP;
  const char *none = GW ROUTE UP;

  unset_proxy_env();
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.proxy.host, "proxy.corp");
  assert_int_equal(a.gateway.proxy.port, 3128);
  assert_string_equal(a.gateway.proxy.source, "gateway.proxy.url");
  assert_string_equal(a.gateway.proxy.username, "svc-ccrelay");
  assert_string_equal(a.gateway.proxy.password, "s3cret-from-file");
  assert_int_equal(a.gateway.proxy.password_from_env, 0);
  assert_int_equal(a.gateway.proxy.connect_timeout_ms, 3000);
  assert_int_equal(a.gateway.proxy.pos.line, 8);
  cr_conf_agent_free(&a);

  setenv("CCRELAY_TEST_PROXY_PW", "env-pw", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, v6, strlen(v6), &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.proxy.host, "fd00::3");
  assert_int_equal(a.gateway.proxy.port, 8080);
  assert_string_equal(a.gateway.proxy.password, "env-pw");
  assert_int_equal(a.gateway.proxy.password_from_env, 1);
  assert_int_equal(a.gateway.proxy.connect_timeout_ms, 10000);
  cr_conf_agent_free(&a);
  unsetenv("CCRELAY_TEST_PROXY_PW");

  /* no proxy key: direct, and the environment is not consulted */
  setenv("HTTPS_PROXY", "http://127.0.0.1:3128", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, none, strlen(none), &a, err, sizeof(err)), 0);
  assert_null(a.gateway.proxy.host);
  assert_int_equal(a.gateway.proxy.from_environment, 0);
  cr_conf_agent_free(&a);
  unset_proxy_env();
}

static void test_proxy_errors(void **state) {
  char err[1024];
  cr_conf_agent_t a;
  const char *userinfo = GW PROXY "    url: http://svc:Hunter2@proxy:3128\n" ROUTE UP;

  unset_proxy_env();
  agent_err(GW PROXY "    url: https://proxy.corp:3128\n" ROUTE UP, "8:10: gateway.proxy.url",
            "an https:// proxy is not supported");
  agent_err(GW PROXY "    url: http://proxy.corp\n" ROUTE UP, "8:10: gateway.proxy.url",
            "bad proxy URL 'http://proxy.corp': missing port");
  agent_err(GW PROXY "    url: 'http://proxy.corp:'\n" ROUTE UP, "8:10: gateway.proxy.url", "missing port");
  agent_err(GW PROXY "    url: http://proxy.corp:99999\n" ROUTE UP, "8:10: gateway.proxy.url",
            "port must be between 1 and 65535");
  agent_err(GW PROXY "    url: proxy.corp:3128\n" ROUTE UP, "8:10: gateway.proxy.url", "expected http://host:port");
  agent_err(GW PROXY "    url: socks5://proxy.corp:1080\n" ROUTE UP, "8:10: gateway.proxy.url",
            "only http:// proxies (HTTP CONNECT) are supported");
  agent_err(GW PROXY "    url: http://proxy.corp:3128/pac\n" ROUTE UP, "8:10: gateway.proxy.url",
            "a path, query or fragment is not allowed");
  agent_err(GW PROXY "    url: http://proxy.corp:3128?x\n" ROUTE UP, "8:10: gateway.proxy.url",
            "a path, query or fragment is not allowed");
  agent_err(userinfo, "8:10: gateway.proxy.url", "user information (user:password@) is not allowed");
  /* the URL with its password is not echoed */
  assert_int_equal(cr_conf_agent_load_mem(inline_name, userinfo, strlen(userinfo), &a, err, sizeof(err)),
                   CR_ECONFIG);
  assert_null(strstr(err, "Hunter2"));

  agent_err(GW PROXY "    urll: http://p:1\n" ROUTE UP, "8:5: gateway.proxy.urll", "did you mean 'url'?");
  agent_err(GW "  proxy: {}\n" ROUTE UP, "7:10: gateway.proxy", "needs url (http://host:port), or from_environment");
  agent_err(GW "  proxy: {from_environment: false}\n" ROUTE UP, "7:10: gateway.proxy", "needs url");
  agent_err(GW "  proxy: {url: 'http://p:1', from_environment: true}\n" ROUTE UP,
            "7:48: gateway.proxy.from_environment", "give url or from_environment: true, not both");
  agent_err(GW "  proxy: {url: 'http://p:1', connect_timeout: 0s}\n" ROUTE UP, "7:47: gateway.proxy.connect_timeout",
            "out of range");
  /* credentials */
  agent_err(GW PROXY "    url: http://p:1\n    username: u\n    password_file: files/missing.pass\n" ROUTE UP,
            "10:20: gateway.proxy.password_file", "no such file");
  agent_err(GW PROXY "    url: http://p:1\n    username: u\n    password_file: files\n" ROUTE UP,
            "10:20: gateway.proxy.password_file", "is a directory, expected a file");
  agent_err(GW PROXY "    url: http://p:1\n    username: u\n    password_file: files/conn.pass\n"
                     "    password_env: HOME\n" ROUTE UP,
            "11:19: gateway.proxy.password_env", "give password_file or password_env, not both");
  agent_err(GW PROXY "    url: http://p:1\n    username: u\n    password_env: CCRELAY_TEST_UNSET_PW\n" ROUTE UP,
            "10:19: gateway.proxy.password_env", "environment variable CCRELAY_TEST_UNSET_PW is not set");
  agent_err(GW PROXY "    url: http://p:1\n    username: u\n" ROUTE UP, "9:15: gateway.proxy.username",
            "needs password_file or password_env beside it");
  agent_err(GW PROXY "    url: http://p:1\n    password_file: files/conn.pass\n" ROUTE UP,
            "9:20: gateway.proxy.password_file", "a password needs proxy.username beside it");
  agent_err(GW PROXY "    url: http://p:1\n    username: 'a:b'\n    password_file: files/conn.pass\n" ROUTE UP,
            "9:15: gateway.proxy.username", "must not contain ':'");
}

static void test_proxy_environment(void **state) {
  cr_conf_agent_t a;
  char err[1024];
  /* the gateway is gw.example.com (GW) */
  const char *yaml = GW PROXY "    from_environment: true\n" ROUTE UP;
  const char *creds = GW PROXY "    from_environment: true\n    username: u\n    password_env: CCRELAY_TEST_PROXY_PW\n"
                      ROUTE UP;

  unset_proxy_env();
  /* opted in, nothing set: direct */
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_null(a.gateway.proxy.host);
  assert_int_equal(a.gateway.proxy.from_environment, 1);
  assert_null(a.gateway.proxy.no_proxy_entry);
  cr_conf_agent_free(&a);

  setenv("HTTPS_PROXY", "http://10.1.2.3:3128", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.proxy.host, "10.1.2.3");
  assert_int_equal(a.gateway.proxy.port, 3128);
  assert_string_equal(a.gateway.proxy.source, "HTTPS_PROXY");
  cr_conf_agent_free(&a);

  /* the lower-case spelling first, as curl; no scheme means http */
  setenv("https_proxy", "proxy.lower:8080", 1);
  setenv("CCRELAY_TEST_PROXY_PW", "pw", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, creds, strlen(creds), &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.proxy.host, "proxy.lower");
  assert_int_equal(a.gateway.proxy.port, 8080);
  assert_string_equal(a.gateway.proxy.source, "https_proxy");
  assert_string_equal(a.gateway.proxy.username, "u");
  assert_string_equal(a.gateway.proxy.password, "pw");
  cr_conf_agent_free(&a);
  unsetenv("CCRELAY_TEST_PROXY_PW");

  /* no_proxy covering the gateway: direct, with the entry kept for the log */
  setenv("NO_PROXY", "localhost, .example.com", 1);
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_null(a.gateway.proxy.host);
  assert_string_equal(a.gateway.proxy.no_proxy_entry, ".example.com");
  cr_conf_agent_free(&a);
  setenv("no_proxy", "other.org", 1); /* the lower-case one wins, and it does not cover the gateway */
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), 0);
  assert_string_equal(a.gateway.proxy.host, "proxy.lower");
  cr_conf_agent_free(&a);
  unset_proxy_env();

  /* a bad value is an error at from_environment, naming the variable */
  setenv("HTTPS_PROXY", "https://p:443", 1);
  agent_err(yaml, "8:23: gateway.proxy.from_environment",
            "environment variable HTTPS_PROXY ('https://p:443'): an https:// proxy is not supported");
  setenv("HTTPS_PROXY", "http://p", 1);
  agent_err(yaml, "8:23: gateway.proxy.from_environment", "environment variable HTTPS_PROXY ('http://p'): missing port");
  setenv("HTTPS_PROXY", "http://me:Hunter2@p:3128", 1);
  agent_err(yaml, "8:23: gateway.proxy.from_environment", "environment variable HTTPS_PROXY: user information");
  assert_int_equal(cr_conf_agent_load_mem(inline_name, yaml, strlen(yaml), &a, err, sizeof(err)), CR_ECONFIG);
  assert_null(strstr(err, "Hunter2"));
  unset_proxy_env();
}

static void test_no_proxy_match(void **state) {
  static const struct {
    const char *list, *host;
    int want;
  } cases[] = {
      {"*", "gw.example.com", 1},
      {"example.com", "gw.example.com", 1},
      {"example.com", "example.com", 1},
      {".example.com", "example.com", 1},
      {".example.com", "gw.example.com", 1},
      {"EXAMPLE.com", "gw.Example.COM", 1},
      {"example.com", "gwexample.com", 0},
      {"example.com", "example.com.evil.org", 0},
      {"gw.example.com:8443", "gw.example.com", 1},
      {"example.com.", "gw.example.com", 1},
      {"a.org, b.org ,  gw.example.com ", "gw.example.com", 1},
      {"a.org,,b.org", "gw.example.com", 0},
      {"", "gw.example.com", 0},
      {"*.example.com", "gw.example.com", 0}, /* curl: no wildcards but a lone "*" */
      {"127.0.0.1", "127.0.0.1", 1},
      {"127.0.0.1", "127.0.0.2", 0},
      {"127.0.0.0/8", "127.9.8.7", 1},
      {"10.0.0.0/8", "127.0.0.1", 0},
      {"192.168.1.0/25", "192.168.1.127", 1},
      {"192.168.1.0/25", "192.168.1.128", 0},
      {"::1", "::1", 1},
      {"[::1]", "::1", 1},
      {"fd00::/8", "fd12::5", 1},
      {"fd00::/8", "fe80::1", 0},
      {"127.0.0.1", "localhost", 0},
      {"127.0.0.0/33", "127.0.0.1", 0},
  };
  char matched[64];
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int got = cr_conf_no_proxy_match(cases[i].list, cases[i].host, matched, sizeof matched);
    if (got != cases[i].want) {
      print_error("no_proxy '%s' host '%s': got %d, want %d\n", cases[i].list, cases[i].host, got, cases[i].want);
      nbad++;
    }
  }
  assert_int_equal(cr_conf_no_proxy_match("a.org, .example.com", "gw.example.com", matched, sizeof matched), 1);
  assert_string_equal(matched, ".example.com");
}


#define T(f) cmocka_unit_test_setup_teardown(f, reset_bad, no_bad_case)

/* Pre-authentication caps of both listeners and the agent's dial deadline: defaults, values, ranges. */
static void test_connection_caps(void **state) {
  static const char caps[] = "tunnel:\n"
                             "  listen: 0.0.0.0:8443\n"
                             "  identity: {cert: files/agent.pem, key: files/agent.key}\n"
                             "  client_ca: files/ca.pem\n"
                             "  max_handshakes: 40\n"
                             "  max_per_source: 4\n"
                             "public:\n"
                             "  listen: 0.0.0.0:443\n" PUBID "  max_handshakes: 300\n"
                             "  max_per_source: 20\n" GROUPS SVC;
  static const char agent[] = GW "  dial_timeout: 1500ms\n" ROUTE UP;
  cr_conf_gateway_t g;
  cr_conf_agent_t a;
  char err[1024] = "";
  (void)state;
  if (cr_conf_gateway_load_mem(inline_name, caps, strlen(caps), &g, err, sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(g.tunnel.max_handshakes, 40);
  assert_int_equal(g.tunnel.max_per_source, 4);
  assert_int_equal(g.public_.max_handshakes, 300);
  assert_int_equal(g.public_.max_per_source, 20);
  assert_int_equal(g.public_.max_connections, CR_CONF_PUBLIC_CONNECTIONS_DEFAULT);
  cr_conf_gateway_free(&g);
  if (cr_conf_gateway_load_mem(inline_name, TUN PUBID GROUPS SVC, strlen(TUN PUBID GROUPS SVC), &g, err,
                               sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_int_equal(g.tunnel.max_handshakes, 1000);
  assert_int_equal(g.tunnel.max_per_source, 32);
  assert_int_equal(g.public_.max_handshakes, 1000);
  assert_int_equal(g.public_.max_per_source, 500);
  cr_conf_gateway_free(&g);
  if (cr_conf_agent_load_mem(inline_name, agent, strlen(agent), &a, err, sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_true(a.gateway.dial_timeout_ms == 1500);
  cr_conf_agent_free(&a);
  if (cr_conf_agent_load_mem(inline_name, GW ROUTE UP, strlen(GW ROUTE UP), &a, err, sizeof err) != 0) {
    print_error("%s\n", err);
    fail();
  }
  assert_true(a.gateway.dial_timeout_ms == 3000);
  cr_conf_agent_free(&a);

  gateway_err(TUN PUBID "  max_handshakes: 0\n", "8:19: public.max_handshakes",
              "value out of range: 0 is not between 1 and 1000000");
  gateway_err(TUN PUBID "  max_per_source: 1000001\n", "8:19: public.max_per_source",
              "value out of range: 1000001 is not between 1 and 1000000");
  gateway_err(TUN PUBID "  max_per_source: many\n", "8:19: public.max_per_source", "expected a number");
#define TUNBASE                                                                                    \
  "tunnel:\n  listen: 0.0.0.0:8443\n  identity: {cert: files/agent.pem, key: files/agent.key}\n"      \
  "  client_ca: files/ca.pem\n"
  gateway_err(TUNBASE "  max_handshakes: 0\n", "5:19: tunnel.max_handshakes", "value out of range");
  gateway_err(TUNBASE "  max_per_source: -1\n", "5:19: tunnel.max_per_source", "expected a number");
#undef TUNBASE
  gateway_err("tunnel:\n  listen: 0.0.0.0:8443\n  max_handshake: 5\n", "3:3: tunnel.max_handshake",
              "did you mean 'max_handshakes'?");
  agent_err(GW "  dial_timeout: 0s\n" ROUTE UP, "7:17: gateway.dial_timeout",
            "value out of range: 0s is not between 1ms and 1h");
  agent_err(GW "  dial_timeout: 3\n" ROUTE UP, "7:17: gateway.dial_timeout", "missing unit");
}
#undef SVC


int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_duration),
      T(test_size),
      T(test_agent_full),
      T(test_agent_defaults),
      T(test_gateway_full),
      T(test_gateway_defaults),
      T(test_samples),
      T(test_relative_to_config_dir),
      T(test_tempdir_files),
      T(test_password_file_newlines),
      T(test_password_never_in_errors),
      T(test_agent_errors),
      T(test_route_revocation_override),
      T(test_trust_errors),
      T(test_gateway_admin),
      T(test_yaml_errors),
      T(test_gateway_errors),
      T(test_gateway_revocation_and_tls),
      T(test_load_file_errors),
      T(test_detect_role),
      T(test_detect_role_partial),
      T(test_small_err_buffer),
      T(test_send_limits),
      T(test_replicas),
      T(test_callers_and_limits),
      T(test_callers_errors),
      cmocka_unit_test(test_passthrough),
      T(test_passthrough_errors),
      T(test_proxy),
      T(test_proxy_errors),
      T(test_proxy_environment),
      T(test_no_proxy_match),
      T(test_connection_caps),
  };

  find_data_dir();
  return cmocka_run_group_tests(tests, NULL, NULL);
}

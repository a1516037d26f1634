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

/* A head at the configured field ceiling, plus what the gateway adds (request id, Forwarded) and a
 * margin, still fits the tunnel's per-stream header limit at the other role. */
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
            "bad URL 'http://u': only https:// upstreams are supported");
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

static int reset_bad(void **state) {
  nbad = 0;
  return 0;
}

static int no_bad_case(void **state) { return nbad == 0 ? 0 : -1; }

#define T(f) cmocka_unit_test_setup_teardown(f, reset_bad, no_bad_case)

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
      T(test_load_file_errors),
      T(test_detect_role),
      T(test_detect_role_partial),
      T(test_small_err_buffer),
      T(test_send_limits),
  };

  find_data_dir();
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Route and service matching, and the request-target safety rules the matching relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "ccrelay/route.h"

static void make_req(cr_http_msg_t *m, const char *method, const char *target, const char *host) {
  cr_http_msg_init(m, 0);
  cr_http_msg_set_method(m, method, strlen(method));
  cr_http_msg_set_target(m, target, strlen(target));
  if (host)
    cr_http_msg_add_header(m, "Host", 4, host, strlen(host));
}

static void test_prefix_on_segment_boundary(void **state) {
  (void)state;
  assert_true(cr_route_path_has_prefix("/connector/mdm.cgi", "/connector/mdm.cgi"));
  assert_true(cr_route_path_has_prefix("/connector/mdm.cgi?x=1", "/connector/mdm.cgi"));
  assert_true(cr_route_path_has_prefix("/connector/mdm.cgi/sub", "/connector/mdm.cgi"));
  assert_false(cr_route_path_has_prefix("/connector/mdm.cgix", "/connector/mdm.cgi"));
  assert_true(cr_route_path_has_prefix("/connector/anything", "/connector/"));
  assert_false(cr_route_path_has_prefix("/connectorx", "/connector/"));
  assert_true(cr_route_path_has_prefix("/whatever", "/"));
}

static void test_unsafe_targets_refused(void **state) {
  (void)state;
  assert_null(cr_route_target_unsafe_reason("/connector/mdm.cgi"));
  assert_null(cr_route_target_unsafe_reason("/"));
  assert_null(cr_route_target_unsafe_reason("/a/b/?q=../x"));
  assert_null(cr_route_target_unsafe_reason("/a%20b"));
  assert_non_null(cr_route_target_unsafe_reason("/connector/mdm.cgi/../../admin"));
  assert_non_null(cr_route_target_unsafe_reason("/connector/./mdm.cgi"));
  assert_non_null(cr_route_target_unsafe_reason("/connector/mdm.cgi/.."));
  assert_non_null(cr_route_target_unsafe_reason("//evil"));
  assert_non_null(cr_route_target_unsafe_reason("/a%2e%2e/b"));
  assert_non_null(cr_route_target_unsafe_reason("/a%2Fb"));
  assert_non_null(cr_route_target_unsafe_reason("/a\\b"));
  assert_non_null(cr_route_target_unsafe_reason("/a%zz"));
  assert_non_null(cr_route_target_unsafe_reason("http://host/a"));
  assert_non_null(cr_route_target_unsafe_reason("*"));
}

static void test_host_match_ignores_port_and_case(void **state) {
  cr_http_msg_t m;
  (void)state;
  make_req(&m, "GET", "/", "CMS.Example.com:443");
  assert_true(cr_route_host_matches(&m, "cms.example.com"));
  assert_false(cr_route_host_matches(&m, "cms.example.co"));
  cr_http_msg_free(&m);
  make_req(&m, "GET", "/", "[::1]:8443");
  assert_true(cr_route_host_matches(&m, "::1"));
  assert_true(cr_route_host_matches(&m, "[::1]"));
  cr_http_msg_free(&m);
}

static void test_routes_match_method_path_header(void **state) {
  char *post[] = {"POST"};
  cr_conf_route_t routes[2];
  cr_http_msg_t m;
  (void)state;
  memset(routes, 0, sizeof routes);
  routes[0].name = "cms-json";
  routes[0].match_path_prefix = "/connector/mdm.cgi";
  routes[0].match_methods = post;
  routes[0].nmatch_methods = 1;
  routes[1].name = "pki-soap";
  routes[1].match_path_prefix = "/policyService";
  routes[1].match_header_name = "SOAPAction";
  routes[1].match_header_value = "\"urn:GetProfiles\"";

  make_req(&m, "POST", "/connector/mdm.cgi", "cms.example.com");
  assert_int_equal(cr_route_match(routes, 2, &m), 0);
  cr_http_msg_free(&m);

  make_req(&m, "GET", "/connector/mdm.cgi", "cms.example.com");
  assert_int_equal(cr_route_match(routes, 2, &m), -1);
  cr_http_msg_free(&m);

  make_req(&m, "POST", "/policyService", "pki.example.com");
  assert_int_equal(cr_route_match(routes, 2, &m), -1);
  cr_http_msg_add_header(&m, "soapaction", 10, "\"urn:GetProfiles\"", 17);
  assert_int_equal(cr_route_match(routes, 2, &m), 1);
  cr_http_msg_free(&m);

  /* A prefix that matches only through a dot-segment is no match. */
  make_req(&m, "POST", "/connector/mdm.cgi/../../etc/passwd", "cms.example.com");
  assert_int_equal(cr_route_match(routes, 2, &m), -1);
  cr_http_msg_free(&m);
}

static void add(cr_http_msg_t *m, const char *name, const char *value) {
  assert_int_equal(cr_http_msg_add_header(m, name, strlen(name), value, strlen(value)), 0);
}

/* Which SOAP version a request speaks, and the action it names, whichever way it carries it. */
static void test_soap_version_and_action(void **state) {
  cr_http_msg_t m;
  char a[64];
  (void)state;
  make_req(&m, "POST", "/svc", "h");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_NONE);
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), -1);
  add(&m, "Content-Type", "text/xml; charset=utf-8");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_NONE); /* plain XML is not SOAP */
  add(&m, "SOAPAction", " \"urn:x/GetProfiles\" ");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_11);
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 17);
  assert_string_equal(a, "urn:x/GetProfiles");
  assert_int_equal(cr_http_soap_action(&m, a, 17), -1); /* does not fit */
  cr_http_msg_free(&m);

  make_req(&m, "POST", "/svc", "h");
  add(&m, "SOAPAction", "urn:unquoted");
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 12);
  assert_string_equal(a, "urn:unquoted");
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/svc", "h");
  add(&m, "SOAPAction", "\"\"");
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 0); /* the empty action */
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/svc", "h");
  add(&m, "SOAPAction", "");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_11);
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), -1); /* blank: no intent */
  cr_http_msg_free(&m);

  /* SOAP 1.2: the action parameter, quoted (escapes undone) or a token, any parameter order */
  make_req(&m, "POST", "/svc", "h");
  add(&m, "Content-Type", "Application/SOAP+XML ; charset=utf-8; ACTION=\"urn:a;b\\\"c\"; x=y");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_12);
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 9);
  assert_string_equal(a, "urn:a;b\"c");
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/svc", "h");
  add(&m, "Content-Type", "application/soap+xml;x=\"action=urn:no\";action=say_hello");
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 9);
  assert_string_equal(a, "say_hello");
  cr_http_msg_free(&m);
  /* no action parameter: a SOAPAction header still names one; neither: none */
  make_req(&m, "POST", "/svc", "h");
  add(&m, "Content-Type", "application/soap+xml; charset=utf-8");
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), -1);
  add(&m, "SOAPAction", "\"urn:fallback\"");
  assert_int_equal(cr_http_soap_version(&m), CR_SOAP_12);
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), 12);
  assert_string_equal(a, "urn:fallback");
  cr_http_msg_free(&m);
  /* an unterminated quoted action names none */
  make_req(&m, "POST", "/svc", "h");
  add(&m, "Content-Type", "application/soap+xml; action=\"urn:open");
  assert_int_equal(cr_http_soap_action(&m, a, sizeof a), -1);
  cr_http_msg_free(&m);
}

/* match.soap_action: one route for either carrier of the same action. */
static void test_routes_match_soap_action(void **state) {
  cr_conf_route_t routes[2];
  cr_http_msg_t m;
  (void)state;
  memset(routes, 0, sizeof routes);
  routes[0].name = "hello";
  routes[0].match_soap_action = "urn:svc/say_hello";
  routes[1].name = "rest";
  routes[1].match_path_prefix = "/soap";

  make_req(&m, "POST", "/soap", "h");
  add(&m, "Content-Type", "application/soap+xml; charset=utf-8; action=\"urn:svc/say_hello\"");
  assert_int_equal(cr_route_match(routes, 2, &m), 0);
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/soap", "h");
  add(&m, "Content-Type", "text/xml; charset=utf-8");
  add(&m, "SOAPAction", "\"urn:svc/say_hello\"");
  assert_int_equal(cr_route_match(routes, 2, &m), 0);
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/soap", "h");
  add(&m, "Content-Type", "application/soap+xml; action=\"urn:svc/say_goodbye\"");
  assert_int_equal(cr_route_match(routes, 2, &m), 1);
  cr_http_msg_free(&m);
  make_req(&m, "POST", "/soap", "h"); /* no action at all */
  assert_int_equal(cr_route_match(routes, 2, &m), 1);
  cr_http_msg_free(&m);
}

static void test_services_longest_prefix(void **state) {
  cr_conf_service_t s[3];
  cr_http_msg_t m;
  (void)state;
  memset(s, 0, sizeof s);
  s[0].host = "cms.example.com";
  s[1].host = "cms.example.com";
  s[1].path_prefix = "/connector/";
  s[2].host = "pki.example.com";
  make_req(&m, "POST", "/connector/mdm.cgi", "cms.example.com");
  assert_int_equal(cr_route_service_match(s, 3, &m), 1);
  cr_http_msg_free(&m);
  make_req(&m, "GET", "/other", "cms.example.com");
  assert_int_equal(cr_route_service_match(s, 3, &m), 0);
  cr_http_msg_free(&m);
  make_req(&m, "GET", "/other", "unknown.example.com");
  assert_int_equal(cr_route_service_match(s, 3, &m), -1);
  cr_http_msg_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_prefix_on_segment_boundary),
      cmocka_unit_test(test_unsafe_targets_refused),
      cmocka_unit_test(test_host_match_ignores_port_and_case),
      cmocka_unit_test(test_routes_match_method_path_header),
      cmocka_unit_test(test_services_longest_prefix),
      cmocka_unit_test(test_soap_version_and_action),
      cmocka_unit_test(test_routes_match_soap_action),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

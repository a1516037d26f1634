/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's control channel (relay/agent_ops.c), the trust changes in particular: the store is
 * written on the thread pool and the answer comes from a later loop turn, after the reload; changes
 * run one at a time in order; a caller that goes away before its change began drops it, one that
 * goes away while it is written leaves it applied (and reloaded) but unanswered; bad input is
 * answered at once. The agent is a bare agent_t with no routes (nothing of agent.c is linked). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "../../relay/agent_internal.h"
#include "ccrelay/error.h"
#include "ccrelay/route.h"

typedef struct answer {
  int calls;
  int status;
  char body[2048];
} answer_t;

typedef struct fixture {
  agent_t a;
  cr_conf_agent_t conf;
  char dir[64];
} fixture_t;

static EVP_PKEY *ca_key;
static X509 *ca1, *ca2;

static X509 *make_ca(const char *cn) {
  X509 *x = X509_new();
  X509_NAME *name = X509_get_subject_name(x);
  X509V3_CTX v3;
  X509_EXTENSION *ext;
  static long serial = 7000;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_time_adj_ex(X509_getm_notBefore(x), -1, 0, NULL);
  X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL);
  X509_set_pubkey(x, ca_key);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
  ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(x, ca_key, EVP_sha256());
  return x;
}

static char *pem_of(X509 *x, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *p, *out;
  long n;
  PEM_write_bio_X509(bio, x);
  n = BIO_get_mem_data(bio, &p);
  out = malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  *len = (size_t)n;
  BIO_free(bio);
  return out;
}

static int stored(fixture_t *f, X509 *x) {
  char fp[CR_TRUST_FP_HEX + 1], path[256];
  cr_x509_fingerprint(x, fp);
  snprintf(path, sizeof path, "%s/%s.pem", f->dir, fp);
  return access(path, F_OK) == 0;
}

static void on_answer(void *data, int status, const cr_buf_t *body) {
  answer_t *ans = data;
  ans->calls++;
  ans->status = status;
  snprintf(ans->body, sizeof ans->body, "%.*s", (int)body->len, body->base);
}

/* Sends a control call; returns the pending change (or NULL: answered now, into *now). */
static cr__agent_change_t *control(fixture_t *f, const char *method, const char *path, X509 *cert, answer_t *ans,
                                   answer_t *now) {
  char target[256];
  cr_buf_t out;
  cr__agent_change_t *c;
  size_t len = 0;
  char *body = cert ? pem_of(cert, &len) : NULL;
  int status = 0;
  snprintf(target, sizeof target, "%s%s", CR_CONTROL_PREFIX, path);
  cr_buf_init(&out, 0);
  c = cr__agent_control(&f->a, method, target, body, len, "test", &status, &out, on_answer, ans);
  if (c == NULL && now) {
    now->calls++;
    now->status = status;
    snprintf(now->body, sizeof now->body, "%.*s", (int)out.len, out.base);
  }
  assert_int_equal(ans->calls, 0); /* a late answer never comes during the call */
  cr_buf_free(&out);
  free(body);
  return c;
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  char err[512];
  snprintf(f->dir, sizeof f->dir, "/tmp/ccrelay-ops-XXXXXX");
  if (mkdtemp(f->dir) == NULL)
    return -1;
  chmod(f->dir, 0700);
  f->conf.path = (char *)"agent-test.yaml";
  f->conf.trust_store = f->dir;
  f->conf.remote_trust = 1;
  f->a.conf = &f->conf;
  uv_loop_init(&f->a.loop);
  cr_queue_init(&f->a.trust.changes);
  if (cr_truststore_open(f->dir, 0, &f->a.trust.store, err, sizeof err) < 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  char cmd[128];
  assert_true(cr_queue_empty(&f->a.trust.changes));
  assert_int_equal(uv_loop_close(&f->a.loop), 0);
  cr_truststore_close(f->a.trust.store);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

/* An add answers from a later loop turn, after the file is on disk and the store reloaded. */
static void test_add_then_remove(void **state) {
  fixture_t *f = *state;
  answer_t add = {0}, del = {0};
  char path[128], fp[CR_TRUST_FP_HEX + 1];
  assert_non_null(control(f, "POST", "trust", ca1, &add, NULL));
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(add.calls, 1);
  assert_int_equal(add.status, 200);
  assert_non_null(strstr(add.body, "\"status\":\"added\""));
  assert_true(stored(f, ca1));
  assert_true(f->a.trust.loaded); /* the after-work reload ran */
  assert_true(f->a.trust.generation != 0);

  cr_x509_fingerprint(ca1, fp);
  snprintf(path, sizeof path, "trust/%.12s", fp);
  assert_non_null(control(f, "DELETE", path, NULL, &del, NULL));
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(del.calls, 1);
  assert_int_equal(del.status, 200);
  assert_non_null(strstr(del.body, fp));
  assert_false(stored(f, ca1));
}

/* /metrics of an agent without routes: build info, the store's roots by fingerprint, a reload
 * counted, dial failures by step and reason class; no tunnels family without agent.c's hook. */
static void test_metrics(void **state) {
  fixture_t *f = *state;
  answer_t add = {0};
  cr_buf_t out;
  char fp[CR_TRUST_FP_HEX + 1], line[256];
  assert_non_null(control(f, "POST", "trust", ca1, &add, NULL));
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(add.status, 200);
  cr__agent_count_dial_failure(&f->a, "tls", UV_ETIMEDOUT);
  cr__agent_count_dial_failure(&f->a, "proxy", CR_EPROXY_AUTH);
  cr__agent_count_dial_failure(&f->a, "connect", UV_ECONNREFUSED);
  cr__agent_count_dial_failure(&f->a, "connect", UV_EAI_NONAME);
  cr_buf_init(&out, 0);
  cr__agent_metrics(&f->a, &out);
  cr_buf_append(&out, "", 1);
  assert_non_null(strstr(out.base, "\nccrelay_build_info{version=\"" CCRELAY_VERSION "\",revision=\""));
  cr_x509_fingerprint(ca1, fp);
  snprintf(line, sizeof line, "ccrelay_certificate_not_after_seconds{kind=\"trusted_root\",name=\"%s\",", fp);
  assert_non_null(strstr(out.base, line));
  assert_non_null(strstr(out.base, "\nccrelay_reloads_total{result=\"ok\"} 1\n"));
  assert_non_null(strstr(out.base, "\nccrelay_reloads_total{result=\"failed\"} 0\n"));
  assert_non_null(strstr(out.base, "ccrelay_agent_tunnel_dial_failures_total{step=\"tls\",reason=\"timeout\"} 1\n"));
  assert_non_null(strstr(out.base, "ccrelay_agent_tunnel_dial_failures_total{step=\"proxy\",reason=\"refused\"} 1\n"));
  assert_non_null(strstr(out.base, "ccrelay_agent_tunnel_dial_failures_total{step=\"connect\",reason=\"refused\"} 1\n"));
  assert_non_null(strstr(out.base, "ccrelay_agent_tunnel_dial_failures_total{step=\"connect\",reason=\"other\"} 1\n"));
  assert_null(strstr(out.base, "ccrelay_agent_tunnels_up"));
  assert_null(strstr(out.base, "{route=")); /* no routes, no per-route series */
  cr_buf_free(&out);
}

/* Errors the worker meets come back through the late answer too. */
static void test_remove_unknown(void **state) {
  fixture_t *f = *state;
  answer_t del = {0};
  assert_non_null(control(f, "DELETE", "trust/abcdef0123", NULL, &del, NULL));
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(del.calls, 1);
  assert_int_equal(del.status, 404);
  assert_non_null(strstr(del.body, "not_found"));
}

/* Input that does not parse never reaches the thread pool: answered during the call. */
static void test_bad_input_answered_now(void **state) {
  fixture_t *f = *state;
  answer_t late = {0}, now = {0};
  char target[64];
  cr_buf_t out;
  int status = 0;
  snprintf(target, sizeof target, "%strust", CR_CONTROL_PREFIX);
  cr_buf_init(&out, 0);
  assert_null(cr__agent_control(&f->a, "POST", target, "not a certificate", 17, "test", &status, &out, on_answer,
                                &late));
  assert_int_equal(status, 422);
  cr_buf_free(&out);
  assert_null(control(f, "POST", "trust", NULL, &late, &now)); /* empty body */
  assert_int_equal(now.status, 400);
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(late.calls, 0);
}

/* Changes run one at a time: a second one waits, and a caller gone before it began drops it. */
static void test_cancel_queued(void **state) {
  fixture_t *f = *state;
  answer_t first = {0}, second = {0};
  assert_non_null(control(f, "POST", "trust", ca1, &first, NULL));
  cr__agent_change_t *c = control(f, "POST", "trust", ca2, &second, NULL);
  assert_non_null(c);
  cr__agent_control_cancel(c);
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(first.calls, 1);
  assert_int_equal(first.status, 200);
  assert_int_equal(second.calls, 0);
  assert_true(stored(f, ca1));
  assert_false(stored(f, ca2));
}

/* A caller gone while its change is written: the after-work callback sees it, applies the reload,
 * and answers no one. */
static void test_cancel_while_writing(void **state) {
  fixture_t *f = *state;
  answer_t ans = {0};
  cr__agent_change_t *c = control(f, "POST", "trust", ca2, &ans, NULL);
  assert_non_null(c);
  /* The worker renames the file into place before it syncs the directory: once it is there the
   * change has begun, and cannot be withdrawn any more. */
  for (int i = 0; i < 500 && !stored(f, ca2); i++)
    usleep(10 * 1000);
  assert_true(stored(f, ca2));
  assert_false(f->a.trust.loaded);
  cr__agent_control_cancel(c);
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(ans.calls, 0);
  assert_true(stored(f, ca2));
  assert_true(f->a.trust.loaded); /* reloaded all the same */
}

/* With the agent's trust state stopped (shutting down), the change still completes, unreloaded. */
static void test_after_stop(void **state) {
  fixture_t *f = *state;
  answer_t ans = {0};
  assert_non_null(control(f, "POST", "trust", ca1, &ans, NULL));
  f->a.trust.stopped = 1;
  assert_int_equal(uv_run(&f->a.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(ans.calls, 1);
  assert_int_equal(ans.status, 200);
  assert_false(f->a.trust.loaded);
}

static int group_setup(void **state) {
  (void)state;
  ca_key = EVP_EC_gen("P-256");
  ca1 = make_ca("ops test root one");
  ca2 = make_ca("ops test root two");
  return ca_key && ca1 && ca2 ? 0 : -1;
}

static int group_teardown(void **state) {
  (void)state;
  X509_free(ca1);
  X509_free(ca2);
  EVP_PKEY_free(ca_key);
  return 0;
}


/* The gateway's replica announcement comes from the network: parsed strictly and bounded. */
static void test_announce_parse(void **state) {
  static const struct {
    const char *json;
    const char *why; /* NULL: accepted */
  } cases[] = {
      {"{\"replica\":\"gw-1\",\"instance\":\"00ff\",\"generation\":17,\"set\":[\"gw-1\",\"gw-2\"]}", NULL},
      {" { \"set\" : [ ] , \"generation\" : 0 , \"replica\" : \"10.0.0.1:8443\" } \n", NULL},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\"],\"later\":\"x\",\"n\":3,\"b\":true}", NULL},
      {"{\"replica\":\"[fd00::1]:8443\",\"generation\":1,\"set\":[\"[fd00::1]:8443\"]}", NULL},
      {"", "not the announcement's JSON at byte 0"},
      {"[]", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":1}", "replica, generation and set are required"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\"]} x", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\"],}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\",]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw\\u002d1\",\"generation\":1,\"set\":[]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":01,\"set\":[]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":-1,\"set\":[]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":99999999999999999999999,\"set\":[]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"replica\":\"gw-2\",\"generation\":1,\"set\":[]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[],\"x\":{}}", "not the announcement's JSON"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[[\"gw-1\"]]}", "not the announcement's JSON"},
      {"{\"replica\":\"gw 1\",\"generation\":1,\"set\":[]}", "bad replica id"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\",\"a/b\"]}", "bad replica id in set[1]"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-2\",\"gw-2\"]}", "duplicate replica id 'gw-2'"},
      {"{\"replica\":\"gw-1\",\"generation\":1,\"set\":[\"gw-1\"]", "not the announcement's JSON"},
  };
  cr__agent_announce_t *an = malloc(sizeof *an);
  char why[200], big[CR__AGENT_ANNOUNCE_MAX + 64], id[200];
  size_t off;
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int r = cr__agent_announce_parse(cases[i].json, strlen(cases[i].json), an, why, sizeof why);
    if (cases[i].why == NULL) {
      if (r != 0)
        print_error("case %zu refused: %s\n", i, why);
      assert_int_equal(r, 0);
    } else {
      if (r == 0 || strstr(why, cases[i].why) == NULL)
        print_error("case %zu: got %d '%s', want '%s'\n", i, r, r ? why : "", cases[i].why);
      assert_int_equal(r, -1);
      assert_non_null(strstr(why, cases[i].why));
    }
  }
  assert_int_equal(cr__agent_announce_parse(cases[0].json, strlen(cases[0].json), an, why, sizeof why), 0);
  assert_string_equal(an->replica, "gw-1");
  assert_string_equal(an->instance, "00ff");
  assert_true(an->generation == 17);
  assert_int_equal(an->nset, 2);
  assert_string_equal(an->set[1], "gw-2");

  /* 65 ids: more than a set may hold. */
  off = (size_t)snprintf(big, sizeof big, "{\"replica\":\"g0\",\"generation\":1,\"set\":[");
  for (int i = 0; i < CR_CONF_REPLICAS_MAX + 1; i++)
    off += (size_t)snprintf(big + off, sizeof big - off, "%s\"g%d\"", i ? "," : "", i);
  off += (size_t)snprintf(big + off, sizeof big - off, "]}");
  assert_int_equal(cr__agent_announce_parse(big, off, an, why, sizeof why), -1);
  assert_non_null(strstr(why, "more than 64 replicas"));
  /* An id one character too long, and a body over the bound. */
  memset(id, 'a', CR_CONF_REPLICA_ID_MAX + 1);
  id[CR_CONF_REPLICA_ID_MAX + 1] = '\0';
  off = (size_t)snprintf(big, sizeof big, "{\"replica\":\"%s\",\"generation\":1,\"set\":[]}", id);
  assert_int_equal(cr__agent_announce_parse(big, off, an, why, sizeof why), -1);
  memset(big, ' ', sizeof big);
  assert_int_equal(cr__agent_announce_parse(big, CR__AGENT_ANNOUNCE_MAX + 1, an, why, sizeof why), -1);
  assert_non_null(strstr(why, "larger than"));
  free(an);
}

/* Each agent process draws its own instance id: the gateway groups a process's tunnels by it. */
static void test_instance_id(void **state) {
  agent_t *a = cr_calloc(1, sizeof *a), *b = cr_calloc(1, sizeof *b);
  (void)state;
  assert_int_equal(cr__agent_instance_init(a), 0);
  assert_int_equal(cr__agent_instance_init(b), 0);
  assert_int_equal(strlen(a->instance), CR__AGENT_INSTANCE_LEN);
  assert_int_equal(strspn(a->instance, "0123456789abcdef"), CR__AGENT_INSTANCE_LEN);
  assert_string_not_equal(a->instance, b->instance);
  free(a);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_announce_parse),
      cmocka_unit_test(test_instance_id),
      cmocka_unit_test_setup_teardown(test_add_then_remove, setup, teardown),
      cmocka_unit_test_setup_teardown(test_remove_unknown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input_answered_now, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_queued, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_while_writing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_after_stop, setup, teardown),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

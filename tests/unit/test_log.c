/* SPDX-License-Identifier: Apache-2.0 */
/* log.c: every field escaped for its format as it is written, so hostile values (quotes, backslashes,
 * control bytes, invalid UTF-8, 8 KiB values) can neither end a value, add a field nor break a line;
 * JSON numbers are numbers. Lines are captured by pointing stderr at a temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ccrelay/log.h"

static char captured[64 * 1024];

/* Runs fn with stderr on a temporary file; the lines written land in captured. */
static const char *capture(void (*fn)(void)) {
  char path[] = "/tmp/ccrelay-test-log-XXXXXX";
  int fd = mkstemp(path), saved = dup(STDERR_FILENO);
  ssize_t n;
  assert_true(fd >= 0 && saved >= 0);
  unlink(path);
  assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
  fn();
  cr_log_flush();
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
  n = read(fd, captured, sizeof captured - 1);
  close(fd);
  assert_true(n >= 0);
  captured[n] = '\0';
  return captured;
}

/* The line without its timestamp (everything from " level=" or ",\"level\""). */
static const char *after_ts(const char *line, const char *from) {
  const char *p = strstr(line, from);
  assert_non_null(p);
  return p;
}

static const char forged[] = "/x\",\"level\":\"error\",\"msg\":\"forged";
static const char quote_in_target[] = "/nope\"x";
static const char logfmt_forge[] = "/a msg=\"forged\" level=error";
static const char control[] = "a\nb\rc\td\x01" "e\x7f";
static const char bad_utf8[] = "ok\xc3\xa9-\xff\xfe-\xc0\xaf-\xed\xa0\x80-end";

static void emit_hostile(void) {
  cr_log_info("access", "target=%s status=%d bytes=%llu note=\"seen %s at %s\" ua=%s", forged, 200, 1234ULL,
              quote_in_target, logfmt_forge, control);
  cr_log_info("utf8", "v=%s back=%s", bad_utf8, "C:\\path\\");
}

static void test_json_hostile(void **state) {
  (void)state;
  cr_log_setup(CR_LOG_INFO, CR_LOG_JSON);
  const char *out = capture(emit_hostile);
  const char *l1 = after_ts(out, ",\"level\"");
  assert_memory_equal(out, "{\"ts\":\"", 7);
  const char *want1 = ",\"level\":\"info\",\"msg\":\"access\",\"target\":\"/x\\\",\\\"level\\\":\\\"error\\\",\\\"msg\\\":\\\"forged\","
                      "\"status\":200,\"bytes\":1234,\"note\":\"seen /nope\\\"x at /a msg=\\\"forged\\\" level=error\","
                      "\"ua\":\"a\\nb\\rc\\td\\u0001e\\u007f\"}\n";
  assert_memory_equal(l1, want1, strlen(want1));
  const char *l2 = after_ts(l1 + strlen(want1), ",\"level\"");
  const char *want2 = ",\"level\":\"info\",\"msg\":\"utf8\",\"v\":\"ok\xc3\xa9-\\ufffd\\ufffd-\\ufffd\\ufffd-\\ufffd\\ufffd\\ufffd-end\","
                      "\"back\":\"C:\\\\path\\\\\"}\n";
  assert_string_equal(l2, want2);
}

static void test_logfmt_hostile(void **state) {
  (void)state;
  cr_log_setup(CR_LOG_INFO, CR_LOG_LOGFMT);
  const char *out = capture(emit_hostile);
  const char *l1 = after_ts(out, " level=");
  const char *want1 = " level=info msg=\"access\" target=\"/x\\\",\\\"level\\\":\\\"error\\\",\\\"msg\\\":\\\"forged\" status=200 "
                      "bytes=1234 note=\"seen /nope\\\"x at /a msg=\\\"forged\\\" level=error\" ua=\"a\\nb\\rc\\td\\x01e\\x7f\"\n";
  assert_memory_equal(l1, want1, strlen(want1));
  const char *l2 = after_ts(l1 + strlen(want1), " level=");
  const char *want2 = " level=info msg=\"utf8\" v=\"ok\xc3\xa9-\\xff\\xfe-\\xc0\\xaf-\\xed\\xa0\\x80-end\" back=\"C:\\\\path\\\\\"\n";
  assert_string_equal(l2, want2);
}

static char big[8 * 1024 + 1];

static void emit_big(void) {
  cr_log_warn("big", "target=%s status=%d", big, 404);
  cr_log_warn("many", "a=%s b=%s c=%s d=%s e=%s f=%s g=%s h=%s i=%s j=%s k=%s l=%s m=%s n=%s o=%s p=%s q=%s r=%s", big,
              big, big, big, big, big, big, big, big, big, big, big, big, big, big, big, big, big);
}

/* An 8 KiB value is cut to CR_LOG_ARG_MAX and marked; a line of many is cut after whole fields. */
static void test_caps(void **state) {
  (void)state;
  memset(big, '"', sizeof big - 1);
  for (int fmt = 0; fmt < 2; fmt++) {
    cr_log_setup(CR_LOG_INFO, fmt ? CR_LOG_JSON : CR_LOG_LOGFMT);
    const char *out = capture(emit_big);
    const char *nl = strchr(out, '\n');
    assert_non_null(nl);
    /* CR_LOG_ARG_MAX quotes, each escaped to two bytes, then "..." */
    assert_true((size_t)(nl - out) < 2 * CR_LOG_ARG_MAX + 200);
    assert_non_null(strstr(out, fmt ? "...\",\"status\":404}" : "...\" status=404"));
    const char *second = nl + 1, *nl2 = strchr(second, '\n');
    assert_non_null(nl2);
    assert_true((size_t)(nl2 - second) <= CR_LOG_LINE_MAX);
    assert_non_null(strstr(second, fmt ? ",\"log_cut\":true}\n" : " log_cut=true\n"));
    assert_null(strchr(nl2 + 1, '\n'));
  }
}

static const char *volatile null_str; /* NULL, hidden from the compiler's format check */

static void emit_edges(void) {
  cr_log_info("edges", "empty=%s num_in_text=\"%d items\" neg=%d hex=%x pct=100%% pre=%.*s null=%s", "", 3, -7, 255, 2,
              "abcdef", null_str);
  cr_log_info("no fields", "");
  cr_log_info("bare", "peer=%s", "127.0.0.1:443");
  cr_log_info("optional", "?gone=%s ?zero=%d ?kept=\"%s\" ?one=%d", "", 0, "x y", 1);
}

static void test_edges(void **state) {
  (void)state;
  cr_log_setup(CR_LOG_INFO, CR_LOG_JSON);
  const char *out = capture(emit_edges);
  assert_non_null(strstr(out, ",\"empty\":\"\",\"num_in_text\":\"3 items\",\"neg\":-7,\"hex\":\"ff\",\"pct\":\"100%\","
                              "\"pre\":\"ab\",\"null\":\"(null)\"}\n"));
  assert_non_null(strstr(out, ",\"msg\":\"no fields\"}\n"));
  assert_non_null(strstr(out, ",\"msg\":\"optional\",\"kept\":\"x y\",\"one\":1}\n"));
  cr_log_setup(CR_LOG_INFO, CR_LOG_LOGFMT);
  out = capture(emit_edges);
  assert_non_null(strstr(out, " empty=\"\" num_in_text=\"3 items\" neg=-7 hex=ff pct=100% pre=ab null=(null)\n"));
  assert_non_null(strstr(out, " msg=\"no fields\"\n"));
  assert_non_null(strstr(out, " msg=\"bare\" peer=127.0.0.1:443\n"));
  assert_non_null(strstr(out, " msg=\"optional\" kept=\"x y\" one=1\n"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_hostile),
      cmocka_unit_test(test_logfmt_hostile),
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_edges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

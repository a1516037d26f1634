/* SPDX-License-Identifier: Apache-2.0 */
/* The ClientHello SNI reader: a valid hello, every truncation, overlong lengths, several extensions,
 * none, a record that is no handshake, a hello split across records and across reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ccrelay/error.h"
#include "ccrelay/tls_sni.h"

typedef struct msg {
  unsigned char b[40000];
  size_t n;
} msg_t;

static void put(msg_t *m, const void *p, size_t n) {
  assert_true(m->n + n <= sizeof m->b);
  memcpy(m->b + m->n, p, n);
  m->n += n;
}
static void put8(msg_t *m, unsigned v) {
  unsigned char c = (unsigned char)v;
  put(m, &c, 1);
}
static void put16(msg_t *m, unsigned v) {
  put8(m, v >> 8);
  put8(m, v & 0xff);
}

/* An SNI extension naming host. */
static void ext_sni(msg_t *e, const char *host) {
  size_t n = strlen(host);
  put16(e, 0);
  put16(e, (unsigned)(n + 5));
  put16(e, (unsigned)(n + 3));
  put8(e, 0);
  put16(e, (unsigned)n);
  put(e, host, n);
}

static void ext_other(msg_t *e, unsigned type, size_t len) {
  put16(e, type);
  put16(e, (unsigned)len);
  for (size_t i = 0; i < len; i++)
    put8(e, (unsigned)i);
}

/* A ClientHello handshake message with the extensions block exts (NULL: no extensions at all). */
static void hello(msg_t *hs, const msg_t *exts) {
  msg_t body = {.n = 0};
  put16(&body, 0x0303);
  for (int i = 0; i < 32; i++)
    put8(&body, (unsigned)i);
  put8(&body, 32);
  for (int i = 0; i < 32; i++)
    put8(&body, 0xaa);
  put16(&body, 4);
  put16(&body, 0x1301);
  put16(&body, 0xc02f);
  put8(&body, 1);
  put8(&body, 0);
  if (exts) {
    put16(&body, (unsigned)exts->n);
    put(&body, exts->b, exts->n);
  }
  put8(hs, 1);
  put8(hs, (unsigned)(body.n >> 16));
  put16(hs, (unsigned)(body.n & 0xffff));
  put(hs, body.b, body.n);
}

/* Wraps hs into records of at most per bytes of payload. */
static void records(msg_t *out, const msg_t *hs, size_t per) {
  for (size_t off = 0; off < hs->n; off += per) {
    size_t n = hs->n - off < per ? hs->n - off : per;
    put8(out, 22);
    put16(out, 0x0301);
    put16(out, (unsigned)n);
    put(out, hs->b + off, n);
  }
}

static int parse(const msg_t *m, size_t len, char *name) {
  return cr_tls_sni_parse(m->b, len, name, CR_TLS_SNI_NAME_MAX + 1, NULL);
}

static void standard(msg_t *wire, const char *host) {
  msg_t exts = {.n = 0}, hs = {.n = 0};
  ext_other(&exts, 10, 8);   /* supported_groups */
  ext_sni(&exts, host);
  ext_other(&exts, 43, 3);   /* supported_versions */
  ext_other(&exts, 0xfe0d, 0); /* an unknown, empty one */
  hello(&hs, &exts);
  records(wire, &hs, 16384);
}

static void test_valid(void **state) {
  msg_t w = {.n = 0};
  char name[CR_TLS_SNI_NAME_MAX + 1];
  size_t end = 0;
  (void)state;
  standard(&w, "Cms.Example.test");
  assert_int_equal(cr_tls_sni_parse(w.b, w.n, name, sizeof name, &end), CR_TLS_SNI_FOUND);
  assert_string_equal(name, "Cms.Example.test");
  assert_int_equal(end, w.n);
  /* bytes after the hello's record are not looked at */
  put(&w, "\x17\x03\x03garbage", 10);
  assert_int_equal(parse(&w, w.n, name), CR_TLS_SNI_FOUND);
  /* a name too big for the caller's buffer */
  assert_int_equal(cr_tls_sni_parse(w.b, w.n, name, 4, NULL), CR_ELIMIT);
}

static void test_truncated_everywhere(void **state) {
  msg_t w = {.n = 0};
  char name[CR_TLS_SNI_NAME_MAX + 1];
  (void)state;
  standard(&w, "cms.example.test");
  for (size_t i = 0; i < w.n; i++) {
    assert_int_equal(parse(&w, i, name), CR_TLS_SNI_MORE);
    assert_string_equal(name, "");
  }
  assert_int_equal(parse(&w, w.n, name), CR_TLS_SNI_FOUND);
}

/* The hello's own lengths, each made one too long (so a length overruns its container) and one too
 * short. Offsets into the record: 5 record header, 4 handshake header, 2+32 version and random. */
static void test_overlong_lengths(void **state) {
  msg_t w = {.n = 0};
  char name[CR_TLS_SNI_NAME_MAX + 1];
  size_t sid = 5 + 4 + 34, cs = sid + 1 + 32, comp = cs + 2 + 4, ext = comp + 2;
  size_t at[] = {sid, cs + 1, comp, ext + 1};
  (void)state;
  standard(&w, "cms.example.test");
  for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) {
    msg_t m = w;
    m.b[at[i]]++;
    assert_int_equal(parse(&m, m.n, name), CR_EPROTO);
    m = w;
    m.b[at[i]]--;
    assert_int_equal(parse(&m, m.n, name), CR_EPROTO);
  }
  {
    /* the SNI extension's own three lengths: extension, list, name */
    size_t sni = ext + 2 + 4 + 8; /* after supported_groups */
    size_t in_sni[] = {sni + 3, sni + 5, sni + 8};
    for (size_t i = 0; i < 3; i++) {
      msg_t m = w;
      m.b[in_sni[i]] += 1;
      assert_int_equal(parse(&m, m.n, name), CR_EPROTO);
    }
  }
  {
    /* a handshake length past what we take, and a record longer than TLS allows */
    msg_t m = w;
    m.b[6] = 1; /* 65536 + ... */
    assert_int_equal(parse(&m, m.n, name), CR_ELIMIT);
    m = w;
    m.b[3] = 0x40;
    m.b[4] = 0x01;
    assert_int_equal(parse(&m, m.n, name), CR_EPROTO);
  }
}

static void test_extensions(void **state) {
  char name[CR_TLS_SNI_NAME_MAX + 1];
  (void)state;
  {
    msg_t exts = {.n = 0}, hs = {.n = 0}, w = {.n = 0};
    for (unsigned t = 1; t < 30; t++)
      ext_other(&exts, t + 100, t);
    ext_sni(&exts, "last.example");
    hello(&hs, &exts);
    records(&w, &hs, 16384);
    assert_int_equal(parse(&w, w.n, name), CR_TLS_SNI_FOUND);
    assert_string_equal(name, "last.example");
  }
  {
    msg_t exts = {.n = 0}, hs = {.n = 0}, w = {.n = 0};
    ext_sni(&exts, "a.example");
    ext_sni(&exts, "b.example");
    hello(&hs, &exts);
    records(&w, &hs, 16384);
    assert_int_equal(parse(&w, w.n, name), CR_EPROTO); /* the same extension twice */
  }
  {
    const char *bad[] = {"bad name.example", "trailing.dot.", ".lead", "a..b", "\x80x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      msg_t exts = {.n = 0}, hs = {.n = 0}, w = {.n = 0};
      ext_sni(&exts, bad[i]);
      hello(&hs, &exts);
      records(&w, &hs, 16384);
      assert_int_equal(parse(&w, w.n, name), CR_EPROTO);
    }
  }
}

static void test_no_sni(void **state) {
  char name[CR_TLS_SNI_NAME_MAX + 1];
  (void)state;
  {
    msg_t exts = {.n = 0}, hs = {.n = 0}, w = {.n = 0};
    ext_other(&exts, 10, 8);
    hello(&hs, &exts);
    records(&w, &hs, 16384);
    assert_int_equal(parse(&w, w.n, name), CR_TLS_SNI_NONE);
    assert_string_equal(name, "");
  }
  {
    msg_t hs = {.n = 0}, w = {.n = 0};
    hello(&hs, NULL);
    records(&w, &hs, 16384);
    assert_int_equal(parse(&w, w.n, name), CR_TLS_SNI_NONE);
  }
}

static void test_not_handshake(void **state) {
  char name[CR_TLS_SNI_NAME_MAX + 1];
  const unsigned char http[] = "GET / HTTP/1.1\r\n";
  const unsigned char alert[] = {21, 3, 3, 0, 2, 2, 40};
  const unsigned char sslv2[] = {0x80, 0x2e, 0x01, 0x00, 0x02};
  const unsigned char server_hello[] = {22, 3, 3, 0, 4, 2, 0, 0, 0};
  (void)state;
  assert_int_equal(cr_tls_sni_parse(http, 1, name, sizeof name, NULL), CR_EPROTO);
  assert_int_equal(cr_tls_sni_parse(alert, sizeof alert, name, sizeof name, NULL), CR_EPROTO);
  assert_int_equal(cr_tls_sni_parse(sslv2, sizeof sslv2, name, sizeof name, NULL), CR_EPROTO);
  assert_int_equal(cr_tls_sni_parse(server_hello, sizeof server_hello, name, sizeof name, NULL), CR_EPROTO);
  assert_int_equal(cr_tls_sni_parse(http, 0, name, sizeof name, NULL), CR_TLS_SNI_MORE);
}

static void test_split_records_and_reads(void **state) {
  msg_t exts = {.n = 0}, hs = {.n = 0}, w = {.n = 0};
  char name[CR_TLS_SNI_NAME_MAX + 1];
  size_t end = 0;
  (void)state;
  ext_other(&exts, 21, 600); /* padding */
  ext_sni(&exts, "split.example");
  hello(&hs, &exts);
  records(&w, &hs, 100); /* the hello over several records, and its header split too (per 3) */
  for (size_t i = 0; i < w.n; i++)
    assert_int_equal(parse(&w, i, name), CR_TLS_SNI_MORE);
  assert_int_equal(cr_tls_sni_parse(w.b, w.n, name, sizeof name, &end), CR_TLS_SNI_FOUND);
  assert_string_equal(name, "split.example");
  assert_int_equal(end, w.n);
  {
    msg_t t = {.n = 0};
    records(&t, &hs, 3);
    assert_int_equal(parse(&t, t.n, name), CR_TLS_SNI_FOUND);
    /* a record of another type between the pieces */
    t.b[5 + 3] = 21;
    assert_int_equal(parse(&t, t.n, name), CR_EPROTO);
  }
  {
    /* bytes of another message in the hello's last record */
    msg_t t = {.n = 0}, h2 = hs;
    put(&h2, "\x01\x00\x00\x00", 4);
    records(&t, &h2, 16384);
    assert_int_equal(parse(&t, t.n, name), CR_EPROTO);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),        cmocka_unit_test(test_truncated_everywhere),
      cmocka_unit_test(test_overlong_lengths), cmocka_unit_test(test_extensions),
      cmocka_unit_test(test_no_sni),       cmocka_unit_test(test_not_handshake),
      cmocka_unit_test(test_split_records_and_reads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The header model: stable string storage, reuse across reset, lookups, hop-by-hop stripping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <ctype.h>
#include <string.h>

#include <cmocka.h>

#include "ccrelay/error.h"
#include "ccrelay/http_msg.h"

static void add(cr_http_msg_t *m, const char *name, const char *value) {
  assert_int_equal(cr_http_msg_add_header(m, name, strlen(name), value, strlen(value)), 0);
}

static void test_setters_copy_and_trim(void **state) {
  cr_http_msg_t m;
  char name[] = "X-Thing", value[] = " \t spaced value\t ";
  (void)state;
  cr_http_msg_init(&m, 0);
  assert_int_equal(m.content_length, -1);
  assert_int_equal(m.version_minor, 1);
  cr_http_msg_set_method(&m, "POSTX", 4);
  cr_http_msg_set_target(&m, "/a?b=c", 6);
  assert_int_equal(cr_http_msg_add_header(&m, name, strlen(name), value, strlen(value)), 0);
  memset(name, 'Z', sizeof(name) - 1);
  memset(value, 'Z', sizeof(value) - 1);
  assert_string_equal(m.method, "POST");
  assert_string_equal(m.target, "/a?b=c");
  assert_string_equal(m.headers[0].name, "X-Thing");
  assert_int_equal(m.headers[0].name_len, 7);
  assert_string_equal(m.headers[0].value, "spaced value");
  assert_int_equal(m.headers[0].value_len, 12);
  add(&m, "Empty", "  ");
  assert_string_equal(cr_http_msg_get(&m, "empty"), "");
  cr_http_msg_free(&m);
}

/* A value assembled from parts: copied whole and as is, empty parts and all; bigger than a storage
 * block too; refused at max_headers like any other. */
static void test_add_header_parts(void **state) {
  cr_http_msg_t m;
  char big[6000];
  cr_http_part_t p[4] = {{"for=\"", 5}, {"127.0.0.1:5", 11}, {"", 0}, {"\" ", 2}};
  (void)state;
  cr_http_msg_init(&m, 2);
  assert_int_equal(cr_http_msg_add_header_parts(&m, CR_HDR_FORWARDED, "Forwarded", 9, p, 4), 0);
  assert_string_equal(cr_http_msg_get(&m, "forwarded"), "for=\"127.0.0.1:5\" ");
  assert_int_equal(m.headers[0].value_len, 18);
  memset(big, 'b', sizeof big);
  p[0] = (cr_http_part_t){big, sizeof big};
  assert_int_equal(cr_http_msg_add_header_parts(&m, CR_HDR_OTHER, "Big", 3, p, 1), 0);
  assert_int_equal(m.headers[1].value_len, sizeof big);
  assert_int_equal(strlen(m.headers[1].value), sizeof big);
  assert_int_equal(cr_http_msg_add_header_parts(&m, CR_HDR_OTHER, "More", 4, p, 1), CR_ELIMIT);
  assert_int_equal(m.nheaders, 2);
  cr_http_msg_free(&m);
}

/* Pointers handed out earlier must survive any number of later additions (blocks never move). */
static void test_pointers_stay_valid(void **state) {
  cr_http_msg_t m;
  const char *first_name, *first_value, *method;
  char name[32], value[600];
  int i;
  (void)state;
  cr_http_msg_init(&m, 1000);
  cr_http_msg_set_method(&m, "GET", 3);
  method = m.method;
  add(&m, "First", "one");
  first_name = m.headers[0].name;
  first_value = m.headers[0].value;
  memset(value, 'v', sizeof(value) - 1);
  value[sizeof(value) - 1] = '\0';
  for (i = 0; i < 300; i++) {
    snprintf(name, sizeof(name), "H%d", i);
    add(&m, name, value);
  }
  assert_ptr_equal(m.headers[0].name, first_name); /* the entry itself may move, its strings not */
  assert_string_equal(first_name, "First");
  assert_string_equal(first_value, "one");
  assert_string_equal(method, "GET");
  assert_int_equal(m.nheaders, 301);
  assert_string_equal(cr_http_msg_get(&m, "h299"), value);
  cr_http_msg_free(&m);
}

/* After reset the same memory is reused: the same head parsed again lands at the same addresses. */
static void test_reset_reuses_memory(void **state) {
  cr_http_msg_t m;
  const char *p1, *p2;
  cr_http_header_t *arr;
  int round;
  (void)state;
  cr_http_msg_init(&m, 0);
  for (round = 0; round < 3; round++) {
    cr_http_msg_set_method(&m, "GET", 3);
    add(&m, "Host", "example.com");
    add(&m, "Accept", "*/*");
    if (round == 0) {
      p1 = m.method;
      p2 = m.headers[1].value;
      arr = m.headers;
    } else {
      assert_ptr_equal(m.method, p1);
      assert_ptr_equal(m.headers[1].value, p2);
      assert_ptr_equal(m.headers, arr);
    }
    m.status = 7;
    m.chunked = 1;
    m.content_length = 5;
    cr_http_msg_reset(&m);
    assert_null(m.method);
    assert_null(m.target);
    assert_int_equal(m.nheaders, 0);
    assert_int_equal(m.status, 0);
    assert_int_equal(m.chunked, 0);
    assert_int_equal(m.content_length, -1);
  }
  cr_http_msg_free(&m);
}

/* Release holds nothing afterwards, keeps the scalar fields, and the next message reuses the storage
 * from the free list (so a released message, another message, or a big one all work). */
static void test_release_gives_storage_back(void **state) {
  cr_http_msg_t a, b;
  char big[6000];
  const char *block;
  cr_http_header_t *arr;
  (void)state;
  cr_http_msg_init(&a, 0);
  cr_http_msg_init(&b, 0);
  cr_http_msg_set_method(&a, "POST", 4);
  add(&a, "Host", "example.com");
  a.content_length = 42;
  block = a.method;
  arr = a.headers;
  cr_http_msg_release(&a);
  assert_null(a.blocks);
  assert_null(a.headers);
  assert_null(a.method);
  assert_int_equal(a.nheaders, 0);
  assert_int_equal(a.content_length, 42);
  /* another message takes the freed block and array */
  cr_http_msg_set_method(&b, "GET", 3);
  add(&b, "Accept", "*/*");
  assert_ptr_equal(b.method, block);
  assert_ptr_equal(b.headers, arr);
  assert_string_equal(b.headers[0].value, "*/*");
  /* the released one works again, with a value bigger than a block */
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  cr_http_msg_set_method(&a, "PUT", 3);
  add(&a, "X-Big", big);
  assert_string_equal(a.method, "PUT");
  assert_string_equal(a.headers[0].value, big);
  cr_http_msg_release(&a);
  cr_http_msg_release(&a); /* twice is harmless */
  cr_http_msg_free(&a);
  cr_http_msg_free(&b);
}

static void test_max_headers(void **state) {
  cr_http_msg_t m;
  (void)state;
  cr_http_msg_init(&m, 2);
  add(&m, "A", "1");
  add(&m, "B", "2");
  assert_int_equal(cr_http_msg_add_header(&m, "C", 1, "3", 1), CR_ELIMIT);
  assert_int_equal(m.nheaders, 2);
  cr_http_msg_free(&m);
}

static void test_find_count_remove(void **state) {
  cr_http_msg_t m;
  (void)state;
  cr_http_msg_init(&m, 0);
  add(&m, "Accept", "a");
  add(&m, "X-Dup", "1");
  add(&m, "x-dup", "2");
  add(&m, "Via", "v");
  assert_string_equal(cr_http_msg_get(&m, "X-DUP"), "1");
  assert_ptr_equal(cr_http_msg_find(&m, "accept"), &m.headers[0]);
  assert_null(cr_http_msg_find(&m, "Accept-Encoding"));
  assert_null(cr_http_msg_get(&m, "Accep"));
  assert_int_equal(cr_http_msg_count(&m, "x-dup"), 2);
  assert_int_equal(cr_http_msg_remove(&m, "X-Dup"), 2);
  assert_int_equal(m.nheaders, 2);
  assert_string_equal(m.headers[0].name, "Accept");
  assert_string_equal(m.headers[1].name, "Via");
  assert_int_equal(cr_http_msg_remove(&m, "nothing"), 0);
  cr_http_msg_free(&m);
}

/* Several names in one pass: every field of each, any case, the others kept in order. */
static void test_remove_names(void **state) {
  cr_http_msg_t m;
  const uint32_t names = CR_HDR_BIT(CR_HDR_FORWARDED) | CR_HDR_BIT(CR_HDR_X_FORWARDED_FOR);
  (void)state;
  cr_http_msg_init(&m, 0);
  add(&m, "Forwarded", "for=a");
  add(&m, "Host", "h");
  add(&m, "X-Forwarded-For", "1.2.3.4");
  add(&m, "X-Forwarded-Host", "evil");
  add(&m, "FORWARDED", "for=b");
  add(&m, "Via", "1.1 p");
  assert_int_equal(cr_http_msg_remove_ids(&m, names), 3);
  assert_int_equal(m.nheaders, 3);
  assert_string_equal(m.headers[0].name, "Host");
  assert_string_equal(m.headers[1].name, "X-Forwarded-Host");
  assert_string_equal(m.headers[2].name, "Via");
  assert_int_equal(cr_http_msg_remove_ids(&m, names), 0);
  assert_int_equal(cr_http_msg_remove_ids(&m, 0), 0);
  cr_http_msg_free(&m);
}

/* Every name the relay knows, in any case, gets its id; every name one byte, one letter or one
 * length away from it does not. */
static void test_header_ids(void **state) {
  static const struct {
    cr_http_hdr_t id;
    const char *name;
  } known[] = {
      {CR_HDR_AUTHORIZATION, "authorization"},
      {CR_HDR_CONNECTION, "connection"},
      {CR_HDR_CONTENT_LENGTH, "content-length"},
      {CR_HDR_CONTENT_TYPE, "content-type"},
      {CR_HDR_DATE, "date"},
      {CR_HDR_EXPECT, "expect"},
      {CR_HDR_FORWARDED, "forwarded"},
      {CR_HDR_HOST, "host"},
      {CR_HDR_KEEP_ALIVE, "keep-alive"},
      {CR_HDR_PROXY_CONNECTION, "proxy-connection"},
      {CR_HDR_SOAPACTION, "soapaction"},
      {CR_HDR_TE, "te"},
      {CR_HDR_TRAILER, "trailer"},
      {CR_HDR_TRANSFER_ENCODING, "transfer-encoding"},
      {CR_HDR_UPGRADE, "upgrade"},
      {CR_HDR_X_CCRELAY_ERROR, "x-ccrelay-error"},
      {CR_HDR_X_CCRELAY_REQUESTED_BY, "x-ccrelay-requested-by"},
      {CR_HDR_X_FORWARDED_FOR, "x-forwarded-for"},
      {CR_HDR_X_FORWARDED_HOST, "x-forwarded-host"},
      {CR_HDR_X_FORWARDED_PROTO, "x-forwarded-proto"},
      {CR_HDR_X_REQUEST_ID, "x-request-id"},
  };
  char v[32];
  (void)state;
  assert_int_equal(sizeof known / sizeof known[0], CR_HDR_COUNT_ - 1); /* each id has its row */
  assert_int_equal(cr_http_hdr_id("", 0), CR_HDR_OTHER);
  assert_int_equal(cr_http_hdr_id("x", 1), CR_HDR_OTHER);
  assert_int_equal(cr_http_hdr_id("User-Agent", 10), CR_HDR_OTHER);
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
    size_t len = strlen(known[k].name);
    assert_int_equal(cr_http_hdr_id(known[k].name, len), known[k].id);
    for (size_t i = 0; i < len; i++) /* upper case, and every case mix of one letter */
      v[i] = (char)toupper((unsigned char)known[k].name[i]);
    assert_int_equal(cr_http_hdr_id(v, len), known[k].id);
    for (size_t pos = 0; pos < len; pos++) {
      memcpy(v, known[k].name, len);
      v[pos] = (char)toupper((unsigned char)v[pos]);
      assert_int_equal(cr_http_hdr_id(v, len), known[k].id);
      for (int c = 0; c < 256; c++) {
        memcpy(v, known[k].name, len);
        if (tolower(c) == known[k].name[pos])
          continue;
        v[pos] = (char)c;
        assert_int_not_equal(cr_http_hdr_id(v, len), known[k].id);
      }
    }
    assert_int_not_equal(cr_http_hdr_id(known[k].name, len - 1), known[k].id);
    memcpy(v, known[k].name, len);
    v[len] = 's';
    assert_int_not_equal(cr_http_hdr_id(v, len + 1), known[k].id);
  }
}

/* Lookups and removals by id and by name agree, whichever case the fields were added in, and a name
 * the relay does not know never matches a known one of the same length. */
static void test_find_and_remove_by_id(void **state) {
  cr_http_msg_t m;
  (void)state;
  cr_http_msg_init(&m, 0);
  add(&m, "HOST", "h");
  add(&m, "hosx", "not host");
  add(&m, "X-Request-ID", "r1");
  add(&m, "Authorization", "Bearer t");
  add(&m, "x-request-id", "r2");
  add(&m, "X-Requested-With", "kept");
  assert_int_equal(m.headers[0].id, CR_HDR_HOST);
  assert_int_equal(m.headers[1].id, CR_HDR_OTHER);
  assert_true(cr_http_header_name_valid(&m.headers[0]));
  assert_true(cr_http_header_name_valid(&m.headers[1]));
  add(&m, "Bad Name", "refused by serialisers");
  assert_false(cr_http_header_name_valid(&m.headers[m.nheaders - 1]));
  assert_int_equal(cr_http_msg_remove(&m, "bad name"), 1);
  assert_string_equal(cr_http_msg_get_id(&m, CR_HDR_HOST), "h");
  assert_string_equal(cr_http_msg_get(&m, "hosx"), "not host");
  assert_string_equal(cr_http_msg_get_id(&m, CR_HDR_X_REQUEST_ID), "r1");
  assert_null(cr_http_msg_find_id(&m, CR_HDR_FORWARDED));
  assert_int_equal(cr_http_msg_count(&m, "X-REQUEST-ID"), 2);
  assert_int_equal(cr_http_msg_remove_ids(&m, CR_HDR_BIT(CR_HDR_X_REQUEST_ID) | CR_HDR_BIT(CR_HDR_AUTHORIZATION)), 3);
  assert_int_equal(m.nheaders, 3);
  assert_string_equal(m.headers[0].name, "HOST");
  assert_string_equal(m.headers[1].name, "hosx");
  assert_string_equal(m.headers[2].name, "X-Requested-With");
  assert_int_equal(cr_http_msg_remove_ids(&m, CR_HDR_BIT(CR_HDR_OTHER)), 0); /* never "every other name" */
  assert_int_equal(cr_http_msg_remove(&m, "hosx"), 1);
  assert_int_equal(m.nheaders, 2);
  /* a copy keeps the ids */
  {
    cr_http_msg_t c;
    cr_http_msg_init(&c, 0);
    assert_int_equal(cr_http_msg_copy(&c, &m), 0);
    assert_string_equal(cr_http_msg_get_id(&c, CR_HDR_HOST), "h");
    cr_http_msg_free(&c);
  }
  cr_http_msg_free(&m);
}

static void test_set_header(void **state) {
  cr_http_msg_t m;
  (void)state;
  cr_http_msg_init(&m, 4);
  add(&m, "Accept", "a");
  add(&m, "host", "old");
  add(&m, "Via", "v");
  add(&m, "HOST", "older");
  /* the first keeps its name and place, the others go */
  assert_int_equal(cr_http_msg_set_header(&m, "Host", 4, " new:1 ", 7), 0);
  assert_int_equal(m.nheaders, 3);
  assert_string_equal(m.headers[1].name, "host");
  assert_string_equal(m.headers[1].value, "new:1");
  assert_int_equal(m.headers[1].value_len, 5);
  assert_string_equal(m.headers[2].name, "Via");
  /* none yet: added at the end, within max_headers */
  assert_int_equal(cr_http_msg_set_header(&m, "X-A", 3, "1", 1), 0);
  assert_string_equal(m.headers[3].value, "1");
  assert_int_equal(cr_http_msg_set_header(&m, "X-B", 3, "2", 1), CR_ELIMIT);
  assert_int_equal(cr_http_msg_set_header(&m, "x-a", 3, "3", 1), 0); /* a full head can still replace */
  assert_string_equal(cr_http_msg_get(&m, "X-A"), "3");
  assert_int_equal(m.nheaders, 4);
  cr_http_msg_free(&m);
}

static void test_copy(void **state) {
  cr_http_msg_t a, b;
  (void)state;
  cr_http_msg_init(&a, 0);
  cr_http_msg_init(&b, 0);
  cr_http_msg_set_method(&a, "PUT", 3);
  cr_http_msg_set_target(&a, "/x", 2);
  a.version_minor = 0;
  a.content_length = 42;
  a.keep_alive = 0;
  add(&a, "Host", "h");
  add(&a, "Content-Length", "42");
  add(&b, "Stale", "gone after copy");
  assert_int_equal(cr_http_msg_copy(&b, &a), 0);
  cr_http_msg_free(&a); /* b owns its own copies */
  assert_string_equal(b.method, "PUT");
  assert_string_equal(b.target, "/x");
  assert_int_equal(b.version_minor, 0);
  assert_int_equal(b.content_length, 42);
  assert_int_equal(b.keep_alive, 0);
  assert_int_equal(b.nheaders, 2);
  assert_null(cr_http_msg_get(&b, "Stale"));
  assert_string_equal(cr_http_msg_get(&b, "host"), "h");
  cr_http_msg_free(&b);
}

static void test_copy_respects_max_headers(void **state) {
  cr_http_msg_t a, b;
  (void)state;
  cr_http_msg_init(&a, 0);
  cr_http_msg_init(&b, 1);
  add(&a, "A", "1");
  add(&a, "B", "2");
  assert_int_equal(cr_http_msg_copy(&b, &a), CR_ELIMIT);
  cr_http_msg_free(&a);
  cr_http_msg_free(&b);
}

static void test_strip_hop_by_hop(void **state) {
  cr_http_msg_t m;
  (void)state;
  cr_http_msg_init(&m, 0);
  add(&m, "Host", "h");
  add(&m, "X-Secret-Hop", "must go: named by Connection");
  add(&m, "Connection", "keep-alive, X-Secret-Hop ,x-other");
  add(&m, "Keep-Alive", "timeout=5");
  add(&m, "Proxy-Connection", "keep-alive");
  add(&m, "TE", "trailers");
  add(&m, "Trailer", "X-T");
  add(&m, "Transfer-Encoding", "chunked");
  add(&m, "Upgrade", "websocket");
  add(&m, "Content-Length", "10");
  add(&m, "X-Other", "also named");
  add(&m, "connection", "X-Third");
  add(&m, "x-third", "named by a second Connection header");
  add(&m, "Accept", "kept");
  add(&m, "X-Secret-Hop-Not", "kept: only a prefix of a named token");
  add(&m, "connection", "X-Request-Id");
  add(&m, "x-request-id", "named by a third: a name the relay knows, any case");
  cr_http_msg_strip_hop_by_hop(&m);
  assert_int_equal(m.nheaders, 3);
  assert_string_equal(m.headers[0].name, "Host");
  assert_string_equal(m.headers[1].name, "Accept");
  assert_string_equal(m.headers[2].name, "X-Secret-Hop-Not");
  cr_http_msg_free(&m);

  /* More names in Connection than the one-pass strip gathers: the general path gives the same. */
  cr_http_msg_init(&m, 0);
  add(&m, "Host", "h");
  add(&m, "X-9", "named ninth");
  add(&m, "Connection", "a, b, c, d, e, f, g, h");
  add(&m, "Accept", "kept");
  add(&m, "connection", ", x-9 ,");
  add(&m, "A", "named first");
  add(&m, "Keep-Alive", "timeout=5");
  cr_http_msg_strip_hop_by_hop(&m);
  assert_int_equal(m.nheaders, 2);
  assert_string_equal(m.headers[0].name, "Host");
  assert_string_equal(m.headers[1].name, "Accept");
  cr_http_msg_free(&m);

  /* Nothing to strip: untouched, in order. */
  cr_http_msg_init(&m, 0);
  add(&m, "Host", "h");
  add(&m, "Accept", "a");
  cr_http_msg_strip_hop_by_hop(&m);
  assert_int_equal(m.nheaders, 2);
  assert_string_equal(m.headers[1].name, "Accept");
  cr_http_msg_free(&m);
}

static void test_token_and_value_validity(void **state) {
  (void)state;
  assert_true(cr_http_token_valid("X-Request-Id", 12));
  assert_true(cr_http_token_valid("!#$%&'*+-.^_`|~09az", 19));
  assert_false(cr_http_token_valid("", 0));
  assert_false(cr_http_token_valid("Bad Name", 8));
  assert_false(cr_http_token_valid("Bad:Name", 8));
  assert_false(cr_http_token_valid("a\0b", 3));
  assert_false(cr_http_token_valid("a\"b", 3));
  assert_true(cr_http_field_value_valid("any text, \"quoted\"\t\x80", 20));
  assert_true(cr_http_field_value_valid("", 0));
  assert_false(cr_http_field_value_valid("a\rb", 3));
  assert_false(cr_http_field_value_valid("a\nb", 3));
  assert_false(cr_http_field_value_valid("a\0b", 3));
  /* every position of a longer value, across the 8-byte steps and the tail, and every byte value */
  char v[41];
  for (size_t pos = 0; pos < sizeof v; pos++) {
    const char bad[3] = {'\r', '\n', '\0'};
    for (int b = 0; b < 3; b++) {
      memset(v, 'x', sizeof v);
      v[pos] = bad[b];
      assert_false(cr_http_field_value_valid(v, sizeof v));
      assert_int_equal(cr_http_field_value_valid(v, pos), 1); /* the bad byte just past the end */
    }
  }
  for (int c = 0; c < 256; c++) {
    memset(v, 0x7f, sizeof v);
    v[13] = (char)c;
    assert_int_equal(cr_http_field_value_valid(v, sizeof v), !(c == '\r' || c == '\n' || c == 0));
  }
  /* every length, short ones (byte by byte) and the overlapping last word of longer ones */
  for (size_t len = 1; len <= sizeof v; len++)
    for (size_t pos = 0; pos < len; pos++) {
      memset(v, 'x', sizeof v);
      v[pos] = '\n';
      assert_false(cr_http_field_value_valid(v, len));
    }
}

/* Every byte value at every position, over plain text and over high bytes (which borrow differently
 * in the eight-byte steps), must stop the run exactly where a control byte is. */
static void test_text_run(void **state) {
  const unsigned char fills[] = {'x', ' ', 0x80, 0xff};
  char v[41];
  (void)state;
  assert_int_equal(cr_http_text_run("", 0), 0);
  assert_int_equal(cr_http_text_run("GET / HTTP/1.1\r\n", 16), 14);
  for (size_t f = 0; f < sizeof fills; f++) {
    memset(v, fills[f], sizeof v);
    assert_int_equal(cr_http_text_run(v, sizeof v), sizeof v);
    for (size_t pos = 0; pos < sizeof v; pos++)
      for (int c = 0; c < 256; c++) {
        int control = c < 0x20 || c == 0x7f;
        memset(v, fills[f], sizeof v);
        v[pos] = (char)c;
        assert_int_equal(cr_http_text_run(v, sizeof v), control ? pos : sizeof v);
        assert_int_equal(cr_http_text_run(v, pos), pos);
      }
  }
}

static void test_name_eq_and_reason(void **state) {
  int s;
  (void)state;
  assert_true(cr_http_name_eq("Content-Length", "content-LENGTH"));
  assert_false(cr_http_name_eq("Content-Length", "Content-Lengt"));
  assert_false(cr_http_name_eq("a", "ab"));
  assert_true(cr_http_name_eq("", ""));
  assert_string_equal(cr_http_reason(200), "OK");
  assert_string_equal(cr_http_reason(204), "No Content");
  assert_string_equal(cr_http_reason(404), "Not Found");
  assert_string_equal(cr_http_reason(431), "Request Header Fields Too Large");
  assert_string_equal(cr_http_reason(502), "Bad Gateway");
  assert_string_equal(cr_http_reason(511), "Network Authentication Required");
  assert_string_equal(cr_http_reason(299), "Unknown");
  /* every status the relay itself can produce has a phrase */
  for (s = 500; s <= 505; s++)
    assert_string_not_equal(cr_http_reason(s), "Unknown");
  for (s = 400; s <= 418; s++)
    assert_string_not_equal(cr_http_reason(s), "Unknown");
}

/* RFC 9112 6.3, one row per rule: status 0 is a request; method is the request's (for a response, the
 * request it answers). */
static void test_body_framing(void **state) {
  static const struct {
    int status;
    const char *method;
    int chunked;
    int64_t length;
    int stream_delimited;
    cr_http_body_t want;
  } rows[] = {
      /* responses: no body by status or by the request, whatever the framing headers say */
      {100, "GET", 0, -1, 0, CR_HTTP_BODY_NONE},
      {103, "GET", 0, 10, 0, CR_HTTP_BODY_NONE},
      {204, "GET", 0, -1, 0, CR_HTTP_BODY_NONE},
      {204, "POST", 0, 5, 1, CR_HTTP_BODY_NONE},
      {304, "GET", 0, 1234, 0, CR_HTTP_BODY_NONE},
      {304, "GET", 1, -1, 0, CR_HTTP_BODY_NONE},
      {200, "HEAD", 0, 1234, 0, CR_HTTP_BODY_NONE},
      {200, "HEAD", 1, -1, 0, CR_HTTP_BODY_NONE},
      {404, "HEAD", 0, -1, 1, CR_HTTP_BODY_NONE},
      {200, "CONNECT", 0, -1, 0, CR_HTTP_BODY_NONE},
      {299, "CONNECT", 0, 10, 0, CR_HTTP_BODY_NONE},
      {407, "CONNECT", 0, 10, 0, CR_HTTP_BODY_LENGTH}, /* a refused CONNECT has an ordinary body */
      /* responses: chunked, then Content-Length, then the end of the connection */
      {200, "GET", 1, -1, 0, CR_HTTP_BODY_CHUNKED},
      {200, "GET", 1, 7, 0, CR_HTTP_BODY_CHUNKED},
      {200, "GET", 0, 7, 0, CR_HTTP_BODY_LENGTH},
      {500, NULL, 0, 7, 0, CR_HTTP_BODY_LENGTH},
      {200, "GET", 0, 0, 0, CR_HTTP_BODY_NONE},
      {200, "GET", 0, -1, 0, CR_HTTP_BODY_UNTIL_END},
      {200, NULL, 0, -1, 1, CR_HTTP_BODY_UNTIL_END},
      {201, "POST", 0, -1, 0, CR_HTTP_BODY_UNTIL_END},
      /* requests: the method does not matter, the carrier does when nothing frames the body */
      {0, "POST", 1, -1, 0, CR_HTTP_BODY_CHUNKED},
      {0, "POST", 1, 9, 0, CR_HTTP_BODY_CHUNKED},
      {0, "PUT", 0, 9, 0, CR_HTTP_BODY_LENGTH},
      {0, "GET", 0, 9, 1, CR_HTTP_BODY_LENGTH},
      {0, "POST", 0, 0, 0, CR_HTTP_BODY_NONE},
      {0, "POST", 0, 0, 1, CR_HTTP_BODY_NONE},
      {0, "POST", 0, -1, 0, CR_HTTP_BODY_NONE},
      {0, "GET", 0, -1, 0, CR_HTTP_BODY_NONE},
      {0, "POST", 0, -1, 1, CR_HTTP_BODY_UNTIL_END},
      {0, "HEAD", 0, -1, 1, CR_HTTP_BODY_UNTIL_END},
  };
  cr_http_msg_t m;
  char what[96];
  (void)state;
  cr_http_msg_init(&m, 0);
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    cr_http_msg_reset(&m);
    m.status = rows[i].status;
    if (rows[i].status == 0)
      cr_http_msg_set_method(&m, rows[i].method, strlen(rows[i].method));
    m.chunked = rows[i].chunked != 0;
    m.content_length = rows[i].length;
    snprintf(what, sizeof what, "row %zu: %d %s", i, rows[i].status, rows[i].method ? rows[i].method : "-");
    if (cr_http_body_framing(&m, rows[i].status ? rows[i].method : NULL, rows[i].stream_delimited) !=
        rows[i].want)
      fail_msg("%s: framing %d, want %d", what,
               (int)cr_http_body_framing(&m, rows[i].status ? rows[i].method : NULL, rows[i].stream_delimited),
               (int)rows[i].want);
  }
  /* For a request the method passed as request_method is ignored: only the message counts. */
  cr_http_msg_reset(&m);
  cr_http_msg_set_method(&m, "GET", 3);
  m.content_length = 5;
  assert_int_equal(cr_http_body_framing(&m, "HEAD", 0), CR_HTTP_BODY_LENGTH);
  cr_http_msg_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_setters_copy_and_trim),
      cmocka_unit_test(test_add_header_parts),
      cmocka_unit_test(test_pointers_stay_valid),
      cmocka_unit_test(test_reset_reuses_memory),
      cmocka_unit_test(test_release_gives_storage_back),
      cmocka_unit_test(test_max_headers),
      cmocka_unit_test(test_find_count_remove),
      cmocka_unit_test(test_remove_names),
      cmocka_unit_test(test_header_ids),
      cmocka_unit_test(test_find_and_remove_by_id),
      cmocka_unit_test(test_set_header),
      cmocka_unit_test(test_copy),
      cmocka_unit_test(test_copy_respects_max_headers),
      cmocka_unit_test(test_strip_hop_by_hop),
      cmocka_unit_test(test_token_and_value_validity),
      cmocka_unit_test(test_text_run),
      cmocka_unit_test(test_name_eq_and_reason),
      cmocka_unit_test(test_body_framing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

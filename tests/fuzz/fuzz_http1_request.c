/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: arbitrary bytes into the HTTP/1.1 request parser, fed in splits chosen by the
 * input itself, with pauses taken at random callbacks and resumed. Checks, beyond "no crash, no
 * leak": every delivered head serialises, and the serialised head parses back to the same fields
 * (what the relay does at every hop); a delivered request's target is origin-form (RFC 3986 bytes
 * only, no fragment) or "*", and its Host, if any, is one valid uri-host [":" port].
 * fuzz_http1_response.c includes this file with
 * FUZZ_HTTP1_RESPONSE defined, for the response parser. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/http1.h"
#include "ccrelay/http_msg.h"

#ifdef FUZZ_HTTP1_RESPONSE
#define FUZZ_TYPE CR_HTTP1_RESPONSE
#else
#define FUZZ_TYPE CR_HTTP1_REQUEST
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_ctx {
  uint32_t rng;
  size_t heads, ends;
  cr_http_msg_t reparsed;
  size_t reparsed_heads;
} fuzz_ctx_t;

static uint32_t rnd(fuzz_ctx_t *c) {
  c->rng ^= c->rng << 13;
  c->rng ^= c->rng >> 17;
  c->rng ^= c->rng << 5;
  return c->rng;
}

static int maybe_pause(fuzz_ctx_t *c) { return (rnd(c) & 3) == 0 ? CR_HTTP1_PAUSE : 0; }

static int reparse_head(void *ud, cr_http_msg_t *m) {
  fuzz_ctx_t *c = ud;
  c->reparsed_heads++;
  return cr_http_msg_copy(&c->reparsed, m);
}

static int same_head(const cr_http_msg_t *a, const cr_http_msg_t *b) {
  size_t i;
  if (a->nheaders != b->nheaders || a->status != b->status)
    return 0;
  if ((a->method == NULL) != (b->method == NULL) || (a->method && strcmp(a->method, b->method) != 0))
    return 0;
  if ((a->target == NULL) != (b->target == NULL) || (a->target && strcmp(a->target, b->target) != 0))
    return 0;
  for (i = 0; i < a->nheaders; i++) {
    const cr_http_header_t *x = &a->headers[i], *y = &b->headers[i];
    if (x->name_len != y->name_len || x->value_len != y->value_len || memcmp(x->name, y->name, x->name_len) != 0 ||
        memcmp(x->value, y->value, x->value_len) != 0)
      return 0;
  }
  return 1;
}

static int on_head(void *ud, cr_http_msg_t *m) {
  fuzz_ctx_t *c = ud;
  cr_http1_callbacks_t cbs = {.on_head = reparse_head};
  cr_http1_parser_t *p;
  cr_buf_t out;
  size_t i;
  int r;

  c->heads++;
  if (FUZZ_TYPE == CR_HTTP1_REQUEST) {
    size_t tlen = m->target ? strlen(m->target) : 0;
    const cr_http_header_t *host = cr_http_msg_find(m, "host");
    if (tlen == 0 || (strcmp(m->target, "*") != 0 &&
                      (m->target[0] != '/' || cr_http_path_query_end(m->target, tlen) != tlen)))
      __builtin_trap();
    if (cr_http_msg_count(m, "host") > 1 || (host && !cr_http_host_valid(host->value, host->value_len)))
      __builtin_trap();
  }
  for (i = 0; i < m->nheaders; i++)
    if (!cr_http_token_valid(m->headers[i].name, m->headers[i].name_len) ||
        !cr_http_field_value_valid(m->headers[i].value, m->headers[i].value_len))
      __builtin_trap();
  cr_buf_init(&out, 1 << 20);
  r = FUZZ_TYPE == CR_HTTP1_REQUEST ? cr_http1_write_request_head(&out, m) : cr_http1_write_response_head(&out, m);
  if (r != 0)
    __builtin_trap(); /* a head we accepted must be writable */
  /* HTTP/1.0 requests may lack Host, which HTTP/1.1 (what we write) requires. */
  if (m->version_minor == 1 || FUZZ_TYPE == CR_HTTP1_RESPONSE) {
    p = cr_http1_parser_new(FUZZ_TYPE, NULL, &cbs, c);
    cr_http_msg_reset(&c->reparsed);
    c->reparsed_heads = 0;
    if (cr_http1_parse(p, out.base, out.len) != (ssize_t)out.len || c->reparsed_heads != 1 ||
        !same_head(m, &c->reparsed))
      __builtin_trap();
    cr_http1_parser_free(p);
  }
  cr_buf_free(&out);
  return maybe_pause(c);
}

static int on_body(void *ud, const char *d, size_t len) {
  fuzz_ctx_t *c = ud;
  if (len == 0 || d == NULL)
    __builtin_trap();
  return maybe_pause(c);
}

static int on_end(void *ud) {
  fuzz_ctx_t *c = ud;
  c->ends++;
  if (c->ends > c->heads)
    __builtin_trap();
  return maybe_pause(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cr_http1_callbacks_t cbs = {.on_head = on_head, .on_body = on_body, .on_end = on_end};
  cr_http1_limits_t lim = {0, 0, 0, 0};
  cr_http1_parser_t *p;
  fuzz_ctx_t c;
  size_t off = 0, calls = 0;
  uint8_t mode;

  if (size < 1)
    return 0;
  /* The first byte picks the knobs; the rest is the stream. */
  mode = data[0];
  data++;
  size--;
  memset(&c, 0, sizeof(c));
  c.rng = 0x9e3779b9u ^ mode ^ ((uint32_t)size << 8);
  cr_http_msg_init(&c.reparsed, 0);
  if (mode & 1) {
    lim.max_head_size = 64 + (mode >> 2) * 4;
    lim.max_headers = 1 + (mode >> 4);
    lim.max_chunk_line = 8 + (mode >> 3);
  }
  p = cr_http1_parser_new(FUZZ_TYPE, &lim, &cbs, &c);
#ifdef FUZZ_HTTP1_RESPONSE
  if (mode & 2)
    cr_http1_parser_expect_no_body(p);
#endif
  while (off < size) {
    size_t n = size - off;
    ssize_t r;
    if (mode & 2)
      n = 1 + rnd(&c) % n; /* random splits */
    r = cr_http1_parse(p, (const char *)data + off, n);
    if (r < 0)
      break;
    if ((size_t)r > n)
      __builtin_trap();
    off += (size_t)r;
    cr_http1_parser_resume(p);
    if (++calls > 4 * size + 16) /* each call makes progress or clears a pause */
      __builtin_trap();
  }
  (void)cr_http1_parse_eof(p);
  if (cr_http1_parser_error(p) == NULL)
    __builtin_trap();
  cr_http1_parser_free(p);
  cr_http_msg_free(&c.reparsed);
  return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"

void cr_buf_init(cr_buf_t *b, size_t max) {
  b->base = NULL;
  b->len = b->cap = 0;
  b->max = max;
}

void cr_buf_free(cr_buf_t *b) {
  free(b->base);
  b->base = NULL;
  b->len = b->cap = 0;
}

char *cr_buf_reserve(cr_buf_t *b, size_t n, int *err) {
  if (b->max && (n > b->max || b->len > b->max - n)) {
    if (err)
      *err = CR_ELIMIT;
    return NULL;
  }
  if (b->cap - b->len < n) {
    size_t want = b->cap ? b->cap : 256;
    while (want - b->len < n)
      want *= 2;
    if (b->max && want > b->max)
      want = b->max;
    b->base = cr_realloc(b->base, want);
    b->cap = want;
  }
  if (err)
    *err = 0;
  return b->base + b->len;
}

void cr_buf_commit(cr_buf_t *b, size_t n) { b->len += n; }

int cr_buf_append(cr_buf_t *b, const void *data, size_t n) {
  int err;
  char *p;
  if (n == 0)
    return 0;
  p = cr_buf_reserve(b, n, &err);
  if (p == NULL)
    return err;
  memcpy(p, data, n);
  b->len += n;
  return 0;
}

int cr_buf_vappendf(cr_buf_t *b, const char *fmt, va_list ap) {
  va_list ap2;
  int n, err;
  char *p;
  va_copy(ap2, ap);
  n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return CR_ELIMIT;
  p = cr_buf_reserve(b, (size_t)n + 1, &err);
  if (p == NULL)
    return err;
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
  return 0;
}

int cr_buf_appendf(cr_buf_t *b, const char *fmt, ...) {
  va_list ap;
  int r;
  va_start(ap, fmt);
  r = cr_buf_vappendf(b, fmt, ap);
  va_end(ap);
  return r;
}

void cr_buf_consume(cr_buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->base, b->base + n, b->len - n);
  b->len -= n;
}

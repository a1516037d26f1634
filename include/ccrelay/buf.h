/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer with a hard cap. The cap is what keeps every buffer in the relay bounded:
 * an append past it fails with CR_ELIMIT and changes nothing. */
#ifndef CCRELAY_BUF_H
#define CCRELAY_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "ccrelay/common.h"

typedef struct cr_buf {
  char *base;  /* owned; NULL until the first append */
  size_t len;  /* bytes in use, starting at base */
  size_t cap;  /* bytes allocated */
  size_t max;  /* hard limit on len; 0 means unlimited (only for bounded-by-construction data) */
} cr_buf_t;

void cr_buf_init(cr_buf_t *b, size_t max);
void cr_buf_free(cr_buf_t *b);
/* 0 or CR_ELIMIT. */
int cr_buf_append(cr_buf_t *b, const void *data, size_t n);
int cr_buf_appendf(cr_buf_t *b, const char *fmt, ...) CR_PRINTF(2, 3);
int cr_buf_vappendf(cr_buf_t *b, const char *fmt, va_list ap) CR_PRINTF(2, 0);
/* Ensures room for n more bytes and returns where they go; the caller then calls cr_buf_commit. */
char *cr_buf_reserve(cr_buf_t *b, size_t n, int *err);
void cr_buf_commit(cr_buf_t *b, size_t n);
/* Drops the first n bytes (moving the rest down). */
void cr_buf_consume(cr_buf_t *b, size_t n);
static inline void cr_buf_reset(cr_buf_t *b) { b->len = 0; }

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation that cannot fail: out of memory aborts with a message, so callers never check. */
#ifndef CCRELAY_ALLOC_H
#define CCRELAY_ALLOC_H

#include <stddef.h>

void *cr_malloc(size_t n);
void *cr_calloc(size_t count, size_t size);
void *cr_realloc(void *p, size_t n);
char *cr_strdup(const char *s);
char *cr_strndup(const char *s, size_t n);
/* Zeroes len bytes where the compiler cannot elide it; for passwords and keys before free. */
void cr_wipe(void *p, size_t len);

/* A bounded free list of same-size objects, for the ones every request allocates and frees (tunnel
 * streams, exchanges). glibc's per-size cache keeps only 7 chunks, so a loop turn that ends and starts
 * a few dozen exchanges otherwise goes through malloc's slow paths for each. Single-threaded, as each
 * owner is. */
typedef struct cr_freelist {
  void *head;
  size_t n;
  size_t max;  /* objects kept; more are freed */
  size_t size; /* bytes per object, at least a pointer */
} cr_freelist_t;

void cr_freelist_init(cr_freelist_t *fl, size_t size, size_t max);
/* A zeroed object. */
void *cr_freelist_get(cr_freelist_t *fl);
void cr_freelist_put(cr_freelist_t *fl, void *p);
/* Frees every kept object. */
void cr_freelist_drain(cr_freelist_t *fl);

#endif

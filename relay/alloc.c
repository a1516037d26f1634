/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/common.h"

CR_NORETURN static void out_of_memory(size_t n) {
  fprintf(stderr, "ccrelay: out of memory allocating %zu bytes; aborting\n", n);
  abort();
}

void *cr_malloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL)
    out_of_memory(n);
  return p;
}

void *cr_calloc(size_t count, size_t size) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (p == NULL)
    out_of_memory(count * size);
  return p;
}

void *cr_realloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL)
    out_of_memory(n);
  return q;
}

char *cr_strndup(const char *s, size_t n) {
  char *d = cr_malloc(n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *cr_strdup(const char *s) { return s ? cr_strndup(s, strlen(s)) : NULL; }

void cr_wipe(void *p, size_t len) {
  volatile unsigned char *v = p;
  while (len--)
    *v++ = 0;
}

void cr_freelist_init(cr_freelist_t *fl, size_t size, size_t max) {
  fl->head = NULL;
  fl->n = 0;
  fl->max = max;
  fl->size = CR_MAX(size, sizeof(void *));
}

void *cr_freelist_get(cr_freelist_t *fl) {
  void *p = fl->head;
  if (p == NULL)
    return cr_calloc(1, fl->size);
  memcpy(&fl->head, p, sizeof fl->head);
  fl->n--;
  memset(p, 0, fl->size);
  return p;
}

void cr_freelist_put(cr_freelist_t *fl, void *p) {
  if (p == NULL)
    return;
  if (fl->n >= fl->max) {
    free(p);
    return;
  }
  memcpy(p, &fl->head, sizeof fl->head);
  fl->head = p;
  fl->n++;
}

void cr_freelist_drain(cr_freelist_t *fl) {
  void *p;
  while ((p = fl->head) != NULL) {
    memcpy(&fl->head, p, sizeof fl->head);
    free(p);
  }
  fl->n = 0;
}

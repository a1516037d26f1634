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

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* Small macros every module uses. libc only. */
#ifndef CCRELAY_COMMON_H
#define CCRELAY_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define cr_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define CR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CR_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Copies src into dst[size] (size > 0), truncating; always NUL-terminated. Returns the bytes copied.
 * For the per-request paths, where snprintf("%s") costs a format parse per call. */
static inline size_t cr_strlcpy(char *dst, const char *src, size_t size) {
  size_t n = strnlen(src, size - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
  return n;
}

/* Writes v in decimal to out (at least 21 bytes), NUL-terminated; returns the digits written. */
static inline size_t cr_u64_dec(char *out, uint64_t v) {
  char tmp[20];
  size_t n = 0, i;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  out[n] = '\0';
  return n;
}

#if defined(__GNUC__)
#define CR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CR_NORETURN __attribute__((noreturn))
#define CR_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define CR_PRINTF(fmt, args)
#define CR_NORETURN
#define CR_WARN_UNUSED
#endif

#endif

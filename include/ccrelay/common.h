/* Small macros every module uses. libc only. */
#ifndef CCRELAY_COMMON_H
#define CCRELAY_COMMON_H

#include <stddef.h>

#define cr_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define CR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define CR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CR_MAX(a, b) ((a) > (b) ? (a) : (b))

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

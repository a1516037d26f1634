/* SPDX-License-Identifier: Apache-2.0 */
/* One line per event on stderr, logfmt (`ts=... level=info msg="..." key=value`) or JSON
 * (`{"ts":...,"level":...,"msg":...,"key":value}`), one key/value API for both.
 *
 * A call names its fields in a template: `"peer=%s status=%d reason=\"%s: %s\""`. Keys are literal
 * text of the template (never an argument); a value is literal text and printf conversions (%s %d %u
 * %ld %lld %zu %llu %x %c %p, precision `.*` for %s), quoted in the template when it has spaces. Each
 * argument is escaped for the output format as the line is written: JSON strings per RFC 8259 (bytes
 * that are not UTF-8 become U+FFFD), logfmt values quoted when needed with \" \\ \n \r \t \xNN.
 * A value that is one integer conversion alone is a JSON number. `?key=` marks an optional field, left
 * out when its value is empty or the number 0 (`?error=\"%s\"`, `?truncated=%d`). A %s argument longer than
 * CR_LOG_ARG_MAX bytes, and a value longer than CR_LOG_VALUE_MAX, is cut and ends in "..."; a line
 * longer than CR_LOG_LINE_MAX keeps its whole fields that fit and says `log_cut=true`. Secrets are
 * never passed here. */
#ifndef CCRELAY_LOG_H
#define CCRELAY_LOG_H

#include <stdint.h>

#include "ccrelay/common.h"

typedef enum { CR_LOG_DEBUG, CR_LOG_INFO, CR_LOG_WARN, CR_LOG_ERROR } cr_log_level_t;
typedef enum { CR_LOG_LOGFMT, CR_LOG_JSON } cr_log_format_t;

void cr_log_setup(cr_log_level_t level, cr_log_format_t format);
int cr_log_enabled(cr_log_level_t level);
#define CR_LOG_ARG_MAX 512    /* one %s argument (a request target, a Host, a User-Agent) */
#define CR_LOG_VALUE_MAX 1024 /* one field's value */
#define CR_LOG_LINE_MAX 8192  /* one line */

/* msg: short constant text; fields: the template above, may be NULL or "". */
void cr_log(cr_log_level_t level, const char *msg, const char *fields, ...) CR_PRINTF(3, 4);

#define cr_log_debug(msg, ...) do { if (cr_log_enabled(CR_LOG_DEBUG)) cr_log(CR_LOG_DEBUG, msg, __VA_ARGS__); } while (0)
#define cr_log_info(msg, ...) cr_log(CR_LOG_INFO, msg, __VA_ARGS__)
#define cr_log_warn(msg, ...) cr_log(CR_LOG_WARN, msg, __VA_ARGS__)
#define cr_log_error(msg, ...) cr_log(CR_LOG_ERROR, msg, __VA_ARGS__)

/* Writes the buffered lines out. Info and debug lines are buffered until this is called (the roles
 * call it once per event-loop turn and at exit); warnings and errors are written at once. */
void cr_log_flush(void);


/* Rate limit for a kind of line a peer can provoke at will (a refused connection, a failed accept):
 * the first `burst` events of each window are logged one by one; the rest are only counted, and the
 * owner writes one summary line for them when the window is over. Zero-initialise, then set window_ms
 * and burst. */
typedef struct cr_log_limit {
  uint64_t window_ms;
  unsigned burst;
  uint64_t start_ms;   /* the current window's start */
  uint64_t in_window;  /* events in the current window */
  uint64_t suppressed; /* of those, not logged one by one */
} cr_log_limit_t;

/* Counts one event at now_ms; 1 when it may be logged on its own line, 0 when it is only counted. */
int cr_log_limit_hit(cr_log_limit_t *l, uint64_t now_ms);
/* When the window that began at start_ms is over at now_ms: the events it suppressed (0 when none),
 * and a new window begins. 0 while the window is still open. Call it from a timer, or before
 * hit, so a summary is written even after the events stopped. */
uint64_t cr_log_limit_due(cr_log_limit_t *l, uint64_t now_ms);

#endif

#include "ccrelay/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <errno.h>
#include <unistd.h>

#include "ccrelay/common.h"

static cr_log_level_t min_level = CR_LOG_INFO;

/* Lines wait here until cr_log_flush (once per event-loop turn), so a busy relay pays one write(2)
 * for many access lines. Warnings and errors, and a full buffer, flush at once. Every line is whole
 * in the buffer, so lines stay whole when several processes share a pipe. */
static char pending[64 * 1024];
static size_t pending_len;

static void append_line(const char *line, cr_log_level_t level) {
  size_t n = strlen(line);
  if (pending_len + n > sizeof pending)
    cr_log_flush();
  if (n > sizeof pending) {
    n = sizeof pending;
  }
  memcpy(pending + pending_len, line, n);
  pending_len += n;
  if (level >= CR_LOG_WARN)
    cr_log_flush();
}
static cr_log_format_t out_format = CR_LOG_LOGFMT;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cr_log_setup(cr_log_level_t level, cr_log_format_t format) {
  min_level = level;
  out_format = format;
}

int cr_log_enabled(cr_log_level_t level) { return level >= min_level; }

char *cr_log_quote(char *out, size_t outlen, const char *s) {
  size_t o = 0;
  if (outlen == 0)
    return out;
  for (; s && *s && o + 5 < outlen; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
    } else {
      out[o++] = (char)c;
    }
  }
  out[o] = '\0';
  return out;
}

/* "2024-05-01T12:00:00.123Z" into out (at least 32 bytes); returns its length. The part up to the
 * seconds is formatted once per second. */
static size_t timestamp(char *out) {
  static time_t cached_sec = (time_t)-1;
  static char cached[24];
  static size_t cached_len;
  struct timeval tv;
  struct tm tm;
  unsigned ms;
  gettimeofday(&tv, NULL);
  if (tv.tv_sec != cached_sec) {
    gmtime_r(&tv.tv_sec, &tm);
    cached_len = strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = tv.tv_sec;
  }
  memcpy(out, cached, cached_len);
  ms = (unsigned)(tv.tv_usec / 1000);
  out[cached_len] = '.';
  out[cached_len + 1] = (char)('0' + ms / 100);
  out[cached_len + 2] = (char)('0' + ms / 10 % 10);
  out[cached_len + 3] = (char)('0' + ms % 10);
  out[cached_len + 4] = 'Z';
  out[cached_len + 5] = '\0';
  return cached_len + 5;
}

/* Appends one logfmt field list as JSON members. Values keep their text; quoted values keep their
 * escapes, which are valid JSON escapes except \xNN, rewritten as \u00NN. */
static size_t fields_to_json(char *out, size_t len, const char *f) {
  size_t o = 0;
#define PUT(c) do { if (o + 1 < len) out[o++] = (c); } while (0)
  while (*f) {
    while (*f == ' ')
      f++;
    if (!*f)
      break;
    PUT(',');
    PUT('"');
    while (*f && *f != '=' && *f != ' ')
      PUT(*f++);
    PUT('"');
    PUT(':');
    PUT('"');
    if (*f == '=') {
      f++;
      if (*f == '"') {
        f++;
        while (*f && *f != '"') {
          if (*f == '\\' && f[1] == 'x' && f[2] && f[3]) {
            const char *u = "\\u00";
            while (*u)
              PUT(*u++);
            PUT(f[2]);
            PUT(f[3]);
            f += 4;
            continue;
          }
          if (*f == '\\' && f[1]) {
            PUT(*f++);
          }
          PUT(*f++);
        }
        if (*f == '"')
          f++;
      } else {
        while (*f && *f != ' ') {
          if (*f == '"' || *f == '\\')
            PUT('\\');
          PUT(*f++);
        }
      }
    }
    PUT('"');
  }
#undef PUT
  out[o] = '\0';
  return o;
}

#define LINE_MAX_LEN 8192
#define FIELDS_MAX_LEN 4096
#define MSG_MAX_LEN 512

static void put(char *line, size_t *o, const char *s, size_t n) {
  memcpy(line + *o, s, n);
  *o += n;
}

/* logfmt straight into the pending buffer: one formatting pass, no intermediate copies. */
static void log_logfmt(cr_log_level_t level, const char *msg, const char *fields, va_list ap) CR_PRINTF(3, 0);
static void log_logfmt(cr_log_level_t level, const char *msg, const char *fields, va_list ap) {
  char *line;
  size_t o = 0;
  int n;
  if (pending_len + LINE_MAX_LEN > sizeof pending)
    cr_log_flush();
  line = pending + pending_len;
  put(line, &o, "ts=", 3);
  o += timestamp(line + o);
  put(line, &o, " level=", 7);
  put(line, &o, level_names[level], strlen(level_names[level]));
  put(line, &o, " msg=\"", 6);
  cr_log_quote(line + o, MSG_MAX_LEN, msg);
  o += strlen(line + o);
  line[o++] = '"';
  if (fields && *fields) {
    line[o++] = ' ';
    n = vsnprintf(line + o, FIELDS_MAX_LEN, fields, ap);
    if (n > 0)
      o += CR_MIN((size_t)n, (size_t)FIELDS_MAX_LEN - 1);
    else
      o--; /* an empty field list leaves no trailing blank */
  }
  line[o++] = '\n';
  pending_len += o;
  if (level >= CR_LOG_WARN)
    cr_log_flush();
}

void cr_log(cr_log_level_t level, const char *msg, const char *fields, ...) {
  char ts[40], qmsg[MSG_MAX_LEN], fbuf[FIELDS_MAX_LEN], line[LINE_MAX_LEN];
  va_list ap;
  if (level < min_level)
    return;
  if (out_format != CR_LOG_JSON) {
    va_start(ap, fields);
    log_logfmt(level, msg, fields, ap);
    va_end(ap);
    return;
  }
  timestamp(ts);
  fbuf[0] = '\0';
  if (fields && *fields) {
    va_start(ap, fields);
    vsnprintf(fbuf, sizeof fbuf, fields, ap);
    va_end(ap);
  }
  cr_log_quote(qmsg, sizeof qmsg, msg);
  {
    char jf[6144];
    fields_to_json(jf, sizeof jf, fbuf);
    snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"%s}\n", ts,
             level_names[level], qmsg, jf);
  }
  append_line(line, level);
}

void cr_log_flush(void) {
  size_t off = 0;
  while (off < pending_len) {
    ssize_t n = write(STDERR_FILENO, pending + off, pending_len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break; /* stderr is gone or full: dropping log lines beats blocking the relay */
    off += (size_t)n;
  }
  pending_len = 0;
}

int cr_log_limit_hit(cr_log_limit_t *l, uint64_t now_ms) {
  if (l->in_window == 0)
    l->start_ms = now_ms;
  l->in_window++;
  if (l->in_window <= l->burst)
    return 1;
  l->suppressed++;
  return 0;
}

uint64_t cr_log_limit_due(cr_log_limit_t *l, uint64_t now_ms) {
  uint64_t n;
  if (l->in_window == 0 || now_ms - l->start_ms < l->window_ms)
    return 0;
  n = l->suppressed;
  l->in_window = 0;
  l->suppressed = 0;
  return n;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* Log lines, logfmt or JSON, rendered straight from the caller's field template and typed arguments.
 *
 * The template (a constant in our code, checked by the compiler like printf's) names the keys; every
 * argument is escaped for the output format as it is written, so bytes from the network (a request
 * target, a Host, a SOAPAction) can neither end a value nor add a field nor break the line, and a JSON
 * line is always valid JSON with numbers as numbers. */
#include "ccrelay/log.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ccrelay/common.h"

static cr_log_level_t min_level = CR_LOG_INFO;
static cr_log_format_t out_format = CR_LOG_LOGFMT;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* Lines wait here until cr_log_flush (once per event-loop turn), so a busy relay pays one write(2)
 * for many access lines. Warnings and errors, and a full buffer, flush at once. Every line is whole
 * in the buffer, so lines stay whole when several processes share a pipe. */
static char pending[64 * 1024];
static size_t pending_len;

void cr_log_setup(cr_log_level_t level, cr_log_format_t format) {
  min_level = level;
  out_format = format;
}

int cr_log_enabled(cr_log_level_t level) { return level >= min_level; }

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

/* ---- output with a hard end ---- */

/* Room kept back for what closes a line: `,"log_cut":true}` and the newline. */
#define LINE_TAIL 24

typedef struct out {
  char *p;
  size_t len;
  size_t cap; /* excluding LINE_TAIL */
  int full;
} out_t;

static void put(out_t *o, const char *s, size_t n) {
  if (o->full || o->len + n > o->cap) {
    o->full = 1;
    return;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void putc_(out_t *o, char c) { put(o, &c, 1); }

#define PUT_LIT(o, lit) put(o, lit, sizeof(lit) - 1)

static const char hexdig[] = "0123456789abcdef";

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 when the bytes there are not one
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len, i;
  uint32_t cp;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4, cp = c & 0x07;
  else
    return 0;
  if (len > n)
    return 0;
  for (i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
    return 0;
  return len;
}

/* A quoted string, escaped for its format: quotes and backslashes, \n \r \t, then the two formats
 * part. A control byte is \u00NN in JSON and \xNN in logfmt; a byte that is not UTF-8 is U+FFFD in
 * JSON (a JSON text must be UTF-8) and \xNN in logfmt. */
static void put_quoted(out_t *o, const char *s, size_t n, int json) {
  const unsigned char *u = (const unsigned char *)s;
  putc_(o, '"');
  for (size_t i = 0; i < n;) {
    unsigned char c = u[i];
    size_t l = c >= 0x80 ? utf8_len(u + i, n - i) : 1;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(o, e, 2);
    } else if (c == '\n') {
      put(o, "\\n", 2);
    } else if (c == '\r') {
      put(o, "\\r", 2);
    } else if (c == '\t') {
      put(o, "\\t", 2);
    } else if (c < 0x20 || c == 0x7f || l == 0) {
      char x[4] = {'\\', 'x', hexdig[c >> 4], hexdig[c & 15]};
      char j[6] = {'\\', 'u', '0', '0', hexdig[c >> 4], hexdig[c & 15]};
      if (!json)
        put(o, x, 4);
      else if (l == 0)
        put(o, "\\ufffd", 6);
      else
        put(o, j, 6);
      l = 1;
    } else {
      put(o, s + i, l);
    }
    i += l;
  }
  putc_(o, '"');
}

static void put_json_string(out_t *o, const char *s, size_t n) { put_quoted(o, s, n, 1); }

/* A logfmt value: bare when it is non-empty printable ASCII with no space, quote, equals sign or
 * backslash (and the template did not quote it); else quoted. */
static void put_logfmt_value(out_t *o, const char *s, size_t n, int force_quotes) {
  const unsigned char *u = (const unsigned char *)s;
  int bare = n > 0 && !force_quotes;
  for (size_t i = 0; i < n && bare; i++)
    bare = u[i] > 0x20 && u[i] < 0x7f && u[i] != '"' && u[i] != '=' && u[i] != '\\';
  if (bare)
    put(o, s, n);
  else
    put_quoted(o, s, n, 0);
}

/* quoted: the template quoted this value; logfmt keeps the quotes even when they are not needed, so
 * a reader's pattern for `key="value"` holds whatever the value is. */
static void put_value(out_t *o, const char *s, size_t n, int quoted) {
  if (out_format == CR_LOG_JSON)
    put_json_string(o, s, n);
  else
    put_logfmt_value(o, s, n, quoted);
}

/* ---- one field's value, expanded from its template ---- */

typedef struct val {
  char b[CR_LOG_VALUE_MAX];
  size_t n;
  int cut;
} val_t;

static void val_put(val_t *v, const char *s, size_t n) {
  size_t room = sizeof v->b - v->n;
  if (n > room) {
    n = room;
    v->cut = 1;
  }
  memcpy(v->b + v->n, s, n);
  v->n += n;
}

/* Expands the conversion at *fp ('%' there) with its argument from ap into v; advances *fp past it.
 * Returns 1 for an integer conversion (d, i, u), else 0. */
static int expand(const char **fp, va_list *ap, val_t *v) {
  const char *f = *fp + 1;
  char tmp[64];
  int prec = -1, lmod = 0, n; /* lmod: 0 none, 1 l, 2 ll, 3 z, 4 j, 5 t, -1 h, -2 hh */
  size_t sl;
  if (*f == '%') {
    val_put(v, "%", 1);
    *fp = f + 1;
    return 0;
  }
  while (*f && strchr("-+ #0", *f))
    f++;
  if (*f == '*') {
    (void)va_arg(*ap, int); /* widths change nothing in a log value */
    f++;
  }
  while (*f >= '0' && *f <= '9')
    f++;
  if (*f == '.') {
    f++;
    if (*f == '*') {
      prec = va_arg(*ap, int);
      f++;
    } else {
      prec = 0;
      while (*f >= '0' && *f <= '9')
        prec = prec * 10 + (*f++ - '0');
    }
  }
  if (f[0] == 'h' && f[1] == 'h')
    lmod = -2, f += 2;
  else if (f[0] == 'h')
    lmod = -1, f++;
  else if (f[0] == 'l' && f[1] == 'l')
    lmod = 2, f += 2;
  else if (f[0] == 'l')
    lmod = 1, f++;
  else if (f[0] == 'z')
    lmod = 3, f++;
  else if (f[0] == 'j')
    lmod = 4, f++;
  else if (f[0] == 't')
    lmod = 5, f++;
  *fp = f + 1;
  switch (*f) {
  case 'd':
  case 'i': {
    long long x = lmod == 2 ? va_arg(*ap, long long)
                  : lmod == 1 || lmod == 3 || lmod == 5 ? (long long)va_arg(*ap, long)
                  : lmod == 4 ? (long long)va_arg(*ap, intmax_t)
                              : (long long)va_arg(*ap, int);
    n = snprintf(tmp, sizeof tmp, "%lld", x);
    val_put(v, tmp, (size_t)n);
    return 1;
  }
  case 'u':
  case 'x':
  case 'X':
  case 'o': {
    unsigned long long x = lmod == 2 ? va_arg(*ap, unsigned long long)
                           : lmod == 1 || lmod == 3 || lmod == 5 ? (unsigned long long)va_arg(*ap, unsigned long)
                           : lmod == 4 ? (unsigned long long)va_arg(*ap, uintmax_t)
                                       : (unsigned long long)va_arg(*ap, unsigned);
    n = *f == 'u'   ? snprintf(tmp, sizeof tmp, "%llu", x)
        : *f == 'o' ? snprintf(tmp, sizeof tmp, "%llo", x)
        : *f == 'x' ? snprintf(tmp, sizeof tmp, "%llx", x)
                    : snprintf(tmp, sizeof tmp, "%llX", x);
    val_put(v, tmp, (size_t)n);
    return *f == 'u';
  }
  case 'c': {
    char c = (char)va_arg(*ap, int);
    val_put(v, &c, 1);
    return 0;
  }
  case 'p':
    n = snprintf(tmp, sizeof tmp, "%p", va_arg(*ap, void *));
    val_put(v, tmp, (size_t)n);
    return 0;
  case 's': {
    const char *s = va_arg(*ap, const char *);
    if (s == NULL)
      s = "(null)";
    sl = prec >= 0 ? strnlen(s, (size_t)prec) : strnlen(s, CR_LOG_ARG_MAX + 1);
    if (sl > CR_LOG_ARG_MAX) { /* caller-controlled text has a cap of its own, marked */
      val_put(v, s, CR_LOG_ARG_MAX);
      val_put(v, "...", 3);
    } else {
      val_put(v, s, sl);
    }
    return 0;
  }
  default:
    assert(!"log field template: unsupported conversion");
    *fp = f;
    return 0;
  }
}

/* Renders the field template f with its arguments: ` key=value` (logfmt) or `,"key":value` (JSON) for
 * each field. A template is `key=VALUE key2="VALUE with spaces" ?key3=VALUE`: keys are literal; a VALUE
 * mixes literal text and conversions, and is a JSON number when it is one integer conversion alone; a
 * `?` before a key leaves the field out when its value is empty or the number 0. */
static void render_fields(out_t *o, const char *f, va_list *ap) {
  val_t v;
  while (*f) {
    size_t field_start = o->len;
    const char *key, *end;
    int quoted, numeric = 0, parts = 0;
    int optional;
    while (*f == ' ')
      f++;
    if (!*f)
      break;
    optional = *f == '?';
    f += optional;
    key = f;
    while (*f && *f != '=' && *f != ' ' && *f != '%')
      f++;
    if (*f != '=' || f == key) {
      /* Not `key=`: a template bug. Say so in the line rather than guess where fields are. */
      assert(!"log field template: expected key=");
      if (out_format == CR_LOG_JSON)
        PUT_LIT(o, ",\"log_template_error\":true");
      else
        PUT_LIT(o, " log_template_error=true");
      return;
    }
    end = f++;
    quoted = *f == '"';
    if (quoted)
      f++;
    v.n = 0;
    v.cut = 0;
    while (*f && (quoted ? *f != '"' : *f != ' ')) {
      if (*f == '%') {
        numeric = expand(&f, ap, &v) && parts == 0;
        parts++;
        continue;
      }
      if (quoted && f[0] == '\\' && f[1] == '"')
        f++;
      val_put(&v, f, 1);
      f++;
      parts++;
    }
    if (quoted && *f == '"')
      f++;
    numeric = numeric && parts == 1 && !quoted && !v.cut;
    if (optional && (v.n == 0 || (numeric && v.n == 1 && v.b[0] == '0')))
      continue; /* `?key=`: left out when empty (or 0) */
    if (v.cut && v.n >= 3)
      memcpy(v.b + v.n - 3, "...", 3);
    if (out_format == CR_LOG_JSON) {
      putc_(o, ',');
      put_json_string(o, key, (size_t)(end - key));
      putc_(o, ':');
    } else {
      putc_(o, ' ');
      put(o, key, (size_t)(end - key));
      putc_(o, '=');
    }
    if (numeric)
      put(o, v.b, v.n);
    else
      put_value(o, v.b, v.n, quoted);
    if (o->full) { /* whole fields only: this one did not fit */
      o->len = field_start;
      return;
    }
  }
}

void cr_log(cr_log_level_t level, const char *msg, const char *fields, ...) {
  char ts[40];
  out_t o;
  size_t tslen, mark;
  va_list ap, aq;
  if (level < min_level)
    return;
  if (pending_len + CR_LOG_LINE_MAX > sizeof pending)
    cr_log_flush();
  o.p = pending + pending_len;
  o.len = 0;
  o.cap = CR_LOG_LINE_MAX - LINE_TAIL;
  o.full = 0;
  tslen = timestamp(ts);
  if (out_format == CR_LOG_JSON) {
    PUT_LIT(&o, "{\"ts\":\"");
    put(&o, ts, tslen);
    PUT_LIT(&o, "\",\"level\":\"");
    put(&o, level_names[level], strlen(level_names[level]));
    PUT_LIT(&o, "\",\"msg\":");
    put_json_string(&o, msg, strlen(msg));
  } else {
    PUT_LIT(&o, "ts=");
    put(&o, ts, tslen);
    PUT_LIT(&o, " level=");
    put(&o, level_names[level], strlen(level_names[level]));
    PUT_LIT(&o, " msg=");
    /* msg is always quoted, as it always was: readers key on msg="...". */
    put_logfmt_value(&o, msg, strlen(msg), 1);
  }
  mark = o.len;
  if (fields && *fields) {
    va_start(ap, fields);
    va_copy(aq, ap);
    render_fields(&o, fields, &aq);
    va_end(aq);
    va_end(ap);
  }
  o.cap = CR_LOG_LINE_MAX;
  if (o.full) { /* the fields that fit are there, whole; say the rest was cut */
    o.full = 0;
    if (o.len < mark)
      o.len = mark;
    if (out_format == CR_LOG_JSON)
      PUT_LIT(&o, ",\"log_cut\":true");
    else
      PUT_LIT(&o, " log_cut=true");
  }
  if (out_format == CR_LOG_JSON)
    putc_(&o, '}');
  putc_(&o, '\n');
  pending_len += o.len;
  if (level >= CR_LOG_WARN)
    cr_log_flush();
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

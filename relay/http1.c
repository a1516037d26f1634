/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/http1.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <llhttp.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"

/* How the pieces fit: llhttp (strict build) does the grammar; in front of it a line scanner looks at
 * every byte of each header and trailer section before llhttp does, for what strict llhttp still
 * lets through (a lone LF ending the request line or the header section, whitespace-led lines,
 * control bytes) and for the size bound. The scanner knows where a section ends, so llhttp is fed
 * exactly one section at a time; body bytes go straight to llhttp, which is paused at each message
 * end and at the last chunk so that scanning resumes at the right byte. */

#define DEFAULT_MAX_HEAD (16 * 1024)
#define DEFAULT_MAX_HEADERS 100

typedef enum { S_HEAD, S_BODY, S_TRAILER } state_t;
typedef enum { T_ORIGIN, T_ABSOLUTE, T_ASTERISK } target_form_t;

struct cr_http1_parser {
  llhttp_t ll;
  cr_http1_type_t type;
  cr_http1_callbacks_t cbs;
  void *ud;
  size_t max_head;
  size_t max_headers; /* the head's own fields; the message has head_room more for on_head's callee */
  size_t max_chunk_line;
  cr_http_msg_t msg;
  cr_buf_t field;  /* the method, target or header being reassembled from llhttp's pieces */
  size_t name_len; /* for a header: bytes of field holding the name */
  cr_http_hdr_t name_id; /* and its id */
  state_t state;

  /* line scanner over the current header or trailer section */
  size_t scan_bytes; /* section bytes seen, leading empty lines included */
  size_t scan_line;  /* bytes in the current line so far */
  size_t scan_lines; /* non-empty lines completed */
  unsigned scan_cr : 1;   /* the previous byte was CR */
  unsigned scan_done : 1; /* the blank line ending the section was seen */

  /* framing facts of the message being parsed */
  unsigned nhost, ncl, nte;
  target_form_t target_form;
  size_t auth_off, path_off; /* absolute-form: where the authority and the path start in target */
  /* A chunked body is fed to llhttp a piece at a time so that every chunk-size line (with its
   * extensions, which llhttp reads without bound) is measured: chunk_left bytes of chunk data and
   * its CRLF, then a line of which chunk_line bytes were seen. */
  uint64_t chunk_left;
  size_t chunk_line;
  unsigned chunk_framed : 1; /* in a chunked body, before the last chunk */
  unsigned interim : 1;      /* a 1xx response: only on_interim sees it */
  unsigned expect_no_body : 1;
  unsigned paused : 1;       /* a user callback asked to pause */
  unsigned end_pending : 1;  /* message ended while paused after on_head: on_end still owed */
  unsigned in_finish : 1;
  unsigned finished : 1;
  int err;
  const char *errmsg;
  char errbuf[160];
};

static cr_http1_parser_t *from_ll(llhttp_t *ll) { return cr_container_of(ll, cr_http1_parser_t, ll); }

/* Records the first error; returns it so call sites can `return fail(...)`. */
static int fail(cr_http1_parser_t *p, int err, const char *msg) {
  if (p->err == 0) {
    p->err = err;
    p->errmsg = msg;
  }
  return p->err;
}

/* Inside llhttp callbacks: remember why, and make llhttp stop. */
static int cb_fail(cr_http1_parser_t *p, int err, const char *msg) {
  fail(p, err, msg);
  return HPE_USER;
}

static int fail_too_large(cr_http1_parser_t *p, const char *what) {
  snprintf(p->errbuf, sizeof(p->errbuf), "%s larger than %zu bytes", what, p->max_head);
  return fail(p, CR_EHTTP_TOO_LARGE, p->errbuf);
}

static void scan_reset(cr_http1_parser_t *p) {
  p->scan_bytes = p->scan_line = p->scan_lines = 0;
  p->scan_cr = p->scan_done = 0;
}

/* Checks section bytes before llhttp sees them. Returns how many are clean, through the blank line
 * that ends the section if it is among them (then scan_done is set). On a violation records the
 * error and returns the count of clean bytes before it, which llhttp still gets first, so that an
 * earlier grammar error is the one reported. */
static size_t scan(cr_http1_parser_t *p, const char *d, size_t n, int *err) {
  const unsigned char *s = (const unsigned char *)d;
  const int trailer = p->state == S_TRAILER;
  const size_t max = p->max_head;
  /* The state lives in locals while scanning (stores through p on every byte cost a third of the
   * parser's time) and goes back on every exit. */
  size_t bytes = p->scan_bytes, line = p->scan_line, lines = p->scan_lines;
  int cr = p->scan_cr;
  size_t i = 0, clean = n;
  *err = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (line > 0 && !cr && c >= 0x20 && c != 0x7f) {
      /* inside a line: ordinary bytes run up to the next CR, tab or control byte */
      size_t j = i + 1 + cr_http_text_run(d + i + 1, n - i - 1);
      if (j - i > max - CR_MIN(bytes, max)) {
        clean = i + (max - CR_MIN(bytes, max));
        bytes = max + 1;
        *err = fail_too_large(p, trailer ? "trailer section" : "header section");
        goto out;
      }
      bytes += j - i;
      line += j - i;
      i = j;
      continue;
    }
    if (++bytes > max) {
      *err = fail_too_large(p, trailer ? "trailer section" : "header section");
      clean = i;
      goto out;
    }
    if (cr) {
      cr = 0;
      if (c != '\n') {
        *err = fail(p, CR_EHTTP_PARSE, "bare CR in a line ending (CRLF required)");
        clean = i;
        goto out;
      }
      if (line > 0) {
        lines++;
        line = 0;
      } else if (trailer || lines > 0) {
        p->scan_done = 1;
        clean = i + 1;
        goto out;
      }
      /* else an empty line before the request line: RFC 9112 2.2 lets a server skip it */
      i++;
      continue;
    }
    if (c == '\r') {
      cr = 1;
      i++;
      continue;
    }
    if (c == '\n') {
      *err = fail(p, CR_EHTTP_PARSE, "bare LF line ending (CRLF required)");
      clean = i;
      goto out;
    }
    if (line == 0 && (c == ' ' || c == '\t') && (trailer || lines > 0)) {
      *err = fail(p, CR_EHTTP_PARSE, "obs-fold header continuation is not allowed");
      clean = i;
      goto out;
    }
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      *err = fail(p, CR_EHTTP_PARSE, "control character in the header section");
      clean = i;
      goto out;
    }
    line++;
    i++;
  }
out:
  p->scan_bytes = bytes;
  p->scan_line = line;
  p->scan_lines = lines;
  p->scan_cr = cr;
  return clean;
}

static int field_append(cr_http1_parser_t *p, const char *at, size_t len) {
  if (cr_buf_append(&p->field, at, len) < 0) {
    fail_too_large(p, "header field");
    return HPE_USER;
  }
  return 0;
}

static int on_message_begin(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  cr_http_msg_reset(&p->msg);
  cr_buf_reset(&p->field);
  p->name_len = 0;
  p->nhost = p->ncl = p->nte = 0;
  p->interim = 0;
  p->chunk_framed = 0;
  return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t len) { return field_append(from_ll(ll), at, len); }

static int on_method_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  cr_http_msg_set_method(&p->msg, p->field.base, p->field.len);
  cr_buf_reset(&p->field);
  return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len) { return field_append(from_ll(ll), at, len); }

/* Why the path or query of a target stops being one at byte at. */
static int bad_target(cr_http1_parser_t *p, const char *s, size_t len, size_t at) {
  if (at < len && s[at] == '#')
    return cb_fail(p, CR_EHTTP_PARSE, "request target has a fragment ('#')");
  if (at < len && s[at] == '%')
    return cb_fail(p, CR_EHTTP_PARSE, "malformed percent-encoding in the request target");
  return cb_fail(p, CR_EHTTP_PARSE, "character not allowed in the request target");
}

/* Length of a leading "http://" or "https://" (scheme case-insensitive), else 0. */
static size_t http_scheme_len(const char *s, size_t len) {
  size_t n = len >= 8 && strncasecmp(s, "https://", 8) == 0 ? 8 : 0;
  if (n == 0 && len >= 7 && strncasecmp(s, "http://", 7) == 0)
    n = 7;
  return n;
}

/* llhttp takes any visible ASCII in a target; RFC 9112 3.2 allows much less. Origin-form is the
 * usual case; absolute-form is kept whole here and turned into origin-form plus Host once the
 * headers are known (on_headers_complete); asterisk-form only with OPTIONS; authority-form only
 * with CONNECT, which is refused anyway. */
static int on_url_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  const char *s = p->field.base;
  size_t len = p->field.len, at, scheme, auth_end;
  p->target_form = T_ORIGIN;
  if (len > 0 && s[0] == '/') {
    at = cr_http_path_query_end(s, len);
    if (at != len)
      return bad_target(p, s, len, at);
  } else if (len == 1 && s[0] == '*') {
    if (p->msg.method == NULL || strcmp(p->msg.method, "OPTIONS") != 0)
      return cb_fail(p, CR_EHTTP_PARSE, "request target '*' outside an OPTIONS request");
    p->target_form = T_ASTERISK;
  } else if (llhttp_get_method(ll) != HTTP_CONNECT) { /* CONNECT gets its own refusal later */
    scheme = http_scheme_len(s, len);
    if (scheme == 0)
      return cb_fail(p, CR_EHTTP_PARSE, "invalid request target");
    for (auth_end = scheme; auth_end < len; auth_end++)
      if (s[auth_end] == '/' || s[auth_end] == '?' || s[auth_end] == '#')
        break;
    if (auth_end == scheme || !cr_http_host_valid(s + scheme, auth_end - scheme))
      return cb_fail(p, CR_EHTTP_PARSE, "invalid authority in an absolute-form request target");
    at = cr_http_path_query_end(s + auth_end, len - auth_end);
    if (at != len - auth_end)
      return bad_target(p, s + auth_end, len - auth_end, at);
    p->target_form = T_ABSOLUTE;
    p->auth_off = scheme;
    p->path_off = auth_end;
  }
  cr_http_msg_set_target(&p->msg, s, len);
  cr_buf_reset(&p->field);
  return 0;
}

/* RFC 9112 3.2.2: with an absolute-form target the server ignores the Host field and uses the
 * target's authority instead. The head carries origin-form and that authority as its one Host, so
 * every later hop (and the routing on Host) sees one consistent answer. */
static int absolute_to_origin(cr_http1_parser_t *p) {
  cr_http_msg_t *m = &p->msg;
  const char *t = m->target, *rest = t + p->path_off;
  size_t rlen = strlen(rest);
  if ((cr_http_msg_find_id(m, CR_HDR_HOST) == NULL && m->nheaders >= p->max_headers) ||
      cr_http_msg_set_header(m, "Host", 4, t + p->auth_off, p->path_off - p->auth_off) < 0) {
    snprintf(p->errbuf, sizeof(p->errbuf), "more than %zu header fields", p->max_headers);
    return cb_fail(p, CR_EHTTP_TOO_LARGE, p->errbuf);
  }
  if (rlen == 0 && strcmp(m->method, "OPTIONS") == 0) { /* RFC 9112 3.2.4 */
    cr_http_msg_set_target(m, "*", 1);
  } else if (rlen == 0 || rest[0] == '?') { /* an empty path is "/" */
    cr_buf_reset(&p->field);
    if (cr_buf_append(&p->field, "/", 1) < 0 || cr_buf_append(&p->field, rest, rlen) < 0)
      return cb_fail(p, CR_EHTTP_TOO_LARGE, "request target too long");
    cr_http_msg_set_target(m, p->field.base, p->field.len);
    cr_buf_reset(&p->field);
  } else {
    cr_http_msg_set_target(m, rest, rlen);
  }
  return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len) {
  cr_http1_parser_t *p = from_ll(ll);
  if (p->state == S_TRAILER) /* trailers are discarded */
    return 0;
  return field_append(p, at, len);
}

/* Framing conflicts are refused as soon as the second name is read, before llhttp looks at the
 * value, so the message says exactly what was wrong. */
static int on_header_field_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  if (p->state == S_TRAILER)
    return 0;
  p->name_len = p->field.len;
  if (p->name_len == 0) /* strict llhttp still takes ": value" as a field with no name */
    return cb_fail(p, CR_EHTTP_PARSE, "empty header field name");
  p->name_id = cr_http_hdr_id(p->field.base, p->name_len);
  switch (p->name_id) {
  case CR_HDR_HOST:
    if (++p->nhost > 1 && p->type == CR_HTTP1_REQUEST)
      return cb_fail(p, CR_EHTTP_PARSE, "more than one Host header");
    break;
  case CR_HDR_CONTENT_LENGTH:
    if (++p->ncl > 1)
      return cb_fail(p, CR_EHTTP_PARSE, "repeated or conflicting Content-Length headers");
    if (p->nte)
      return cb_fail(p, CR_EHTTP_PARSE, "Content-Length and Transfer-Encoding both present");
    break;
  case CR_HDR_TRANSFER_ENCODING:
    if (++p->nte > 1)
      return cb_fail(p, CR_EHTTP_PARSE, "repeated Transfer-Encoding header (only a single \"chunked\" is accepted)");
    if (p->ncl)
      return cb_fail(p, CR_EHTTP_PARSE, "Content-Length and Transfer-Encoding both present");
    break;
  default:
    break;
  }
  return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len) {
  cr_http1_parser_t *p = from_ll(ll);
  if (p->state == S_TRAILER)
    return 0;
  return field_append(p, at, len);
}

static int on_header_value_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  int r, host;
  if (p->state == S_TRAILER)
    return 0;
  host = p->type == CR_HTTP1_REQUEST && p->name_id == CR_HDR_HOST;
  r = p->msg.nheaders >= p->max_headers
          ? CR_ELIMIT
          : cr_http_msg_add_header_id(&p->msg, p->name_id, p->field.base, p->name_len, p->field.base + p->name_len,
                                      p->field.len - p->name_len);
  cr_buf_reset(&p->field);
  p->name_len = 0;
  if (r < 0) {
    snprintf(p->errbuf, sizeof(p->errbuf), "more than %zu header fields", p->max_headers);
    return cb_fail(p, CR_EHTTP_TOO_LARGE, p->errbuf);
  }
  /* RFC 9112 3.2: an invalid Host gets 400, even where an absolute-form target overrides it. */
  if (host) {
    const cr_http_header_t *h = &p->msg.headers[p->msg.nheaders - 1];
    if (!cr_http_host_valid(h->value, h->value_len))
      return cb_fail(p, CR_EHTTP_PARSE, "invalid Host header value");
  }
  return 0;
}

/* Content-Length as llhttp accepted it is already 1*DIGIT; this keeps our own copy honest. */
static int parse_length(const char *s, size_t len, int64_t *out) {
  int64_t v = 0;
  size_t i;
  if (len == 0)
    return -1;
  for (i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    if (v > (INT64_MAX - (s[i] - '0')) / 10)
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

static int persistent_connection(const llhttp_t *ll) {
  if (ll->http_minor >= 1)
    return !(ll->flags & F_CONNECTION_CLOSE);
  return (ll->flags & F_CONNECTION_KEEP_ALIVE) != 0;
}

/* Return values are llhttp's: 0 body as framed, 1 no body, HPE_USER error. */
static int on_headers_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  cr_http_msg_t *m = &p->msg;
  const cr_http_header_t *h;
  int no_body = 0, r;

  /* The scanner must have seen this section end too; if not, the two disagree about framing. */
  if (!p->scan_done)
    return cb_fail(p, CR_EHTTP_PARSE, "header section ended where it should not");
  scan_reset(p);
  p->state = S_BODY;

  if (llhttp_get_http_major(ll) != 1 || llhttp_get_http_minor(ll) > 1)
    return cb_fail(p, CR_EHTTP_PARSE, "unsupported HTTP version (only HTTP/1.0 and HTTP/1.1)");
  m->version_minor = llhttp_get_http_minor(ll);

  if (p->type == CR_HTTP1_REQUEST) {
    if (llhttp_get_method(ll) == HTTP_CONNECT)
      return cb_fail(p, CR_EHTTP_PARSE, "CONNECT method is not supported");
    if (p->nhost == 0 && m->version_minor == 1)
      return cb_fail(p, CR_EHTTP_PARSE, "missing Host header in an HTTP/1.1 request");
    if (p->target_form == T_ABSOLUTE && absolute_to_origin(p) < 0)
      return HPE_USER;
  } else {
    m->status = llhttp_get_status_code(ll);
    if (m->status < 100 || m->status > 999)
      return cb_fail(p, CR_EHTTP_PARSE, "invalid status code");
    if (m->status == 101)
      return cb_fail(p, CR_EHTTP_PARSE, "unexpected 101 Switching Protocols (no upgrade was offered)");
    if (m->status < 200) {
      p->interim = 1;
      if (p->cbs.on_interim) {
        r = p->cbs.on_interim(p->ud, m);
        if (r < 0)
          return cb_fail(p, r, "aborted by the interim response handler");
      }
      return 1;
    }
    no_body = p->expect_no_body || m->status == 204 || m->status == 304;
    p->expect_no_body = 0;
  }

  if (p->nte) {
    h = cr_http_msg_find_id(m, CR_HDR_TRANSFER_ENCODING);
    if (m->version_minor == 0)
      return cb_fail(p, CR_EHTTP_PARSE, "Transfer-Encoding in an HTTP/1.0 message");
    if (h == NULL || !cr_http_name_eq(h->value, "chunked"))
      return cb_fail(p, CR_EHTTP_PARSE, "Transfer-Encoding other than a single final \"chunked\"");
    if (p->ncl)
      return cb_fail(p, CR_EHTTP_PARSE, "Content-Length and Transfer-Encoding both present");
    m->chunked = 1;
  }
  if (p->ncl) {
    h = cr_http_msg_find_id(m, CR_HDR_CONTENT_LENGTH);
    if (h == NULL || parse_length(h->value, h->value_len, &m->content_length) < 0)
      return cb_fail(p, CR_EHTTP_PARSE, "invalid Content-Length value");
  }

  p->chunk_framed = m->chunked && !no_body;
  p->chunk_left = 0;
  p->chunk_line = 0;

  /* What llhttp_should_keep_alive will say at the message end, known now so on_head can use it. */
  m->keep_alive = persistent_connection(ll) &&
                  !(p->type == CR_HTTP1_RESPONSE && !no_body && !m->chunked && m->content_length < 0);

  if (p->cbs.on_head) {
    r = p->cbs.on_head(p->ud, m);
    if (r < 0)
      return cb_fail(p, r, "aborted by the message handler");
    if (r == CR_HTTP1_PAUSE)
      p->paused = 1;
  }
  return no_body;
}

static int on_body(llhttp_t *ll, const char *at, size_t len) {
  cr_http1_parser_t *p = from_ll(ll);
  int r;
  if (p->cbs.on_body == NULL || len == 0)
    return 0;
  r = p->cbs.on_body(p->ud, at, len);
  if (r < 0)
    return cb_fail(p, r, "aborted by the body handler");
  if (r == CR_HTTP1_PAUSE) {
    p->paused = 1;
    /* The last byte of a Content-Length body: let llhttp reach the message's end (it needs no more
     * input for that), which on_message_complete then owes the caller after resume. Pausing llhttp
     * here instead would leave the end undelivered until more bytes arrive, and on a keep-alive
     * connection none ever do. */
    if (ll->content_length == 0 && (ll->flags & F_CONTENT_LENGTH) && !(ll->flags & F_CHUNKED))
      return 0;
    return HPE_PAUSED;
  }
  return 0;
}

/* Called right after a chunk-size line's LF. The zero-size chunk: what follows is the trailer
 * section, which the scanner must see first. */
static int on_chunk_header(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  p->chunk_line = 0;
  if (ll->content_length != 0) {
    p->chunk_left = ll->content_length + 2;
    return 0;
  }
  p->chunk_framed = 0;
  p->state = S_TRAILER;
  scan_reset(p);
  return HPE_PAUSED;
}

static int deliver_end(cr_http1_parser_t *p) {
  int r;
  p->end_pending = 0;
  if (p->cbs.on_end == NULL)
    return 0;
  r = p->cbs.on_end(p->ud);
  if (r < 0)
    return fail(p, r, "aborted by the message handler");
  if (r == CR_HTTP1_PAUSE)
    p->paused = 1;
  return 0;
}

/* Always pauses (except under llhttp_finish) so cr_http1_parse learns where the next head begins. */
static int on_message_complete(llhttp_t *ll) {
  cr_http1_parser_t *p = from_ll(ll);
  int pause = p->in_finish ? 0 : HPE_PAUSED;
  if (p->state == S_TRAILER && !p->scan_done)
    return cb_fail(p, CR_EHTTP_PARSE, "trailer section ended where it should not");
  p->state = S_HEAD;
  p->chunk_framed = 0;
  scan_reset(p);
  if (p->interim)
    return pause;
  p->msg.keep_alive = llhttp_should_keep_alive(ll) != 0;
  if (p->paused) {
    p->end_pending = 1;
    return pause;
  }
  if (deliver_end(p) < 0)
    return HPE_USER;
  return pause;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_method_complete = on_method_complete,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_chunk_header = on_chunk_header,
    .on_message_complete = on_message_complete,
};

cr_http1_parser_t *cr_http1_parser_new(cr_http1_type_t type, const cr_http1_limits_t *limits,
                                       const cr_http1_callbacks_t *cbs, void *ud) {
  cr_http1_parser_t *p = cr_calloc(1, sizeof(*p));
  size_t max_headers = limits && limits->max_headers ? limits->max_headers : DEFAULT_MAX_HEADERS;
  p->type = type;
  if (cbs)
    p->cbs = *cbs;
  p->ud = ud;
  p->max_head = limits && limits->max_head_size ? limits->max_head_size : DEFAULT_MAX_HEAD;
  p->max_chunk_line = limits && limits->max_chunk_line ? limits->max_chunk_line : CR_HTTP1_MAX_CHUNK_LINE;
  p->max_headers = max_headers;
  cr_http_msg_init(&p->msg, max_headers + (limits ? limits->head_room : 0));
  cr_buf_init(&p->field, p->max_head);
  p->state = S_HEAD;
  p->errmsg = "";
  llhttp_init(&p->ll, type == CR_HTTP1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
  return p;
}

void cr_http1_parser_release_head(cr_http1_parser_t *p) { cr_http_msg_release(&p->msg); }

void cr_http1_parser_free(cr_http1_parser_t *p) {
  if (p == NULL)
    return;
  cr_http_msg_free(&p->msg);
  cr_buf_free(&p->field);
  free(p);
}

static const char *llhttp_prose(llhttp_errno_t e, const char *reason) {
  switch (e) {
  case HPE_INVALID_METHOD: return "invalid request method";
  case HPE_INVALID_URL: return "invalid request target";
  case HPE_INVALID_VERSION: return "invalid HTTP version";
  case HPE_INVALID_STATUS: return "invalid status line";
  case HPE_INVALID_HEADER_TOKEN:
    if (reason && strstr(reason, "value"))
      return "invalid character in a header value";
    return "invalid character in a header name";
  case HPE_INVALID_CONTENT_LENGTH: return "invalid Content-Length value";
  case HPE_UNEXPECTED_CONTENT_LENGTH:
    if (reason && strstr(reason, "Transfer-Encoding"))
      return "Content-Length and Transfer-Encoding both present";
    return "repeated or conflicting Content-Length headers";
  case HPE_INVALID_TRANSFER_ENCODING: return "Transfer-Encoding other than a single final \"chunked\"";
  case HPE_INVALID_CHUNK_SIZE: return "invalid chunk size line";
  case HPE_CR_EXPECTED:
  case HPE_LF_EXPECTED:
  case HPE_STRICT: return "line ending is not CRLF";
  case HPE_CLOSED_CONNECTION: return "data after a message that closed the connection";
  case HPE_INVALID_EOF_STATE: return "connection closed before the message was complete";
  default: return NULL;
  }
}

static int fail_llhttp(cr_http1_parser_t *p, llhttp_errno_t e) {
  const char *reason = llhttp_get_error_reason(&p->ll);
  const char *msg;
  if (p->err) /* one of our callbacks refused, and already said why */
    return p->err;
  msg = llhttp_prose(e, reason);
  if (msg == NULL) {
    snprintf(p->errbuf, sizeof(p->errbuf), "malformed HTTP message (%s: %s)", llhttp_errno_name(e),
             reason ? reason : "?");
    msg = p->errbuf;
  }
  return fail(p, CR_EHTTP_PARSE, msg);
}

/* Runs llhttp over buf; returns bytes consumed (short only at a pause) or an error. */
static ssize_t exec(cr_http1_parser_t *p, const char *buf, size_t n) {
  size_t off = 0;
  for (;;) {
    llhttp_errno_t e = llhttp_execute(&p->ll, buf + off, n - off);
    const char *pos;
    switch (e) {
    case HPE_OK:
      return (ssize_t)n;
    case HPE_PAUSED:
      pos = llhttp_get_error_pos(&p->ll);
      llhttp_resume(&p->ll);
      return pos - buf;
    case HPE_PAUSED_UPGRADE:
      /* An Upgrade we will not honour (the header is hop-by-hop and never forwarded): the next
       * bytes are HTTP again. */
      pos = llhttp_get_error_pos(&p->ll);
      llhttp_resume_after_upgrade(&p->ll);
      off = (size_t)(pos - buf);
      if (off == n)
        return (ssize_t)n;
      break;
    default:
      return fail_llhttp(p, e);
    }
  }
}

/* A chunked body: chunk data and its CRLF go to llhttp as they come; a chunk-size line only up to
 * its LF, and no further than max_chunk_line bytes (llhttp still sees those first, so that a
 * grammar error in them is the one reported). */
static ssize_t exec_chunked(cr_http1_parser_t *p, const char *buf, size_t n) {
  size_t room, lim, give;
  const char *lf;
  ssize_t r;
  if (p->chunk_left > 0) {
    give = p->chunk_left < n ? (size_t)p->chunk_left : n;
    r = exec(p, buf, give);
    if (r > 0)
      p->chunk_left -= (uint64_t)r;
    return r;
  }
  room = p->max_chunk_line - CR_MIN(p->chunk_line, p->max_chunk_line);
  lim = CR_MIN(n, room);
  lf = memchr(buf, '\n', lim);
  give = lf ? (size_t)(lf - buf) + 1 : lim;
  r = exec(p, buf, give);
  if (r < 0)
    return r;
  if (lf == NULL) {
    p->chunk_line += (size_t)r;
    if (n > room) {
      snprintf(p->errbuf, sizeof(p->errbuf), "chunk size line longer than %zu bytes", p->max_chunk_line);
      return fail(p, CR_EHTTP_PARSE, p->errbuf);
    }
  }
  return r;
}

ssize_t cr_http1_parse(cr_http1_parser_t *p, const char *data, size_t len) {
  size_t off = 0;
  ssize_t r;
  if (p->err)
    return p->err;
  if (p->finished)
    return fail(p, CR_EHTTP_PARSE, "data after the end of the stream");
  if (p->paused)
    return 0;
  if (p->end_pending) {
    if (deliver_end(p) < 0)
      return p->err;
    if (p->paused)
      return 0;
  }
  while (off < len && !p->paused) {
    if (p->state == S_BODY && p->chunk_framed) {
      r = exec_chunked(p, data + off, len - off);
      if (r < 0)
        return r;
      off += (size_t)r;
    } else if (p->state == S_BODY) {
      r = exec(p, data + off, len - off);
      if (r < 0)
        return r;
      off += (size_t)r;
    } else {
      int serr;
      size_t n = scan(p, data + off, len - off, &serr);
      if (n > 0) {
        r = exec(p, data + off, n);
        if (r < 0)
          return r;
        off += (size_t)r;
        if ((size_t)r != n) /* llhttp stopped inside a section: only a bug could do that */
          return fail(p, CR_EHTTP_PARSE, "parser out of step inside a header section");
      }
      if (serr)
        return serr;
      if (p->scan_done) /* section over for the scanner, llhttp still inside it */
        return fail(p, CR_EHTTP_PARSE, "header section not understood");
    }
  }
  return (ssize_t)off;
}

void cr_http1_parser_resume(cr_http1_parser_t *p) { p->paused = 0; }

int cr_http1_parse_eof(cr_http1_parser_t *p) {
  llhttp_errno_t e;
  if (p->err)
    return p->err;
  if (p->finished)
    return 0;
  p->finished = 1;
  if (p->end_pending && deliver_end(p) < 0)
    return p->err;
  switch (p->state) {
  case S_HEAD:
    if (p->scan_bytes > 0 && p->scan_lines + p->scan_line > 0)
      return fail(p, CR_EHTTP_PARSE, "connection closed in the middle of a header section");
    return 0;
  case S_TRAILER:
    return fail(p, CR_EHTTP_PARSE, "connection closed in the middle of a trailer section");
  case S_BODY:
    break;
  }
  p->in_finish = 1;
  e = llhttp_finish(&p->ll);
  p->in_finish = 0;
  if (p->err)
    return p->err;
  if (e != HPE_OK)
    return fail(p, CR_EHTTP_PARSE, "connection closed before the message body was complete");
  return 0;
}

void cr_http1_parser_expect_no_body(cr_http1_parser_t *p) { p->expect_no_body = 1; }

const char *cr_http1_parser_error(const cr_http1_parser_t *p) { return p->err ? p->errmsg : ""; }

int cr_http1_parser_in_message(const cr_http1_parser_t *p) {
  return p->state != S_HEAD || p->end_pending || p->scan_lines > 0 || p->scan_line > 0;
}

/* ---- serialisers ---- */

static int target_valid(const char *s) {
  const unsigned char *u = (const unsigned char *)s;
  if (s == NULL || *s == '\0')
    return 0;
  for (; *u; u++)
    if (*u <= 0x20 || *u == 0x7f)
      return 0;
  return 1;
}

static int headers_valid(const cr_http_msg_t *m, size_t *len) {
  size_t i;
  for (i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *h = &m->headers[i];
    if (!cr_http_header_name_valid(h) || !cr_http_field_value_valid(h->value, h->value_len))
      return 0;
    *len += h->name_len + 2 + h->value_len + 2;
  }
  return 1;
}

static char *put(char *d, const char *s, size_t n) {
  memcpy(d, s, n);
  return d + n;
}

/* Appends the headers and the blank line after a start line already written at d, then commits
 * everything from start. The caller reserved room for it all, so nothing here can fail, and a
 * refusal or a full buffer earlier leaves out untouched. */
static void finish_head(cr_buf_t *out, const cr_http_msg_t *m, char *start, char *d) {
  size_t i;
  for (i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *h = &m->headers[i];
    d = put(d, h->name, h->name_len);
    d = put(d, ": ", 2);
    d = put(d, h->value, h->value_len);
    d = put(d, "\r\n", 2);
  }
  d = put(d, "\r\n", 2);
  cr_buf_commit(out, (size_t)(d - start));
}

int cr_http1_write_request_head(cr_buf_t *out, const cr_http_msg_t *m) {
  size_t hdr_len = 0, mlen, tlen;
  char *start, *d;
  int r;
  if (m->method == NULL || !cr_http_token_valid(m->method, strlen(m->method)) || !target_valid(m->target) ||
      !headers_valid(m, &hdr_len))
    return CR_EHTTP_PARSE;
  mlen = strlen(m->method);
  tlen = strlen(m->target);
  start = cr_buf_reserve(out, mlen + 1 + tlen + 11 + hdr_len + 2, &r);
  if (start == NULL)
    return r;
  d = put(start, m->method, mlen);
  d = put(d, " ", 1);
  d = put(d, m->target, tlen);
  d = put(d, " HTTP/1.1\r\n", 11);
  finish_head(out, m, start, d);
  return 0;
}

int cr_http1_write_response_head(cr_buf_t *out, const cr_http_msg_t *m) {
  const char *reason;
  size_t hdr_len = 0, rlen;
  char *start, *d, code[4];
  int r;
  if (m->status < 100 || m->status > 999 || !headers_valid(m, &hdr_len))
    return CR_EHTTP_PARSE;
  reason = cr_http_reason(m->status);
  rlen = strlen(reason);
  start = cr_buf_reserve(out, 9 + 3 + 1 + rlen + 2 + hdr_len + 2, &r);
  if (start == NULL)
    return r;
  code[0] = (char)('0' + m->status / 100);
  code[1] = (char)('0' + m->status / 10 % 10);
  code[2] = (char)('0' + m->status % 10);
  d = put(start, "HTTP/1.1 ", 9);
  d = put(d, code, 3);
  d = put(d, " ", 1);
  d = put(d, reason, rlen);
  d = put(d, "\r\n", 2);
  finish_head(out, m, start, d);
  return 0;
}

size_t cr_http1_chunk_header(char *out, size_t len) {
  static const char hex[] = "0123456789abcdef";
  char tmp[16];
  size_t n = 0, i;
  do {
    tmp[n++] = hex[len & 0xf];
    len >>= 4;
  } while (len);
  for (i = 0; i < n; i++)
    out[i] = tmp[n - 1 - i];
  out[n++] = '\r';
  out[n++] = '\n';
  out[n] = '\0';
  return n;
}

#define CR_STR2(x) #x
#define CR_STR(x) CR_STR2(x)
const char *cr_http1_llhttp_version(void) {
  return CR_STR(LLHTTP_VERSION_MAJOR) "." CR_STR(LLHTTP_VERSION_MINOR) "." CR_STR(LLHTTP_VERSION_PATCH);
}

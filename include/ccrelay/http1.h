/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 on the wire: the only user of llhttp, built in strict mode with no lenient flag set.
 * Parses request or response heads into cr_http_msg_t and delivers decoded (de-chunked) bodies;
 * serialises heads and chunk framing. Pure code: no I/O, fuzzable.
 *
 * On top of llhttp the request parser refuses: a missing Host (HTTP/1.1), more than one Host,
 * Transfer-Encoding in an HTTP/1.0 message, Transfer-Encoding other than a final "chunked",
 * Content-Length together with Transfer-Encoding, conflicting or repeated Content-Length, obs-fold
 * continuation lines, bare CR or LF line endings, and heads over the size limit. Also refused: control
 * bytes (other than HTAB) anywhere in a head, an empty header name, versions other than HTTP/1.0 and
 * 1.1, and CONNECT (we never tunnel over HTTP/1); a request target that is not RFC 3986 syntax
 * (any byte outside pchar, "/" and the query's "?", a "%" not followed by two hex digits, a
 * fragment), "*" outside OPTIONS, and a Host value that is not uri-host [":" port] (see
 * cr_http_host_valid). An absolute-form target ("http://h:1/p?q", scheme http or https) is
 * delivered as origin-form ("/p?q") with its authority as the one Host, the received Host (still
 * checked) being ignored as RFC 9112 3.2.2 says; so a delivered request target is always "/..." or
 * "*". Chunk-size lines (size, extensions, CRLF) are bounded by max_chunk_line in requests and
 * responses. The response parser applies the same framing rules (all but the target and Host
 * ones), hands 1xx interim responses to on_interim (skipped when it is NULL) and refuses a 101. An Upgrade request is
 * delivered as a plain request; the connection stays HTTP. Trailers are checked the same way as
 * heads, then discarded. */
#ifndef CCRELAY_HTTP1_H
#define CCRELAY_HTTP1_H

#include <stddef.h>
#include <sys/types.h>

#include "ccrelay/buf.h"
#include "ccrelay/http_msg.h"

typedef enum { CR_HTTP1_REQUEST, CR_HTTP1_RESPONSE } cr_http1_type_t;

/* A callback returns 0 to go on, CR_HTTP1_PAUSE to stop parsing right after it (cr_http1_parse
 * then returns the bytes consumed so far), or a negative error to abort. */
#define CR_HTTP1_PAUSE 1

typedef struct cr_http1_callbacks {
  /* The head is complete and valid. m stays valid until the next message begins. */
  int (*on_head)(void *ud, cr_http_msg_t *m);
  /* Body bytes, de-chunked; data valid only during the call. */
  int (*on_body)(void *ud, const char *data, size_t len);
  /* The message (including any chunked trailer, which is discarded) is complete. */
  int (*on_end)(void *ud);
  /* Response parser only, optional: a complete 1xx interim head (status 100..199 but 101, no body);
   * the final response follows as a new message. m is valid only during the call. 0 to go on or a
   * negative error to abort (CR_HTTP1_PAUSE is not honoured here). */
  int (*on_interim)(void *ud, const cr_http_msg_t *m);
} cr_http1_callbacks_t;

/* Longest chunk-size line (size, extensions and CRLF) by default: a few bytes in practice. */
#define CR_HTTP1_MAX_CHUNK_LINE 4096

typedef struct cr_http1_limits {
  size_t max_head_size;  /* request/status line plus headers; 0 means 16 KiB */
  size_t max_headers;    /* header fields; 0 means 100 */
  size_t max_chunk_line; /* one chunk-size line with its extensions; 0 means CR_HTTP1_MAX_CHUNK_LINE */
  size_t head_room;      /* fields on_head's callee may add to the head in place, past max_headers */
} cr_http1_limits_t;

typedef struct cr_http1_parser cr_http1_parser_t;

cr_http1_parser_t *cr_http1_parser_new(cr_http1_type_t type, const cr_http1_limits_t *limits,
                                       const cr_http1_callbacks_t *cbs, void *ud);
void cr_http1_parser_free(cr_http1_parser_t *p);
/* The caller is done with the current head (on_head's m): its storage goes back to the free list,
 * so a connection waiting for an answer holds none. m's strings are invalid afterwards; its scalar
 * fields (content_length, keep_alive...) stay. May be called from on_head. */
void cr_http1_parser_release_head(cr_http1_parser_t *p);

/* Feeds bytes. Returns how many were consumed (all of them unless a callback paused), or a negative
 * error: CR_EHTTP_PARSE (malformed: cr_http1_parser_error says what), CR_EHTTP_TOO_LARGE, or the
 * error a callback returned. After an error the parser is dead. */
ssize_t cr_http1_parse(cr_http1_parser_t *p, const char *data, size_t len);
/* Continue after a pause; feed the unconsumed bytes again. */
void cr_http1_parser_resume(cr_http1_parser_t *p);
/* The peer closed the connection: completes a response delimited by close; returns 0, or
 * CR_EHTTP_PARSE when a message was cut short. */
int cr_http1_parse_eof(cr_http1_parser_t *p);
/* Response parser only: the next response answers a HEAD (or is otherwise bodiless). */
void cr_http1_parser_expect_no_body(cr_http1_parser_t *p);
/* Prose for the last parse error ("obs-fold header continuation is not allowed"), or "". Each kind of
 * refusal has its own fixed text, whichever layer caught it. */
const char *cr_http1_parser_error(const cr_http1_parser_t *p);
/* 1 while a message is partly received (head or body). */
int cr_http1_parser_in_message(const cr_http1_parser_t *p);

/* Serialisers append to out, refusing (CR_EHTTP_PARSE) a method, name or value that is not valid on
 * the wire. Heads are written exactly as the message holds them: the caller adds framing headers
 * (Content-Length or Transfer-Encoding: chunked) first. Returns 0, CR_EHTTP_PARSE or CR_ELIMIT. */
int cr_http1_write_request_head(cr_buf_t *out, const cr_http_msg_t *m);
int cr_http1_write_response_head(cr_buf_t *out, const cr_http_msg_t *m);
/* "<hex>\r\n" for a chunk of len bytes into out (room for 20 bytes); returns its length. */
size_t cr_http1_chunk_header(char *out, size_t len);
#define CR_HTTP1_CHUNK_TRAILER "\r\n"
#define CR_HTTP1_LAST_CHUNK "0\r\n\r\n"

/* The llhttp sources this binary was built from ("8.1.0"), for `ccrelay version`. */
const char *cr_http1_llhttp_version(void);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The header model shared by HTTP/1.1 and the tunnel's HTTP/2 streams: a request or response head
 * as parsed values, never raw bytes. Every hop parses into this and re-serialises from it, so no byte
 * sequence the parser did not understand can cross a hop. Pure code: no I/O. */
#ifndef CCRELAY_HTTP_MSG_H
#define CCRELAY_HTTP_MSG_H

#include <stddef.h>
#include <stdint.h>

/* The field names the relay itself acts on. Each field is given its id when it is added, so finding,
 * removing or classifying one compares a byte instead of a string: every hop of every request looks
 * several of them up. CR_HDR_OTHER is every other name. */
typedef enum {
  CR_HDR_OTHER = 0,
  CR_HDR_AUTHORIZATION,
  CR_HDR_CONNECTION,
  CR_HDR_CONTENT_LENGTH,
  CR_HDR_CONTENT_TYPE,
  CR_HDR_DATE,
  CR_HDR_EXPECT,
  CR_HDR_FORWARDED,
  CR_HDR_HOST,
  CR_HDR_KEEP_ALIVE,
  CR_HDR_PROXY_CONNECTION,
  CR_HDR_SOAPACTION,
  CR_HDR_TE,
  CR_HDR_TRAILER,
  CR_HDR_TRANSFER_ENCODING,
  CR_HDR_UPGRADE,
  CR_HDR_X_CCRELAY_ERROR,
  CR_HDR_X_CCRELAY_REQUESTED_BY,
  CR_HDR_X_FORWARDED_FOR,
  CR_HDR_X_FORWARDED_HOST,
  CR_HDR_X_FORWARDED_PROTO,
  CR_HDR_X_REQUEST_ID,
  CR_HDR_COUNT_
} cr_http_hdr_t;
/* A set of ids for cr_http_msg_remove_ids. */
#define CR_HDR_BIT(id) (UINT32_C(1) << (id))

typedef struct cr_http_header {
  const char *name;  /* NUL-terminated, as received (case kept); owned by the message */
  const char *value; /* NUL-terminated, leading/trailing whitespace removed; owned by the message */
  size_t name_len;
  size_t value_len;
  unsigned char id; /* cr_http_hdr_t of name, set by the message when the field is added */
} cr_http_header_t;

/* The id of a field name (ASCII case-insensitive), CR_HDR_OTHER when the relay does not know it. */
cr_http_hdr_t cr_http_hdr_id(const char *name, size_t len);

typedef struct cr_http_msg_block cr_http_msg_block_t;

typedef struct cr_http_msg {
  /* request */
  const char *method; /* "POST"; NULL for a response */
  const char *target; /* origin-form "/path?query" */
  /* response */
  int status;          /* 0 for a request */
  /* both */
  int version_minor;   /* HTTP/1.x minor version as received; 1 when it came from HTTP/2 */
  cr_http_header_t *headers;
  size_t nheaders;
  int64_t content_length; /* from Content-Length, or -1 */
  unsigned chunked : 1;    /* Transfer-Encoding: chunked was received */
  unsigned keep_alive : 1; /* the connection may carry another message after this one */
  /* private */
  size_t headers_cap;
  size_t max_headers;
  cr_http_msg_block_t *blocks; /* string storage; pointers into it stay valid until reset/free */
} cr_http_msg_t;

/* max_headers bounds cr_http_msg_add_header (0 means 100). A new or reset message has no method,
 * target or headers, status 0, version_minor 1, content_length -1, chunked 0, keep_alive 1. */
void cr_http_msg_init(cr_http_msg_t *m, size_t max_headers);
/* Empties the message, keeping its memory for reuse. */
void cr_http_msg_reset(cr_http_msg_t *m);
/* Empties the message and gives its memory to a small process-wide free list, for a message that
 * may sit unused for long (a connection waiting for its answer): it holds nothing meanwhile, and the
 * next head costs no malloc. */
void cr_http_msg_release(cr_http_msg_t *m);
void cr_http_msg_free(cr_http_msg_t *m);

/* Setters copy their input. 0, or CR_ELIMIT when max_headers would be exceeded. */
void cr_http_msg_set_method(cr_http_msg_t *m, const char *s, size_t len);
void cr_http_msg_set_target(cr_http_msg_t *m, const char *s, size_t len);
int cr_http_msg_add_header(cr_http_msg_t *m, const char *name, size_t nlen, const char *value, size_t vlen);
/* The same when the caller has already classified the name: id must be cr_http_hdr_id(name, nlen). */
int cr_http_msg_add_header_id(cr_http_msg_t *m, cr_http_hdr_t id, const char *name, size_t nlen, const char *value,
                              size_t vlen);
/* Adds a header whose value is the parts one after another, copied as they are (no OWS trimmed):
 * a value assembled from pieces without a staging buffer. id as for add_header_id. 0, or CR_ELIMIT
 * as for add. */
typedef struct cr_http_part {
  const char *base;
  size_t len;
} cr_http_part_t;
int cr_http_msg_add_header_parts(cr_http_msg_t *m, cr_http_hdr_t id, const char *name, size_t nlen,
                                 const cr_http_part_t *parts, size_t nparts);
/* Gives the first header with this name the value (its name and place kept) and removes any
 * others; adds it at the end when there is none. 0, or CR_ELIMIT as for add. */
int cr_http_msg_set_header(cr_http_msg_t *m, const char *name, size_t nlen, const char *value, size_t vlen);
/* Copies another message's head (method, target, status, version, headers, framing fields). */
int cr_http_msg_copy(cr_http_msg_t *dst, const cr_http_msg_t *src);

/* First header with this name (ASCII case-insensitive), or NULL. */
const cr_http_header_t *cr_http_msg_find(const cr_http_msg_t *m, const char *name);
/* Its value, or NULL. */
const char *cr_http_msg_get(const cr_http_msg_t *m, const char *name);
/* The same for a known name (not CR_HDR_OTHER), without comparing strings. */
const cr_http_header_t *cr_http_msg_find_id(const cr_http_msg_t *m, cr_http_hdr_t id);
const char *cr_http_msg_get_id(const cr_http_msg_t *m, cr_http_hdr_t id);
/* How many headers have this name. */
size_t cr_http_msg_count(const cr_http_msg_t *m, const char *name);
/* Removes every header with this name; returns how many. */
size_t cr_http_msg_remove(cr_http_msg_t *m, const char *name);
/* Removes every header whose id is in the set (CR_HDR_BIT of each; CR_HDR_OTHER is never removed
 * this way); returns how many. */
size_t cr_http_msg_remove_ids(cr_http_msg_t *m, uint32_t ids);
/* Removes hop-by-hop headers (RFC 9110 7.6.1): Connection and every header it names, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade, and Content-Length (framing is decided
 * again by whoever serialises the next hop). */
void cr_http_msg_strip_hop_by_hop(cr_http_msg_t *m);

/* How a message's body is delimited (RFC 9112 6.3), decided in one place for every hop. */
typedef enum {
  CR_HTTP_BODY_NONE,      /* no body follows the head */
  CR_HTTP_BODY_LENGTH,    /* exactly content_length (> 0) bytes */
  CR_HTTP_BODY_CHUNKED,   /* Transfer-Encoding: chunked */
  CR_HTTP_BODY_UNTIL_END, /* up to the end of the connection (an HTTP/1 response without length) or of
                             the carrying stream (an HTTP/2 message without content-length) */
} cr_http_body_t;

/* The framing of m, a request (status 0) or a response, from its status, chunked and content_length.
 * request_method: for a response, the method of the request it answers (a HEAD's answer, and a
 * CONNECT's 2xx, have no body), NULL when unknown; ignored for a request. A response without a body by
 * its status (1xx, 204, 304) has none whatever it announces. stream_delimited: 1 when the message
 * travels on a carrier that marks each message's end itself (the tunnel's HTTP/2 streams): a request
 * without Content-Length or chunked then has a body up to that end; over HTTP/1 (0) it has none.
 * Content-Length: 0 is CR_HTTP_BODY_NONE; chunked wins over a Content-Length. */
cr_http_body_t cr_http_body_framing(const cr_http_msg_t *m, const char *request_method, int stream_delimited);

/* 1 if name is a valid RFC 9110 token / value has no CR, LF or NUL; serialisers refuse the rest. */
int cr_http_token_valid(const char *s, size_t len);
int cr_http_field_value_valid(const char *s, size_t len);
/* 1 if h's name is a valid token. A field with a known id was matched against a valid name, so only
 * the others are checked (serialisers call this for every field of every head). */
static inline int cr_http_header_name_valid(const cr_http_header_t *h) {
  return h->id != CR_HDR_OTHER || cr_http_token_valid(h->name, h->name_len);
}
/* Length of the run at the start of s with no control byte (below 0x20, or DEL): where the next CR,
 * LF, tab or other control byte is, or len. Bytes from 0x80 up count as text. */
size_t cr_http_text_run(const char *s, size_t len);

/* RFC 3986 syntax of what an HTTP/1.1 request names (RFC 9112 3.2), checked by the parser. */
/* Offset of the first byte of s that cannot continue path-abempty [ "?" query ]: the path takes
 * pchar and "/", the query (after the first "?") also "?", and a "%" must start "%" HEXDIG HEXDIG
 * (the offset is then the "%"). A fragment is never part of a request target, so "#" stops it
 * like any other byte outside those sets. len when every byte belongs. */
size_t cr_http_path_query_end(const char *s, size_t len);
/* 1 if s is a valid Host value: empty (RFC 9112 3.2: a target URI with no authority), or uri-host
 * [ ":" port ] where uri-host is a non-empty reg-name (unreserved, sub-delims, pct-encoded; an IPv4
 * address is one) or an IP-literal in brackets (an IPv6 address or IPvFuture), and port is one or
 * more digits with a value of at most 65535. No userinfo ("@"), no whitespace, no empty port. */
int cr_http_host_valid(const char *s, size_t len);

/* Case-insensitive ASCII comparison of NUL-terminated strings; 1 if equal. */
int cr_http_name_eq(const char *a, const char *b);

/* SOAP's HTTP binding, as far as a relay needs it. SOAP 1.1 callers send text/xml with a SOAPAction
 * header (which SOAP 1.1 requires, even empty); SOAP 1.2 callers send application/soap+xml and carry
 * the action, if any, as that media type's action parameter. */
typedef enum { CR_SOAP_NONE = 0, CR_SOAP_11 = 11, CR_SOAP_12 = 12 } cr_http_soap_t;
/* CR_SOAP_12 when the Content-Type's media type is application/soap+xml (any case), else CR_SOAP_11
 * when a SOAPAction header is present, else CR_SOAP_NONE. */
cr_http_soap_t cr_http_soap_version(const cr_http_msg_t *m);
/* The SOAP action a request names, into out (NUL-terminated): the action parameter of an
 * application/soap+xml Content-Type (a token, or a quoted-string with its escapes undone), else the
 * SOAPAction header without its surrounding quotes (SOAP 1.1 7.1: `SOAPAction: "urn:x"` names
 * urn:x). Returns the action's length (0 for `SOAPAction: ""`), or -1 when no carrier names one
 * (no header, a blank SOAPAction, no action parameter) or it does not fit in cap. */
int cr_http_soap_action(const cr_http_msg_t *m, char *out, size_t cap);

/* Standard reason phrase ("Bad Gateway"), or "Unknown". */
const char *cr_http_reason(int status);

/* Frees the process-wide storage kept for the next messages (an idle process's memory trim). */
void cr_http_msg_release_caches(void);

#endif

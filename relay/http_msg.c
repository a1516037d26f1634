/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/http_msg.h"

#include <arpa/inet.h>
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"

/* Eight bytes at a time ("SWAR"): every byte of every head is scanned or compared at least once per
 * hop, and a byte loop was a tenth of the relay's own work per request. */
#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_LOWS 0x7f7f7f7f7f7f7f7fULL
#define SWAR_HIGHS 0x8080808080808080ULL
#define SWAR_LITTLE_ENDIAN (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)

static inline uint64_t load8(const char *s) {
  uint64_t w;
  memcpy(&w, s, 8);
  return w;
}

/* Nonzero when some byte of v is zero (exact as a yes/no, whichever byte it was). */
static inline uint64_t has_zero_byte(uint64_t v) { return (v - SWAR_ONES) & ~v & SWAR_HIGHS; }
/* Nonzero when some byte of v is below n, n at most 0x80 (exact as a yes/no, like has_zero_byte). */
static inline uint64_t has_byte_below(uint64_t v, unsigned n) { return (v - SWAR_ONES * n) & ~v & SWAR_HIGHS; }

/* The high bit of each byte of v that is a control byte (below 0x20, or DEL), and of no other: exact
 * per byte, since no lane carries into the next. */
static inline uint64_t control_bytes(uint64_t v) {
  uint64_t below = ~(((v & SWAR_LOWS) + SWAR_ONES * (0x80 - 0x20)) | v);
  uint64_t x = v ^ (SWAR_ONES * 0x7f);
  uint64_t del = ~(((x & SWAR_LOWS) + SWAR_LOWS) | x);
  return (below | del) & SWAR_HIGHS;
}

/* Strings live in blocks that are chained, never reallocated, so every pointer handed out stays put
 * until reset. Reset only rewinds the blocks: a keep-alive connection parsing one head after another
 * reaches a steady state with no allocation at all. */
struct cr_http_msg_block {
  cr_http_msg_block_t *next;
  size_t cap;
  size_t used;
  char data[];
};

#define BLOCK_SIZE 4096
#define DEFAULT_MAX_HEADERS 100
#define FIRST_HEADERS_CAP 16

/* Storage given back by cr_http_msg_release, for the next head (the process is single-threaded).
 * Bounded, so a burst leaves at most FREE_MAX of each behind. */
#define FREE_MAX 64
static cr_http_msg_block_t *free_blocks; /* each of cap BLOCK_SIZE */
static unsigned nfree_blocks;
static cr_http_header_t *free_headers[FREE_MAX]; /* each of FIRST_HEADERS_CAP entries */
static unsigned nfree_headers;

void cr_http_msg_init(cr_http_msg_t *m, size_t max_headers) {
  memset(m, 0, sizeof(*m));
  m->max_headers = max_headers ? max_headers : DEFAULT_MAX_HEADERS;
  m->content_length = -1;
  m->version_minor = 1;
  m->keep_alive = 1;
}

void cr_http_msg_reset(cr_http_msg_t *m) {
  cr_http_msg_block_t *b;
  for (b = m->blocks; b != NULL; b = b->next)
    b->used = 0;
  m->method = NULL;
  m->target = NULL;
  m->status = 0;
  m->version_minor = 1;
  m->nheaders = 0;
  m->content_length = -1;
  m->chunked = 0;
  m->keep_alive = 1;
}

void cr_http_msg_release(cr_http_msg_t *m) {
  cr_http_msg_block_t *b = m->blocks, *next;
  for (; b != NULL; b = next) {
    next = b->next;
    if (b->cap == BLOCK_SIZE && nfree_blocks < FREE_MAX) {
      b->next = free_blocks;
      free_blocks = b;
      nfree_blocks++;
    } else {
      free(b);
    }
  }
  if (m->headers != NULL && m->headers_cap == FIRST_HEADERS_CAP && nfree_headers < FREE_MAX)
    free_headers[nfree_headers++] = m->headers;
  else
    free(m->headers);
  m->blocks = NULL;
  m->headers = NULL;
  m->headers_cap = m->nheaders = 0;
  m->method = m->target = NULL;
}

void cr_http_msg_free(cr_http_msg_t *m) {
  cr_http_msg_block_t *b = m->blocks, *next;
  while (b != NULL) {
    next = b->next;
    free(b);
    b = next;
  }
  free(m->headers);
  m->blocks = NULL;
  m->headers = NULL;
  m->headers_cap = m->nheaders = 0;
  m->method = m->target = NULL;
}

/* Copies s into storage as a NUL-terminated string. First fit over the chain: a head is a few
 * blocks at most, and reused blocks keep their order so a steady workload keeps hitting the same
 * ones. */
static char *store(cr_http_msg_t *m, const char *s, size_t len) {
  cr_http_msg_block_t *b, **tail = &m->blocks;
  size_t need = len + 1;
  char *d;
  for (b = m->blocks; b != NULL; b = b->next) {
    if (b->cap - b->used >= need)
      break;
    tail = &b->next;
  }
  if (b == NULL) {
    size_t cap = need > BLOCK_SIZE ? need : BLOCK_SIZE;
    if (cap == BLOCK_SIZE && free_blocks != NULL) {
      b = free_blocks;
      free_blocks = b->next;
      nfree_blocks--;
    } else {
      b = cr_malloc(sizeof(*b) + cap);
    }
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    *tail = b;
  }
  d = b->data + b->used;
  if (len && s != NULL) /* NULL: the caller fills the space */
    memcpy(d, s, len);
  d[len] = '\0';
  b->used += need;
  return d;
}

void cr_http_msg_set_method(cr_http_msg_t *m, const char *s, size_t len) { m->method = store(m, s, len); }

void cr_http_msg_set_target(cr_http_msg_t *m, const char *s, size_t len) { m->target = store(m, s, len); }

static int is_ows(char c) { return c == ' ' || c == '\t'; }
static int mem_eq_nocase(const char *a, const char *b, size_t len);

/* A new header slot named name, whose id is id (its value unset), or NULL at max_headers. */
static cr_http_header_t *new_header(cr_http_msg_t *m, cr_http_hdr_t id, const char *name, size_t nlen) {
  cr_http_header_t *h;
  if (m->nheaders >= m->max_headers)
    return NULL;
  if (m->nheaders == m->headers_cap) {
    size_t cap = m->headers_cap ? m->headers_cap * 2 : FIRST_HEADERS_CAP;
    if (cap > m->max_headers)
      cap = m->max_headers;
    if (m->headers == NULL && cap == FIRST_HEADERS_CAP && nfree_headers > 0)
      m->headers = free_headers[--nfree_headers];
    else
      m->headers = cr_realloc(m->headers, cap * sizeof(*m->headers));
    m->headers_cap = cap;
  }
  h = &m->headers[m->nheaders++];
  h->name = store(m, name, nlen);
  h->name_len = nlen;
  assert(id == cr_http_hdr_id(name, nlen));
  h->id = (unsigned char)id;
  return h;
}

int cr_http_msg_add_header(cr_http_msg_t *m, const char *name, size_t nlen, const char *value, size_t vlen) {
  return cr_http_msg_add_header_id(m, cr_http_hdr_id(name, nlen), name, nlen, value, vlen);
}

int cr_http_msg_add_header_id(cr_http_msg_t *m, cr_http_hdr_t id, const char *name, size_t nlen, const char *value,
                              size_t vlen) {
  cr_http_header_t *h;
  while (vlen && is_ows(value[0])) {
    value++;
    vlen--;
  }
  while (vlen && is_ows(value[vlen - 1]))
    vlen--;
  if ((h = new_header(m, id, name, nlen)) == NULL)
    return CR_ELIMIT;
  h->value = store(m, value, vlen);
  h->value_len = vlen;
  return 0;
}

int cr_http_msg_add_header_parts(cr_http_msg_t *m, cr_http_hdr_t id, const char *name, size_t nlen,
                                 const cr_http_part_t *parts, size_t nparts) {
  cr_http_header_t *h;
  size_t vlen = 0, off = 0;
  char *d;
  for (size_t i = 0; i < nparts; i++)
    vlen += parts[i].len;
  if ((h = new_header(m, id, name, nlen)) == NULL)
    return CR_ELIMIT;
  d = store(m, NULL, vlen);
  for (size_t i = 0; i < nparts; i++) {
    if (parts[i].len)
      memcpy(d + off, parts[i].base, parts[i].len);
    off += parts[i].len;
  }
  h->value = d;
  h->value_len = vlen;
  return 0;
}

/* 1 if h is named name, whose id is id: known names compare ids, the rest their bytes. */
static int header_named(const cr_http_header_t *h, cr_http_hdr_t id, const char *name, size_t len) {
  if (id != CR_HDR_OTHER)
    return h->id == id;
  return h->id == CR_HDR_OTHER && h->name_len == len && mem_eq_nocase(h->name, name, len);
}

int cr_http_msg_set_header(cr_http_msg_t *m, const char *name, size_t nlen, const char *value, size_t vlen) {
  cr_http_hdr_t id = cr_http_hdr_id(name, nlen);
  size_t i, w;
  for (i = 0; i < m->nheaders; i++)
    if (header_named(&m->headers[i], id, name, nlen))
      break;
  if (i == m->nheaders)
    return cr_http_msg_add_header(m, name, nlen, value, vlen);
  while (vlen && is_ows(value[0])) {
    value++;
    vlen--;
  }
  while (vlen && is_ows(value[vlen - 1]))
    vlen--;
  m->headers[i].value = store(m, value, vlen);
  m->headers[i].value_len = vlen;
  for (w = ++i; i < m->nheaders; i++)
    if (!header_named(&m->headers[i], id, name, nlen))
      m->headers[w++] = m->headers[i];
  m->nheaders = w;
  return 0;
}

int cr_http_msg_copy(cr_http_msg_t *dst, const cr_http_msg_t *src) {
  size_t i;
  int r;
  assert(dst != src);
  cr_http_msg_reset(dst);
  if (src->method)
    cr_http_msg_set_method(dst, src->method, strlen(src->method));
  if (src->target)
    cr_http_msg_set_target(dst, src->target, strlen(src->target));
  dst->status = src->status;
  dst->version_minor = src->version_minor;
  dst->content_length = src->content_length;
  dst->chunked = src->chunked;
  dst->keep_alive = src->keep_alive;
  for (i = 0; i < src->nheaders; i++) {
    const cr_http_header_t *h = &src->headers[i];
    r = cr_http_msg_add_header_id(dst, (cr_http_hdr_t)h->id, h->name, h->name_len, h->value, h->value_len);
    if (r < 0)
      return r;
  }
  return 0;
}

static unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; }

static int mem_eq_nocase(const char *a, const char *b, size_t len) {
  size_t i;
  for (i = 0; i < len; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 0;
  return 1;
}

int cr_http_name_eq(const char *a, const char *b) {
  for (; *a && *b; a++, b++)
    if (lower((unsigned char)*a) != lower((unsigned char)*b))
      return 0;
  return *a == *b;
}

static int header_is(const cr_http_header_t *h, const char *name, size_t len) {
  return h->name_len == len && mem_eq_nocase(h->name, name, len);
}

/* s (len bytes, any case) against a literal of the same length made of lower-case letters, digits
 * and '-' only. Each of those has bit 0x20 set, so s's byte with that bit forced on equals it exactly
 * when s has the letter in either case or, for '-' and digits, the same byte less 0x20: a control
 * byte, which no name can hold and which the last test refuses. Eight bytes at a time, the last
 * word overlapping. */
static inline __attribute__((always_inline)) int lit_ieq(const char *s, const char *lit, size_t len) {
  uint64_t diff = 0, ctl = 0;
  size_t i;
  if (len < 8) {
    for (i = 0; i < len; i++)
      if (lower((unsigned char)s[i]) != (unsigned char)lit[i])
        return 0;
    return 1;
  }
  for (i = 0; i + 8 <= len; i += 8) {
    uint64_t w = load8(s + i);
    diff |= (w | SWAR_ONES * 0x20) ^ load8(lit + i);
    ctl |= has_byte_below(w, 0x20);
  }
  if (i < len) {
    uint64_t w = load8(s + len - 8);
    diff |= (w | SWAR_ONES * 0x20) ^ load8(lit + len - 8);
    ctl |= has_byte_below(w, 0x20);
  }
  return diff == 0 && ctl == 0;
}

#define NAME_IS(lit) lit_ieq(name, lit, sizeof(lit) - 1)

/* Length, then first letter, pick at most one candidate: a name the relay does not know usually
 * costs a switch and a byte compare. */
cr_http_hdr_t cr_http_hdr_id(const char *name, size_t len) {
  unsigned char c0;
  if (len < 2)
    return CR_HDR_OTHER;
  c0 = lower((unsigned char)name[0]);
  switch (len) {
  case 2:
    return c0 == 't' && NAME_IS("te") ? CR_HDR_TE : CR_HDR_OTHER;
  case 4:
    if (c0 == 'h')
      return NAME_IS("host") ? CR_HDR_HOST : CR_HDR_OTHER;
    return c0 == 'd' && NAME_IS("date") ? CR_HDR_DATE : CR_HDR_OTHER;
  case 6:
    return c0 == 'e' && NAME_IS("expect") ? CR_HDR_EXPECT : CR_HDR_OTHER;
  case 7:
    if (c0 == 't')
      return NAME_IS("trailer") ? CR_HDR_TRAILER : CR_HDR_OTHER;
    return c0 == 'u' && NAME_IS("upgrade") ? CR_HDR_UPGRADE : CR_HDR_OTHER;
  case 9:
    return c0 == 'f' && NAME_IS("forwarded") ? CR_HDR_FORWARDED : CR_HDR_OTHER;
  case 10:
    if (c0 == 'c')
      return NAME_IS("connection") ? CR_HDR_CONNECTION : CR_HDR_OTHER;
    if (c0 == 'k')
      return NAME_IS("keep-alive") ? CR_HDR_KEEP_ALIVE : CR_HDR_OTHER;
    return c0 == 's' && NAME_IS("soapaction") ? CR_HDR_SOAPACTION : CR_HDR_OTHER;
  case 12:
    if (c0 == 'c')
      return NAME_IS("content-type") ? CR_HDR_CONTENT_TYPE : CR_HDR_OTHER;
    return c0 == 'x' && NAME_IS("x-request-id") ? CR_HDR_X_REQUEST_ID : CR_HDR_OTHER;
  case 13:
    return c0 == 'a' && NAME_IS("authorization") ? CR_HDR_AUTHORIZATION : CR_HDR_OTHER;
  case 14:
    return c0 == 'c' && NAME_IS("content-length") ? CR_HDR_CONTENT_LENGTH : CR_HDR_OTHER;
  case 15:
    if (c0 != 'x')
      return CR_HDR_OTHER;
    if (NAME_IS("x-forwarded-for"))
      return CR_HDR_X_FORWARDED_FOR;
    return NAME_IS("x-ccrelay-error") ? CR_HDR_X_CCRELAY_ERROR : CR_HDR_OTHER;
  case 16:
    if (c0 == 'p')
      return NAME_IS("proxy-connection") ? CR_HDR_PROXY_CONNECTION : CR_HDR_OTHER;
    return c0 == 'x' && NAME_IS("x-forwarded-host") ? CR_HDR_X_FORWARDED_HOST : CR_HDR_OTHER;
  case 17:
    if (c0 == 't')
      return NAME_IS("transfer-encoding") ? CR_HDR_TRANSFER_ENCODING : CR_HDR_OTHER;
    return c0 == 'x' && NAME_IS("x-forwarded-proto") ? CR_HDR_X_FORWARDED_PROTO : CR_HDR_OTHER;
  case 22:
    return c0 == 'x' && NAME_IS("x-ccrelay-requested-by") ? CR_HDR_X_CCRELAY_REQUESTED_BY : CR_HDR_OTHER;
  default:
    return CR_HDR_OTHER;
  }
}

#undef NAME_IS
_Static_assert(CR_HDR_COUNT_ <= 32, "CR_HDR_BIT sets are 32 bits");

const cr_http_header_t *cr_http_msg_find_id(const cr_http_msg_t *m, cr_http_hdr_t id) {
  assert(id != CR_HDR_OTHER);
  for (size_t i = 0; i < m->nheaders; i++)
    if (m->headers[i].id == id)
      return &m->headers[i];
  return NULL;
}

const char *cr_http_msg_get_id(const cr_http_msg_t *m, cr_http_hdr_t id) {
  const cr_http_header_t *h = cr_http_msg_find_id(m, id);
  return h ? h->value : NULL;
}

const cr_http_header_t *cr_http_msg_find(const cr_http_msg_t *m, const char *name) {
  size_t i, len = strlen(name);
  cr_http_hdr_t id = cr_http_hdr_id(name, len);
  if (id != CR_HDR_OTHER)
    return cr_http_msg_find_id(m, id);
  for (i = 0; i < m->nheaders; i++)
    if (header_named(&m->headers[i], id, name, len))
      return &m->headers[i];
  return NULL;
}

const char *cr_http_msg_get(const cr_http_msg_t *m, const char *name) {
  const cr_http_header_t *h = cr_http_msg_find(m, name);
  return h ? h->value : NULL;
}

size_t cr_http_msg_count(const cr_http_msg_t *m, const char *name) {
  size_t i, n = 0, len = strlen(name);
  cr_http_hdr_t id = cr_http_hdr_id(name, len);
  for (i = 0; i < m->nheaders; i++)
    if (header_named(&m->headers[i], id, name, len))
      n++;
  return n;
}

size_t cr_http_msg_remove_ids(cr_http_msg_t *m, uint32_t ids) {
  size_t i, w = 0;
  ids &= ~CR_HDR_BIT(CR_HDR_OTHER);
  for (i = 0; i < m->nheaders; i++)
    if (!(ids & CR_HDR_BIT(m->headers[i].id)))
      m->headers[w++] = m->headers[i];
  i = m->nheaders - w;
  m->nheaders = w;
  return i;
}

size_t cr_http_msg_remove(cr_http_msg_t *m, const char *name) {
  size_t i, w = 0, len = strlen(name);
  cr_http_hdr_t id = cr_http_hdr_id(name, len);
  for (i = 0; i < m->nheaders; i++)
    if (!header_named(&m->headers[i], id, name, len))
      m->headers[w++] = m->headers[i];
  i = m->nheaders - w;
  m->nheaders = w;
  return i;
}

/* Hop-by-hop fields (RFC 9110 7.6.1) plus Content-Length, which the next hop decides again. */
#define FIXED_HOP                                                                                            \
  (CR_HDR_BIT(CR_HDR_TE) | CR_HDR_BIT(CR_HDR_TRAILER) | CR_HDR_BIT(CR_HDR_UPGRADE) |                         \
   CR_HDR_BIT(CR_HDR_CONNECTION) | CR_HDR_BIT(CR_HDR_KEEP_ALIVE) | CR_HDR_BIT(CR_HDR_CONTENT_LENGTH) |       \
   CR_HDR_BIT(CR_HDR_PROXY_CONNECTION) | CR_HDR_BIT(CR_HDR_TRANSFER_ENCODING))

static int is_fixed_hop(const cr_http_header_t *h) { return (FIXED_HOP & CR_HDR_BIT(h->id)) != 0; }

/* The next token of a comma-separated list at *s (before end), OWS trimmed; 0 when none is left. */
static int next_list_token(const char **s, const char *end, const char **tok, size_t *len) {
  const char *p = *s, *t, *tend;
  for (;;) {
    while (p < end && (is_ows(*p) || *p == ','))
      p++;
    if (p == end) {
      *s = p;
      return 0;
    }
    t = p;
    while (p < end && *p != ',')
      p++;
    tend = p;
    while (tend > t && is_ows(tend[-1]))
      tend--;
    if (tend > t) {
      *s = p;
      *tok = t;
      *len = (size_t)(tend - t);
      return 1;
    }
  }
}

/* 1 if any Connection header lists h's name among its comma-separated tokens. */
static int named_by_connection(const cr_http_msg_t *m, const cr_http_header_t *h) {
  size_t i, len;
  for (i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *c = &m->headers[i];
    const char *s, *end, *tok;
    if (c->name == NULL || c->id != CR_HDR_CONNECTION)
      continue;
    s = c->value;
    end = c->value + c->value_len;
    while (next_list_token(&s, end, &tok, &len))
      if (header_is(h, tok, len))
        return 1;
  }
  return 0;
}

/* The general case: mark first, compact after, since the Connection headers must stay readable
 * while deciding. */
static void strip_marking(cr_http_msg_t *m) {
  size_t i, w = 0;
  for (i = 0; i < m->nheaders; i++) {
    cr_http_header_t *h = &m->headers[i];
    if (h->id != CR_HDR_CONNECTION && (is_fixed_hop(h) || named_by_connection(m, h)))
      h->name = NULL;
  }
  for (i = 0; i < m->nheaders; i++) {
    cr_http_header_t *h = &m->headers[i];
    if (h->name == NULL || h->id == CR_HDR_CONNECTION)
      continue;
    m->headers[w++] = *h;
  }
  m->nheaders = w;
}

#define CONNECTION_TOKENS_MAX 8

void cr_http_msg_strip_hop_by_hop(cr_http_msg_t *m) {
  /* The names Connection lists ("keep-alive", "close", rarely more), gathered once: testing every
   * header against every Connection header's tokens was quadratic, 2 % of the agent's work per
   * response. A listed name the relay knows joins the id set; only the others are kept as strings
   * (their bytes live in the message's storage, which compacting does not move). */
  struct {
    const char *s;
    size_t len;
  } tok[CONNECTION_TOKENS_MAX];
  uint32_t drop_ids = FIXED_HOP; /* Connection itself among them */
  size_t ntok = 0, i, j, w = 0;
  for (i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *c = &m->headers[i];
    const char *s = c->value, *end = c->value + c->value_len, *t;
    size_t len;
    if (c->id != CR_HDR_CONNECTION)
      continue;
    while (next_list_token(&s, end, &t, &len)) {
      cr_http_hdr_t id = cr_http_hdr_id(t, len);
      if (id != CR_HDR_OTHER) {
        drop_ids |= CR_HDR_BIT(id);
        continue;
      }
      if (ntok == CONNECTION_TOKENS_MAX) {
        strip_marking(m);
        return;
      }
      tok[ntok].s = t;
      tok[ntok].len = len;
      ntok++;
    }
  }
  for (i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *h = &m->headers[i];
    int drop = (drop_ids & CR_HDR_BIT(h->id)) != 0;
    for (j = 0; j < ntok && !drop && h->id == CR_HDR_OTHER; j++)
      drop = header_is(h, tok[j].s, tok[j].len);
    if (!drop)
      m->headers[w++] = *h;
  }
  m->nheaders = w;
}

/* RFC 9110 tchar as a table: every header name of every message is checked at least twice, and a
 * search through the punctuation for each '-' cost more than the rest of the check. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int is_tchar(unsigned char c) { return tchar[c]; }

int cr_http_token_valid(const char *s, size_t len) {
  size_t i;
  if (len == 0)
    return 0;
  for (i = 0; i < len; i++)
    if (!is_tchar((unsigned char)s[i]))
      return 0;
  return 1;
}


/* Every field value of every head is checked here twice (parsed, then framed for the next hop): eight
 * bytes at a time, a lane equal to CR, LF or NUL turning zero after the XOR. */
static inline uint64_t has_value_breaker(uint64_t w) {
  return has_zero_byte(w) | has_zero_byte(w ^ (SWAR_ONES * '\r')) | has_zero_byte(w ^ (SWAR_ONES * '\n'));
}

int cr_http_field_value_valid(const char *s, size_t len) {
  size_t i = 0;
  uint64_t bad = 0;
  if (len < 8) {
    for (; i < len; i++)
      if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
        return 0;
    return 1;
  }
  for (; i + 8 <= len; i += 8)
    bad |= has_value_breaker(load8(s + i));
  if (i < len) /* the last word again, overlapping: no byte loop for the tail */
    bad |= has_value_breaker(load8(s + len - 8));
  return bad == 0;
}

/* The parser's pre-scan runs every line of every head through this. */
size_t cr_http_text_run(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
#if SWAR_LITTLE_ENDIAN
  uint64_t c;
  for (; i + 8 <= len; i += 8)
    if ((c = control_bytes(load8(s + i))) != 0)
      return i + (size_t)__builtin_ctzll(c) / 8;
  if (len >= 8 && i < len) { /* the last word again, overlapping bytes already known clean */
    if ((c = control_bytes(load8(s + len - 8))) != 0)
      return len - 8 + (size_t)__builtin_ctzll(c) / 8;
    return len;
  }
#endif
  while (i < len && u[i] >= 0x20 && u[i] != 0x7f)
    i++;
  return i;
}

/* RFC 3986 character classes, as a table for the same reason as tchar: every target and Host of
 * every request goes through it. */
enum { U_REG = 1, /* unreserved / sub-delims: reg-name, and pchar */
       U_PCHAR = 2, /* ":" / "@": pchar beyond reg-name */
       U_SLASH = 4, /* "/" */
       U_QUERY = 8, /* "?" */
       U_HEX = 16 };
static const unsigned char uric[256] = {
    ['-'] = U_REG, ['.'] = U_REG, ['_'] = U_REG, ['~'] = U_REG,
    ['!'] = U_REG, ['$'] = U_REG, ['&'] = U_REG, ['\''] = U_REG, ['('] = U_REG, [')'] = U_REG, ['*'] = U_REG,
    ['+'] = U_REG, [','] = U_REG, [';'] = U_REG, ['='] = U_REG,
    [':'] = U_PCHAR, ['@'] = U_PCHAR, ['/'] = U_SLASH, ['?'] = U_QUERY,
    ['0'] = U_REG | U_HEX, ['1'] = U_REG | U_HEX, ['2'] = U_REG | U_HEX, ['3'] = U_REG | U_HEX,
    ['4'] = U_REG | U_HEX, ['5'] = U_REG | U_HEX, ['6'] = U_REG | U_HEX, ['7'] = U_REG | U_HEX,
    ['8'] = U_REG | U_HEX, ['9'] = U_REG | U_HEX,
    ['A'] = U_REG | U_HEX, ['B'] = U_REG | U_HEX, ['C'] = U_REG | U_HEX, ['D'] = U_REG | U_HEX,
    ['E'] = U_REG | U_HEX, ['F'] = U_REG | U_HEX, ['G'] = U_REG, ['H'] = U_REG, ['I'] = U_REG, ['J'] = U_REG,
    ['K'] = U_REG, ['L'] = U_REG, ['M'] = U_REG, ['N'] = U_REG, ['O'] = U_REG, ['P'] = U_REG, ['Q'] = U_REG,
    ['R'] = U_REG, ['S'] = U_REG, ['T'] = U_REG, ['U'] = U_REG, ['V'] = U_REG, ['W'] = U_REG, ['X'] = U_REG,
    ['Y'] = U_REG, ['Z'] = U_REG,
    ['a'] = U_REG | U_HEX, ['b'] = U_REG | U_HEX, ['c'] = U_REG | U_HEX, ['d'] = U_REG | U_HEX,
    ['e'] = U_REG | U_HEX, ['f'] = U_REG | U_HEX, ['g'] = U_REG, ['h'] = U_REG, ['i'] = U_REG, ['j'] = U_REG,
    ['k'] = U_REG, ['l'] = U_REG, ['m'] = U_REG, ['n'] = U_REG, ['o'] = U_REG, ['p'] = U_REG, ['q'] = U_REG,
    ['r'] = U_REG, ['s'] = U_REG, ['t'] = U_REG, ['u'] = U_REG, ['v'] = U_REG, ['w'] = U_REG, ['x'] = U_REG,
    ['y'] = U_REG, ['z'] = U_REG,
};

static int pct_encoded(const char *s, size_t len, size_t i) {
  return i + 2 < len && (uric[(unsigned char)s[i + 1]] & U_HEX) && (uric[(unsigned char)s[i + 2]] & U_HEX);
}

size_t cr_http_path_query_end(const char *s, size_t len) {
  unsigned allowed = U_REG | U_PCHAR | U_SLASH;
  size_t i;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (uric[c] & allowed)
      continue;
    if (c == '?') {
      allowed |= U_QUERY;
      continue;
    }
    if (c == '%' && pct_encoded(s, len, i)) {
      i += 2;
      continue;
    }
    return i;
  }
  return len;
}

/* IPv6address / IPvFuture, the inside of an IP-literal's brackets. */
static int ip_literal_valid(const char *s, size_t len) {
  char tmp[INET6_ADDRSTRLEN];
  unsigned char addr[16];
  size_t i;
  if (len > 0 && (s[0] == 'v' || s[0] == 'V')) {
    /* "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
    for (i = 1; i < len && (uric[(unsigned char)s[i]] & U_HEX); i++)
      ;
    if (i == 1 || i >= len - 1 || s[i] != '.')
      return 0;
    for (i++; i < len; i++)
      if (!(uric[(unsigned char)s[i]] & U_REG) && s[i] != ':')
        return 0;
    return 1;
  }
  if (len == 0 || len >= sizeof(tmp))
    return 0;
  memcpy(tmp, s, len);
  tmp[len] = '\0';
  return inet_pton(AF_INET6, tmp, addr) == 1;
}

int cr_http_host_valid(const char *s, size_t len) {
  unsigned long port = 0;
  size_t i = 0;
  if (len == 0)
    return 1;
  if (s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (close == NULL || !ip_literal_valid(s + 1, (size_t)(close - s) - 1))
      return 0;
    i = (size_t)(close - s) + 1;
  } else {
    /* reg-name; an IPv4 address is one too (dec-octets are digits and dots) */
    while (i < len && s[i] != ':') {
      if (uric[(unsigned char)s[i]] & U_REG)
        i++;
      else if (s[i] == '%' && pct_encoded(s, len, i))
        i += 3;
      else
        return 0;
    }
    if (i == 0) /* ":port" alone names no host */
      return 0;
  }
  if (i == len)
    return 1;
  if (s[i] != ':' || ++i == len) /* "h:" has an empty port */
    return 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    port = port * 10 + (unsigned long)(s[i] - '0');
    if (port > 65535)
      return 0;
  }
  return 1;
}

const char *cr_http_reason(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 102: return "Processing";
  case 103: return "Early Hints";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 203: return "Non-Authoritative Information";
  case 204: return "No Content";
  case 205: return "Reset Content";
  case 206: return "Partial Content";
  case 207: return "Multi-Status";
  case 208: return "Already Reported";
  case 226: return "IM Used";
  case 300: return "Multiple Choices";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 303: return "See Other";
  case 304: return "Not Modified";
  case 305: return "Use Proxy";
  case 307: return "Temporary Redirect";
  case 308: return "Permanent Redirect";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 402: return "Payment Required";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 406: return "Not Acceptable";
  case 407: return "Proxy Authentication Required";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 410: return "Gone";
  case 411: return "Length Required";
  case 412: return "Precondition Failed";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 415: return "Unsupported Media Type";
  case 416: return "Range Not Satisfiable";
  case 417: return "Expectation Failed";
  case 418: return "I'm a teapot";
  case 421: return "Misdirected Request";
  case 422: return "Unprocessable Content";
  case 423: return "Locked";
  case 424: return "Failed Dependency";
  case 425: return "Too Early";
  case 426: return "Upgrade Required";
  case 428: return "Precondition Required";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 451: return "Unavailable For Legal Reasons";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  case 505: return "HTTP Version Not Supported";
  case 506: return "Variant Also Negotiates";
  case 507: return "Insufficient Storage";
  case 508: return "Loop Detected";
  case 510: return "Not Extended";
  case 511: return "Network Authentication Required";
  default: return "Unknown";
  }
}

void cr_http_msg_release_caches(void) {
  while (free_blocks != NULL) {
    cr_http_msg_block_t *b = free_blocks;
    free_blocks = b->next;
    free(b);
  }
  nfree_blocks = 0;
  while (nfree_headers > 0)
    free(free_headers[--nfree_headers]);
}

cr_http_body_t cr_http_body_framing(const cr_http_msg_t *m, const char *request_method, int stream_delimited) {
  int response = m->status != 0;
  if (response) {
    if (m->status < 200 || m->status == 204 || m->status == 304)
      return CR_HTTP_BODY_NONE;
    if (request_method != NULL && strcmp(request_method, "HEAD") == 0)
      return CR_HTTP_BODY_NONE;
    /* A 2xx to CONNECT turns the connection into a tunnel: what follows is not a body. */
    if (request_method != NULL && strcmp(request_method, "CONNECT") == 0 && m->status < 300)
      return CR_HTTP_BODY_NONE;
  }
  if (m->chunked)
    return CR_HTTP_BODY_CHUNKED;
  if (m->content_length > 0)
    return CR_HTTP_BODY_LENGTH;
  if (m->content_length == 0)
    return CR_HTTP_BODY_NONE;
  /* No length: a response runs to the end of its connection or stream; a request has a body only
   * when its carrier delimits it. */
  return response || stream_delimited ? CR_HTTP_BODY_UNTIL_END : CR_HTTP_BODY_NONE;
}

/* ---- SOAP's HTTP binding ---- */

static const char *skip_ows(const char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  return s;
}

/* The parameters after Content-Type's media type when that is application/soap+xml, else NULL. */
static const char *soap12_params(const cr_http_msg_t *m) {
  static const char want[] = "application/soap+xml";
  const char *ct = cr_http_msg_get_id(m, CR_HDR_CONTENT_TYPE), *s, *e;
  size_t n;
  if (ct == NULL)
    return NULL;
  s = skip_ows(ct);
  n = strcspn(s, ";");
  for (e = s + n; e > s && (e[-1] == ' ' || e[-1] == '\t'); e--)
    ;
  if ((size_t)(e - s) != sizeof want - 1 || strncasecmp(s, want, sizeof want - 1) != 0)
    return NULL;
  return s + n;
}

cr_http_soap_t cr_http_soap_version(const cr_http_msg_t *m) {
  if (soap12_params(m) != NULL)
    return CR_SOAP_12;
  return cr_http_msg_find_id(m, CR_HDR_SOAPACTION) != NULL ? CR_SOAP_11 : CR_SOAP_NONE;
}

/* Appends c to out[cap] at *len; -1 once it no longer fits (NUL included). */
static int put(char *out, size_t cap, size_t *len, char c) {
  if (*len + 1 >= cap)
    return -1;
  out[(*len)++] = c;
  return 0;
}

/* Reads one parameter value (token or quoted-string, RFC 9110 5.6.4, 5.6.6) at *sp into out (when
 * out is not NULL), leaving *sp after it. -1 on a value that does not fit or an unterminated quote. */
static int param_value(const char **sp, char *out, size_t cap, size_t *len) {
  const char *s = *sp;
  int rc = 0;
  if (*s == '"') {
    for (s++; *s != '"'; s++) {
      if (*s == '\0')
        return -1;
      if (*s == '\\' && s[1] != '\0')
        s++;
      if (out != NULL && put(out, cap, len, *s) < 0)
        rc = -1;
    }
    s++;
  } else {
    for (; *s != '\0' && *s != ';' && *s != ' ' && *s != '\t'; s++)
      if (out != NULL && put(out, cap, len, *s) < 0)
        rc = -1;
  }
  *sp = s;
  return rc;
}

/* The action parameter among a media type's ";name=value" list. */
static int soap12_action(const char *s, char *out, size_t cap) {
  size_t len;
  while ((s = strchr(s, ';')) != NULL) {
    const char *name = skip_ows(s + 1), *eq = name;
    int is_action;
    while (*eq != '\0' && *eq != '=' && *eq != ';' && *eq != ' ' && *eq != '\t')
      eq++;
    is_action = eq - name == 6 && strncasecmp(name, "action", 6) == 0;
    s = skip_ows(eq);
    if (*s != '=')
      continue; /* a parameter without value: malformed, skipped */
    s = skip_ows(s + 1);
    len = 0;
    if (param_value(&s, is_action ? out : NULL, cap, &len) < 0)
      return -1;
    if (is_action) {
      out[len] = '\0';
      return (int)len;
    }
  }
  return -1;
}

int cr_http_soap_action(const cr_http_msg_t *m, char *out, size_t cap) {
  const char *params = soap12_params(m), *v, *e;
  size_t n;
  int rc;
  if (cap == 0)
    return -1;
  if (params != NULL && (rc = soap12_action(params, out, cap)) >= 0)
    return rc;
  v = cr_http_msg_get_id(m, CR_HDR_SOAPACTION);
  if (v == NULL)
    return -1;
  v = skip_ows(v);
  for (e = v + strlen(v); e > v && (e[-1] == ' ' || e[-1] == '\t'); e--)
    ;
  if (e == v)
    return -1; /* blank: SOAP 1.1 says no intent is indicated */
  if (e - v >= 2 && v[0] == '"' && e[-1] == '"') {
    v++;
    e--;
  }
  n = (size_t)(e - v);
  if (n + 1 > cap)
    return -1;
  memcpy(out, v, n);
  out[n] = '\0';
  return (int)n;
}

/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/tls_sni.h"

#include <string.h>

#include "ccrelay/error.h"

#define REC_HANDSHAKE 22
#define REC_HEADER 5
#define REC_PAYLOAD_MAX 16384 /* RFC 8446 5.1: a plaintext record carries at most 2^14 bytes */
#define HS_CLIENT_HELLO 1
#define HS_HEADER 4
#define EXT_SERVER_NAME 0
#define NAME_TYPE_HOST 0

/* A cursor over one length-delimited piece of the hello: every read checks what is left. */
typedef struct cur {
  const unsigned char *p;
  size_t left;
} cur_t;

static int take(cur_t *c, size_t n, const unsigned char **out) {
  if (c->left < n)
    return -1;
  if (out)
    *out = c->p;
  c->p += n;
  c->left -= n;
  return 0;
}

static int u8(cur_t *c, size_t *v) {
  const unsigned char *p;
  if (take(c, 1, &p) < 0)
    return -1;
  *v = p[0];
  return 0;
}

static int u16(cur_t *c, size_t *v) {
  const unsigned char *p;
  if (take(c, 2, &p) < 0)
    return -1;
  *v = (size_t)p[0] << 8 | p[1];
  return 0;
}

/* A piece with an n-byte length prefix becomes its own cursor; the outer one moves past it. */
static int sub(cur_t *c, int n, cur_t *out) {
  size_t len;
  if ((n == 1 ? u8(c, &len) : u16(c, &len)) < 0)
    return -1;
  out->p = c->p;
  out->left = len;
  return take(c, len, NULL);
}

/* RFC 6066 3: a host name in ASCII, no trailing dot, no IP literal check here (a service host never
 * matches one). Labels of letters, digits, '-' and '_' (seen in the wild), 1..63 bytes each. */
static int host_name_ok(const unsigned char *p, size_t n) {
  size_t label = 0;
  if (n == 0 || n > CR_TLS_SNI_NAME_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = p[i];
    if (ch == '.') {
      if (label == 0)
        return 0;
      label = 0;
    } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
               ch == '_') {
      if (++label > 63)
        return 0;
    } else {
      return 0;
    }
  }
  return label > 0;
}

/* The server_name extension's body: a list of names, at most one of each type (RFC 6066 3). */
static int server_name_ext(cur_t *ext, char *name, size_t namecap) {
  cur_t list, host;
  size_t type;
  int found = 0;
  if (sub(ext, 2, &list) < 0 || ext->left != 0 || list.left == 0)
    return CR_EPROTO;
  while (list.left > 0) {
    if (u8(&list, &type) < 0 || sub(&list, 2, &host) < 0)
      return CR_EPROTO;
    if (type != NAME_TYPE_HOST)
      continue; /* no other type is defined; a server ignores what it does not know */
    if (found || !host_name_ok(host.p, host.left))
      return CR_EPROTO;
    if (host.left + 1 > namecap)
      return CR_ELIMIT;
    memcpy(name, host.p, host.left);
    name[host.left] = '\0';
    found = 1;
  }
  return found ? CR_TLS_SNI_FOUND : CR_TLS_SNI_NONE;
}

/* The ClientHello body (RFC 8446 4.1.2; TLS 1.2's is the same shape, extensions optional). */
static int client_hello(cur_t *b, char *name, size_t namecap) {
  cur_t v, exts, ext;
  size_t version, type;
  int r = CR_TLS_SNI_NONE, seen_sni = 0;
  if (u16(b, &version) < 0 || (version >> 8) != 3 || take(b, 32, NULL) < 0)
    return CR_EPROTO;
  if (sub(b, 1, &v) < 0 || v.left > 32) /* legacy_session_id */
    return CR_EPROTO;
  if (sub(b, 2, &v) < 0 || v.left < 2 || v.left % 2 != 0) /* cipher_suites */
    return CR_EPROTO;
  if (sub(b, 1, &v) < 0 || v.left < 1) /* legacy_compression_methods */
    return CR_EPROTO;
  if (b->left == 0)
    return CR_TLS_SNI_NONE; /* an old hello without extensions */
  if (sub(b, 2, &exts) < 0 || b->left != 0)
    return CR_EPROTO;
  while (exts.left > 0) {
    if (u16(&exts, &type) < 0 || sub(&exts, 2, &ext) < 0)
      return CR_EPROTO;
    if (type != EXT_SERVER_NAME)
      continue;
    if (seen_sni++) /* RFC 8446 4.2: no extension type twice */
      return CR_EPROTO;
    r = server_name_ext(&ext, name, namecap);
    if (r < 0)
      return r;
  }
  return r;
}

int cr_tls_sni_parse(const unsigned char *data, size_t len, char *name, size_t namecap, size_t *hello_end) {
  /* The hello is gathered out of its records so that one cursor walks it; records are at most 16 KiB
   * and so is the hello we accept, so this is bounded and the caller's buffer needs no alignment. */
  unsigned char hs[CR_TLS_SNI_HELLO_MAX];
  size_t have = 0, need = 0, off = 0;
  if (namecap == 0)
    return CR_ELIMIT;
  name[0] = '\0';
  while (off < len) {
    size_t rlen, n;
    if (data[off] != REC_HANDSHAKE)
      return CR_EPROTO;
    if (len - off >= 2 && data[off + 1] != 3)
      return CR_EPROTO;
    if (len - off < REC_HEADER)
      return CR_TLS_SNI_MORE;
    rlen = (size_t)data[off + 3] << 8 | data[off + 4];
    if (rlen == 0 || rlen > REC_PAYLOAD_MAX)
      return CR_EPROTO;
    off += REC_HEADER;
    n = CR_TLS_SNI_HELLO_MAX - have;
    if (n > rlen)
      n = rlen;
    if (n > len - off)
      n = len - off;
    memcpy(hs + have, data + off, n);
    have += n;
    if (need == 0 && have >= HS_HEADER) {
      if (hs[0] != HS_CLIENT_HELLO)
        return CR_EPROTO;
      need = HS_HEADER + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
      if (need > CR_TLS_SNI_HELLO_MAX)
        return CR_ELIMIT;
    } else if (have > 0 && hs[0] != HS_CLIENT_HELLO) {
      return CR_EPROTO;
    }
    if (need != 0 && have >= need) {
      cur_t body = {hs + HS_HEADER, need - HS_HEADER};
      int r;
      /* A record that carries the hello carries nothing else (no coalesced messages before the
       * server's answer), and the record must be whole to know where the next one starts. */
      if (have > need || len - off < rlen)
        return len - off < rlen && have == need ? CR_TLS_SNI_MORE : CR_EPROTO;
      r = client_hello(&body, name, namecap);
      if (r < 0)
        name[0] = '\0';
      else if (hello_end)
        *hello_end = off + rlen;
      return r;
    }
    if (len - off < rlen)
      return CR_TLS_SNI_MORE;
    off += rlen;
  }
  return CR_TLS_SNI_MORE;
}

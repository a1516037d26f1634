/* SPDX-License-Identifier: Apache-2.0 */
/* Who may call a service and how much (services[].callers, services[].limits), and what the gateway
 * tells the agent about the caller (Forwarded, X-Forwarded-For; public.trusted_proxies).
 *
 * Checked once per request, when its service is known and before anything goes down a tunnel: a
 * refused request reaches no agent. The rules run cheapest first (source address, certificate,
 * token) and the first that fails decides the answer. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/buf.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/tls.h"
#include "ccrelay/x509.h"
#include "gateway_internal.h"

#define DIGEST_LEN 32

typedef struct service_policy {
  cr_tls_ca_set_t *cas;    /* the roots a caller's certificate must chain to; NULL: the handshake's
                              check is all there is */
  int own_ca;              /* cas comes from callers.client_ca (else public.client_ca) */
  unsigned char *digests;  /* SHA-256 of each token, DIGEST_LEN apart */
  size_t ntokens;
  unsigned inflight;       /* calls with a tunnel stream open */
} service_policy_t;

struct cr__gw_policy {
  const cr_conf_gateway_t *conf;
  service_policy_t *svc;
  const char **client_cas; /* every callers.client_ca, for the public listener */
  size_t nclient_cas;
};

int cr__gw_policy_new(const cr_conf_gateway_t *conf, const char *event, cr__gw_policy_t **out) {
  cr__gw_policy_t *p = cr_calloc(1, sizeof *p);
  cr_tls_ca_set_t *public_cas = NULL;
  char err[512];
  int r;
  p->conf = conf;
  p->svc = cr_calloc(conf->nservices ? conf->nservices : 1, sizeof *p->svc);
  p->client_cas = cr_calloc(conf->nservices ? conf->nservices : 1, sizeof *p->client_cas);
  *out = p;
  for (size_t i = 0; i < conf->nservices; i++) {
    const cr_conf_callers_t *cl = &conf->services[i].callers;
    if (cl->client_ca.path == NULL)
      continue;
    p->client_cas[p->nclient_cas++] = cl->client_ca.path;
    if ((r = cr_tls_ca_set_load(cl->client_ca.path, &p->svc[i].cas, err, sizeof err)) < 0) {
      cr_log_error(event, "config=%s:%d:%d key=services[%zu].callers.client_ca reason=\"%s\"", conf->path,
                   cl->client_ca.pos.line, cl->client_ca.pos.col, i, err);
      return r;
    }
    p->svc[i].own_ca = 1;
  }
  /* With per-service CAs the handshake accepts a certificate from any of them, so a service that
   * relies on public.client_ca must check that its caller's chains to that one. */
  if (p->nclient_cas > 0 && conf->public_.client_ca.path != NULL) {
    if ((r = cr_tls_ca_set_load(conf->public_.client_ca.path, &public_cas, err, sizeof err)) < 0) {
      cr_log_error(event, "config=%s key=public.client_ca reason=\"%s\"", conf->path, err);
      return r;
    }
  }
  for (size_t i = 0; i < conf->nservices; i++) {
    const cr_conf_callers_t *cl = &conf->services[i].callers;
    service_policy_t *sp = &p->svc[i];
    if (!sp->own_ca && public_cas != NULL) {
      /* Shared, not copied: the stores are immutable; freed once, as public_cas (below). */
      sp->cas = public_cas;
    }
    if (cl->ntokens > 0) {
      sp->digests = cr_malloc(cl->ntokens * DIGEST_LEN);
      for (size_t k = 0; k < cl->ntokens; k++)
        cr_x509_sha256(cl->tokens[k], strlen(cl->tokens[k]), sp->digests + k * DIGEST_LEN);
      sp->ntokens = cl->ntokens;
    }
  }
  /* Kept by services that share it; a spare reference when none does (no service without its own CA). */
  if (public_cas != NULL) {
    int used = 0;
    for (size_t i = 0; i < conf->nservices; i++)
      used |= p->svc[i].cas == public_cas;
    if (!used)
      cr_tls_ca_set_free(public_cas);
  }
  return 0;
}

void cr__gw_policy_free(cr__gw_policy_t *p) {
  cr_tls_ca_set_t *shared = NULL;
  if (p == NULL)
    return;
  for (size_t i = 0; i < p->conf->nservices; i++) {
    service_policy_t *sp = &p->svc[i];
    if (sp->own_ca)
      cr_tls_ca_set_free(sp->cas);
    else if (sp->cas)
      shared = sp->cas;
    if (sp->digests) {
      cr_wipe(sp->digests, sp->ntokens * DIGEST_LEN);
      free(sp->digests);
    }
  }
  cr_tls_ca_set_free(shared);
  free(p->client_cas);
  free(p->svc);
  free(p);
}

const char *const *cr__gw_policy_client_cas(const cr__gw_policy_t *p, size_t *n) {
  *n = p->nclient_cas;
  return p->client_cas;
}

/* ---------- the caller's address ---------- */

/* The address of peer ("192.0.2.7:443", "[2001:db8::1]:443") without its port, into out. */
static const char *peer_ip(const char *peer, char *out, size_t outlen) {
  const char *end;
  size_t n;
  if (peer[0] == '[') {
    end = strchr(peer, ']');
    peer++;
  } else {
    end = strrchr(peer, ':');
  }
  n = end ? (size_t)(end - peer) : strlen(peer);
  if (n >= outlen)
    n = outlen - 1;
  memcpy(out, peer, n);
  out[n] = '\0';
  return out;
}

int cr__gw_policy_source_allowed(const cr_conf_gateway_t *conf, size_t si, const char *peer, char *ip, size_t iplen) {
  const cr_conf_callers_t *cl = &conf->services[si].callers;
  peer_ip(peer, ip, iplen);
  return cl->nsources == 0 || cr_conf_cidr_match(cl->sources, cl->nsources, ip);
}

/* ---------- certificate subjects ---------- */

typedef struct name_match {
  const cr_conf_subject_t *subjects;
  size_t n;
  cr_conf_subject_kind_t kind;
} name_match_t;

static int dns_matches(const cr_conf_subject_t *s, const char *name) {
  size_t n = strlen(name), k = strlen(s->value);
  const char *dot;
  if (!s->wildcard)
    return strcasecmp(name, s->value) == 0;
  /* "*.example.com" (stored ".example.com"): one non-empty label, then exactly the suffix. */
  if (n <= k || strcasecmp(name + n - k, s->value) != 0)
    return 0;
  dot = strchr(name, '.');
  return dot == name + n - k && dot != name;
}

static int name_allowed(const char *name, void *arg) {
  const name_match_t *m = arg;
  for (size_t i = 0; i < m->n; i++) {
    const cr_conf_subject_t *s = &m->subjects[i];
    if (s->kind != m->kind)
      continue;
    if (s->kind == CR_SUBJECT_CN && strcmp(name, s->value) == 0)
      return 1;
    if (s->kind == CR_SUBJECT_DNS && dns_matches(s, name))
      return 1;
    if (s->kind == CR_SUBJECT_URI &&
        (s->wildcard ? strncmp(name, s->value, strlen(s->value)) == 0 : strcmp(name, s->value) == 0))
      return 1;
  }
  return 0;
}

static int subject_allowed(X509 *leaf, const cr_conf_callers_t *cl) {
  name_match_t m = {cl->subjects, cl->nsubjects, CR_SUBJECT_CN};
  char cn[256];
  cr_x509_common_name(leaf, cn, sizeof cn);
  if (cn[0] && name_allowed(cn, &m))
    return 1;
  m.kind = CR_SUBJECT_DNS;
  if (cr_x509_each_dns_san(leaf, name_allowed, &m))
    return 1;
  m.kind = CR_SUBJECT_URI;
  return cr_x509_each_uri_san(leaf, name_allowed, &m);
}

/* ---------- bearer tokens ---------- */

/* 1 when the request's one Authorization field is "Bearer TOKEN" with a configured token. Every
 * configured token is compared, each in time that depends only on the digest length, so neither
 * which token matched nor how much of one did shows in the answer's timing. */
static int token_allowed(const service_policy_t *sp, const cr_http_msg_t *req, int *present) {
  const char *v = cr_http_msg_get_id(req, CR_HDR_AUTHORIZATION);
  unsigned char d[DIGEST_LEN];
  int ok = 0;
  *present = v != NULL;
  if (v == NULL || cr_http_msg_count(req, "authorization") != 1 || strncasecmp(v, "bearer ", 7) != 0)
    return 0;
  for (v += 7; *v == ' '; v++)
    ;
  if (*v == '\0')
    return 0;
  cr_x509_sha256(v, strlen(v), d);
  for (size_t k = 0; k < sp->ntokens; k++)
    ok |= cr_x509_mem_equal(d, sp->digests + k * DIGEST_LEN, DIGEST_LEN);
  cr_wipe(d, sizeof d);
  return ok;
}

/* ---------- the check ---------- */

static int refuse(cr__gw_refusal_t *r, int status, const char *rule, const char *code, const char *fmt, ...)
    CR_PRINTF(5, 6);
static int refuse(cr__gw_refusal_t *r, int status, const char *rule, const char *code, const char *fmt, ...) {
  va_list ap;
  r->status = status;
  r->rule = rule;
  r->code = code;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
  return 1;
}

int cr__gw_policy_check(cr__gw_policy_t *p, size_t si, const cr_stream_t *caller, const cr_http_msg_t *req,
                        cr__gw_refusal_t *r) {
  const cr_conf_callers_t *cl = &p->conf->services[si].callers;
  const service_policy_t *sp = &p->svc[si];
  char ip[64], why[300];
  int rc, present;
  memset(r, 0, sizeof *r);
  if (cl->nsources > 0 && !cr_conf_cidr_match(cl->sources, cl->nsources, peer_ip(caller->peer, ip, sizeof ip)))
    return refuse(r, 403, "sources", "forbidden", "the caller's address %s is not in this service's sources", ip);
  if (sp->cas != NULL) {
    rc = cr_tls_stream_peer_verify(caller, sp->cas, why, sizeof why);
    if (rc == UV_ENOENT)
      return refuse(r, 401, "client_ca", "unauthorized", "this service requires a client certificate");
    if (rc < 0)
      return refuse(r, 403, "client_ca", "forbidden", "the client certificate is not from this service's CA: %s",
                    why);
  }
  if (cl->nsubjects > 0) {
    X509 *leaf = cr_tls_stream_peer_cert(caller);
    if (leaf == NULL)
      return refuse(r, 401, "client_ca", "unauthorized", "this service requires a client certificate");
    if (!subject_allowed(leaf, cl)) {
      char subject[200];
      cr_x509_subject(leaf, subject, sizeof subject);
      return refuse(r, 403, "subjects", "forbidden", "the client certificate (%s) has none of this service's subjects",
                    subject);
    }
  }
  if (sp->ntokens > 0 && !token_allowed(sp, req, &present)) {
    r->www_authenticate = present ? "Bearer realm=\"ccrelay\", error=\"invalid_token\"" : "Bearer realm=\"ccrelay\"";
    return refuse(r, 401, "token", "unauthorized",
                  present ? "the bearer token is not one this service accepts" : "this service requires a bearer token");
  }
  return 0;
}

int cr__gw_policy_strips_authorization(const cr__gw_policy_t *p, size_t si) { return p->svc[si].ntokens > 0; }

int cr__gw_policy_acquire(cr__gw_policy_t *p, size_t si) {
  if (p->svc[si].inflight >= p->conf->services[si].max_concurrent)
    return CR_ELIMIT;
  p->svc[si].inflight++;
  return 0;
}

void cr__gw_policy_release(cr__gw_policy_t *p, size_t si) {
  if (p->svc[si].inflight > 0)
    p->svc[si].inflight--;
}

/* ---------- Forwarded, X-Forwarded-For ---------- */

/* name's values joined by ", " into out ("" when it has none). */
static void joined(const cr_http_msg_t *m, cr_http_hdr_t id, cr_buf_t *out) {
  for (size_t i = 0; i < m->nheaders; i++) {
    const cr_http_header_t *h = &m->headers[i];
    if (h->value_len > 0 && h->id == id) {
      if (out->len)
        cr_buf_append(out, ", ", 2);
      cr_buf_append(out, h->value, h->value_len);
    }
  }
}

#define PART(s, n) ((cr_http_part_t){(s), (n)})
#define PART_LIT(s) PART(s, sizeof s - 1)

/* Runs for every forwarded call: the new values are assembled straight into the message's storage
 * (no printf, no staging buffer); only a trusted proxy's earlier values are joined first. */
int cr__gw_forwarded(cr_http_msg_t *fwd, const cr_conf_gateway_t *conf, const char *peer, const char *host) {
  char ip[64];
  cr_buf_t fv, xv;
  cr_http_part_t p[8];
  size_t n = 0;
  int trusted, rc;
  peer_ip(peer, ip, sizeof ip);
  trusted = conf->public_.ntrusted_proxies > 0 &&
            cr_conf_cidr_match(conf->public_.trusted_proxies, conf->public_.ntrusted_proxies, ip);
  cr_buf_init(&fv, 0);
  cr_buf_init(&xv, 0);
  if (trusted) {
    joined(fwd, CR_HDR_FORWARDED, &fv);
    joined(fwd, CR_HDR_X_FORWARDED_FOR, &xv);
  }
  /* Ours replace these; an untrusted caller's own claims about where it is (Host, Proto too) would
   * reach the upstream as ours. */
  {
    uint32_t claims = CR_HDR_BIT(CR_HDR_X_FORWARDED_HOST) | CR_HDR_BIT(CR_HDR_X_FORWARDED_PROTO);
    cr_http_msg_remove_ids(fwd, CR_HDR_BIT(CR_HDR_FORWARDED) | CR_HDR_BIT(CR_HDR_X_FORWARDED_FOR) |
                                    (trusted ? 0 : claims));
  }
  /* RFC 7239: an address with a port (and any IPv6 address) is a quoted string. */
  if (fv.len) {
    p[n++] = PART(fv.base, fv.len);
    p[n++] = PART_LIT(", ");
  }
  p[n++] = PART_LIT("for=\"");
  p[n++] = PART(peer, strlen(peer));
  p[n++] = PART_LIT("\";proto=https;host=\"");
  p[n++] = PART(host ? host : "", host ? strlen(host) : 0);
  p[n++] = PART_LIT("\"");
  rc = cr_http_msg_add_header_parts(fwd, CR_HDR_FORWARDED, "forwarded", 9, p, n);
  n = 0;
  if (xv.len) {
    p[n++] = PART(xv.base, xv.len);
    p[n++] = PART_LIT(", ");
  }
  p[n++] = PART(ip, strlen(ip));
  if (rc == 0)
    rc = cr_http_msg_add_header_parts(fwd, CR_HDR_X_FORWARDED_FOR, "x-forwarded-for", 15, p, n);
  cr_buf_free(&fv);
  cr_buf_free(&xv);
  return rc;
}

/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's use of the trusted-root store: each route's client identity must chain to a trusted
 * root (intermediates from its PKCS#12 or the store) before the route is used, the full chain is
 * what the route presents, and upstream certificates are verified against the store unless the route
 * names its own CA file. Reloaded on SIGHUP, on a change in the directory, and after a remote change:
 * new connections use the new store, streams in flight are untouched, and no pooled connection or TLS
 * session made under the old store is reused (each reload gives every upstream a new TLS context).
 *
 * A load is never all-or-nothing on one file: a store file that does not parse, does not match its
 * name, is not a regular file or is group/world-writable is left out (it adds nothing it would have
 * added) and reported once (log, /status "bad_files", a counter), and the rest loads, so a removal
 * or a new CRL always takes effect. A reload that cannot read the store at all (directory gone,
 * unreadable, now group/world-writable) changes nothing: the last good state stays, and /status says
 * why. Routes with their own `ca:` never consult the store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_internal.h"
#include "ccrelay/agent.h"
#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/log.h"
#include "ccrelay/x509.h"

#define RELOAD_DEBOUNCE_MS 100
#define EXPIRY_CHECK_MS (12ULL * 3600 * 1000)

cr_trust_crl_mode_t cr__agent_crl_mode(cr_conf_revocation_t r) {
  return r == CR_REVOCATION_HARD ? CR_TRUST_CRL_HARD : r == CR_REVOCATION_SOFT ? CR_TRUST_CRL_SOFT : CR_TRUST_CRL_OFF;
}

#define crl_mode_of cr__agent_crl_mode

static const char *mode_name(cr_trust_crl_mode_t m) {
  return m == CR_TRUST_CRL_HARD ? "hard" : m == CR_TRUST_CRL_SOFT ? "soft" : "off";
}

static long days_until(time_t t) { return (long)((t - time(NULL)) / 86400); }

static void route_refuse(agent_t *a, route_rt_t *rt, const char *why_event, const char *fmt, ...) CR_PRINTF(4, 5);
static void route_refuse(agent_t *a, route_rt_t *rt, const char *why_event, const char *fmt, ...) {
  char was[sizeof rt->why];
  va_list ap;
  snprintf(was, sizeof was, "%s", rt->why);
  va_start(ap, fmt);
  vsnprintf(rt->why, sizeof rt->why, fmt, ap);
  va_end(ap);
  /* A reload that finds the same fault again stays quiet: once per fault is enough. */
  if (rt->usable || strcmp(was, rt->why) != 0)
    cr_log_error("route refused", "route=%s config=%s:%d:%d reason=\"%s\" trigger=%s", rt->conf->name,
                 a->conf->path, rt->conf->pos.line, rt->conf->pos.col, rt->why, why_event);
  rt->usable = 0;
}

/* ---- a route's upstream TLS: the same code for the agent, `check` and `probe` ---- */

void cr_agent_route_policy(const cr_conf_route_t *r, cr_tls_policy_t *out) {
  out->min_version = r->tls.min_version;
  out->max_version = r->tls.max_version;
  out->security_level = r->tls.security_level;
  out->ciphers = r->tls.ciphers;
  out->curves = r->tls.curves;
}

int cr_agent_route_check(const cr_conf_route_t *r, const cr_conf_identity_t *id, cr_tls_identity_t *out,
                         const char **key, cr_conf_pos_t *pos, int *loading, char *err, size_t errlen) {
  static const struct {
    const char *policy_key, *conf_key;
    size_t pos_off;
  } keys[] = {{"ciphers", "tls.ciphers", offsetof(cr_conf_route_t, tls.ciphers_pos)},
              {"curves", "tls.curves", offsetof(cr_conf_route_t, tls.curves_pos)},
              {"min_version", "tls.min_version", offsetof(cr_conf_route_t, tls.min_pos)},
              {"max_version", "tls.max_version", offsetof(cr_conf_route_t, tls.max_pos)},
              {"security_level", "tls.security_level", offsetof(cr_conf_route_t, tls.level_pos)}};
  cr_tls_identity_src_t src;
  cr_tls_policy_t policy;
  const char *pkey;
  int r_;
  memset(out, 0, sizeof *out);
  *loading = 0;
  *key = "tls";
  *pos = r->tls.pos;
  if (r->plain_http)
    return 0;
  if (id == NULL)
    id = &r->identity;
  cr_agent_route_policy(r, &policy);
  if ((r_ = cr_tls_policy_check(&policy, &pkey, err, errlen)) < 0) {
    for (size_t i = 0; pkey && i < CR_ARRAY_SIZE(keys); i++)
      if (strcmp(pkey, keys[i].policy_key) == 0) {
        *key = keys[i].conf_key;
        *pos = *(const cr_conf_pos_t *)((const char *)r + keys[i].pos_off);
      }
    return r_;
  }
  *key = "identity";
  *pos = id->pkcs12.path ? id->pkcs12.pos : id->cert.path ? id->cert.pos : id->pos;
  src.pkcs12 = id->pkcs12.path;
  src.password = id->password;
  src.cert = id->cert.path;
  src.key = id->key.path;
  if ((r_ = cr_tls_identity_load(&src, out, err, errlen)) < 0) {
    *loading = 1;
    return r_;
  }
  if ((r_ = cr_tls_policy_check_chain(&policy, out->cert, out->chain, err, errlen)) < 0) {
    cr_tls_identity_free(out);
    return r_;
  }
  return 0;
}


int cr__agent_route_identity(const cr_conf_agent_t *conf, const cr_conf_route_t *r, const cr_conf_identity_t *idc,
                             X509_STORE *store, const char *store_error, cr_tls_identity_t *id, char *subject,
                             size_t sublen, char *warn, size_t warnlen, int *stage, char *err, size_t errlen) {
  STACK_OF(X509) *verified = NULL;
  cr_conf_pos_t pos;
  const char *key;
  char detail[700];
  int xerr = 0, loading, rc;

  subject[0] = '\0';
  if (warn && warnlen)
    warn[0] = '\0';
  *stage = 0;
  /* The route's tls settings, its identity loaded and judged under the route's security level: the
   * same words as `check` and `probe`. */
  if ((rc = cr_agent_route_check(r, idc, id, &key, &pos, &loading, detail, sizeof detail)) < 0) {
    *stage = strcmp(key, "identity") == 0 ? 1 : 0;
    if (loading)
      snprintf(err, errlen, "client identity cannot be loaded: %s", detail);
    else if (*stage == 0)
      snprintf(err, errlen, "upstream.%s: %s", key, detail);
    else
      snprintf(err, errlen, "%s", detail);
    return rc;
  }
  if (r->plain_http)
    return 0; /* no TLS: no identity, nothing to chain */
  *stage = 2;
  cr_x509_subject(id->cert, subject, sublen);
  if (r->ca.path) {
    /* Pinned to its own CA: nothing about this route depends on the store, so a damaged or missing
     * store never takes it down. It presents the chain its identity file carries. */
    const cr_conf_identity_t *use = idc ? idc : &r->identity;
    if ((rc = cr_tls_identity_check_current(id, use->pkcs12.path ? use->pkcs12.path : use->cert.path, detail,
                                            sizeof detail)) < 0) {
      snprintf(err, errlen, "client identity cannot be used: %s", detail);
      cr_tls_identity_free(id);
    }
    return rc;
  }
  if (store == NULL) {
    snprintf(err, errlen, "%s", store_error ? store_error : "the trust store cannot be used");
    cr_tls_identity_free(id);
    return CR_ETRUST_REFUSED;
  }
  if ((rc = cr_trust_verify_store(store, id->cert, id->chain, CR_TRUST_PURPOSE_CLIENT, &verified, &xerr, warn, warnlen,
                                  detail, sizeof detail)) < 0) {
    snprintf(err, errlen,
             "client identity %s does not chain to a trusted root of %s: %s; add the root of its chain with "
             "`ccrelay trust add`",
             subject, conf ? conf->trust_store : "the trust store", detail);
    cr_tls_identity_free(id);
    return rc;
  }
  /* The route presents the chain without a self-signed root: the peer has that, or the chain is
   * useless to it anyway. */
  cr_x509_chain_free(id->chain);
  id->chain = cr_x509_chain_after_leaf(verified);
  cr_x509_chain_free(verified);
  return 0;
}

/* The route's upstream TLS context from an identity validated as above: verification against the
 * route's ca or the store, the route's tls policy, session resumption as asked. */
static int route_ctx(const cr_conf_route_t *r, cr_tls_identity_t *id, X509_STORE *store, cr_trust_crl_mode_t mode,
                     int resume, cr_tls_ctx_t **out, char *err, size_t errlen) {
  cr_tls_policy_t policy;
  cr_tls_ctx_opts_t o;
  char why[600];
  int rc;
  cr_agent_route_policy(r, &policy);
  memset(&o, 0, sizeof o);
  o.identity_loaded = id;
  o.alpn = "http/1.1";
  o.policy = &policy;
  if (r->ca.path) {
    o.ca_file = r->ca.path;
  } else {
    o.verify_store = store;
    o.crl_soft = mode == CR_TRUST_CRL_SOFT;
  }
  o.resume_sessions = resume;
  if ((rc = cr_tls_ctx_new(&o, out, why, sizeof why)) < 0)
    snprintf(err, errlen, "TLS context cannot be built: %s", why);
  return rc;
}

int cr__agent_route_tls(const cr_conf_route_t *r, const cr_conf_identity_t *idc, X509_STORE *store,
                        cr_trust_crl_mode_t mode, int resume, cr_tls_ctx_t **out, char *subject, size_t subjectlen,
                        time_t *not_after, char *warn, size_t warnlen, int *stage, char *err, size_t errlen) {
  cr_tls_identity_t id;
  int rc;
  *out = NULL;
  memset(&id, 0, sizeof id);
  rc = cr__agent_route_identity(NULL, r, idc, store, "no trust store to verify the client identity against", &id,
                                subject, subjectlen, warn, warnlen, stage, err, errlen);
  if (rc < 0)
    return rc;
  *not_after = id.cert ? cr_x509_not_after(id.cert) : 0;
  if (r->plain_http)
    return 0;
  rc = route_ctx(r, &id, store, mode, resume, out, err, errlen);
  if (rc < 0)
    *stage = 3;
  cr_tls_identity_free(&id);
  return rc;
}


static void route_ready(agent_t *a, route_rt_t *rt, const char *subject, const char *verify, cr_trust_crl_mode_t mode,
                        const char *event) {
  if (!rt->usable)
    cr_log_info("route ready", "route=%s identity=\"%s\" upstream=%s verify=%s revocation=%s trigger=%s",
                rt->conf->name, subject, rt->conf->upstream_url, verify, mode_name(mode), event);
  rt->usable = 1;
  rt->why[0] = '\0';
}

static int upstream_create(agent_t *a, route_rt_t *rt, cr_tls_ctx_t *tls, char *err, size_t errlen) {
  const cr_conf_route_t *r = rt->conf;
  cr_upstream_opts_t uo;
  memset(&uo, 0, sizeof uo);
  uo.name = r->name;
  uo.host = r->upstream_host;
  uo.port = r->upstream_port;
  uo.server_name = r->server_name ? r->server_name : r->upstream_host;
  uo.tls = tls;
  uo.plain_http = r->plain_http;
  uo.connect_timeout_ms = r->connect_timeout_ms;
  uo.response_timeout_ms = r->response_timeout_ms;
  uo.idle_timeout_ms = r->idle_timeout_ms;
  uo.max_idle = r->max_idle;
  uo.max_header_size = a->conf->max_header_size;
  uo.max_header_fields = a->conf->max_header_fields;
  return cr_upstream_new(&a->loop, &uo, &rt->up, err, errlen);
}

/* Makes one route usable, or refuses it. store: the X509_STORE for its revocation mode, or NULL when
 * the store cannot be used (store_error says why); routes with their own ca: ignore both. A route
 * already in use whose identity can no longer be loaded (a bad replacement file or password) keeps
 * the identity it has, with an error: only a trust decision (the chain) takes it out of use. */
static void load_route(agent_t *a, route_rt_t *rt, X509_STORE *store, const char *store_error,
                       cr_trust_crl_mode_t mode, const char *event) {
  const cr_conf_route_t *r = rt->conf;
  cr_tls_identity_t id;
  cr_tls_ctx_t *tls = NULL;
  char err[900], warn[400] = "", subject[256];
  time_t not_after;
  int stage;

  if (r->plain_http) {
    if (rt->up == NULL && upstream_create(a, rt, NULL, err, sizeof err) < 0) {
      route_refuse(a, rt, event, "%s", err);
      return;
    }
    route_ready(a, rt, "none", "none (plain HTTP)", mode, event);
    return;
  }
  memset(&id, 0, sizeof id);
  if (cr__agent_route_identity(a->conf, r, rt->identity, store, store_error, &id, subject, sizeof subject, warn,
                               sizeof warn, &stage, err, sizeof err) < 0) {
    if (stage == 1 && rt->usable && rt->up != NULL) {
      cr_log_error("route identity not replaced: keeping the one in use",
                   "route=%s config=%s:%d:%d identity=\"%s\" reason=\"%s\" trigger=%s", r->name, a->conf->path,
                   r->pos.line, r->pos.col, rt->id_subject, err, event);
      return;
    }
    if (subject[0])
      snprintf(rt->id_subject, sizeof rt->id_subject, "%s", subject);
    if (!r->ca.path && store && a->trust.nbad > 0)
      /* The root it needs may be in a file that was left out: say so where the operator looks. */
      route_refuse(a, rt, event, "%s; %zu file(s) of the store were left out, first %s: %s", err, a->trust.nbad,
                   a->trust.bad[0].path, a->trust.bad[0].why);
    else
      route_refuse(a, rt, event, "%s", err);
    return;
  }
  not_after = cr_x509_not_after(id.cert);
  /* (A reload's new route starts with its predecessor's subject and date: the rotation is logged too.) */
  if (rt->id_subject[0] && (strcmp(rt->id_subject, subject) != 0 || rt->id_not_after != not_after))
    cr_log_info("route identity replaced", "route=%s identity=\"%s\" was=\"%s\" trigger=%s", r->name, subject,
                rt->id_subject, event);
  snprintf(rt->id_subject, sizeof rt->id_subject, "%s", subject);
  rt->id_not_after = not_after;
  if (warn[0])
    cr_log_warn("soft revocation: client identity allowed without a usable CRL", "route=%s reason=\"%s\"", r->name,
                warn);
  /* New upstream connections resume the last session (no certificate exchange, no signature, no
   * chain check). A reload builds a new context, so a changed store or CRL never meets an old
   * session; only hard revocation also wants a CRL that went stale while running to stop new
   * connections, so it keeps full handshakes. */
  if (route_ctx(r, &id, store, mode, r->ca.path || mode != CR_TRUST_CRL_HARD, &tls, err, sizeof err) < 0) {
    route_refuse(a, rt, event, "%s", err);
    cr_tls_identity_free(&id);
    return;
  }
  cr_tls_identity_free(&id);
  if (rt->up == NULL) {
    if (upstream_create(a, rt, tls, err, sizeof err) < 0) {
      route_refuse(a, rt, event, "%s", err);
      cr_tls_ctx_free(tls);
      return;
    }
  } else {
    cr_upstream_set_tls(rt->up, tls);
  }
  cr_tls_ctx_free(tls);
  route_ready(a, rt, subject, r->ca.path ? "ca_file" : "trust_store", mode, event);
}

/* A reload that cannot read the store at all (directory gone, unreadable, or now group/world-writable)
 * changes nothing: the routes keep the state of the last good load. Before any load succeeded there
 * is none, so routes on the store are refused; routes with their own ca: load regardless. */
static void keep_last_good(agent_t *a, const char *why, const char *err) {
  agent_trust_t *t = &a->trust;
  int again = strcmp(t->error, err) == 0;
  snprintf(t->error, sizeof t->error, "%s", err);
  a->metrics.reloads_failed++;
  if (t->loaded) {
    t->kept_last_good++;
    if (!again)
      cr_log_error("trust store reload failed; keeping the last good state", "dir=%s trigger=%s reason=\"%s\"",
                   a->conf->trust_store, why, err);
    /* A configuration reload checked the store just before; should it have become unreadable since,
     * its new routes have no last good state: those on the store are refused until it reads again. */
    for (size_t i = 0; i < a->conf->nroutes; i++)
      if (a->routes[i].up == NULL && !a->routes[i].usable)
        load_route(a, &a->routes[i], NULL, t->error, crl_mode_of(a->routes[i].conf->revocation), why);
    return;
  }
  for (size_t i = 0; i < a->conf->nroutes; i++)
    load_route(a, &a->routes[i], NULL, t->error, crl_mode_of(a->routes[i].conf->revocation), why);
}

static int same_problem(const cr_trust_problem_t *p, const cr_trust_problem_t *q) {
  return strcmp(p->path, q->path) == 0 && strcmp(p->why, q->why) == 0;
}

/* Logs the store files this load leaves out that the previous one did not (once per file and
 * reason, however often the store reloads), and the ones that are fine again; keeps the new set. */
static void report_bad_files(agent_t *a, cr_trust_list_t *l, const char *why) {
  agent_trust_t *t = &a->trust;
  for (size_t i = 0; i < l->nproblems; i++) {
    int known = 0;
    for (size_t j = 0; j < t->nbad && !known; j++)
      known = same_problem(&l->problems[i], &t->bad[j]);
    if (known)
      continue;
    t->bad_reported++;
    cr_log_error("trust store file left out", "dir=%s file=%s reason=\"%s\" trigger=%s", a->conf->trust_store,
                 l->problems[i].path, l->problems[i].why, why);
  }
  for (size_t j = 0; j < t->nbad; j++) {
    int still = 0;
    for (size_t i = 0; i < l->nproblems && !still; i++)
      still = strcmp(l->problems[i].path, t->bad[j].path) == 0;
    if (!still)
      cr_log_info("trust store file no longer left out", "dir=%s file=%s trigger=%s", a->conf->trust_store,
                  t->bad[j].path, why);
  }
  for (size_t j = 0; j < t->nbad; j++) {
    free(t->bad[j].path);
    free(t->bad[j].why);
  }
  free(t->bad);
  t->bad = l->problems;
  t->nbad = l->nproblems;
  l->problems = NULL;
  l->nproblems = 0;
}

void cr__agent_trust_reload(agent_t *a, const char *why, int force) {
  agent_trust_t *t = &a->trust;
  X509_STORE *stores[3] = {NULL, NULL, NULL};
  int built[3] = {0, 0, 0};
  char err[600], store_err[3][600] = {"", "", ""};
  cr_trust_list_t l;
  uint64_t gen = 0;

  if (t->store == NULL) {
    if (cr_truststore_open(a->conf->trust_store, 0, &t->store, err, sizeof err) < 0) {
      keep_last_good(a, why, err);
      return;
    }
  } else {
    /* The handle was checked when opened; the directory's mode can change since. */
    cr_truststore_t *probe;
    if (cr_truststore_open(a->conf->trust_store, 0, &probe, err, sizeof err) < 0) {
      keep_last_good(a, why, err);
      return;
    }
    cr_truststore_close(probe);
  }
  if (cr_truststore_generation(t->store, &gen, err, sizeof err) < 0) {
    keep_last_good(a, why, err);
    return;
  }
  if (!force && t->loaded && gen == t->generation && t->error[0] == '\0')
    return;
  if (cr_truststore_list(t->store, &l, err, sizeof err) < 0) {
    keep_last_good(a, why, err);
    return;
  }
  t->error[0] = '\0';
  /* One bad file costs only what it would have added: it is left out and reported, the rest loads.
   * Refusing the whole new state instead would also hold back a removal or a new CRL, which must
   * take effect whatever else lies in the directory. */
  report_bad_files(a, &l, why);
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    route_rt_t *rt = &a->routes[i];
    cr_trust_crl_mode_t mode = crl_mode_of(rt->conf->revocation);
    if (!rt->conf->ca.path && !built[mode]) {
      built[mode] = 1;
      if (cr_truststore_x509_store_list(t->store, &l, (int)mode, &stores[mode], store_err[mode],
                                        sizeof store_err[mode]) < 0)
        stores[mode] = NULL;
    }
    load_route(a, rt, stores[mode], stores[mode] ? NULL : store_err[mode], mode, why);
  }
  for (int m = 0; m < 3; m++)
    X509_STORE_free(stores[m]);
  cr_trust_list_free(&l);
  if (t->loaded)
    cr_log_info("trust store reloaded", "dir=%s trigger=%s files_left_out=%zu", a->conf->trust_store, why, t->nbad);
  t->loaded = 1;
  t->generation = gen;
  a->metrics.reloads_ok++;
  a->metrics.reload_last_ok = time(NULL);
  cr__agent_trust_check_expiry(a);
}

static void warn_expiry(agent_t *a, const char *what, const char *name, time_t not_after) {
  uint64_t window_s = a->conf->expiry_warning_ms / 1000;
  time_t now = time(NULL);
  char when[32];
  if (not_after == 0 || window_s == 0)
    return;
  cr_x509_fmt_time(not_after, CR_X509_TIME_ISO, when, sizeof when);
  if (not_after <= now)
    cr_log_error("certificate expired", "what=%s name=\"%s\" not_after=%s", what, name, when);
  else if ((uint64_t)(not_after - now) <= window_s)
    cr_log_warn("certificate expires soon", "what=%s name=\"%s\" not_after=%s days_left=%ld", what, name, when,
                days_until(not_after));
}

void cr__agent_trust_check_expiry(agent_t *a) {
  cr_trust_list_t l;
  char err[300];
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    route_rt_t *rt = &a->routes[i];
    char subject[256];
    time_t na;
    if (rt->id_not_after)
      warn_expiry(a, "route_identity", rt->conf->name, rt->id_not_after);
    if (rt->up && cr_upstream_peer_cert(rt->up, subject, sizeof subject, &na) == 0)
      warn_expiry(a, "upstream_certificate", subject, na);
  }
  if (a->trust.store == NULL || cr_truststore_list(a->trust.store, &l, err, sizeof err) < 0)
    return;
  for (size_t i = 0; i < l.ncerts; i++)
    warn_expiry(a, l.certs[i].self_signed ? "trusted_root" : "trusted_intermediate", l.certs[i].subject,
                l.certs[i].not_after);
  for (size_t i = 0; i < l.ncrls; i++)
    if (l.crls[i].next_update)
      warn_expiry(a, "crl", l.crls[i].issuer, l.crls[i].next_update);
  cr_trust_list_free(&l);
}

void cr__agent_trust_bad_json(agent_t *a, cr_buf_t *out) {
  agent_trust_t *t = &a->trust;
  cr_buf_appendf(out, "\"bad_files\":[");
  for (size_t i = 0; i < t->nbad; i++) {
    cr_buf_appendf(out, "%s{\"file\":\"", i ? "," : "");
    cr_errpage_json_escape(out, t->bad[i].path);
    cr_buf_appendf(out, "\",\"why\":\"");
    cr_errpage_json_escape(out, t->bad[i].why);
    cr_buf_appendf(out, "\"}");
  }
  cr_buf_appendf(out, "],\"bad_files_reported\":%llu,\"reloads_kept_last_good\":%llu",
                 (unsigned long long)t->bad_reported, (unsigned long long)t->kept_last_good);
}

void cr__agent_trust_free(agent_t *a) {
  agent_trust_t *t = &a->trust;
  for (size_t i = 0; i < t->nbad; i++) {
    free(t->bad[i].path);
    free(t->bad[i].why);
  }
  free(t->bad);
  t->bad = NULL;
  t->nbad = 0;
  cr_truststore_close(t->store);
  t->store = NULL;
}

void cr__agent_trust_json(agent_t *a, cr_buf_t *out) {
  cr_trust_list_t l;
  char err[300], when[32];
  cr_buf_appendf(out, "\"certs\":[");
  if (a->trust.store && cr_truststore_list(a->trust.store, &l, err, sizeof err) == 0) {
    for (size_t i = 0; i < l.ncerts; i++) {
      const cr_trust_cert_t *c = &l.certs[i];
      cr_x509_fmt_time(c->not_after, CR_X509_TIME_ISO, when, sizeof when);
      cr_buf_appendf(out, "%s{\"fingerprint\":\"%s\",\"subject\":\"", i ? "," : "", c->fingerprint);
      cr_errpage_json_escape(out, c->subject);
      cr_buf_appendf(out, "\",\"issuer\":\"");
      cr_errpage_json_escape(out, c->issuer);
      cr_buf_appendf(out, "\",\"not_after\":\"%s\",\"days_left\":%ld,\"root\":%s,\"expired\":%s}", when,
                     c->days_left, c->self_signed ? "true" : "false", c->expired ? "true" : "false");
    }
    cr_buf_appendf(out, "],\"crls\":[");
    for (size_t i = 0; i < l.ncrls; i++) {
      const cr_trust_crl_t *c = &l.crls[i];
      cr_x509_fmt_time(c->next_update, CR_X509_TIME_ISO, when, sizeof when);
      cr_buf_appendf(out, "%s{\"fingerprint\":\"%s\",\"issuer\":\"", i ? "," : "", c->fingerprint);
      cr_errpage_json_escape(out, c->issuer);
      cr_buf_appendf(out, "\",\"next_update\":\"%s\",\"stale\":%s,\"revoked\":%zu}", c->next_update ? when : "",
                     c->stale ? "true" : "false", c->nrevoked);
    }
    cr_buf_appendf(out, "]");
    cr_trust_list_free(&l);
  } else {
    cr_buf_appendf(out, "],\"crls\":[]");
  }
}

/* ---- triggers ---- */

static void on_debounced(uv_timer_t *h) {
  agent_t *a = h->data;
  cr__agent_trust_reload(a, "file_change", 0);
}

static void on_store_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  agent_t *a = h->data;
  if (status < 0) {
    cr_log_warn("trust store watch failed; reload with SIGHUP", "dir=%s reason=\"%s\"", a->conf->trust_store,
                cr_strerror(status));
    uv_fs_event_stop(h);
    return;
  }
  uv_timer_start(&a->trust.debounce, on_debounced, RELOAD_DEBOUNCE_MS, 0);
}

/* Every route that lowers the strict defaults says so at start, once: it is a deliberate choice, and
 * whoever reads the log later should not have to find it in the config. */
static void warn_weakened(agent_t *a, const cr_conf_route_t *r) {
  char what[400] = "";
  size_t n = 0;
  int deflevel = cr_tls_policy_level(NULL);
  if (r->plain_http) {
    cr_log_warn("plain-HTTP upstream: calls on this route cross the network unencrypted and the upstream is not "
                "authenticated",
                "route=%s upstream=%s config=%s:%d:%d", r->name, r->upstream_url, a->conf->path, r->pos.line,
                r->pos.col);
    return;
  }
  if (r->tls.min_version && r->tls.min_version < 0x0303)
    n += (size_t)snprintf(what + n, sizeof what - n, " min_version=%s", cr_tls_version_name(r->tls.min_version));
  if (r->tls.max_version && r->tls.max_version < 0x0304 && n < sizeof what)
    n += (size_t)snprintf(what + n, sizeof what - n, " max_version=%s", cr_tls_version_name(r->tls.max_version));
  if (r->tls.security_level >= 0 && r->tls.security_level < deflevel && n < sizeof what)
    n += (size_t)snprintf(what + n, sizeof what - n, " security_level=%d(default %d)", r->tls.security_level,
                          deflevel);
  if (r->tls.ciphers && n < sizeof what)
    n += (size_t)snprintf(what + n, sizeof what - n, " ciphers=\"%s\"", r->tls.ciphers);
  if (r->tls.curves && n < sizeof what)
    n += (size_t)snprintf(what + n, sizeof what - n, " curves=\"%s\"", r->tls.curves);
  if (n == 0)
    return;
  if (r->tls.min_version && r->tls.min_version < 0x0303 && r->tls.security_level != 0)
    cr_log_warn("upstream TLS: min_version below TLSv1.2 has no effect above security_level 0 (OpenSSL 3 refuses "
                "TLS 1.0 and 1.1 there)",
                "route=%s config=%s:%d:%d", r->name, a->conf->path, r->tls.min_pos.line, r->tls.min_pos.col);
  cr_log_warn("upstream TLS weakened for an old server (deliberate, by upstream.tls)", "route=%s config=%s:%d:%d%s",
              r->name, a->conf->path, r->tls.pos.line, r->tls.pos.col, what);
}

static void on_expiry_timer(uv_timer_t *h) { cr__agent_trust_check_expiry(h->data); }

int cr__agent_trust_start(agent_t *a) {
  agent_trust_t *t = &a->trust;
  int r;
  a->routes = a->gen->routes = cr_calloc(a->conf->nroutes, sizeof *a->routes);
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    a->routes[i].conf = &a->conf->routes[i];
    a->routes[i].identity = &a->conf->routes[i].identity;
    warn_weakened(a, &a->conf->routes[i]);
  }
  cr__agent_metrics_conf(a);
  uv_timer_init(&a->loop, &t->debounce);
  uv_timer_init(&a->loop, &t->expiry);
  uv_fs_event_init(&a->loop, &t->watch);
  cr_queue_init(&t->changes);
  t->debounce.data = t->expiry.data = t->watch.data = a;
  cr__agent_trust_reload(a, "start", 1);
  if (t->store) {
    r = uv_fs_event_start(&t->watch, on_store_event, a->conf->trust_store, 0);
    if (r < 0)
      cr_log_warn("cannot watch the trust store; reload with SIGHUP after changes", "dir=%s reason=\"%s\"",
                  a->conf->trust_store, cr_strerror(r));
    t->watching = r == 0;
  }
  uv_timer_start(&t->expiry, on_expiry_timer, EXPIRY_CHECK_MS, EXPIRY_CHECK_MS);
  return 0;
}

void cr__agent_trust_stop(agent_t *a) {
  agent_trust_t *t = &a->trust;
  if (a->routes == NULL || uv_is_closing((uv_handle_t *)&t->debounce))
    return; /* never started, or already stopped */
  uv_close((uv_handle_t *)&t->debounce, NULL);
  uv_close((uv_handle_t *)&t->expiry, NULL);
  uv_close((uv_handle_t *)&t->watch, NULL);
  t->stopped = 1;
}

/* ---- reload: the whole configuration, on SIGHUP and POST /reload ----
 *
 * The new file is loaded and validated completely before anything changes; then it becomes a new
 * generation: new routes (each with a new upstream and TLS context, built by the trust reload that
 * follows), while the exchanges in flight keep the generation they began under, its routes and
 * upstreams, until they end. What the process set up once at start from the file (the dials' targets
 * and timers, the admin listener, the watched trust store) stays as it was, with a log line saying a
 * restart applies it. */

static void gen_free(cr__agent_gen_t *g) {
  free(g->routes);
  if (g->owned) {
    cr_conf_agent_free(g->owned);
    free(g->owned);
  }
  free(g);
}

static void gen_upstreams_free(cr__agent_gen_t *g) {
  for (size_t i = 0; g->routes && i < g->conf->nroutes; i++)
    if (g->routes[i].up) {
      cr_upstream_free(g->routes[i].up);
      g->routes[i].up = NULL;
    }
}

static void on_retired_timer(uv_timer_t *h) {
  agent_t *a = h->data;
  cr_queue_t *q, *n;
  cr_queue_foreach_safe(q, n, &a->retired) {
    cr__agent_gen_t *g = cr_queue_data(q, cr__agent_gen_t, link);
    if (g->refs > 0)
      continue;
    cr_queue_remove(&g->link);
    cr_log_debug("configuration generation freed", "generation=%llu", (unsigned long long)g->number);
    gen_upstreams_free(g);
    gen_free(g);
  }
}

void cr__agent_gen_release(agent_t *a, cr__agent_gen_t *g) {
  /* Freed from a later loop turn: the last exchange may end inside its upstream's callback. */
  if (--g->refs == 0 && g != a->gen && !a->handles_closed)
    uv_timer_start(&a->retired_timer, on_retired_timer, 0, 0);
}

void cr__agent_gens_close(agent_t *a) {
  cr_queue_t *q;
  cr_queue_foreach(q, &a->retired) gen_upstreams_free(cr_queue_data(q, cr__agent_gen_t, link));
}

void cr__agent_gens_free(agent_t *a) {
  while (!cr_queue_empty(&a->retired)) {
    cr__agent_gen_t *g = cr_queue_data(a->retired.next, cr__agent_gen_t, link);
    cr_queue_remove(&g->link);
    gen_free(g);
  }
  if (a->gen)
    gen_free(a->gen);
  a->gen = NULL;
  a->routes = NULL;
}

static int str_differs(const char *x, const char *y) { return (x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0); }

static int addrs_differ(const cr_conf_agent_t *o, const cr_conf_agent_t *n) {
  if (o->gateway.naddrs != n->gateway.naddrs)
    return 1;
  for (size_t i = 0; i < o->gateway.naddrs; i++)
    if (strcmp(o->gateway.addrs[i].host, n->gateway.addrs[i].host) != 0 ||
        o->gateway.addrs[i].port != n->gateway.addrs[i].port)
      return 1;
  return 0;
}

/* What a reload does not change in a running agent: logged, and the running value stays. */
static void report_restart_needed(agent_t *a, cr_conf_agent_t *n) {
  const cr_conf_agent_t *b = a->boot;
  const cr_conf_proxy_t *po = &b->gateway.proxy, *pn = &n->gateway.proxy;
#define RESTART(cond, key, p)                                                                                        \
  do {                                                                                                               \
    if (cond)                                                                                                        \
      cr_log_warn("configuration reload: " key " changed: restart to apply", "config=%s:%d:%d", n->path, (p).line,   \
                  (p).col);                                                                                          \
  } while (0)
  RESTART(addrs_differ(b, n) || str_differs(b->gateway.server_name, n->gateway.server_name), "gateway.address",
          n->gateway.pos);
  RESTART(str_differs(po->host, pn->host) || po->port != pn->port || str_differs(po->username, pn->username) ||
              str_differs(po->password, pn->password) || po->connect_timeout_ms != pn->connect_timeout_ms,
          "gateway.proxy", pn->pos.line ? pn->pos : n->gateway.pos);
  RESTART(b->gateway.connections != n->gateway.connections ||
              b->gateway.connect_timeout_ms != n->gateway.connect_timeout_ms ||
              b->gateway.dial_timeout_ms != n->gateway.dial_timeout_ms ||
              b->gateway.ping_interval_ms != n->gateway.ping_interval_ms ||
              b->gateway.ping_timeout_ms != n->gateway.ping_timeout_ms ||
              b->gateway.reconnect_min_ms != n->gateway.reconnect_min_ms ||
              b->gateway.reconnect_max_ms != n->gateway.reconnect_max_ms,
          "gateway connections or timers", n->gateway.pos);
  RESTART(str_differs(b->admin_listen.host, n->admin_listen.host) || b->admin_listen.port != n->admin_listen.port,
          "admin.listen", n->admin_listen.pos);
  RESTART(strcmp(a->conf->trust_store, n->trust_store) != 0, "trust_store", n->trust_store_pos);
#undef RESTART
  /* The store watched and opened is the running one's: the new generation names it too. */
  if (strcmp(a->conf->trust_store, n->trust_store) != 0) {
    free(n->trust_store);
    n->trust_store = cr_strdup(a->conf->trust_store);
  }
}

typedef struct reload_check {
  const char *path;
  int problems;
  char first[900];
} reload_check_t;

/* cr_agent_check's problems (`ccrelay check` fails on them): logged with their place, and the first
 * kept for the answer. A store file left out is not one: the store reload reports it, and a running
 * agent works without it. */
#define LEFT_OUT "(the agent leaves this file out)"
static void reload_problem(void *arg, cr_conf_pos_t pos, const char *key, const char *msg) {
  reload_check_t *rc = arg;
  size_t ml = strlen(msg), sl = strlen(LEFT_OUT);
  if (ml >= sl && strcmp(msg + ml - sl, LEFT_OUT) == 0)
    return;
  if (rc->problems++ == 0)
    snprintf(rc->first, sizeof rc->first, "%s:%d:%d: %s: %s", rc->path, pos.line, pos.col, key, msg);
  cr_log_error("configuration reload: problem", "config=%s:%d:%d key=%s reason=\"%s\"", rc->path, pos.line, pos.col,
               key, msg);
}

static int reload_refused(agent_t *a, const char *trigger, int rc, char *msg, size_t msglen, const char *fmt, ...)
    CR_PRINTF(6, 7);
static int reload_refused(agent_t *a, const char *trigger, int rc, char *msg, size_t msglen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msglen, fmt, ap);
  va_end(ap);
  a->reloads_failed++;
  a->metrics.reloads_failed++;
  cr_log_error("configuration reload failed; the configuration in force stays", "trigger=%s reason=\"%s\" failed=%llu",
               trigger, msg, (unsigned long long)a->reloads_failed);
  return rc;
}

int cr__agent_reload(agent_t *a, const char *trigger, char *msg, size_t msglen) {
  static const char *const level_names[] = {"debug", "info", "warn", "error"};
  cr_conf_agent_t *n;
  cr__agent_gen_t *g, *old = a->gen;
  cr_tls_ctx_t *tls = NULL;
  reload_check_t rc;
  char why[2048];
  int r;

  if (a->draining || a->trust.stopped)
    return reload_refused(a, trigger, CR_ECONFIG, msg, msglen, "draining");
  cr_log_info("configuration reload", "trigger=%s config=%s", trigger, a->conf->path);
  n = cr_calloc(1, sizeof *n);
  if ((r = cr_conf_agent_load(a->conf->path, n, why, sizeof why)) < 0) {
    free(n);
    return reload_refused(a, trigger, r, msg, msglen, "%s", why);
  }
  /* What `ccrelay check` checks, by the same code: each route's tls settings and identity, then its
   * chain to the store; and the tunnel's identity and CA, by building the context the next dial uses. */
  for (size_t i = 0; i < n->nroutes; i++) {
    cr_tls_identity_t id;
    const char *key;
    cr_conf_pos_t pos;
    int loading;
    if ((r = cr_agent_route_check(&n->routes[i], NULL, &id, &key, &pos, &loading, why, sizeof why)) < 0) {
      char path[600];
      snprintf(path, sizeof path, "%s", n->path);
      cr_conf_agent_free(n);
      free(n);
      return reload_refused(a, trigger, r, msg, msglen, "%s:%d:%d: routes[%zu].upstream.%s: %s", path, pos.line,
                            pos.col, i, key, why);
    }
    cr_tls_identity_free(&id);
  }
  memset(&rc, 0, sizeof rc);
  rc.path = n->path;
  if (cr_agent_check(n, reload_problem, &rc) > 0 && rc.problems > 0) {
    snprintf(why, sizeof why, "%s", rc.first);
    cr_conf_agent_free(n);
    free(n);
    return reload_refused(a, trigger, CR_ECONFIG, msg, msglen, "%s", why);
  }
  if ((r = cr__agent_tunnel_tls_new(n, &tls, why, sizeof why)) < 0) {
    cr_conf_pos_t p = n->gateway.identity.pkcs12.path ? n->gateway.identity.pkcs12.pos : n->gateway.identity.cert.pos;
    char path[600];
    snprintf(path, sizeof path, "%s", n->path);
    cr_conf_agent_free(n);
    free(n);
    return reload_refused(a, trigger, r, msg, msglen, "%s:%d:%d: gateway: %s", path, p.line, p.col, why);
  }
  report_restart_needed(a, n);

  g = cr_calloc(1, sizeof *g);
  g->conf = g->owned = n;
  g->number = old->number + 1;
  g->routes = cr_calloc(n->nroutes, sizeof *g->routes);
  for (size_t i = 0; i < n->nroutes; i++) {
    g->routes[i].conf = &n->routes[i];
    g->routes[i].identity = &n->routes[i].identity;
    for (size_t j = 0; j < a->conf->nroutes; j++)
      if (strcmp(a->routes[j].conf->name, n->routes[i].name) == 0 && a->routes[j].id_subject[0]) {
        memcpy(g->routes[i].id_subject, a->routes[j].id_subject, sizeof g->routes[i].id_subject);
        g->routes[i].id_not_after = a->routes[j].id_not_after;
      }
    warn_weakened(a, &n->routes[i]);
  }
  a->gen = g;
  a->conf = n;
  a->routes = g->routes;
  cr__agent_metrics_conf(a); /* counter blocks follow routes by name */
  /* Tunnels up keep the context they were made with; the next dial presents the new identity. */
  cr_tls_ctx_free(a->tunnel_tls);
  a->tunnel_tls = tls;
  cr_log_setup(n->log.level, n->log.format);
  cr_process_set_drain_timeout(a->proc, n->drain_timeout_ms);
  cr_queue_insert_tail(&a->retired, &old->link);
  if (old->refs == 0)
    uv_timer_start(&a->retired_timer, on_retired_timer, 0, 0);
  /* Every route of the new generation gets its upstream and TLS context from the store. */
  cr__agent_trust_reload(a, trigger, 1);
  a->reloads_ok++;
  a->last_reload_ok = (uint64_t)time(NULL);
  snprintf(msg, msglen, "reloaded");
  cr_log_info("configuration reloaded", "trigger=%s config=%s generation=%llu routes=%zu log_level=%s", trigger,
              n->path, (unsigned long long)g->number, n->nroutes, level_names[n->log.level]);
  return 0;
}

void cr__agent_trust_sighup(void *arg) {
  agent_t *a = arg;
  char msg[2048];
  if (cr__agent_reload(a, "SIGHUP", msg, sizeof msg) < 0) {
    cr_log_info("SIGHUP: reloading the trust store", "dir=%s", a->conf->trust_store);
    cr__agent_trust_reload(a, "SIGHUP", 1);
  }
  if (!a->trust.watching && a->trust.store) {
    int r = uv_fs_event_start(&a->trust.watch, on_store_event, a->conf->trust_store, 0);
    a->trust.watching = r == 0;
  }
}

/* ---- `ccrelay check` ---- */

int cr_agent_check(const cr_conf_agent_t *conf, cr_agent_check_cb report, void *arg) {
  cr_truststore_t *ts = NULL;
  cr_trust_list_t l;
  X509_STORE *stores[3] = {NULL, NULL, NULL};
  int built[3] = {0, 0, 0}, have_list = 0, need_store = conf->remote_trust, nbad = 0, r;
  char err[700], store_error[700] = "", store_err[3][600] = {"", "", ""}, key[96], subject[256];

  memset(&l, 0, sizeof l);
  for (size_t i = 0; i < conf->nroutes; i++)
    need_store |= conf->routes[i].ca.path == NULL;
  /* What the agent does at start, in the same order and with the same messages: the store opened
   * with its safety checks and read, then each route's identity validated. */
  r = cr_truststore_open(conf->trust_store, 0, &ts, store_error, sizeof store_error);
  if (r == 0 && (r = cr_truststore_list(ts, &l, store_error, sizeof store_error)) == 0)
    have_list = 1;
  if (r < 0 && (need_store || r != UV_ENOENT)) {
    report(arg, conf->trust_store_pos, "trust_store", store_error);
    nbad++;
  }
  for (size_t i = 0; i < l.nproblems; i++) {
    snprintf(err, sizeof err, "%s %s (the agent leaves this file out)", l.problems[i].path, l.problems[i].why);
    report(arg, conf->trust_store_pos, "trust_store", err);
    nbad++;
  }
  for (size_t i = 0; i < conf->nroutes; i++) {
    const cr_conf_route_t *rc = &conf->routes[i];
    cr_trust_crl_mode_t mode = crl_mode_of(rc->revocation);
    cr_tls_identity_t id;
    if (!rc->ca.path && have_list && !built[mode]) {
      built[mode] = 1;
      if (cr_truststore_x509_store_list(ts, &l, (int)mode, &stores[mode], store_err[mode], sizeof store_err[mode]) < 0)
        stores[mode] = NULL;
    }
    int stage;
    if (cr__agent_route_identity(conf, rc, NULL, stores[mode], have_list ? store_err[mode] : store_error, &id, subject,
                                 sizeof subject, NULL, 0, &stage, err, sizeof err) < 0) {
      /* tls settings and identity loading (stages 0, 1) are reported by `check`'s own route check,
       * with their keys' positions: here only what the store and the clock decide. */
      if (stage < 2)
        continue;
      snprintf(key, sizeof key, "routes[%zu].upstream.identity", i);
      report(arg, rc->identity.pkcs12.path ? rc->identity.pkcs12.pos : rc->identity.cert.pos, key, err);
      nbad++;
      continue;
    }
    cr_tls_identity_free(&id);
  }
  for (int m = 0; m < 3; m++)
    X509_STORE_free(stores[m]);
  cr_trust_list_free(&l);
  cr_truststore_close(ts);
  return nbad;
}

/* The agent's use of the trusted-root store: each route's client identity must chain to a trusted
 * root (intermediates from its PKCS#12 or the store) before the route is used, the full chain is
 * what the route presents, and upstream certificates are verified against the store unless the route
 * names its own CA file. Reloaded on SIGHUP, on a change in the directory, and after a remote change:
 * new connections use the new store, streams in flight are untouched, and no pooled connection or TLS
 * session made under the old store is reused (each reload gives every upstream a new TLS context). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "agent_internal.h"
#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "ccrelay/errpage.h"
#include "ccrelay/log.h"
#include "ccrelay/x509.h"

#define RELOAD_DEBOUNCE_MS 100
#define EXPIRY_CHECK_MS (12ULL * 3600 * 1000)

static cr_trust_crl_mode_t crl_mode_of(cr_conf_revocation_t r) {
  return r == CR_REVOCATION_HARD ? CR_TRUST_CRL_HARD : r == CR_REVOCATION_SOFT ? CR_TRUST_CRL_SOFT : CR_TRUST_CRL_OFF;
}

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

/* Makes one route usable under store (the X509_STORE for its revocation mode), or refuses it. */
static void load_route(agent_t *a, route_rt_t *rt, X509_STORE *store, cr_trust_crl_mode_t mode, const char *event) {
  const cr_conf_route_t *r = rt->conf;
  cr_tls_identity_src_t src = {r->identity.pkcs12.path, r->identity.password, r->identity.cert.path,
                               r->identity.key.path};
  cr_tls_identity_t id;
  STACK_OF(X509) *verified = NULL;
  cr_tls_ctx_opts_t o;
  cr_tls_ctx_t *tls = NULL;
  char err[600], warn[400] = "", subject[256];
  int xerr = 0;

  if (cr_tls_identity_load(&src, &id, err, sizeof err) < 0) {
    route_refuse(a, rt, event, "client identity cannot be loaded: %s", err);
    return;
  }
  cr_x509_subject(id.cert, subject, sizeof subject);
  snprintf(rt->id_subject, sizeof rt->id_subject, "%s", subject);
  rt->id_not_after = cr_x509_not_after(id.cert);
  if (cr_trust_verify_store(store, id.cert, id.chain, CR_TRUST_PURPOSE_CLIENT, &verified, &xerr, warn, sizeof warn,
                            err, sizeof err) < 0) {
    route_refuse(a, rt, event,
                 "client identity %s does not chain to a trusted root of %s: %s; add the root of its chain with "
                 "`ccrelay trust add`",
                 subject, a->conf->trust_store, err);
    cr_tls_identity_free(&id);
    return;
  }
  if (warn[0])
    cr_log_warn("soft revocation: client identity allowed without a usable CRL", "route=%s reason=\"%s\"", r->name,
                warn);
  /* The route presents the chain without a self-signed root: the peer has that, or the chain is
   * useless to it anyway. */
  cr_x509_chain_free(id.chain);
  id.chain = cr_x509_chain_after_leaf(verified);
  cr_x509_chain_free(verified);

  memset(&o, 0, sizeof o);
  o.identity_loaded = &id;
  o.alpn = "http/1.1";
  if (r->ca.path) {
    o.ca_file = r->ca.path;
  } else {
    o.verify_store = store;
    o.crl_soft = mode == CR_TRUST_CRL_SOFT;
  }
  /* New upstream connections resume the last session (no certificate exchange, no signature, no
   * chain check). A reload builds a new context, so a changed store or CRL never meets an old
   * session; only hard revocation also wants a CRL that went stale while running to stop new
   * connections, so it keeps full handshakes. */
  o.resume_sessions = r->ca.path || mode != CR_TRUST_CRL_HARD;
  if (cr_tls_ctx_new(&o, &tls, err, sizeof err) < 0) {
    route_refuse(a, rt, event, "TLS context cannot be built: %s", err);
    cr_tls_identity_free(&id);
    return;
  }
  cr_tls_identity_free(&id);

  if (rt->up == NULL) {
    cr_upstream_opts_t uo;
    memset(&uo, 0, sizeof uo);
    uo.name = r->name;
    uo.host = r->upstream_host;
    uo.port = r->upstream_port;
    uo.server_name = r->server_name ? r->server_name : r->upstream_host;
    uo.tls = tls;
    uo.connect_timeout_ms = r->connect_timeout_ms;
    uo.response_timeout_ms = r->response_timeout_ms;
    uo.idle_timeout_ms = r->idle_timeout_ms;
    uo.max_idle = r->max_idle;
    uo.max_header_size = a->conf->max_header_size;
    uo.max_header_fields = a->conf->max_header_fields;
    if (cr_upstream_new(&a->loop, &uo, &rt->up, err, sizeof err) < 0) {
      route_refuse(a, rt, event, "%s", err);
      cr_tls_ctx_free(tls);
      return;
    }
  } else {
    cr_upstream_set_tls(rt->up, tls);
  }
  cr_tls_ctx_free(tls);
  if (!rt->usable)
    cr_log_info("route ready", "route=%s identity=\"%s\" upstream=%s verify=%s revocation=%s trigger=%s", r->name,
                subject, r->upstream_url, r->ca.path ? "ca_file" : "trust_store", mode_name(mode), event);
  rt->usable = 1;
  rt->why[0] = '\0';
}

void cr__agent_trust_reload(agent_t *a, const char *why, int force) {
  agent_trust_t *t = &a->trust;
  X509_STORE *stores[3] = {NULL, NULL, NULL};
  char err[600];
  uint64_t gen = 0;

  if (t->store == NULL) {
    if (cr_truststore_open(a->conf->trust_store, 0, &t->store, err, sizeof err) < 0) {
      snprintf(t->error, sizeof t->error, "trust store %.300s: %.600s", a->conf->trust_store, err);
      for (size_t i = 0; i < a->conf->nroutes; i++)
        route_refuse(a, &a->routes[i], why, "%s", t->error);
      return;
    }
  }
  if (cr_truststore_generation(t->store, &gen, err, sizeof err) < 0) {
    snprintf(t->error, sizeof t->error, "trust store %.300s: %.600s", a->conf->trust_store, err);
    for (size_t i = 0; i < a->conf->nroutes; i++)
      route_refuse(a, &a->routes[i], why, "%s", t->error);
    return;
  }
  if (!force && t->loaded && gen == t->generation)
    return;
  t->error[0] = '\0';
  for (size_t i = 0; i < a->conf->nroutes; i++) {
    route_rt_t *rt = &a->routes[i];
    cr_trust_crl_mode_t mode = crl_mode_of(rt->conf->revocation);
    if (stores[mode] == NULL &&
        cr_truststore_x509_store(t->store, (int)mode, &stores[mode], err, sizeof err) < 0) {
      snprintf(t->error, sizeof t->error, "trust store %.300s: %.600s", a->conf->trust_store, err);
      route_refuse(a, rt, why, "%s", t->error);
      continue;
    }
    load_route(a, rt, stores[mode], mode, why);
  }
  for (int m = 0; m < 3; m++)
    X509_STORE_free(stores[m]);
  if (t->loaded)
    cr_log_info("trust store reloaded", "dir=%s trigger=%s", a->conf->trust_store, why);
  t->loaded = 1;
  t->generation = gen;
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

void cr__agent_trust_sighup(void *arg) {
  agent_t *a = arg;
  cr_log_info("SIGHUP: reloading the trust store", "dir=%s", a->conf->trust_store);
  cr__agent_trust_reload(a, "SIGHUP", 1);
  if (!a->trust.watching && a->trust.store) {
    int r = uv_fs_event_start(&a->trust.watch, on_store_event, a->conf->trust_store, 0);
    a->trust.watching = r == 0;
  }
}

static void on_expiry_timer(uv_timer_t *h) { cr__agent_trust_check_expiry(h->data); }

int cr__agent_trust_start(agent_t *a) {
  agent_trust_t *t = &a->trust;
  int r;
  a->routes = cr_calloc(a->conf->nroutes, sizeof *a->routes);
  for (size_t i = 0; i < a->conf->nroutes; i++)
    a->routes[i].conf = &a->conf->routes[i];
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

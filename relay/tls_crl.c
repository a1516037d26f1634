/* SPDX-License-Identifier: Apache-2.0 */
/* Revocation of client certificates on a server context: the CRLs of crl_file and ca_file, checked
 * against the CAs of ca_file and put into the context's verify store, and the watch that reloads them
 * when the files change or on SIGHUP. A reload swaps the SSL_CTX's store between two loop turns:
 * verification runs inside one SSL_do_handshake call, so no handshake sees half of a change, and
 * connections already made keep what they verified. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/err.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/tls.h"
#include "ccrelay/x509.h"
#include "tls_internal.h"

/* Large CAs publish CRLs of tens of MiB; anything larger is not what the user meant to point at. */
#define MAX_CRL_FILE (64 * 1024 * 1024)
#define DEBOUNCE_MS 100

static const char *mode_name(int m) {
  return m == CR_TRUST_CRL_HARD ? "hard" : m == CR_TRUST_CRL_SOFT ? "soft" : "off";
}

static void crls_free(STACK_OF(X509_CRL) *crls) {
  if (crls)
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
}

/* Reads one file and decodes it. The sets are empty, never NULL, on success. */
static int read_set(const char *path, const char *what, cr_x509_set_t *set, unsigned char digest[32], char *err,
                    size_t errlen) {
  unsigned char *data;
  size_t len;
  int r = cr_x509_read_file(path, what, MAX_CRL_FILE, &data, &len, err, errlen);
  if (r < 0)
    return r;
  cr_x509_sha256(data, len, digest);
  r = cr_x509_decode(data, len, NULL, path, set, err, errlen);
  free(data);
  if (r == CR_EP12_PASSWORD || r == CR_EP12_CORRUPT || r == CR_EP12_UNSUPPORTED || (r == 0 && set->format == CR_X509_PKCS12)) {
    if (r == 0)
      cr_x509_set_free(set);
    snprintf(err, errlen, "%s is PKCS#12, which holds no CRL; give the CRLs in PEM or DER form", path);
    return CR_ETLS;
  }
  return r;
}

static void note_foreign(cr_tls_crl_info_t *info, const X509_NAME *issuer) {
  char name[160];
  size_t n = strlen(info->foreign);
  cr_x509_name_oneline(issuer, name, sizeof name);
  if (strstr(info->foreign, name) == NULL && n + 3 < sizeof info->foreign)
    snprintf(info->foreign + n, sizeof info->foreign - n, "%s%s", n ? "; " : "", name);
}

/* Every CRL whose issuer is a CA of ca_file must carry that CA's signature: a CRL that does not is
 * damaged or forged, and OpenSSL would only say "CRL signature failure" at each handshake. */
static int check_crl(const cr__tls_crls_t *c, X509_CRL *crl, const char *src, int index, cr_tls_crl_info_t *info,
                     char *err, size_t errlen) {
  const ASN1_TIME *next = X509_CRL_get0_nextUpdate(crl), *last = X509_CRL_get0_lastUpdate(crl);
  int named = 0;
  for (int i = 0; i < sk_X509_num(c->ca_certs); i++) {
    X509 *ca = sk_X509_value(c->ca_certs, i);
    EVP_PKEY *k;
    if (X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) != 0)
      continue;
    named = 1;
    if ((k = X509_get0_pubkey(ca)) != NULL && X509_CRL_verify(crl, k) == 1) {
      named = 2;
      break;
    }
  }
  ERR_clear_error();
  if (named == 1) {
    char issuer[200];
    cr_x509_name_oneline(X509_CRL_get_issuer(crl), issuer, sizeof issuer);
    snprintf(err, errlen,
             "CRL %d in %s (issuer %s): its signature does not verify with the key of that CA in %s; get the "
             "CRL from the CA again",
             index, src, issuer, c->ca_file);
    return CR_ETLS;
  }
  if (named == 0)
    note_foreign(info, X509_CRL_get_issuer(crl));
  info->ncrls++;
  info->nrevoked += sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl));
  if ((next && X509_cmp_current_time(next) <= 0) || (last && X509_cmp_current_time(last) > 0))
    info->nstale++;
  if (next) {
    time_t t = cr_x509_time(next);
    if (t && (info->next_update == 0 || t < info->next_update))
      info->next_update = t;
  }
  return 0;
}

/* Reads the CRLs of ca_file and crl_file (never the certificates: ca_file's CAs stay the ones read at
 * creation), checks them, and says whether their bytes changed. On error *out is NULL. */
static int read_crls(const cr__tls_crls_t *c, STACK_OF(X509_CRL) **out, unsigned char digest[32],
                     cr_tls_crl_info_t *info, char *err, size_t errlen) {
  cr_x509_set_t ca, cf;
  unsigned char both[64];
  int r, i;
  *out = NULL;
  memset(info, 0, sizeof *info);
  memset(both, 0, sizeof both);
  r = read_set(c->ca_file, "CA file", &ca, both, err, errlen);
  if (r < 0)
    return r;
  if (c->crl_file) {
    r = read_set(c->crl_file, "CRL file", &cf, both + 32, err, errlen);
    if (r == CR_ENO_CERT)
      snprintf(err, errlen, "no CRL found in %s (expected PEM or DER CRLs)", c->crl_file);
    if (r < 0) {
      cr_x509_set_free(&ca);
      return r;
    }
    if (sk_X509_num(cf.certs) > 0 || sk_X509_CRL_num(cf.crls) == 0) {
      if (sk_X509_num(cf.certs) > 0)
        snprintf(err, errlen, "%s holds certificates; it must hold CRLs only (CA certificates go in %s)",
                 c->crl_file, c->ca_file);
      else
        snprintf(err, errlen, "no CRL found in %s (expected PEM or DER CRLs)", c->crl_file);
      cr_x509_set_free(&ca);
      cr_x509_set_free(&cf);
      return CR_ENO_CERT;
    }
  }
  cr_x509_sha256(both, sizeof both, digest);
  *out = sk_X509_CRL_new_null();
  for (i = 0; r == 0 && i < sk_X509_CRL_num(ca.crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value(ca.crls, i);
    if ((r = check_crl(c, crl, c->ca_file, i + 1, info, err, errlen)) == 0 && X509_CRL_up_ref(crl))
      sk_X509_CRL_push(*out, crl);
  }
  for (i = 0; r == 0 && c->crl_file && i < sk_X509_CRL_num(cf.crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value(cf.crls, i);
    if ((r = check_crl(c, crl, c->crl_file, i + 1, info, err, errlen)) == 0 && X509_CRL_up_ref(crl))
      sk_X509_CRL_push(*out, crl);
  }
  cr_x509_set_free(&ca);
  if (c->crl_file)
    cr_x509_set_free(&cf);
  if (r == 0 && sk_X509_CRL_num(*out) == 0) {
    snprintf(err, errlen, "revocation is %s but neither %s%s%s holds a CRL; give the CRLs of the client CAs",
             mode_name(c->mode), c->ca_file, c->crl_file ? " nor " : "", c->crl_file ? c->crl_file : "");
    r = CR_ENO_CERT;
  }
  if (r < 0) {
    crls_free(*out);
    *out = NULL;
    memset(info, 0, sizeof *info);
  }
  return r;
}

/* A fresh store (CAs + CRLs + flags) for sc; the old one goes with its last user, the SSL_CTX. */
static void install(cr__tls_crls_t *c, SSL_CTX *sc, STACK_OF(X509_CRL) *crls) {
  X509_STORE *st = X509_STORE_new();
  for (int i = 0; i < sk_X509_num(c->ca_certs); i++)
    X509_STORE_add_cert(st, sk_X509_value(c->ca_certs, i));
  for (int i = 0; i < sk_X509_CRL_num(crls); i++)
    X509_STORE_add_crl(st, sk_X509_CRL_value(crls, i));
  /* CHECK_ALL: an intermediate the client presents is checked against its issuer's CRL too, not only
   * the leaf. A self-signed root is checked against its own CRL, so a flat PKI needs one CRL. */
  X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  ERR_clear_error();
  SSL_CTX_set_cert_store(sc, st); /* frees the previous store */
  crls_free(c->crls);
  c->crls = crls;
}

int cr__tls_crls_init(cr__tls_crls_t *c, SSL_CTX *sc, const char *ca_file, const char *crl_file, int mode,
                      char *err, size_t errlen) {
  STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(SSL_CTX_get_cert_store(sc));
  STACK_OF(X509_CRL) *crls;
  int r, had_crl = 0;
  memset(c, 0, sizeof *c);
  if (mode == CR_TRUST_CRL_OFF)
    return 0;
  c->ca_certs = sk_X509_new_null();
  for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
    X509_OBJECT *o = sk_X509_OBJECT_value(objs, i);
    X509 *x = X509_OBJECT_get0_X509(o);
    if (X509_OBJECT_get_type(o) == X509_LU_CRL)
      had_crl = 1;
    else if (x && X509_up_ref(x))
      sk_X509_push(c->ca_certs, x);
  }
  if (mode == CR_TLS_CRL_AUTO && crl_file == NULL && !had_crl) {
    cr__tls_crls_free(c);
    return 0; /* nothing to check against: as before there were CRLs */
  }
  c->mode = mode == CR_TLS_CRL_AUTO ? CR_TRUST_CRL_HARD : mode;
  c->ca_file = cr_strdup(ca_file);
  c->crl_file = crl_file ? cr_strdup(crl_file) : NULL;
  r = read_crls(c, &crls, c->digest, &c->info, err, errlen);
  if (r < 0) {
    cr__tls_crls_free(c);
    return r;
  }
  c->info.mode = c->mode;
  install(c, sc, crls);
  return 0;
}

int cr__tls_crls_reload(cr__tls_crls_t *c, SSL_CTX *sc, int force, int *changed, char *err, size_t errlen) {
  STACK_OF(X509_CRL) *crls;
  unsigned char digest[32];
  cr_tls_crl_info_t info;
  int r;
  *changed = 0;
  if (c->mode == CR_TRUST_CRL_OFF) {
    snprintf(err, errlen, "this listener checks no CRL");
    return UV_EINVAL;
  }
  r = read_crls(c, &crls, digest, &info, err, errlen);
  if (r < 0)
    return r;
  if (!force && memcmp(digest, c->digest, sizeof digest) == 0) {
    crls_free(crls);
    return 0;
  }
  memcpy(c->digest, digest, sizeof digest);
  info.mode = c->mode;
  c->info = info;
  install(c, sc, crls);
  *changed = 1;
  return 0;
}

void cr__tls_crls_free(cr__tls_crls_t *c) {
  if (c->ca_certs)
    sk_X509_pop_free(c->ca_certs, X509_free);
  crls_free(c->crls);
  free(c->ca_file);
  free(c->crl_file);
  memset(c, 0, sizeof *c);
}

int cr_tls_crl_check(const char *ca_file, const char *crl_file, int mode, cr_tls_crl_info_t *info, char *err,
                     size_t errlen) {
  cr__tls_crls_t c;
  char detail[256];
  SSL_CTX *sc;
  int r = cr_tls_global_init(err, errlen);
  memset(info, 0, sizeof *info);
  if (r < 0)
    return r;
  ERR_clear_error();
  if ((sc = SSL_CTX_new(TLS_server_method())) == NULL || !SSL_CTX_load_verify_locations(sc, ca_file, NULL)) {
    cr_x509_drain_errors(detail, sizeof detail, NULL);
    snprintf(err, errlen, "cannot load CA certificates from %s (%s)", ca_file, detail);
    SSL_CTX_free(sc);
    return CR_ETLS;
  }
  r = mode == CR_TRUST_CRL_OFF ? 0 : cr__tls_crls_init(&c, sc, ca_file, crl_file, mode, err, errlen);
  if (r == 0 && mode != CR_TRUST_CRL_OFF) {
    *info = c.info;
    cr__tls_crls_free(&c);
  }
  SSL_CTX_free(sc);
  return r;
}

void cr_tls_ctx_crl_info(const cr_tls_ctx_t *ctx, cr_tls_crl_info_t *info) {
  *info = cr__tls_ctx_crls((cr_tls_ctx_t *)ctx)->info;
}

int cr_tls_ctx_reload_crls(cr_tls_ctx_t *ctx, int force, int *changed, char *err, size_t errlen) {
  return cr__tls_crls_reload(cr__tls_ctx_crls(ctx), cr_tls_ctx_native(ctx), force, changed, err, errlen);
}

static void serial_hex(X509 *cert, char *out, size_t outlen) {
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  snprintf(out, outlen, "%s", hex ? hex : "?");
  OPENSSL_free(hex);
  BN_free(bn);
  ERR_clear_error();
}

void cr__tls_revoked_detail(X509 *cert, char *out, size_t outlen) {
  char subject[160], serial[80];
  cr_x509_subject(cert, subject, sizeof subject);
  serial_hex(cert, serial, sizeof serial);
  snprintf(out, outlen, "subject %s, serial %s", subject[0] ? subject : "unknown", serial);
}

int cr_tls_ctx_cert_revoked(cr_tls_ctx_t *ctx, X509 *cert, char *why, size_t whylen) {
  cr__tls_crls_t *c = cr__tls_ctx_crls(ctx);
  X509_CRL *newest = NULL;
  X509_REVOKED *rev;
  char detail[260];
  if (c->mode == CR_TRUST_CRL_OFF || cert == NULL)
    return 0;
  /* The newest CRL of the issuer speaks for it: an older one may list a certificate since released. */
  for (int i = 0; i < sk_X509_CRL_num(c->crls); i++) {
    X509_CRL *crl = sk_X509_CRL_value(c->crls, i);
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0)
      continue;
    if (newest == NULL ||
        ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl), X509_CRL_get0_lastUpdate(newest)) > 0)
      newest = crl;
  }
  if (newest == NULL || X509_CRL_get0_by_cert(newest, &rev, cert) != 1) {
    ERR_clear_error();
    return 0;
  }
  cr__tls_revoked_detail(cert, detail, sizeof detail);
  snprintf(why, whylen, "certificate revoked (%s)", detail);
  return 1;
}

/* ---- watch ---- */

typedef struct file_sig {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
  int missing;
} file_sig_t;

struct cr_tls_crl_watch {
  cr_tls_ctx_t *ctx;
  char *what;
  const char *paths[2]; /* ca_file, crl_file (NULL when none); owned by the context */
  file_sig_t sig[2];
  uv_fs_event_t ev[2];  /* on the directories of paths; ev[1] unused when they share one */
  int nev;
  uv_timer_t debounce, poll;
  cr_tls_crl_reload_cb on_reload;
  void *arg;
  int open_handles;
};

static void sig_of(const char *path, file_sig_t *s) {
  struct stat st;
  memset(s, 0, sizeof *s);
  if (path == NULL)
    return;
  if (stat(path, &st) != 0) {
    s->missing = 1;
    return;
  }
  s->dev = st.st_dev;
  s->ino = st.st_ino;
  s->size = st.st_size;
  s->mtim = st.st_mtim;
  s->ctim = st.st_ctim;
}

static int sig_equal(const file_sig_t *a, const file_sig_t *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->missing == b->missing &&
         a->mtim.tv_sec == b->mtim.tv_sec && a->mtim.tv_nsec == b->mtim.tv_nsec && a->ctim.tv_sec == b->ctim.tv_sec &&
         a->ctim.tv_nsec == b->ctim.tv_nsec;
}

static void log_state(cr_tls_crl_watch_t *w, const char *msg, const char *trigger) {
  cr_tls_crl_info_t in;
  char when[CR_X509_TIME_MAX];
  cr_tls_ctx_crl_info(w->ctx, &in);
  cr_x509_fmt_time(in.next_update, CR_X509_TIME_ISO, when, sizeof when);
  cr_log_info(msg, "listener=%s trigger=%s revocation=%s crls=%d revoked=%ld next_update=%s crl_file=%s ca_file=%s",
              w->what, trigger, mode_name(in.mode), in.ncrls, in.nrevoked, when, w->paths[1] ? w->paths[1] : "-",
              w->paths[0]);
  if (in.nstale > 0)
    cr_log_warn("CRL out of date", "listener=%s stale=%d revocation=%s effect=\"%s\"", w->what, in.nstale,
                mode_name(in.mode),
                in.mode == CR_TRUST_CRL_HARD ? "certificates of its issuer are refused until a current CRL is installed"
                                             : "certificates of its issuer are admitted with a warning");
  if (in.foreign[0])
    cr_log_warn("CRL from an issuer that is not in the CA file", "listener=%s issuers=\"%s\" ca_file=%s", w->what,
                in.foreign, w->paths[0]);
}

static void check(cr_tls_crl_watch_t *w, const char *trigger, int force) {
  file_sig_t now[2];
  char err[600];
  int changed = 0, r;
  sig_of(w->paths[0], &now[0]);
  sig_of(w->paths[1], &now[1]);
  if (!force && sig_equal(&now[0], &w->sig[0]) && sig_equal(&now[1], &w->sig[1]))
    return;
  /* Remembered before the outcome is known: a file left broken is reported once, not every poll. */
  w->sig[0] = now[0];
  w->sig[1] = now[1];
  r = cr_tls_ctx_reload_crls(w->ctx, force, &changed, err, sizeof err);
  if (r < 0) {
    cr_log_error("CRL reload failed; the CRLs in force stay", "listener=%s trigger=%s reason=\"%s\"", w->what,
                 trigger, err);
    return;
  }
  if (!changed)
    return;
  log_state(w, "CRLs reloaded", trigger);
  if (w->on_reload)
    w->on_reload(w->arg);
}

static void on_debounced(uv_timer_t *t) { check(t->data, "file_change", 0); }
static void on_poll(uv_timer_t *t) { check(t->data, "stat_check", 0); }

static void on_dir_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  cr_tls_crl_watch_t *w = h->data;
  (void)filename;
  (void)events;
  if (status < 0) {
    cr_log_warn("CRL directory watch failed; changes are found by the periodic check", "listener=%s reason=\"%s\"",
                w->what, cr_strerror(status));
    uv_fs_event_stop(h);
    return;
  }
  /* Any name: a rename-replace, or a symlink swap as Kubernetes does, shows under another name. */
  uv_timer_start(&w->debounce, on_debounced, DEBOUNCE_MS, 0);
}

static void dir_of(const char *path, char *out, size_t outlen) {
  const char *slash = strrchr(path, '/');
  if (slash == NULL)
    snprintf(out, outlen, ".");
  else if (slash == path)
    snprintf(out, outlen, "/");
  else
    snprintf(out, outlen, "%.*s", (int)(slash - path), path);
}

int cr_tls_crl_watch_start(uv_loop_t *loop, cr_tls_ctx_t *ctx, const char *what, uint64_t interval_ms,
                           cr_tls_crl_reload_cb on_reload, void *arg, cr_tls_crl_watch_t **out) {
  cr__tls_crls_t *c = cr__tls_ctx_crls(ctx);
  cr_tls_crl_watch_t *w;
  char dirs[2][1024];
  *out = NULL;
  if (c->mode == CR_TRUST_CRL_OFF)
    return UV_EINVAL;
  w = cr_calloc(1, sizeof *w);
  w->ctx = cr_tls_ctx_ref(ctx);
  w->what = cr_strdup(what);
  w->paths[0] = c->ca_file;
  w->paths[1] = c->crl_file;
  w->on_reload = on_reload;
  w->arg = arg;
  sig_of(w->paths[0], &w->sig[0]);
  sig_of(w->paths[1], &w->sig[1]);
  uv_timer_init(loop, &w->debounce);
  uv_timer_init(loop, &w->poll);
  w->debounce.data = w->poll.data = w;
  w->open_handles = 2;
  dir_of(w->paths[0], dirs[0], sizeof dirs[0]);
  if (w->paths[1])
    dir_of(w->paths[1], dirs[1], sizeof dirs[1]);
  for (int i = 0; i < (w->paths[1] ? 2 : 1); i++) {
    int r;
    if (i == 1 && strcmp(dirs[0], dirs[1]) == 0)
      break;
    uv_fs_event_init(loop, &w->ev[w->nev]);
    w->ev[w->nev].data = w;
    w->open_handles++;
    r = uv_fs_event_start(&w->ev[w->nev], on_dir_event, dirs[i], 0);
    if (r < 0)
      cr_log_warn("cannot watch a CRL directory; changes are found by the periodic check", "listener=%s dir=%s reason=\"%s\"",
                  what, dirs[i], cr_strerror(r));
    w->nev++;
  }
  if (interval_ms > 0)
    uv_timer_start(&w->poll, on_poll, interval_ms, interval_ms);
  log_state(w, "CRLs loaded", "start");
  *out = w;
  return 0;
}

void cr_tls_crl_watch_reload(cr_tls_crl_watch_t *w, const char *trigger) {
  if (w)
    check(w, trigger, 1);
}

static void on_closed(uv_handle_t *h) {
  cr_tls_crl_watch_t *w = h->data;
  if (--w->open_handles > 0)
    return;
  cr_tls_ctx_free(w->ctx);
  free(w->what);
  free(w);
}

void cr_tls_crl_watch_stop(cr_tls_crl_watch_t *w) {
  if (w == NULL)
    return;
  uv_close((uv_handle_t *)&w->debounce, on_closed);
  uv_close((uv_handle_t *)&w->poll, on_closed);
  for (int i = 0; i < w->nev; i++)
    uv_close((uv_handle_t *)&w->ev[i], on_closed);
}

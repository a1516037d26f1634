/* SPDX-License-Identifier: Apache-2.0 */
/* The trusted-root store on disk: content-addressed PEM files, atomic changes, X509_STORE export and
 * chain verification. See truststore.h for the layout and the guarantees. */
#include "ccrelay/truststore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/x509.h"

#define TRUST_MAX_INPUT (1024 * 1024) /* a trust input or store file larger than this is not a certificate */
#define CERT_SUFFIX ".pem"
#define CRL_SUFFIX ".crl.pem"
#define TMP_PREFIX ".tmp-"

struct cr_truststore {
  char *dir;
};

typedef struct batch_item {
  X509 *cert;
  char *source;
} batch_item_t;

struct cr_trust_batch {
  batch_item_t *v;
  size_t n;
};

/* ---- small helpers ---- */

static void seterr(char *err, size_t errlen, const char *fmt, ...) CR_PRINTF(3, 4);
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int read_input(const char *path, unsigned char **out, size_t *outlen, char *err, size_t errlen) {
  return cr_x509_read_file(path, NULL, TRUST_MAX_INPUT, out, outlen, err, errlen);
}

static char *name_dup(X509_NAME *name) {
  char buf[1024];
  cr_x509_name_oneline(name, buf, sizeof buf);
  return cr_strdup(buf);
}

static long days_until(time_t t, time_t now) {
  time_t d = t - now;
  /* floor division: an hour past expiry is day -1, not day 0 */
  return (long)(d >= 0 ? d / 86400 : -((-d + 86399) / 86400));
}

static int is_hex_name(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

typedef enum { NAME_OTHER, NAME_CERT, NAME_CRL } name_kind_t;

static name_kind_t classify(const char *name) {
  size_t n = strlen(name);
  if (n == CR_TRUST_FP_HEX + strlen(CRL_SUFFIX) && strcmp(name + CR_TRUST_FP_HEX, CRL_SUFFIX) == 0 &&
      is_hex_name(name, CR_TRUST_FP_HEX))
    return NAME_CRL;
  if (n == CR_TRUST_FP_HEX + strlen(CERT_SUFFIX) && strcmp(name + CR_TRUST_FP_HEX, CERT_SUFFIX) == 0 &&
      is_hex_name(name, CR_TRUST_FP_HEX))
    return NAME_CERT;
  return NAME_OTHER;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = cr_malloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* ---- the handle ---- */

int cr_truststore_open(const char *dir, unsigned flags, cr_truststore_t **out, char *err, size_t errlen) {
  struct stat st;
  cr_truststore_t *ts;
  *out = NULL;
  if (dir == NULL || *dir == '\0') {
    seterr(err, errlen, "no trust store directory given");
    return UV_EINVAL;
  }
  if (stat(dir, &st) < 0) {
    int r = -errno;
    if (r != UV_ENOENT || !(flags & CR_TRUSTSTORE_CREATE)) {
      seterr(err, errlen, "trust store %s: %s%s", dir, strerror(-r),
             r == UV_ENOENT ? "; add a certificate to create it, or check the path" : "");
      return r;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
      r = -errno;
      seterr(err, errlen, "cannot create trust store %s: %s; create its parent directory or check permissions",
             dir, strerror(-r));
      return r;
    }
    if (stat(dir, &st) < 0) {
      r = -errno;
      seterr(err, errlen, "trust store %s: %s", dir, strerror(-r));
      return r;
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    seterr(err, errlen, "trust store %s is not a directory; give the directory that holds the trusted roots", dir);
    return UV_ENOTDIR;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    seterr(err, errlen,
           "trust store %s is %s-writable (mode %04o): anyone who can write it decides what is trusted; "
           "run: chmod go-w %s",
           dir, (st.st_mode & S_IWOTH) ? "world" : "group", (unsigned)(st.st_mode & 07777), dir);
    return UV_EPERM;
  }
  ts = cr_calloc(1, sizeof *ts);
  ts->dir = cr_strdup(dir);
  *out = ts;
  return 0;
}

void cr_truststore_close(cr_truststore_t *ts) {
  if (ts == NULL)
    return;
  free(ts->dir);
  free(ts);
}

const char *cr_truststore_dir(const cr_truststore_t *ts) { return ts->dir; }

/* ---- listing ---- */

static void add_problem(cr_trust_list_t *l, const char *path, const char *fmt, ...) CR_PRINTF(3, 4);
static void add_problem(cr_trust_list_t *l, const char *path, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  l->problems = cr_realloc(l->problems, (l->nproblems + 1) * sizeof *l->problems);
  l->problems[l->nproblems].path = cr_strdup(path);
  l->problems[l->nproblems].why = cr_strdup(why);
  l->nproblems++;
}

/* Reads one store file; a file that is not exactly what its name promises becomes a problem. */
static void load_store_file(cr_trust_list_t *l, const char *dir, const char *name, name_kind_t kind, time_t now) {
  char *path = join(dir, name);
  char detail[256], fp[CR_TRUST_FP_HEX + 1];
  unsigned char *data;
  size_t len;
  struct stat st;
  BIO *bio;
  int r;
  if (stat(path, &st) < 0) {
    if (errno != ENOENT) /* removed under us: not a problem */
      add_problem(l, path, "cannot stat: %s", strerror(errno));
    free(path);
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    add_problem(l, path, "not a regular file");
    free(path);
    return;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    add_problem(l, path, "is group/world-writable (mode %04o); run: chmod 644 %s", (unsigned)(st.st_mode & 07777),
                path);
    free(path);
    return;
  }
  r = read_input(path, &data, &len, detail, sizeof detail);
  if (r < 0) {
    if (r != UV_ENOENT)
      add_problem(l, path, "%s", detail);
    free(path);
    return;
  }
  ERR_clear_error();
  bio = BIO_new_mem_buf(data, (int)len);
  if (kind == NAME_CERT) {
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (x == NULL) {
      add_problem(l, path, "does not parse as a PEM certificate (%s); remove it",
                  cr_x509_why(detail, sizeof detail, NULL));
    } else {
      cr_x509_fingerprint(x, fp);
      if (strncmp(fp, name, CR_TRUST_FP_HEX) != 0) {
        add_problem(l, path, "content (SHA-256 %s) does not match its name; remove it and add the certificate again",
                    fp);
        X509_free(x);
      } else {
        cr_trust_cert_t *c;
        l->certs = cr_realloc(l->certs, (l->ncerts + 1) * sizeof *l->certs);
        c = &l->certs[l->ncerts++];
        memset(c, 0, sizeof *c);
        memcpy(c->fingerprint, fp, sizeof fp);
        c->path = path;
        path = NULL;
        c->subject = name_dup(X509_get_subject_name(x));
        c->issuer = name_dup(X509_get_issuer_name(x));
        c->not_before = cr_x509_not_before(x);
        c->not_after = cr_x509_not_after(x);
        c->is_ca = cr_x509_is_ca(x);
        c->self_signed = X509_self_signed(x, 1) == 1;
        c->expired = c->not_after < now;
        c->days_left = days_until(c->not_after, now);
        c->x509 = x;
      }
    }
  } else {
    X509_CRL *crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL);
    if (crl == NULL) {
      add_problem(l, path, "does not parse as a PEM CRL (%s); remove it", cr_x509_why(detail, sizeof detail, NULL));
    } else {
      cr_x509_crl_fingerprint(crl, fp);
      if (strncmp(fp, name, CR_TRUST_FP_HEX) != 0) {
        add_problem(l, path, "content (SHA-256 %s) does not match its name; remove it and add the CRL again", fp);
        X509_CRL_free(crl);
      } else {
        cr_trust_crl_t *c;
        STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
        l->crls = cr_realloc(l->crls, (l->ncrls + 1) * sizeof *l->crls);
        c = &l->crls[l->ncrls++];
        memset(c, 0, sizeof *c);
        memcpy(c->fingerprint, fp, sizeof fp);
        c->path = path;
        path = NULL;
        c->issuer = name_dup(X509_CRL_get_issuer(crl));
        c->this_update = cr_x509_time(X509_CRL_get0_lastUpdate(crl));
        c->next_update = cr_x509_time(X509_CRL_get0_nextUpdate(crl));
        c->stale = c->next_update != 0 && c->next_update < now;
        c->days_left = c->next_update ? days_until(c->next_update, now) : 0;
        c->nrevoked = rev ? (size_t)sk_X509_REVOKED_num(rev) : 0;
        c->crl = crl;
      }
    }
  }
  ERR_clear_error();
  BIO_free(bio);
  free(data);
  free(path);
}

static int cmp_cert(const void *a, const void *b) {
  const cr_trust_cert_t *x = a, *y = b;
  int c = strcmp(x->subject, y->subject);
  return c ? c : strcmp(x->fingerprint, y->fingerprint);
}

static int cmp_crl(const void *a, const void *b) {
  const cr_trust_crl_t *x = a, *y = b;
  int c = strcmp(x->issuer, y->issuer);
  if (c)
    return c;
  return x->this_update < y->this_update ? -1 : x->this_update > y->this_update;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The store's own file names, sorted (readdir order is arbitrary). */
static int scan_names(const char *dir, char ***names, size_t *n, char *err, size_t errlen) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char **v = NULL;
  size_t k = 0;
  if (d == NULL) {
    int r = -errno;
    seterr(err, errlen, "cannot read trust store %s: %s", dir, strerror(-r));
    return r;
  }
  while ((e = readdir(d)) != NULL) {
    if (classify(e->d_name) == NAME_OTHER)
      continue;
    v = cr_realloc(v, (k + 1) * sizeof *v);
    v[k++] = cr_strdup(e->d_name);
  }
  closedir(d);
  if (k > 1)
    qsort(v, k, sizeof *v, cmp_str);
  *names = v;
  *n = k;
  return 0;
}

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

int cr_truststore_list(cr_truststore_t *ts, cr_trust_list_t *out, char *err, size_t errlen) {
  char **names;
  size_t n;
  time_t now = time(NULL);
  int r;
  memset(out, 0, sizeof *out);
  r = scan_names(ts->dir, &names, &n, err, errlen);
  if (r < 0)
    return r;
  for (size_t i = 0; i < n; i++)
    load_store_file(out, ts->dir, names[i], classify(names[i]), now);
  free_names(names, n);
  if (out->ncerts > 1)
    qsort(out->certs, out->ncerts, sizeof *out->certs, cmp_cert);
  if (out->ncrls > 1)
    qsort(out->crls, out->ncrls, sizeof *out->crls, cmp_crl);
  return 0;
}

void cr_trust_list_free(cr_trust_list_t *l) {
  for (size_t i = 0; i < l->ncerts; i++) {
    free(l->certs[i].path);
    free(l->certs[i].subject);
    free(l->certs[i].issuer);
    X509_free(l->certs[i].x509);
  }
  for (size_t i = 0; i < l->ncrls; i++) {
    free(l->crls[i].path);
    free(l->crls[i].issuer);
    X509_CRL_free(l->crls[i].crl);
  }
  for (size_t i = 0; i < l->nproblems; i++) {
    free(l->problems[i].path);
    free(l->problems[i].why);
  }
  free(l->certs);
  free(l->crls);
  free(l->problems);
  memset(l, 0, sizeof *l);
}

int cr_truststore_generation(cr_truststore_t *ts, uint64_t *gen, char *err, size_t errlen) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_MD_CTX *ctx;
  char **names;
  size_t n;
  int r;
  *gen = 0;
  r = scan_names(ts->dir, &names, &n, err, errlen);
  if (r < 0)
    return r;
  ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  for (size_t i = 0; i < n; i++) {
    char *path = join(ts->dir, names[i]);
    struct stat st;
    /* Names are content hashes, but a file edited in place keeps its name: stat covers that. */
    int64_t meta[5] = {0, 0, 0, 0, 0};
    if (stat(path, &st) == 0) {
      meta[0] = (int64_t)st.st_size;
      meta[1] = (int64_t)st.st_mtim.tv_sec;
      meta[2] = (int64_t)st.st_mtim.tv_nsec;
      meta[3] = (int64_t)st.st_ino;
      meta[4] = (int64_t)st.st_mode;
    }
    EVP_DigestUpdate(ctx, names[i], strlen(names[i]) + 1);
    EVP_DigestUpdate(ctx, meta, sizeof meta);
    free(path);
  }
  EVP_DigestFinal_ex(ctx, md, &mdlen);
  EVP_MD_CTX_free(ctx);
  free_names(names, n);
  for (int i = 0; i < 8; i++)
    *gen = (*gen << 8) | md[i];
  return 0;
}

/* ---- input ---- */

cr_trust_batch_t *cr_trust_batch_new(void) { return cr_calloc(1, sizeof(cr_trust_batch_t)); }

void cr_trust_batch_free(cr_trust_batch_t *b) {
  if (b == NULL)
    return;
  for (size_t i = 0; i < b->n; i++) {
    X509_free(b->v[i].cert);
    free(b->v[i].source);
  }
  free(b->v);
  free(b);
}

size_t cr_trust_batch_count(const cr_trust_batch_t *b) { return b->n; }

static void batch_push(cr_trust_batch_t *b, X509 *x, const char *label, int index, int total) {
  char source[1200];
  if (total > 1)
    snprintf(source, sizeof source, "%s, certificate %d of %d", label, index, total);
  else
    snprintf(source, sizeof source, "%s", label);
  b->v = cr_realloc(b->v, (b->n + 1) * sizeof *b->v);
  b->v[b->n].cert = x;
  b->v[b->n].source = cr_strdup(source);
  b->n++;
}

static int no_cert_error(const char *label, const cr_x509_set_t *set, char *err, size_t errlen) {
  if (set && sk_X509_CRL_num(set->crls) > 0)
    seterr(err, errlen, "no certificate found in %s: it holds a CRL; use 'ccrelay trust add-crl %s'", label, label);
  else
    seterr(err, errlen, "no certificate found in %s (expected PEM, DER or PKCS#12)", label);
  return CR_ENO_CERT;
}

/* Decodes a trust input: at least one certificate, or CR_ENO_CERT. */
static int decode_certs(const void *data, size_t len, const char *password, const char *label, cr_x509_set_t *set,
                        char *err, size_t errlen) {
  int r = cr_x509_decode(data, len, password, label, set, err, errlen);
  if (r == CR_EP12_PASSWORD) {
    size_t n = strlen(err);
    seterr(err + n, errlen - n, "; %s",
           password && *password ? "check the password file" : "give its password with --password-file");
  }
  if (r < 0)
    return r;
  if (set->leaf == NULL && sk_X509_num(set->certs) == 0) {
    r = no_cert_error(label, set, err, errlen);
    cr_x509_set_free(set);
  }
  return r;
}

int cr_trust_batch_add_mem(cr_trust_batch_t *b, const void *data, size_t len, const char *password,
                           const char *label, char *err, size_t errlen) {
  cr_x509_set_t set;
  X509 *x;
  int r, n;
  r = decode_certs(data, len, password, label, &set, err, errlen);
  if (r < 0)
    return r;
  if (set.format != CR_X509_PKCS12) {
    n = sk_X509_num(set.certs);
    for (int i = 0; i < n; i++)
      batch_push(b, sk_X509_value(set.certs, i), label, i + 1, n);
    sk_X509_free(set.certs);
    set.certs = NULL;
    cr_x509_set_free(&set);
    return 0;
  }
  /* A PKCS#12 identity carries its own leaf and, usually, the CAs above it: only those are anchors. */
  if (set.leaf && cr_x509_is_ca(set.leaf)) {
    sk_X509_unshift(set.certs, set.leaf);
    set.leaf = NULL;
  }
  n = 0;
  for (int i = 0; i < sk_X509_num(set.certs); i++)
    n += cr_x509_is_ca(sk_X509_value(set.certs, i));
  if (n == 0) {
    char subject[512] = "";
    cr_x509_subject(set.leaf, subject, sizeof subject);
    seterr(err, errlen,
           "%s: the PKCS#12 carries no CA certificate%s%s; add its issuing root instead (the CA certificate "
           "your PKI publishes)",
           label, set.leaf ? ", only its own certificate " : "", subject);
    cr_x509_set_free(&set);
    return CR_ETRUST_REFUSED;
  }
  for (int k = 0; (x = sk_X509_shift(set.certs)) != NULL;) {
    if (cr_x509_is_ca(x))
      batch_push(b, x, label, ++k, n);
    else
      X509_free(x);
  }
  cr_x509_set_free(&set);
  return 0;
}

int cr_trust_batch_add_file(cr_trust_batch_t *b, const char *path, const char *password, char *err, size_t errlen) {
  unsigned char *data;
  size_t len;
  int r = read_input(path, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = cr_trust_batch_add_mem(b, data, len, password, path, err, errlen);
  free(data);
  return r;
}

int cr_trust_load_chain(const char *path, const char *password, X509 **leaf, STACK_OF(X509) **untrusted, char *err,
                        size_t errlen) {
  cr_x509_set_t set;
  unsigned char *data;
  size_t len;
  int r;
  *leaf = NULL;
  *untrusted = NULL;
  r = read_input(path, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = decode_certs(data, len, password, path, &set, err, errlen);
  free(data);
  if (r < 0)
    return r;
  /* PEM and DER: the first certificate is the leaf. PKCS#12: the one with the key, else the first. */
  *leaf = set.leaf ? set.leaf : sk_X509_shift(set.certs);
  *untrusted = set.certs;
  set.leaf = NULL;
  set.certs = NULL;
  cr_x509_set_free(&set);
  return 0;
}

/* ---- atomic writes ---- */

static int open_dir(const cr_truststore_t *ts, char *err, size_t errlen) {
  int fd = open(ts->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    int r = -errno;
    seterr(err, errlen, "cannot open trust store %s: %s", ts->dir, strerror(-r));
    return r;
  }
  return fd;
}

static int sync_dir(const cr_truststore_t *ts, int dfd, char *err, size_t errlen) {
  if (fsync(dfd) < 0 && errno != EINVAL) { /* EINVAL: a file system that cannot sync directories */
    int r = -errno;
    seterr(err, errlen, "cannot sync trust store directory %s: %s", ts->dir, strerror(-r));
    return r;
  }
  return 0;
}

/* Writes name in the directory through a temporary file; the temporary file never survives an error. */
static int write_atomic(const cr_truststore_t *ts, int dfd, const char *name, const char *data, size_t len, char *err,
                        size_t errlen) {
  static unsigned counter;
  char tmp[256];
  size_t off = 0;
  int fd, r = 0;
  snprintf(tmp, sizeof tmp, TMP_PREFIX "%.16s.%ld.%u", name, (long)getpid(), counter++);
  fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    r = -errno;
    seterr(err, errlen, "cannot create a file in trust store %s: %s; the store is unchanged%s", ts->dir,
           strerror(-r), r == UV_EACCES || r == UV_EPERM || r == UV_EROFS ? " (run as the store's owner)" : "");
    return r;
  }
  /* The umask must not make a trusted root unreadable to the agent's user. */
  if (fchmod(fd, 0644) < 0)
    r = -errno;
  while (r == 0 && off < len) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      r = -errno;
    else if (n == 0)
      r = UV_EIO;
    else
      off += (size_t)n;
  }
  if (r == 0 && fsync(fd) < 0)
    r = -errno;
  if (close(fd) < 0 && r == 0)
    r = -errno;
  if (r == 0 && renameat(dfd, tmp, dfd, name) < 0)
    r = -errno;
  if (r < 0) {
    unlinkat(dfd, tmp, 0);
    seterr(err, errlen, "cannot write %s/%s: %s; the store is unchanged%s", ts->dir, name, strerror(-r),
           r == UV_ENOSPC ? " (free some space and retry)" : "");
  }
  return r;
}

/* Undoes the files a failed change created, so the directory is as it was. */
static void rollback(const cr_truststore_t *ts, int dfd, char **created, size_t n) {
  char ignore[64];
  for (size_t i = 0; i < n; i++)
    unlinkat(dfd, created[i], 0);
  if (n)
    sync_dir(ts, dfd, ignore, sizeof ignore);
}

/* The bytes written into a memory BIO, as a malloc'ed NUL-terminated copy; frees the BIO. */
static char *bio_take(BIO *bio, size_t *len) {
  char *p, *out;
  long n = BIO_get_mem_data(bio, &p);
  out = cr_malloc((size_t)n + 1);
  memcpy(out, p, (size_t)n);
  out[n] = '\0';
  *len = (size_t)n;
  BIO_free(bio);
  return out;
}

static char *pem_of_cert(X509 *x, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, x);
  return bio_take(bio, len);
}

static char *pem_of_crl(X509_CRL *c, size_t *len) {
  BIO *bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_CRL(bio, c);
  return bio_take(bio, len);
}

/* ---- add ---- */

void cr_trust_report_free(cr_trust_report_t *r) {
  if (r == NULL)
    return;
  for (size_t i = 0; i < r->n; i++) {
    free(r->v[i].subject);
    free(r->v[i].source);
  }
  free(r->v);
  r->v = NULL;
  r->n = 0;
}

static int exists_at(int dfd, const char *name) {
  struct stat st;
  return fstatat(dfd, name, &st, 0) == 0;
}

/* Why x may not be a trust anchor, or 0. */
static int check_candidate(const batch_item_t *it, unsigned flags, time_t now, char *err, size_t errlen) {
  char subject[512];
  X509 *x = it->cert;
  time_t nb = cr_x509_not_before(x), na = cr_x509_not_after(x);
  cr_x509_subject(x, subject, sizeof subject);
  if (!cr_x509_is_ca(x)) {
    int has_bc = X509_get_ext_by_NID(x, NID_basic_constraints, -1) >= 0;
    seterr(err, errlen,
           "%s: %s is not a CA certificate (%s); add its issuing root instead (nothing was added)", it->source,
           subject, has_bc ? "basicConstraints CA:FALSE" : "no basicConstraints CA:TRUE");
    return CR_ETRUST_REFUSED;
  }
  if (!(flags & CR_TRUST_FORCE) && na < now) {
    char when[CR_X509_TIME_MAX];
    cr_x509_fmt_time(na, CR_X509_TIME_ISO, when, sizeof when);
    seterr(err, errlen,
           "%s: %s has expired (notAfter %s); get its renewed certificate, or use --force to add it anyway "
           "(nothing was added)",
           it->source, subject, when);
    return CR_ETRUST_REFUSED;
  }
  if (!(flags & CR_TRUST_FORCE) && nb > now) {
    seterr(err, errlen,
           "%s: %s is not valid yet (notBefore is in the future); check the clock, or use --force (nothing was "
           "added)",
           it->source, subject);
    return CR_ETRUST_REFUSED;
  }
  return 0;
}

/* Whether x's issuer is among the store's certificates or the batch's. */
static int issuer_known(X509 *x, const cr_trust_list_t *l, const cr_trust_batch_t *b) {
  for (size_t i = 0; i < l->ncerts; i++)
    if (X509_check_issued(l->certs[i].x509, x) == X509_V_OK)
      return 1;
  for (size_t i = 0; i < b->n; i++)
    if (b->v[i].cert != x && X509_check_issued(b->v[i].cert, x) == X509_V_OK)
      return 1;
  return 0;
}

int cr_truststore_add(cr_truststore_t *ts, const cr_trust_batch_t *b, unsigned flags, cr_trust_report_t *rep,
                      char *err, size_t errlen) {
  cr_trust_report_t report = {NULL, 0};
  cr_trust_list_t list;
  char **created = NULL, ignore[256];
  size_t ncreated = 0;
  time_t now = time(NULL);
  int dfd, r = 0;
  if (rep) {
    rep->v = NULL;
    rep->n = 0;
  }
  if (b == NULL || b->n == 0) {
    seterr(err, errlen, "nothing to add: no certificate was given");
    return CR_ENO_CERT;
  }
  /* Everything is checked before the first byte is written. */
  for (size_t i = 0; i < b->n; i++) {
    r = check_candidate(&b->v[i], flags, now, err, errlen);
    if (r < 0)
      return r;
  }
  dfd = open_dir(ts, err, errlen);
  if (dfd < 0)
    return dfd;
  if (cr_truststore_list(ts, &list, ignore, sizeof ignore) < 0)
    memset(&list, 0, sizeof list);
  for (size_t i = 0; i < b->n && r == 0; i++) {
    X509 *x = b->v[i].cert;
    cr_trust_added_t *a;
    char name[CR_TRUST_FP_HEX + sizeof CRL_SUFFIX];
    int dup = 0;
    report.v = cr_realloc(report.v, (report.n + 1) * sizeof *report.v);
    a = &report.v[report.n++];
    memset(a, 0, sizeof *a);
    cr_x509_fingerprint(x, a->fingerprint);
    a->subject = name_dup(X509_get_subject_name(x));
    a->source = cr_strdup(b->v[i].source);
    a->intermediate = X509_self_signed(x, 1) != 1;
    a->issuer_present = a->intermediate && issuer_known(x, &list, b);
    a->expired = cr_x509_not_after(x) < now;
    snprintf(name, sizeof name, "%s" CERT_SUFFIX, a->fingerprint);
    for (size_t j = 0; j < i; j++)
      dup |= strcmp(report.v[j].fingerprint, a->fingerprint) == 0;
    if (dup || exists_at(dfd, name)) {
      a->status = CR_TRUST_PRESENT;
      continue;
    }
    size_t len;
    char *pem = pem_of_cert(x, &len);
    r = write_atomic(ts, dfd, name, pem, len, err, errlen);
    free(pem);
    if (r == 0) {
      a->status = CR_TRUST_ADDED;
      created = cr_realloc(created, (ncreated + 1) * sizeof *created);
      created[ncreated++] = cr_strdup(name);
    }
  }
  if (r == 0 && ncreated > 0)
    r = sync_dir(ts, dfd, err, errlen);
  if (r < 0)
    rollback(ts, dfd, created, ncreated);
  close(dfd);
  cr_trust_list_free(&list);
  free_names(created, ncreated);
  if (r < 0 || rep == NULL)
    cr_trust_report_free(&report);
  else
    *rep = report;
  return r;
}

/* ---- remove ---- */

/* "sha256:AB:CD..." or "abcd" -> "abcd"; UV_EINVAL when not hex. */
static int normalize_fp(const char *in, char *out, size_t outlen) {
  size_t k = 0;
  if (strncasecmp(in, "sha256:", 7) == 0 || strncasecmp(in, "sha256=", 7) == 0)
    in += 7;
  for (; *in; in++) {
    char c = *in;
    if (c == ':')
      continue;
    if (c >= 'A' && c <= 'F')
      c = (char)(c - 'A' + 'a');
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) || k + 1 >= outlen)
      return UV_EINVAL;
    out[k++] = c;
  }
  out[k] = '\0';
  return 0;
}

static void describe_file(const cr_trust_list_t *l, const char *name, char *out, size_t outlen) {
  for (size_t i = 0; i < l->ncerts; i++)
    if (strncmp(l->certs[i].fingerprint, name, CR_TRUST_FP_HEX) == 0) {
      snprintf(out, outlen, "certificate %s", l->certs[i].subject);
      return;
    }
  for (size_t i = 0; i < l->ncrls; i++)
    if (strncmp(l->crls[i].fingerprint, name, CR_TRUST_FP_HEX) == 0) {
      snprintf(out, outlen, "CRL from %s", l->crls[i].issuer);
      return;
    }
  snprintf(out, outlen, "damaged file");
}

int cr_truststore_remove(cr_truststore_t *ts, const char *fp, char removed[CR_TRUST_FP_HEX + 1], char *err,
                         size_t errlen) {
  char want[CR_TRUST_FP_HEX + 2];
  char **names, **hits = NULL;
  size_t n, nhits = 0;
  int r, dfd;
  if (normalize_fp(fp, want, sizeof want) < 0 || strlen(want) < CR_TRUST_MIN_PREFIX) {
    seterr(err, errlen,
           "'%s' is not a SHA-256 fingerprint or a prefix of one (at least %d hex digits); 'ccrelay trust list' "
           "shows them",
           fp, CR_TRUST_MIN_PREFIX);
    return UV_EINVAL;
  }
  r = scan_names(ts->dir, &names, &n, err, errlen);
  if (r < 0)
    return r;
  for (size_t i = 0; i < n; i++)
    if (strncmp(names[i], want, strlen(want)) == 0) {
      hits = cr_realloc(hits, (nhits + 1) * sizeof *hits);
      hits[nhits++] = names[i];
    }
  if (nhits == 0) {
    seterr(err, errlen, "no certificate or CRL in %s has a fingerprint starting with %s; 'ccrelay trust list' shows them",
           ts->dir, want);
    r = UV_ENOENT;
  } else if (nhits > 1) {
    cr_trust_list_t l;
    char what[600], ignore[64];
    size_t used;
    if (cr_truststore_list(ts, &l, ignore, sizeof ignore) < 0)
      memset(&l, 0, sizeof l);
    seterr(err, errlen, "fingerprint prefix %s is ambiguous; give more digits of one of:", want);
    for (size_t i = 0; i < nhits && err; i++) {
      used = strlen(err);
      describe_file(&l, hits[i], what, sizeof what);
      snprintf(err + used, errlen - used, "\n  %.*s  %s", CR_TRUST_FP_HEX, hits[i], what);
    }
    cr_trust_list_free(&l);
    r = CR_EAMBIGUOUS;
  } else if ((dfd = open_dir(ts, err, errlen)) < 0) {
    r = dfd;
  } else {
    if (unlinkat(dfd, hits[0], 0) < 0) {
      r = -errno;
      seterr(err, errlen, "cannot remove %s/%s: %s; the store is unchanged", ts->dir, hits[0], strerror(-r));
    } else {
      r = sync_dir(ts, dfd, err, errlen);
      if (removed) {
        memcpy(removed, hits[0], CR_TRUST_FP_HEX);
        removed[CR_TRUST_FP_HEX] = '\0';
      }
    }
    close(dfd);
  }
  free(hits);
  free_names(names, n);
  return r;
}

/* ---- CRLs ---- */

int cr_truststore_add_crl_mem(cr_truststore_t *ts, const void *data, size_t len, const char *label, unsigned flags,
                              char added[CR_TRUST_FP_HEX + 1], int *present, char *err, size_t errlen) {
  cr_x509_set_t set;
  X509_CRL *crl = NULL;
  cr_trust_list_t list;
  char fp[CR_TRUST_FP_HEX + 1], name[CR_TRUST_FP_HEX + sizeof CRL_SUFFIX], issuer[512], when[32];
  const cr_trust_cert_t *signer = NULL;
  time_t now = time(NULL), this_update, next_update;
  int r = 0, dfd = -1, issuer_seen = 0;
  if (present)
    *present = 0;
  memset(&list, 0, sizeof list);
  r = cr_x509_decode(data, len, NULL, label, &set, err, errlen);
  if (r < 0 && r != CR_ETLS) {
    /* not a certificate file of any kind, or a PKCS#12 (which never holds a CRL) */
    seterr(err, errlen, "no CRL found in %s (expected a PEM or DER CRL)", label);
    r = CR_ENO_CERT;
  } else if (r == 0 && sk_X509_CRL_num(set.crls) > 1) {
    seterr(err, errlen, "%s holds %d CRLs; add them one file at a time", label, sk_X509_CRL_num(set.crls));
    r = CR_ETRUST_REFUSED;
  } else if (r == 0 && sk_X509_CRL_num(set.crls) == 0) {
    seterr(err, errlen, "no CRL found in %s (expected a PEM or DER CRL)%s", label,
           sk_X509_num(set.certs) || set.leaf ? "; it holds certificates: use 'ccrelay trust add'" : "");
    r = CR_ENO_CERT;
  } else if (r == 0) {
    crl = sk_X509_CRL_shift(set.crls);
  }
  cr_x509_set_free(&set); /* empty after a failed decode */
  if (r < 0)
    return r;
  cr_x509_crl_fingerprint(crl, fp);
  cr_x509_name_oneline(X509_CRL_get_issuer(crl), issuer, sizeof issuer);
  this_update = cr_x509_time(X509_CRL_get0_lastUpdate(crl));
  next_update = cr_x509_time(X509_CRL_get0_nextUpdate(crl));
  r = cr_truststore_list(ts, &list, err, errlen);
  if (r < 0)
    goto out;
  /* Only a CRL signed by a CA we trust can say anything about the chains we build. */
  for (size_t i = 0; i < list.ncerts && signer == NULL; i++) {
    cr_trust_cert_t *c = &list.certs[i];
    if (!c->is_ca || X509_NAME_cmp(X509_get_subject_name(c->x509), X509_CRL_get_issuer(crl)) != 0)
      continue;
    issuer_seen = 1;
    EVP_PKEY *k = X509_get0_pubkey(c->x509);
    if (k && X509_CRL_verify(crl, k) == 1)
      signer = c;
    ERR_clear_error();
  }
  if (signer == NULL) {
    seterr(err, errlen,
           issuer_seen ? "%s: the CRL's signature does not verify with the key of its issuer %s in the store; get the "
                         "CRL from that CA again"
                       : "%s: the CRL's issuer %s is not in the trust store; add that CA first",
           label, issuer);
    r = CR_ETRUST_REFUSED;
    goto out;
  }
  if (!(flags & CR_TRUST_FORCE) && next_update != 0 && next_update < now) {
    cr_x509_fmt_time(next_update, CR_X509_TIME_ISO, when, sizeof when);
    seterr(err, errlen,
           "%s: the CRL from %s is stale (nextUpdate %s); download the current one, or use --force to add it anyway",
           label, issuer, when);
    r = CR_ETRUST_REFUSED;
    goto out;
  }
  for (size_t i = 0; i < list.ncrls; i++) {
    cr_trust_crl_t *c = &list.crls[i];
    if (strcmp(c->fingerprint, fp) == 0) {
      if (present)
        *present = 1;
      if (added)
        memcpy(added, fp, sizeof fp);
      goto out;
    }
    if (X509_NAME_cmp(X509_CRL_get_issuer(c->crl), X509_CRL_get_issuer(crl)) == 0 && c->this_update > this_update) {
      cr_x509_fmt_time(c->this_update, CR_X509_TIME_ISO, when, sizeof when);
      seterr(err, errlen, "%s: a newer CRL from %s is already in the store (thisUpdate %s, file %s); nothing changed",
             label, issuer, when, c->path);
      r = CR_ETRUST_REFUSED;
      goto out;
    }
  }
  dfd = open_dir(ts, err, errlen);
  if (dfd < 0) {
    r = dfd;
    goto out;
  }
  snprintf(name, sizeof name, "%s" CRL_SUFFIX, fp);
  {
    size_t plen;
    char *pem = pem_of_crl(crl, &plen);
    r = write_atomic(ts, dfd, name, pem, plen, err, errlen);
    free(pem);
  }
  if (r == 0)
    r = sync_dir(ts, dfd, err, errlen);
  if (r < 0) {
    char *one = name;
    rollback(ts, dfd, &one, 1);
    goto out;
  }
  /* The new CRL is durable; the ones it supersedes go. If that fails the older one merely lingers
   * (OpenSSL prefers the newest valid CRL anyway). */
  for (size_t i = 0; i < list.ncrls; i++)
    if (X509_NAME_cmp(X509_CRL_get_issuer(list.crls[i].crl), X509_CRL_get_issuer(crl)) == 0) {
      const char *base = strrchr(list.crls[i].path, '/');
      unlinkat(dfd, base ? base + 1 : list.crls[i].path, 0);
    }
  sync_dir(ts, dfd, when, sizeof when);
  if (added)
    memcpy(added, fp, sizeof fp);
out:
  if (dfd >= 0)
    close(dfd);
  cr_trust_list_free(&list);
  X509_CRL_free(crl);
  return r;
}

int cr_truststore_add_crl_file(cr_truststore_t *ts, const char *path, unsigned flags, char added[CR_TRUST_FP_HEX + 1],
                               int *present, char *err, size_t errlen) {
  unsigned char *data;
  size_t len;
  int r = read_input(path, &data, &len, err, errlen);
  if (r < 0)
    return r;
  r = cr_truststore_add_crl_mem(ts, data, len, path, flags, added, present, err, errlen);
  free(data);
  return r;
}

/* ---- use ---- */

int cr_trust_crl_soft_error(int e) {
  return e == X509_V_ERR_UNABLE_TO_GET_CRL || e == X509_V_ERR_CRL_HAS_EXPIRED || e == X509_V_ERR_CRL_NOT_YET_VALID ||
         e == X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER;
}

typedef struct soft_notes {
  char *out;
  size_t outlen;
} soft_notes_t;

static int soft_ex_index = -1;

static int soft_verify_cb(int ok, X509_STORE_CTX *ctx) {
  int e = X509_STORE_CTX_get_error(ctx);
  if (ok || !cr_trust_crl_soft_error(e))
    return ok;
  if (soft_ex_index >= 0) {
    soft_notes_t *notes = X509_STORE_CTX_get_ex_data(ctx, soft_ex_index);
    if (notes && notes->out && notes->outlen > 0) {
      char subject[256];
      size_t used = strlen(notes->out);
      X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
      subject[0] = '\0';
      if (cur)
        cr_x509_name_oneline(X509_get_subject_name(cur), subject, sizeof subject);
      if (used < notes->outlen - 1)
        snprintf(notes->out + used, notes->outlen - used, "%s%s (depth %d: %s)", used ? "; " : "",
                 X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(ctx), subject);
    }
  }
  return 1;
}

int cr_truststore_x509_store_list(const cr_truststore_t *ts, const cr_trust_list_t *l, int crl_mode, X509_STORE **out,
                                  char *err, size_t errlen) {
  X509_STORE *st;
  *out = NULL;
  if (l->ncerts == 0) {
    seterr(err, errlen, "trust store %s holds no certificate; add the root CA with 'ccrelay trust add'", ts->dir);
    return CR_ENO_CERT;
  }
  st = X509_STORE_new();
  for (size_t i = 0; i < l->ncerts; i++)
    X509_STORE_add_cert(st, l->certs[i].x509);
  if (crl_mode != CR_TRUST_CRL_OFF) {
    for (size_t i = 0; i < l->ncrls; i++)
      X509_STORE_add_crl(st, l->crls[i].crl);
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (crl_mode == CR_TRUST_CRL_SOFT)
      X509_STORE_set_verify_cb(st, soft_verify_cb);
  }
  ERR_clear_error();
  *out = st;
  return 0;
}

int cr_truststore_x509_store(cr_truststore_t *ts, int crl_mode, X509_STORE **out, char *err, size_t errlen) {
  cr_trust_list_t l;
  int r;
  *out = NULL;
  r = cr_truststore_list(ts, &l, err, errlen);
  if (r < 0)
    return r;
  if (l.nproblems > 0) {
    seterr(err, errlen, "trust store %s: %s %s", ts->dir, l.problems[0].path, l.problems[0].why);
    cr_trust_list_free(&l);
    return CR_ETRUST_REFUSED;
  }
  r = cr_truststore_x509_store_list(ts, &l, crl_mode, out, err, errlen);
  cr_trust_list_free(&l);
  return r;
}

int cr_trust_verify_store(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, int purpose,
                          STACK_OF(X509) **chain_out, int *x509_err, char *warnings, size_t warnlen, char *err,
                          size_t errlen) {
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  soft_notes_t notes = {warnings, warnlen};
  int ok, e, r = 0;
  if (chain_out)
    *chain_out = NULL;
  if (x509_err)
    *x509_err = X509_V_OK;
  if (warnings && warnlen)
    warnings[0] = '\0';
  if (soft_ex_index < 0)
    soft_ex_index = X509_STORE_CTX_get_ex_new_index(0, "ccrelay soft CRL notes", NULL, NULL, NULL);
  if (!X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
    char detail[256];
    seterr(err, errlen, "cannot set up chain verification: %s", cr_x509_why(detail, sizeof detail, NULL));
    X509_STORE_CTX_free(ctx);
    return CR_ETLS;
  }
  if (soft_ex_index >= 0)
    X509_STORE_CTX_set_ex_data(ctx, soft_ex_index, &notes);
  if (purpose == CR_TRUST_PURPOSE_CLIENT)
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
  else if (purpose == CR_TRUST_PURPOSE_SERVER)
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
  ok = X509_verify_cert(ctx);
  if (ok == 1) {
    if (chain_out)
      *chain_out = X509_STORE_CTX_get1_chain(ctx);
  } else {
    char subject[512];
    X509 *cur = X509_STORE_CTX_get_current_cert(ctx);
    e = X509_STORE_CTX_get_error(ctx);
    subject[0] = '\0';
    cr_x509_name_oneline(X509_get_subject_name(cur ? cur : leaf), subject, sizeof subject);
    if (x509_err)
      *x509_err = e;
    seterr(err, errlen, "%s (depth %d: %s)", X509_verify_cert_error_string(e), X509_STORE_CTX_get_error_depth(ctx),
           subject);
    r = CR_ETLS_VERIFY;
  }
  ERR_clear_error();
  X509_STORE_CTX_free(ctx);
  return r;
}

int cr_truststore_verify(cr_truststore_t *ts, X509 *leaf, STACK_OF(X509) *untrusted, int purpose, int crl_mode,
                         STACK_OF(X509) **chain_out, int *x509_err, char *warnings, size_t warnlen, char *err,
                         size_t errlen) {
  X509_STORE *st;
  int r = cr_truststore_x509_store(ts, crl_mode, &st, err, errlen);
  if (chain_out)
    *chain_out = NULL;
  if (r < 0)
    return r;
  r = cr_trust_verify_store(st, leaf, untrusted, purpose, chain_out, x509_err, warnings, warnlen, err, errlen);
  X509_STORE_free(st);
  return r;
}

const char *cr_trust_verify_hint(int e) {
  switch (e) {
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
  case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
  case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
  case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    return "add the root CA that issued it with 'ccrelay trust add' (and any intermediate the file lacks)";
  case X509_V_ERR_CERT_HAS_EXPIRED:
    return "renew the certificate named (or, for a root, add its renewed version)";
  case X509_V_ERR_CERT_NOT_YET_VALID:
    return "check the clock, or wait until the certificate's notBefore";
  case X509_V_ERR_CERT_REVOKED:
    return "its CA revoked it; get a new certificate issued";
  case X509_V_ERR_INVALID_PURPOSE:
    return "its extendedKeyUsage does not allow this use; get a certificate issued for it";
  case X509_V_ERR_UNABLE_TO_GET_CRL:
  case X509_V_ERR_CRL_HAS_EXPIRED:
    return "add the issuing CA's current CRL with 'ccrelay trust add-crl', or use --revocation soft";
  default:
    return "check the chain with 'openssl verify -show_chain'";
  }
}

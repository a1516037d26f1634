/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay trust`: add, list, remove, verify and add-crl over the trusted-root store. Every failure
 * names what failed (file, certificate index and subject) and what to do about it. */
#include "ccrelay/trust_cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccrelay/alloc.h"
#include "ccrelay/cli.h"
#include "ccrelay/config.h"
#include "ccrelay/error.h"
#include "ccrelay/fileio.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "ccrelay/x509.h"

#define MAX_PASSWORD 4096

static const char trust_usage[] =
    "usage: ccrelay trust [--store DIR | -c AGENT.yaml] <command> [options]\n"
    "\n"
    "The trusted-root store (default " CR_CONF_TRUST_STORE_DEFAULT ", or the agent config's trust_store):\n"
    "  add [--force] [--password-file F] FILE...\n"
    "                      trust the CA certificates in FILE (PEM, one or many; DER; PKCS#12, whose\n"
    "                      CA certificates are imported); --force accepts expired ones\n"
    "  list [--json] [--crls]\n"
    "                      list trusted certificates (or CRLs) with fingerprints and expiry\n"
    "  list-crls [--json]  list CRLs with their next-update dates\n"
    "  remove FINGERPRINT  remove a certificate or CRL by SHA-256 fingerprint (a unique prefix of at\n"
    "                      least 4 hex digits is enough)\n"
    "  verify [--password-file F] [--purpose any|client|server] [--revocation off|soft|hard]\n"
    "         [--route NAME | --security-level 0-5] FILE\n"
    "                      check a certificate (PEM/DER, leaf first) or PKCS#12 identity against the\n"
    "                      store; prints the chain built or OpenSSL's reason. Revocation defaults to\n"
    "                      soft when the store holds CRLs, else off. Key sizes and signature digests\n"
    "                      are judged as the agent judges them: at OpenSSL's default security level,\n"
    "                      or the level of route NAME in -c AGENT.yaml (upstream.tls.security_level)\n"
    "  add-crl [--force] FILE\n"
    "                      add a CRL (PEM or DER) signed by a CA in the store; --force accepts a stale one\n"
    "\n"
    "exit codes: 0 success, 1 failure, 2 usage or configuration error\n";

typedef struct opts {
  const char *store;
  const char *config;
  const char *password_file;
  const char *purpose;
  const char *revocation;
  const char *route;
  const char *level;
  int force, json, crls;
  const char *cmd;
  char **args;
  int nargs;
} opts_t;

static int usage(const char *what, const char *arg) {
  fprintf(stderr, "ccrelay trust: %s%s\nrun 'ccrelay trust --help' for usage\n", what, arg);
  return CR_EXIT_USAGE;
}

/* Matches "--name VALUE" and "--name=VALUE"; 1 when matched (value set), -1 when VALUE is missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t n = strlen(name);
  if (strcmp(argv[*i], name) == 0) {
    if (*i + 1 >= argc)
      return -1;
    *value = argv[++*i];
    return 1;
  }
  if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') {
    *value = argv[*i] + n + 1;
    return 1;
  }
  return 0;
}

/* 0, CR_EXIT_USAGE (message printed), or -1 when --help was printed. */
static int parse(int argc, char **argv, opts_t *o) {
  static const char *const valued[] = {"--store",   "--config",     "-c",      "--password-file",
                                       "--purpose", "--revocation", "--route", "--security-level"};
  memset(o, 0, sizeof *o);
  o->args = cr_calloc((size_t)argc, sizeof *o->args);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = NULL;
    int m = 0;
    size_t k;
    if (strcmp(a, "--") == 0) {
      while (++i < argc)
        o->args[o->nargs++] = argv[i];
      break;
    }
    for (k = 0; k < CR_ARRAY_SIZE(valued) && m == 0; k++)
      m = opt_value(argc, argv, &i, valued[k], &v);
    if (m < 0)
      return usage("this option needs a value: ", a);
    if (m > 0) {
      const char *name = valued[k - 1];
      if (strcmp(name, "--store") == 0)
        o->store = v;
      else if (strcmp(name, "--config") == 0 || strcmp(name, "-c") == 0)
        o->config = v;
      else if (strcmp(name, "--password-file") == 0)
        o->password_file = v;
      else if (strcmp(name, "--purpose") == 0)
        o->purpose = v;
      else if (strcmp(name, "--route") == 0)
        o->route = v;
      else if (strcmp(name, "--security-level") == 0)
        o->level = v;
      else
        o->revocation = v;
    } else if (strcmp(a, "--force") == 0 || strcmp(a, "-f") == 0) {
      o->force = 1;
    } else if (strcmp(a, "--json") == 0) {
      o->json = 1;
    } else if (strcmp(a, "--crls") == 0) {
      o->crls = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(trust_usage, stdout);
      return -1;
    } else if (a[0] == '-' && a[1] != '\0') {
      return usage("unknown option: ", a);
    } else if (o->cmd == NULL) {
      o->cmd = a;
    } else {
      o->args[o->nargs++] = argv[i];
    }
  }
  if (o->cmd == NULL)
    return usage("no trust command given (add, list, list-crls, remove, verify, add-crl)", "");
  if (o->store && o->config)
    return usage("give either --store DIR or -c AGENT.yaml, not both", "");
  return 0;
}

/* Which options each command takes, so a misplaced one is a usage error rather than ignored. */
static int check_options(const opts_t *o) {
  const char *c = o->cmd;
  int is_add = strcmp(c, "add") == 0, is_list = strcmp(c, "list") == 0, is_crls = strcmp(c, "list-crls") == 0;
  int is_remove = strcmp(c, "remove") == 0, is_verify = strcmp(c, "verify") == 0, is_crl = strcmp(c, "add-crl") == 0;
  if (!is_add && !is_list && !is_crls && !is_remove && !is_verify && !is_crl)
    return usage("unknown trust command: ", c);
  if (o->force && !is_add && !is_crl)
    return usage("--force applies to add and add-crl, not ", c);
  if (o->password_file && !is_add && !is_verify)
    return usage("--password-file applies to add and verify, not ", c);
  if (o->json && !is_list && !is_crls)
    return usage("--json applies to list and list-crls, not ", c);
  if (o->crls && !is_list)
    return usage("--crls applies to list, not ", c);
  if ((o->purpose || o->revocation || o->route || o->level) && !is_verify)
    return usage("--purpose, --revocation, --route and --security-level apply to verify, not ", c);
  if (o->route && o->config == NULL)
    return usage("--route needs -c AGENT.yaml (the file that defines the route)", "");
  if (o->route && o->level)
    return usage("give --route or --security-level, not both", "");
  if (o->level && (strlen(o->level) != 1 || o->level[0] < '0' || o->level[0] > '5'))
    return usage("--security-level must be 0 to 5, not ", o->level);
  if ((is_list || is_crls) && o->nargs > 0)
    return usage("list takes no file or fingerprint: ", o->args[0]);
  if (is_add && o->nargs == 0)
    return usage("add needs at least one FILE", "");
  if ((is_remove || is_verify || is_crl) && o->nargs != 1)
    return usage(is_remove ? "remove needs exactly one FINGERPRINT (or unique prefix)"
                           : is_verify ? "verify needs exactly one FILE"
                                       : "add-crl needs exactly one FILE",
                 "");
  return 0;
}

/* The password file's first line (one trailing newline stripped), as config's password_file. */
static int read_password(const char *path, char **out) {
  char why[PATH_MAX + 64], *buf;
  size_t n;
  int r;
  *out = NULL;
  r = cr_fileio_read(path, MAX_PASSWORD, &buf, &n, why, sizeof why);
  if (r == CR_ELIMIT) {
    fprintf(stderr, "ccrelay trust: password file %s is larger than %d bytes; is it the right file?\n", path,
            MAX_PASSWORD);
    return -1;
  }
  if (r < 0) {
    if (r == CR_ENOT_REGULAR)
      fprintf(stderr, "ccrelay trust: password file %s\n", why);
    else
      fprintf(stderr, "ccrelay trust: cannot read password file %s: %s\n", path, why);
    return -1;
  }
  if (n > 0 && buf[n - 1] == '\n')
    buf[--n] = '\0';
  if (n > 0 && buf[n - 1] == '\r')
    buf[--n] = '\0';
  *out = buf;
  return 0;
}

static void free_password(char *p) {
  if (p) {
    cr_wipe(p, strlen(p));
    free(p);
  }
}

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static const char *cert_kind(const cr_trust_cert_t *c) {
  if (!c->is_ca)
    return "not-ca";
  return c->self_signed ? "root" : "intermediate";
}

static void print_problems(const cr_trust_list_t *l) {
  for (size_t i = 0; i < l->nproblems; i++)
    fprintf(stderr, "ccrelay trust: problem: %s %s\n", l->problems[i].path, l->problems[i].why);
  if (l->nproblems)
    fprintf(stderr, "ccrelay trust: the agent refuses a store with problems; fix or remove the file%s named above\n",
            l->nproblems == 1 ? "" : "s");
}

static void json_problems(const cr_trust_list_t *l) {
  printf("  \"problems\": [");
  for (size_t i = 0; i < l->nproblems; i++) {
    printf("%s\n    {\"file\": ", i ? "," : "");
    json_str(stdout, l->problems[i].path);
    printf(", \"error\": ");
    json_str(stdout, l->problems[i].why);
    printf("}");
  }
  printf("%s]\n", l->nproblems ? "\n  " : "");
}

static int cmd_list(cr_truststore_t *ts, const opts_t *o) {
  cr_trust_list_t l;
  char err[1024], nb[32], na[32];
  if (cr_truststore_list(ts, &l, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  if (o->json) {
    printf("{\n  \"store\": ");
    json_str(stdout, cr_truststore_dir(ts));
    printf(",\n  \"certificates\": [");
    for (size_t i = 0; i < l.ncerts; i++) {
      const cr_trust_cert_t *c = &l.certs[i];
      cr_x509_fmt_time(c->not_before, CR_X509_TIME_ISO, nb, sizeof nb);
      cr_x509_fmt_time(c->not_after, CR_X509_TIME_ISO, na, sizeof na);
      printf("%s\n    {\"fingerprint\": \"%s\", \"file\": ", i ? "," : "", c->fingerprint);
      json_str(stdout, c->path);
      printf(", \"subject\": ");
      json_str(stdout, c->subject);
      printf(", \"issuer\": ");
      json_str(stdout, c->issuer);
      printf(", \"not_before\": \"%s\", \"not_after\": \"%s\", \"days_left\": %ld, \"kind\": \"%s\", "
             "\"ca\": %s, \"self_signed\": %s, \"expired\": %s}",
             nb, na, c->days_left, cert_kind(c), c->is_ca ? "true" : "false", c->self_signed ? "true" : "false",
             c->expired ? "true" : "false");
    }
    printf("%s],\n  \"crls\": [", l.ncerts ? "\n  " : "");
    for (size_t i = 0; i < l.ncrls; i++) {
      const cr_trust_crl_t *c = &l.crls[i];
      cr_x509_fmt_time(c->this_update, CR_X509_TIME_ISO, nb, sizeof nb);
      printf("%s\n    {\"fingerprint\": \"%s\", \"file\": ", i ? "," : "", c->fingerprint);
      json_str(stdout, c->path);
      printf(", \"issuer\": ");
      json_str(stdout, c->issuer);
      printf(", \"this_update\": \"%s\", \"next_update\": ", nb);
      if (c->next_update) {
        cr_x509_fmt_time(c->next_update, CR_X509_TIME_ISO, na, sizeof na);
        printf("\"%s\", \"days_left\": %ld", na, c->days_left);
      } else {
        printf("null, \"days_left\": null");
      }
      printf(", \"stale\": %s, \"revoked\": %zu}", c->stale ? "true" : "false", c->nrevoked);
    }
    printf("%s],\n", l.ncrls ? "\n  " : "");
    json_problems(&l);
    printf("}\n");
  } else if (o->crls) {
    if (l.ncrls == 0)
      printf("no CRLs in %s\n", cr_truststore_dir(ts));
    else
      printf("%-16s  %-10s  %-10s  %5s  %7s  %s\n", "FINGERPRINT", "THIS", "NEXT", "DAYS", "REVOKED", "ISSUER");
    for (size_t i = 0; i < l.ncrls; i++) {
      const cr_trust_crl_t *c = &l.crls[i];
      char days[16];
      cr_x509_fmt_time(c->this_update, CR_X509_TIME_DATE, nb, sizeof nb);
      cr_x509_fmt_time(c->next_update, CR_X509_TIME_DATE, na, sizeof na);
      if (c->stale)
        snprintf(days, sizeof days, "STALE");
      else if (c->next_update)
        snprintf(days, sizeof days, "%ld", c->days_left);
      else
        snprintf(days, sizeof days, "-");
      printf("%.16s  %-10s  %-10s  %5s  %7zu  %s\n", c->fingerprint, nb, na, days, c->nrevoked, c->issuer);
    }
  } else {
    if (l.ncerts == 0)
      printf("no certificates in %s; add a root with 'ccrelay trust add FILE'\n", cr_truststore_dir(ts));
    else
      printf("%-16s  %-12s  %-10s  %7s  %s\n", "FINGERPRINT", "KIND", "NOT AFTER", "DAYS", "SUBJECT");
    for (size_t i = 0; i < l.ncerts; i++) {
      const cr_trust_cert_t *c = &l.certs[i];
      char days[16];
      cr_x509_fmt_time(c->not_after, CR_X509_TIME_DATE, na, sizeof na);
      if (c->expired)
        snprintf(days, sizeof days, "EXPIRED");
      else
        snprintf(days, sizeof days, "%ld", c->days_left);
      printf("%.16s  %-12s  %-10s  %7s  %s\n", c->fingerprint, cert_kind(c), na, days, c->subject);
    }
    if (l.ncerts)
      printf("%zu certificate%s, %zu CRL%s in %s (full fingerprints: --json)\n", l.ncerts, l.ncerts == 1 ? "" : "s",
             l.ncrls, l.ncrls == 1 ? "" : "s", cr_truststore_dir(ts));
  }
  print_problems(&l);
  int bad = l.nproblems > 0;
  cr_trust_list_free(&l);
  return bad ? CR_EXIT_FAILURE : CR_EXIT_OK;
}

static int cmd_add(cr_truststore_t *ts, const opts_t *o, const char *password) {
  cr_trust_batch_t *b = cr_trust_batch_new();
  cr_trust_report_t rep;
  char err[2048];
  int r;
  /* Every file is parsed and every certificate checked before anything is written. */
  for (int i = 0; i < o->nargs; i++) {
    r = cr_trust_batch_add_file(b, o->args[i], password, err, sizeof err);
    if (r < 0) {
      fprintf(stderr, "ccrelay trust: %s\n", err);
      if (o->nargs > 1)
        fprintf(stderr, "ccrelay trust: nothing was added\n");
      cr_trust_batch_free(b);
      return CR_EXIT_FAILURE;
    }
  }
  r = cr_truststore_add(ts, b, o->force ? CR_TRUST_FORCE : 0, &rep, err, sizeof err);
  cr_trust_batch_free(b);
  if (r < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  for (size_t i = 0; i < rep.n; i++) {
    const cr_trust_added_t *a = &rep.v[i];
    printf("%s %s  %s  (%s)\n", a->status == CR_TRUST_ADDED ? "added          " : "already trusted",
           a->fingerprint, a->subject, a->source);
    if (a->intermediate)
      fprintf(stderr,
              "ccrelay trust: warning: %s is an intermediate CA (not self-signed): chains verify only up to a "
              "self-signed root in the store%s\n",
              a->subject, a->issuer_present ? "" : "; its issuer is not in the store: add the root too");
    if (a->expired)
      fprintf(stderr, "ccrelay trust: warning: %s has expired (added because of --force)\n", a->subject);
  }
  cr_trust_report_free(&rep);
  return CR_EXIT_OK;
}

static int cmd_remove(cr_truststore_t *ts, const opts_t *o) {
  char err[4096], removed[CR_TRUST_FP_HEX + 1];
  if (cr_truststore_remove(ts, o->args[0], removed, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  printf("removed %s\n", removed);
  return CR_EXIT_OK;
}

static int cmd_add_crl(cr_truststore_t *ts, const opts_t *o) {
  char err[2048], fp[CR_TRUST_FP_HEX + 1];
  int present;
  if (cr_truststore_add_crl_file(ts, o->args[0], o->force ? CR_TRUST_FORCE : 0, fp, &present, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  printf("%s %s  (%s)\n", present ? "already present" : "added CRL", fp, o->args[0]);
  return CR_EXIT_OK;
}

static int cmd_verify(cr_truststore_t *ts, const opts_t *o, const char *password) {
  STACK_OF(X509) *untrusted, *chain = NULL;
  X509_STORE *st = NULL;
  cr_tls_policy_t policy;
  cr_conf_agent_t conf;
  X509 *leaf;
  cr_trust_list_t l;
  char err[2048], warn[1024], na[32];
  int purpose = CR_TRUST_PURPOSE_ANY, mode, x509_err, r;
  if (o->purpose == NULL || strcmp(o->purpose, "any") == 0)
    purpose = CR_TRUST_PURPOSE_ANY;
  else if (strcmp(o->purpose, "client") == 0)
    purpose = CR_TRUST_PURPOSE_CLIENT;
  else if (strcmp(o->purpose, "server") == 0)
    purpose = CR_TRUST_PURPOSE_SERVER;
  else
    return usage("--purpose must be any, client or server, not ", o->purpose);
  if (o->revocation == NULL) {
    mode = CR_TRUST_CRL_OFF;
    if (cr_truststore_list(ts, &l, err, sizeof err) == 0) {
      mode = l.ncrls ? CR_TRUST_CRL_SOFT : CR_TRUST_CRL_OFF;
      cr_trust_list_free(&l);
    }
  } else if (strcmp(o->revocation, "off") == 0) {
    mode = CR_TRUST_CRL_OFF;
  } else if (strcmp(o->revocation, "soft") == 0) {
    mode = CR_TRUST_CRL_SOFT;
  } else if (strcmp(o->revocation, "hard") == 0) {
    mode = CR_TRUST_CRL_HARD;
  } else {
    return usage("--revocation must be off, soft or hard, not ", o->revocation);
  }
  memset(&policy, 0, sizeof policy);
  policy.security_level = o->level ? o->level[0] - '0' : -1;
  if (o->route) {
    size_t i;
    if (cr_conf_agent_load(o->config, &conf, err, sizeof err) < 0) {
      fprintf(stderr, "%s\n", err);
      return CR_EXIT_USAGE;
    }
    for (i = 0; i < conf.nroutes && strcmp(conf.routes[i].name, o->route) != 0; i++)
      ;
    if (i == conf.nroutes) {
      fprintf(stderr, "ccrelay trust: %s has no route named %s\n", o->config, o->route);
      cr_conf_agent_free(&conf);
      return CR_EXIT_USAGE;
    }
    policy.security_level = conf.routes[i].tls.security_level;
    cr_conf_agent_free(&conf);
  }
  if (cr_trust_load_chain(o->args[0], password, &leaf, &untrusted, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  /* A route's own identity: the check the agent makes before it uses one (the same function). */
  if (purpose != CR_TRUST_PURPOSE_SERVER && cr_tls_policy_check_chain(&policy, leaf, untrusted, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s: %s\n", o->args[0], err);
    X509_free(leaf);
    cr_x509_chain_free(untrusted);
    return CR_EXIT_FAILURE;
  }
  /* The chain, with key sizes and digests judged at the level the handshake uses. */
  r = cr_truststore_x509_store(ts, mode, &st, err, sizeof err);
  if (r == 0) {
    cr_tls_policy_set_verify_level(st, &policy);
    r = cr_trust_verify_store(st, leaf, untrusted, purpose, &chain, &x509_err, warn, sizeof warn, err, sizeof err);
    X509_STORE_free(st);
  }
  if (r == CR_ETLS_VERIFY) {
    fprintf(stderr, "ccrelay trust: %s: verification failed: %s\nccrelay trust: %s\n", o->args[0], err,
            cr_trust_verify_hint(x509_err));
  } else if (r < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
  } else {
    int n = sk_X509_num(chain);
    printf("%s: OK, chain of %d certificate%s:\n", o->args[0], n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
      X509 *x = sk_X509_value(chain, i);
      char subject[512], fp[CR_TRUST_FP_HEX + 1];
      cr_x509_subject(x, subject, sizeof subject);
      cr_x509_fingerprint(x, fp);
      cr_x509_fmt_time(cr_x509_not_after(x), CR_X509_TIME_DATE, na, sizeof na);
      printf("  %d  %s  (notAfter %s, sha256 %.16s%s)\n", i, subject, na, fp,
             i == n - 1 ? ", trusted root" : "");
    }
    if (warn[0])
      fprintf(stderr, "ccrelay trust: warning: revocation not checked: %s\n", warn);
  }
  X509_free(leaf);
  cr_x509_chain_free(untrusted);
  cr_x509_chain_free(chain);
  return r < 0 ? CR_EXIT_FAILURE : CR_EXIT_OK;
}

/* The store directory: --store, the agent config's trust_store, or the default. */
static int resolve_store(const opts_t *o, char **dir) {
  cr_conf_agent_t conf;
  char err[2048];
  if (o->store) {
    *dir = cr_strdup(o->store);
    return 0;
  }
  if (o->config == NULL) {
    *dir = cr_strdup(CR_CONF_TRUST_STORE_DEFAULT);
    return 0;
  }
  if (cr_conf_agent_load(o->config, &conf, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  *dir = cr_strdup(conf.trust_store ? conf.trust_store : CR_CONF_TRUST_STORE_DEFAULT);
  cr_conf_agent_free(&conf);
  return 0;
}

int cr_trust_cli_main(int argc, char **argv) {
  cr_truststore_t *ts = NULL;
  char *dir = NULL, *password = NULL, err[1024];
  opts_t o;
  int r, writes;
  r = parse(argc, argv, &o);
  if (r == 0)
    r = check_options(&o);
  if (r != 0) {
    free(o.args);
    return r < 0 ? CR_EXIT_OK : r;
  }
  if (cr_tls_global_init(err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    free(o.args);
    return CR_EXIT_FAILURE;
  }
  r = resolve_store(&o, &dir);
  if (r == 0 && o.password_file && read_password(o.password_file, &password) < 0)
    r = CR_EXIT_FAILURE;
  writes = strcmp(o.cmd, "add") == 0 || strcmp(o.cmd, "add-crl") == 0;
  if (r == 0 && cr_truststore_open(dir, writes ? CR_TRUSTSTORE_CREATE : 0, &ts, err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay trust: %s\n", err);
    r = CR_EXIT_FAILURE;
  }
  if (r == 0) {
    if (strcmp(o.cmd, "add") == 0)
      r = cmd_add(ts, &o, password);
    else if (strcmp(o.cmd, "list") == 0)
      r = cmd_list(ts, &o);
    else if (strcmp(o.cmd, "list-crls") == 0) {
      o.crls = 1;
      r = cmd_list(ts, &o);
    } else if (strcmp(o.cmd, "remove") == 0)
      r = cmd_remove(ts, &o);
    else if (strcmp(o.cmd, "verify") == 0)
      r = cmd_verify(ts, &o, password);
    else
      r = cmd_add_crl(ts, &o);
  }
  cr_truststore_close(ts);
  free_password(password);
  free(dir);
  free(o.args);
  return r;
}

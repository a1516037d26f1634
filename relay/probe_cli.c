/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay probe`: for each route, the agent's own dial (agent_probe.c) from the command line, with
 * what an operator's "Test Connection" shows: the TLS version and cipher, the server's certificate,
 * the verify result and the status of one request. */
#include "ccrelay/probe_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/agent.h"
#include "ccrelay/alloc.h"
#include "ccrelay/cli.h"
#include "ccrelay/log.h"
#include "ccrelay/tls.h"
#include "ccrelay/truststore.h"
#include "ccrelay/x509.h"

static const char probe_usage[] =
    "usage: ccrelay probe -c AGENT.yaml [--method METHOD] [--path /PATH] [ROUTE...]\n"
    "\n"
    "Test Connection: for each route (every route when none is named), dial its upstream as the agent\n"
    "does (its identity, its TLS settings, the trust store or its ca), send METHOD PATH (default\n"
    "HEAD /; the route's base path is prepended) and print the TLS version and cipher, the server's\n"
    "certificate (subject, issuer, notAfter), the verify result and the HTTP status.\n"
    "\n"
    "exit codes: 0 every route reachable, verified and answering; 1 one was not; 2 usage or configuration\n";

int cr_probe_cli_check_route(const char *path, const cr_conf_agent_t *conf, size_t i) {
  const cr_conf_route_t *r = &conf->routes[i];
  cr_tls_identity_t id;
  cr_conf_pos_t pos;
  const char *key;
  char err[1024];
  int loading;
  if (cr_agent_route_check(r, NULL, &id, &key, &pos, &loading, err, sizeof err) == 0) {
    cr_tls_identity_free(&id);
    return 0;
  }
  if (pos.line > 0)
    fprintf(stderr, "%s:%d:%d: routes[%zu].upstream.%s: %s\n", path, pos.line, pos.col, i, key, err);
  else
    fprintf(stderr, "%s: routes[%zu].upstream.%s: %s\n", path, i, key, err);
  return -1;
}

typedef struct run {
  cr_agent_probe_result_t *results;
  int *done;
} run_t;

typedef struct slot {
  run_t *run;
  size_t k;
} slot_t;

static void on_result(const cr_agent_probe_result_t *res, void *data) {
  slot_t *s = data;
  s->run->results[s->k] = *res;
  s->run->done[s->k] = 1;
}

static void print_result(const cr_agent_probe_result_t *r, const char *method, const char *path) {
  char when[32] = "-";
  printf("route %s: %s\n", r->route, r->ok ? "OK" : "FAILED");
  printf("  upstream   %s (server name %s)\n", r->upstream, r->server_name);
  if (r->plain) {
    printf("  tls        none (plain_http)\n");
  } else {
    if (r->tls.not_after)
      cr_x509_fmt_time(r->tls.not_after, CR_X509_TIME_ISO, when, sizeof when);
    if (r->tls.version[0])
      printf("  tls        %s %s\n", r->tls.version, r->tls.cipher);
    else
      printf("  tls        -\n");
    printf("  subject    %s\n", r->tls.subject[0] ? r->tls.subject : "-");
    printf("  issuer     %s\n", r->tls.issuer[0] ? r->tls.issuer : "-");
    printf("  not_after  %s\n", when);
    printf("  verify     %s (%s)\n", r->verify[0] ? r->verify : "not reached", r->verify_source);
  }
  if (r->status > 0)
    printf("  request    %s %s -> %d\n", method, path, r->status);
  else
    printf("  request    %s %s -> no answer\n", method, path);
  if (r->warning[0])
    printf("  warning    %s\n", r->warning);
  if (r->error[0])
    printf("  error      %s\n", r->error);
}

static int arg_value(int argc, char **argv, int *i, const char *name, const char **out) {
  size_t n = strlen(name);
  if (strcmp(argv[*i], name) == 0) {
    if (*i + 1 >= argc)
      return -1;
    *out = argv[++*i];
    return 1;
  }
  if (strncmp(argv[*i], name, n) == 0 && argv[*i][n] == '=') {
    *out = argv[*i] + n + 1;
    return 1;
  }
  return 0;
}

static int usage(const char *what, const char *arg) {
  fprintf(stderr, "ccrelay probe: %s%s\nrun 'ccrelay probe --help' for usage\n", what, arg);
  return CR_EXIT_USAGE;
}

int cr_probe_cli_main(int argc, char **argv) {
  const char *config = NULL, *method = "HEAD", *path = "/";
  char **names = cr_calloc((size_t)argc, sizeof *names);
  size_t nnames = 0, n = 0;
  cr_conf_agent_t conf;
  cr_truststore_t *ts = NULL;
  X509_STORE *stores[3] = {NULL, NULL, NULL};
  char err[2048], store_err[1024] = "";
  unsigned char *want;
  slot_t *slots;
  run_t run;
  uv_loop_t loop;
  int code = CR_EXIT_OK;

  for (int i = 1; i < argc; i++) {
    int m;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(probe_usage, stdout);
      free(names);
      return CR_EXIT_OK;
    }
    if ((m = arg_value(argc, argv, &i, "-c", &config)) == 0 && (m = arg_value(argc, argv, &i, "--config", &config)) == 0 &&
        (m = arg_value(argc, argv, &i, "--method", &method)) == 0 && (m = arg_value(argc, argv, &i, "--path", &path)) == 0) {
      if (argv[i][0] == '-') {
        free(names);
        return usage("unknown option: ", argv[i]);
      }
      names[nnames++] = argv[i];
    } else if (m < 0) {
      free(names);
      return usage("this option needs a value: ", argv[i]);
    }
  }
  if (config == NULL) {
    free(names);
    return usage("missing -c AGENT.yaml", "");
  }
  if (path[0] != '/' || strpbrk(path, " \t\r\n") != NULL || method[0] == '\0' ||
      strspn(method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(method)) {
    free(names);
    return usage("--path must start with / (no spaces) and --method be an upper-case HTTP method", "");
  }
  if (cr_tls_global_init(err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay probe: %s\n", err);
    free(names);
    return CR_EXIT_FAILURE;
  }
  if (cr_conf_agent_load(config, &conf, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    free(names);
    return CR_EXIT_USAGE;
  }
  want = cr_calloc(conf.nroutes + 1, 1);
  for (size_t k = 0; k < nnames; k++) {
    size_t i;
    for (i = 0; i < conf.nroutes && strcmp(conf.routes[i].name, names[k]) != 0; i++)
      ;
    if (i == conf.nroutes) {
      fprintf(stderr, "ccrelay probe: %s has no route named %s\n", config, names[k]);
      free(want);
      free(names);
      cr_conf_agent_free(&conf);
      return CR_EXIT_USAGE;
    }
    want[i] = 1;
  }
  /* Lines from the pool and the TLS layer (soft revocation, say) go to stderr; results to stdout. */
  cr_log_setup(CR_LOG_WARN, conf.log.format);
  if (cr_truststore_open(conf.trust_store, 0, &ts, store_err, sizeof store_err) < 0)
    ts = NULL;
  uv_loop_init(&loop);
  run.results = cr_calloc(conf.nroutes + 1, sizeof *run.results);
  run.done = cr_calloc(conf.nroutes + 1, sizeof *run.done);
  slots = cr_calloc(conf.nroutes + 1, sizeof *slots);
  for (size_t i = 0; i < conf.nroutes; i++) {
    int mode = conf.routes[i].revocation == CR_REVOCATION_HARD   ? CR_TRUST_CRL_HARD
               : conf.routes[i].revocation == CR_REVOCATION_SOFT ? CR_TRUST_CRL_SOFT
                                                                 : CR_TRUST_CRL_OFF;
    cr_agent_probe_opts_t o;
    if (nnames && !want[i])
      continue;
    if (ts && stores[mode] == NULL && cr_truststore_x509_store(ts, mode, &stores[mode], store_err, sizeof store_err) < 0)
      stores[mode] = NULL;
    memset(&o, 0, sizeof o);
    o.conf = &conf;
    o.route = i;
    o.store = stores[mode];
    o.store_error = store_err;
    o.method = method;
    o.path = path;
    slots[n].run = &run;
    slots[n].k = n;
    cr_agent_probe_start(&loop, &o, on_result, &slots[n]);
    n++;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  cr_log_flush();
  for (size_t k = 0; k < n; k++) {
    if (!run.done[k]) { /* cannot happen: every probe reports before its handles close */
      code = CR_EXIT_FAILURE;
      continue;
    }
    print_result(&run.results[k], method, path);
    if (!run.results[k].ok)
      code = CR_EXIT_FAILURE;
  }
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "ccrelay probe: event loop closed with handles still open\n");
  for (int m = 0; m < 3; m++)
    X509_STORE_free(stores[m]);
  cr_truststore_close(ts);
  free(run.results);
  free(run.done);
  free(slots);
  free(want);
  free(names);
  cr_conf_agent_free(&conf);
  return code;
}

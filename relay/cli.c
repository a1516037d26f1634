/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ccrelay/agent.h"
#include "ccrelay/config.h"
#include "ccrelay/error.h"
#include "ccrelay/gateway.h"
#include "ccrelay/health_cli.h"
#include "ccrelay/http1.h"
#include "ccrelay/tunnel.h"
#include "ccrelay_revision.h"
#include <uv.h>
#include "ccrelay/log.h"
#include "ccrelay/probe_cli.h"
#include "ccrelay/tls.h"
#include "ccrelay/trust_cli.h"
#include "ccrelay/x509.h"

/* A CA bundle larger than this is not what the user meant to point at. */
#define CA_FILE_MAX (4 * 1024 * 1024)

static const char usage_text[] =
    "usage: ccrelay <command> [options]\n"
    "\n"
    "commands:\n"
    "  agent -c FILE [--allow-root]\n"
    "                    run the agent: dial the gateway, serve calls by the file's routes\n"
    "  gateway -c FILE [--allow-root]\n"
    "                    run the gateway: accept agent tunnels and public HTTPS calls\n"
    "  check -c FILE     validate a config file and every file it names (certificates, keys,\n"
    "                    PKCS#12 identities with their passwords, the agent's trust store) as\n"
    "                    the role does at start: identities in date, routes' identities chain\n"
    "                    to the trust store; opens no socket\n"
    "  trust [--store DIR | -c FILE] add|list|list-crls|remove|verify|add-crl ...\n"
    "                    manage the agent's trusted-root store ('ccrelay trust --help')\n"
    "  health -c FILE    GET the admin listener's /readyz; exit 0 when ready (container probes)\n"
    "  version           print the version\n"
    "  help, --help      print this text\n"
    "\n"
    "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,\n"
    "            3 agent/gateway stopped with calls cut (drain deadline or a second stop signal)\n";

static int usage_error(const char *what, const char *arg) {
  fprintf(stderr, "ccrelay: %s%s\nrun 'ccrelay --help' for usage\n", what, arg);
  return CR_EXIT_USAGE;
}

/* Parses "-c FILE" / "--config FILE" / "--config=FILE", and "--allow-root" where allow_root is not NULL
 * (the long-running roles). */
static int parse_config_arg(int argc, char **argv, const char **path, int *allow_root) {
  *path = NULL;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (allow_root != NULL && strcmp(a, "--allow-root") == 0) {
      *allow_root = 1;
    } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
      if (i + 1 >= argc)
        return usage_error("this option needs a file name: ", a);
      *path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      *path = a + 9;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage_text, stdout);
      return -1;
    } else {
      return usage_error("unknown option: ", a);
    }
  }
  if (*path == NULL)
    return usage_error("missing -c FILE for command ", argv[1]);
  return 0;
}

static void pos_prefix(char *out, size_t len, const char *file, cr_conf_pos_t pos) {
  if (pos.line > 0)
    snprintf(out, len, "%s:%d:%d", file, pos.line, pos.col);
  else
    snprintf(out, len, "%s", file);
}

/* A CA file must hold at least one PEM certificate and nothing unparseable. */
static int check_ca_file(const char *file, const char *key, const cr_conf_file_t *ca) {
  char where[1200], err[1024];
  cr_x509_set_t set;
  unsigned char *data;
  size_t len;
  int r, n;
  if (ca->path == NULL)
    return 0;
  pos_prefix(where, sizeof where, file, ca->pos);
  r = cr_x509_read_file(ca->path, NULL, CA_FILE_MAX, &data, &len, err, sizeof err);
  if (r < 0) {
    fprintf(stderr, "%s: %s: %s\n", where, key, err);
    return -1;
  }
  r = cr_x509_decode(data, len, NULL, ca->path, &set, err, sizeof err);
  free(data);
  n = r == 0 && set.format == CR_X509_PEM ? sk_X509_num(set.certs) : 0;
  cr_x509_set_free(&set);
  if (r == CR_ETLS) { /* a PEM block that does not decode */
    fprintf(stderr, "%s: %s: %s\n", where, key, err);
    return -1;
  }
  if (n == 0) {
    fprintf(stderr, "%s: %s: %s holds no PEM certificate; give the CA certificate(s) in PEM form\n", where,
            key, ca->path);
    return -1;
  }
  return 0;
}

/* A role's own identity (the agent's tunnel identity, the gateway's tunnel and public ones), loaded
 * as the role loads it at start: it must open and be in date. */
static int check_identity(const char *file, const char *key, const cr_conf_identity_t *id) {
  cr_tls_identity_src_t src = {id->pkcs12.path, id->password, id->cert.path, id->key.path};
  cr_tls_identity_t loaded;
  char err[1024], where[1200];
  int r;
  if (id->pkcs12.path == NULL && id->cert.path == NULL)
    return 0;
  r = cr_tls_identity_load_current(&src, &loaded, err, sizeof err);
  if (r < 0) {
    pos_prefix(where, sizeof where, file, id->pkcs12.path ? id->pkcs12.pos : id->cert.pos);
    fprintf(stderr, "%s: %s: %s\n", where, key, err);
    return -1;
  }
  cr_tls_identity_free(&loaded);
  return 0;
}

static void report_problem(void *arg, cr_conf_pos_t pos, const char *key, const char *msg) {
  char where[1200];
  pos_prefix(where, sizeof where, arg, pos);
  fprintf(stderr, "%s: %s: %s\n", where, key, msg);
}

static int check_agent(const char *path) {
  cr_conf_agent_t c;
  char err[2048], key[256];
  int bad = 0;
  if (cr_conf_agent_load(path, &c, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  bad |= check_ca_file(path, "gateway.ca", &c.gateway.ca);
  bad |= check_identity(path, "gateway.identity", &c.gateway.identity);
  for (size_t i = 0; i < c.nroutes; i++) {
    snprintf(key, sizeof key, "routes[%zu].upstream.ca", i);
    bad |= check_ca_file(path, key, &c.routes[i].ca);
    bad |= cr_probe_cli_check_route(path, &c, i); /* the agent's own route check */
  }
  /* The trust store and the routes' identities, validated by the agent's own code. */
  if (cr_agent_check(&c, report_problem, (void *)path) > 0)
    bad = 1;
  if (!bad) {
    const cr_conf_proxy_t *px = &c.gateway.proxy;
    const char *v6 = px->host && strchr(px->host, ':') ? "[" : "";
    char via[400] = "";
    /* which proxy applies, with from_environment resolved as the agent will resolve it */
    if (px->host)
      snprintf(via, sizeof via, " via proxy %s%s%s:%u (%s)", v6, px->host, v6[0] ? "]" : "", px->port, px->source);
    else if (px->from_environment)
      snprintf(via, sizeof via, " direct (%s)", px->no_proxy_entry ? "no_proxy matches" : "no https_proxy");
    printf("%s: OK (agent: gateway %s:%u%s, %zu route%s)\n", path, c.gateway.host, c.gateway.port, via, c.nroutes,
           c.nroutes == 1 ? "" : "s");
  }
  cr_conf_agent_free(&c);
  return bad ? CR_EXIT_USAGE : CR_EXIT_OK;
}

/* The CRLs a listener would load, and what they say, as the gateway would at start. */
static int check_crls(const char *file, const char *key, const cr_conf_file_t *ca, const cr_conf_file_t *crl,
                      int rev_set, cr_conf_revocation_t rev, cr_conf_pos_t rev_pos) {
  int mode = !rev_set && rev == CR_REVOCATION_OFF ? CR_TLS_CRL_AUTO
             : rev == CR_REVOCATION_HARD            ? CR_TRUST_CRL_HARD
             : rev == CR_REVOCATION_SOFT            ? CR_TRUST_CRL_SOFT
                                                    : CR_TRUST_CRL_OFF;
  cr_tls_crl_info_t info;
  char where[1200], err[1024];
  if (ca->path == NULL || mode == CR_TRUST_CRL_OFF)
    return 0;
  if (cr_tls_crl_check(ca->path, crl->path, mode, &info, err, sizeof err) < 0) {
    pos_prefix(where, sizeof where, file, crl->path ? crl->pos : rev_pos.line ? rev_pos : ca->pos);
    fprintf(stderr, "%s: %s: %s\n", where, key, err);
    return -1;
  }
  if (info.nstale > 0) {
    pos_prefix(where, sizeof where, file, crl->path ? crl->pos : ca->pos);
    fprintf(stderr, "%s: %s: warning: %d CRL%s past nextUpdate; under revocation %s %s\n", where, key, info.nstale,
            info.nstale == 1 ? " is" : "s are", info.mode == CR_TRUST_CRL_HARD ? "hard" : "soft",
            info.mode == CR_TRUST_CRL_HARD ? "the certificates of its issuer are refused"
                                            : "the certificates of its issuer are admitted with a warning");
  }
  return 0;
}

static int check_ciphers(const char *file, const cr_conf_gateway_t *c) {
  char where[1200], err[1024];
  if (c->public_.tls_ciphers == NULL || cr_tls_cipher_list_check(c->public_.tls_ciphers, err, sizeof err) == 0)
    return 0;
  pos_prefix(where, sizeof where, file, c->public_.tls_ciphers_pos);
  fprintf(stderr, "%s: public.tls.ciphers: %s\n", where, err);
  return -1;
}

static int check_gateway(const char *path) {
  cr_conf_gateway_t c;
  char err[2048];
  int bad = 0;
  if (cr_conf_gateway_load(path, &c, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  bad |= check_ca_file(path, "tunnel.client_ca", &c.tunnel.client_ca);
  bad |= check_identity(path, "tunnel.identity", &c.tunnel.identity);
  bad |= check_ca_file(path, "public.client_ca", &c.public_.client_ca);
  bad |= check_identity(path, "public.identity", &c.public_.identity);
  bad |= check_crls(path, "tunnel.crl", &c.tunnel.client_ca, &c.tunnel.crl, c.tunnel.revocation_set,
                    c.tunnel.revocation, c.tunnel.revocation_pos);
  bad |= check_crls(path, "public.crl", &c.public_.client_ca, &c.public_.crl, c.public_.revocation_set,
                    c.public_.revocation, c.public_.revocation_pos);
  bad |= check_ciphers(path, &c);
  for (size_t i = 0; i < c.nservices; i++) {
    char key[64];
    snprintf(key, sizeof key, "services[%zu].callers.client_ca", i);
    bad |= check_ca_file(path, key, &c.services[i].callers.client_ca);
  }
  if (!bad)
    printf("%s: OK (gateway: %zu group%s, %zu service%s)\n", path, c.ngroups, c.ngroups == 1 ? "" : "s",
           c.nservices, c.nservices == 1 ? "" : "s");
  cr_conf_gateway_free(&c);
  return bad ? CR_EXIT_USAGE : CR_EXIT_OK;
}

static int cmd_check(const char *path) {
  char err[1024];
  const char *role = cr_conf_detect_role(path, err, sizeof err);
  if (role == NULL) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  return strcmp(role, "agent") == 0 ? check_agent(path) : check_gateway(path);
}

/* The roles face the network: a process started as root refuses to run unless told to. Ports below
 * 1024 need CAP_NET_BIND_SERVICE, not root. */
static int refuse_root(const char *cmd, int allow_root) {
  const char *env = getenv("CCRELAY_ALLOW_ROOT");
  if (geteuid() != 0 || allow_root || (env != NULL && strcmp(env, "1") == 0))
    return 0;
  fprintf(stderr,
          "ccrelay %s: refusing to run as root. Run it as an unprivileged user (the Debian package's units run\n"
          "as 'ccrelay', the container image as uid 10001). To listen on a port below 1024, give the process\n"
          "CAP_NET_BIND_SERVICE instead (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; Kubernetes:\n"
          "securityContext.capabilities.add: [NET_BIND_SERVICE]; or setcap cap_net_bind_service=+ep on the\n"
          "binary). To run as root anyway, pass --allow-root or set CCRELAY_ALLOW_ROOT=1.\n",
          cmd);
  return CR_EXIT_USAGE;
}

static void warn_if_root(void) {
  if (geteuid() == 0)
    cr_log_warn("running as root", "reason=\"allowed by --allow-root or CCRELAY_ALLOW_ROOT=1; an unprivileged "
                                   "user with CAP_NET_BIND_SERVICE is enough for any port\"");
}

static int cmd_agent(const char *path) {
  cr_conf_agent_t c;
  char err[2048];
  int code;
  if (cr_conf_agent_load(path, &c, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  cr_log_setup(c.log.level, c.log.format);
  warn_if_root();
  code = cr_agent_run(&c);
  cr_log_flush();
  cr_conf_agent_free(&c);
  return code;
}

static int cmd_gateway(const char *path) {
  cr_conf_gateway_t c;
  char err[2048];
  int code;
  if (cr_conf_gateway_load(path, &c, err, sizeof err) < 0) {
    fprintf(stderr, "%s\n", err);
    return CR_EXIT_USAGE;
  }
  cr_log_setup(c.log.level, c.log.format);
  warn_if_root();
  code = cr_gateway_run(&c);
  cr_log_flush();
  cr_conf_gateway_free(&c);
  return code;
}

int cr_cli_main(int argc, char **argv) {
  const char *cmd, *path;
  char err[512];
  int r, allow_root = 0, is_role;
  if (argc < 2)
    return usage_error("no command given", "");
  cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage_text, stdout);
    return CR_EXIT_OK;
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
    /* What a supply-chain review needs: our revision and every library as loaded at run time (llhttp is
     * compiled in, from Debian's node-llhttp sources). */
    printf("ccrelay %s (revision %s)\n", CCRELAY_VERSION, CCRELAY_REVISION);
    printf("  %s\n  libuv %s\n  nghttp2 %s\n  llhttp %s (built in)\n  libyaml %s\n", cr_x509_openssl_version(),
           uv_version_string(), cr_tunnel_nghttp2_version(), cr_http1_llhttp_version(), cr_conf_libyaml_version());
    return CR_EXIT_OK;
  }
  if (strcmp(cmd, "trust") == 0)
    return cr_trust_cli_main(argc - 1, argv + 1);
  if (strcmp(cmd, "health") == 0)
    return cr_health_cli_main(argc - 1, argv + 1);
  if (strcmp(cmd, "probe") == 0)
    return cr_probe_cli_main(argc - 1, argv + 1);
  if (strcmp(cmd, "agent") != 0 && strcmp(cmd, "gateway") != 0 && strcmp(cmd, "check") != 0)
    return usage_error("unknown command: ", cmd);
  is_role = strcmp(cmd, "check") != 0;
  r = parse_config_arg(argc, argv, &path, is_role ? &allow_root : NULL);
  if (r < 0)
    return CR_EXIT_OK; /* --help was printed */
  if (r > 0)
    return r;
  if (is_role && (r = refuse_root(cmd, allow_root)) != 0)
    return r;
  if (cr_tls_global_init(err, sizeof err) < 0) {
    fprintf(stderr, "ccrelay: %s\n", err);
    return CR_EXIT_FAILURE;
  }
  if (strcmp(cmd, "check") == 0)
    return cmd_check(path);
  if (strcmp(cmd, "agent") == 0)
    return cmd_agent(path);
  return cmd_gateway(path);
}

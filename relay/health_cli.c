/* SPDX-License-Identifier: Apache-2.0 */
/* `ccrelay health`: a probe for container HEALTHCHECKs and exec probes, where no curl or nc exists. One
 * blocking HTTP/1.1 GET to the admin listener with a deadline on every step; nothing else in the
 * process runs, so blocking is the simplest correct shape here. */
#include "ccrelay/health_cli.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ccrelay/cli.h"
#include "ccrelay/config.h"

static const char health_usage[] =
    "usage: ccrelay health [-c FILE | --url http://HOST:PORT/PATH] [--timeout SECONDS]\n"
    "\n"
    "GETs the admin listener's /readyz (the listener of FILE's admin.listen, or the URL given) and exits 0\n"
    "when the answer is 2xx, 1 when it is not or nothing answers within the timeout (default 3 s), 2 on a\n"
    "usage or configuration error. Without -c or --url, FILE is $CCRELAY_CONFIG. For container HEALTHCHECKs\n"
    "and exec probes.\n";

typedef struct target {
  char host[256];
  char port[8];
  char path[512];
} target_t;

static int usage(const char *what, const char *arg) {
  fprintf(stderr, "ccrelay health: %s%s\n%s", what, arg, health_usage);
  return CR_EXIT_USAGE;
}

/* A listener bound to the wildcard address is reached on loopback. */
static void set_host(target_t *t, const char *host) {
  if (strcmp(host, "0.0.0.0") == 0)
    host = "127.0.0.1";
  else if (strcmp(host, "::") == 0)
    host = "::1";
  snprintf(t->host, sizeof t->host, "%s", host);
}

static int target_from_url(target_t *t, const char *url) {
  const char *p, *slash, *colon;
  size_t hostlen;
  if (strncmp(url, "http://", 7) != 0)
    return usage("--url must start with http:// (the admin listener speaks plain HTTP): ", url);
  p = url + 7;
  slash = strchr(p, '/');
  if (slash == NULL)
    slash = p + strlen(p);
  if (*p == '[') {
    const char *end = memchr(p, ']', (size_t)(slash - p));
    if (end == NULL || end[1] != ':')
      return usage("--url needs [IPv6]:PORT: ", url);
    hostlen = (size_t)(end - p - 1);
    if (hostlen == 0 || hostlen >= sizeof t->host)
      return usage("--url has a bad host: ", url);
    memcpy(t->host, p + 1, hostlen);
    t->host[hostlen] = '\0';
    colon = end + 1;
  } else {
    colon = memchr(p, ':', (size_t)(slash - p));
    if (colon == NULL)
      return usage("--url needs an explicit port: ", url);
    hostlen = (size_t)(colon - p);
    if (hostlen == 0 || hostlen >= sizeof t->host)
      return usage("--url has a bad host: ", url);
    memcpy(t->host, p, hostlen);
    t->host[hostlen] = '\0';
  }
  size_t portlen = (size_t)(slash - colon - 1);
  if (portlen == 0 || portlen >= sizeof t->port || strspn(colon + 1, "0123456789") < portlen)
    return usage("--url has a bad port: ", url);
  memcpy(t->port, colon + 1, portlen);
  t->port[portlen] = '\0';
  if (atoi(t->port) < 1 || atoi(t->port) > 65535)
    return usage("--url has a bad port: ", url);
  snprintf(t->path, sizeof t->path, "%s", *slash ? slash : "/readyz");
  /* The path goes into a request line: no byte that could end or split it. */
  for (const char *c = t->path; *c; c++)
    if ((unsigned char)*c <= 0x20 || *c == 0x7f)
      return usage("--url has a space or control byte in its path: ", url);
  return 0;
}

static int target_from_config(target_t *t, const char *file) {
  char err[2048];
  const cr_conf_listen_t *l;
  cr_conf_agent_t a;
  cr_conf_gateway_t g;
  const char *role = cr_conf_detect_role(file, err, sizeof err);
  int is_agent;
  if (role == NULL) {
    fprintf(stderr, "ccrelay health: %s\n", err);
    return CR_EXIT_USAGE;
  }
  is_agent = strcmp(role, "agent") == 0;
  if (is_agent ? cr_conf_agent_load(file, &a, err, sizeof err) : cr_conf_gateway_load(file, &g, err, sizeof err)) {
    fprintf(stderr, "ccrelay health: %s\n", err);
    return CR_EXIT_USAGE;
  }
  l = is_agent ? &a.admin_listen : &g.admin_listen;
  int r = 0;
  if (l->host == NULL) {
    fprintf(stderr, "ccrelay health: %s has no admin.listen: there is no listener to probe; add one (%s)\n", file,
            is_agent ? "admin: { listen: 127.0.0.1:9091 }" : "admin: { listen: ..., token_file: ... }");
    r = CR_EXIT_USAGE;
  } else {
    set_host(t, l->host);
    snprintf(t->port, sizeof t->port, "%u", l->port);
    snprintf(t->path, sizeof t->path, "/readyz");
  }
  if (is_agent)
    cr_conf_agent_free(&a);
  else
    cr_conf_gateway_free(&g);
  return r;
}

static long long ms_left(const struct timespec *deadline) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  long long ms = (deadline->tv_sec - now.tv_sec) * 1000LL + (deadline->tv_nsec - now.tv_nsec) / 1000000;
  return ms > 0 ? ms : 0;
}

/* Waits for fd to become ready for events; 0, or -1 with why set. */
static int wait_fd(int fd, short events, const struct timespec *deadline, const char **why) {
  struct pollfd p = {fd, events, 0};
  for (;;) {
    int n = poll(&p, 1, (int)ms_left(deadline));
    if (n > 0)
      return 0;
    if (n == 0) {
      *why = "timed out";
      return -1;
    }
    if (errno != EINTR) {
      *why = strerror(errno);
      return -1;
    }
  }
}

static int dial(const target_t *t, const struct timespec *deadline, const char **why) {
  struct addrinfo hints = {0}, *res = NULL, *ai;
  int fd = -1, gai;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  gai = getaddrinfo(t->host, t->port, &hints, &res);
  if (gai != 0) {
    *why = gai_strerror(gai);
    return -1;
  }
  *why = "no address";
  for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
    int soerr = 0;
    socklen_t len = sizeof soerr;
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      *why = strerror(errno);
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
      *why = strerror(errno);
    } else if (wait_fd(fd, POLLOUT, deadline, why) == 0 &&
               getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) {
      break;
    } else if (soerr != 0) {
      *why = strerror(soerr);
    }
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  return fd;
}

/* 0 with *status set, or -1 with why. */
static int get_status(const target_t *t, double timeout_s, int *status, const char **why) {
  struct timespec deadline;
  char req[1024], resp[512];
  size_t off = 0, have = 0;
  int fd, n;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += (time_t)timeout_s;
  deadline.tv_nsec += (long)((timeout_s - (double)(time_t)timeout_s) * 1e9);
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  fd = dial(t, &deadline, why);
  if (fd < 0)
    return -1;
  n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s%s%s:%s\r\nUser-Agent: ccrelay-health\r\nConnection: close\r\n\r\n",
               t->path, strchr(t->host, ':') ? "[" : "", t->host, strchr(t->host, ':') ? "]" : "", t->port);
  while (off < (size_t)n) {
    ssize_t w = send(fd, req + off, (size_t)n - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
    } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, &deadline, why) < 0)
        goto fail;
    } else {
      *why = strerror(errno);
      goto fail;
    }
  }
  /* The status line is all we need: "HTTP/1.1 200 ..." */
  while (have < sizeof resp - 1 && memchr(resp, '\n', have) == NULL) {
    ssize_t r = recv(fd, resp + have, sizeof resp - 1 - have, 0);
    if (r > 0) {
      have += (size_t)r;
    } else if (r == 0) {
      break;
    } else if (errno == EAGAIN || errno == EINTR) {
      if (wait_fd(fd, POLLIN, &deadline, why) < 0)
        goto fail;
    } else {
      *why = strerror(errno);
      goto fail;
    }
  }
  close(fd);
  resp[have] = '\0';
  if (have < 12 || strncmp(resp, "HTTP/1.", 7) != 0 || resp[8] != ' ' || strspn(resp + 9, "0123456789") < 3) {
    *why = have == 0 ? "the connection closed without an answer" : "the answer is not HTTP";
    return -1;
  }
  *status = (resp[9] - '0') * 100 + (resp[10] - '0') * 10 + (resp[11] - '0');
  return 0;
fail:
  close(fd);
  return -1;
}

int cr_health_cli_main(int argc, char **argv) {
  target_t t;
  const char *file = NULL, *url = NULL, *why = NULL;
  double timeout_s = 3;
  int status = 0, r;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strcmp(a, "--url") == 0 ||
         strcmp(a, "--timeout") == 0) && i + 1 >= argc)
      return usage("this option needs a value: ", a);
    if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
      file = argv[++i];
    } else if (strcmp(a, "--url") == 0) {
      url = argv[++i];
    } else if (strcmp(a, "--timeout") == 0) {
      char *end;
      timeout_s = strtod(argv[++i], &end);
      if (*end != '\0' || !(timeout_s > 0 && timeout_s <= 300))
        return usage("--timeout takes seconds, more than 0 and at most 300: ", argv[i]);
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(health_usage, stdout);
      return CR_EXIT_OK;
    } else {
      return usage("unknown option: ", a);
    }
  }
  /* The container image's HEALTHCHECK names no file: the image serves both roles, so the run says which
   * configuration it uses in CCRELAY_CONFIG. */
  if (file == NULL && url == NULL && getenv("CCRELAY_CONFIG") != NULL && *getenv("CCRELAY_CONFIG") != '\0')
    file = getenv("CCRELAY_CONFIG");
  if ((file == NULL) == (url == NULL))
    return usage("give exactly one of -c FILE (or CCRELAY_CONFIG in the environment) and --url URL", "");
  memset(&t, 0, sizeof t);
  r = url ? target_from_url(&t, url) : target_from_config(&t, file);
  if (r != 0)
    return r;
  int v6 = strchr(t.host, ':') != NULL;
  if (get_status(&t, timeout_s, &status, &why) < 0) {
    fprintf(stderr, "ccrelay health: http://%s%s%s:%s%s: %s\n", v6 ? "[" : "", t.host, v6 ? "]" : "", t.port,
            t.path, why);
    return CR_EXIT_FAILURE;
  }
  printf("http://%s%s%s:%s%s: %d\n", v6 ? "[" : "", t.host, v6 ? "]" : "", t.port, t.path, status);
  return status >= 200 && status < 300 ? CR_EXIT_OK : CR_EXIT_FAILURE;
}

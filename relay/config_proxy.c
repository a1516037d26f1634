/* SPDX-License-Identifier: Apache-2.0 */
/* gateway.proxy: the agent's outbound HTTP proxy, from the file or (opted in) from the environment,
 * and curl's no_proxy matching. Part of the config module (config.h); see cr_conf_proxy_t. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"
#include "config_internal.h"

static const char *const proxy_keys[] = {"url",           "from_environment", "username",
                                         "password_file", "password_env",     "connect_timeout"};
static const range_t r_proxy_connect = {10 * MS_PER_S, 1, MS_PER_H};

/* http://host:port with at most a "/" after it. scheme_optional: "host:port" alone is http (as
 * curl reads https_proxy). NULL, or why not; the URL itself is never part of the reason, since a
 * pasted one may carry a password. */
static const char *parse_proxy_url(const char *s, size_t len, int scheme_optional, char **host,
                                   unsigned *port) {
  const char *sep, *auth, *end = s + len, *slash;
  size_t i;

  *host = NULL;
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      return "spaces and control or non-ASCII characters are not allowed";
  sep = len >= 3 ? strstr(s, "://") : NULL;
  if (sep != NULL && (size_t)(sep - s) < len) {
    size_t slen = (size_t)(sep - s);
    if (slen == 5 && strncasecmp(s, "https", 5) == 0)
      return "an https:// proxy is not supported: the proxy is reached over plain HTTP and the TLS to "
             "the gateway runs end to end inside its CONNECT tunnel; use http://host:port";
    if (slen != 4 || strncasecmp(s, "http", 4) != 0)
      return "only http:// proxies (HTTP CONNECT) are supported; expected http://host:port";
    auth = sep + 3;
  } else if (scheme_optional) {
    auth = s;
  } else {
    return "expected http://host:port";
  }
  slash = memchr(auth, '/', (size_t)(end - auth));
  if (slash == NULL)
    slash = end;
  if (memchr(auth, '@', (size_t)(end - auth)) != NULL)
    return "user information (user:password@) is not allowed in the proxy URL: give proxy.username "
           "with proxy.password_file or proxy.password_env";
  if (memchr(auth, '?', (size_t)(end - auth)) != NULL || memchr(auth, '#', (size_t)(end - auth)) != NULL ||
      (slash < end && slash + 1 != end))
    return "a path, query or fragment is not allowed; expected http://host:port";
  return cr__conf_split_hostport(auth, (size_t)(slash - auth), 1, host, port);
}

/* The first of the two spellings that is set and not empty (curl reads the lower-case one first). */
static const char *env_first(const char *lower, const char *upper, const char **name) {
  const char *v = getenv(lower);
  *name = lower;
  if (v == NULL || v[0] == '\0') {
    v = getenv(upper);
    *name = upper;
  }
  return v != NULL && v[0] != '\0' ? v : NULL;
}

static int from_env(ctx_t *c, const node_t *fe, const char *kp, const char *gw_host, cr_conf_proxy_t *out) {
  const char *name, *np_name, *url = env_first("https_proxy", "HTTPS_PROXY", &name);
  const char *np = env_first("no_proxy", "NO_PROXY", &np_name);
  char matched[256], tmp[80];
  const char *why;

  if (url == NULL)
    return 0; /* no proxy in the environment: dial directly */
  if (np != NULL && cr_conf_no_proxy_match(np, gw_host, matched, sizeof matched)) {
    out->no_proxy_entry = cr_strdup(matched);
    return 0;
  }
  if ((why = parse_proxy_url(url, strlen(url), 1, &out->host, &out->port)) != NULL) {
    if (strchr(url, '@') != NULL) /* may hold a password: not echoed */
      return cr__conf_fail(c, fe->pos, kp, "environment variable %s: %s", name, why);
    return cr__conf_fail(c, fe->pos, kp, "environment variable %s ('%s'): %s", name,
                         cr__conf_sanitize(url, strlen(url), tmp, sizeof tmp), why);
  }
  out->source = name;
  return 0;
}

int cr__conf_get_proxy(ctx_t *c, const node_t *gw, const char *path, const char *gw_host, cr_conf_proxy_t *out) {
  const node_t *m, *u, *fe, *un;
  char p[PATH_LEN], kp[PATH_LEN], tmp[80];
  const char *why;

  out->connect_timeout_ms = r_proxy_connect.def;
  if (cr__conf_get_map(c, gw, path, "proxy", OPT, proxy_keys, CR_ARRAY_SIZE(proxy_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  cr__conf_join(p, path, "proxy");
  out->pos = m->pos;
  u = cr__conf_map_get(m, "url");
  fe = cr__conf_map_get(m, "from_environment");
  if (cr__conf_get_bool(c, m, p, "from_environment", 0, &out->from_environment) != 0 ||
      cr__conf_get_duration(c, m, p, "connect_timeout", r_proxy_connect, &out->connect_timeout_ms, NULL) != 0)
    return CR_ECONFIG;
  if (u != NULL && out->from_environment)
    return cr__conf_fail(c, fe->pos, cr__conf_join(kp, p, "from_environment"),
                         "give url or from_environment: true, not both");
  if (u == NULL && !out->from_environment)
    return cr__conf_fail(c, m->pos, p, "needs url (http://host:port), or from_environment: true");

  /* Credentials: a username and its password, or neither. */
  un = cr__conf_map_get(m, "username");
  if (cr__conf_get_str(c, m, p, "username", OPT, &out->username, NULL) != 0 ||
      cr__conf_get_password(c, m, p, &out->password) != 0)
    return CR_ECONFIG;
  out->password_from_env = cr__conf_map_get(m, "password_env") != NULL;
  if (out->username != NULL) {
    /* RFC 7617: the user-id of Basic cannot hold a colon; control bytes would break the header. */
    for (const char *s = out->username; *s; s++)
      if (*s == ':' || (unsigned char)*s < 0x20 || *s == 0x7f)
        return cr__conf_fail(c, un->pos, cr__conf_join(kp, p, "username"),
                             "must not contain ':' or control characters (Basic authentication)");
    if (out->password == NULL)
      return cr__conf_fail(c, un->pos, cr__conf_join(kp, p, "username"),
                           "needs password_file or password_env beside it");
  } else if (out->password != NULL) {
    const node_t *pw = cr__conf_map_get(m, "password_file");
    if (pw == NULL)
      pw = cr__conf_map_get(m, "password_env");
    return cr__conf_fail(c, pw->pos, cr__conf_join(kp, p, pw == cr__conf_map_get(m, "password_file") ?
                                                              "password_file" : "password_env"),
                         "a password needs proxy.username beside it");
  }

  if (out->from_environment)
    return from_env(c, fe, cr__conf_join(kp, p, "from_environment"), gw_host, out);
  cr__conf_join(kp, p, "url");
  if (cr__conf_scalar_str(c, u, kp, REQ) != 0)
    return CR_ECONFIG;
  if ((why = parse_proxy_url(u->str, u->len, 0, &out->host, &out->port)) != NULL) {
    int secret = memchr(u->str, '@', u->len) != NULL;
    return cr__conf_fail(c, u->pos, kp, "bad proxy URL%s%s%s: %s", secret ? "" : " '",
                         secret ? "" : cr__conf_sanitize(u->str, u->len, tmp, sizeof tmp), secret ? "" : "'", why);
  }
  out->source = "gateway.proxy.url";
  return 0;
}

void cr__conf_proxy_free(cr_conf_proxy_t *p) {
  free(p->host);
  free(p->no_proxy_entry);
  free(p->username);
  if (p->password != NULL) {
    cr_wipe(p->password, strlen(p->password));
    free(p->password);
  }
  memset(p, 0, sizeof *p);
}

/* ---------------------------------------------------------------- no_proxy */

/* addr/bits of one family; bits -1 when the entry has none. 1 when entry is an IP literal or CIDR. */
static int parse_ip_entry(const char *e, unsigned char addr[16], int *family, int *bits) {
  char buf[64];
  const char *slash = strchr(e, '/');
  size_t n = slash ? (size_t)(slash - e) : strlen(e);
  *bits = -1;
  if (n >= 2 && e[0] == '[' && e[n - 1] == ']') { /* [::1] */
    e++;
    n -= 2;
  }
  if (n == 0 || n >= sizeof buf)
    return 0;
  memcpy(buf, e, n);
  buf[n] = '\0';
  if (inet_pton(AF_INET, buf, addr) == 1)
    *family = AF_INET;
  else if (inet_pton(AF_INET6, buf, addr) == 1)
    *family = AF_INET6;
  else
    return 0;
  if (slash != NULL) {
    char *end;
    long b = strtol(slash + 1, &end, 10);
    if (*end != '\0' || end == slash + 1 || b < 0 || b > (*family == AF_INET ? 32 : 128))
      return 0;
    *bits = (int)b;
  }
  return 1;
}

static int prefix_equal(const unsigned char *a, const unsigned char *b, int bits) {
  int full = bits / 8, rest = bits % 8;
  if (memcmp(a, b, (size_t)full) != 0)
    return 0;
  return rest == 0 || ((a[full] ^ b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* host against one trimmed entry (no surrounding spaces; may be empty). */
static int entry_matches(const char *entry, const char *host) {
  unsigned char ea[16], ha[16];
  int ef, hf, bits;
  size_t el, hl;
  const char *colon;
  char name[256];

  if (strcmp(entry, "*") == 0)
    return 1;
  if (parse_ip_entry(entry, ea, &ef, &bits)) {
    if (inet_pton(AF_INET, host, ha) == 1)
      hf = AF_INET;
    else if (inet_pton(AF_INET6, host, ha) == 1)
      hf = AF_INET6;
    else
      return 0;
    if (hf != ef)
      return 0;
    return prefix_equal(ea, ha, bits >= 0 ? bits : hf == AF_INET ? 32 : 128);
  }
  /* a name, perhaps with a port (ignored) and a leading dot (the same as without) */
  if (entry[0] == '.')
    entry++;
  colon = strchr(entry, ':');
  el = colon ? (size_t)(colon - entry) : strlen(entry);
  if (el == 0 || el >= sizeof name)
    return 0;
  memcpy(name, entry, el);
  name[el] = '\0';
  while (el > 1 && name[el - 1] == '.') /* "example.com." */
    name[--el] = '\0';
  hl = strlen(host);
  while (hl > 1 && host[hl - 1] == '.')
    hl--;
  if (hl == el)
    return strncasecmp(host, name, el) == 0;
  return hl > el && host[hl - el - 1] == '.' && strncasecmp(host + hl - el, name, el) == 0;
}

int cr_conf_no_proxy_match(const char *no_proxy, const char *host, char *matched, size_t matchedlen) {
  const char *s = no_proxy;
  while (*s != '\0') {
    const char *end = strchr(s, ',');
    char entry[256];
    size_t n;
    if (end == NULL)
      end = s + strlen(s);
    while (s < end && isspace((unsigned char)*s))
      s++;
    n = (size_t)(end - s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
      n--;
    if (n > 0 && n < sizeof entry) {
      memcpy(entry, s, n);
      entry[n] = '\0';
      if (entry_matches(entry, host)) {
        if (matched != NULL && matchedlen > 0)
          snprintf(matched, matchedlen, "%s", entry);
        return 1;
      }
    }
    s = *end ? end + 1 : end;
  }
  return 0;
}

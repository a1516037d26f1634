/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/route.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

int cr_route_path_has_prefix(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  if (n == 0 || (n == 1 && prefix[0] == '/'))
    return 1;
  if (strncmp(path, prefix, n) != 0)
    return 0;
  if (prefix[n - 1] == '/')
    return 1;
  return path[n] == '\0' || path[n] == '/' || path[n] == '?';
}

const char *cr_route_target_unsafe_reason(const char *target) {
  const char *p;
  size_t pathlen;
  if (target == NULL || target[0] != '/')
    return "request target must be an absolute path starting with '/'";
  pathlen = strcspn(target, "?#");
  for (p = target; (size_t)(p - target) < pathlen; p++) {
    unsigned char c = (unsigned char)*p;
    if (c < 0x21 || c == 0x7f)
      return "request target contains a control byte or space";
    if (c == '\\')
      return "request target contains a backslash";
    if (c == '%') {
      if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))
        return "request target has a malformed percent-escape";
      if (strncasecmp(p, "%2f", 3) == 0 || strncasecmp(p, "%2e", 3) == 0 || strncasecmp(p, "%5c", 3) == 0 ||
          strncmp(p, "%00", 3) == 0)
        return "request target percent-encodes '/', '.', '\\' or NUL";
    }
    if (c == '/') {
      const char *seg = p + 1;
      size_t len = strcspn(seg, "/?#");
      if ((size_t)(seg - target) + len > pathlen)
        len = pathlen - (size_t)(seg - target);
      if (len == 0 && (size_t)(seg - target) < pathlen)
        return "request target has an empty path segment ('//')";
      if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.'))
        return "request target has a dot-segment ('.' or '..')";
    }
  }
  return NULL;
}

int cr_route_host_matches(const cr_http_msg_t *m, const char *host) {
  const char *h = cr_http_msg_get_id(m, CR_HDR_HOST);
  size_t hl, want = strlen(host);
  const char *colon;
  if (h == NULL)
    return 0;
  hl = strlen(h);
  if (h[0] == '[') {
    const char *close = strchr(h, ']');
    if (close == NULL)
      return 0;
    /* Compare the bracketed literal with or without brackets in the config. */
    if (host[0] == '[')
      hl = (size_t)(close - h) + 1;
    else {
      h++;
      hl = (size_t)(close - h);
    }
  } else if ((colon = strchr(h, ':')) != NULL) {
    hl = (size_t)(colon - h);
  }
  return hl == want && strncasecmp(h, host, hl) == 0;
}

static int route_matches(const cr_conf_route_t *r, const cr_http_msg_t *req) {
  if (r->match_host && !cr_route_host_matches(req, r->match_host))
    return 0;
  if (r->match_path_prefix && !cr_route_path_has_prefix(req->target, r->match_path_prefix))
    return 0;
  if (r->nmatch_methods > 0) {
    size_t i;
    for (i = 0; i < r->nmatch_methods; i++)
      if (strcmp(r->match_methods[i], req->method) == 0)
        break;
    if (i == r->nmatch_methods)
      return 0;
  }
  if (r->match_header_name) {
    const char *v = cr_http_msg_get(req, r->match_header_name);
    if (v == NULL || strcmp(v, r->match_header_value) != 0)
      return 0;
  }
  if (r->match_soap_action) {
    char action[1024]; /* an action longer than this matches no route */
    if (cr_http_soap_action(req, action, sizeof action) < 0 || strcmp(action, r->match_soap_action) != 0)
      return 0;
  }
  return 1;
}

long cr_route_match(const cr_conf_route_t *routes, size_t n, const cr_http_msg_t *req) {
  if (req->method == NULL || req->target == NULL || cr_route_target_unsafe_reason(req->target) != NULL)
    return -1;
  for (size_t i = 0; i < n; i++)
    if (route_matches(&routes[i], req))
      return (long)i;
  return -1;
}

long cr_route_service_match(const cr_conf_service_t *services, size_t n, const cr_http_msg_t *req) {
  long best = -1;
  size_t best_len = 0;
  for (size_t i = 0; i < n; i++) {
    const cr_conf_service_t *s = &services[i];
    size_t len = s->path_prefix ? strlen(s->path_prefix) : 0;
    if (s->passthrough) /* reached by its TLS server name only, never by a request's Host */
      continue;
    if (!cr_route_host_matches(req, s->host))
      continue;
    if (s->path_prefix && !cr_route_path_has_prefix(req->target, s->path_prefix))
      continue;
    if (best < 0 || len > best_len) {
      best = (long)i;
      best_len = len;
    }
  }
  return best;
}

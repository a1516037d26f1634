/* SPDX-License-Identifier: Apache-2.0 */
/* Pure request matching: the agent's routes and the gateway's services. No I/O. */
#ifndef CCRELAY_ROUTE_H
#define CCRELAY_ROUTE_H

#include <stddef.h>

#include "ccrelay/config.h"
#include "ccrelay/http_msg.h"

/* Paths under this prefix are the tunnel's control channel (gateway -> agent). The gateway never
 * forwards a public request whose path starts with it. */
#define CR_CONTROL_PREFIX "/.well-known/ccrelay/"

/* 1 if path (the request target, query included) is under prefix on a segment boundary:
 * "/a/b" is under "/a" and "/a/", "/a?x" is under "/a", "/ab" is not under "/a". */
int cr_route_path_has_prefix(const char *path, const char *prefix);

/* NULL if target is an origin-form path safe to match by prefix; otherwise why it is refused:
 * not starting with "/", dot-segments ("/../", "/./"), empty segments, percent-encoded "/", "." or
 * "\\" (which an upstream could decode into a path the prefix match did not see), backslashes,
 * or control bytes. */
const char *cr_route_target_unsafe_reason(const char *target);

/* 1 if the message's Host (port ignored, case-insensitive) equals host. */
int cr_route_host_matches(const cr_http_msg_t *m, const char *host);

/* Index of the first route whose every present match field holds, or -1. */
long cr_route_match(const cr_conf_route_t *routes, size_t n, const cr_http_msg_t *req);

/* Index of the service for this request: Host must match; among those, the longest path_prefix
 * that matches (a service without prefix matches every path). -1 if none. */
long cr_route_service_match(const cr_conf_service_t *services, size_t n, const cr_http_msg_t *req);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* A small HTTP/1.1 server for operators: the agent's /healthz, /readyz and /status, and the
 * gateway's authenticated admin API. Plain HTTP on a loopback address by default (the listener is
 * for the host or the pod, not the network); one request per connection (Connection: close), request
 * bodies up to 1 MiB collected whole, answers given at once or later (a gateway admin call waits for
 * an agent's answer through the tunnel).
 *
 * Lifetimes: a cr_admin_req_t lives from on_request until cr_admin_respond (or until the caller's
 * connection fails: then on_abort fires, and the request must not be used afterwards). */
#ifndef CCRELAY_ADMIN_H
#define CCRELAY_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "ccrelay/http_msg.h"
#include "ccrelay/stream.h"

typedef struct cr_admin cr_admin_t;
typedef struct cr_admin_req cr_admin_req_t;

typedef struct cr_admin_callbacks {
  /* A complete request: head and body (body may be empty; valid until respond or abort). The callee
   * answers with cr_admin_respond now or later. */
  void (*on_request)(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t body_len, void *arg);
  /* The caller went away (or the listener closed) before an answer; optional. */
  void (*on_abort)(cr_admin_req_t *req, void *arg);
} cr_admin_callbacks_t;

/* Listens on host:port. err gets prose on failure. Requests with heads over 16 KiB, bodies over
 * 1 MiB, or not complete within 10 s are answered 400/413/408 without reaching on_request. */
int cr_admin_listen(uv_loop_t *loop, const char *host, unsigned port, const cr_admin_callbacks_t *cbs, void *arg,
                    cr_admin_t **out, char *err, size_t errlen);
unsigned cr_admin_port(const cr_admin_t *a);
/* Serves conn (which the admin now owns) as if the listener had accepted it; the listener's own
 * connections come this way too. Tests and fuzz targets feed in-memory streams through it. */
void cr_admin_accept(cr_admin_t *a, cr_stream_t *conn);
/* Stops listening and closes every connection (aborting requests in flight); frees on a later turn. */
void cr_admin_close(cr_admin_t *a);

/* Answers req (once) with status, Content-Type ctype and body (copied); closes the connection after. */
void cr_admin_respond(cr_admin_req_t *req, int status, const char *ctype, const char *body, size_t len);
/* Adds a header to the answer cr_admin_respond will send (e.g. WWW-Authenticate on a 401); call
 * before it. Content-Type, Content-Length and Connection are the listener's. 0, CR_EHTTP_PARSE for
 * a name or value not valid on the wire, or CR_ELIMIT past 8 headers. */
int cr_admin_req_add_header(cr_admin_req_t *req, const char *name, const char *value);
/* The caller's address ("127.0.0.1:53211"), for logs of who asked. */
const char *cr_admin_req_peer(const cr_admin_req_t *req);
/* Opaque per-request pointer for the callee. */
void cr_admin_req_set_data(cr_admin_req_t *req, void *data);
void *cr_admin_req_data(const cr_admin_req_t *req);

/* 1 if the request carries `Authorization: Bearer <token>` equal to token (compared in constant
 * time). */
int cr_admin_bearer_ok(const cr_http_msg_t *head, const char *token);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* The bodies of the answers ccrelay itself gives (404 no route, 502, 503, 504, 400...): a short JSON
 * object, or a SOAP 1.1 Fault for SOAP routes, so a console sees an honest status it can parse. */
#ifndef CCRELAY_ERRPAGE_H
#define CCRELAY_ERRPAGE_H

#include "ccrelay/buf.h"
#include "ccrelay/http_msg.h"

/* Fills head (a response: status, Content-Type, Content-Length, Cache-Control) and body.
 * code: a short machine word ("no_tunnel"); message: one sentence for a person; request_id may be
 * NULL. soap: body is a SOAP 1.1 Fault (faultcode soap:Server for 5xx, soap:Client for 4xx). */
void cr_errpage_build(int status, const char *code, const char *message, const char *request_id, int soap,
                      cr_http_msg_t *head, cr_buf_t *body);

/* Appends s to out as the inside of a JSON string (quotes not included). */
void cr_errpage_json_escape(cr_buf_t *out, const char *s);

/* A new request id: 16 lowercase hex digits, unique per process run and unpredictable across runs. */
void cr_errpage_request_id_new(char out[17]);
/* 1 if a caller-supplied id is acceptable to pass on (1..64 chars of [A-Za-z0-9._:-]). */
int cr_errpage_request_id_valid(const char *id);

#endif

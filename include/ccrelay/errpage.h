/* SPDX-License-Identifier: Apache-2.0 */
/* The bodies of the answers ccrelay itself gives (404 no route, 502, 503, 504, 400...): a short JSON
 * object with an honest status, or for SOAP callers a SOAP Fault in their SOAP version, so a console
 * gets an answer it can parse. */
#ifndef CCRELAY_ERRPAGE_H
#define CCRELAY_ERRPAGE_H

#include "ccrelay/buf.h"
#include "ccrelay/http_msg.h"

/* Fills head (a response: status, Content-Type, Content-Length, Cache-Control, and X-Ccrelay-Error
 * carrying code, so logs in front of the caller show which answer was ccrelay's own) and body.
 * code: a short machine word ("no_tunnel"); message: one sentence for a person; request_id may be
 * NULL. soap: 0 for a JSON body; CR_SOAP_12 for a SOAP 1.2 Fault (application/soap+xml, env:Receiver
 * for a 5xx status, env:Sender for a 4xx); any other nonzero value for a SOAP 1.1 Fault (text/xml,
 * soap:Server / soap:Client). A SOAP Fault always goes with HTTP status 500, which SOAP clients
 * (WCF, zeep) turn into a fault exception carrying message; status itself is in the Fault's detail. */
void cr_errpage_build(int status, const char *code, const char *message, const char *request_id, int soap,
                      cr_http_msg_t *head, cr_buf_t *body);

/* Appends s to out as the inside of a JSON string (quotes not included). */
void cr_errpage_json_escape(cr_buf_t *out, const char *s);

/* A new request id: 16 lowercase hex digits, unique per process run and unpredictable across runs. */
void cr_errpage_request_id_new(char out[17]);
/* 1 if a caller-supplied id is acceptable to pass on (1..64 chars of [A-Za-z0-9._:-]). */
int cr_errpage_request_id_valid(const char *id);

#endif

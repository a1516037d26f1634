/* SPDX-License-Identifier: Apache-2.0 */
/* The server name (SNI, RFC 6066) of a TLS client's first flight, read from the raw bytes before any
 * TLS is run: the gateway routes a passthrough service by it without terminating TLS. Pure and
 * strict: every length is checked against its enclosing one, nothing is allocated, no OpenSSL. */
#ifndef CCRELAY_TLS_SNI_H
#define CCRELAY_TLS_SNI_H

#include <stddef.h>

/* The largest ClientHello handshake message (type, length and body) looked at; a bigger one is
 * CR_ELIMIT. TLS records carry at most 16 KiB each, and real hellos are well under that. */
#define CR_TLS_SNI_HELLO_MAX (16 * 1024)
/* The longest host name (RFC 1035 limits a name to 253 characters in text; 255 is the wire limit). */
#define CR_TLS_SNI_NAME_MAX 255

/* What cr_tls_sni_parse found, when it is no error. */
#define CR_TLS_SNI_NONE 0  /* a whole ClientHello without a server_name extension */
#define CR_TLS_SNI_FOUND 1 /* a whole ClientHello with a host name */
#define CR_TLS_SNI_MORE 2  /* a valid beginning: read more and call again with all of it */

/* Looks at data[0..len), the first bytes a TLS client sent (one or more handshake records; the
 * ClientHello may span records and arrive in pieces). Returns:
 *   CR_TLS_SNI_FOUND  name gets the host name, NUL-terminated, as sent (compare it without regard
 *                     to case); namecap must be at least CR_TLS_SNI_NAME_MAX + 1
 *   CR_TLS_SNI_NONE   name gets ""
 *   CR_TLS_SNI_MORE   name gets ""
 *   CR_EPROTO  not a TLS ClientHello, or a malformed one (a length that overruns its container, a
 *              second server_name extension, an empty or invalid host name, ...)
 *   CR_ELIMIT  the ClientHello is longer than CR_TLS_SNI_HELLO_MAX
 * Bytes after the ClientHello are ignored. *hello_end (may be NULL) gets, on FOUND or NONE, how many
 * bytes of data the records that carry the hello take. A namecap too small for the name is CR_ELIMIT. */
int cr_tls_sni_parse(const unsigned char *data, size_t len, char *name, size_t namecap, size_t *hello_end);

#endif

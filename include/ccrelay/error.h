/* SPDX-License-Identifier: Apache-2.0 */
/* One error space for the whole program: functions that can fail return 0 or a negative int.
 * I/O errors are libuv's codes (UV_E*, negated errno on Unix); ccrelay's own codes come from the
 * table below, far below libuv's range, and cr_strerror() names both. */
#ifndef CCRELAY_ERROR_H
#define CCRELAY_ERROR_H

#define CR_ERRNO_MAP(XX)                                                            \
  XX(CONFIG, "invalid configuration")                                               \
  XX(LIMIT, "size limit exceeded")                                                  \
  XX(TLS, "TLS failure")                                                            \
  XX(TLS_VERIFY, "peer certificate verification failed")                            \
  XX(TLS_TRUNCATED, "TLS connection truncated: peer closed without close_notify")   \
  XX(TLS_ALPN, "peer did not agree on the application protocol")                    \
  XX(P12_PASSWORD, "PKCS#12 password is wrong")                                     \
  XX(P12_CORRUPT, "PKCS#12 file is corrupt or not PKCS#12")                         \
  XX(P12_UNSUPPORTED, "PKCS#12 file uses an algorithm this OpenSSL cannot load")    \
  XX(KEY_MISMATCH, "private key does not match certificate")                        \
  XX(HTTP_PARSE, "malformed HTTP message")                                          \
  XX(HTTP_TOO_LARGE, "HTTP header section too large")                               \
  XX(PROTO, "protocol error")                                                       \
  XX(NO_ROUTE, "no route matches")                                                  \
  XX(NO_TUNNEL, "no live tunnel")                                                   \
  XX(REFUSED, "refused by peer")                                                    \
  XX(CANCELED, "operation canceled")                                                \
  XX(CLOSED, "connection closed")                                                   \
  XX(NO_CERT, "no certificate found")                                               \
  XX(TRUST_REFUSED, "refused by the trust store's rules")                           \
  XX(AMBIGUOUS, "ambiguous fingerprint prefix")                                     \
  XX(NOT_REGULAR, "not a regular file")                                            \
  XX(PROXY, "the proxy did not open a tunnel")                                      \
  XX(PROXY_AUTH, "proxy authentication failed")

#define CR_ERR_BASE (-20000)

typedef enum {
  CR__EDUMMY = CR_ERR_BASE,
#define XX(name, _) CR_E##name,
  CR_ERRNO_MAP(XX)
#undef XX
  CR__EMAX
} cr_errno_t;

/* Human text for any code: ccrelay's, libuv's, or a negated errno. Never NULL. */
const char *cr_strerror(int err);
/* Short symbolic name ("ETLS_VERIFY", "ECONNREFUSED"), for log keys and metrics. Never NULL. */
const char *cr_err_name(int err);

#endif

/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: arbitrary bytes into the HTTP/1.1 response parser (1xx skipping, bodiless and
 * close-delimited responses, EOF handling). The engine is shared with the request target. */
#define FUZZ_HTTP1_RESPONSE 1
#include "fuzz_http1_request.c"

/* SPDX-License-Identifier: Apache-2.0 */
/* The cloud side: accepts agent tunnels (mTLS, HTTP/2 client role) and public HTTPS calls, and sends
 * each call down a live tunnel of the service's relay group. */
#ifndef CCRELAY_GATEWAY_H
#define CCRELAY_GATEWAY_H

#include "ccrelay/config.h"

/* Runs until SIGTERM/SIGINT (then drains for drain_timeout). Returns a process exit code:
 * 0 after a clean drain, 1 when startup or the loop failed (the reason is logged). */
int cr_gateway_run(const cr_conf_gateway_t *conf);

#endif

/* Shared between the two files of the gateway module: gateway.c (tunnels, public calls) and
 * gateway_admin.c (the operators' admin API, which drives control calls down agent tunnels). */
#ifndef CCRELAY_GATEWAY_INTERNAL_H
#define CCRELAY_GATEWAY_INTERNAL_H

#include <uv.h>

#include "ccrelay/config.h"
#include "ccrelay/tunnel.h"

struct gateway;

typedef struct cr__gw_tunnel_info {
  const char *agent; /* the certificate CN that admitted it */
  const char *group;
  const char *peer;
  cr_tunnel_t *tunnel;
} cr__gw_tunnel_info_t;

/* Calls visit for every accepted tunnel (usable or draining), group by group. info is valid only
 * during the call; visit must not open, close or shut down tunnels. */
void cr__gateway_foreach_tunnel(struct gateway *gw, void (*visit)(const cr__gw_tunnel_info_t *info, void *arg),
                                void *arg);

/* The CRLs of tunnel.client_ca and public.client_ca (tunnel.crl, public.crl) are also checked for a
 * change this often (inotify sees most changes at once). */
#define CR_GW_CRL_CHECK_MS 10000

/* SIGHUP: reloads the CRLs of both listeners that check any (new handshakes use them; a tunnel whose
 * agent certificate is now revoked is shut down), logging the outcome; a bad file keeps the CRLs in
 * force. Nothing when neither listener checks CRLs. */
void cr__gw_crl_reload(struct gateway *gw);
/* Stops watching the CRL files (the drain, or a failed start). Idempotent. */
void cr__gw_crl_stop(struct gateway *gw);

typedef struct cr__gw_admin cr__gw_admin_t;

/* Starts the admin API on conf->admin_listen (the caller checked host is set). 0, or an error
 * already logged with the config position. */
int cr__gw_admin_start(struct gateway *gw, uv_loop_t *loop, const cr_conf_gateway_t *conf, cr__gw_admin_t **out);
/* The bound port (admin.listen may say port 0 in tests). */
unsigned cr__gw_admin_port(const cr__gw_admin_t *ga);
/* Stops listening and aborts admin calls in flight (their control streams are reset); frees ga. */
void cr__gw_admin_stop(cr__gw_admin_t *ga);

#endif

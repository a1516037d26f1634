/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the operators' HTTP/1.1 admin listener (relay/admin.c) with the handlers both
 * roles put behind it, fed raw request bytes over an in-memory stream (fuzz_memstream.h) through
 * cr_admin_accept, so no socket carries the bytes. The first input byte picks the handler:
 *
 *   0  the agent's listener (agent_ops.c: /healthz, /readyz, /status) on a bare agent
 *   1  the gateway's admin API (gateway_admin.c: bearer token, /agents, /agents/<a>/status|trust,
 *      forwarded down a tunnel). Its tunnel registry is replaced by one gateway tunnel to "agent-1"
 *      over an in-memory stream whose agent answers the first control call with 200 {}.
 *   2  the agent's control endpoints under /.well-known/ccrelay/ (agent_ops.c cr__agent_control:
 *      status, trust listing, trust add with the body, trust remove), dispatched as agent.c does for
 *      a tunnel request, on an empty trust store in a temporary directory
 *   3  the same with remote_trust off
 *
 * and its other bits: 4 random splits, 8 EOF after the request (else the caller stays silent and
 * the listener is closed under it), 16 writes fail, 32 the agent counts a tunnel as up.
 * Per input: a fresh loop and listener, the bytes, the loop run until quiet, everything closed,
 * then uv_loop_close() == 0 (no handle, request or timer left behind). A trust-store addition the
 * input manages (a real CA certificate in a POST) lands in the temporary store, removed at exit. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "agent_internal.h"
#include "ccrelay/admin.h"
#include "ccrelay/buf.h"
#include "ccrelay/error.h"
#include "ccrelay/log.h"
#include "ccrelay/route.h"
#include "ccrelay/tls.h"
#include "ccrelay/tunnel.h"
#include "fuzz_memstream.h"
#include "gateway_internal.h"

#define FUZZ_TOKEN "fuzz-token"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- the gateway's tunnel registry, replaced: one tunnel to agent-1 ---- */

static cr_tunnel_t *fake_tunnel;
static fuzz_mem_t *fake_tunnel_io;

/* Replaces gateway.c's exposition (gateway.c is not linked into this target). */
void cr__gateway_metrics(struct gateway *gw, cr_buf_t *out) {
  (void)gw;
  cr_metrics_family(out, "ccrelay_fuzz_total", "counter", "A stand-in.");
  cr_metrics_u64(out, "ccrelay_fuzz_total", NULL, 0, 1);
}

/* Replaces gateway.c's registry (gateway.c is not linked into this target): the admin API sees one
 * accepted tunnel. Picking it for a call lets the agent's answer through. */
void cr__gateway_foreach_tunnel(struct gateway *gw, void (*visit)(const cr__gw_tunnel_info_t *info, void *arg),
                                void *arg) {
  cr__gw_tunnel_info_t info = {"agent-1", "fuzz-group", "fuzz:1", fake_tunnel, "kept", "0123abcd"};
  (void)gw;
  if (fake_tunnel == NULL)
    return;
  visit(&info, arg);
  if (fake_tunnel_io)
    fuzz_mem_release(fake_tunnel_io);
}

static void fake_tunnel_closed(cr_tunnel_t *t, int error) { fake_tunnel = NULL; }

static void fake_tunnel_io_gone(cr_stream_t *s) { fake_tunnel_io = NULL; }

/* The agent's side of the tunnel: its SETTINGS, then (released when a call picks the tunnel) the
 * answer to stream 1: HEADERS :status 200 content-type, DATA "{}\n" with END_STREAM. */
static const uint8_t agent_answer[] = {
    0, 0, 0, 4, 0, 0, 0, 0, 0,                  /* SETTINGS */
    0, 0, 0, 4, 1, 0, 0, 0, 0,                  /* SETTINGS ACK */
    0, 0, 44, 1, 4, 0, 0, 0, 1,                 /* HEADERS, END_HEADERS, stream 1 */
    0, 7, ':', 's', 't', 'a', 't', 'u', 's', 3, '2', '0', '0',
    0, 12, 'c', 'o', 'n', 't', 'e', 'n', 't', '-', 't', 'y', 'p', 'e',
    16, 'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n', '/', 'j', 's', 'o', 'n',
    0, 0, 3, 0, 1, 0, 0, 0, 1,                  /* DATA, END_STREAM, stream 1 */
    '{', '}', '\n',
};
#define AGENT_SETTINGS_LEN 18

static void start_fake_tunnel(uv_loop_t *loop) {
  static const cr_tunnel_callbacks_t cbs = {NULL, NULL, NULL, fake_tunnel_closed};
  cr_tunnel_opts_t opts;
  memset(&opts, 0, sizeof opts);
  opts.role = CR_TUNNEL_GATEWAY;
  fake_tunnel_io = fuzz_mem_new(loop, agent_answer, sizeof agent_answer, 0, 1);
  fake_tunnel_io->hold_at = AGENT_SETTINGS_LEN;
  fake_tunnel_io->close_probe = fake_tunnel_io_gone;
  fake_tunnel = cr_tunnel_new(&fake_tunnel_io->s, &opts, &cbs, NULL);
  if (cr_tunnel_start(fake_tunnel) != 0)
    __builtin_trap();
}

/* ---- the agent's control endpoints, dispatched as agent.c does for a tunnel request ---- */

static void on_control_done(void *data, int status, const cr_buf_t *body) {
  cr_admin_req_t *req = data;
  if (status < 100 || status > 599)
    __builtin_trap();
  cr_admin_req_set_data(req, NULL);
  cr_admin_respond(req, status, "application/json", body && body->base ? body->base : "", body ? body->len : 0);
}

static void on_control_request(cr_admin_req_t *req, const cr_http_msg_t *head, const char *body, size_t len,
                               void *arg) {
  agent_t *a = arg;
  cr__agent_change_t *change;
  cr_buf_t out;
  int status = 500;
  const char *by;
  if (strncmp(head->target, CR_CONTROL_PREFIX, strlen(CR_CONTROL_PREFIX)) != 0) {
    cr_admin_respond(req, 404, "text/plain", "not a control path\n", 19);
    return;
  }
  by = cr_http_msg_get(head, "x-ccrelay-requested-by");
  cr_buf_init(&out, 0);
  /* A trust change answers later, from the thread pool's completion, as over a tunnel. */
  change = cr__agent_control(a, head->method, head->target, body, len, by ? by : "", &status, &out,
                             on_control_done, req);
  if (change != NULL) {
    cr_admin_req_set_data(req, change);
  } else {
    if (status < 100 || status > 599)
      __builtin_trap();
    cr_admin_respond(req, status, "application/json", out.base ? out.base : "", out.len);
  }
  cr_buf_free(&out);
}

static void on_control_abort(cr_admin_req_t *req, void *arg) {
  cr__agent_change_t *change = cr_admin_req_data(req);
  if (change != NULL)
    cr__agent_control_cancel(change);
}

/* ---- a bare agent and gateway configuration ---- */

static char store_dir[64];

static void remove_store(void) {
  DIR *d;
  struct dirent *e;
  char path[512];
  if (!store_dir[0] || (d = opendir(store_dir)) == NULL)
    return;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') {
      snprintf(path, sizeof path, "%s/%s", store_dir, e->d_name);
      unlink(path);
    }
  closedir(d);
  rmdir(store_dir);
}

static cr_conf_agent_t agent_conf;
static cr_conf_gateway_t gw_conf;
static cr_truststore_t *store;

static void setup_once(void) {
  char err[512];
  cr_log_setup(getenv("FUZZ_LOG") ? CR_LOG_DEBUG : CR_LOG_ERROR, CR_LOG_LOGFMT);
  if (cr_tls_global_init(err, sizeof err) != 0)
    abort();
  snprintf(store_dir, sizeof store_dir, "/tmp/ccrelay-fuzz-admin-XXXXXX");
  if (mkdtemp(store_dir) == NULL || chmod(store_dir, 0700) != 0) {
    perror("mkdtemp");
    abort();
  }
  atexit(remove_store);
  if (cr_truststore_open(store_dir, 0, &store, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz: %s\n", err);
    abort();
  }
  agent_conf.path = "fuzz-agent.yaml";
  agent_conf.trust_store = store_dir;
  agent_conf.admin_listen.host = "127.0.0.1";
  agent_conf.admin_listen.port = 0;
  agent_conf.gateway.connections = 2;
  gw_conf.path = "fuzz-gateway.yaml";
  gw_conf.admin_listen.host = "127.0.0.1";
  gw_conf.admin_listen.port = 0;
  gw_conf.admin_token = FUZZ_TOKEN;
}

static int conn_gone;

static void conn_closed_probe(cr_stream_t *s) { conn_gone = 1; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int once;
  static const cr_admin_callbacks_t control_cbs = {on_control_request, on_control_abort};
  agent_t *a;
  uv_loop_t *loop;
  cr__gw_admin_t *ga = NULL;
  cr_admin_t *admin = NULL;
  fuzz_mem_t *m;
  uint8_t mode;
  unsigned flags = 0;
  char err[512];

  if (!once) {
    once = 1;
    setup_once();
  }
  if (size < 1)
    return 0;
  mode = data[0];
  data++;
  size--;
  if (mode & 4)
    flags |= FUZZ_MEM_SPLIT;
  if (mode & 8)
    flags |= FUZZ_MEM_EOF;
  if (mode & 16)
    flags |= FUZZ_MEM_WRITE_FAIL;

  /* A bare agent: its status needs only the config and counters; its loop serves every mode. */
  a = calloc(1, sizeof *a);
  a->conf = a->boot = &agent_conf;
  a->tunnels_up = (mode & 32) ? 1 : 0;
  a->trust.store = store;
  /* Trust changes queue here; with no routes to reload, the trust module counts as stopped. */
  cr_queue_init(&a->trust.changes);
  a->trust.stopped = 1;
  agent_conf.remote_trust = (mode & 3) != 3;
  loop = &a->loop;
  if (uv_loop_init(loop) != 0)
    abort();

  switch (mode & 3) {
  case 0:
    if (cr__agent_admin_start(a) != 0)
      abort();
    admin = a->admin;
    break;
  case 1:
    start_fake_tunnel(loop);
    if (cr__gw_admin_start(NULL, loop, &gw_conf, &ga) != 0)
      abort();
    admin = cr__gw_admin_listener(ga);
    break;
  default:
    if (cr_admin_listen(loop, "127.0.0.1", 0, &control_cbs, a, &admin, err, sizeof err) != 0) {
      fprintf(stderr, "fuzz: %s\n", err);
      abort();
    }
    break;
  }

  m = fuzz_mem_new(loop, data, size, flags, 0x9e3779b9u ^ (uint32_t)size ^ mode);
  conn_gone = 0;
  m->close_probe = conn_closed_probe;
  cr_admin_accept(admin, &m->s);
  fuzz_run_until_quiet(loop, 4 * (int)size + 2000);

  /* Close everything; calls in flight are aborted, their tunnel streams reset. */
  if (ga)
    cr__gw_admin_stop(ga);
  else
    cr_admin_close(admin);
  if (fake_tunnel)
    cr_tunnel_close(fake_tunnel, CR_ECLOSED);
  fuzz_run_to_end(loop);
  if (!conn_gone || fake_tunnel != NULL)
    __builtin_trap();
  if (uv_loop_close(loop) != 0)
    __builtin_trap(); /* a handle, request or timer left behind */
  free(a);
  if (getenv("FUZZ_LOG"))
    cr_log_flush();
  return 0;
}

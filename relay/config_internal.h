/* SPDX-License-Identifier: Apache-2.0 */
/* Private to the configuration module: the positioned YAML tree and the typed readers that
 * config.c's role schemas are written with (config_read.c). Not a contract for anyone else. */
#ifndef CCRELAY_CONFIG_INTERNAL_H
#define CCRELAY_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "ccrelay/common.h"
#include "ccrelay/config.h"

/* A config file is a page of settings; a cap keeps a mistaken path (a log, a disk image) cheap. */
#define MAX_CONFIG_SIZE (1024 * 1024)
#define MAX_SECRET_SIZE 4096
/* The schema is five levels deep; anything much deeper is a mistake or an attack on the stack. */
#define MAX_DEPTH 32
#define PATH_LEN 256

#define ROOT_KEY "(root)"
#define SYNTAX_KEY "(syntax)"

#define MS_PER_S UINT64_C(1000)
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)
#define MS_PER_D (24 * MS_PER_H)

enum { N_SCALAR, N_MAP, N_SEQ };

typedef struct node {
  int kind;
  int plain; /* scalar written without quotes: only then do `true`, `8`, `~` have their YAML meaning */
  cr_conf_pos_t pos;
  char *str; /* scalar text, NUL-terminated (a quoted "\0" may put a NUL before len) */
  size_t len;
  struct node **items; /* map: key, value, key, value, ...; seq: the elements */
  size_t n;
  size_t cap;
} node_t;

typedef struct ctx {
  const char *file; /* as given, for messages */
  char *dir;        /* absolute directory of the config file; relative paths start here */
  char *err;
  size_t errlen;
  int failed;
} ctx_t;

/* Flags of the typed readers. */
enum { OPT = 0, REQ = 1, EMPTY_OK = 2 };

/* A quantity's default and bounds. */
typedef struct range {
  uint64_t def, min, max;
} range_t;

int cr__conf_fail(ctx_t *c, cr_conf_pos_t pos, const char *key, const char *fmt, ...) CR_PRINTF(4, 5);
void cr__conf_node_free(node_t *n);
const char *cr__conf_sanitize(const char *s, size_t len, char *buf, size_t buflen);
int cr__conf_build_tree(ctx_t *c, const char *data, size_t len, node_t **out);
const char *cr__conf_join(char *buf, const char *parent, const char *key);
const char *cr__conf_join_index(char *buf, const char *parent, size_t i);
const char *cr__conf_kind_name(const node_t *n);
const char *cr__conf_nearest(const char *word, const char *const *cands, size_t ncands);
int cr__conf_map_check(ctx_t *c, const node_t *m, const char *path, const char *const *keys, size_t nkeys);
const node_t *cr__conf_map_get(const node_t *m, const char *key);
int cr__conf_missing(ctx_t *c, const node_t *m, const char *path, const char *key);
int cr__conf_get_map(ctx_t *c, const node_t *m, const char *path, const char *key, int flags, const char *const *keys, size_t nkeys, const node_t **out);
int cr__conf_get_list(ctx_t *c, const node_t *m, const char *path, const char *key, int flags, const node_t **out);
int cr__conf_scalar_str(ctx_t *c, const node_t *v, const char *kp, int flags);
int cr__conf_get_str(ctx_t *c, const node_t *m, const char *path, const char *key, int flags, char **out, cr_conf_pos_t *pos);
int cr__conf_get_uint(ctx_t *c, const node_t *m, const char *path, const char *key, unsigned def, unsigned min, unsigned max, unsigned *out);
int cr__conf_get_bool(ctx_t *c, const node_t *m, const char *path, const char *key, int def, int *out);
int cr__conf_get_enum(ctx_t *c, const node_t *m, const char *path, const char *key, const char *const *names, size_t nnames, int def, int *out);
int cr__conf_get_duration(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r, uint64_t *out, cr_conf_pos_t *pos);
int cr__conf_get_size(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r, uint64_t *out);
int cr__conf_get_file(ctx_t *c, const node_t *m, const char *path, const char *key, int flags, cr_conf_file_t *out);
/* The same for a value node (a list element): kp is its dotted path. */
int cr__conf_file_value(ctx_t *c, const node_t *v, const char *kp, cr_conf_file_t *out);
int cr__conf_get_dir(ctx_t *c, const node_t *m, const char *path, const char *key, char **out, cr_conf_pos_t *pos);
int cr__conf_read_secret_file(ctx_t *c, const node_t *m, const char *path, const char *key, const char *what, char **out, cr_conf_pos_t *pos);
/* password_file: FILE | password_env: NAME of mapping m (at path) into *out; *out untouched when
 * neither is given. Both given is an error. */
int cr__conf_get_password(ctx_t *c, const node_t *m, const char *path, char **out);
int cr__conf_get_identity(ctx_t *c, const node_t *m, const char *path, const char *key, cr_conf_identity_t *id);
const char *cr__conf_split_hostport(const char *s, size_t len, int port_required, char **host, unsigned *port);
/* gateway.proxy (config_proxy.c): gw is the gateway mapping, gw_host the gateway's host. */
int cr__conf_get_proxy(ctx_t *c, const node_t *gw, const char *path, const char *gw_host, cr_conf_proxy_t *out);
void cr__conf_proxy_free(cr_conf_proxy_t *p);
int cr__conf_get_listen(ctx_t *c, const node_t *m, const char *path, const char *key, cr_conf_listen_t *out);
/* https://host[:port][/base], or http:// (then *plain is 1 and the port defaults to 80). */
const char *cr__conf_parse_url(const char *s, size_t len, char **host, unsigned *port, char **base, int *plain);
int cr__conf_get_name(ctx_t *c, const node_t *m, const char *path, char **out, cr_conf_pos_t *pos);
int cr__conf_get_host(ctx_t *c, const node_t *m, const char *path, const char *key, int flags, char **out);
int cr__conf_get_prefix(ctx_t *c, const node_t *m, const char *path, const char *key, char **out);
int cr__conf_is_token_char(int ch);
int cr__conf_load_log(ctx_t *c, const node_t *root, cr_conf_log_t *log);
int cr__conf_ctx_open(ctx_t *c, const char *name, char *err, size_t errlen);
int cr__conf_read_config(ctx_t *c, const char *path, char **data, size_t *len);
int cr__conf_root_check(ctx_t *c, const node_t *root, const char *const *keys, size_t nkeys, const char *const *foreign, size_t nforeign, const char *role);

#endif

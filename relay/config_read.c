/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration reading: libyaml's event parser feeds a small tree of our own (so we see every
 * node's position, can refuse anchors, aliases and tags at the exact spot, and bound nesting), and
 * typed readers walk it with `file:line:col: key: reason` errors. config.c writes each role's schema
 * with them. The only side effects are reading the config, password and token files, and
 * stat()/access() on the files and directories named. */
#include "ccrelay/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "ccrelay/alloc.h"
#include "ccrelay/common.h"
#include "ccrelay/error.h"
#include "ccrelay/fileio.h"
#include "config_internal.h"

/* ---------------------------------------------------------------- tree */


int cr__conf_fail(ctx_t *c, cr_conf_pos_t pos, const char *key, const char *fmt, ...) CR_PRINTF(4, 5);

/* Only the first error is kept: it is the one the user fixes first, and the rest may be fallout. */
int cr__conf_fail(ctx_t *c, cr_conf_pos_t pos, const char *key, const char *fmt, ...) {
  va_list ap;
  int n;

  if (c->failed)
    return CR_ECONFIG;
  c->failed = 1;
  if (c->err == NULL || c->errlen == 0)
    return CR_ECONFIG;
  n = snprintf(c->err, c->errlen, "%s:%d:%d: %s: ", c->file, pos.line > 0 ? pos.line : 1,
               pos.col > 0 ? pos.col : 1, key);
  if (n >= 0 && (size_t)n < c->errlen) {
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
    va_end(ap);
  }
  return CR_ECONFIG;
}

void cr__conf_node_free(node_t *n) {
  size_t i;

  if (n == NULL)
    return;
  for (i = 0; i < n->n; i++)
    cr__conf_node_free(n->items[i]);
  free(n->items);
  free(n->str);
  free(n);
}

static void node_push(node_t *parent, node_t *child) {
  if (parent->n == parent->cap) {
    parent->cap = parent->cap ? parent->cap * 2 : 8;
    parent->items = cr_realloc(parent->items, parent->cap * sizeof(*parent->items));
  }
  parent->items[parent->n++] = child;
}

static cr_conf_pos_t mark_pos(yaml_mark_t m) {
  cr_conf_pos_t p = {(int)m.line + 1, (int)m.column + 1};
  return p;
}

/* Renders user text for a message: control and non-ASCII bytes escaped, long text cut. Never
 * called on secrets. */
const char *cr__conf_sanitize(const char *s, size_t len, char *buf, size_t buflen) {
  size_t o = 0, i;

  for (i = 0; i < len && o + 8 < buflen; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch < 0x7f && ch != '\\' && ch != '\'')
      buf[o++] = (char)ch;
    else
      o += (size_t)snprintf(buf + o, buflen - o, "\\x%02x", ch);
  }
  if (i < len && o + 4 <= buflen) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  buf[o] = '\0';
  return buf;
}

/* The dotted path of the node about to be added, from the stack of open containers. */
static void stack_path(node_t **stack, size_t depth, char *buf, size_t buflen) {
  size_t i, o = 0;
  char tmp[80];

  buf[0] = '\0';
  for (i = 0; i < depth && o < buflen; i++) {
    const node_t *p = stack[i];
    int innermost = i + 1 == depth;
    if (p->kind == N_SEQ) {
      size_t idx = innermost ? p->n : p->n - 1;
      o += (size_t)snprintf(buf + o, buflen - o, "[%zu]", idx);
    } else {
      /* Inside a map the open child is the last value, its key just before; the innermost map
       * is either awaiting a key (the path is the map's own) or a value (its key is last). */
      const node_t *key = NULL;
      if (!innermost && p->n >= 2)
        key = p->items[p->n - 2];
      else if (innermost && p->n % 2 == 1)
        key = p->items[p->n - 1];
      if (key != NULL)
        o += (size_t)snprintf(buf + o, buflen - o, "%s%s", o ? "." : "",
                              cr__conf_sanitize(key->str, key->len, tmp, sizeof(tmp)));
    }
  }
  if (buf[0] == '\0')
    snprintf(buf, buflen, "%s", ROOT_KEY);
}

static cr_conf_pos_t offset_pos(const char *data, size_t len, size_t off) {
  cr_conf_pos_t p = {1, 1};
  size_t i;

  for (i = 0; i < off && i < len; i++) {
    if (data[i] == '\n') {
      p.line++;
      p.col = 1;
    } else {
      p.col++;
    }
  }
  return p;
}

static int syntax_error(ctx_t *c, const yaml_parser_t *p, const char *data, size_t len) {
  const char *problem = p->problem ? p->problem : "malformed YAML";

  switch (p->error) {
  case YAML_MEMORY_ERROR:
    return cr__conf_fail(c, offset_pos(data, len, 0), SYNTAX_KEY, "out of memory while parsing");
  case YAML_READER_ERROR:
    /* The reader reports a byte offset, not a mark. */
    return cr__conf_fail(c, offset_pos(data, len, p->problem_offset), SYNTAX_KEY,
                "%s (byte offset %zu); the file must be UTF-8 text", problem, p->problem_offset);
  default:
    if (p->context != NULL)
      return cr__conf_fail(c, mark_pos(p->problem_mark), SYNTAX_KEY, "%s (%s at %d:%d)", problem, p->context,
                  (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return cr__conf_fail(c, mark_pos(p->problem_mark), SYNTAX_KEY, "%s", problem);
  }
}

/* Refuses YAML features a config does not need and that make positions and sizes lie. */
static int refuse_extras(ctx_t *c, yaml_char_t *anchor, yaml_char_t *tag, cr_conf_pos_t pos,
                         node_t **stack, size_t depth) {
  char path[PATH_LEN], tmp[80];

  if (anchor == NULL && tag == NULL)
    return 0;
  stack_path(stack, depth, path, sizeof(path));
  if (anchor != NULL)
    return cr__conf_fail(c, pos, path, "anchors (&%s) are not supported; write the value out",
                cr__conf_sanitize((const char *)anchor, strlen((const char *)anchor), tmp, sizeof(tmp)));
  return cr__conf_fail(c, pos, path, "tags (%s) are not supported; write the plain value",
              cr__conf_sanitize((const char *)tag, strlen((const char *)tag), tmp, sizeof(tmp)));
}

static int attach(ctx_t *c, node_t **stack, size_t depth, node_t **root, node_t *nn) {
  node_t *parent;
  char path[PATH_LEN];

  if (depth == 0) {
    *root = nn;
    return 0;
  }
  parent = stack[depth - 1];
  if (parent->kind == N_MAP && parent->n % 2 == 0 && nn->kind != N_SCALAR) {
    cr_conf_pos_t pos = nn->pos;
    stack_path(stack, depth, path, sizeof(path));
    cr__conf_node_free(nn);
    return cr__conf_fail(c, pos, path, "keys must be plain strings");
  }
  node_push(parent, nn);
  return 0;
}

static node_t *node_new(int kind, cr_conf_pos_t pos) {
  node_t *n = cr_calloc(1, sizeof(*n));
  n->kind = kind;
  n->pos = pos;
  return n;
}

int cr__conf_build_tree(ctx_t *c, const char *data, size_t len, node_t **out) {
  yaml_parser_t p;
  yaml_event_t ev;
  node_t *stack[MAX_DEPTH];
  size_t depth = 0;
  node_t *root = NULL;
  int ndocs = 0, done = 0, rc = 0;
  char path[PATH_LEN];

  *out = NULL;
  if (!yaml_parser_initialize(&p))
    return cr__conf_fail(c, offset_pos(data, len, 0), SYNTAX_KEY, "out of memory");
  yaml_parser_set_input_string(&p, (const unsigned char *)data, len);
  while (!done && rc == 0) {
    cr_conf_pos_t pos;
    node_t *nn = NULL;

    if (!yaml_parser_parse(&p, &ev)) {
      rc = syntax_error(c, &p, data, len);
      break;
    }
    pos = mark_pos(ev.start_mark);
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = 1;
      break;
    case YAML_DOCUMENT_START_EVENT:
      if (++ndocs > 1)
        rc = cr__conf_fail(c, pos, ROOT_KEY, "only one YAML document is allowed per file");
      break;
    case YAML_ALIAS_EVENT:
      stack_path(stack, depth, path, sizeof(path));
      rc = cr__conf_fail(c, pos, path, "aliases are not supported; write the value out");
      break;
    case YAML_SCALAR_EVENT:
      rc = refuse_extras(c, ev.data.scalar.anchor, ev.data.scalar.tag, pos, stack, depth);
      if (rc == 0) {
        nn = node_new(N_SCALAR, pos);
        nn->str = cr_strndup((const char *)ev.data.scalar.value, ev.data.scalar.length);
        nn->len = ev.data.scalar.length;
        nn->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
        rc = attach(c, stack, depth, &root, nn);
      }
      break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
      int is_map = ev.type == YAML_MAPPING_START_EVENT;
      rc = is_map ? refuse_extras(c, ev.data.mapping_start.anchor, ev.data.mapping_start.tag, pos,
                                  stack, depth)
                  : refuse_extras(c, ev.data.sequence_start.anchor, ev.data.sequence_start.tag, pos,
                                  stack, depth);
      if (rc == 0 && depth == MAX_DEPTH) {
        stack_path(stack, depth, path, sizeof(path));
        rc = cr__conf_fail(c, pos, path, "nested deeper than %d levels", MAX_DEPTH);
      }
      if (rc == 0) {
        nn = node_new(is_map ? N_MAP : N_SEQ, pos);
        rc = attach(c, stack, depth, &root, nn);
        if (rc == 0)
          stack[depth++] = nn;
      }
      break;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
      if (depth > 0)
        depth--;
      break;
    default:
      break;
    }
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  if (rc != 0) {
    cr__conf_node_free(root);
    return rc;
  }
  if (root == NULL) {
    cr_conf_pos_t one = {1, 1};
    return cr__conf_fail(c, one, ROOT_KEY, "the file is empty; expected a mapping of settings");
  }
  *out = root;
  return 0;
}

/* ---------------------------------------------------------------- files */

/* The config's directory made absolute, so resolved paths read the same whatever the cwd is later. */
static char *config_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir, *real, cwd[PATH_MAX];
  size_t need;
  char *out;

  if (slash == NULL)
    dir = cr_strdup(".");
  else
    dir = cr_strndup(path, slash == path ? 1 : (size_t)(slash - path));
  real = realpath(dir, NULL);
  if (real != NULL) {
    out = cr_strdup(real);
    free(real);
    free(dir);
    return out;
  }
  if (dir[0] == '/' || getcwd(cwd, sizeof(cwd)) == NULL)
    return dir;
  if (strcmp(dir, ".") == 0) {
    free(dir);
    return cr_strdup(cwd);
  }
  need = strlen(cwd) + 1 + strlen(dir) + 1;
  out = cr_malloc(need);
  snprintf(out, need, "%s/%s", cwd, strncmp(dir, "./", 2) == 0 ? dir + 2 : dir);
  free(dir);
  return out;
}

static char *resolve(const ctx_t *c, const char *p) {
  size_t need;
  char *out;
  int root_dir;

  if (p[0] == '/')
    return cr_strdup(p);
  while (p[0] == '.' && p[1] == '/') {
    p += 2;
    while (*p == '/')
      p++;
  }
  root_dir = strcmp(c->dir, "/") == 0;
  need = strlen(c->dir) + 1 + strlen(p) + 1;
  out = cr_malloc(need);
  snprintf(out, need, "%s%s%s", c->dir, root_dir ? "" : "/", p);
  return out;
}

/* ---------------------------------------------------------------- schema helpers */

/* Dotted paths are built by hand rather than snprintf: they are bounded by the schema's depth,
 * and a cut path in a message is harmless, which the compiler cannot know. */
static void path_put(char *buf, size_t *o, const char *s) {
  size_t n = strlen(s);
  if (n > PATH_LEN - 1 - *o)
    n = PATH_LEN - 1 - *o;
  memmove(buf + *o, s, n);
  *o += n;
  buf[*o] = '\0';
}

const char *cr__conf_join(char *buf, const char *parent, const char *key) {
  size_t o = 0;
  if (buf != parent)
    path_put(buf, &o, parent);
  else
    o = strlen(buf);
  if (o > 0)
    path_put(buf, &o, ".");
  path_put(buf, &o, key);
  return buf;
}

const char *cr__conf_join_index(char *buf, const char *parent, size_t i) {
  char num[24];
  size_t o = 0, n = sizeof(num) - 1;

  num[n] = '\0';
  do {
    num[--n] = (char)('0' + i % 10);
    i /= 10;
  } while (i > 0 && n > 1);
  num[--n] = '[';
  if (buf != parent)
    path_put(buf, &o, parent);
  else
    o = strlen(buf);
  path_put(buf, &o, num + n);
  path_put(buf, &o, "]");
  return buf;
}

static int is_null(const node_t *n) {
  return n->kind == N_SCALAR && n->plain &&
         (n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
          strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0);
}

const char *cr__conf_kind_name(const node_t *n) {
  if (n->kind == N_MAP)
    return "a mapping";
  if (n->kind == N_SEQ)
    return "a list";
  if (is_null(n))
    return "an empty value";
  return n->plain ? "a plain scalar" : "a quoted string";
}

/* Optimal string alignment distance, case-insensitive: a swapped pair of letters counts once. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), i, j;
  size_t d[65][65];

  if (la > 64 || lb > 64)
    return SIZE_MAX;
  for (i = 0; i <= la; i++)
    d[i][0] = i;
  for (j = 0; j <= lb; j++)
    d[0][j] = j;
  for (i = 1; i <= la; i++) {
    for (j = 1; j <= lb; j++) {
      int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
      size_t best = d[i - 1][j - 1] + (same ? 0 : 1);
      best = CR_MIN(best, d[i - 1][j] + 1);
      best = CR_MIN(best, d[i][j - 1] + 1);
      if (i > 1 && j > 1 && tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 2]) &&
          tolower((unsigned char)a[i - 2]) == tolower((unsigned char)b[j - 1]))
        best = CR_MIN(best, d[i - 2][j - 2] + 1);
      d[i][j] = best;
    }
  }
  return d[la][lb];
}

const char *cr__conf_nearest(const char *word, const char *const *cands, size_t ncands) {
  const char *best = NULL;
  size_t bestd = SIZE_MAX, i;

  for (i = 0; i < ncands; i++) {
    size_t d = edit_distance(word, cands[i]);
    size_t longest = CR_MAX(strlen(word), strlen(cands[i]));
    if (d < bestd && d * 3 <= longest + 1) {
      best = cands[i];
      bestd = d;
    }
  }
  return best;
}

static int has_nul(const node_t *n) { return strlen(n->str) != n->len; }

/* Checks that m is a mapping of known, distinct, plain-string keys. */
int cr__conf_map_check(ctx_t *c, const node_t *m, const char *path, const char *const *keys,
                     size_t nkeys) {
  unsigned char seen[32] = {0};
  cr_conf_pos_t seen_pos[32];
  char kp[PATH_LEN], tmp[80];
  size_t i, k;

  if (m->kind != N_MAP)
    return cr__conf_fail(c, m->pos, path[0] ? path : ROOT_KEY, "expected a mapping, got %s", cr__conf_kind_name(m));
  for (i = 0; i + 1 < m->n; i += 2) {
    const node_t *key = m->items[i];
    for (k = 0; k < nkeys; k++)
      if (!has_nul(key) && strcmp(key->str, keys[k]) == 0)
        break;
    if (k == nkeys) {
      const char *near = has_nul(key) ? NULL : cr__conf_nearest(key->str, keys, nkeys);
      cr__conf_join(kp, path, cr__conf_sanitize(key->str, key->len, tmp, sizeof(tmp)));
      if (near != NULL)
        return cr__conf_fail(c, key->pos, kp, "unknown key (did you mean '%s'?)", near);
      return cr__conf_fail(c, key->pos, kp, "unknown key");
    }
    if (seen[k])
      return cr__conf_fail(c, key->pos, cr__conf_join(kp, path, keys[k]), "duplicate key (first at %d:%d)",
                  seen_pos[k].line, seen_pos[k].col);
    seen[k] = 1;
    seen_pos[k] = key->pos;
  }
  return 0;
}

const node_t *cr__conf_map_get(const node_t *m, const char *key) {
  size_t i;

  if (m == NULL || m->kind != N_MAP)
    return NULL;
  for (i = 0; i + 1 < m->n; i += 2)
    if (!has_nul(m->items[i]) && strcmp(m->items[i]->str, key) == 0)
      return m->items[i + 1];
  return NULL;
}

int cr__conf_missing(ctx_t *c, const node_t *m, const char *path, const char *key) {
  char kp[PATH_LEN];
  return cr__conf_fail(c, m->pos, cr__conf_join(kp, path, key), "missing required key");
}


/* A mapping value. Optional mappings that are empty (every line commented out) count as absent. */
int cr__conf_get_map(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                   const char *const *keys, size_t nkeys, const node_t **out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];

  *out = NULL;
  if (v == NULL || (!(flags & REQ) && is_null(v))) {
    if (flags & REQ)
      return cr__conf_missing(c, m, path, key);
    return 0;
  }
  if (cr__conf_map_check(c, v, cr__conf_join(kp, path, key), keys, nkeys) != 0)
    return CR_ECONFIG;
  *out = v;
  return 0;
}

int cr__conf_get_list(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    const node_t **out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];

  *out = NULL;
  if (v == NULL)
    return (flags & REQ) ? cr__conf_missing(c, m, path, key) : 0;
  cr__conf_join(kp, path, key);
  if (v->kind != N_SEQ)
    return cr__conf_fail(c, v->pos, kp, "expected a list, got %s", cr__conf_kind_name(v));
  if (v->n == 0 && !(flags & EMPTY_OK))
    return cr__conf_fail(c, v->pos, kp, "must not be empty");
  *out = v;
  return 0;
}

int cr__conf_scalar_str(ctx_t *c, const node_t *v, const char *kp, int flags) {
  if (v->kind != N_SCALAR || is_null(v))
    return cr__conf_fail(c, v->pos, kp, "expected a string, got %s", cr__conf_kind_name(v));
  if (has_nul(v))
    return cr__conf_fail(c, v->pos, kp, "must not contain a NUL byte");
  if (v->len == 0 && !(flags & EMPTY_OK))
    return cr__conf_fail(c, v->pos, kp, "must not be empty");
  return 0;
}

int cr__conf_get_str(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                   char **out, cr_conf_pos_t *pos) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];

  if (v == NULL)
    return (flags & REQ) ? cr__conf_missing(c, m, path, key) : 0;
  if (cr__conf_scalar_str(c, v, cr__conf_join(kp, path, key), flags) != 0)
    return CR_ECONFIG;
  free(*out);
  *out = cr_strdup(v->str);
  if (pos != NULL)
    *pos = v->pos;
  return 0;
}

int cr__conf_get_uint(ctx_t *c, const node_t *m, const char *path, const char *key, unsigned def,
                    unsigned min, unsigned max, unsigned *out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN], tmp[80];
  uint64_t x = 0;
  size_t i;

  *out = def;
  if (v == NULL)
    return 0;
  cr__conf_join(kp, path, key);
  if (v->kind != N_SCALAR || !v->plain || v->len == 0 || is_null(v))
    return cr__conf_fail(c, v->pos, kp, "expected a number, got %s", cr__conf_kind_name(v));
  for (i = 0; i < v->len; i++) {
    if (!isdigit((unsigned char)v->str[i]))
      return cr__conf_fail(c, v->pos, kp, "expected a number, got '%s'",
                  cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)));
    if (x <= UINT32_MAX)
      x = x * 10 + (uint64_t)(v->str[i] - '0');
  }
  if (x < min || x > max)
    return cr__conf_fail(c, v->pos, kp, "value out of range: %s is not between %u and %u",
                cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)), min, max);
  *out = (unsigned)x;
  return 0;
}

int cr__conf_get_bool(ctx_t *c, const node_t *m, const char *path, const char *key, int def,
                    int *out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];

  *out = def;
  if (v == NULL)
    return 0;
  if (v->kind == N_SCALAR && v->plain) {
    if (!strcmp(v->str, "true") || !strcmp(v->str, "True") || !strcmp(v->str, "TRUE")) {
      *out = 1;
      return 0;
    }
    if (!strcmp(v->str, "false") || !strcmp(v->str, "False") || !strcmp(v->str, "FALSE")) {
      *out = 0;
      return 0;
    }
  }
  return cr__conf_fail(c, v->pos, cr__conf_join(kp, path, key), "expected a boolean (true or false), got %s",
              cr__conf_kind_name(v));
}

int cr__conf_get_enum(ctx_t *c, const node_t *m, const char *path, const char *key,
                    const char *const *names, size_t nnames, int def, int *out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN], list[128], tmp[80];
  size_t i, o = 0;

  *out = def;
  if (v == NULL)
    return 0;
  cr__conf_join(kp, path, key);
  if (v->kind != N_SCALAR || is_null(v))
    return cr__conf_fail(c, v->pos, kp, "expected a string, got %s", cr__conf_kind_name(v));
  for (i = 0; i < nnames; i++) {
    if (!has_nul(v) && strcmp(v->str, names[i]) == 0) {
      *out = (int)i;
      return 0;
    }
    o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);
  }
  return cr__conf_fail(c, v->pos, kp, "'%s' is not one of: %s", cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)),
              list);
}

/* ---------------------------------------------------------------- durations and sizes */

static const char *digits_then_unit(const char *s, uint64_t *value, const char **unit) {
  uint64_t x = 0;
  const char *p = s;

  if (!isdigit((unsigned char)*p))
    return "must start with a number";
  while (isdigit((unsigned char)*p)) {
    uint64_t d = (uint64_t)(*p - '0');
    if (x > (UINT64_MAX - d) / 10)
      return "out of range";
    x = x * 10 + d;
    p++;
  }
  *value = x;
  *unit = p;
  return NULL;
}

/* NULL, or why s is not a duration. */
static const char *duration_reason(const char *s, uint64_t *ms) {
  static const struct {
    const char *name;
    uint64_t mult;
  } units[] = {{"ms", 1}, {"s", MS_PER_S}, {"m", MS_PER_M}, {"h", MS_PER_H}, {"d", MS_PER_D}};
  uint64_t x;
  const char *unit, *why;
  size_t i;

  if ((why = digits_then_unit(s, &x, &unit)) != NULL)
    return why;
  if (*unit == '\0')
    return "missing unit (ms, s, m, h or d)";
  for (i = 0; i < CR_ARRAY_SIZE(units); i++) {
    if (strcmp(unit, units[i].name) == 0) {
      if (x > UINT64_MAX / units[i].mult)
        return "out of range";
      *ms = x * units[i].mult;
      return NULL;
    }
  }
  return "unknown unit (use ms, s, m, h or d)";
}

/* NULL, or why s is not a size. */
static const char *size_reason(const char *s, uint64_t *bytes) {
  static const struct {
    const char *name;
    uint64_t mult;
  } units[] = {{"", 1}, {"B", 1}, {"KiB", 1024}, {"MiB", 1024 * 1024},
               {"GiB", UINT64_C(1024) * 1024 * 1024}};
  uint64_t x;
  const char *unit, *why;
  size_t i;

  if ((why = digits_then_unit(s, &x, &unit)) != NULL)
    return why;
  for (i = 0; i < CR_ARRAY_SIZE(units); i++) {
    if (strcmp(unit, units[i].name) == 0) {
      if (x > UINT64_MAX / units[i].mult)
        return "out of range";
      *bytes = x * units[i].mult;
      return NULL;
    }
  }
  return "unknown unit (use bytes, B, KiB, MiB or GiB)";
}

int cr_conf_parse_duration(const char *s, uint64_t *ms) {
  uint64_t v;
  if (s == NULL || duration_reason(s, &v) != NULL)
    return CR_ECONFIG;
  *ms = v;
  return 0;
}

int cr_conf_parse_size(const char *s, uint64_t *bytes) {
  uint64_t v;
  if (s == NULL || size_reason(s, &v) != NULL)
    return CR_ECONFIG;
  *bytes = v;
  return 0;
}

static const char *fmt_duration(uint64_t ms, char *buf, size_t len) {
  /* A day is named only past one: "between 1ms and 24h" reads better than "and 1d". */
  if (ms > MS_PER_D && ms % MS_PER_D == 0)
    snprintf(buf, len, "%" PRIu64 "d", ms / MS_PER_D);
  else if (ms != 0 && ms % MS_PER_H == 0)
    snprintf(buf, len, "%" PRIu64 "h", ms / MS_PER_H);
  else if (ms != 0 && ms % MS_PER_M == 0)
    snprintf(buf, len, "%" PRIu64 "m", ms / MS_PER_M);
  else if (ms != 0 && ms % MS_PER_S == 0)
    snprintf(buf, len, "%" PRIu64 "s", ms / MS_PER_S);
  else
    snprintf(buf, len, "%" PRIu64 "ms", ms);
  return buf;
}

static const char *fmt_size(uint64_t b, char *buf, size_t len) {
  if (b != 0 && b % (1024 * 1024) == 0)
    snprintf(buf, len, "%" PRIu64 "MiB", b / (1024 * 1024));
  else if (b != 0 && b % 1024 == 0)
    snprintf(buf, len, "%" PRIu64 "KiB", b / 1024);
  else
    snprintf(buf, len, "%" PRIu64, b);
  return buf;
}


static int get_quantity(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                        int is_size, uint64_t *out, cr_conf_pos_t *pos) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN], tmp[80], lo[32], hi[32];
  const char *what = is_size ? "size" : "duration";
  const char *why;
  uint64_t x = 0;

  *out = r.def;
  if (v == NULL)
    return 0;
  cr__conf_join(kp, path, key);
  if (v->kind != N_SCALAR || is_null(v))
    return cr__conf_fail(c, v->pos, kp, "expected a %s, got %s", what, cr__conf_kind_name(v));
  why = has_nul(v) ? "contains a NUL byte"
                   : is_size ? size_reason(v->str, &x) : duration_reason(v->str, &x);
  if (why != NULL)
    return cr__conf_fail(c, v->pos, kp, "bad %s '%s': %s", what, cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)),
                why);
  if (x < r.min || x > r.max) {
    if (is_size)
      return cr__conf_fail(c, v->pos, kp, "value out of range: %s is not between %s and %s", v->str,
                  fmt_size(r.min, lo, sizeof(lo)), fmt_size(r.max, hi, sizeof(hi)));
    return cr__conf_fail(c, v->pos, kp, "value out of range: %s is not between %s and %s", v->str,
                fmt_duration(r.min, lo, sizeof(lo)), fmt_duration(r.max, hi, sizeof(hi)));
  }
  *out = x;
  if (pos != NULL)
    *pos = v->pos;
  return 0;
}

int cr__conf_get_duration(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                        uint64_t *out, cr_conf_pos_t *pos) {
  return get_quantity(c, m, path, key, r, 0, out, pos);
}

int cr__conf_get_size(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                    uint64_t *out) {
  return get_quantity(c, m, path, key, r, 1, out, NULL);
}

/* ---------------------------------------------------------------- composite values */

/* The path of scalar v resolved against the config's directory, checked to exist (*st filled).
 * kind ("file", "directory") words the message when it does not. NULL after reporting the failure. */
static char *named_path(ctx_t *c, const node_t *v, const char *kp, const char *kind, struct stat *st) {
  char *abs;
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return NULL;
  abs = resolve(c, v->str);
  if (stat(abs, st) != 0) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      cr__conf_fail(c, v->pos, kp, "no such %s: %s", kind, abs);
    else
      cr__conf_fail(c, v->pos, kp, "cannot access %s: %s", abs, strerror(e));
    free(abs);
    return NULL;
  }
  return abs;
}

int cr__conf_get_file(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    cr_conf_file_t *out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];

  if (v == NULL)
    return (flags & REQ) ? cr__conf_missing(c, m, path, key) : 0;
  return cr__conf_file_value(c, v, cr__conf_join(kp, path, key), out);
}

int cr__conf_file_value(ctx_t *c, const node_t *v, const char *kp, cr_conf_file_t *out) {
  struct stat st;
  char *abs;

  if ((abs = named_path(c, v, kp, "file", &st)) == NULL)
    return CR_ECONFIG;
  if (S_ISDIR(st.st_mode)) {
    cr__conf_fail(c, v->pos, kp, "%s is a directory, expected a file", abs);
    free(abs);
    return CR_ECONFIG;
  }
  /* A FIFO would block the first read forever; a device or socket is never what was meant. */
  if (!S_ISREG(st.st_mode)) {
    cr__conf_fail(c, v->pos, kp, "%s is %s, not a regular file", abs, cr_fileio_kind((unsigned)st.st_mode));
    free(abs);
    return CR_ECONFIG;
  }
  if (access(abs, R_OK) != 0) {
    cr__conf_fail(c, v->pos, kp, "cannot read %s: %s", abs, strerror(errno));
    free(abs);
    return CR_ECONFIG;
  }
  free(out->path);
  out->path = abs;
  out->pos = v->pos;
  return 0;
}

/* A directory named by the config, resolved and checked to exist; out stays as it was when the key
 * is absent, so the caller's default survives. */
int cr__conf_get_dir(ctx_t *c, const node_t *m, const char *path, const char *key, char **out,
                   cr_conf_pos_t *pos) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN];
  struct stat st;
  char *abs;
  size_t n;

  if (v == NULL)
    return 0;
  cr__conf_join(kp, path, key);
  if ((abs = named_path(c, v, kp, "directory", &st)) == NULL)
    return CR_ECONFIG;
  if (!S_ISDIR(st.st_mode)) {
    cr__conf_fail(c, v->pos, kp, "%s is not a directory", abs);
    free(abs);
    return CR_ECONFIG;
  }
  /* Callers join names onto it: a trailing slash kept would print as "dir//name". */
  for (n = strlen(abs); n > 1 && abs[n - 1] == '/'; n--)
    abs[n - 1] = '\0';
  free(*out);
  *out = abs;
  *pos = v->pos;
  return 0;
}

static int valid_env_name(const char *s) {
  if (!isalpha((unsigned char)*s) && *s != '_')
    return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_')
      return 0;
  return 1;
}

static const char *const identity_keys[] = {"pkcs12", "password_file", "password_env", "cert", "key"};

/* Reads the secret in the file m[key] names into *out; what ("password", "token") names it in
 * messages, which never show the secret itself. */
int cr__conf_read_secret_file(ctx_t *c, const node_t *m, const char *path, const char *key,
                            const char *what, char **out, cr_conf_pos_t *pos) {
  cr_conf_file_t f = {0};
  char kp[PATH_LEN];
  char *data = NULL, why[PATH_MAX + 64];
  size_t len = 0;
  int rc;

  if (cr__conf_get_file(c, m, path, key, REQ, &f) != 0)
    return CR_ECONFIG;
  cr__conf_join(kp, path, key);
  rc = cr_fileio_read(f.path, MAX_SECRET_SIZE, &data, &len, why, sizeof why);
  if (rc != 0) {
    if (rc == CR_ELIMIT)
      cr__conf_fail(c, f.pos, kp, "%s is larger than %d bytes; is it really a %s file?", f.path,
           MAX_SECRET_SIZE, what);
    else if (rc == CR_ENOT_REGULAR)
      cr__conf_fail(c, f.pos, kp, "%s", why);
    else
      cr__conf_fail(c, f.pos, kp, "cannot read %s: %s", f.path, why);
    free(f.path);
    return CR_ECONFIG;
  }
  if (memchr(data, '\0', len) != NULL) {
    cr__conf_fail(c, f.pos, kp, "%s contains a NUL byte; a %s is text", f.path, what);
    cr_wipe(data, len);
    free(data);
    free(f.path);
    return CR_ECONFIG;
  }
  /* Editors and `echo` end the file with a newline that is not part of the secret. */
  if (len > 0 && data[len - 1] == '\n') {
    data[--len] = '\0';
    if (len > 0 && data[len - 1] == '\r')
      data[--len] = '\0';
  }
  *out = cr_strndup(data, len);
  if (pos != NULL)
    *pos = f.pos;
  cr_wipe(data, len);
  free(data);
  free(f.path);
  return 0;
}

int cr__conf_get_identity(ctx_t *c, const node_t *m, const char *path, const char *key,
                        cr_conf_identity_t *id) {
  const node_t *v, *pf, *pe;
  char ip[PATH_LEN], kp[PATH_LEN];

  if (cr__conf_get_map(c, m, path, key, REQ, identity_keys, CR_ARRAY_SIZE(identity_keys), &v) != 0)
    return CR_ECONFIG;
  cr__conf_join(ip, path, key);
  id->pos = v->pos;
  pf = cr__conf_map_get(v, "password_file");
  pe = cr__conf_map_get(v, "password_env");
  if (cr__conf_map_get(v, "pkcs12") != NULL) {
    if (cr__conf_map_get(v, "cert") != NULL || cr__conf_map_get(v, "key") != NULL)
      return cr__conf_fail(c, v->pos, ip, "give either pkcs12 or cert and key, not both");
    if (cr__conf_get_file(c, v, ip, "pkcs12", REQ, &id->pkcs12) != 0)
      return CR_ECONFIG;
  } else {
    if (cr__conf_map_get(v, "cert") == NULL && cr__conf_map_get(v, "key") == NULL)
      return cr__conf_fail(c, v->pos, ip, "needs pkcs12, or cert and key");
    if (cr__conf_get_file(c, v, ip, "cert", REQ, &id->cert) != 0 ||
        cr__conf_get_file(c, v, ip, "key", REQ, &id->key) != 0)
      return CR_ECONFIG;
    if (pf != NULL || pe != NULL)
      return cr__conf_fail(c, (pf ? pf : pe)->pos, cr__conf_join(kp, ip, pf ? "password_file" : "password_env"),
                  "only a pkcs12 identity takes a password (a PEM key must be unencrypted)");
  }
  return cr__conf_get_password(c, v, ip, &id->password);
}

int cr__conf_get_password(ctx_t *c, const node_t *m, const char *path, char **out) {
  const node_t *pf = cr__conf_map_get(m, "password_file"), *pe = cr__conf_map_get(m, "password_env");
  char kp[PATH_LEN];
  const char *val;

  if (pf != NULL && pe != NULL)
    return cr__conf_fail(c, pe->pos, cr__conf_join(kp, path, "password_env"),
                "give password_file or password_env, not both");
  if (pf != NULL)
    return cr__conf_read_secret_file(c, m, path, "password_file", "password", out, NULL);
  if (pe == NULL)
    return 0;
  cr__conf_join(kp, path, "password_env");
  if (cr__conf_scalar_str(c, pe, kp, REQ) != 0)
    return CR_ECONFIG;
  /* The value is echoed only when it looks like a name: a pasted password must not be. */
  if (!valid_env_name(pe->str))
    return cr__conf_fail(c, pe->pos, kp, "not a valid environment variable name");
  val = getenv(pe->str);
  if (val == NULL)
    return cr__conf_fail(c, pe->pos, kp, "environment variable %s is not set", pe->str);
  *out = cr_strdup(val);
  return 0;
}

static int is_host_char(int ch) {
  return isalnum(ch) || ch == '-' || ch == '.' || ch == '_';
}

/* Splits "host:port" / "[v6]:port". NULL, or the reason it is malformed. */
const char *cr__conf_split_hostport(const char *s, size_t len, int port_required, char **host,
                                  unsigned *port) {
  const char *h, *after, *end = s + len;
  size_t hlen, i;
  unsigned long pv = 0;

  *host = NULL;
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    char v6[64];
    unsigned char bin[16];
    if (close == NULL)
      return "missing ']' after an IPv6 address";
    h = s + 1;
    hlen = (size_t)(close - h);
    if (hlen == 0 || hlen >= sizeof(v6))
      return "bad IPv6 address";
    memcpy(v6, h, hlen);
    v6[hlen] = '\0';
    if (inet_pton(AF_INET6, v6, bin) != 1)
      return "bad IPv6 address";
    after = close + 1;
    if (after < end && *after != ':')
      return "expected ':' after ']'";
  } else {
    const char *colon = memchr(s, ':', len);
    h = s;
    hlen = colon ? (size_t)(colon - s) : len;
    after = s + hlen;
    if (colon != NULL && memchr(colon + 1, ':', (size_t)(end - colon - 1)) != NULL)
      return "an IPv6 address needs brackets, e.g. [::1]:8443";
    if (hlen == 0)
      return "missing host";
    for (i = 0; i < hlen; i++)
      if (!is_host_char((unsigned char)h[i]))
        return "bad character in host name";
  }
  if (after == end) {
    if (port_required)
      return "missing port (expected host:port)";
  } else {
    after++;
    if (after == end)
      return "missing port after ':'";
    for (; after < end; after++) {
      if (!isdigit((unsigned char)*after))
        return "port must be a number";
      pv = pv * 10 + (unsigned long)(*after - '0');
      if (pv > 65535)
        return "port must be between 1 and 65535";
    }
    if (pv == 0)
      return "port must be between 1 and 65535";
    *port = (unsigned)pv;
  }
  *host = cr_strndup(h, hlen);
  return NULL;
}

int cr__conf_get_listen(ctx_t *c, const node_t *m, const char *path, const char *key,
                      cr_conf_listen_t *out) {
  const node_t *v = cr__conf_map_get(m, key);
  char kp[PATH_LEN], tmp[80];
  unsigned char bin[16];
  const char *why;
  char *host;

  if (v == NULL)
    return cr__conf_missing(c, m, path, key);
  cr__conf_join(kp, path, key);
  if (cr__conf_scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  why = cr__conf_split_hostport(v->str, v->len, 1, &host, &out->port);
  if (why == NULL && inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)
    why = "the host must be an IP address (0.0.0.0, 127.0.0.1, [::], [::1], ...)";
  if (why != NULL) {
    free(host);
    return cr__conf_fail(c, v->pos, kp, "bad listen address '%s': %s",
                cr__conf_sanitize(v->str, v->len, tmp, sizeof(tmp)), why);
  }
  out->host = host;
  out->pos = v->pos;
  return 0;
}

/* https://host[:port][/path]; NULL or why not. */
const char *cr__conf_parse_url(const char *s, size_t len, char **host, unsigned *port, char **base, int *plain) {
  const char *auth, *slash, *end = s + len, *why, *p;
  size_t plen;

  *host = *base = NULL;
  *plain = len >= 7 && strncasecmp(s, "http://", 7) == 0;
  if (!*plain && (len < 8 || strncasecmp(s, "https://", 8) != 0))
    return "expected https://host[:port][/path]";
  auth = s + (*plain ? 7 : 8);
  if (memchr(s, '?', len) != NULL)
    return "a query (?...) is not allowed";
  if (memchr(s, '#', len) != NULL)
    return "a fragment (#...) is not allowed";
  slash = memchr(auth, '/', (size_t)(end - auth));
  if (slash == NULL)
    slash = end;
  if (memchr(auth, '@', (size_t)(slash - auth)) != NULL)
    return "user information (user@) is not allowed";
  for (p = slash; p < end; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
      return "the path must be printable ASCII without spaces";
  *port = *plain ? 80 : 443;
  if ((why = cr__conf_split_hostport(auth, (size_t)(slash - auth), 0, host, port)) != NULL)
    return why;
  plen = (size_t)(end - slash);
  while (plen > 0 && slash[plen - 1] == '/')
    plen--;
  *base = cr_strndup(slash, plen);
  return NULL;
}

static int valid_name(const char *s) {
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
      return 0;
  return 1;
}

int cr__conf_get_name(ctx_t *c, const node_t *m, const char *path, char **out, cr_conf_pos_t *pos) {
  char kp[PATH_LEN];

  if (cr__conf_get_str(c, m, path, "name", REQ, out, pos) != 0)
    return CR_ECONFIG;
  if (!valid_name(*out))
    return cr__conf_fail(c, *pos, cr__conf_join(kp, path, "name"),
                "may contain only letters, digits, '.', '_' and '-'");
  return 0;
}

int cr__conf_get_host(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    char **out) {
  cr_conf_pos_t pos;
  char kp[PATH_LEN];
  const char *p;

  if (cr__conf_get_str(c, m, path, key, flags, out, &pos) != 0)
    return CR_ECONFIG;
  for (p = *out ? *out : ""; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '/')
      return cr__conf_fail(c, pos, cr__conf_join(kp, path, key), "bad character in host name");
  return 0;
}

int cr__conf_get_prefix(ctx_t *c, const node_t *m, const char *path, const char *key, char **out) {
  cr_conf_pos_t pos;
  char kp[PATH_LEN];
  const char *p;

  if (cr__conf_get_str(c, m, path, key, OPT, out, &pos) != 0)
    return CR_ECONFIG;
  if (*out == NULL)
    return 0;
  if ((*out)[0] != '/')
    return cr__conf_fail(c, pos, cr__conf_join(kp, path, key), "must start with '/'");
  for (p = *out; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
      return cr__conf_fail(c, pos, cr__conf_join(kp, path, key), "must be printable ASCII without spaces");
  return 0;
}

int cr__conf_is_token_char(int ch) {
  return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static const char *const log_keys[] = {"level", "format"};
static const char *const log_levels[] = {"debug", "info", "warn", "error"};
static const char *const log_formats[] = {"logfmt", "json"};

int cr__conf_load_log(ctx_t *c, const node_t *root, cr_conf_log_t *log) {
  const node_t *m;
  int level, format;

  if (cr__conf_get_map(c, root, "", "log", OPT, log_keys, CR_ARRAY_SIZE(log_keys), &m) != 0 ||
      cr__conf_get_enum(c, m, "log", "level", log_levels, CR_ARRAY_SIZE(log_levels), CR_LOG_INFO, &level) != 0 ||
      cr__conf_get_enum(c, m, "log", "format", log_formats, CR_ARRAY_SIZE(log_formats), CR_LOG_LOGFMT,
               &format) != 0)
    return CR_ECONFIG;
  log->level = (cr_log_level_t)level;
  log->format = (cr_log_format_t)format;
  return 0;
}

/* Parsed text is shared by both roles: the file, or the bytes of a test or fuzzer. */
int cr__conf_ctx_open(ctx_t *c, const char *name, char *err, size_t errlen) {
  memset(c, 0, sizeof(*c));
  c->file = name ? name : "(config)";
  c->err = err;
  c->errlen = errlen;
  if (err && errlen)
    err[0] = '\0';
  c->dir = config_dir(c->file);
  return 0;
}

int cr__conf_read_config(ctx_t *c, const char *path, char **data, size_t *len) {
  int rc;
  char why[PATH_MAX + 64];
  cr_conf_pos_t one = {1, 1};

  rc = cr_fileio_read(path, MAX_CONFIG_SIZE, data, len, why, sizeof why);
  if (rc == 0)
    return 0;
  if (rc == CR_ELIMIT)
    return cr__conf_fail(c, one, ROOT_KEY, "the file is larger than %d bytes", MAX_CONFIG_SIZE);
  if (rc == CR_ENOT_REGULAR)
    return cr__conf_fail(c, one, ROOT_KEY, "%s", why);
  return cr__conf_fail(c, one, ROOT_KEY, "cannot read the file: %s", why);
}

int cr__conf_root_check(ctx_t *c, const node_t *root, const char *const *keys, size_t nkeys,
                      const char *const *foreign, size_t nforeign, const char *role) {
  size_t i, k;
  char tmp[80];

  if (root->kind != N_MAP)
    return cr__conf_fail(c, root->pos, ROOT_KEY, "expected a mapping of settings at the top, got %s",
                cr__conf_kind_name(root));
  /* A key of the other role most likely means the wrong file was given: say so. */
  for (i = 0; i + 1 < root->n; i += 2)
    for (k = 0; k < nforeign; k++)
      if (!has_nul(root->items[i]) && strcmp(root->items[i]->str, foreign[k]) == 0)
        return cr__conf_fail(c, root->items[i]->pos,
                    cr__conf_sanitize(root->items[i]->str, root->items[i]->len, tmp, sizeof(tmp)),
                    "unknown key (this looks like %s configuration)", role);
  return cr__conf_map_check(c, root, "", keys, nkeys);
}

const char *cr_conf_libyaml_version(void) { return yaml_get_version_string(); }

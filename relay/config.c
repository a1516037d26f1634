/* Configuration loading. libyaml's event parser feeds a small tree of our own (so we see every
 * node's position, can refuse anchors, aliases and tags at the exact spot, and bound nesting); the
 * tree is then walked against the schema of each role into the plain structs of config.h. The only
 * side effects are reading the config, password and token files, and stat()/access() on the files
 * and directories named. */
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

/* ---------------------------------------------------------------- tree */

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

static int fail(ctx_t *c, cr_conf_pos_t pos, const char *key, const char *fmt, ...) CR_PRINTF(4, 5);

/* Only the first error is kept: it is the one the user fixes first, and the rest may be fallout. */
static int fail(ctx_t *c, cr_conf_pos_t pos, const char *key, const char *fmt, ...) {
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

static void node_free(node_t *n) {
  size_t i;

  if (n == NULL)
    return;
  for (i = 0; i < n->n; i++)
    node_free(n->items[i]);
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
static const char *sanitize(const char *s, size_t len, char *buf, size_t buflen) {
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
                              sanitize(key->str, key->len, tmp, sizeof(tmp)));
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
    return fail(c, offset_pos(data, len, 0), SYNTAX_KEY, "out of memory while parsing");
  case YAML_READER_ERROR:
    /* The reader reports a byte offset, not a mark. */
    return fail(c, offset_pos(data, len, p->problem_offset), SYNTAX_KEY,
                "%s (byte offset %zu); the file must be UTF-8 text", problem, p->problem_offset);
  default:
    if (p->context != NULL)
      return fail(c, mark_pos(p->problem_mark), SYNTAX_KEY, "%s (%s at %d:%d)", problem, p->context,
                  (int)p->context_mark.line + 1, (int)p->context_mark.column + 1);
    return fail(c, mark_pos(p->problem_mark), SYNTAX_KEY, "%s", problem);
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
    return fail(c, pos, path, "anchors (&%s) are not supported; write the value out",
                sanitize((const char *)anchor, strlen((const char *)anchor), tmp, sizeof(tmp)));
  return fail(c, pos, path, "tags (%s) are not supported; write the plain value",
              sanitize((const char *)tag, strlen((const char *)tag), tmp, sizeof(tmp)));
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
    node_free(nn);
    return fail(c, pos, path, "keys must be plain strings");
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

static int build_tree(ctx_t *c, const char *data, size_t len, node_t **out) {
  yaml_parser_t p;
  yaml_event_t ev;
  node_t *stack[MAX_DEPTH];
  size_t depth = 0;
  node_t *root = NULL;
  int ndocs = 0, done = 0, rc = 0;
  char path[PATH_LEN];

  *out = NULL;
  if (!yaml_parser_initialize(&p))
    return fail(c, offset_pos(data, len, 0), SYNTAX_KEY, "out of memory");
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
        rc = fail(c, pos, ROOT_KEY, "only one YAML document is allowed per file");
      break;
    case YAML_ALIAS_EVENT:
      stack_path(stack, depth, path, sizeof(path));
      rc = fail(c, pos, path, "aliases are not supported; write the value out");
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
        rc = fail(c, pos, path, "nested deeper than %d levels", MAX_DEPTH);
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
    node_free(root);
    return rc;
  }
  if (root == NULL) {
    cr_conf_pos_t one = {1, 1};
    return fail(c, one, ROOT_KEY, "the file is empty; expected a mapping of settings");
  }
  *out = root;
  return 0;
}

/* ---------------------------------------------------------------- files */

static int read_all(const char *path, size_t max, char **data, size_t *len, int *too_big) {
  int fd, err = 0;
  /* A small limit (a secret) gets its whole buffer at once: a realloc would leave a copy of the
   * secret in freed memory that nobody wipes. */
  size_t cap = max < 65536 ? max + 1 : 4096, n = 0;
  char *buf;

  *too_big = 0;
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return -errno;
  buf = cr_malloc(cap + 1);
  for (;;) {
    ssize_t r;
    if (n == cap) {
      if (cap > max)
        break;
      cap *= 2;
      buf = cr_realloc(buf, cap + 1);
    }
    r = read(fd, buf + n, cap - n);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      err = -errno;
      break;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  close(fd);
  if (err == 0 && n > max) {
    *too_big = 1;
    err = CR_ELIMIT;
  }
  if (err != 0) {
    cr_wipe(buf, n);
    free(buf);
    return err;
  }
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return 0;
}

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

static const char *join(char *buf, const char *parent, const char *key) {
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

static const char *join_index(char *buf, const char *parent, size_t i) {
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

static const char *kind_name(const node_t *n) {
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

static const char *nearest(const char *word, const char *const *cands, size_t ncands) {
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
static int map_check(ctx_t *c, const node_t *m, const char *path, const char *const *keys,
                     size_t nkeys) {
  unsigned char seen[32] = {0};
  cr_conf_pos_t seen_pos[32];
  char kp[PATH_LEN], tmp[80];
  size_t i, k;

  if (m->kind != N_MAP)
    return fail(c, m->pos, path[0] ? path : ROOT_KEY, "expected a mapping, got %s", kind_name(m));
  for (i = 0; i + 1 < m->n; i += 2) {
    const node_t *key = m->items[i];
    for (k = 0; k < nkeys; k++)
      if (!has_nul(key) && strcmp(key->str, keys[k]) == 0)
        break;
    if (k == nkeys) {
      const char *near = has_nul(key) ? NULL : nearest(key->str, keys, nkeys);
      join(kp, path, sanitize(key->str, key->len, tmp, sizeof(tmp)));
      if (near != NULL)
        return fail(c, key->pos, kp, "unknown key (did you mean '%s'?)", near);
      return fail(c, key->pos, kp, "unknown key");
    }
    if (seen[k])
      return fail(c, key->pos, join(kp, path, keys[k]), "duplicate key (first at %d:%d)",
                  seen_pos[k].line, seen_pos[k].col);
    seen[k] = 1;
    seen_pos[k] = key->pos;
  }
  return 0;
}

static const node_t *map_get(const node_t *m, const char *key) {
  size_t i;

  if (m == NULL || m->kind != N_MAP)
    return NULL;
  for (i = 0; i + 1 < m->n; i += 2)
    if (!has_nul(m->items[i]) && strcmp(m->items[i]->str, key) == 0)
      return m->items[i + 1];
  return NULL;
}

static int missing(ctx_t *c, const node_t *m, const char *path, const char *key) {
  char kp[PATH_LEN];
  return fail(c, m->pos, join(kp, path, key), "missing required key");
}

enum { OPT = 0, REQ = 1, EMPTY_OK = 2 };

/* A mapping value. Optional mappings that are empty (every line commented out) count as absent. */
static int get_map(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                   const char *const *keys, size_t nkeys, const node_t **out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN];

  *out = NULL;
  if (v == NULL || (!(flags & REQ) && is_null(v))) {
    if (flags & REQ)
      return missing(c, m, path, key);
    return 0;
  }
  if (map_check(c, v, join(kp, path, key), keys, nkeys) != 0)
    return CR_ECONFIG;
  *out = v;
  return 0;
}

static int get_list(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    const node_t **out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN];

  *out = NULL;
  if (v == NULL)
    return (flags & REQ) ? missing(c, m, path, key) : 0;
  join(kp, path, key);
  if (v->kind != N_SEQ)
    return fail(c, v->pos, kp, "expected a list, got %s", kind_name(v));
  if (v->n == 0 && !(flags & EMPTY_OK))
    return fail(c, v->pos, kp, "must not be empty");
  *out = v;
  return 0;
}

static int scalar_str(ctx_t *c, const node_t *v, const char *kp, int flags) {
  if (v->kind != N_SCALAR || is_null(v))
    return fail(c, v->pos, kp, "expected a string, got %s", kind_name(v));
  if (has_nul(v))
    return fail(c, v->pos, kp, "must not contain a NUL byte");
  if (v->len == 0 && !(flags & EMPTY_OK))
    return fail(c, v->pos, kp, "must not be empty");
  return 0;
}

static int get_str(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                   char **out, cr_conf_pos_t *pos) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN];

  if (v == NULL)
    return (flags & REQ) ? missing(c, m, path, key) : 0;
  if (scalar_str(c, v, join(kp, path, key), flags) != 0)
    return CR_ECONFIG;
  free(*out);
  *out = cr_strdup(v->str);
  if (pos != NULL)
    *pos = v->pos;
  return 0;
}

static int get_uint(ctx_t *c, const node_t *m, const char *path, const char *key, unsigned def,
                    unsigned min, unsigned max, unsigned *out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN], tmp[80];
  uint64_t x = 0;
  size_t i;

  *out = def;
  if (v == NULL)
    return 0;
  join(kp, path, key);
  if (v->kind != N_SCALAR || !v->plain || v->len == 0 || is_null(v))
    return fail(c, v->pos, kp, "expected a number, got %s", kind_name(v));
  for (i = 0; i < v->len; i++) {
    if (!isdigit((unsigned char)v->str[i]))
      return fail(c, v->pos, kp, "expected a number, got '%s'",
                  sanitize(v->str, v->len, tmp, sizeof(tmp)));
    if (x <= UINT32_MAX)
      x = x * 10 + (uint64_t)(v->str[i] - '0');
  }
  if (x < min || x > max)
    return fail(c, v->pos, kp, "value out of range: %s is not between %u and %u",
                sanitize(v->str, v->len, tmp, sizeof(tmp)), min, max);
  *out = (unsigned)x;
  return 0;
}

static int get_bool(ctx_t *c, const node_t *m, const char *path, const char *key, int def,
                    int *out) {
  const node_t *v = map_get(m, key);
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
  return fail(c, v->pos, join(kp, path, key), "expected a boolean (true or false), got %s",
              kind_name(v));
}

static int get_enum(ctx_t *c, const node_t *m, const char *path, const char *key,
                    const char *const *names, size_t nnames, int def, int *out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN], list[128], tmp[80];
  size_t i, o = 0;

  *out = def;
  if (v == NULL)
    return 0;
  join(kp, path, key);
  if (v->kind != N_SCALAR || is_null(v))
    return fail(c, v->pos, kp, "expected a string, got %s", kind_name(v));
  for (i = 0; i < nnames; i++) {
    if (!has_nul(v) && strcmp(v->str, names[i]) == 0) {
      *out = (int)i;
      return 0;
    }
    o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", names[i]);
  }
  return fail(c, v->pos, kp, "'%s' is not one of: %s", sanitize(v->str, v->len, tmp, sizeof(tmp)),
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

typedef struct range {
  uint64_t def, min, max;
} range_t;

static int get_quantity(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                        int is_size, uint64_t *out, cr_conf_pos_t *pos) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN], tmp[80], lo[32], hi[32];
  const char *what = is_size ? "size" : "duration";
  const char *why;
  uint64_t x = 0;

  *out = r.def;
  if (v == NULL)
    return 0;
  join(kp, path, key);
  if (v->kind != N_SCALAR || is_null(v))
    return fail(c, v->pos, kp, "expected a %s, got %s", what, kind_name(v));
  why = has_nul(v) ? "contains a NUL byte"
                   : is_size ? size_reason(v->str, &x) : duration_reason(v->str, &x);
  if (why != NULL)
    return fail(c, v->pos, kp, "bad %s '%s': %s", what, sanitize(v->str, v->len, tmp, sizeof(tmp)),
                why);
  if (x < r.min || x > r.max) {
    if (is_size)
      return fail(c, v->pos, kp, "value out of range: %s is not between %s and %s", v->str,
                  fmt_size(r.min, lo, sizeof(lo)), fmt_size(r.max, hi, sizeof(hi)));
    return fail(c, v->pos, kp, "value out of range: %s is not between %s and %s", v->str,
                fmt_duration(r.min, lo, sizeof(lo)), fmt_duration(r.max, hi, sizeof(hi)));
  }
  *out = x;
  if (pos != NULL)
    *pos = v->pos;
  return 0;
}

static int get_duration(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                        uint64_t *out, cr_conf_pos_t *pos) {
  return get_quantity(c, m, path, key, r, 0, out, pos);
}

static int get_size(ctx_t *c, const node_t *m, const char *path, const char *key, range_t r,
                    uint64_t *out) {
  return get_quantity(c, m, path, key, r, 1, out, NULL);
}

/* ---------------------------------------------------------------- composite values */

static int get_file(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    cr_conf_file_t *out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN];
  struct stat st;
  char *abs;

  if (v == NULL)
    return (flags & REQ) ? missing(c, m, path, key) : 0;
  join(kp, path, key);
  if (scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  abs = resolve(c, v->str);
  if (stat(abs, &st) != 0) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      fail(c, v->pos, kp, "no such file: %s", abs);
    else
      fail(c, v->pos, kp, "cannot access %s: %s", abs, strerror(e));
    free(abs);
    return CR_ECONFIG;
  }
  if (S_ISDIR(st.st_mode)) {
    fail(c, v->pos, kp, "%s is a directory, expected a file", abs);
    free(abs);
    return CR_ECONFIG;
  }
  if (access(abs, R_OK) != 0) {
    fail(c, v->pos, kp, "cannot read %s: %s", abs, strerror(errno));
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
static int get_dir(ctx_t *c, const node_t *m, const char *path, const char *key, char **out,
                   cr_conf_pos_t *pos) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN];
  struct stat st;
  char *abs;
  size_t n;

  if (v == NULL)
    return 0;
  join(kp, path, key);
  if (scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  abs = resolve(c, v->str);
  if (stat(abs, &st) != 0) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      fail(c, v->pos, kp, "no such directory: %s", abs);
    else
      fail(c, v->pos, kp, "cannot access %s: %s", abs, strerror(e));
    free(abs);
    return CR_ECONFIG;
  }
  if (!S_ISDIR(st.st_mode)) {
    fail(c, v->pos, kp, "%s is not a directory", abs);
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
static int read_secret_file(ctx_t *c, const node_t *m, const char *path, const char *key,
                            const char *what, char **out, cr_conf_pos_t *pos) {
  cr_conf_file_t f = {0};
  char kp[PATH_LEN];
  char *data = NULL;
  size_t len = 0;
  int too_big, rc;

  if (get_file(c, m, path, key, REQ, &f) != 0)
    return CR_ECONFIG;
  join(kp, path, key);
  rc = read_all(f.path, MAX_SECRET_SIZE, &data, &len, &too_big);
  if (rc != 0) {
    if (too_big)
      fail(c, f.pos, kp, "%s is larger than %d bytes; is it really a %s file?", f.path,
           MAX_SECRET_SIZE, what);
    else
      fail(c, f.pos, kp, "cannot read %s: %s", f.path, strerror(-rc));
    free(f.path);
    return CR_ECONFIG;
  }
  if (memchr(data, '\0', len) != NULL) {
    fail(c, f.pos, kp, "%s contains a NUL byte; a %s is text", f.path, what);
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

static int get_identity(ctx_t *c, const node_t *m, const char *path, const char *key,
                        cr_conf_identity_t *id) {
  const node_t *v, *pf, *pe;
  char ip[PATH_LEN], kp[PATH_LEN];

  if (get_map(c, m, path, key, REQ, identity_keys, CR_ARRAY_SIZE(identity_keys), &v) != 0)
    return CR_ECONFIG;
  join(ip, path, key);
  id->pos = v->pos;
  pf = map_get(v, "password_file");
  pe = map_get(v, "password_env");
  if (map_get(v, "pkcs12") != NULL) {
    if (map_get(v, "cert") != NULL || map_get(v, "key") != NULL)
      return fail(c, v->pos, ip, "give either pkcs12 or cert and key, not both");
    if (get_file(c, v, ip, "pkcs12", REQ, &id->pkcs12) != 0)
      return CR_ECONFIG;
  } else {
    if (map_get(v, "cert") == NULL && map_get(v, "key") == NULL)
      return fail(c, v->pos, ip, "needs pkcs12, or cert and key");
    if (get_file(c, v, ip, "cert", REQ, &id->cert) != 0 ||
        get_file(c, v, ip, "key", REQ, &id->key) != 0)
      return CR_ECONFIG;
    if (pf != NULL || pe != NULL)
      return fail(c, (pf ? pf : pe)->pos, join(kp, ip, pf ? "password_file" : "password_env"),
                  "only a pkcs12 identity takes a password (a PEM key must be unencrypted)");
  }
  if (pf != NULL && pe != NULL)
    return fail(c, pe->pos, join(kp, ip, "password_env"),
                "give password_file or password_env, not both");
  if (pf != NULL)
    return read_secret_file(c, v, ip, "password_file", "password", &id->password, NULL);
  if (pe != NULL) {
    const char *val;
    join(kp, ip, "password_env");
    if (scalar_str(c, pe, kp, REQ) != 0)
      return CR_ECONFIG;
    /* The value is echoed only when it looks like a name: a pasted password must not be. */
    if (!valid_env_name(pe->str))
      return fail(c, pe->pos, kp, "not a valid environment variable name");
    val = getenv(pe->str);
    if (val == NULL)
      return fail(c, pe->pos, kp, "environment variable %s is not set", pe->str);
    id->password = cr_strdup(val);
  }
  return 0;
}

static int is_host_char(int ch) {
  return isalnum(ch) || ch == '-' || ch == '.' || ch == '_';
}

/* Splits "host:port" / "[v6]:port". NULL, or the reason it is malformed. */
static const char *split_hostport(const char *s, size_t len, int port_required, char **host,
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

static int get_listen(ctx_t *c, const node_t *m, const char *path, const char *key,
                      cr_conf_listen_t *out) {
  const node_t *v = map_get(m, key);
  char kp[PATH_LEN], tmp[80];
  unsigned char bin[16];
  const char *why;
  char *host;

  if (v == NULL)
    return missing(c, m, path, key);
  join(kp, path, key);
  if (scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  why = split_hostport(v->str, v->len, 1, &host, &out->port);
  if (why == NULL && inet_pton(AF_INET, host, bin) != 1 && inet_pton(AF_INET6, host, bin) != 1)
    why = "the host must be an IP address (0.0.0.0, 127.0.0.1, [::], [::1], ...)";
  if (why != NULL) {
    free(host);
    return fail(c, v->pos, kp, "bad listen address '%s': %s",
                sanitize(v->str, v->len, tmp, sizeof(tmp)), why);
  }
  out->host = host;
  out->pos = v->pos;
  return 0;
}

/* https://host[:port][/path]; NULL or why not. */
static const char *parse_url(const char *s, size_t len, char **host, unsigned *port, char **base) {
  const char *auth, *slash, *end = s + len, *why, *p;
  size_t plen;

  *host = *base = NULL;
  if (len >= 7 && strncasecmp(s, "http://", 7) == 0)
    return "only https:// upstreams are supported";
  if (len < 8 || strncasecmp(s, "https://", 8) != 0)
    return "expected https://host[:port][/path]";
  auth = s + 8;
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
  *port = 443;
  if ((why = split_hostport(auth, (size_t)(slash - auth), 0, host, port)) != NULL)
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

static int get_name(ctx_t *c, const node_t *m, const char *path, char **out, cr_conf_pos_t *pos) {
  char kp[PATH_LEN];

  if (get_str(c, m, path, "name", REQ, out, pos) != 0)
    return CR_ECONFIG;
  if (!valid_name(*out))
    return fail(c, *pos, join(kp, path, "name"),
                "may contain only letters, digits, '.', '_' and '-'");
  return 0;
}

static int get_host(ctx_t *c, const node_t *m, const char *path, const char *key, int flags,
                    char **out) {
  cr_conf_pos_t pos;
  char kp[PATH_LEN];
  const char *p;

  if (get_str(c, m, path, key, flags, out, &pos) != 0)
    return CR_ECONFIG;
  for (p = *out ? *out : ""; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '/')
      return fail(c, pos, join(kp, path, key), "bad character in host name");
  return 0;
}

static int get_prefix(ctx_t *c, const node_t *m, const char *path, const char *key, char **out) {
  cr_conf_pos_t pos;
  char kp[PATH_LEN];
  const char *p;

  if (get_str(c, m, path, key, OPT, out, &pos) != 0)
    return CR_ECONFIG;
  if (*out == NULL)
    return 0;
  if ((*out)[0] != '/')
    return fail(c, pos, join(kp, path, key), "must start with '/'");
  for (p = *out; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
      return fail(c, pos, join(kp, path, key), "must be printable ASCII without spaces");
  return 0;
}

static int is_token_char(int ch) {
  return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static const char *const log_keys[] = {"level", "format"};
static const char *const log_levels[] = {"debug", "info", "warn", "error"};
static const char *const log_formats[] = {"logfmt", "json"};

static int load_log(ctx_t *c, const node_t *root, cr_conf_log_t *log) {
  const node_t *m;
  int level, format;

  if (get_map(c, root, "", "log", OPT, log_keys, CR_ARRAY_SIZE(log_keys), &m) != 0 ||
      get_enum(c, m, "log", "level", log_levels, CR_ARRAY_SIZE(log_levels), CR_LOG_INFO, &level) != 0 ||
      get_enum(c, m, "log", "format", log_formats, CR_ARRAY_SIZE(log_formats), CR_LOG_LOGFMT,
               &format) != 0)
    return CR_ECONFIG;
  log->level = (cr_log_level_t)level;
  log->format = (cr_log_format_t)format;
  return 0;
}

/* Parsed text is shared by both roles: the file, or the bytes of a test or fuzzer. */
static int ctx_open(ctx_t *c, const char *name, char *err, size_t errlen) {
  memset(c, 0, sizeof(*c));
  c->file = name ? name : "(config)";
  c->err = err;
  c->errlen = errlen;
  if (err && errlen)
    err[0] = '\0';
  c->dir = config_dir(c->file);
  return 0;
}

static int read_config(ctx_t *c, const char *path, char **data, size_t *len) {
  int too_big, rc;
  cr_conf_pos_t one = {1, 1};

  rc = read_all(path, MAX_CONFIG_SIZE, data, len, &too_big);
  if (rc == 0)
    return 0;
  if (too_big)
    return fail(c, one, ROOT_KEY, "the file is larger than %d bytes", MAX_CONFIG_SIZE);
  return fail(c, one, ROOT_KEY, "cannot read the file: %s", strerror(-rc));
}

static int root_check(ctx_t *c, const node_t *root, const char *const *keys, size_t nkeys,
                      const char *const *foreign, size_t nforeign, const char *role) {
  size_t i, k;
  char tmp[80];

  if (root->kind != N_MAP)
    return fail(c, root->pos, ROOT_KEY, "expected a mapping of settings at the top, got %s",
                kind_name(root));
  /* A key of the other role most likely means the wrong file was given: say so. */
  for (i = 0; i + 1 < root->n; i += 2)
    for (k = 0; k < nforeign; k++)
      if (!has_nul(root->items[i]) && strcmp(root->items[i]->str, foreign[k]) == 0)
        return fail(c, root->items[i]->pos,
                    sanitize(root->items[i]->str, root->items[i]->len, tmp, sizeof(tmp)),
                    "unknown key (this looks like %s configuration)", role);
  return map_check(c, root, "", keys, nkeys);
}

/* ---------------------------------------------------------------- agent */

static const char *const agent_keys[] = {"log",         "gateway",    "routes",
                                         "limits",      "drain_timeout", "trust_store",
                                         "revocation",  "expiry_warning", "admin",
                                         "remote_trust"};
static const char *const agent_admin_keys[] = {"listen"};
/* In cr_conf_revocation_t order. */
static const char *const revocation_names[] = {"off", "soft", "hard"};
static const char *const agent_only_keys[] = {"routes"};
static const char *const agent_gw_keys[] = {"address",       "server_name",  "ca",
                                            "identity",      "connections",  "connect_timeout",
                                            "ping_interval", "ping_timeout", "reconnect_min",
                                            "reconnect_max"};
static const char *const route_keys[] = {"name", "match", "upstream", "soap", "revocation"};
static const char *const match_keys[] = {"host", "path_prefix", "methods", "header"};
static const char *const header_keys[] = {"name", "value"};
static const char *const upstream_keys[] = {"url",          "server_name",     "ca",
                                            "identity",     "connect_timeout", "response_timeout",
                                            "idle_timeout", "max_idle"};
static const char *const limits_keys[] = {"max_header_size"};

static const range_t r_connect = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_ping_interval = {15 * MS_PER_S, 100, MS_PER_H};
static const range_t r_ping_timeout = {10 * MS_PER_S, 100, MS_PER_H};
static const range_t r_reconnect_min = {250, 1, MS_PER_H};
static const range_t r_reconnect_max = {30 * MS_PER_S, 1, MS_PER_H};
static const range_t r_up_connect = {5 * MS_PER_S, 1, MS_PER_H};
static const range_t r_up_response = {30 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_up_idle = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_header_size = {16 * 1024, 1024, 1024 * 1024};
static const range_t r_drain = {10 * MS_PER_S, 0, MS_PER_H};
static const range_t r_handshake = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_header_timeout = {10 * MS_PER_S, 1, MS_PER_H};
static const range_t r_pub_idle = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_request = {60 * MS_PER_S, 1, 24 * MS_PER_H};
static const range_t r_expiry_warning = {30 * MS_PER_D, 0, 3650 * MS_PER_D};

static int load_agent_gateway(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *m, *v;
  const char *p = "gateway", *why;
  char kp[PATH_LEN], tmp[80];
  cr_conf_pos_t min_pos = {0, 0}, max_pos = {0, 0};

  if (get_map(c, root, "", "gateway", REQ, agent_gw_keys, CR_ARRAY_SIZE(agent_gw_keys), &m) != 0)
    return CR_ECONFIG;
  v = map_get(m, "address");
  if (v == NULL)
    return missing(c, m, p, "address");
  join(kp, p, "address");
  if (scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  if ((why = split_hostport(v->str, v->len, 1, &a->gateway.host, &a->gateway.port)) != NULL)
    return fail(c, v->pos, kp, "bad address '%s': %s", sanitize(v->str, v->len, tmp, sizeof(tmp)),
                why);
  a->gateway.pos = v->pos;
  if (get_host(c, m, p, "server_name", OPT, &a->gateway.server_name) != 0 ||
      get_file(c, m, p, "ca", REQ, &a->gateway.ca) != 0 ||
      get_identity(c, m, p, "identity", &a->gateway.identity) != 0 ||
      get_uint(c, m, p, "connections", 2, 1, 64, &a->gateway.connections) != 0 ||
      get_duration(c, m, p, "connect_timeout", r_connect, &a->gateway.connect_timeout_ms, NULL) ||
      get_duration(c, m, p, "ping_interval", r_ping_interval, &a->gateway.ping_interval_ms, NULL) ||
      get_duration(c, m, p, "ping_timeout", r_ping_timeout, &a->gateway.ping_timeout_ms, NULL) ||
      get_duration(c, m, p, "reconnect_min", r_reconnect_min, &a->gateway.reconnect_min_ms,
                   &min_pos) ||
      get_duration(c, m, p, "reconnect_max", r_reconnect_max, &a->gateway.reconnect_max_ms,
                   &max_pos))
    return CR_ECONFIG;
  if (a->gateway.reconnect_min_ms > a->gateway.reconnect_max_ms)
    return fail(c, max_pos.line ? max_pos : min_pos,
                join(kp, p, max_pos.line ? "reconnect_max" : "reconnect_min"),
                "reconnect_min must not exceed reconnect_max");
  if (a->gateway.server_name == NULL)
    a->gateway.server_name = cr_strdup(a->gateway.host);
  return 0;
}

static int load_match(ctx_t *c, const node_t *route, const char *rp, cr_conf_route_t *r) {
  const node_t *m, *methods, *h;
  char mp[PATH_LEN], kp[PATH_LEN], ep[PATH_LEN];
  size_t i;

  if (get_map(c, route, rp, "match", OPT, match_keys, CR_ARRAY_SIZE(match_keys), &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  join(mp, rp, "match");
  if (get_host(c, m, mp, "host", OPT, &r->match_host) != 0 ||
      get_prefix(c, m, mp, "path_prefix", &r->match_path_prefix) != 0 ||
      get_list(c, m, mp, "methods", OPT, &methods) != 0)
    return CR_ECONFIG;
  if (methods != NULL) {
    join(kp, mp, "methods");
    r->match_methods = cr_calloc(methods->n, sizeof(char *));
    for (i = 0; i < methods->n; i++) {
      const node_t *e = methods->items[i];
      char *s;
      join_index(ep, kp, i);
      if (scalar_str(c, e, ep, REQ) != 0)
        return CR_ECONFIG;
      for (s = e->str; *s; s++)
        if (!isalpha((unsigned char)*s))
          return fail(c, e->pos, ep, "not an HTTP method name");
      s = r->match_methods[r->nmatch_methods++] = cr_strdup(e->str);
      for (; *s; s++)
        *s = (char)toupper((unsigned char)*s);
    }
  }
  if (get_map(c, m, mp, "header", OPT, header_keys, CR_ARRAY_SIZE(header_keys), &h) != 0)
    return CR_ECONFIG;
  if (h != NULL) {
    cr_conf_pos_t pos;
    const char *s;
    join(kp, mp, "header");
    if (get_str(c, h, kp, "name", REQ, &r->match_header_name, &pos) != 0)
      return CR_ECONFIG;
    for (s = r->match_header_name; *s; s++)
      if (!is_token_char((unsigned char)*s))
        return fail(c, pos, join(ep, kp, "name"), "not a valid header name");
    if (get_str(c, h, kp, "value", REQ | EMPTY_OK, &r->match_header_value, &pos) != 0)
      return CR_ECONFIG;
    for (s = r->match_header_value; *s; s++)
      if ((unsigned char)*s < 0x20 && *s != '\t')
        return fail(c, pos, join(ep, kp, "value"), "must not contain control characters");
  }
  return 0;
}

static int load_upstream(ctx_t *c, const node_t *route, const char *rp, cr_conf_route_t *r) {
  const node_t *m, *v;
  char up[PATH_LEN], kp[PATH_LEN], tmp[80];
  const char *why;

  if (get_map(c, route, rp, "upstream", REQ, upstream_keys, CR_ARRAY_SIZE(upstream_keys), &m) != 0)
    return CR_ECONFIG;
  join(up, rp, "upstream");
  v = map_get(m, "url");
  if (v == NULL)
    return missing(c, m, up, "url");
  join(kp, up, "url");
  if (scalar_str(c, v, kp, REQ) != 0)
    return CR_ECONFIG;
  why = parse_url(v->str, v->len, &r->upstream_host, &r->upstream_port, &r->upstream_base_path);
  if (why != NULL)
    return fail(c, v->pos, kp, "bad URL '%s': %s", sanitize(v->str, v->len, tmp, sizeof(tmp)), why);
  r->upstream_url = cr_strdup(v->str);
  if (get_host(c, m, up, "server_name", OPT, &r->server_name) != 0 ||
      get_file(c, m, up, "ca", OPT, &r->ca) != 0 ||
      get_identity(c, m, up, "identity", &r->identity) != 0 ||
      get_duration(c, m, up, "connect_timeout", r_up_connect, &r->connect_timeout_ms, NULL) ||
      get_duration(c, m, up, "response_timeout", r_up_response, &r->response_timeout_ms, NULL) ||
      get_duration(c, m, up, "idle_timeout", r_up_idle, &r->idle_timeout_ms, NULL) ||
      get_uint(c, m, up, "max_idle", 64, 0, 1024, &r->max_idle) != 0)
    return CR_ECONFIG;
  if (r->server_name == NULL)
    r->server_name = cr_strdup(r->upstream_host);
  return 0;
}

static int load_routes(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  const node_t *list;
  char rp[PATH_LEN];
  size_t i, j;

  if (get_list(c, root, "", "routes", REQ, &list) != 0)
    return CR_ECONFIG;
  a->routes = cr_calloc(list->n, sizeof(*a->routes));
  a->nroutes = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_route_t *r = &a->routes[i];
    cr_conf_pos_t name_pos = {0, 0};
    int rev;
    join_index(rp, "routes", i);
    if (map_check(c, m, rp, route_keys, CR_ARRAY_SIZE(route_keys)) != 0)
      return CR_ECONFIG;
    r->pos = m->pos;
    if (get_name(c, m, rp, &r->name, &name_pos) != 0)
      return CR_ECONFIG;
    for (j = 0; j < i; j++)
      if (strcmp(a->routes[j].name, r->name) == 0) {
        char kp[PATH_LEN];
        return fail(c, name_pos, join(kp, rp, "name"),
                    "duplicate route name '%s' (routes[%zu] at %d:%d has it)", r->name, j,
                    a->routes[j].pos.line, a->routes[j].pos.col);
      }
    if (load_match(c, m, rp, r) != 0 || load_upstream(c, m, rp, r) != 0 ||
        get_bool(c, m, rp, "soap", 0, &r->soap) != 0 ||
        get_enum(c, m, rp, "revocation", revocation_names, CR_ARRAY_SIZE(revocation_names), -1,
                 &rev) != 0)
      return CR_ECONFIG;
    /* The global value is filled in once it is known (load_agent). */
    r->revocation_set = rev >= 0;
    r->revocation = rev >= 0 ? (cr_conf_revocation_t)rev : CR_REVOCATION_OFF;
  }
  return 0;
}

static int load_agent(ctx_t *c, const node_t *root, cr_conf_agent_t *a) {
  static const char *const gateway_only[] = {"tunnel", "public", "groups", "services"};
  const node_t *lim, *adm;
  int rev;
  size_t i;

  a->trust_store = cr_strdup(CR_CONF_TRUST_STORE_DEFAULT);
  if (root_check(c, root, agent_keys, CR_ARRAY_SIZE(agent_keys), gateway_only,
                 CR_ARRAY_SIZE(gateway_only), "a gateway") != 0 ||
      load_log(c, root, &a->log) != 0 || load_agent_gateway(c, root, a) != 0 ||
      load_routes(c, root, a) != 0 ||
      get_dir(c, root, "", "trust_store", &a->trust_store, &a->trust_store_pos) != 0 ||
      get_map(c, root, "", "limits", OPT, limits_keys, CR_ARRAY_SIZE(limits_keys), &lim) != 0 ||
      get_size(c, lim, "limits", "max_header_size", r_header_size, &a->max_header_size) != 0 ||
      get_duration(c, root, "", "drain_timeout", r_drain, &a->drain_timeout_ms, NULL) != 0 ||
      get_enum(c, root, "", "revocation", revocation_names, CR_ARRAY_SIZE(revocation_names),
               CR_REVOCATION_OFF, &rev) != 0 ||
      get_duration(c, root, "", "expiry_warning", r_expiry_warning, &a->expiry_warning_ms, NULL) ||
      get_map(c, root, "", "admin", OPT, agent_admin_keys, CR_ARRAY_SIZE(agent_admin_keys),
              &adm) != 0 ||
      (adm != NULL && get_listen(c, adm, "admin", "listen", &a->admin_listen) != 0) ||
      get_bool(c, root, "", "remote_trust", 0, &a->remote_trust) != 0)
    return CR_ECONFIG;
  a->revocation = (cr_conf_revocation_t)rev;
  for (i = 0; i < a->nroutes; i++)
    if (!a->routes[i].revocation_set)
      a->routes[i].revocation = a->revocation;
  return 0;
}

static void identity_free(cr_conf_identity_t *id) {
  free(id->pkcs12.path);
  free(id->cert.path);
  free(id->key.path);
  if (id->password != NULL) {
    cr_wipe(id->password, strlen(id->password));
    free(id->password);
  }
}

void cr_conf_agent_free(cr_conf_agent_t *a) {
  size_t i, j;

  if (a == NULL)
    return;
  free(a->path);
  free(a->trust_store);
  free(a->admin_listen.host);
  free(a->gateway.host);
  free(a->gateway.server_name);
  free(a->gateway.ca.path);
  identity_free(&a->gateway.identity);
  for (i = 0; i < a->nroutes; i++) {
    cr_conf_route_t *r = &a->routes[i];
    free(r->name);
    free(r->match_host);
    free(r->match_path_prefix);
    for (j = 0; j < r->nmatch_methods; j++)
      free(r->match_methods[j]);
    free(r->match_methods);
    free(r->match_header_name);
    free(r->match_header_value);
    free(r->upstream_url);
    free(r->upstream_host);
    free(r->upstream_base_path);
    free(r->server_name);
    free(r->ca.path);
    identity_free(&r->identity);
  }
  free(a->routes);
  memset(a, 0, sizeof(*a));
}

static int agent_from_mem(ctx_t *c, const char *name, const char *data, size_t len,
                          cr_conf_agent_t *out) {
  node_t *root = NULL;
  int rc;

  memset(out, 0, sizeof(*out));
  rc = build_tree(c, data, len, &root);
  if (rc == 0) {
    out->path = cr_strdup(name);
    rc = load_agent(c, root, out);
  }
  node_free(root);
  if (rc != 0)
    cr_conf_agent_free(out);
  return rc;
}

int cr_conf_agent_load_mem(const char *name, const char *data, size_t len, cr_conf_agent_t *out,
                           char *err, size_t errlen) {
  ctx_t c;
  int rc;

  ctx_open(&c, name, err, errlen);
  rc = agent_from_mem(&c, c.file, data, len, out);
  free(c.dir);
  return rc;
}

int cr_conf_agent_load(const char *path, cr_conf_agent_t *out, char *err, size_t errlen) {
  ctx_t c;
  char *data = NULL;
  size_t len = 0;
  int rc;

  memset(out, 0, sizeof(*out));
  ctx_open(&c, path, err, errlen);
  rc = read_config(&c, c.file, &data, &len);
  if (rc == 0)
    rc = agent_from_mem(&c, c.file, data, len, out);
  free(data);
  free(c.dir);
  return rc;
}

/* ---------------------------------------------------------------- gateway */

static const char *const gateway_keys[] = {"log",      "tunnel",        "public", "groups",
                                           "services", "drain_timeout", "admin"};
static const char *const gateway_admin_keys[] = {"listen", "token_file"};
static const char *const tunnel_keys[] = {"listen",        "identity",     "client_ca",
                                          "handshake_timeout", "ping_interval", "ping_timeout"};
static const char *const public_keys[] = {"listen",          "identity",     "client_ca",
                                          "header_timeout",  "idle_timeout", "request_timeout",
                                          "max_header_size", "max_connections"};
static const char *const group_keys[] = {"name", "agents"};
static const char *const service_keys[] = {"host", "path_prefix", "group"};

static int load_tunnel(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  const char *p = "tunnel";

  if (get_map(c, root, "", p, REQ, tunnel_keys, CR_ARRAY_SIZE(tunnel_keys), &m) != 0 ||
      get_listen(c, m, p, "listen", &g->tunnel.listen) != 0 ||
      get_identity(c, m, p, "identity", &g->tunnel.identity) != 0 ||
      get_file(c, m, p, "client_ca", REQ, &g->tunnel.client_ca) != 0 ||
      get_duration(c, m, p, "handshake_timeout", r_handshake, &g->tunnel.handshake_timeout_ms,
                   NULL) ||
      get_duration(c, m, p, "ping_interval", r_ping_interval, &g->tunnel.ping_interval_ms, NULL) ||
      get_duration(c, m, p, "ping_timeout", r_ping_timeout, &g->tunnel.ping_timeout_ms, NULL))
    return CR_ECONFIG;
  return 0;
}

static int load_public(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  const char *p = "public";

  if (get_map(c, root, "", p, REQ, public_keys, CR_ARRAY_SIZE(public_keys), &m) != 0 ||
      get_listen(c, m, p, "listen", &g->public_.listen) != 0 ||
      get_identity(c, m, p, "identity", &g->public_.identity) != 0 ||
      get_file(c, m, p, "client_ca", OPT, &g->public_.client_ca) != 0 ||
      get_duration(c, m, p, "header_timeout", r_header_timeout, &g->public_.header_timeout_ms,
                   NULL) ||
      get_duration(c, m, p, "idle_timeout", r_pub_idle, &g->public_.idle_timeout_ms, NULL) ||
      get_duration(c, m, p, "request_timeout", r_request, &g->public_.request_timeout_ms, NULL) ||
      get_size(c, m, p, "max_header_size", r_header_size, &g->public_.max_header_size) != 0 ||
      get_uint(c, m, p, "max_connections", 10000, 1, 1000000, &g->public_.max_connections) != 0)
    return CR_ECONFIG;
  return 0;
}

static int load_groups(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *list, *agents;
  char gp[PATH_LEN], kp[PATH_LEN], ep[PATH_LEN];
  size_t i, j, k, l;

  if (get_list(c, root, "", "groups", REQ, &list) != 0)
    return CR_ECONFIG;
  g->groups = cr_calloc(list->n, sizeof(*g->groups));
  g->ngroups = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_group_t *grp = &g->groups[i];
    cr_conf_pos_t name_pos = {0, 0};
    join_index(gp, "groups", i);
    if (map_check(c, m, gp, group_keys, CR_ARRAY_SIZE(group_keys)) != 0)
      return CR_ECONFIG;
    grp->pos = m->pos;
    if (get_name(c, m, gp, &grp->name, &name_pos) != 0)
      return CR_ECONFIG;
    for (j = 0; j < i; j++)
      if (strcmp(g->groups[j].name, grp->name) == 0)
        return fail(c, name_pos, join(kp, gp, "name"),
                    "duplicate group name '%s' (groups[%zu] at %d:%d has it)", grp->name, j,
                    g->groups[j].pos.line, g->groups[j].pos.col);
    if (get_list(c, m, gp, "agents", REQ, &agents) != 0)
      return CR_ECONFIG;
    join(kp, gp, "agents");
    grp->agents = cr_calloc(agents->n, sizeof(char *));
    for (k = 0; k < agents->n; k++) {
      const node_t *e = agents->items[k];
      join_index(ep, kp, k);
      if (scalar_str(c, e, ep, REQ) != 0)
        return CR_ECONFIG;
      /* A certificate name in two groups would make the tunnel's group a coin toss. */
      for (j = 0; j <= i; j++) {
        size_t n = j == i ? grp->nagents : g->groups[j].nagents;
        for (l = 0; l < n; l++)
          if (strcmp(g->groups[j].agents[l], e->str) == 0)
            return fail(c, e->pos, ep, "agent '%s' is already listed in group '%s'", e->str,
                        g->groups[j].name);
      }
      grp->agents[grp->nagents++] = cr_strdup(e->str);
    }
  }
  return 0;
}

static int load_services(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *list;
  char sp[PATH_LEN], kp[PATH_LEN];
  const char *names[64];
  size_t i, j;

  if (get_list(c, root, "", "services", REQ, &list) != 0)
    return CR_ECONFIG;
  g->services = cr_calloc(list->n, sizeof(*g->services));
  g->nservices = list->n;
  for (i = 0; i < list->n; i++) {
    const node_t *m = list->items[i];
    cr_conf_service_t *s = &g->services[i];
    cr_conf_pos_t group_pos = {0, 0};
    join_index(sp, "services", i);
    if (map_check(c, m, sp, service_keys, CR_ARRAY_SIZE(service_keys)) != 0)
      return CR_ECONFIG;
    s->pos = m->pos;
    if (get_host(c, m, sp, "host", REQ, &s->host) != 0 ||
        get_prefix(c, m, sp, "path_prefix", &s->path_prefix) != 0 ||
        get_str(c, m, sp, "group", REQ, &s->group, &group_pos) != 0)
      return CR_ECONFIG;
    for (j = 0; j < g->ngroups; j++)
      if (strcmp(g->groups[j].name, s->group) == 0)
        break;
    if (j == g->ngroups) {
      size_t nn = CR_MIN(g->ngroups, CR_ARRAY_SIZE(names));
      const char *near;
      for (j = 0; j < nn; j++)
        names[j] = g->groups[j].name;
      near = nearest(s->group, names, nn);
      join(kp, sp, "group");
      if (near != NULL)
        return fail(c, group_pos, kp, "unknown group '%s' (did you mean '%s'?)", s->group, near);
      return fail(c, group_pos, kp, "unknown group '%s' (not in groups)", s->group);
    }
    s->group_index = j;
    for (j = 0; j < i; j++) {
      const cr_conf_service_t *o = &g->services[j];
      int same_prefix = (o->path_prefix == NULL && s->path_prefix == NULL) ||
                        (o->path_prefix && s->path_prefix && !strcmp(o->path_prefix, s->path_prefix));
      if (strcasecmp(o->host, s->host) == 0 && same_prefix)
        return fail(c, s->pos, sp, "duplicate service: services[%zu] at %d:%d has the same host%s",
                    j, o->pos.line, o->pos.col, s->path_prefix ? " and path_prefix" : "");
    }
  }
  return 0;
}

/* The admin endpoint changes trust on agents: it exists only with a token to authenticate its
 * callers, and a guessable token is refused. */
static int load_gateway_admin(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  const node_t *m;
  char kp[PATH_LEN];
  const char *t;
  size_t n;

  if (get_map(c, root, "", "admin", OPT, gateway_admin_keys, CR_ARRAY_SIZE(gateway_admin_keys),
              &m) != 0)
    return CR_ECONFIG;
  if (m == NULL)
    return 0;
  if (get_listen(c, m, "admin", "listen", &g->admin_listen) != 0)
    return CR_ECONFIG;
  if (map_get(m, "token_file") == NULL)
    return fail(c, m->pos, "admin.token_file",
                "missing required key: the admin endpoint authenticates its callers with a bearer "
                "token read from this file");
  if (read_secret_file(c, m, "admin", "token_file", "token", &g->admin_token,
                       &g->admin_token_pos) != 0)
    return CR_ECONFIG;
  join(kp, "admin", "token_file");
  n = strlen(g->admin_token);
  if (n < CR_CONF_ADMIN_TOKEN_MIN)
    return fail(c, g->admin_token_pos, kp,
                "the token is %zu characters long, at least %d are needed "
                "(e.g. openssl rand -hex 32 > FILE)", n, CR_CONF_ADMIN_TOKEN_MIN);
  /* It travels in an Authorization header: a space or control character would never match. */
  for (t = g->admin_token; *t; t++)
    if ((unsigned char)*t <= 0x20 || (unsigned char)*t == 0x7f)
      return fail(c, g->admin_token_pos, kp,
                  "the token contains a space or control character (only its one trailing "
                  "newline is removed)");
  return 0;
}

static int load_gateway(ctx_t *c, const node_t *root, cr_conf_gateway_t *g) {
  if (root_check(c, root, gateway_keys, CR_ARRAY_SIZE(gateway_keys), agent_only_keys,
                 CR_ARRAY_SIZE(agent_only_keys), "an agent") != 0 ||
      load_log(c, root, &g->log) != 0 || load_tunnel(c, root, g) != 0 ||
      load_public(c, root, g) != 0 || load_groups(c, root, g) != 0 ||
      load_services(c, root, g) != 0 ||
      get_duration(c, root, "", "drain_timeout", r_drain, &g->drain_timeout_ms, NULL) != 0 ||
      load_gateway_admin(c, root, g) != 0)
    return CR_ECONFIG;
  return 0;
}

void cr_conf_gateway_free(cr_conf_gateway_t *g) {
  size_t i, j;

  if (g == NULL)
    return;
  free(g->path);
  free(g->tunnel.listen.host);
  identity_free(&g->tunnel.identity);
  free(g->tunnel.client_ca.path);
  free(g->public_.listen.host);
  identity_free(&g->public_.identity);
  free(g->public_.client_ca.path);
  for (i = 0; i < g->ngroups; i++) {
    free(g->groups[i].name);
    for (j = 0; j < g->groups[i].nagents; j++)
      free(g->groups[i].agents[j]);
    free(g->groups[i].agents);
  }
  free(g->groups);
  for (i = 0; i < g->nservices; i++) {
    free(g->services[i].host);
    free(g->services[i].path_prefix);
    free(g->services[i].group);
  }
  free(g->services);
  free(g->admin_listen.host);
  if (g->admin_token != NULL) {
    cr_wipe(g->admin_token, strlen(g->admin_token));
    free(g->admin_token);
  }
  memset(g, 0, sizeof(*g));
}

static int gateway_from_mem(ctx_t *c, const char *name, const char *data, size_t len,
                            cr_conf_gateway_t *out) {
  node_t *root = NULL;
  int rc;

  memset(out, 0, sizeof(*out));
  rc = build_tree(c, data, len, &root);
  if (rc == 0) {
    out->path = cr_strdup(name);
    rc = load_gateway(c, root, out);
  }
  node_free(root);
  if (rc != 0)
    cr_conf_gateway_free(out);
  return rc;
}

int cr_conf_gateway_load_mem(const char *name, const char *data, size_t len,
                             cr_conf_gateway_t *out, char *err, size_t errlen) {
  ctx_t c;
  int rc;

  ctx_open(&c, name, err, errlen);
  rc = gateway_from_mem(&c, c.file, data, len, out);
  free(c.dir);
  return rc;
}

int cr_conf_gateway_load(const char *path, cr_conf_gateway_t *out, char *err, size_t errlen) {
  ctx_t c;
  char *data = NULL;
  size_t len = 0;
  int rc;

  memset(out, 0, sizeof(*out));
  ctx_open(&c, path, err, errlen);
  rc = read_config(&c, c.file, &data, &len);
  if (rc == 0)
    rc = gateway_from_mem(&c, c.file, data, len, out);
  free(data);
  free(c.dir);
  return rc;
}

/* ---------------------------------------------------------------- role */

const char *cr_conf_detect_role(const char *path, char *err, size_t errlen) {
  ctx_t c;
  char *data = NULL;
  size_t len = 0;
  node_t *root = NULL;
  const char *role = NULL;

  ctx_open(&c, path, err, errlen);
  if (read_config(&c, c.file, &data, &len) == 0 && build_tree(&c, data, len, &root) == 0) {
    if (root->kind != N_MAP) {
      fail(&c, root->pos, ROOT_KEY, "expected a mapping of settings at the top, got %s",
           kind_name(root));
    } else {
      int agent = map_get(root, "routes") != NULL, gateway = map_get(root, "services") != NULL;
      /* Without the deciding key, the role's other sections still tell, so the loader can then
       * point at what is missing. */
      if (!agent && !gateway) {
        agent = map_get(root, "gateway") != NULL;
        gateway = map_get(root, "tunnel") != NULL || map_get(root, "public") != NULL ||
                  map_get(root, "groups") != NULL;
      }
      if (agent && gateway)
        fail(&c, root->pos, ROOT_KEY,
             "has both agent keys (routes, gateway) and gateway keys (services, tunnel, public, "
             "groups); a file configures one role");
      else if (!agent && !gateway)
        fail(&c, root->pos, ROOT_KEY,
             "cannot tell the role: an agent configuration has routes, a gateway configuration "
             "has services");
      else
        role = agent ? "agent" : "gateway";
    }
  }
  node_free(root);
  free(data);
  free(c.dir);
  return role;
}

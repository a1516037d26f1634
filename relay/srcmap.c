/* SPDX-License-Identifier: Apache-2.0 */
/* Open addressing with linear probing over a power-of-two table at most half full (sized for
 * max_entries sources), and backward-shift deletion, so a lookup never walks tombstones. */
#include "ccrelay/srcmap.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "ccrelay/alloc.h"
#include "ccrelay/error.h"

typedef struct slot {
  cr_srckey_t key;
  unsigned count; /* 0: empty */
} slot_t;

struct cr_srcmap {
  slot_t *slots;
  size_t mask;
  size_t max_entries;
  size_t total;
  size_t sources;
  unsigned per_source;
  uint64_t seed; /* per table, so a peer cannot aim its addresses at one probe chain */
};

cr_srcmap_t *cr_srcmap_new(size_t max_entries, unsigned per_source) {
  cr_srcmap_t *m = cr_calloc(1, sizeof *m);
  size_t cap = 16;
  while (cap < 2 * max_entries)
    cap *= 2;
  m->slots = cr_calloc(cap, sizeof *m->slots);
  m->mask = cap - 1;
  m->max_entries = max_entries;
  m->per_source = per_source ? per_source : 1;
  m->seed = ((uint64_t)(uintptr_t)m * 0x9E3779B97F4A7C15ull) ^ uv_hrtime();
  return m;
}

void cr_srcmap_free(cr_srcmap_t *m) {
  if (m == NULL)
    return;
  free(m->slots);
  free(m);
}

int cr_srcmap_key(const struct sockaddr *addr, cr_srckey_t *key) {
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  memset(key, 0, sizeof *key);
  if (addr->sa_family == AF_INET) {
    memcpy(key->b, mapped, sizeof mapped);
    memcpy(key->b + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    return 0;
  }
  if (addr->sa_family == AF_INET6) {
    const unsigned char *a = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
    /* a dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d: one source with plain IPv4 */
    memcpy(key->b, a, memcmp(a, mapped, sizeof mapped) == 0 ? 16 : 8);
    return 0;
  }
  return UV_EAFNOSUPPORT;
}

static size_t hash(const cr_srcmap_t *m, const cr_srckey_t *k) {
  uint64_t a, b, h;
  memcpy(&a, k->b, 8);
  memcpy(&b, k->b + 8, 8);
  h = (a ^ m->seed) * 0x9E3779B97F4A7C15ull;
  h = (h ^ (h >> 29) ^ b) * 0xBF58476D1CE4E5B9ull;
  return (size_t)(h ^ (h >> 32));
}

/* The slot holding k, or the empty one where it would go. */
static size_t find(const cr_srcmap_t *m, const cr_srckey_t *k) {
  size_t i = hash(m, k) & m->mask;
  while (m->slots[i].count != 0 && memcmp(&m->slots[i].key, k, sizeof *k) != 0)
    i = (i + 1) & m->mask;
  return i;
}

int cr_srcmap_acquire(cr_srcmap_t *m, const cr_srckey_t *key) {
  size_t i = find(m, key);
  slot_t *s = &m->slots[i];
  if (m->total >= m->max_entries || s->count >= m->per_source)
    return CR_ELIMIT;
  if (s->count == 0) {
    s->key = *key;
    m->sources++;
  }
  s->count++;
  m->total++;
  return 0;
}

void cr_srcmap_release(cr_srcmap_t *m, const cr_srckey_t *key) {
  size_t i = find(m, key), j, home;
  if (m->slots[i].count == 0)
    return; /* never counted: a caller's bug, but nothing to undo */
  m->total--;
  if (--m->slots[i].count > 0)
    return;
  m->sources--;
  /* Backward shift: pull later members of the probe chain into the hole so no lookup stops early. */
  j = i;
  for (;;) {
    j = (j + 1) & m->mask;
    if (m->slots[j].count == 0)
      break;
    home = hash(m, &m->slots[j].key) & m->mask;
    /* j's entry may move to i only if its home is not in the cyclic range (i, j] */
    if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
      m->slots[i] = m->slots[j];
      i = j;
    }
  }
  m->slots[i].count = 0;
}

unsigned cr_srcmap_count(const cr_srcmap_t *m, const cr_srckey_t *key) { return m->slots[find(m, key)].count; }

size_t cr_srcmap_total(const cr_srcmap_t *m) { return m->total; }

size_t cr_srcmap_sources(const cr_srcmap_t *m) { return m->sources; }
